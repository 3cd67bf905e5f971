"""An outgoing call the platform cut short (the function timed out or its process ended while
it waited on the call) has its client span, ended where the invocation was, through the real
emulator, layer and companion."""

from __future__ import annotations

import pytest

from conftest import wait_for, write_function
from lambdawrap.devtools.local.moto_server import MotoServer
from lambdawrap.devtools.local.ports import free_port
from lambdawrap.devtools.local.stack import seed_moto
from lambdawrap.shared.inflight import CALLS
from support.local_servers import recording_server, silent_server
from support.stack import instrumented

OTLP_CLIENT = 3  # OTLP numbers span kinds one higher than the API
OTLP_ERROR = 2

APP = """
import os, threading, urllib.request

def call(url):
    try:
        urllib.request.urlopen(url, timeout=60).read()
    except Exception:
        pass

def handler(event, context):
    for i in range(event.get("threads", 0)):
        threading.Thread(target=call, args=(event["url"] + "?thread=%d" % i,), daemon=True).start()
    if event.get("exit_after_s"):
        threading.Timer(event["exit_after_s"], os._exit, (3,)).start()
    if event.get("answered"):
        urllib.request.urlopen(event["answered"], timeout=10).read()
    call(event["url"])
    return "done"
"""


@pytest.mark.parametrize(
    "how, threads, error_type, reason",
    [("timeout", 2, "Sandbox.Timedout", "timeout"), ("exit", 2, "Runtime.ExitError", "crash"), ("timeout", CALLS + 2, "Sandbox.Timedout", "timeout")],
    ids=["timeout", "crash", "more-calls-than-places"],
)
def test_calls_under_way_when_the_platform_ends_the_process_have_their_spans(tmp_path, how, threads, error_type, reason):
    # GIVEN a handler that waits on a server that never answers, with threads of its own
    # waiting on it too, after a call that was answered; WHEN the function times out (2 s) or
    # its process exits (a crash) while they wait
    task = write_function(tmp_path / "task", APP)
    with silent_server() as url, recording_server() as server, instrumented(task, timeout_s=2.0) as (emu, rx):
        answered_url = server.url + "/status/200"
        event = {"url": url, "threads": threads, "answered": answered_url} | ({"exit_after_s": 0.5} if how == "exit" else {})
        result = emu.invoke(event)
        assert result.json()["errorType"] == error_type, result.body
        invocation = wait_for(lambda: [s for s in rx.spans() if s["attributes"].get("faas.invocation_id") == result.request_id], timeout=30)[0]
        under_way = threads + 1
        kept = min(under_way, CALLS)
        wait_for(lambda: len(cut_spans(rx, url)) == kept, timeout=30, what=lambda: f"{kept} cut spans: {rx.spans()}")
        emu.wait_idle()
        cut = cut_spans(rx, url)
        dropped = {p["attributes"]["reason"]: p["value"] for p in rx.metrics() if p["name"] == "lambdawrap.dropped"}
    # THEN each call has its client span, in the invocation's trace, under its span (before:
    # none, the calls the invocation was cut short in lost without a count), failed with the
    # platform's error, ended where the invocation was; beyond the slot's places, counted
    assert len(cut) == kept and set(s["attributes"]["url.full"] for s in cut) <= {url} | {url + f"?thread={i}" for i in range(threads)}, cut
    for span in cut:
        assert span["kind"] == OTLP_CLIENT and span["name"] == "GET", span
        assert (span["trace_id"], span["parent_span_id"]) == (invocation["trace_id"], invocation["span_id"]), (span, invocation)
        assert span["status_code"] == OTLP_ERROR and error_type in span["status_message"], span
        assert span["attributes"]["error.type"] == error_type and span["attributes"]["lambdawrap.failure_reason"] == reason, span
        assert span["attributes"]["http.request.method"] == "GET" and span["attributes"]["server.address"] == "127.0.0.1", span
        assert invocation["start_time_unix_nano"] <= span["start_time_unix_nano"] <= span["end_time_unix_nano"] <= invocation["end_time_unix_nano"], (span, invocation)
    # ... and the answered call's, which was to go with the invocation's record, counted as
    # lost with the process, as before
    assert not [s for s in rx.spans() if s["attributes"].get("url.full") == answered_url]
    assert dropped.get("process_ended") == 1 + under_way - kept and not dropped.get("malformed_span"), dropped


def cut_spans(rx, url: str) -> list:
    return [s for s in rx.spans() if s["attributes"].get("url.full", "").startswith(url)]


SECRET = "cut-c4ll-s3cret-value"
SECRET_APP = """
import os, urllib.request

def handler(event, context):
    urllib.request.urlopen(event["url"] + "?key=" + os.environ["API_KEY"], timeout=60).read()
"""


def test_a_cut_short_call_s_span_holds_no_declared_secret(tmp_path):
    # GIVEN a function with a declared secret, timing out while it waits on a call whose URL
    # carries the secret's value
    task = write_function(tmp_path / "task", SECRET_APP)
    with MotoServer() as moto:
        seed_moto(moto, {"parameters": {"/prod/api/key": SECRET}})
        env = {"AWS_ENDPOINT_URL": moto.endpoint, "LAMBDAWRAP_SECRETS": "API_KEY=ssm:/prod/api/key", "LAMBDAWRAP_SECRETS_TIMEOUT_MS": "15000", "LAMBDAWRAP_SECRETS_PORT": str(free_port())}
        with silent_server() as url, instrumented(task, env=env, timeout_s=2.0) as (emu, rx):
            result = emu.invoke({"url": url})
            assert result.json()["errorType"] == "Sandbox.Timedout", result.body
            (cut,) = wait_for(lambda: cut_spans(rx, url), timeout=30, what=lambda: f"the cut span: {rx.spans()}")
            emu.wait_idle()
            captured = repr([rx.spans(), rx.metrics(), rx.logs()])
    # THEN its span is exported with the secret's value replaced, as a span that ended is
    assert cut["attributes"]["url.full"].startswith(url + "?key=") and SECRET not in cut["attributes"]["url.full"], cut
    assert SECRET not in captured
