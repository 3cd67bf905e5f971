"""What the handler's module does as it loads, through the real path (the emulator, the real
awslambdaric and the layer, a real HTTP server on loopback): the calls it makes, and the spans
it starts with no other parent, are children of the init span, in a trace of its own that the
servers it called joined; the init span links to the first invocation. A failed init is the
root of the calls that made it fail, also where its process ended before the companion
listened."""

from __future__ import annotations

from conftest import write_function
from support.local_servers import recording_server
from support.stack import instrumented

CLIENT = 3  # OTLP's SPAN_KIND_CLIENT

LOADS_WITH_CALLS = """
import os, urllib.request
from opentelemetry import trace

print("loading the orders config")
with urllib.request.urlopen(os.environ["CONFIG_URL"] + "/status/200?at=config", timeout=10) as answer:
    CONFIG = answer.status
with trace.get_tracer("orders").start_as_current_span("warm the cache"):
    urllib.request.urlopen(os.environ["CONFIG_URL"] + "/status/200?at=cache", timeout=10).close()

def handler(event, context):
    urllib.request.urlopen(os.environ["CONFIG_URL"] + "/status/200?at=request", timeout=10).close()
    return {"config": CONFIG}
"""

# It waits for the companion's socket first: a module that fails at once may end before the
# companion listens, and its call's span is then counted, not exported (docs/reliability.md).
FAILS_ON_A_CALL = """
import os, time, urllib.request

deadline = time.monotonic() + 60
while not os.path.exists(os.environ["LAMBDAWRAP_SOCKET"]) and time.monotonic() < deadline:
    time.sleep(0.01)
urllib.request.urlopen(os.environ["CONFIG_URL"] + "/status/503?at=config", timeout=10)

def handler(event, context):
    return "never"
"""


def call_to(receiver, at: str) -> dict:
    return receiver.wait_for_spans(lambda s: s["kind"] == CLIENT and s["attributes"].get("url.full", "").endswith(f"at={at}"), timeout=30)[0]


def sent_to(server, at: str) -> str:
    (request,) = [r for r in server.requests if r["path"].endswith(f"at={at}")]
    return request["headers"].get("traceparent", "")


def test_calls_the_module_makes_as_it_loads_are_children_of_the_init_span(tmp_path):
    # GIVEN a function whose module, as it loads, prints, calls a server, and starts a span of
    # its own that makes another call; its handler makes one more
    task = write_function(tmp_path / "task", LOADS_WITH_CALLS)
    with recording_server() as http, instrumented(task, env={"CONFIG_URL": http.url}, timeout_s=30) as (emu, rx):
        # WHEN it is invoked
        result = emu.invoke({})
        assert result.status == 200 and result.json() == {"config": 200}
        invocation = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id, timeout=30)[0]
        init = rx.wait_for_spans(lambda s: s["name"].endswith(" init"), timeout=30)[0]
        config, cache, request = call_to(rx, "config"), call_to(rx, "cache"), call_to(rx, "request")
        warm = rx.wait_for_spans(lambda s: s["name"] == "warm the cache", timeout=30)[0]
        loading = rx.wait_for_logs(lambda r: r["body"] == "loading the orders config", timeout=30)[0]
    # THEN the init span is the root of a trace of its own, linked to the first invocation
    # (before: in the invocation's trace, and each call at init a trace of its own, unrelated)
    assert init["parent_span_id"] == "" and init["trace_id"] != invocation["trace_id"]
    assert [(link["trace_id"], link["span_id"]) for link in init["links"]] == [(invocation["trace_id"], invocation["span_id"])]
    # ... the module's call and its span are the init span's children, the span's call its own
    assert (config["trace_id"], config["parent_span_id"]) == (init["trace_id"], init["span_id"])
    assert (warm["trace_id"], warm["parent_span_id"]) == (init["trace_id"], init["span_id"])
    assert (cache["trace_id"], cache["parent_span_id"]) == (init["trace_id"], warm["span_id"])
    # ... the server saw each call at init in the init's trace, as its span says
    assert sent_to(http, "config") == f"00-{init['trace_id']}-{config['span_id']}-01"
    assert sent_to(http, "cache") == f"00-{init['trace_id']}-{cache['span_id']}-01"
    # ... the line printed as the module loaded carries the init span's ids
    assert (loading["trace_id"], loading["span_id"]) == (init["trace_id"], init["span_id"])
    # ... and the handler's call is the invocation's, as before
    assert (request["trace_id"], request["parent_span_id"]) == (invocation["trace_id"], invocation["span_id"])
    assert sent_to(http, "request") == f"00-{invocation['trace_id']}-{request['span_id']}-01"


def test_a_failed_init_is_the_root_of_the_call_that_failed_it(tmp_path):
    import os
    import tempfile

    # GIVEN a function whose module fails to load because the server it calls answers 503
    task = write_function(tmp_path / "task", FAILS_ON_A_CALL)
    socket_path = os.path.join(tempfile.mkdtemp(prefix="lw", dir="/tmp"), "s")  # 108-byte limit
    with recording_server() as http, instrumented(task, env={"CONFIG_URL": http.url, "LAMBDAWRAP_SOCKET": socket_path}, timeout_s=30) as (emu, rx):
        # WHEN it is invoked
        failed = emu.invoke({})
        assert failed.function_error is not None and b"HTTPError" in failed.body
        # THEN each failed init (the init phase's, and its run again inside the invocation) is
        # the root of the call its module made, failed with the server's status (before: the
        # failed init was a trace of its own, and the call another)
        inits = rx.wait_for_spans(lambda s: s["name"].endswith(" init"), count=2, timeout=60)
        calls = rx.wait_for_spans(lambda s: s["kind"] == CLIENT and s["attributes"].get("url.full", "").endswith("at=config"), count=2, timeout=60)
    assert [init["status_code"] for init in inits] == [2, 2] and all(init["parent_span_id"] == "" for init in inits)
    assert sorted((call["trace_id"], call["parent_span_id"]) for call in calls) == sorted((init["trace_id"], init["span_id"]) for init in inits)
    assert {call["attributes"]["http.response.status_code"] for call in calls} == {503} and {call["status_code"] for call in calls} == {2}
    assert sorted(sent_to_each(http, "config")) == sorted(f"00-{call['trace_id']}-{call['span_id']}-01" for call in calls)


def sent_to_each(server, at: str) -> list:
    return [r["headers"].get("traceparent", "") for r in server.requests if r["path"].endswith(f"at={at}")]


def test_calls_made_before_the_companion_listens_are_held_for_it(tmp_path):
    from support.stack import metric_total

    # GIVEN a function whose module calls a server as it loads, and a companion whose Python
    # starts only once that call is over (as at 128 MB, where its socket is bound hundreds of
    # milliseconds into the init, after a module that calls at once)
    marker = tmp_path / "called"
    task = write_function(tmp_path / "task", f"""
import os, urllib.request

urllib.request.urlopen(os.environ["CONFIG_URL"] + "/status/200?at=config", timeout=10).close()
open({str(marker)!r}, "w").close()

def handler(event, context):
    return "ok"
""")
    with recording_server() as http, instrumented(task, env={"CONFIG_URL": http.url, "LAMBDAWRAP_PYTHON": slow_python(tmp_path, f"[ -e {str(marker)!r} ]")}, timeout_s=30) as (emu, rx):
        # WHEN it is invoked
        assert emu.invoke({}).body == b'"ok"'
        # THEN the call's span reaches the collector, under the init span (before: dropped, as
        # the companion did not listen yet, and counted)
        init = rx.wait_for_spans(lambda s: s["name"].endswith(" init"), timeout=30)[0]
        config = call_to(rx, "config")
        emu.stop()
    assert marker.exists()
    assert (config["trace_id"], config["parent_span_id"]) == (init["trace_id"], init["span_id"])
    assert sent_to(http, "config") == f"00-{init['trace_id']}-{config['span_id']}-01"
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "handler_channel"}) == 0


def slow_python(folder, until: str) -> str:
    """A companion's interpreter whose Python starts only once `until` (shell) is true: as at
    128 MB, where the companion binds its socket hundreds of milliseconds into the init. The
    launcher's own checks of it (`-c`) are not held."""
    import sys

    slow = folder / "slow-python"
    slow.write_text(
        "#!/bin/bash\n"
        f'case " $* " in *" -c "*) ;; *) for _ in $(seq 600); do {until} && break; sleep 0.05; done ;; esac\n'
        f'exec {sys.executable} "$@"\n'
    )
    slow.chmod(0o755)
    return str(slow)


def test_a_failed_init_that_ended_before_the_companion_listened_is_the_root_of_its_call(tmp_path):
    from support.stack import metric_total

    # GIVEN a function whose module fails at once on a call (a 503), and a companion whose
    # Python starts only once that process has ended
    pid_file = tmp_path / "pid"
    task = write_function(tmp_path / "task", f"""
import os, urllib.request

open({str(pid_file)!r}, "w").write(str(os.getpid()))
urllib.request.urlopen(os.environ["CONFIG_URL"] + "/status/503?at=config", timeout=10)

def handler(event, context):
    return "never"
""")
    ended = f'p=$(cat {str(pid_file)!r} 2>/dev/null) && [ -n "$p" ] && ! {{ [ -e /proc/$p ] && ! grep -q ") Z " /proc/$p/stat; }}'
    with recording_server() as http, instrumented(task, env={"CONFIG_URL": http.url, "LAMBDAWRAP_PYTHON": slow_python(tmp_path, ended)}, timeout_s=30) as (emu, rx):
        # WHEN it is invoked
        failed = emu.invoke({})
        assert failed.function_error is not None and b"HTTPError" in failed.body
        # THEN each failed init is the root of its call, which reached the collector (before:
        # the call's span counted as dropped, not exported, and the init a trace of its own)
        inits = rx.wait_for_spans(lambda s: s["name"].endswith(" init"), count=2, timeout=60)
        calls = rx.wait_for_spans(lambda s: s["kind"] == CLIENT and s["attributes"].get("url.full", "").endswith("at=config"), count=2, timeout=60)
        emu.stop()
    assert [init["status_code"] for init in inits] == [2, 2] and all(init["parent_span_id"] == "" for init in inits)
    assert sorted((call["trace_id"], call["parent_span_id"]) for call in calls) == sorted((init["trace_id"], init["span_id"]) for init in inits)
    assert sorted(sent_to_each(http, "config")) == sorted(f"00-{call['trace_id']}-{call['span_id']}-01" for call in calls)
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "handler_channel"}) == 0


def test_an_init_that_timed_out_after_a_call_is_the_root_of_that_call(tmp_path):
    from support.stack import metric_total

    # GIVEN a function whose module calls a server as it loads, before the companion listens,
    # and then hangs until the init's time is up (the runtime is then killed)
    marker = tmp_path / "called"
    task = write_function(tmp_path / "task", f"""
import os, time, urllib.request

urllib.request.urlopen(os.environ["CONFIG_URL"] + "/status/200?at=config", timeout=10).close()
open({str(marker)!r}, "w").close()
time.sleep(600)

def handler(event, context):
    return "never"
""")
    with recording_server() as http, instrumented(task, env={"CONFIG_URL": http.url, "LAMBDAWRAP_PYTHON": slow_python(tmp_path, f"[ -e {str(marker)!r} ]")}, timeout_s=3, init_timeout_s=2) as (emu, rx):
        # WHEN it is invoked (the init runs again within the invocation, and hangs again)
        assert emu.invoke({}).function_error is not None
        # THEN the init that timed out is the root of the call its module made, which reached
        # the collector (before: the call's span counted as dropped, the init a trace of its own)
        inits = rx.wait_for_spans(lambda s: s["name"].endswith(" init"), count=2, timeout=60)
        calls = rx.wait_for_spans(lambda s: s["kind"] == CLIENT and s["attributes"].get("url.full", "").endswith("at=config"), count=2, timeout=60)
        emu.stop()
    assert all(init["status_code"] == 2 and init["parent_span_id"] == "" for init in inits)
    assert sorted((call["trace_id"], call["parent_span_id"]) for call in calls) == sorted((init["trace_id"], init["span_id"]) for init in inits)
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "handler_channel"}) == 0


def test_a_call_the_init_made_that_ends_after_the_first_invocation_is_the_init_span_s_child(tmp_path):
    from support.local_servers import silent_server

    # GIVEN a function whose module starts a thread that calls a server which does not answer
    # (the call gives up after 3 s), and whose handler answers at once (the second time, once
    # the thread is done)
    task = write_function(tmp_path / "task", """
import os, threading, urllib.request

def warm():
    try:
        urllib.request.urlopen(os.environ["SILENT_URL"] + "/warm", timeout=3)
    except OSError:
        pass

WARMING = threading.Thread(target=warm)
WARMING.start()

def handler(event, context):
    if event.get("join"):
        WARMING.join()
    return "ok"
""")
    with silent_server() as silent_url, instrumented(task, env={"SILENT_URL": silent_url}, timeout_s=30) as (emu, rx):
        # WHEN it is invoked, the init span made at its end, before the call has ended
        result = emu.invoke({})
        assert result.body == b'"ok"'
        invocation = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id, timeout=30)[0]
        init = rx.wait_for_spans(lambda s: s["name"].endswith(" init"), timeout=30)[0]
        assert emu.invoke({"join": True}).body == b'"ok"'
        call = rx.wait_for_spans(lambda s: s["kind"] == CLIENT and s["attributes"].get("url.full", "").endswith("/warm"), timeout=30)[0]
    # THEN the call, ended later, is the init span's child all the same (before: the init span
    # was made in the invocation's trace, and the call named a parent no one exported)
    assert (call["trace_id"], call["parent_span_id"]) == (init["trace_id"], init["span_id"]) and init["parent_span_id"] == ""
    assert [(link["trace_id"], link["span_id"]) for link in init["links"]] == [(invocation["trace_id"], invocation["span_id"])]
    assert call["status_code"] == 2 and call["end_time_unix_nano"] > invocation["end_time_unix_nano"]


def test_a_call_under_way_when_the_init_timed_out_is_the_init_span_s_failed_child(tmp_path):
    from support.local_servers import silent_server

    # GIVEN a function whose module, as it loads, waits on a server that never answers, until
    # the init's time is up (the runtime is then killed), and again when the init runs inside
    # the invocation
    task = write_function(tmp_path / "task", """
import os, urllib.request

urllib.request.urlopen(os.environ["SILENT_URL"] + "/config", timeout=600)

def handler(event, context):
    return "never"
""")
    with silent_server() as silent_url, instrumented(task, env={"SILENT_URL": silent_url}, timeout_s=3, init_timeout_s=2) as (emu, rx):
        # WHEN it is invoked
        assert emu.invoke({}).function_error is not None
        # THEN each init that timed out has the call it waited on, ended where the init was,
        # failed with the init's error, as its child (before: no span of the call at all)
        inits = rx.wait_for_spans(lambda s: s["name"].endswith(" init"), count=2, timeout=60)
        calls = rx.wait_for_spans(lambda s: s["kind"] == CLIENT and s["attributes"].get("url.full", "").endswith("/config"), count=2, timeout=60)
        emu.stop()
    assert all(init["status_code"] == 2 and init["attributes"]["error.type"] == "Sandbox.Timedout" for init in inits)
    assert sorted((call["trace_id"], call["parent_span_id"]) for call in calls) == sorted((init["trace_id"], init["span_id"]) for init in inits)
    by_parent = {init["span_id"]: init for init in inits}
    for call in calls:
        init = by_parent[call["parent_span_id"]]
        assert call["status_code"] == 2 and call["attributes"]["error.type"] == "Sandbox.Timedout" and call["attributes"]["lambdawrap.failure_reason"] == "timeout"
        assert init["start_time_unix_nano"] <= call["start_time_unix_nano"] <= call["end_time_unix_nano"] <= init["end_time_unix_nano"]
