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

WAITS = """
import os, threading, urllib.request

def wait(url):
    try:
        urllib.request.urlopen(url, timeout=60).read()
    except Exception:
        pass
"""

APP = WAITS + """
def handler(event, context):
    for i in range(event.get("threads", 0)):
        threading.Thread(target=wait, args=(event["url"] + "?thread=%d" % i,), daemon=True).start()
    if event.get("exit_after_s"):
        threading.Timer(event["exit_after_s"], os._exit, (3,)).start()
    if event.get("answered"):
        urllib.request.urlopen(event["answered"], timeout=10).read()
    wait(event["url"])
    return "done"
"""


@pytest.mark.parametrize(
    "how, threads, error_type, reason",
    [("timeout", 2, "Sandbox.Timedout", "timeout"), ("exit", 2, "Runtime.ExitError", "crash"), ("timeout", CALLS + 2, "Sandbox.Timedout", "timeout")],
    ids=["timeout", "crash", "more-calls-than-places"],
)
def test_calls_under_way_when_the_platform_ends_the_process_have_their_spans(tmp_path, how, threads, error_type, reason):
    # GIVEN a handler that waits on a server that never answers, with threads of its own
    # waiting on it too, after a call that was answered; WHEN the function times out (4 s) or
    # its process exits (a crash, 2 s in) while they wait
    task = write_function(tmp_path / "task", APP)
    with silent_server() as url, recording_server() as server, instrumented(task, timeout_s=4.0) as (emu, rx):
        answered_url = server.url + "/status/200"
        event = {"url": url, "threads": threads, "answered": answered_url} | ({"exit_after_s": 2.0} if how == "exit" else {})
        result = emu.invoke(event)
        assert result.json()["errorType"] == error_type, result.body
        invocation = wait_for(lambda: [s for s in rx.spans() if s["attributes"].get("faas.invocation_id") == result.request_id], timeout=30)[0]
        under_way = threads + 1
        kept = min(under_way, CALLS)
        wait_for(lambda: len(cut_spans(rx, url)) == kept, timeout=30, what=lambda: f"{kept} cut spans: {rx.spans()}")
        emu.wait_idle()
        cut = cut_spans(rx, url)
        dropped = drops_by_reason(rx)
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


def drops_by_reason(rx) -> dict:
    dropped: dict = {}
    for point in rx.metrics():
        if point["name"] == "lambdawrap.dropped":
            reason = point["attributes"]["reason"]
            dropped[reason] = dropped.get(reason, 0) + point["value"]
    return dropped


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


REFUSED_APP = WAITS + """
import boto3
from botocore.config import Config

def client(endpoint):
    return boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key="s", config=Config(retries={"total_max_attempts": 1}, read_timeout=60))

def handler(event, context):
    s3, excluded = client(event["aws"]), client(event["excluded"])
    for _ in range(12):  # refused by botocore before sending: no call under way
        try:
            s3.get_object(Bucket=123, Key="k")
        except Exception:
            pass
    threading.Thread(target=excluded.list_buckets, daemon=True).start()
    threading.Thread(target=s3.list_buckets, daemon=True).start()
    wait(event["url"])
"""


def test_only_calls_that_left_and_are_traced_are_kept_as_under_way(tmp_path):
    # GIVEN a handler whose AWS SDK calls botocore refused before sending (invalid parameters:
    # more than the slot has places), and threads left waiting, with the handler, on servers
    # that never answer: an AWS call to a host the user excluded, one to another, and an HTTP
    # call; WHEN the function times out
    task = write_function(tmp_path / "task", REFUSED_APP)
    with silent_server() as url, silent_server() as excluded, silent_server() as aws:
        excluded_host = excluded.split("/")[2]
        with instrumented(task, env={"LAMBDAWRAP_INSTRUMENT_EXCLUDE_HOSTS": excluded_host}, timeout_s=4.0) as (emu, rx):
            result = emu.invoke({"url": url, "excluded": excluded.rsplit("/", 1)[0], "aws": aws.rsplit("/", 1)[0]})
            assert result.json()["errorType"] == "Sandbox.Timedout", result.body
            wait_for(lambda: len(cut_spans(rx, url)) == 1 and [s for s in rx.spans() if s["name"] == "S3.ListBuckets"], timeout=30, what=lambda: f"the two cut spans: {rx.spans()}")
            emu.wait_idle()
            spans = rx.spans()
            dropped = drops_by_reason(rx)
    # THEN the two traced calls under way have their spans, the AWS one with the endpoint it
    # was sent to; the refused calls and the excluded host's have none, and nothing is counted
    # for them (before: each refused call held a place for the process's life, and the
    # excluded call became a span)
    (listing,) = [s for s in spans if s["name"] == "S3.ListBuckets"]
    assert listing["attributes"]["server.port"] == int(aws.split(":")[2].split("/")[0]) and listing["attributes"]["error.type"] == "Sandbox.Timedout", listing
    assert not [s for s in spans if s["name"] == "S3.GetObject"]
    assert not dropped.get("process_ended"), dropped
