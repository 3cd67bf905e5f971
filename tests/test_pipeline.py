"""The instrumentation pipeline end to end: emulator + real awslambdaric + layer + real OTLP receiver."""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, wait_for, write_function
from support.faults import companion_process
from support.pip_target import installed
from support.python_versions import every_python
from support.stack import EVENTS, LAYER, instrumented, metric_total
from lambdawrap.devtools.emulator import Emulator
from lambdawrap.devtools.emulator.environment import DEFAULT_MEMORY_MB
from lambdawrap.shared.semconv import SCHEMA_URL

APP = """
import json, os, sys, time

def handler(event, context):
    print("handling", context.aws_request_id)
    if event.get("raise"):
        raise KeyError("missing thing")
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("exit"):
        os._exit(1)
    if event.get("status"):
        return {"statusCode": event["status"], "body": "x"}
    heavy = [m for m in ("opentelemetry.sdk", "google.protobuf", "boto3", "botocore", "requests", "urllib3") if m in sys.modules]
    return {"statusCode": 200, "body": json.dumps({"heavy": heavy, "handler": type(sys.modules[__name__].handler).__name__})}
"""

TRACEPARENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT_SPAN = "b7ad6b7169203331"


def apigw_event(**extra) -> dict:
    event = json.loads((EVENTS / "apigw-rest.json").read_text())
    event.update(extra)
    return event


def invocation_spans(rx, predicate=None):
    return [s for s in rx.spans() if "faas.invocation_id" in s["attributes"] and (predicate is None or predicate(s))]


@pytest.fixture
def task(tmp_path: Path) -> Path:
    return write_function(tmp_path / "task", APP)


@every_python
def test_spans_parenting_coldstart_errors_metrics_logs(task, runtime_python):
    with instrumented(task, python=runtime_python) as (emu, rx):
        results = [emu.invoke(apigw_event()) for _ in range(3)]
        failed = emu.invoke(apigw_event(**{"raise": True}))
        emu.wait_idle()
        assert all(r.status == 200 and r.function_error is None for r in results)
        # The user's exception reaches the caller unchanged.
        assert failed.function_error == "Unhandled"
        assert failed.json()["errorType"] == "KeyError" and failed.json()["errorMessage"] == "'missing thing'"
        spans = rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"], count=4)
        by_rid = {s["attributes"]["faas.invocation_id"]: s for s in spans}
        assert set(by_rid) == {r.request_id for r in results + [failed]}
        first = by_rid[results[0].request_id]
        for rid, span in by_rid.items():
            assert span["trace_id"] == TRACEPARENT_TRACE and span["parent_span_id"] == TRACEPARENT_SPAN
            assert span["name"] == "GET /pets/{petId}" and span["kind"] == 2  # SERVER
            attrs = span["attributes"]
            assert attrs["faas.trigger"] == "http" and attrs["http.request.method"] == "GET"
            assert attrs["cloud.resource_id"].endswith(":function:function")
            assert attrs["faas.coldstart"] is (span is first)
            assert span["resource"]["service.name"] == "function"
            assert span["resource"]["cloud.provider"] == "aws" and span["resource"]["faas.name"] == "function"
            # what instrumented it, and the conventions' schema its attributes follow
            assert (span["resource"]["telemetry.distro.name"], span["resource"]["telemetry.distro.version"]) == ("lambdawrap", span["scope_version"])
            assert span["resource_schema_url"] == SCHEMA_URL
        ok = by_rid[results[1].request_id]
        assert ok["attributes"]["http.response.status_code"] == 200 and ok["status_code"] == 0
        error = by_rid[failed.request_id]
        exception = next(e for e in error["events"] if e["name"] == "exception")
        assert exception["attributes"]["exception.type"] == "KeyError"
        # the status says the exception's message alone (the conventions: error.type says its type)
        assert error["status_code"] == 2 and error["status_message"] == exception["attributes"]["exception.message"] != ""
        assert "missing thing" in exception["attributes"]["exception.stacktrace"]
        # ... from the handler's frame, none of lambdawrap's (before: on 3.10, the wrapper's first)
        stack_lines = exception["attributes"]["exception.stacktrace"].splitlines()
        assert stack_lines[1].startswith('  File "') and stack_lines[1].split('"')[1].endswith("app.py"), stack_lines[:3]
        assert "lambdawrap" not in exception["attributes"]["exception.stacktrace"]
        # The init span joins the first trace.
        init = rx.wait_for_spans(lambda s: s["name"].endswith(" init"))[0]
        assert init["trace_id"] == TRACEPARENT_TRACE and init["parent_span_id"] == first["span_id"]
    # Everything is flushed by SHUTDOWN at the latest: the log lines too (an invocation whose
    # span was made from the runtime's post sends them with the next export).
    # Function log lines carry their invocation's ids.
    logs = rx.wait_for_logs(lambda l: l["body"].startswith("handling "), count=4)
    for line in logs:
        rid = line["body"].split()[1]
        assert line["trace_id"] == by_rid[rid]["trace_id"] and line["span_id"] == by_rid[rid]["span_id"]
    assert metric_total(rx, "faas.invocations") == 4
    assert metric_total(rx, "faas.errors") == 1
    assert metric_total(rx, "faas.coldstarts") == 1
    assert metric_total(rx, "faas.invoke_duration") == 4
    assert metric_total(rx, "lambdawrap.billed_duration") == 4
    assert metric_total(rx, "faas.init_duration") == 1
    temporalities = {p["temporality"] for p in rx.metrics() if p["name"] == "faas.invocations"}
    assert temporalities == {"delta"}


# (instrument, unit) of each metric, as the FaaS conventions have them: durations in seconds.
METRIC_KINDS = {
    "faas.invocations": ("sum", "{invocation}"), "faas.errors": ("sum", "{error}"), "faas.coldstarts": ("sum", "{coldstart}"),
    "faas.invoke_duration": ("histogram", "s"), "faas.init_duration": ("histogram", "s"), "faas.mem_usage": ("histogram", "By"),
    "lambdawrap.billed_duration": ("histogram", "s"), "lambdawrap.buffer.high_water": ("gauge", "{span}"),
}


def test_each_metric_has_its_conventional_instrument_and_unit_and_the_platform_s_numbers(task):
    # GIVEN two invocations, one failing
    with instrumented(task) as (emu, rx):
        emu.invoke(apigw_event())
        emu.invoke(apigw_event(**{"raise": True}))
        assert emu.wait_idle(30)
        reports = [r["record"]["metrics"] for r in emu.records("platform.report")]
    points = rx.metrics()
    # THEN each metric is the instrument, in the unit, the conventions name
    assert {(p["name"], (p["type"], p["unit"])) for p in points if p["name"] in METRIC_KINDS} == set(METRIC_KINDS.items())
    # ... and the billed duration is the platform's, in seconds, in the invocation duration's
    # buckets (one dashboard compares them)
    billed = [p for p in points if p["name"] == "lambdawrap.billed_duration"]
    assert len(reports) == 2 and sum(p["count"] for p in billed) == 2
    assert sum(p["sum"] for p in billed) == pytest.approx(sum(r["billedDurationMs"] for r in reports) / 1000)
    invoke_bounds = {tuple(p["explicit_bounds"]) for p in points if p["name"] == "faas.invoke_duration"}
    assert {tuple(p["explicit_bounds"]) for p in billed} == invoke_bounds and len(invoke_bounds) == 1


def test_a_line_printed_after_the_handler_returned_keeps_its_invocations_ids(tmp_path):
    # GIVEN a function whose background thread prints after the handler returned (as a logging
    # queue's listener does), here once the invocation's invoke phase is over
    task = write_function(tmp_path / "task", """
        import os, threading, time

        def print_when(path, request_id):
            deadline = time.monotonic() + 30
            while not os.path.exists(path) and time.monotonic() < deadline:
                time.sleep(0.01)
            print("late line", request_id)

        def handler(event, context):
            if event.get("late"):
                threading.Thread(target=print_when, args=(event["late"], context.aws_request_id), daemon=True).start()
            return "ok"
        """)
    go = tmp_path / "go"
    with instrumented(task) as (emu, rx):
        first = emu.invoke({"late": str(go)})
        assert emu.wait_idle()
        go.touch()
        wait_for(lambda: any(line.startswith("late line") for line in emu.log_lines("function")), what="the late line")
        # WHEN the next invocation comes
        emu.invoke({})
    # THEN the line went out (by SHUTDOWN at the latest) with the ids of the invocation it was
    # printed in
    span = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == first.request_id)[0]
    line = rx.wait_for_logs(lambda l: l["body"] == f"late line {first.request_id}")[0]
    assert (line["trace_id"], line["span_id"]) == (span["trace_id"], span["span_id"])


def test_http_5xx_is_an_error(task):
    with instrumented(task) as (emu, rx):
        emu.invoke(apigw_event(status=503))
        span = rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"])[0]
        assert span["attributes"]["http.response.status_code"] == 503 and span["status_code"] == 2


@every_python
def test_timeout_and_crash_still_yield_spans(task, runtime_python):
    # 3 s: the invocation after the timeout includes the environment's re-init (runtime and
    # companion start again), which a busy 2-core machine can stretch past 1 s.
    with instrumented(task, timeout_s=3.0, python=runtime_python) as (emu, rx):
        timed_out = emu.invoke({"sleep": 30})
        assert timed_out.json()["errorType"] == "Sandbox.Timedout"
        crashed = emu.invoke({"exit": True})
        assert crashed.json()["errorType"] == "Runtime.ExitError"
        fine = emu.invoke({})
        assert fine.status == 200 and fine.function_error is None
        failed = {timed_out.request_id, crashed.request_id}
        spans = {s["attributes"]["faas.invocation_id"]: s for s in rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") in failed, count=2, timeout=60)}
        t = spans[timed_out.request_id]
        assert t["status_code"] == 2 and t["attributes"]["error.type"] == "Sandbox.Timedout"
        assert t["attributes"]["lambdawrap.failure_reason"] == "timeout"
        c = spans[crashed.request_id]
        assert c["status_code"] == 2 and c["attributes"]["error.type"] == "Runtime.ExitError"
        assert c["attributes"]["lambdawrap.failure_reason"] == "crash"
    assert metric_total(rx, "faas.timeouts") == 1
    assert metric_total(rx, "lambdawrap.crashes") == 1
    assert metric_total(rx, "faas.invocations") == 3
    assert metric_total(rx, "faas.errors") == 2



def test_spans_a_timed_out_or_crashed_invocation_had_ended_are_counted(tmp_path):
    # GIVEN a function that ends three spans of its own, then hangs past its timeout or exits
    write_function(tmp_path, """
        import os, time
        from opentelemetry import trace

        def handler(event, context):
            tracer = trace.get_tracer("orders")
            for step in ("load", "check", "price"):
                with tracer.start_as_current_span(step):
                    pass
            if event.get("exit"):
                os._exit(3)
            time.sleep(event.get("sleep", 0))
            return {"statusCode": 200}
        """)
    with instrumented(tmp_path, timeout_s=3.0) as (emu, rx):
        # WHEN one invocation times out and another crashes, their spans still held for
        # records they never send
        assert emu.invoke({"sleep": 30}).json()["errorType"] == "Sandbox.Timedout"
        assert emu.invoke({"exit": True}).json()["errorType"] == "Runtime.ExitError"
        fine = emu.invoke({})
        assert fine.function_error is None
        rx.wait_for_spans(lambda s: s["name"] == "price", timeout=30)
    # THEN the span of each is exported, and the spans they held are counted once each (before:
    # lost, counted by nobody), while the invocation that ended well exports its own
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "process_ended"}) == 6
    assert sorted(s["name"] for s in rx.spans() if s["name"] in ("load", "check", "price")) == ["check", "load", "price"]
    assert metric_total(rx, "faas.timeouts") == 1 and metric_total(rx, "lambdawrap.crashes") == 1


def test_a_timeout_after_the_function_emptied_tmp_keeps_its_trace_and_trigger(tmp_path):
    # GIVEN a function that empties /tmp in one invocation (a common guard against a full /tmp;
    # here the folder this run's socket is in, /tmp being shared)
    write_function(tmp_path, """
        import os, time

        def handler(event, context):
            removed = []
            if event.get("wipe"):
                folder = os.path.dirname(os.environ["LAMBDAWRAP_SOCKET"])
                for name in os.listdir(folder):
                    os.remove(os.path.join(folder, name))
                    removed.append(name)
            time.sleep(event.get("sleep", 0))
            return {"statusCode": 200, "body": " ".join(removed)}
        """)
    with instrumented(tmp_path, timeout_s=3.0) as (emu, rx):
        wiped = emu.invoke(apigw_event(wipe=True)).json()["body"].split()
        assert any(".inflight." in name for name in wiped), wiped
        time.sleep(1.1)  # past the once-a-second look at the in-flight file
        # WHEN a later invocation, from a caller with its trace context, times out
        timed_out = emu.invoke(apigw_event(sleep=30))
        assert timed_out.json()["errorType"] == "Sandbox.Timedout"
        span = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == timed_out.request_id, timeout=60)[0]
    # THEN its span is the caller's child, with the trigger's attributes (before: the function's
    # process wrote into the file it had removed, the companion found no slot, and the span had
    # made-up ids and no trigger)
    assert (span["trace_id"], span["parent_span_id"]) == (TRACEPARENT_TRACE, TRACEPARENT_SPAN)
    assert span["attributes"]["faas.trigger"] == "http" and span["attributes"]["error.type"] == "Sandbox.Timedout"


@pytest.mark.parametrize("strategy", ["adaptive", "end"])
def test_each_retry_of_an_asynchronous_invocation_is_accounted_for(task, strategy):
    # GIVEN an asynchronous invocation that fails, and Lambda's two retries of it, which keep
    # its request id, served by the same warm environment: the first retry times out (the
    # environment is reset), the second succeeds
    with instrumented(task, timeout_s=3.0, env={"LAMBDAWRAP_FLUSH": strategy}) as (emu, rx):
        assert emu.invoke({}).function_error is None
        first = emu.invoke({"raise": True})
        rid = first.request_id
        assert first.json()["errorType"] == "KeyError"
        retried = emu.invoke({"sleep": 30}, request_id=rid)
        assert retried.request_id == rid and retried.json()["errorType"] == "Sandbox.Timedout"
        last = emu.invoke({}, request_id=rid)
        assert last.request_id == rid and last.function_error is None
        assert emu.invoke({}).function_error is None
        # THEN each attempt is its own span, with the status its caller got (before: only the
        # first attempt was exported; the retries were taken for duplicates of it, neither
        # exported nor counted)
        spans = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == rid, count=3, timeout=30)
        emu.wait_idle()
    spans = sorted((s for s in rx.spans() if s["attributes"].get("faas.invocation_id") == rid), key=lambda s: s["start_time_unix_nano"])
    assert [s["attributes"].get("error.type") for s in spans] == ["KeyError", "Sandbox.Timedout", None]
    assert len({s["span_id"] for s in spans}) == 3
    # ... counted once each
    assert metric_total(rx, "faas.invocations") == 5
    assert metric_total(rx, "faas.errors") == 2
    assert metric_total(rx, "faas.timeouts") == 1
    # ... and each attempt's log line carries its own attempt's span
    handled = [r for r in rx.logs() if r["body"] == f"handling {rid}"]
    assert sorted(r["span_id"] for r in handled) == sorted(s["span_id"] for s in spans)


def test_a_crash_the_platform_tells_of_late_is_still_a_span(task):
    # GIVEN a platform that does not flush telemetry before SHUTDOWN and holds each batch 2.5 s
    # (Lambda promises neither), and a 10 s timeout
    with instrumented(task, timeout_s=10.0) as (emu, rx):
        assert emu.invoke({}).function_error is None
        emu.bus.gate.flush_before_shutdown = False
        emu.bus.gate.min_buffer_s = 2.5
        # WHEN the function's process exits during an invocation (its record never sent, the
        # platform's runtimeDone delivered after the reset's SHUTDOWN), once with a connection
        # to the companion and once as its environment's first invocation
        crashed = [emu.invoke({"exit": True}) for _ in range(2)]
        assert [c.json()["errorType"] for c in crashed] == ["Runtime.ExitError"] * 2
        emu.bus.gate.flush_before_shutdown = True
        emu.bus.gate.min_buffer_s = 0.0
        assert emu.invoke({}).function_error is None
        # THEN each crash is a span: the companion did not wait for the platform's word until
        # the function's deadline, past SHUTDOWN's (SIGKILL, and all it held lost)
        rids = {c.request_id for c in crashed}
        spans = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") in rids, count=2, timeout=30)
        assert sorted(s["attributes"]["error.type"] for s in spans) == ["Runtime.ExitError"] * 2
    assert not [line for line in emu.log_lines() if "killed at the shutdown deadline" in line]
    # ... and each environment's init is one init span, its report late or not
    assert sorted(s["attributes"]["lambdawrap.init.phase"] for s in rx.spans() if s["name"].endswith(" init")) == ["init", "invoke", "invoke"]
    assert metric_total(rx, "lambdawrap.crashes") == 2


def test_platform_metrics_are_labelled_and_bucketed_as_the_conventions_say(task):
    # GIVEN an HTTP function whose second invocation times out
    with instrumented(task, timeout_s=3.0) as (emu, rx):
        emu.invoke(apigw_event())
        timed_out = emu.invoke(apigw_event(sleep=30))
        assert timed_out.json()["errorType"] == "Sandbox.Timedout"
        emu.invoke(apigw_event())
    # THEN the timeout counts under its trigger, as its invocation and its error do, and so do
    # the platform's numbers: the FaaS metrics all carry faas.trigger (an init, the trigger of
    # the invocation it was made for)
    assert metric_total(rx, "faas.timeouts") == 1 == metric_total(rx, "faas.timeouts", {"faas.trigger": "http"})
    assert metric_total(rx, "faas.errors", {"faas.trigger": "http"}) == 1
    faas_metrics = [p for p in rx.metrics() if p["name"].startswith("faas.")]
    assert {p["name"] for p in faas_metrics} >= {"faas.mem_usage", "faas.init_duration", "faas.invoke_duration", "faas.coldstarts"}
    assert all(p["attributes"] == {"faas.trigger": "http"} for p in faas_metrics), [(p["name"], p["attributes"]) for p in faas_metrics if p["attributes"] != {"faas.trigger": "http"}]
    assert metric_total(rx, "faas.init_duration") == 2  # the environment's, and the one after the timeout
    # AND the memory each used (platform.report's MB, in bytes) falls in a bucket of its own,
    # not past the last one: the buckets span Lambda's memory sizes, 128 MB to 10,240 MB
    memory = [p for p in rx.metrics() if p["name"] == "faas.mem_usage"]
    assert sum(p["count"] for p in memory) == 3
    assert all(p["bucket_counts"][-1] == 0 and p["explicit_bounds"][-1] >= 10240 * 1024 * 1024 for p in memory), memory
    # AND the metrics and log records carry the conventions' schema URL, as the spans do
    assert {p["schema_url"] for p in rx.metrics()} == {SCHEMA_URL}
    assert rx.logs() and {r["schema_url"] for r in rx.logs()} == {SCHEMA_URL}


def test_an_invoke_callers_client_context_is_the_parent(task):
    # GIVEN Lambda Invoke callers that carry their context in the client context: in custom
    # (what the SDK instrumentations write), or in w3c (which awslambdaric moves to
    # context.w3c()) WHEN invoked THEN it parents the invocation span, w3c first.
    custom_tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with instrumented(task) as (emu, rx):
        custom = emu.invoke({}, client_context={"custom": {"traceparent": custom_tp}})
        w3c = emu.invoke({}, client_context={"custom": {"traceparent": custom_tp}, "w3c": {"traceparent": f"00-{TRACEPARENT_TRACE}-{TRACEPARENT_SPAN}-01"}})
        neither = emu.invoke({}, client_context={"custom": {"other": "x"}})
    spans = {s["attributes"]["faas.invocation_id"]: s for s in invocation_spans(rx)}
    assert (spans[custom.request_id]["trace_id"], spans[custom.request_id]["parent_span_id"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert (spans[w3c.request_id]["trace_id"], spans[w3c.request_id]["parent_span_id"]) == (TRACEPARENT_TRACE, TRACEPARENT_SPAN)
    assert spans[neither.request_id]["parent_span_id"] == ""
    # The function sees the client context as ever (the layer reads it, never changes it).
    assert custom.status == w3c.status == 200 and custom.function_error is None


def caller_latencies(emu: Emulator, n: int) -> list:
    emu.invoke({})  # cold start, not measured
    emu.wait_idle()
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        result = emu.invoke({})
        latencies.append((time.perf_counter() - started) * 1000)
        assert result.status == 200
        emu.wait_idle()
    return latencies


def test_caller_does_not_wait_on_a_slow_collector(task):
    with Emulator(str(task), "app.handler") as bare:
        bare_ms = statistics.median(caller_latencies(bare, 8))
    with instrumented(task, env={"LAMBDAWRAP_FLUSH": "end"}) as (emu, rx):
        rx.set_behaviour(delay_s=0.5)
        ours_ms = statistics.median(caller_latencies(emu, 8))
        # Export happens after the response: the 500 ms collector is not on the caller's path
        # (half of it allowed for a busy machine between the two runs; on it, it is all of it).
        assert ours_ms < bare_ms + 250, (ours_ms, bare_ms)
        rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"], count=9, timeout=20)


def test_flush_budget_bounds_the_invoke_phase(task):
    with instrumented(task, env={"LAMBDAWRAP_FLUSH": "end", "LAMBDAWRAP_FLUSH_BUDGET_MS": "100"}) as (emu, rx):
        emu.invoke({})
        emu.wait_idle()
        rx.set_behaviour(delay_s=5.0)
        started = time.monotonic()
        emu.invoke({})
        emu.wait_idle(30)
        phase = time.monotonic() - started
        assert phase < 2.5, phase  # the 5 s collector did not hold /next


def test_a_flush_budget_of_0_keeps_no_invoke_phase_open_for_a_late_verdict(task):
    # GIVEN export at each invocation's end with no time after the function's part, and a
    # platform whose telemetry comes late (3 s): the invocation's runtimeDone with it
    with instrumented(task, env={"LAMBDAWRAP_FLUSH": "end", "LAMBDAWRAP_FLUSH_BUDGET_MS": "0"}) as (emu, rx):
        emu.invoke({})
        emu.wait_idle()

        def phases_s() -> list:
            phases = []
            for _ in range(5):
                started = time.monotonic()
                emu.invoke({})
                emu.wait_idle(30)
                phases.append(time.monotonic() - started)
            return phases

        on_time = phases_s()  # the telemetry on time: what this machine takes now
        emu.bus.gate.min_buffer_s = 3.0
        late = phases_s()
        emu.bus.gate.min_buffer_s = 0.0
        # THEN the phase ends with the function's part, as with the telemetry on time (before:
        # held 0.3 s more each time, waiting for the verdict, and billed), and the spans still
        # go, at a later export
        assert statistics.median(late) - statistics.median(on_time) < 0.15, (late, on_time)
        rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"], count=11, timeout=60)


def test_a_runtime_context_the_function_names_for_its_own_packages_leaves_the_companion_quiet(task):
    # GIVEN a function that names a runtime context its own packages bring, which the
    # companion's OpenTelemetry packages do not have
    with instrumented(task, env={"OTEL_PYTHON_CONTEXT": "functions_own_context"}) as (emu, rx):
        # WHEN it is invoked, and its span exported (the companion's SDK loaded)
        result = emu.invoke({})
        rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id)
        lines = [line for _, line in list(emu.logs)]
    # THEN the function's log holds no word of the companion's context (before: a traceback of
    # its failed load, at every cold start)
    assert not [line for line in lines if "context" in line.lower() and ("failed" in line.lower() or "traceback" in line.lower())], lines


def test_user_spans_nest_under_the_invocation(tmp_path):
    task = write_function(
        tmp_path / "task",
        """
        from opentelemetry import trace
        tracer = trace.get_tracer("orders")

        def handler(event, context):
            with tracer.start_as_current_span("load-order") as span:
                span.set_attribute("order.id", 42)
                with tracer.start_as_current_span("db-query"):
                    pass
            return {"ok": True}
        """,
    )
    with instrumented(task) as (emu, rx):
        emu.invoke(apigw_event())
        spans = rx.wait_for_spans(lambda s: s["name"] in ("load-order", "db-query") or "faas.invocation_id" in s["attributes"], count=3)
        invocation = next(s for s in spans if "faas.invocation_id" in s["attributes"])
        load = next(s for s in spans if s["name"] == "load-order")
        query = next(s for s in spans if s["name"] == "db-query")
        assert load["trace_id"] == query["trace_id"] == invocation["trace_id"] == TRACEPARENT_TRACE
        assert load["parent_span_id"] == invocation["span_id"]
        assert query["parent_span_id"] == load["span_id"]
        assert load["attributes"]["order.id"] == 42 and load["scope"] == "orders"


ANNOTATE = """
from opentelemetry.trace import Status, StatusCode


def annotate(span):
    span.set_attribute("tenant.id", "acme")
    span.set_attributes({"order.count": 3, "order.tags": ["a", "b"], "order.paid": True, "faas.trigger": "pubsub"})
    span.add_event("validated", {"rule": "limits"})
    try:
        raise ValueError("card declined")
    except ValueError as error:
        span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, "payment failed"))
    span.update_name("checkout")
    recording = span.is_recording()
    span.end()
    span.set_attribute("after.end", True)  # ignored, as by an ended span
    return recording and not span.is_recording()
"""


def test_what_the_function_sets_on_the_current_span_is_on_its_invocation_span_as_the_sdk_records_it(tmp_path):
    # GIVEN a function that annotates the span it finds current, as OpenTelemetry's Lambda
    # instrumentation users do (trace.get_current_span(): the invocation's, there a recording
    # SDK span), run once through the layer and once on an SDK span
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    task = write_function(tmp_path / "task", ANNOTATE, module="annotate")
    write_function(
        task,
        """
        from opentelemetry import trace
        from annotate import annotate

        def handler(event, context):
            return {"statusCode": 200, "body": str(annotate(trace.get_current_span()))}
        """,
    )
    with instrumented(task) as (emu, rx):
        result = emu.invoke(apigw_event())
        assert result.json()["body"] == "True"  # recording, as the SDK's span is
        invocation = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id)[0]
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    sys.path.insert(0, str(task))
    try:
        from annotate import annotate

        with provider.get_tracer("t").start_as_current_span("GET /orders") as span:
            annotate(span)
    finally:
        sys.path.remove(str(task))
        sys.modules.pop("annotate", None)
    (sdk,) = memory.get_finished_spans()
    # THEN the invocation span holds what the SDK's span holds (before: the current span was a
    # non-recording one, and all of it was lost): its attributes, events, status and name ...
    assert {key: invocation["attributes"][key] for key in sdk.attributes} == {key: list(value) if isinstance(value, tuple) else value for key, value in sdk.attributes.items()}
    assert "after.end" not in invocation["attributes"] and "after.end" not in sdk.attributes
    assert [(e["name"], {k: v for k, v in e["attributes"].items() if k != "exception.stacktrace"}) for e in invocation["events"]] == [(e.name, {k: v for k, v in e.attributes.items() if k != "exception.stacktrace"}) for e in sdk.events]
    assert (invocation["status_code"], invocation["status_message"]) == (sdk.status.status_code.value, sdk.status.description)
    assert invocation["name"] == sdk.name == "checkout"
    # ... while what lambdawrap knows of the invocation stays its own: its id, and its caller's
    # answer, a success (Lambda counts no error), under the trigger it came by
    assert invocation["trace_id"] == TRACEPARENT_TRACE and invocation["attributes"]["faas.invocation_id"] == result.request_id
    assert metric_total(rx, "faas.errors") == 0
    assert metric_total(rx, "faas.invocations", {"faas.trigger": "http"}) == 1


def test_an_event_the_function_dates_out_of_range_is_left_out_not_its_invocation(tmp_path):
    # GIVEN a function that gives an event on the span it finds current a time OTLP cannot carry
    task = write_function(
        tmp_path / "task",
        """
        from opentelemetry import trace

        def handler(event, context):
            span = trace.get_current_span()
            span.add_event("odd", timestamp=-5)
            span.add_event("fine")
            span.set_attribute("kept", 1)
            return {"statusCode": 200}
        """,
    )
    with instrumented(task) as (emu, rx):
        result = emu.invoke(apigw_event())
        invocation = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id)[0]
    # THEN the invocation is its span, with what made sense (before this was checked, the
    # whole record was refused, and the invocation counted as record_missing)
    assert invocation["attributes"]["kept"] == 1 and [e["name"] for e in invocation["events"]] == ["fine"]
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "malformed_record"}) == 0


def test_an_attribute_too_large_for_the_record_leaves_the_invocation_span_without_it(tmp_path):
    # GIVEN a function that sets 300 KB on the span it finds current: more than a record holds
    task = write_function(
        tmp_path / "task",
        """
        from opentelemetry import trace

        def handler(event, context):
            trace.get_current_span().set_attribute("dump", "x" * 300_000)
            trace.get_current_span().set_attribute("small", 1)
            return {"statusCode": 200}
        """,
    )
    with instrumented(task) as (emu, rx):
        result = emu.invoke(apigw_event())
        invocation = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id)[0]
    # THEN the invocation is its span still, without what it set (a record over 256 KB is
    # dropped whole)
    assert "dump" not in invocation["attributes"] and "small" not in invocation["attributes"]
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "record_missing"}) == 0



def test_non_latin_text_fits_a_record_as_its_utf_8_bytes(tmp_path):
    # GIVEN a function that sets 50,000 CJK characters and 20,000 emoji on the span it finds
    # current: 230 KB in UTF-8, within a record's 256 KB; 540 KB as JSON's ASCII escapes
    task = write_function(
        tmp_path / "task",
        """
        from opentelemetry import trace

        def handler(event, context):
            trace.get_current_span().set_attribute("note", "\u65e5" * 50_000)
            trace.get_current_span().set_attribute("mood", "\U0001F600" * 20_000)
            return {"statusCode": 200}
        """,
    )
    with instrumented(task) as (emu, rx):
        result = emu.invoke(apigw_event())
        invocation = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id)[0]
    # THEN the span has both, whole (before, text went as escapes, 6 bytes a CJK character and
    # 12 an emoji, and a record over 256 KB dropped what the function set)
    assert invocation["attributes"].get("note") == "\u65e5" * 50_000
    assert invocation["attributes"].get("mood") == "\U0001F600" * 20_000


# A function ending in the ways tests/test_differential.py compares with and without the layer.
ENDINGS = Path(__file__).resolve().parent / "functions" / "endings"


@pytest.mark.parametrize(
    "event, error_type, message",
    [
        # A message of 100 KB (a payload quoted in it): before, the stack's last 32 KB, all of
        # them the message's
        ({"do": "raise_huge", "size": 100_000}, "ValueError", "m" * 100_000),
        # An exception whose fields are looked up in a dict, as some API clients' errors are:
        # any other name a KeyError, __notes__ too (which Python's traceback formatting asks
        # for from 3.11, expecting an AttributeError): before, an empty stacktrace
        ({"do": "raise_fields"}, "app.FieldsError", "no such order"),
    ],
)
def test_an_exception_event_keeps_the_frames_of_its_stack(tmp_path, event, error_type, message):
    task = tmp_path / "task"
    shutil.copytree(ENDINGS, task, ignore=shutil.ignore_patterns("__pycache__"))
    with instrumented(task) as (emu, rx):
        # WHEN it raises twice: its record sent at once, then held for the runtime's post
        results = [emu.invoke(event) for _ in range(2)]
        assert [r.json()["errorType"] for r in results] == [error_type.rsplit(".", 1)[-1]] * 2
        spans = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") in {r.request_id for r in results}, count=2, timeout=30)
    # THEN each span's exception event has the stack's frames, the message cut where the stack
    # prints it as exception.message is cut
    shown = message[:4096] + ("...[truncated]" if len(message) > 4096 else "")
    for span in spans:
        (exception,) = [e for e in span["events"] if e["name"] == "exception"]
        stack = exception["attributes"]["exception.stacktrace"]
        assert stack.startswith("Traceback (most recent call last):\n") and ", in handler\n" in stack, stack[:2000]
        assert stack.endswith(f"{error_type}: {shown}\n"), stack[-300:]
        assert span["attributes"]["error.type"] == error_type and exception["attributes"]["exception.message"] == message[:4096]


BULKY_SPANS = """
from opentelemetry import trace
tracer = trace.get_tracer("bulk")


def handler(event, context):
    for i in range(event["spans"]):
        with tracer.start_as_current_span(f"item {i}") as span:
            span.set_attribute("payload", "p" * 1000)
    return {"ok": True}
"""


def test_an_invocation_record_larger_than_a_sockets_default_buffer_goes_whole(tmp_path):
    # GIVEN a function whose spans make each invocation's record ~245 KB: within the channel's
    # 256 KB, beyond the ~208 KB a Unix socket takes in one send by default
    task = write_function(tmp_path / "task", BULKY_SPANS)
    with instrumented(task) as (emu, rx):
        # WHEN it is invoked once
        first = emu.invoke({"spans": 190})
        assert first.json() == {"ok": True}
        # THEN its span and its function's spans are exported (before: the record's last part
        # waited for the next invocation's send, and the companion counted it as record_missing)
        rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == first.request_id, count=1, timeout=30)
        assert len(rx.wait_for_spans(lambda s: s["name"].startswith("item "), count=190, timeout=30)) == 190
        # ... and so are the next invocation's, the record of each whole in its own send
        second = emu.invoke({"spans": 190})
        rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == second.request_id, count=1, timeout=30)
        assert len(rx.wait_for_spans(lambda s: s["name"].startswith("item "), count=380, timeout=30)) == 380
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "record_missing"}) == 0
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "record_too_large"}) == 0


TOO_LARGE_AT_IMPORT = """
from opentelemetry import trace

with trace.get_tracer("warmup").start_as_current_span("load model") as span:
    span.set_attribute("model", "m" * 300_000)  # no attribute length limit by default


def handler(event, context):
    return {"ok": True}
"""


def test_a_span_too_large_by_itself_outside_an_invocation_is_counted_as_too_large(tmp_path):
    # GIVEN a function whose span at import time is larger than a record by itself
    task = write_function(tmp_path / "task", TOO_LARGE_AT_IMPORT)
    with instrumented(task) as (emu, rx):
        # WHEN it is invoked
        result = emu.invoke({})
        assert result.json() == {"ok": True}
        rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id, count=1, timeout=30)
        emu.stop()  # SHUTDOWN: the counts are exported by then
    # THEN it is counted as too large, the reason it was not exported (before: as handler_channel,
    # as if the companion had been gone)
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "record_too_large"}) == 1
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "handler_channel"}) == 0


def test_spans_too_many_for_their_invocations_record_go_beside_it(tmp_path):
    # GIVEN a function whose 600 spans make ~700 KB, far over an invocation record's 256 KB
    task = write_function(tmp_path / "task", BULKY_SPANS)
    with instrumented(task) as (emu, rx):
        # WHEN it is invoked, then once more (which reports what the channel could not send)
        first = emu.invoke({"spans": 600})
        assert first.json() == {"ok": True}
        rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == first.request_id, count=1, timeout=30)
        emu.invoke({"spans": 0})

        # THEN its spans go in frames of their own after its record: each is exported, or
        # counted where the socket's buffer had no room for its frame (before: all 600 were
        # dropped with the record's size as the reason)
        def accounted() -> int:
            exported = len([s for s in rx.spans() if s["name"].startswith("item ")])
            return exported + int(metric_total(rx, "lambdawrap.dropped", {"reason": "handler_channel"}))

        wait_for(lambda: accounted() == 600, timeout=30, what="every span exported or counted")
        exported = [s for s in rx.spans() if s["name"].startswith("item ")]
        assert len(exported) >= 150, len(exported)  # the first frame always finds room
        (invocation,) = [s for s in rx.spans() if s["attributes"].get("faas.invocation_id") == first.request_id]
        assert {s["parent_span_id"] for s in exported} == {invocation["span_id"]}
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "record_too_large"}) == 0
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "record_missing"}) == 0


def test_user_spans_follow_the_sdks_rules(tmp_path):
    # GIVEN a function using the OpenTelemetry API as the SDK's users do (the SDK's rules: a
    # link to no span is left out, not the span; 128 events at most, the newest; OK is final,
    # UNSET ignored; `with tracer.start_span(...)` records what escapes it; the tracer's scope)
    task = write_function(
        tmp_path / "task",
        """
        from opentelemetry import propagate, trace
        from opentelemetry.trace import Link, StatusCode
        tracer = trace.get_tracer("batch", "2.1.0", schema_url="https://opentelemetry.io/schemas/1.21.0")

        def handler(event, context):
            # a message without a traceparent: extract gives no span, whose context is invalid
            missing = trace.get_current_span(propagate.extract({})).get_span_context()
            with tracer.start_as_current_span("consume", links=[Link(missing)]) as span:
                span.add_link(missing)
            with tracer.start_as_current_span("chatty") as span:
                for i in range(300):
                    span.add_event(f"retry {i}", {"pad": "x" * 1000})
            try:
                with tracer.start_as_current_span("ok then raise") as span:
                    span.set_status(StatusCode.OK)
                    raise RuntimeError("late")
            except RuntimeError:
                pass
            with tracer.start_as_current_span("error then unset") as span:
                span.set_status(StatusCode.ERROR, "bad")
                span.set_status(StatusCode.UNSET)
            try:
                with tracer.start_span("plain") as span:
                    raise KeyError("k")
            except KeyError:
                pass
            for name, flags in (("used", {}), ("used quietly", {"record_exception": False, "set_status_on_exception": False})):
                try:
                    with trace.use_span(tracer.start_span(name), end_on_exit=True, **flags):
                        raise ValueError("u")
                except ValueError:
                    pass
            return {"ok": True}
        """,
    )
    names = ("consume", "chatty", "ok then raise", "error then unset", "plain", "used", "used quietly")
    with instrumented(task) as (emu, rx):
        assert emu.invoke({}).json() == {"ok": True}
        spans = {s["name"]: s for s in rx.wait_for_spans(lambda s: s["name"] in names, count=len(names))}
    # THEN every span is exported as the SDK records it (before: the span with the invalid link
    # was dropped as malformed; 300 events made the record too large, every span was dropped;
    # OK was overridden, ERROR reset; `plain` had no exception event nor ERROR status; the
    # tracer's version and schema URL were not the scope's)
    assert {(s["scope"], s["scope_version"], s["schema_url"]) for s in spans.values()} == {("batch", "2.1.0", "https://opentelemetry.io/schemas/1.21.0")}
    assert spans["consume"]["links"] == []
    events = spans["chatty"]["events"]
    assert len(events) == 128 and events[0]["name"] == "retry 172" and events[-1]["name"] == "retry 299"
    assert spans["ok then raise"]["status_code"] == 1
    assert spans["error then unset"]["status_code"] == 2 and spans["error then unset"]["status_message"] == "bad"
    plain = spans["plain"]
    assert plain["status_code"] == 2 and plain["status_message"] == "KeyError: 'k'"
    assert [(e["name"], e["attributes"]["exception.type"], e["attributes"]["exception.escaped"]) for e in plain["events"]] == [("exception", "KeyError", "True")]
    # ... and the API's use_span records what escapes it as it says, as with the SDK's spans
    used, quiet = spans["used"], spans["used quietly"]
    assert used["status_code"] == 2 and used["status_message"] == "ValueError: u"
    assert [(e["name"], e["attributes"]["exception.type"], e["attributes"]["exception.escaped"]) for e in used["events"]] == [("exception", "ValueError", "False")]
    assert quiet["status_code"] == 0 and quiet["events"] == []


ATTRIBUTE_BATTERY = """
import datetime, decimal, uuid
from opentelemetry import trace
from opentelemetry.trace import Link


class Plain:
    pass


VALUES = {
    "none": None,
    "bytes": b"\\x00\\xffraw",
    "long bytes": b"longer than the limit",
    "map": {"a": 1, 2: ["x", None, b"z", 2.5], "": "dropped", "deeper": {"b": [True, {"c": None}]}},
    "mixed list": [1, "a", 2.5, None, [True, b"y"]],
    "tuple": (1, 2),
    "decimal": decimal.Decimal("1.50"),
    "date": datetime.date(2026, 12, 2),
    "uuid": uuid.UUID(int=7),
    "set": {3},
    "plain object": Plain(),
    "bytearray": bytearray(b"ab"),
    "long text": "x" * 40,
    "int64 overflow": 2**70,
    "overflow inside": [1, 2**70],
}


def record(tracer):
    with tracer.start_as_current_span("outer"):
        outer = trace.get_current_span().get_span_context()
        # Links to no span: the SDK keeps one that has attributes (a message's, say), not a bare one.
        nowhere = [Link(trace.INVALID_SPAN_CONTEXT, {"messaging.message.id": "m-1"}), Link(trace.INVALID_SPAN_CONTEXT)]
        with tracer.start_as_current_span("each", attributes={5: "int key", "": "no key", **{"start " + k: v for k, v in VALUES.items()}}, links=nowhere) as span:
            for key, value in VALUES.items():
                span.set_attribute(key, value)
            span.set_attribute("", "no key")
            span.set_attributes({7: "int key again", "set_attributes map": {"k": b"v"}})
            span.add_event("event", VALUES)
            span.record_exception(ValueError("v"), VALUES)
            span.record_exception(KeyError("k"), escaped=1)  # a truthy value: its own text, as the SDK writes it
            span.add_link(outer, VALUES)
            span.add_link(trace.INVALID_SPAN_CONTEXT, {"k": "v"})
            span.add_link(trace.INVALID_SPAN_CONTEXT)
"""


def test_user_span_attributes_are_kept_as_the_sdk_keeps_them(tmp_path, monkeypatch):
    # GIVEN a function whose spans hold what the SDK's spans may hold (None, bytes, maps, mixed
    # and nested lists, objects that say what they are, an int OTLP cannot carry), with a
    # value length limit, recorded once through the layer and once through the SDK itself
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from lambdawrap.devtools.otlp_receiver.decoding import _flatten_traces

    limit = {"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "16"}
    task = write_function(tmp_path / "task", ATTRIBUTE_BATTERY, module="battery")
    write_function(
        task,
        """
        from opentelemetry import trace
        from battery import record

        class Unprintable:
            def __str__(self):
                raise RuntimeError("no text")

        def handler(event, context):
            record(trace.get_tracer("battery"))
            with trace.get_tracer("battery").start_as_current_span("unprintable") as span:
                span.set_attribute("value", Unprintable())
            return {"ok": True}
        """,
    )
    for name, value in limit.items():
        monkeypatch.setenv(name, value)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    namespace: dict = {}
    exec(ATTRIBUTE_BATTERY, namespace)
    namespace["record"](provider.get_tracer("battery"))
    by_sdk = {s["name"]: s for s in _flatten_traces(encode_spans(exporter.get_finished_spans()))}
    with instrumented(task, env=limit) as (emu, rx):
        assert emu.invoke({}).json() == {"ok": True}
        spans = {s["name"]: s for s in rx.wait_for_spans(lambda s: s["name"] in ("each", "unprintable"), count=2)}
    # THEN lambdawrap exports each attribute, event and link attribute as the SDK does (before:
    # None, bytes, maps and the objects were "<NoneType>", "<bytes>", ... texts, and lists lost
    # what was not a scalar), and a value whose __str__ raises is no value, not an error
    ours, theirs = spans["each"], by_sdk["each"]
    assert theirs["attributes"]["bytes"] == b"\x00\xffraw" and theirs["attributes"]["decimal"] == "1.50"
    assert ours["attributes"] == theirs["attributes"]
    assert [(e["name"], e["attributes"]) for e in ours["events"]] == [(e["name"], e["attributes"]) for e in theirs["events"]]
    assert [(int(link["trace_id"], 16) == 0, link["attributes"]) for link in ours["links"]] == [(int(link["trace_id"], 16) == 0, link["attributes"]) for link in theirs["links"]]
    assert [link["attributes"] for link in theirs["links"]][::2] == [{"messaging.message.id": "m-1"}, {"k": "v"}]
    assert spans["unprintable"]["attributes"] == {"value": None}


LINKS_TO_IDS_NO_SPAN_HAS = """
from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext

def handler(event, context):
    # A link to a context whose ids are out of range (a hand-made one), with something to say
    bad = SpanContext(-1, -1, is_remote=False)
    with trace.get_tracer("linker").start_as_current_span("linked", links=[Link(bad, {"why": "bad ids"})]):
        pass
    return {"ok": True}
"""


def test_a_link_to_ids_out_of_range_is_exported_with_zeros_and_blocks_nothing(tmp_path):
    # GIVEN a function whose span links to a context with negative ids
    task = write_function(tmp_path / "task", LINKS_TO_IDS_NO_SPAN_HAS)
    with instrumented(task) as (emu, rx):
        # WHEN it runs twice
        ids = [emu.invoke({}).request_id for _ in range(2)]
        linked = rx.wait_for_spans(lambda s: s["name"] == "linked", count=2, timeout=30)
        invocations = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") in ids, count=2, timeout=30)
    # THEN its spans and the invocations' went, the link's ids zeros, as no span's (before: the
    # encoder failed on the negative id, and the batch holding it was given back at every
    # flush: no span of the environment went again)
    assert [(link["trace_id"], link["span_id"], link["attributes"]) for span in linked for link in span["links"]] == [("0" * 32, "0" * 16, {"why": "bad ids"})] * 2
    assert len(invocations) == 2


def test_a_function_module_named_like_a_standard_one_lambdawrap_uses_stays_the_function_s(tmp_path):
    # GIVEN a function whose folder holds modules of its own named `mmap` and `binascii`
    # (standard modules lambdawrap uses)
    task = write_function(tmp_path / "task", "import binascii, mmap\n\ndef handler(event, context):\n    return {'mmap': getattr(mmap, 'MINE', 'standard'), 'binascii': getattr(binascii, 'MINE', 'standard')}\n")
    (task / "mmap.py").write_text("MINE = 'the function s own'\n")
    (task / "binascii.py").write_text("MINE = 'the function s own'\n")
    with Emulator(str(task), "app.handler", invoke_port=None) as bare:
        without = bare.invoke({}).json()
    with instrumented(task) as (emu, rx):
        result = emu.invoke({})
        assert emu.wait_idle(30)
        ours = [line for line in emu.log_lines("function") if "lambdawrap" in line]
    # THEN the function gets what it gets without the layer (its own mmap; its own binascii
    # where Python's start-up has not loaded the standard one), and the invocation is traced
    # with nothing of lambdawrap's in its log (before: lambdawrap's deferred `import mmap` ran
    # the function's, failed, and logged a warning with a traceback; the invocation went
    # untraced; and the boot's `import binascii` was the function's binascii)
    assert result.json() == without and without["mmap"] == "the function s own", (result.json(), without)
    assert ours == [], ours
    assert [s["attributes"]["faas.invocation_id"] for s in invocation_spans(rx)] == [result.request_id]


def test_a_function_zlib_py_is_not_run_by_lambdawrap_reading_a_cloudwatch_logs_event(tmp_path):
    import base64
    import gzip

    # GIVEN a function whose folder holds a `zlib.py` of its own (which it does not import),
    # subscribed to a CloudWatch Logs group
    task = write_function(tmp_path / "task", "import sys\n\ndef handler(event, context):\n    return repr(sys.modules.get('zlib'))\n")
    (task / "zlib.py").write_text("print('the function s zlib.py ran')\n")
    document = json.dumps({"messageType": "DATA_MESSAGE", "logGroup": "/aws/lambda/orders", "logStream": "s", "logEvents": [{"id": "1", "timestamp": 1, "message": "m"}]})
    event = {"awslogs": {"data": base64.b64encode(gzip.compress(document.encode())).decode()}}
    with Emulator(str(task), "app.handler", invoke_port=None) as bare:
        without = bare.invoke(event).json()
    with instrumented(task) as (emu, rx):
        result = emu.invoke(event)
        assert emu.wait_idle(30)
        printed = [line for line in emu.log_lines("function") if "zlib.py ran" in line]
    # THEN the function sees what it sees without the layer, its zlib.py never ran, and the span
    # names the log group (before: lambdawrap's `import zlib` ran the function's file, which
    # then stood in sys.modules for the standard one, and the span named no group)
    assert result.json() == without and printed == [], (result.json(), without, printed)
    (span,) = invocation_spans(rx)
    assert span["attributes"]["messaging.destination.name"] == "/aws/lambda/orders"



def test_a_function_ipaddress_py_is_not_run_by_lambdawrap_reading_an_escaped_s3_key(tmp_path):
    # GIVEN a function whose folder holds an `ipaddress.py` and a `math.py` of its own (which
    # it does not import), notified of an object whose key S3 escaped ("+" for a space)
    task = write_function(tmp_path / "task", "import sys\n\ndef handler(event, context):\n    return [name for name in ('ipaddress', 'math', 'urllib.parse') if name in sys.modules and 'task' in str(getattr(sys.modules[name], '__file__', ''))]\n")
    (task / "ipaddress.py").write_text("print('the function s ipaddress.py ran')\n")
    (task / "math.py").write_text("print('the function s math.py ran')\n")
    event = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "eventTime": "2024-01-01T00:00:00.000Z", "s3": {"bucket": {"name": "reports"}, "object": {"key": "2024+Q1%20summary.csv"}}}]}
    with Emulator(str(task), "app.handler", invoke_port=None) as bare:
        without = bare.invoke(event).json()
    with instrumented(task) as (emu, rx):
        result = emu.invoke(event)
        assert emu.wait_idle(30)
        printed = [line for line in emu.log_lines("function") if ".py ran" in line or "lambdawrap" in line]
    # THEN the function sees what it sees without the layer, its files never ran (before:
    # lambdawrap's `import urllib.parse`, to decode the key, imported the function's
    # ipaddress.py, which stayed in sys.modules), and the span names the object
    assert result.json() == without == [] and printed == [], (result.json(), without, printed)
    (span,) = invocation_spans(rx)
    assert span["attributes"]["faas.document.name"] == "2024 Q1 summary.csv"


def test_a_function_unicodedata_py_is_its_own_with_a_collector_named_in_unicode(tmp_path):
    # GIVEN a function whose folder holds a `unicodedata.py` of its own, which it imports, and
    # a metrics endpoint over gRPC whose host is not ASCII (an internationalized name)
    task = write_function(tmp_path / "task", "import unicodedata\n\ndef handler(event, context):\n    return unicodedata.OWN\n")
    (task / "unicodedata.py").write_text("print('the function s unicodedata.py ran')\nOWN = 'the function s own'\n")
    env = {"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m\u00e9triques.invalid:4317", "OTEL_METRICS_EXPORTER": "none"}
    with Emulator(str(task), "app.handler", env=env, invoke_port=None) as bare:
        without = bare.invoke({}).json()
        ran_without = [line for line in bare.log_lines("function") if ".py ran" in line]
    with instrumented(task, env=env) as (emu, rx):
        result = emu.invoke({})
        assert emu.wait_idle(30)
        ran = [line for line in emu.log_lines("function") if ".py ran" in line]
        lines = [line for line in emu.log_lines("function") if "lambdawrap" in line]
    # THEN it imports its own file, which runs once, as without the layer (before: reading the
    # endpoint at boot, urlsplit's check of a name not in ASCII imported the standard
    # unicodedata, left in sys.modules, and the function's import found that one)
    assert result.json() == without == "the function s own", (result.json(), without)
    assert ran == ran_without and len(ran) == 1, (ran, ran_without)
    assert lines == [], lines
    (span,) = invocation_spans(rx)
    assert span["status_code"] == 0


RAISES_A_LONG_CHAIN = """
def handler(event, context):
    def level(n):
        try:
            if n == 0:
                raise ValueError("caf\u00e9 " + "x" * 1000)  # text not ASCII in the stack's lines
            level(n - 1)
        except ValueError as exc:
            raise ValueError("\u00e9tage %d " % n + "y" * 1000) from exc
    level(event["levels"])
"""


@every_python
def test_the_function_s_own_modules_named_like_what_formatting_a_stack_imports_are_not_run(tmp_path, runtime_python):
    # GIVEN a function whose folder holds an `ast.py`, a `unicodedata.py` and an `fcntl.py` of
    # its own (which it does not import), and whose handler raises a chain of errors: a stack
    # with text not in ASCII, its record over 32 KB (not a `tokenize.py`: 3.13's runtime
    # itself fails on one, formatting the error; tests/test_own_stdlib.py has lambdawrap's part)
    task = write_function(tmp_path / "task", RAISES_A_LONG_CHAIN)
    for name in ("ast", "unicodedata", "fcntl"):
        (task / f"{name}.py").write_text(f"print('the function s {name}.py ran')\n")
    event = {"levels": 40}
    with Emulator(str(task), "app.handler", invoke_port=None, python=runtime_python) as bare:
        without = [bare.invoke(event).json() for _ in range(2)]
        ran_without = [line for line in bare.log_lines("function") if ".py ran" in line]
    with instrumented(task, python=runtime_python) as (emu, rx):
        results = [emu.invoke(event) for _ in range(2)]
        assert emu.wait_idle(30)
        ran = [line for line in emu.log_lines("function") if ".py ran" in line]
        spans = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") in {r.request_id for r in results}, count=2, timeout=30)
    # THEN none of them ran, as without the layer (before: traceback's `import ast` and
    # `import unicodedata` as lambdawrap formatted the stack, and the channel's `import fcntl`
    # for a large record, found the function's files, first on sys.path by then)
    assert ran == ran_without == [], (ran, ran_without)
    assert [{**r.json(), "requestId": None} for r in results] == [{**w, "requestId": None} for w in without]
    # ... and each span has the stack as Python prints it
    for span in spans:
        (exception,) = [e for e in span["events"] if e["name"] == "exception"]
        assert exception["attributes"]["exception.stacktrace"].endswith("ValueError: \u00e9tage 40 " + "y" * 1000 + "\n")



FORMATS_ON_SIXTEEN_THREADS = """
import sys, threading
from lambdawrap.handler import invocation

sys.path.insert(0, sys.argv[1])  # the function's folder, first as the runtime puts it
import ast, unicodedata  # the function's own, imported by its code
before = {name: sys.modules.get(name) for name in ("ast", "unicodedata", "tokenize")}
found_another = []
stacks = set()  # each one's last line of code: its carets

def fails(d):
    return d["caf\\u00e9"] + d["x"][0]["y"]  # a line whose carets ast anchors, text not in ASCII

def describes():
    for _ in range(600):
        try:
            fails({"caf\\u00e9": 1, "x": [{}]})
        except Exception as exc:
            stacks.add(invocation.describe_exception(exc)["stack"].splitlines()[-2])

def function_imports():
    # The function's thread importing, as lambdawrap's format
    while any(thread.is_alive() for thread in threads):
        import ast, unicodedata
        if getattr(ast, "OWN", None) != "ast" or getattr(unicodedata, "OWN", None) != "unicodedata":
            found_another.append((ast, unicodedata))

sys.setswitchinterval(1e-6)
threads = [threading.Thread(target=describes) for _ in range(16)]
[t.start() for t in threads]
function_imports()
[t.join() for t in threads]
print("the function's imports that found another module:", len(found_another))
print("stacks:", len(stacks), "carets as Python prints them:", all(("^" in line) == (sys.version_info >= (3, 11)) for line in stacks))
print("afterwards:", ["as before" if sys.modules.get(name) is module else repr(sys.modules.get(name)) for name, module in before.items()])
"""


@every_python
def test_threads_formatting_stacks_at_once_leave_the_function_s_imports_as_they_were(tmp_path, interpreter):
    # GIVEN a function's folder with an `ast.py`, a `unicodedata.py` and a `tokenize.py` of its
    # own, its code having imported the first two
    folder = tmp_path / "task"
    folder.mkdir()
    for name in ("ast", "unicodedata", "tokenize"):
        (folder / f"{name}.py").write_text(f"print('the function s {name}.py ran')\nOWN = {name!r}\n")
    # WHEN 16 threads describe their exceptions at once, switching every microsecond, as one of
    # the function's imports `ast` and `unicodedata` again and again
    script = tmp_path / "formats.py"  # a file: the stack has its lines of code, and their carets
    script.write_text(FORMATS_ON_SIXTEEN_THREADS)
    done = subprocess.run([interpreter.path, str(script), str(folder)], capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    # THEN the function's imports always found its own modules, its files ran only as it
    # imported them, and sys.modules is what it was (before: lambdawrap lent the standard ast,
    # unicodedata and tokenize to sys.modules as it formatted, where the function's thread found
    # them; earlier, one thread took back what another had lent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "the function s ast.py ran",
        "the function s unicodedata.py ran",
        "the function's imports that found another module: 0",
        "stacks: 1 carets as Python prints them: True",
        "afterwards: ['as before', 'as before', 'as before']",
    ], done.stdout


LIMITS_BATTERY = """
def record(tracer):
    from opentelemetry import trace

    with tracer.start_as_current_span("outer") as outer:
        outer = outer.get_span_context()
    links = [trace.Link(outer, {f"l{i}": i for i in range(20)}) for _ in range(3)]
    with tracer.start_as_current_span("limited", links=links) as span:
        for i in range(200):
            span.set_attribute(f"a{i}", "x" * 40)
        for i in range(6):
            span.add_event(f"e{i}", {f"k{j}": "y" * 40 for j in range(3)})
"""


def test_span_limits_are_read_as_the_sdk_reads_them(tmp_path, monkeypatch):
    # GIVEN the SDK's span limits spelled as the SDK reads them: blank for no limit, a sign, an
    # underscore, blanks around; a span recorded once through the layer, once through the SDK
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from lambdawrap.devtools.otlp_receiver.decoding import _flatten_traces

    limits = {
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "",
        "OTEL_SPAN_EVENT_COUNT_LIMIT": "+4",
        "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT": " 1_0 ",
        "OTEL_SPAN_LINK_COUNT_LIMIT": "2",
        "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT": "2",
        "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "8",
        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "",
    }
    task = write_function(tmp_path / "task", LIMITS_BATTERY, module="battery")
    write_function(
        task,
        """
        from opentelemetry import trace
        from battery import record

        def handler(event, context):
            record(trace.get_tracer("battery"))
            return {"ok": True}
        """,
    )
    for name, value in limits.items():
        monkeypatch.setenv(name, value)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    namespace: dict = {}
    exec(LIMITS_BATTERY, namespace)
    namespace["record"](provider.get_tracer("battery"))
    theirs = {s["name"]: s for s in _flatten_traces(encode_spans(exporter.get_finished_spans()))}["limited"]
    with instrumented(task, env=limits) as (emu, rx):
        assert emu.invoke({}).json() == {"ok": True}
        ours = rx.wait_for_spans(lambda s: s["name"] == "limited")[0]
    # THEN the span keeps what the SDK's keeps (before: a blank or signed value was the default
    # 128 to lambdawrap, and the 200 attributes were cut)
    assert len(theirs["attributes"]) == 200 and len(theirs["events"]) == 4 and len(theirs["links"]) == 2
    assert ours["attributes"] == theirs["attributes"]
    assert [(e["name"], e["attributes"]) for e in ours["events"]] == [(e["name"], e["attributes"]) for e in theirs["events"]]
    assert [link["attributes"] for link in ours["links"]] == [link["attributes"] for link in theirs["links"]]


FAILS_AFTER_A_CALL = """
import os, urllib.request

def handler(event, context):
    with urllib.request.urlopen(os.environ["HTTP_BASE"] + "/status/200?" + "q" * 64, timeout=10):
        pass
    raise ValueError("a message longer than the limit " * 4)
"""


def test_the_spans_lambdawrap_makes_keep_the_sdk_s_span_limits(tmp_path):
    from support.local_servers import recording_server

    # GIVEN span limits that every span lambdawrap makes is over: few attributes, short values,
    # one attribute per event
    limits = {"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "5", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "24", "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT": "1"}
    task = write_function(tmp_path / "task", FAILS_AFTER_A_CALL)
    with recording_server() as http, instrumented(task, env={**limits, "HTTP_BASE": http.url, "LAMBDAWRAP_CAPTURE_PAYLOAD": "true"}) as (emu, rx):
        # WHEN the function makes a call and fails
        result = emu.invoke({"note": "n" * 100})
        assert result.function_error == "Unhandled"
        # (the invocation's id is among the attributes dropped: the SDK keeps the newest)
        invocation = rx.wait_for_spans(lambda s: s["kind"] == 2, timeout=30)[0]
        client = rx.wait_for_spans(lambda s: s["kind"] == 3, timeout=30)[0]
    # THEN the invocation's span and the call's keep 5 attributes, the others counted as
    # dropped, each value cut to 24 characters, and the exception event one attribute (before:
    # all kept whole, the limits applied to the function's own spans only)
    assert len(invocation["attributes"]) == 5 and invocation["dropped_attributes_count"] > 0, invocation
    assert len(client["attributes"]) <= 5 and len(client["attributes"]["url.full"]) == 24, client
    for span in (invocation, client):
        assert all(len(value) <= 24 for value in span["attributes"].values() if isinstance(value, str)), span
    (exception,) = [event for event in invocation["events"] if event["name"] == "exception"]
    assert len(exception["attributes"]) == 1 and exception["dropped_attributes_count"] >= 2, exception


def test_span_limits_keep_what_the_sdk_keeps_of_a_span_lambdawrap_builds():
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, Status, StatusCode

    from lambdawrap.companion.span_building import SpanBuilder
    from lambdawrap.shared import span_limits

    # GIVEN limits, and a span's attributes and events over each of them
    env = {"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "3", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "6", "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "4", "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT": "2", "OTEL_SPAN_EVENT_COUNT_LIMIT": "2"}
    limits, _ = span_limits.read(env, lambda *args: None)
    attributes = {"a": "aaaaaaaa", "b": 1, "c": ["cccccccc", "cc"], "d": True, "e": "eeeeeeee"}
    events = [(f"e{i}", {"x": "xxxxxxxxxx", "y": 2, "z": ["zzzzzzzzz"]}) for i in range(3)]
    # WHEN lambdawrap's builder makes it, and the SDK records it with the same limits
    ours = SpanBuilder(Resource.create({}), "f", lambda trace_id: True, limits).span(
        name="s", trace_id=1, span_id=2, parent_id=None, kind=SpanKind.SERVER, attributes=dict(attributes), start=1, end=2, status=Status(StatusCode.UNSET),
        events=[Event(name, dict(attrs), timestamp=3) for name, attrs in events],
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=3, max_attribute_length=6, max_span_attribute_length=4, max_event_attributes=2, max_events=2))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("t").start_span("s", attributes=dict(attributes))
    for name, attrs in events:
        span.add_event(name, dict(attrs))
    span.end()
    (theirs,) = exporter.get_finished_spans()
    # THEN both keep the same attributes, events and counts of what was dropped
    assert dict(ours.attributes) == dict(theirs.attributes) and ours.dropped_attributes == theirs.dropped_attributes == 2
    assert [(e.name, dict(e.attributes), e.dropped_attributes) for e in ours.events] == [(e.name, dict(e.attributes), e.dropped_attributes) for e in theirs.events]
    assert ours.dropped_events == theirs.dropped_events == 1


@pytest.mark.parametrize("variable, default", [("OTEL_SPAN_EVENT_COUNT_LIMIT", 128), ("OTEL_SPAN_LINK_COUNT_LIMIT", 128), ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", None)])
def test_a_span_limit_no_list_can_hold_is_a_bad_value(variable, default):
    import collections

    from lambdawrap.shared import span_limits

    # GIVEN a limit past what a bounded list's length may be (before: taken, and the bridge's
    # lists of events and links failed as each span was made, the invocation's too)
    warned = []
    limits, corrections = span_limits.read({variable: str(2**63)}, lambda message, *args: warned.append(message % args))
    # THEN it is warned once, naming it and the default, which is what is used
    assert len(warned) == 1 and variable in warned[0] and f"using the default {default if default is not None else 'no limit'}" in warned[0], warned
    assert corrections == ((variable, None),)
    assert getattr(limits, {"OTEL_SPAN_EVENT_COUNT_LIMIT": "events", "OTEL_SPAN_LINK_COUNT_LIMIT": "links"}.get(variable, "span_attribute_length")) == default
    # ... and the most that is taken is one a bounded list holds
    limits, _ = span_limits.read({variable: str(2**63 - 1)}, lambda *args: pytest.fail("warned"))
    collections.deque(maxlen=2**63 - 1)


def test_an_sdk_disabled_value_read_as_false_leaves_the_metrics_on_too(tmp_path):
    from support.stack import instrumented, metric_total

    # GIVEN OTEL_SDK_DISABLED "true" with a no-break space after it: a bad value, read as false
    # (OpenTelemetry's booleans are "true" and "false"; blanks are the C locale's)
    task = write_function(tmp_path / "task", """
        def handler(event, context):
            return {"ok": True}
        """)
    with instrumented(task, env={"OTEL_SDK_DISABLED": "true\u00a0"}) as (emu, rx):
        result = emu.invoke({})
        emu.stop()
        lines = [line for line in emu.log_lines("extension") + emu.log_lines("function") if "lambdawrap:" in line]
    # THEN the invocation is exported, its metrics too (before: the SDK's MeterProvider, which
    # strips any blank, read "true" and turned itself off: no metric at all), and the value is
    # warned of once
    rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id)
    assert metric_total(rx, "faas.invocations") == 1
    assert len([line for line in lines if "OTEL_SDK_DISABLED" in line]) == 1, lines


FLAGS_BATTERY = """
from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, TraceFlags

REMOTE = SpanContext(0x5B8EFFF798038103D269B633813FC60C, 0xEEE19B7EC3C1B174, is_remote=True, trace_flags=TraceFlags(1))


def record(get_tracer, call=None):
    tracer = get_tracer("scoped", "1.2", schema_url="https://example.com/schemas/1", attributes={"team": "core", "shards": [1, 2], "raw": b"\\x00\\xff"})
    with tracer.start_as_current_span("local parent", links=[Link(REMOTE, {"k": "v"})]) as parent:
        with tracer.start_as_current_span("local child", links=[Link(parent.get_span_context())]):
            if call:
                call()
    with tracer.start_as_current_span("remote child", context=trace.set_span_in_context(NonRecordingSpan(REMOTE))):
        pass
    with trace.use_span(NonRecordingSpan(REMOTE)):
        if call:
            call()
    with get_tracer("").start_as_current_span("unnamed scope"):
        pass
"""


def test_span_flags_and_scope_attributes_are_exported_as_the_sdk_exports_them(tmp_path):
    # GIVEN a tracer with scope attributes, spans under a local parent and under a remote one
    # (a context extracted from a message), links to each, and HTTP calls made under each
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from lambdawrap.devtools.otlp_receiver.decoding import _flatten_traces
    from support.local_servers import recording_server

    task = write_function(tmp_path / "task", FLAGS_BATTERY, module="battery")
    write_function(
        task,
        """
        import urllib.request
        from opentelemetry import trace
        from battery import record

        def handler(event, context):
            record(trace.get_tracer, lambda: urllib.request.urlopen(event["url"]).read())
            return {"ok": True}
        """,
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    namespace: dict = {}
    exec(FLAGS_BATTERY, namespace)
    namespace["record"](provider.get_tracer)
    theirs = {s["name"]: s for s in _flatten_traces(encode_spans(exporter.get_finished_spans()))}
    with recording_server() as http, instrumented(task) as (emu, rx):
        assert emu.invoke({"url": http.url + "/ok"}).json() == {"ok": True}
        ours = {s["name"]: s for s in rx.wait_for_spans(lambda s: s["scope"] == "scoped", count=3)}
        calls = rx.wait_for_spans(lambda s: s["name"] == "GET", count=2)
        unnamed = rx.wait_for_spans(lambda s: s["name"] == "unnamed scope")[0]
    # (a tracer got without a name is the SDK's scope "", before: "user")
    assert unnamed["scope"] == theirs["unnamed scope"]["scope"] == "", (unnamed["scope"], theirs["unnamed scope"]["scope"])
    # THEN each span's flags say, as the SDK's do, whether its parent and its links' spans are
    # of another process (before: every parent and link was remote), and the tracer's scope
    # keeps its attributes (before: left out)
    assert theirs["remote child"]["flags"] == 0x300 and theirs["local child"]["flags"] == 0x100
    for name in ("local parent", "local child", "remote child"):
        assert ours[name]["flags"] == theirs[name]["flags"], name
        assert [link["flags"] for link in ours[name]["links"]] == [link["flags"] for link in theirs[name]["links"]], name
        assert (ours[name]["scope_attributes"], ours[name]["scope_version"], ours[name]["schema_url"]) == (theirs[name]["scope_attributes"], "1.2", "https://example.com/schemas/1"), name
    assert theirs["local parent"]["scope_attributes"] == {"team": "core", "shards": [1, 2], "raw": b"\x00\xff"}
    under = {call["parent_span_id"]: call["flags"] for call in calls}
    assert under == {ours["local child"]["span_id"]: 0x100, "eee19b7ec3c1b174": 0x300}


def test_spans_started_on_the_handler_s_threads_nest_under_the_invocation_in_every_invocation(tmp_path):
    # GIVEN a function that imports the API at module level and starts spans on the threads of
    # a ThreadPoolExecutor, where no span is current (contextvars do not follow the work)
    task = write_function(
        tmp_path / "task",
        """
        from concurrent.futures import ThreadPoolExecutor
        from opentelemetry import trace

        tracer = trace.get_tracer("pool")

        def work(n):
            with tracer.start_as_current_span(f"work {n}"):
                return trace.get_current_span().get_span_context().is_valid

        def handler(event, context):
            with ThreadPoolExecutor(2) as pool:
                return {"valid": list(pool.map(work, range(2)))}
        """,
    )
    with instrumented(task) as (emu, rx):
        # WHEN it is invoked twice
        results = [emu.invoke({}) for _ in range(2)]
        assert [r.json() for r in results] == [{"valid": [True, True]}] * 2
        for result in results:
            invocation = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id)[0]
            # THEN each invocation's thread spans are its children (before: roots, each its own
            # trace, in every invocation but the one that first imported the API)
            spans = rx.wait_for_spans(lambda s: s["scope"] == "pool" and s["trace_id"] == invocation["trace_id"], count=2, timeout=30)
            assert sorted(s["name"] for s in spans) == ["work 0", "work 1"]
            assert {s["parent_span_id"] for s in spans} == {invocation["span_id"]}


def test_the_invocation_span_is_current_in_the_invocation_that_first_imports_the_api(tmp_path):
    # GIVEN a function that imports the API only when its handler runs (a lazy import)
    task = write_function(
        tmp_path / "task",
        """
        def handler(event, context):
            from opentelemetry import propagate, trace

            carrier = {}
            propagate.inject(carrier)
            current = trace.get_current_span().get_span_context()
            return {"current": f"{current.trace_id:032x}-{current.span_id:016x}", "traceparent": carrier.get("traceparent")}
        """,
    )
    with instrumented(task) as (emu, rx):
        # WHEN it is invoked twice
        results = [emu.invoke({}) for _ in range(2)]
        for result in results:
            invocation = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id)[0]
            # THEN the invocation span is current in both, and the context it gives goes out (before:
            # in the first, no span was current and nothing was injected)
            assert result.json() == {"current": f"{invocation['trace_id']}-{invocation['span_id']}", "traceparent": f"00-{invocation['trace_id']}-{invocation['span_id']}-01"}


def test_a_context_the_user_attached_before_first_importing_the_api_is_not_left_current(tmp_path):
    # GIVEN a function that attaches a tenant's baggage, then first imports the trace API, and
    # detaches its context again (which takes off what went on after it)
    task = write_function(
        tmp_path / "task",
        """
        from opentelemetry import baggage, context

        def handler(event, context_):
            before = dict(baggage.get_all())
            token = context.attach(baggage.set_baggage("tenant", event["tenant"]))
            from opentelemetry import trace

            trace.get_tracer("t").start_span("work").end()
            context.detach(token)
            return {"before": before}
        """,
    )
    with instrumented(task) as (emu, rx):
        # WHEN it is invoked for one tenant, then another
        first, second = emu.invoke({"tenant": "A"}), emu.invoke({"tenant": "B"})
        # THEN each invocation starts with no tenant's baggage, as without the layer (before:
        # the end of the first put tenant A's context back, current in every later invocation)
        assert (first.json(), second.json()) == ({"before": {}}, {"before": {}})


def test_user_spans_under_an_explicit_parent_follow_the_configured_sampler(tmp_path):
    # GIVEN a function that starts a span under the context a message carried, unsampled, with
    # a sampler that is not parent-based (OTEL_TRACES_SAMPLER=always_on)
    task = write_function(
        tmp_path / "task",
        """
        from opentelemetry import propagate, trace

        def handler(event, context):
            carried = propagate.extract({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-00"})
            with trace.get_tracer("consumer").start_as_current_span("process message", context=carried) as span:
                return {"recording": span.is_recording()}
        """,
    )
    for sampler, recording in (("always_on", True), ("parentbased_always_on", False)):
        with instrumented(task, env={"OTEL_TRACES_SAMPLER": sampler}) as (emu, rx):
            # WHEN it is invoked
            result = emu.invoke({})
            rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id)
            # THEN the span is recorded as the SDK records it: by the root sampler alone where
            # that is the sampler, by the parent's flag where the sampler is parent-based (before:
            # by the parent's flag whatever the sampler)
            assert result.json() == {"recording": recording}, sampler
            if recording:
                (span,) = rx.wait_for_spans(lambda s: s["name"] == "process message")
                assert (span["trace_id"], span["parent_span_id"]) == ("0af7651916cd43dd8448eb211c80319c", "00f067aa0ba902b7")


def test_the_callers_baggage_is_in_the_context_the_function_sees(tmp_path):
    # GIVEN a function that reads the baggage in its current context, called with baggage
    task = write_function(
        tmp_path / "task",
        """
        from opentelemetry import baggage, propagate

        def handler(event, context):
            carrier = {}
            propagate.inject(carrier)
            return {"baggage": dict(baggage.get_all()), "sent": carrier.get("baggage")}
        """,
    )
    event = json.loads((EVENTS / "apigw-http.json").read_text())
    event["headers"]["baggage"] = "tenant=acme,user.id=u%201;prop=1,bad entry=x"
    with instrumented(task) as (emu, rx):
        # WHEN it is invoked, then invoked without baggage
        with_baggage, without = emu.invoke(event), emu.invoke({})
        # (the entry the API leaves out is not warned of in the function's log at each one)
        assert not [line for line in emu.log_lines("function") if "baggage" in line]
    with instrumented(task, env={"OTEL_PROPAGATORS": "tracecontext"}) as (emu, rx):
        # ... and without `baggage` in OTEL_PROPAGATORS, there is none, as there the API's
        # propagators extract none
        assert emu.invoke(event).json() == {"baggage": {}, "sent": None}
    # THEN the caller's baggage is there as the OpenTelemetry instrumentation extracts it with
    # the context (the API's baggage propagator here: this process's global propagators are
    # whatever OTEL_PROPAGATORS said when a test first imported the API), and goes on with the
    # context the function sends (before: neither), only in its invocation
    from opentelemetry import baggage
    from opentelemetry.baggage.propagation import W3CBaggagePropagator

    extracted = W3CBaggagePropagator().extract({"baggage": event["headers"]["baggage"]})
    sent: dict = {}
    W3CBaggagePropagator().inject(sent, context=extracted)
    assert with_baggage.json() == {"baggage": dict(baggage.get_all(extracted)), "sent": sent["baggage"]}
    assert with_baggage.json()["baggage"]["tenant"] == "acme"
    assert without.json() == {"baggage": {}, "sent": None}


def test_a_first_import_of_the_api_in_an_event_loops_task_leaves_the_context_alone(tmp_path):
    # GIVEN a function that first imports the API in a coroutine, whose context is a copy of
    # its thread's
    task = write_function(
        tmp_path / "task",
        """
        import asyncio

        async def main():
            from opentelemetry import trace

            with trace.get_tracer("lazy").start_as_current_span("work"):
                return trace.get_current_span().get_span_context().is_valid

        def handler(event, context):
            return {"valid": asyncio.run(main())}
        """,
    )
    with instrumented(task) as (emu, rx):
        # WHEN it is invoked twice
        results = [emu.invoke({}) for _ in range(2)]
        assert [r.json() for r in results] == [{"valid": True}] * 2
        for result in results:
            invocation = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id)[0]
            (work,) = rx.wait_for_spans(lambda s: s["name"] == "work" and s["trace_id"] == invocation["trace_id"])
            # THEN its spans nest under the invocation, and nothing is attached in the task's
            # context that the end of the invocation would fail to detach (an error logged in
            # the function's log)
            assert work["parent_span_id"] == invocation["span_id"]
        assert not [line for line in emu.log_lines("function") if "detach" in line]


def test_a_span_decorator_made_before_the_users_provider_goes_to_that_provider(tmp_path):
    # GIVEN a library whose functions are decorated at import with a tracer of the API, imported
    # before the function sets its own tracer provider (the usual order of a module's imports)
    task = write_function(
        tmp_path / "task",
        """
        from opentelemetry import trace
        tracer = trace.get_tracer("lib")

        @tracer.start_as_current_span("lib.work")
        def work():
            return 1
        """,
        module="lib",
    )
    write_function(
        task,
        """
        from lib import work
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        EXPORTER = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)

        def handler(event, context):
            work()
            return [s.name for s in EXPORTER.get_finished_spans()]
        """,
    )
    with instrumented(task) as (emu, rx):
        # THEN its provider records the decorated function's span, as without the layer (before:
        # the decorator kept lambdawrap's tracer it was made with, and the user's exporter had none)
        assert emu.invoke({}).json() == ["lib.work"]
        emu.wait_idle()
    assert [s for s in rx.spans() if s["name"] == "lib.work"] == []


OLD_API_PROBE = """
import json
from opentelemetry import trace
del trace.ProxyTracer  # as in opentelemetry-api 1.0.0, which a function may vendor
from lambdawrap.handler import private_wrapt
from lambdawrap.handler.otel_bridge import UserSpans
from lambdawrap.shared.settings import Settings
UserSpans(None, lambda trace_id, parent: True, private_wrapt.load().FunctionWrapper, Settings().span_limits)
print(json.dumps({"bridged": True}))
"""


def test_an_opentelemetry_api_without_proxy_tracers_is_left_alone():
    # GIVEN the function's own OpenTelemetry API from before proxy tracers (1.0.0)
    src = Path(__file__).resolve().parent.parent / "src"
    done = subprocess.run([sys.executable, "-c", OLD_API_PROBE], capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(src)))
    # THEN the bridge is made without routing them (before: AttributeError, logged with a
    # traceback in the function's log as a failed post-import hook)
    assert done.returncode == 0 and json.loads(done.stdout) == {"bridged": True}, done.stderr


UNPRINTABLE_ERROR_APP = """
from opentelemetry import trace

class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no text")

def handler(event, context):
    try:
        with trace.get_tracer("app").start_as_current_span("work"):
            raise Unprintable()
    except Unprintable:
        return "caught its own error"
"""


def test_an_error_whose_text_fails_leaves_the_users_span_as_its_own(tmp_path):
    # GIVEN a function whose span is left by an exception whose __str__ raises, which it catches
    task = write_function(tmp_path / "task", UNPRINTABLE_ERROR_APP)
    with Emulator(str(task), "app.handler", invoke_port=None) as bare:
        without = bare.invoke({}).json()
    with instrumented(task) as (emu, rx):
        body = emu.invoke({}).json()
        work = rx.wait_for_spans(lambda s: s["name"] == "work")[0]
    # THEN the function catches its own exception, as without the layer, and the span records
    # it (before: the API's use_span formatted its text for the status, and that RuntimeError
    # left the block instead)
    assert without == "caught its own error"
    assert body == without
    assert work["status_code"] == 2 and [e["name"] for e in work["events"]] == ["exception"]


UNLOADABLE_CONTEXT_APP = """
from opentelemetry import trace

def handler(event, context):
    try:
        with trace.get_tracer("app").start_as_current_span("work"):
            return "spans work"
    except Exception as exc:
        return repr(exc)
"""


def test_an_api_whose_runtime_context_cannot_load_keeps_its_no_op_spans(tmp_path):
    # GIVEN a function that bundles an OpenTelemetry API older than 1.30, whose runtime context
    # cannot be loaded (OTEL_PYTHON_CONTEXT names none it knows; so too a bundle stripped of its
    # *.dist-info, where the API finds no entry point): every context call of that API raises,
    # but its no-op tracer never makes one
    bundled = Path(installed("otel-api-1.20-requirements.txt", "lambdawrap-otel-api-1.20"))
    task = write_function(tmp_path / "task", UNLOADABLE_CONTEXT_APP)
    for package in ("opentelemetry", "deprecated", "importlib_metadata", "zipp"):
        (task / package).symlink_to(bundled / package, target_is_directory=True)
    env = {"OTEL_PYTHON_CONTEXT": "no_such_context"}
    with Emulator(str(task), "app.handler", env=env, invoke_port=None) as bare:
        without = bare.invoke({}).json()
    with instrumented(task, env=env) as (emu, rx):
        body = emu.invoke({}).json()
        emu.wait_idle()
        lines = emu.log_lines("function")
    # THEN the function's spans work as without the layer, and the API logs nothing (before:
    # the bridge's span was made current through the broken context, and the AttributeError
    # reached the function; the API logged its failure to load at each invocation)
    assert without == "spans work"
    assert body == without
    assert not [line for line in lines if "Failed to load context" in line]
    assert len(invocation_spans(rx)) == 1


def test_process_stays_lean_and_disabled_leaves_it_untouched(task):
    with instrumented(task) as (emu, rx):
        result = emu.invoke(apigw_event())
        body = json.loads(result.json()["body"])
        # Instrumented (its span goes), the handler's name its module's own function
        assert body == {"heavy": [], "handler": "function"}
        rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id)
    with instrumented(task, env={"LAMBDAWRAP_DISABLED": "true"}) as (emu, rx):
        body = json.loads(emu.invoke(apigw_event()).json()["body"])
        assert body["handler"] == "function"
        emu.wait_idle()
    # The companion still ran (it is a separate extension), but nothing was instrumented.
    assert invocation_spans(rx) == []


def test_the_companion_loads_only_what_it_uses(task, tmp_path):
    # Its imports are init's critical path below one vCPU (lifecycle's startup wait): what it
    # does not use must not be there. Python reports every import of the companion's process
    # on its stderr (-X importtime, given by the interpreter it is started with: its start
    # ignores PYTHONPROFILEIMPORTTIME), which the emulator keeps as the extension's log.
    profiled = tmp_path / "profiled-python"
    profiled.write_text(f'#!/bin/sh\nexec {sys.executable} -X importtime "$@"\n')
    profiled.chmod(0o755)
    with instrumented(task, env={"LAMBDAWRAP_PYTHON": str(profiled)}) as (emu, rx):
        emu.invoke(apigw_event())
        wait_for(lambda: invocation_spans(rx), what="the invocation's span")
        imported = {line.rsplit("|", 1)[-1].strip() for line in emu.log_lines("extension") if line.startswith("import time:")}
    # The export really was loaded (the check below is not vacuous; a module loaded through
    # importlib.import_module is not reported, what it imports is) ...
    assert {"opentelemetry.exporter.otlp.proto.http._common", "opentelemetry.sdk.metrics", "lambdawrap.companion.secrets_api"} <= imported
    # ... without importlib.metadata (metadata_on_demand), OpenSSL's hashing (the secrets API's
    # token check), the IDNA codec (a plain-HTTP collector's name), http.client or ssl.
    assert imported.isdisjoint({"importlib.metadata", "zipfile", "hmac", "hashlib", "encodings.idna", "http.client", "ssl", "requests"})


@pytest.mark.parametrize("exported", [True, False])
def test_metrics_and_logs_set_to_none_are_neither_exported_nor_loaded(task, tmp_path, exported):
    # GIVEN a function that logs, with OTEL_METRICS_EXPORTER and OTEL_LOGS_EXPORTER=none (or,
    # to show what they leave out, unset), its companion's imports reported (-X importtime)
    profiled = tmp_path / "profiled-python"
    profiled.write_text(f'#!/bin/sh\nexec {sys.executable} -X importtime "$@"\n')
    profiled.chmod(0o755)
    env = {"LAMBDAWRAP_PYTHON": str(profiled)}
    if not exported:
        env.update(OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER=" None")
    with instrumented(task, env=env) as (emu, rx):
        # WHEN it is invoked twice
        for _ in range(2):
            assert emu.invoke(apigw_event()).json()["statusCode"] == 200
        wait_for(lambda: len(invocation_spans(rx)) == 2, what="both invocations' spans")
        if exported:
            wait_for(lambda: rx.logs() and rx.metrics(), what="the logs and metrics")
        emu.wait_idle()
        paths = {r["path"] for r in rx.requests()}
        imported = {line.rsplit("|", 1)[-1].strip() for line in emu.log_lines("extension") if line.startswith("import time:")}
        warned = [line for line in emu.log_lines("extension") if "_EXPORTER" in line]
    # THEN the spans went, and only with the variables unset did logs and metrics: with none,
    # not a request for them, not a warning, and their exporters not even imported
    assert "/v1/traces" in paths
    assert ({"/v1/logs", "/v1/metrics"} <= paths) is exported and (paths.isdisjoint({"/v1/logs", "/v1/metrics"}) is not exported), paths
    assert ({"opentelemetry.exporter.otlp.proto.common._log_encoder", "opentelemetry.exporter.otlp.proto.common.metrics_encoder"} <= imported) is exported
    assert warned == []


@pytest.mark.parametrize("sdk_disabled", [False, True])
def test_the_companion_collects_garbage_again_once_init_is_over(task, sdk_disabled):
    # The collector is held off while the companion imports (init_gc.py); it must come back
    # whether or not an export pipeline is built, with init's objects frozen.
    env = {"LAMBDAWRAP_LOG_LEVEL": "debug"}
    if sdk_disabled:
        env["OTEL_SDK_DISABLED"] = "true"
    with instrumented(task, env=env) as (emu, rx):
        assert emu.invoke(apigw_event()).json()["statusCode"] == 200
        emu.wait_idle()
        resumed = [line for line in emu.log_lines("extension") if "garbage collection resumed" in line]
    assert len(resumed) == 1, resumed
    frozen = int(resumed[0].split("resumed, ")[1].split()[0])
    # The SDK's modules alone are tens of thousands of objects; without them, the stdlib's.
    assert frozen > (2_000 if sdk_disabled else 20_000)


@pytest.mark.parametrize("sdk_disabled", [False, True])
def test_the_companion_s_own_debug_lines_are_kept_when_its_startup_thread_runs_late(task, tmp_path, sdk_disabled):
    # GIVEN lambdawrap's debug log asked for, and a companion whose startup thread (which
    # configures its logging) runs a second late, as a busy machine may hold it: its other
    # threads log before then
    site = tmp_path / "late-startup"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import threading, time\n"
        "from lambdawrap.shared import log\n"
        "_configure = log.configure_process_logging\n"
        "def _late(*args, **kwargs):\n"
        "    if threading.current_thread() is not threading.main_thread():\n"
        "        time.sleep(1)\n"
        "    _configure(*args, **kwargs)\n"
        "log.configure_process_logging = _late\n"
    )
    late = tmp_path / "late-python"
    # (The companion's start ignores PYTHONPATH, -E: this interpreter drops that flag to take it.)
    late.write_text(f'#!/bin/bash\ncase " $* " in *" -c "*) ;; *) export PYTHONPATH={str(site)!r}; [ "$1" = -E ] && shift ;; esac\nexec {sys.executable} "$@"\n')
    late.chmod(0o755)
    env = {"LAMBDAWRAP_LOG_LEVEL": "debug", "LAMBDAWRAP_PYTHON": str(late)}
    if sdk_disabled:
        env["OTEL_SDK_DISABLED"] = "true"
    with instrumented(task, env=env) as (emu, rx):
        # WHEN it is invoked
        assert emu.invoke(apigw_event()).json()["statusCode"] == 200
        emu.wait_idle()
        # THEN the line the collector's resumption logs (before that thread ran) is there
        wait_for(lambda: [line for line in emu.log_lines("extension") if "garbage collection resumed" in line], what="the companion's debug line")


def test_a_sitecustomize_the_function_had_still_runs(task, tmp_path):
    # GIVEN a sitecustomize the interpreter finds without the layer (on the PYTHONPATH the
    # function sets) WHEN the layer's own sitecustomize shadows it THEN it runs all the same
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os\nos.environ['USER_SITECUSTOMIZE'] = 'ran'\n")
    write_function(task, APP + "\ndef env_handler(event, context):\n    return {'site': os.environ.get('USER_SITECUSTOMIZE')}\n")
    with Emulator(str(task), "app.env_handler", env={"PYTHONPATH": str(site)}, invoke_port=None) as bare:
        assert bare.invoke({}).json() == {"site": "ran"}
    with instrumented(task, "app.env_handler", env={"PYTHONPATH": str(site)}) as (emu, rx):
        assert emu.invoke({}).json() == {"site": "ran"}
        rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"])


PATH_APP = """
import os, sys, subprocess

def handler(event, context):
    child = subprocess.run([sys.executable, "-c", "import sys; print(sorted(m for m in sys.modules if m.startswith('lambdawrap')))"], capture_output=True, text=True)
    return {
        "pythonpath": os.environ.get("PYTHONPATH", "").replace(os.environ["LAMBDA_RUNTIME_DIR"], "<runtime>"),
        "sys_path": [p for p in sys.path if p != os.environ["LAMBDA_RUNTIME_DIR"]],
        "child_loads": child.stdout.strip(),
        "boot_variables": sorted(k for k in os.environ if k.startswith("LAMBDAWRAP_") and k not in ("LAMBDAWRAP_NEXT_WRAPPER", "LAMBDAWRAP_SOCKET")),
        "other_sitecustomize": os.environ.get("OTHER_SITECUSTOMIZE"),
    }
"""


@pytest.mark.parametrize("pythonpath", [None, "vendor"])
def test_a_wrapper_chained_after_ours_keeps_its_pythonpath_and_the_function_none_of_ours(tmp_path, pythonpath):
    # GIVEN another layer's exec wrapper that puts its folder first on PYTHONPATH, chained after
    # ours (LAMBDAWRAP_NEXT_WRAPPER), and a function with or without a PYTHONPATH of its own
    task = write_function(tmp_path / "task", PATH_APP)
    other = tmp_path / "other"
    other.mkdir()
    wrapper = tmp_path / "other-wrapper"
    wrapper.write_text(f'#!/bin/sh\nexport PYTHONPATH="{other}${{PYTHONPATH:+:$PYTHONPATH}}"\nexec "$@"\n')
    wrapper.chmod(0o755)
    env = {"PYTHONPATH": str(task / pythonpath)} if pythonpath else {}
    with Emulator(str(task), "app.handler", env={**env, "AWS_LAMBDA_EXEC_WRAPPER": str(wrapper)}, invoke_port=None) as bare:
        without = bare.invoke({}).json()
    with instrumented(task, env={**env, "LAMBDAWRAP_NEXT_WRAPPER": str(wrapper)}) as (emu, rx):
        body = emu.invoke({}).json()
        rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"])
    # THEN the function's PYTHONPATH and sys.path are those it has with the other wrapper alone
    # (before: the other wrapper's folder was taken out of PYTHONPATH and our boot folder left
    # in, so every Python process the function started loaded lambdawrap)
    assert without["pythonpath"].startswith(str(other)) and without["child_loads"] == "[]"
    assert body == without


@pytest.mark.parametrize("own_sitecustomize", [False, True], ids=["execs the runtime", "its own sitecustomize first"])
def test_a_next_wrapper_written_in_python_leaves_the_runtime_instrumented(tmp_path, own_sitecustomize):
    # GIVEN a next wrapper that is a Python program which sets its own PYTHONPATH first and execs
    # the interpreter it was handed, with an option of its own, as OpenTelemetry's
    # opentelemetry-instrument does, chained after ours; with a sitecustomize of its own first
    # on that path (opentelemetry-instrument's auto_instrumentation folder), or none
    task = write_function(tmp_path / "task", PATH_APP)
    other = tmp_path / "other"
    other.mkdir()
    if own_sitecustomize:
        (other / "sitecustomize.py").write_text("import os\nos.environ['OTHER_SITECUSTOMIZE'] = 'ran'\n")
    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        f"os.environ['PYTHONPATH'] = os.pathsep.join(p for p in ({str(other)!r}, os.environ.get('PYTHONPATH')) if p)\n"
        "os.execv(sys.argv[1], [sys.argv[1], '-X', 'utf8', *sys.argv[2:]])\n"
    )
    wrapper.chmod(0o755)
    with Emulator(str(task), "app.handler", env={"AWS_LAMBDA_EXEC_WRAPPER": str(wrapper)}, invoke_port=None) as bare:
        without = bare.invoke({}).json()
    with instrumented(task, env={"LAMBDAWRAP_NEXT_WRAPPER": str(wrapper)}) as (emu, rx):
        body = emu.invoke({}).json()
        # THEN the runtime is instrumented, its invocation exported (before: lambdawrap's boot
        # ran in the wrapper's Python process and took its variables out there; and the
        # wrapper's sitecustomize shadowed ours), its sitecustomize runs too, and the function
        # sees what it sees with that wrapper alone: none of our variables, nor our folders
        rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"], timeout=60)
    assert without["pythonpath"].startswith(str(other)) and without["child_loads"] == "[]" and without["boot_variables"] == []
    assert without["other_sitecustomize"] == ("ran" if own_sitecustomize else None)
    assert body == without


@pytest.mark.parametrize("shape", ["absolute", "up-from-a-linked-folder", "a-linked-folder-named-with-a-colon"])
def test_the_wrapper_named_through_a_symlink_elsewhere_finds_its_layer(tmp_path, shape):
    # GIVEN AWS_LAMBDA_EXEC_WRAPPER naming a symlink to the layer's wrapper.sh, in another folder:
    # an absolute one, or a relative one whose `..` climb out of a folder reached through a
    # symlink (the kernel climbs from the folder linked to, a path's text from the link); or the
    # wrapper named through a symlink to the layer whose name holds a ':'
    task = write_function(tmp_path / "task", PATH_APP)
    if shape == "a-linked-folder-named-with-a-colon":
        (tmp_path / "links").mkdir()
        (tmp_path / "links" / "layer:v2").symlink_to(LAYER, target_is_directory=True)
        link = tmp_path / "links" / "layer:v2" / "wrapper.sh"
    elif shape == "absolute":
        link = tmp_path / "links" / "wrapper"
        link.parent.mkdir()
        link.symlink_to(LAYER / "wrapper.sh")
    else:
        layer = tmp_path / "layer"
        shutil.copytree(LAYER, layer, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        real = tmp_path / "links" / "real" / "deeper"
        real.mkdir(parents=True)
        (real / "wrapper").symlink_to(os.path.relpath(layer / "wrapper.sh", real))
        (tmp_path / "links" / "shortcut").symlink_to(real, target_is_directory=True)
        link = tmp_path / "links" / "shortcut" / "wrapper"
    with instrumented(task) as (emu, rx):
        direct = emu.invoke({}).json()
        rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"])
    with instrumented(task, env={"AWS_LAMBDA_EXEC_WRAPPER": str(link)}) as (emu, rx):
        body = emu.invoke({}).json()
        # THEN it runs as the wrapper named directly: the function is instrumented (its span
        # exported) and sees the PYTHONPATH and sys.path it has without the layer (before: the
        # wrapper looked for the boot beside the link, so nothing was instrumented, and the
        # function's sys.path lost the layer paths and gained the link folder's)
        rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"])
    assert direct["pythonpath"] == "<runtime>"
    assert body == direct


def test_a_layer_in_a_folder_whose_name_pythonpath_cannot_hold_runs_the_function_as_without_it(tmp_path):
    # GIVEN the layer copied into a folder whose name holds a ':' (PYTHONPATH's separator)
    task = write_function(tmp_path / "task", PATH_APP)
    layer = tmp_path / "tools:v2" / "layer"
    shutil.copytree(LAYER, layer, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    with instrumented(task, layer=layer, env={"AWS_LAMBDA_EXEC_WRAPPER": ""}) as (emu, rx):
        without = emu.invoke({}).json()  # the layer added, its exec wrapper not named
    with instrumented(task, layer=layer) as (emu, rx):
        body = emu.invoke({}).json()
        warned = [line for line in emu.log_lines("function") if "lambdawrap" in line]
    # THEN the function runs as without lambdawrap, with one line saying why (before: the boot's
    # folder went on PYTHONPATH cut in two at the ':', so the boot never ran and the function
    # kept its changed PYTHONPATH, sys.path and five of our variables, without a word)
    assert body == without
    assert warned == [f"lambdawrap: not instrumenting, the layer's folder {layer} holds a ':', which PYTHONPATH cannot name"]


def test_a_function_that_never_reports_is_not_held_open_for_its_records(tmp_path):
    from lambdawrap.companion.correlator import RECORD_GRACE_S, UNREPORTING_AFTER

    # GIVEN a function whose process is not instrumented (the layer added, its exec wrapper
    # not named), so that it sends no record
    task = write_function(tmp_path / "task", "def handler(event, context):\n    return {'ok': True}\n")
    invocations = UNREPORTING_AFTER + 4
    with instrumented(task, env={"AWS_LAMBDA_EXEC_WRAPPER": ""}) as (emu, rx):
        rids = [emu.invoke({}).request_id for _ in range(invocations)]
        assert emu.wait_idle(30)
        overhead_ms = {}
        for item in emu.records("platform.report"):
            record = item["record"]
            overhead_ms[record["requestId"]] = next(span["durationMs"] for span in record["spans"] if span["name"] == "extensionOverhead")
    # THEN the first invocations waited RECORD_GRACE_S for a record after the platform's word
    # (billed), the later ones not at all (before: every one, ~225 ms each)
    assert all(overhead_ms[rid] >= RECORD_GRACE_S * 1000 for rid in rids[:UNREPORTING_AFTER]), overhead_ms
    later = [overhead_ms[rid] for rid in rids[UNREPORTING_AFTER:]]
    assert statistics.median(later) < RECORD_GRACE_S * 1000 / 2, overhead_ms
    # and each is still accounted for once, as a record that never came (the last ones at SHUTDOWN)
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "record_missing"}) == invocations
    assert invocation_spans(rx) == []


def test_a_handler_its_module_s_class_computes_is_computed_once_as_without_the_layer(tmp_path):
    # GIVEN a module of a class of its own whose handler is a property, printing as it is made
    task = write_function(tmp_path / "task", """
        import sys, types

        class _Module(types.ModuleType):
            @property
            def handler(self):
                print("making the handler")
                return lambda event, context: {"made": event}

        sys.modules[__name__].__class__ = _Module
        """)
    with Emulator(str(task), "app.handler", invoke_port=None) as bare:
        without = bare.invoke({"n": 1}).json()
        made_without = [line for line in bare.log_lines("function") if "making the handler" in line]
    with instrumented(task) as (emu, rx):
        result = emu.invoke({"n": 1})
        assert emu.wait_idle(30)
        made_with = [line for line in emu.log_lines("function") if "making the handler" in line]
        ours = [line for line in emu.log_lines("function") if "lambdawrap" in line]
    # THEN the runtime's lookup makes it once, as without the layer, and lambdawrap logs nothing
    # in the function's log (before: made twice, and the hook's failure to set it logged with a
    # traceback); what the lookup made is what is wrapped: the invocation is exported (before:
    # unwrapped, counted as a record that never came)
    assert result.json() == without == {"made": {"n": 1}}
    assert len(made_with) == len(made_without) == 1, (made_with, made_without)
    assert ours == []
    assert [s["attributes"]["faas.invocation_id"] for s in invocation_spans(rx)] == [result.request_id]
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "record_missing"}) == 0


def test_a_layer_added_without_aws_lambda_exec_wrapper_says_so_once(tmp_path):
    from lambdawrap.companion.correlator import UNREPORTING_AFTER

    # GIVEN the layer added to a function whose configuration lacks AWS_LAMBDA_EXEC_WRAPPER (the
    # companion runs; the function's process is not instrumented)
    task = write_function(tmp_path / "task", "def handler(event, context):\n    return {'ok': event}\n")
    invocations = UNREPORTING_AFTER + 2
    with instrumented(task, env={"AWS_LAMBDA_EXEC_WRAPPER": ""}) as (emu, rx):
        results = [emu.invoke({"n": n}) for n in range(invocations)]
        assert emu.wait_idle(30)
        lines = [line for line in emu.log_lines("extension") if "lambdawrap" in line]
    # THEN the function answers as without the layer, each invocation is counted as a record
    # that never came, and one line says why (before: the counts alone, nothing in the log)
    assert [r.json() for r in results] == [{"ok": {"n": n}} for n in range(invocations)]
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "record_missing"}) == invocations
    assert len(lines) == 1 and "AWS_LAMBDA_EXEC_WRAPPER is not set" in lines[0] and "wrapper.sh" in lines[0], lines



BLOCKS_SOCKETS = """
import builtins, os, sys

def refuse_sockets(event, args):
    # A sandboxing policy of the function's own: no socket made in its process
    if event == "socket.__new__":
        raise getattr(builtins, os.environ["REFUSED_WITH"])("network access blocked by policy")

sys.addaudithook(refuse_sockets)

def handler(event, context):
    return {"ok": event}
"""


@pytest.mark.parametrize("error", ["PermissionError", "RuntimeError"])
def test_a_function_whose_records_cannot_reach_the_companion_is_told_as_such(tmp_path, error):
    from lambdawrap.companion.correlator import UNREPORTING_AFTER

    # GIVEN a function, started by lambdawrap, whose own audit hook refuses every socket, with
    # an OSError or with an error of its own
    task = write_function(tmp_path / "task", BLOCKS_SOCKETS)
    invocations = UNREPORTING_AFTER + 1
    with instrumented(task, env={"REFUSED_WITH": error}) as (emu, rx):
        results = [emu.invoke({"n": n}) for n in range(invocations)]
        assert emu.wait_idle(30)
        told = [line for line in emu.log_lines("extension") if "reported none of its first" in line]
        function_lines = [line for line in emu.log_lines("function") if "lambdawrap" in line]
    # THEN it answers as without the layer, each invocation is counted as a record that never
    # came, its log says once why (the record's send met the hook's error, not the connect at
    # the invocation's start, which would leave its start held), and the companion's line names
    # that cause too (before: only that the wrapper had not started lambdawrap, which it had)
    assert [r.json() for r in results] == [{"ok": {"n": n}} for n in range(invocations)]
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "record_missing"}) == invocations
    said = [line.split("\n")[0] for line in function_lines if "lambdawrap: " in line]
    if error == "PermissionError":
        assert len(said) == 1 and "companion not reachable" in said[0] and "blocked by policy" in said[0], function_lines
    else:  # not an error a connect makes: failures of lambdawrap's after the handler, each once
        assert said and all("(logged once; the function is unaffected)" in line for line in said) and len(said) == len({line.split("\t")[-1] for line in said}), function_lines
        assert "after the handler" in said[0] and not [line for line in said if "before the handler" in line], function_lines
    assert len(told) == 1 and "could not reach this process" in told[0], told


def test_handler_in_a_subfolder(tmp_path):
    write_function(tmp_path / "task" / "src" / "svc", "def handler(event, context):\n    return 'sub'\n", module="api")
    with instrumented(tmp_path / "task", "src/svc/api.handler") as (emu, rx):
        assert emu.invoke({}).json() == "sub"
        rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"])


@pytest.mark.parametrize("strategy", ["end", "periodic,60000"])
def test_flush_strategies(task, strategy):
    with instrumented(task, env={"LAMBDAWRAP_FLUSH": strategy}) as (emu, rx):
        for _ in range(3):
            emu.invoke({})
            emu.wait_idle()
        # "end": every invocation exported without waiting for another one (or SHUTDOWN);
        # periodic: the first flush happens at the first invocation, then nothing for 60 s.
        expected = 3 if strategy == "end" else 1
        rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"], count=expected, timeout=60)
        exported_before_shutdown = len(invocation_spans(rx))
    assert len(invocation_spans(rx)) == 3  # SHUTDOWN flushed whatever was left
    assert exported_before_shutdown == expected


def test_bounded_buffer_counts_drops_and_delivers_backlog(task):
    with instrumented(task, env={"LAMBDAWRAP_FLUSH": "end", "LAMBDAWRAP_BUFFER_MAX_SPANS": "3"}) as (emu, rx):
        rx.set_behaviour(status=500)  # not retried by the exporter: every export fails at once
        for _ in range(6):
            emu.invoke({})
            emu.wait_idle()
        assert invocation_spans(rx) == []
        rx.reset_behaviour()
        emu.invoke({})
        emu.wait_idle()
    spans = rx.spans()
    full = metric_total(rx, "lambdawrap.dropped", {"reason": "buffer_full"})
    # A batch the collector fails twice with 500 (OTLP: not to be retried) is counted as rejected
    rejected = metric_total(rx, "lambdawrap.dropped", {"reason": "rejected_by_collector"})
    # Every span (7 invocations + the init span) is accounted for exactly once: exported,
    # or counted as dropped.
    assert len({s["span_id"] for s in spans}) == len(spans) >= 1 and rejected > 0
    assert len(spans) + full + rejected == 7 + 1
    assert metric_total(rx, "faas.invocations") == 7  # metrics were retained and resent


def test_proactive_init_and_provisioned_concurrency_are_not_cold_starts(task):
    with instrumented(task, env={"LAMBDAWRAP_PROACTIVE_INIT_MS": "300"}) as (emu, rx):
        emu.init()
        # The platform initialized ahead of demand; the first invoke comes much later.
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            time.sleep(0.05)
        emu.invoke({})
        span = rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"])[0]
        assert span["attributes"]["faas.coldstart"] is False and span["attributes"]["lambdawrap.proactive_init"] is True
    with instrumented(task, env={"AWS_LAMBDA_INITIALIZATION_TYPE": "provisioned-concurrency"}) as (emu, rx):
        emu.invoke({})
        span = rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"])[0]
        assert span["attributes"]["faas.coldstart"] is False


def test_a_provisioned_environment_re_initialized_inside_an_invoke_is_a_cold_start(tmp_path):
    # GIVEN provisioned concurrency, and a first invocation that times out: the platform resets
    # the environment, and the next invoke runs init again inside it, its caller waiting
    task = write_function(tmp_path / "task", "import time\n\ndef handler(event, context):\n    time.sleep(event.get('sleep', 0))\n    return 'ok'\n")
    with instrumented(task, env={"AWS_LAMBDA_INITIALIZATION_TYPE": "provisioned-concurrency"}, timeout_s=1.0) as (emu, rx):
        first = emu.invoke({"sleep": 5})
        second = emu.invoke({})
        assert first.function_error is not None and second.json() == "ok"
        spans = {s["attributes"]["faas.invocation_id"]: s for s in rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"], count=2)}
        inits = rx.wait_for_spans(lambda s: s["name"].endswith(" init"), count=2)
    # THEN the first is no cold start (its init ran ahead, in its own phase), the second is,
    # and so is its init (before: neither, as provisioned concurrency never was)
    assert (spans[first.request_id]["attributes"]["faas.coldstart"], spans[second.request_id]["attributes"]["faas.coldstart"]) == (False, True)
    assert sorted((s["attributes"]["lambdawrap.init.phase"], s["attributes"]["faas.coldstart"]) for s in inits) == [("init", False), ("invoke", True)]


@pytest.mark.parametrize("layout", ["package", "module __getattr__"])
def test_a_handler_ready_long_after_its_module_loaded_is_still_a_cold_start(tmp_path, layout):
    # GIVEN a handler the runtime gets 3 s after its module loaded: a package whose __init__
    # imports the handler's module, then does its own heavy work; a module whose __getattr__
    # makes the handler slowly (PEP 562); and a proactive init 1.5 s after the handler is had
    task = tmp_path / "task"
    if layout == "package":
        write_function(task / "svc", "from .app import handler\nimport time\ntime.sleep(3)\n", module="__init__")
        write_function(task / "svc", "def handler(event, context):\n    return 'ok'\n")
        handler = "svc.app.handler"
    else:
        write_function(task, "import time\n\ndef __getattr__(name):\n    if name != 'handler':\n        raise AttributeError(name)\n    time.sleep(3)\n    return lambda event, context: 'ok'\n")
        handler = "app.handler"
    with instrumented(task, handler, env={"LAMBDAWRAP_PROACTIVE_INIT_MS": "1500"}) as (emu, rx):
        # WHEN it is invoked at once
        result = emu.invoke({})
        assert result.function_error is None and result.json() == "ok"
        span = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id)[0]
    # THEN its caller waited for the init: a cold start (before: the time since the module
    # loaded counted, and it was taken for a proactive init)
    assert (span["attributes"]["faas.coldstart"], span["attributes"].get("lambdawrap.proactive_init")) == (True, None), span["attributes"]


def test_the_cold_start_is_the_environment_s_first_invocation_even_one_that_never_reached_the_handler(task):
    # GIVEN environments whose first invocation the runtime answers itself (an event that is
    # not JSON: the handler never runs), then one that reaches the handler
    with instrumented(task) as (emu, rx):
        results = [emu.invoke(raw=b"{not json"), emu.invoke({}), emu.invoke({})]
        assert results[0].json()["errorType"] == "Runtime.UnmarshalError"
        spans = {s["attributes"]["faas.invocation_id"]: s for s in rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"], count=3)}
    # THEN the first is the cold start, not the handler's first call (before: the other way round)
    assert [spans[r.request_id]["attributes"]["faas.coldstart"] for r in results] == [True, False, False]
    assert metric_total(rx, "faas.coldstarts") == 1
    # ... unless it came long after init (a proactive init), as for a first call of the handler
    with instrumented(task, env={"LAMBDAWRAP_PROACTIVE_INIT_MS": "300"}) as (emu, rx):
        emu.init()
        assert emu.wait_idle(30)
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            time.sleep(0.05)
        late = emu.invoke(raw=b"{not json")
        span = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == late.request_id)[0]
    assert span["attributes"]["faas.coldstart"] is False
    assert metric_total(rx, "faas.coldstarts") == 0


def spans_of_invocations_the_runtime_answered_itself(init_records: list, resource=None) -> list:
    """The spans the companion makes, after `init_records`, of two invocations that never reached
    the handler (no record from the function: the companion's own ids and cold start)."""
    from opentelemetry.sdk.resources import Resource

    from lambdawrap.companion.correlator import Correlator
    from lambdawrap.companion.span_building import SpanBuilder

    class Sink:
        def __init__(self):
            self.made = []

        def invocation(self, inv):
            self.made.append(inv)

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    sink = Sink()
    correlator = Correlator(sink, lambda reason, what: None)
    correlator.on_telemetry(init_records)
    for rid in ("a1", "a2"):
        correlator.on_invoke({"requestId": rid, "invokedFunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:orders"})
        correlator.on_telemetry([{"type": "platform.runtimeDone", "record": {"requestId": rid, "status": "error", "errorType": "Runtime.Unknown"}}])
    correlator.finish_overdue(time.monotonic() + 60)  # no record came in the grace: made from the platform's word
    builder = SpanBuilder(resource if resource is not None else Resource.create({}), "orders", lambda trace_id: True)
    return [builder.invocation(inv)[0] for inv in sink.made]


def test_the_cold_start_of_a_first_invocation_without_the_functions_word_follows_the_platform_s_init_type():
    flags = {}
    for init_type in ("on-demand", "provisioned-concurrency"):
        # GIVEN an init of that type, then two invocations the runtime answered itself
        spans = spans_of_invocations_the_runtime_answered_itself([{"time": "2026-12-03T10:00:00.000Z", "type": "platform.initStart", "record": {"initializationType": init_type, "phase": "init"}}])
        flags[init_type] = [span.attributes["faas.coldstart"] for span in spans]
    # THEN the first is the cold start on demand only
    assert flags == {"on-demand": [True, False], "provisioned-concurrency": [False, False]}


def test_a_snapstart_copy_s_first_invocation_is_its_cold_start_with_ids_of_its_own():
    from lambdawrap.shared import ids

    def restored_copy(snapshot: tuple) -> list:
        # GIVEN a SnapStart function's companion, whose init ran when the version was published
        # (hours before), restored from the snapshot; WHEN two invocations come that never reach
        # the handler (the ids are the companion's)
        ids._generator.setstate(snapshot)
        return spans_of_invocations_the_runtime_answered_itself([
            {"time": "2026-12-03T10:00:00.000Z", "type": "platform.initStart", "record": {"initializationType": "snap-start", "phase": "init"}},
            {"time": "2026-12-03T10:00:01.000Z", "type": "platform.initReport", "record": {"initializationType": "snap-start", "phase": "init", "status": "success", "metrics": {"durationMs": 1000.0}}},
        ])

    snapshot = ids._generator.getstate()
    first_copy, second_copy = restored_copy(snapshot), restored_copy(snapshot)
    # THEN the first is the copy's cold start, as its process would say (before: the publish-time
    # init was hours before, and no SnapStart invocation was ever a cold start) ...
    assert [span.attributes["faas.coldstart"] for span in first_copy] == [True, False]
    # ... and each copy draws ids of its own (before: every copy made the snapshot's)
    assert {span.context.trace_id for span in first_copy}.isdisjoint(span.context.trace_id for span in second_copy)


@pytest.mark.parametrize("init_type, configured, renewed", [
    ("snap-start", "", True),
    ("on-demand", "", False),
    ("provisioned-concurrency", "", False),
    ("snap-start", "service.instance.id=checkout-1", False),  # the user's own stands
])
def test_a_snapstart_copy_exports_under_an_instance_id_of_its_own(init_type, configured, renewed):
    from lambdawrap.companion.resource import build_resource
    from lambdawrap.shared.settings import Settings

    # GIVEN the environment's resource, built in init (for SnapStart: in the snapshot, which
    # every restored copy holds), maybe with an instance id the user set
    resource = build_resource(Settings.from_env({"OTEL_RESOURCE_ATTRIBUTES": configured} if configured else {}, warn=False), "123456789012")
    in_init = resource.attributes["service.instance.id"]
    # WHEN the first invocations come
    spans = spans_of_invocations_the_runtime_answered_itself([
        {"time": "2026-12-03T10:00:00.000Z", "type": "platform.initStart", "record": {"initializationType": init_type, "phase": "init"}},
    ], resource)
    # THEN a restored copy's spans (and metrics: the meter provider holds the same resource) go
    # under an instance id of its own (before: the snapshot's, in every copy restored, whose
    # series were then one, written by all); elsewhere, and where the user set it, it stays
    ids = {span.resource.attributes["service.instance.id"] for span in spans}
    assert ids == {resource.attributes["service.instance.id"]}
    assert (ids != {in_init}) is renewed, (in_init, ids)
    assert configured.partition("=")[2] in ("", *ids)
    # ... and the resource hashes as what it holds now (the encoders group spans by it)
    assert hash(resource) == hash(type(resource)(dict(resource.attributes), resource.schema_url))


def test_a_resource_renewed_while_an_exporter_hashes_it_hashes_as_what_it_holds(monkeypatch):
    from opentelemetry.sdk.resources import Resource

    from lambdawrap.companion.resource import build_resource
    from lambdawrap.shared.settings import Settings

    resource = build_resource(Settings.from_env({}, warn=False), "123456789012")
    sdk_hash = Resource.__hash__

    def renewed_meanwhile(self):
        value = sdk_hash(self)  # made from the attributes as they were ...
        monkeypatch.setattr(Resource, "__hash__", sdk_hash)
        resource.renew_instance_id()  # ... renewed by the restore before the hash is kept
        return value

    # GIVEN an exporter's thread hashing the resource as a restored copy renews its instance id
    monkeypatch.setattr(Resource, "__hash__", renewed_meanwhile)
    old = hash(resource)
    # THEN the hash kept is not taken for the new attributes' (before: it was, for good)
    assert hash(resource) == sdk_hash(resource) != old


def test_sqs_messages_become_links(task):
    event = json.loads((EVENTS / "sqs.json").read_text())
    with instrumented(task) as (emu, rx):
        emu.invoke(event)
        span = rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"])[0]
        assert span["kind"] == 5 and span["attributes"]["messaging.system"] == "aws_sqs"  # CONSUMER
        assert span["parent_span_id"] == ""  # a new trace, linked to the producers
        links = {(l["trace_id"], l["span_id"]) for l in span["links"]}
        # One link per distinct producer context: a W3C traceparent, or the X-Ray header.
        assert links == {("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"), ("5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8")}


def test_resource_settings_and_per_signal_endpoint(task):
    from lambdawrap.devtools.otlp_receiver import OtlpReceiver

    with OtlpReceiver() as traces_only:
        env = {
            "OTEL_SERVICE_NAME": "checkout",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=staging,team=payments",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": traces_only.endpoint + "/v1/traces",
        }
        with instrumented(task, env=env) as (emu, rx):
            emu.invoke({})
            span = traces_only.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"])[0]
            assert span["resource"]["service.name"] == "checkout"
            assert span["resource"]["deployment.environment.name"] == "staging" and span["resource"]["team"] == "payments"
            assert span["resource"]["cloud.region"] == "us-east-1" and span["resource"]["faas.max_memory"] == DEFAULT_MEMORY_MB * 1024 * 1024
        assert invocation_spans(rx) == []  # traces went to their own endpoint
        assert metric_total(rx, "faas.invocations") == 1  # metrics to the general one


def test_a_bad_resource_attribute_is_named_once_and_the_sdks_detectors_stay_quiet(task):
    # GIVEN OTEL_RESOURCE_ATTRIBUTES with an item without "=" and one without a key, and the
    # SDK's resource detectors named (lambdawrap makes its resource itself)
    env = {"OTEL_RESOURCE_ATTRIBUTES": "team=payments,oops,=orphan, tier = gold ", "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "aws_lambda,process"}
    with instrumented(task, env=env) as (emu, rx):
        # WHEN the function runs
        emu.invoke({})
        span = rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"])[0]
        wait_for(lambda: metric_total(rx, "faas.invocations") == 1, 30, what="the invocation's metrics")
        lines = emu.log_lines("extension") + emu.log_lines("function")
    # THEN the good items are the resource's ...
    assert span["resource"]["team"] == "payments" and span["resource"]["tier"] == "gold" and "" not in span["resource"]
    # ... the bad ones named once, by lambdawrap, and the SDK (whose detectors run as its logs
    # module is imported in the companion) said nothing of them, nor of the detectors
    said = [line for line in lines if "'oops'" in line]
    assert len(said) == 1 and "OTEL_RESOURCE_ATTRIBUTES" in said[0] and "'=orphan'" in said[0], said
    assert not [line for line in lines if "resource attribute pair" in line or "resource detector" in line or "non-empty string" in line], lines


def test_the_sdks_batching_and_intervals_are_not_read(task):
    # GIVEN the SDK's export intervals and timeouts set to what it cannot read (the README: not
    # read; LAMBDAWRAP_FLUSH says when to export)
    env = {"OTEL_METRIC_EXPORT_TIMEOUT": "soon", "OTEL_METRIC_EXPORT_INTERVAL": "often", "OTEL_BSP_SCHEDULE_DELAY": "later", "OTEL_BLRP_MAX_QUEUE_SIZE": "many"}
    with instrumented(task, env=env) as (emu, rx):
        # WHEN the function runs THEN every signal goes, and nothing is said of them (the SDK
        # warned "Found invalid value for export timeout" as the metrics pipeline was made)
        emu.invoke({})
        rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"])
        wait_for(lambda: metric_total(rx, "faas.invocations") == 1, 30, what="the invocation's metrics")
        lines = emu.log_lines("extension") + emu.log_lines("function")
    assert not [line for line in lines if "invalid value" in line.lower() or "OTEL_" in line], lines


def test_a_credential_provider_the_exporters_cannot_load_is_named_once_and_none_used(task):
    # GIVEN the OTLP/HTTP exporters told to load a credential provider the layer does not hold
    env = {"OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER": "corp_sso"}
    with instrumented(task, env=env) as (emu, rx):
        # WHEN the function runs THEN every signal goes without it (before: the exporters raised
        # as they were made, the pipeline failed to start, and nothing was exported or counted)
        result = emu.invoke({})
        rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id, timeout=30)
        wait_for(lambda: metric_total(rx, "faas.invocations") == 1, 30, what="the invocation's metrics")
        lines = emu.log_lines("extension")
    # ... and the variable was named once, with the default used instead
    said = [line for line in lines if "corp_sso" in line]
    assert len(said) == 1 and "ignoring OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER='corp_sso'" in said[0] and "using the default (none)" in said[0], lines


def test_a_grpc_credential_provider_the_exporter_cannot_load_is_named_once_and_none_used(monkeypatch, caplog):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    from lambdawrap.companion.exporting import GrpcExporterToBuild, built

    # GIVEN a gRPC exporter over TLS told to load a credential provider that is not installed
    monkeypatch.setenv("OTEL_PYTHON_EXPORTER_OTLP_GRPC_CREDENTIAL_PROVIDER", "corp_sso")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://collector.example:4317")
    # WHEN it is made THEN it is, without the provider, and the variable was named once
    with caplog.at_level(logging.WARNING, logger="lambdawrap"):
        spans, _, _ = built((GrpcExporterToBuild(OTLPSpanExporter), None, None))
    assert isinstance(spans, OTLPSpanExporter)
    (said,) = [r.getMessage() for r in caplog.records if "corp_sso" in r.getMessage()]
    assert "ignoring OTEL_PYTHON_EXPORTER_OTLP_GRPC_CREDENTIAL_PROVIDER='corp_sso'" in said and "using the default (none)" in said
    spans.shutdown()


def test_each_environment_is_its_own_service_instance(task):
    # GIVEN two environments of one function, and a third whose OTEL_RESOURCE_ATTRIBUTES names
    # its instance WHEN each runs an invocation THEN each environment's spans and metrics carry
    # one service.instance.id of its own (a UUID), and the configured one wins
    ids = []
    for env in ({}, {}, {"OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=blue-1"}):
        with instrumented(task, env=env) as (emu, rx):
            emu.invoke({})
            span = rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"])[0]
            wait_for(lambda: metric_total(rx, "faas.invocations") == 1, 30, what="the invocation's metrics")
            seen = {span["resource"].get("service.instance.id")} | {p["resource"].get("service.instance.id") for p in rx.metrics()}
        assert len(seen) == 1, seen
        ids.append(seen.pop())
    assert ids[0] != ids[1] and ids[2] == "blue-1", ids
    assert all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4 for i in ids[:2]), ids


def test_grpc_export(task):
    from support.grpc_receiver import GrpcTraceReceiver

    with GrpcTraceReceiver() as grpc_rx:
        env = {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": grpc_rx.endpoint}
        with instrumented(task, env=env) as (emu, rx):
            result = emu.invoke({})
            spans = grpc_rx.wait_for(1)
            # At a full core the first /next does not wait for the pipeline, whose imports then
            # go on at a low priority; the threads gRPC starts for the exports must not carry
            # it (exporting.GrpcExporterToBuild).
            niceness = thread_niceness(companion_process(emu).pid)
        assert any(s["attributes"].get("faas.invocation_id") and s["attributes"]["faas.invocation_id"].string_value == result.request_id for s in spans)
    grpc_threads = {name: nice for name, nice in niceness if name.startswith(("grpc", "event_engine", "lifeguard"))}
    assert grpc_threads, niceness  # gRPC's own threads were started (the check is not vacuous)
    # The companion's own priority: the test's, which a CI runner may have lowered (nice).
    assert set(grpc_threads.values()) == {os.getpriority(os.PRIO_PROCESS, 0)}, niceness


def test_exporter_variables_set_empty_are_read_as_unset(task):
    from support.grpc_receiver import GrpcTraceReceiver

    # GIVEN spans over gRPC and metrics over OTLP/HTTP, with exporter variables set empty, as a
    # template's parameter left blank sets them (the specification: as if unset)
    with GrpcTraceReceiver() as grpc_rx:
        env = {
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": grpc_rx.endpoint,
            "OTEL_EXPORTER_OTLP_COMPRESSION": "",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": " ",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-team=shop",
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS": " ",
        }
        with instrumented(task, env=env) as (emu, rx):
            # WHEN the function runs
            result = emu.invoke({})
            # THEN the spans go over gRPC (an empty compression or timeout failed the exporter
            # as it was made: telemetry off, nothing counted) ...
            spans = grpc_rx.wait_for(1, timeout=30)
            wait_for(lambda: metric_total(rx, "faas.invocations") == 1, 30, what="the invocation's metrics")
            metric_requests = [r for r in rx.requests() if r["path"] == "/v1/metrics"]
            lines = emu.log_lines("extension")
    assert any(s["attributes"].get("faas.invocation_id") and s["attributes"]["faas.invocation_id"].string_value == result.request_id for s in spans)
    # ... and the metrics carry the general headers (a blank signal's own left them out)
    assert metric_requests and {r["headers"].get("x-team") for r in metric_requests} == {"shop"}
    assert not [line for line in lines if "Header format invalid" in line or "ignoring" in line], lines


@pytest.mark.parametrize(
    "compression, warned",
    [
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "none"}, None),
        ({"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "None", "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}, None),
        ({"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "deflate"}, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"),
    ],
    ids=["none", "own none over general gzip", "deflate"],
)
def test_grpc_export_with_each_compression_the_variables_name(task, compression, warned):
    from support.grpc_receiver import GrpcTraceReceiver

    # GIVEN spans over gRPC, with the specification's "none" (the gRPC exporters read only gzip
    # and failed as they were made: telemetry off, nothing counted), or deflate, which gRPC
    # does not take
    with GrpcTraceReceiver() as grpc_rx:
        env = {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": grpc_rx.endpoint, **compression}
        with instrumented(task, env=env) as (emu, rx):
            # WHEN the function runs THEN its span goes over gRPC, and the metrics over HTTP
            result = emu.invoke({})
            spans = grpc_rx.wait_for(1, timeout=30)
            wait_for(lambda: metric_total(rx, "faas.invocations") == 1, 30, what="the invocation's metrics")
            lines = emu.log_lines("extension")
    assert any(s["attributes"].get("faas.invocation_id") and s["attributes"]["faas.invocation_id"].string_value == result.request_id for s in spans)
    # ... and deflate was named once, with the default used instead
    said = [line for line in lines if "ignoring OTEL_EXPORTER_OTLP_" in line]
    if warned is None:
        assert not said, said
    else:
        assert len(said) == 1 and f"ignoring {warned}='deflate'" in said[0] and "over gRPC" in said[0], said


def test_a_grpc_collector_that_refuses_a_request_costs_only_that_request(task):
    import grpc

    from support.grpc_receiver import GrpcTraceReceiver

    # GIVEN a gRPC trace collector that refuses the first request as unauthenticated
    with GrpcTraceReceiver() as grpc_rx:
        grpc_rx.refuse(1, grpc.StatusCode.UNAUTHENTICATED)
        env = {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": grpc_rx.endpoint}
        with instrumented(task, env=env) as (emu, rx):
            first = emu.invoke({})
            wait_for(lambda: grpc_rx.requests, 30, what="the first span request")
            later = [emu.invoke({}).request_id for _ in range(3)]
            # (the first invocation's init span may go in a request of its own, refused or not)
            invocation_ids = lambda: [s["attributes"]["faas.invocation_id"].string_value for s in list(grpc_rx.spans) if "faas.invocation_id" in s["attributes"]]
            wait_for(lambda: set(later) <= set(invocation_ids()), 30, what="the later invocations' spans")
            assert emu.wait_idle(30)
            spans = list(grpc_rx.spans)
        refused = [rid for r in grpc_rx.requests if r["refused"] for rid in r["span_ids"]]
        delivered = invocation_ids()
    # THEN the refused spans (the first invocation's, its init's) are counted as rejected and
    # never sent again; the later invocations' spans go (before, the refused batch came first
    # at every flush and was refused again, holding them back)
    assert refused and not set(refused) & {s["span_id"] for s in spans}
    assert first.request_id not in delivered and sorted(delivered) == sorted(later)
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "rejected_by_collector"}) == len(refused)


def thread_niceness(pid: int) -> list:
    """[(thread name, nice value)] of a process's live threads."""
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue  # a thread that ended meanwhile
        found.append((name, int(fields[16])))
    return found


def test_out_of_memory_yields_a_span_with_the_reason(tmp_path):
    task = write_function(tmp_path / "task", "import time\ndef handler(event, context):\n    blocks = []\n    for _ in range(60):\n        blocks.append(bytearray(10 * 1024 * 1024))\n        time.sleep(0.01)\n    return len(blocks)\n")
    # About memory, not CPU: at 128 MB's CPU share the companion could not load the SDK
    # before the shutdown deadline, and the span would wait for the next environment.
    with instrumented(task, memory_mb=128, timeout_s=10, cpu_limit=False) as (emu, rx):
        result = emu.invoke({})
        assert result.json()["errorType"] == "Runtime.OutOfMemory"
        span = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id, timeout=15)[0]
        assert span["status_code"] == 2 and span["attributes"]["lambdawrap.failure_reason"] == "out_of_memory"
    assert metric_total(rx, "lambdawrap.crashes") == 1


WORK_BEFORE_FAILING_S = 1.0


def failing_first_loads(marker: Path) -> str:
    """Module source that is true (`FAILING`) for the first two loads: the init, and its run
    again inside the first invocation (the platform's suppressed init), so that the caller gets
    the init's failure; false from then on. The marker file is there from the first one's end."""
    return f"""
import os, time
FAILING = not os.path.exists({str(marker)!r}) or os.path.getsize({str(marker)!r}) < 2
if FAILING:
    time.sleep({WORK_BEFORE_FAILING_S})
    with open({str(marker)!r}, "a") as loads:
        loads.write("x")
"""


def fails_its_first_load(tmp_path: Path, error: str) -> tuple:
    """(a function whose module raises `error`("no config") as it loads the first time, so
    that the first invocation fails (its init, and that init's run again inside it), and answers
    "ok" from then on; the marker file its first load leaves).

    It works a second before it fails: time for the companion, starting beside it, to subscribe
    to the Telemetry API on a busy machine. A module failing at once can end its init first, and
    lambdawrap then knows no cause (test_an_init_that_fails_before_the_companion_subscribes)."""
    marker = tmp_path / "loaded-once"
    task = write_function(tmp_path / "task", failing_first_loads(marker) + f"""
if FAILING:
    raise {error}("no config")

def handler(event, context):
    return "ok"
""")
    return task, marker


def test_an_init_that_fails_before_the_companion_subscribes_still_becomes_a_failed_init_span(tmp_path):
    # GIVEN a module that raises as it loads the first time only, and a companion whose
    # interpreter starts only once the module has loaded (and 0.3 s more): the runtime's init
    # fails and ends before the companion can subscribe to the Telemetry API, so nothing of that
    # init will ever be told to it. (A fixed delay loses the race one way or the other on a busy
    # machine: too short, the runtime is slower and the companion subscribes in time; too long,
    # the companion is not up before the reset's SHUTDOWN deadline.)
    task, marker = fails_its_first_load(tmp_path, "RuntimeError")
    slow = tmp_path / "slow-python"
    slow.write_text(
        "#!/bin/bash\n"
        f'case " $* " in *" -c "*) ;; *) for _ in $(seq 200); do [ -e {str(marker)!r} ] && break; sleep 0.05; done; sleep 0.3 ;; esac\n'
        f'exec {sys.executable} "$@"\n'
    )
    slow.chmod(0o755)
    with instrumented(task, env={"LAMBDAWRAP_PYTHON": str(slow)}) as (emu, rx):
        failed = emu.invoke({})
        assert b"no config" in failed.body
        # (the next environment exports what the first could not before it ended)
        assert emu.invoke({}).body == b'"ok"'
        # THEN the failed init is still accounted for: a span with status ERROR (its cause
        # unknown to lambdawrap, `_OTHER`), beside its run again inside the invocation's and the
        # healthy init's
        spans = rx.wait_for_spans(lambda s: s["name"].endswith(" init"), count=3, timeout=60)
    failed_inits = [s for s in spans if s["status_code"] == 2]
    assert len(spans) == 3 and len(failed_inits) == 2 and "_OTHER" in [s["attributes"]["error.type"] for s in failed_inits]
    assert metric_total(rx, "lambdawrap.init_errors") == 2


def test_an_init_report_read_late_still_goes_out_with_the_first_invocation(tmp_path, monkeypatch):
    # GIVEN a platform whose batch holding initReport reaches the companion 0.15 s late (a busy
    # machine), and a companion whose export pipeline is ready before the first invocation
    from lambdawrap.devtools.emulator import telemetry

    post = telemetry.Subscriber._post

    def late_post(self, body: bytes) -> bool:
        if b"platform.initReport" in body:
            time.sleep(0.15)
        return post(self, body)

    monkeypatch.setattr(telemetry.Subscriber, "_post", late_post)
    task = write_function(tmp_path / "task", "def handler(event, context):\n    return 'ok'\n")
    with instrumented(task, env={"LAMBDAWRAP_STARTUP_WAIT_MS": "8000"}) as (emu, rx):
        # WHEN it is invoked once, and the environment then stays idle
        result = emu.invoke({})
        assert emu.wait_idle(30)
        # THEN the init span goes out with the first invocation's export, not at the next one
        # (before: held until the environment's SHUTDOWN, however long away)
        init = rx.wait_for_spans(lambda s: s["name"].endswith(" init"), timeout=10)[0]
        invocation = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id)[0]
    assert init["trace_id"] == invocation["trace_id"]


def test_the_companion_is_told_the_platform_s_records_and_the_function_s_lines_only(tmp_path):
    # GIVEN a function with the layer, whose companion warns at start (a bad setting)
    task = write_function(tmp_path / "task", "def handler(event, context):\n    return 'ok'\n")
    with instrumented(task, env={"LAMBDAWRAP_FLUSH": "sometimes"}) as (emu, rx):
        # WHEN it is invoked
        assert emu.invoke({}).body == b'"ok"'
        assert emu.wait_idle(30)
        subscriptions = [r["record"]["types"] for r in emu.records("platform.telemetrySubscription")]
        own_lines = [line for line in emu.log_lines("extension") if "LAMBDAWRAP_FLUSH" in line]
    # THEN it subscribed to platform records and function lines: extensions' lines (its own
    # warnings among them) are nothing it exports, and each cost a JSON decode of the function's
    # CPU share
    assert own_lines and subscriptions == [["platform", "function"]], subscriptions


def test_an_init_another_extension_fails_before_the_runtime_starts_is_a_failed_init_span(tmp_path):
    # GIVEN a layer beside another extension that, the first time, exits before it registers
    # (a vendor extension missing its configuration): the platform never starts the runtime,
    # so that init ends with no initRuntimeDone, only the extensions' records and initReport
    task = write_function(tmp_path / "task", "def handler(event, context):\n    return 'ok'\n")
    layer = tmp_path / "layer"
    shutil.copytree(LAYER, layer, symlinks=True)
    marker = tmp_path / "crashed-once"
    subscribed = tmp_path / "lambdawrap-subscribed"
    other = layer / "extensions" / "other"
    other.write_text(f"""#!{sys.executable}
import json, os, sys, time, urllib.request
if not os.path.exists({str(marker)!r}):
    open({str(marker)!r}, "w").close()
    deadline = time.monotonic() + 8  # within the init's 10 s
    while not os.path.exists({str(subscribed)!r}) and time.monotonic() < deadline:
        time.sleep(0.02)  # until lambdawrap has subscribed (a fixed wait loses that race on a busy machine)
    sys.exit(1)
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2020-01-01/extension/"
ident = urllib.request.urlopen(urllib.request.Request(api + "register", data=b'{{"events": ["SHUTDOWN"]}}', headers={{"Lambda-Extension-Name": "other"}})).headers["Lambda-Extension-Identifier"]
while json.load(urllib.request.urlopen(urllib.request.Request(api + "event/next", headers={{"Lambda-Extension-Identifier": ident}})))["eventType"] != "SHUTDOWN":
    pass
""")
    other.chmod(0o755)
    with instrumented(task, layer=layer) as (emu, rx):
        telling = threading.Thread(target=lambda: wait_for(lambda: emu.records("platform.telemetrySubscription"), 30, what="lambdawrap's subscription") and subscribed.touch(), daemon=True)
        telling.start()
        # WHEN it is invoked: its init is run again inside the invocation (the platform's
        # suppressed init), where the other extension starts well
        assert emu.invoke({}).body == b'"ok"'
        assert emu.invoke({}).body == b'"ok"'
        assert [r["record"]["phase"] for r in emu.records("platform.initRuntimeDone")] == ["invoke"]
        # THEN the failed init is accounted for: a span with status ERROR naming the cause the
        # platform gave
        failed_inits = rx.wait_for_spans(lambda s: s["name"].endswith(" init") and s["status_code"] == 2, timeout=60)
    assert len(failed_inits) == 1 and failed_inits[0]["attributes"]["error.type"] == "Extension.Crash"
    assert metric_total(rx, "lambdawrap.init_errors") == 1


@pytest.mark.parametrize("log_channel", [True, False], ids=["log channel", "stdout"])
def test_a_failed_init_keeps_its_message_and_stack(tmp_path, log_channel):
    # GIVEN the managed runtimes' log channel (_LAMBDA_TELEMETRY_LOG_FD), where awslambdaric
    # reports an error as one record, its lines joined by newlines, or a runtime without it,
    # which prints the report as one line, its lines joined by carriage returns; and a module
    # that raises as it loads the first time
    task, _ = fails_its_first_load(tmp_path, "ValueError")
    with instrumented(task, telemetry_log_fd=log_channel) as (emu, rx):
        # WHEN it is invoked, and again
        assert emu.invoke({}).json()["errorMessage"] == "no config"
        assert emu.invoke({}).body == b'"ok"'
        spans = rx.wait_for_spans(lambda s: s["name"].endswith(" init") and s["status_code"] == 2, timeout=60)
    # THEN the failed init's exception has the runtime's message, and the traceback as its stack
    exception = next(e["attributes"] for e in spans[0]["events"] if e["name"] == "exception")
    assert (exception["exception.type"], exception["exception.message"]) == ("ValueError", "no config")
    assert exception["exception.stacktrace"].startswith("Traceback (most recent call last):") and 'raise ValueError("no config")' in exception["exception.stacktrace"]


@pytest.mark.parametrize("log_format", ["Text", "JSON"])
def test_a_failed_init_s_exception_is_what_the_caller_got_whatever_the_log_format(tmp_path, log_format):
    # GIVEN the managed runtimes' log channel, where the runtime's text report of an error is one
    # record, and a module that raises as it loads the first time, with a message of several
    # lines (an upstream's answer: carriage returns, a traceback of its own)
    marker = tmp_path / "loaded-once"
    task = write_function(tmp_path / "task", failing_first_loads(marker) + f"""
if FAILING:
    raise RuntimeError("upstream said: HTTP 500\\r\\nTraceback (most recent call last):\\n  File 'upstream.py'\\nKeyError: 'x'")

def handler(event, context):
    return "ok"
""")
    with instrumented(task, env={"AWS_LAMBDA_LOG_FORMAT": log_format}, telemetry_log_fd=True) as (emu, rx):
        # WHEN it is invoked, and again
        failed = emu.invoke({}).json()
        assert emu.invoke({}).body == b'"ok"'
        spans = rx.wait_for_spans(lambda s: s["name"].endswith(" init") and s["status_code"] == 2, timeout=60)
    # THEN the init span's exception has the caller's message whole, and its stack as Python
    # prints a traceback (spaces, not the no-break spaces of the runtime's text), the same
    # in either format
    exception = next(e["attributes"] for e in spans[0]["events"] if e["name"] == "exception")
    assert (exception["exception.type"], exception["exception.message"]) == ("RuntimeError", failed["errorMessage"])
    assert exception["exception.stacktrace"] == "Traceback (most recent call last):\n" + "".join(failed["stackTrace"]) + f"RuntimeError: {failed['errorMessage']}\n"


def test_an_exception_the_module_logged_is_not_taken_for_the_runtime_s_report_of_its_failed_init(tmp_path):
    # GIVEN the JSON log format, whose logger.exception records name an errorType and an
    # errorMessage as the runtime's report does, and a module that, the first time, logs the
    # error it caught and exits (no report from the runtime: the caller gets Runtime.ExitError)
    marker = tmp_path / "loaded-once"
    task = write_function(tmp_path / "task", failing_first_loads(marker) + f"""
import logging, sys
if FAILING:
    try:
        os.environ["DB_URL"]
    except KeyError:
        logging.getLogger().exception("no database configured")
        sys.exit(1)

def handler(event, context):
    return "ok"
""")
    with instrumented(task, env={"AWS_LAMBDA_LOG_FORMAT": "JSON"}, telemetry_log_fd=True) as (emu, rx):
        # WHEN it is invoked, and again
        assert emu.invoke({}).json()["errorType"] == "Runtime.ExitError"
        assert emu.invoke({}).body == b'"ok"'
        spans = rx.wait_for_spans(lambda s: s["name"].endswith(" init") and s["status_code"] == 2, timeout=60)
    # THEN the failed init is the exit the caller got, not the error the module logged
    exception = next(e["attributes"] for e in spans[0]["events"] if e["name"] == "exception")
    assert exception["exception.type"] == "Runtime.ExitError"
    assert "DB_URL" not in exception.get("exception.message", "") + exception.get("exception.stacktrace", "") + spans[0]["status_message"]


@pytest.mark.parametrize("telemetry_log_fd", [False, True], ids=["stdout", "log channel"])
def test_an_event_the_runtime_cannot_decode_is_the_error_the_caller_got(tmp_path, telemetry_log_fd):
    # GIVEN a function, and an event that is not JSON: the runtime answers
    # Runtime.UnmarshalError itself, the handler never runs, and the platform, given no error
    # type by the runtime, names none (Runtime.Unknown)
    task = write_function(tmp_path / "task", "def handler(event, context):\n    return 'ok'\n")
    with instrumented(task, telemetry_log_fd=telemetry_log_fd) as (emu, rx):
        # WHEN it is invoked with it
        failed = emu.invoke(raw=b"{not json")
        assert failed.json()["errorType"] == "Runtime.UnmarshalError"
        span = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == failed.request_id)[0]
    # THEN its span names the error the caller got, from the runtime's error line
    assert span["status_code"] == 2 and span["attributes"]["error.type"] == "Runtime.UnmarshalError"
    exception = next(e["attributes"] for e in span["events"] if e["name"] == "exception")
    assert (exception["exception.type"], exception["exception.message"]) == ("Runtime.UnmarshalError", failed.json()["errorMessage"])
    # ... described by its message, as an exception is (before: "invocation ended by the
    # platform (runtime_error)")
    assert span["status_message"] == failed.json()["errorMessage"]


def test_a_failed_init_whose_report_comes_after_shutdown_is_still_a_failed_init_span(tmp_path):
    # GIVEN a module that raises as it loads the first time, and a platform that does not
    # flush telemetry before SHUTDOWN (Lambda promises it only on Managed Instances) and
    # buffers it a while: the init's report reaches the companion after SHUTDOWN does
    task, _ = fails_its_first_load(tmp_path, "ValueError")
    with instrumented(task) as (emu, rx):
        emu.bus.gate.flush_before_shutdown = False
        emu.bus.gate.min_buffer_s = 0.3
        # WHEN it is invoked, and again
        assert emu.invoke({}).json()["errorMessage"] == "no config"
        emu.bus.gate.min_buffer_s = 0.0
        assert emu.invoke({}).body == b'"ok"'
        # THEN the failed init, and its run again inside the invocation, are accounted for, with
        # the runtime's error
        spans = rx.wait_for_spans(lambda s: s["name"].endswith(" init") and s["status_code"] == 2, count=2, timeout=60)
    assert [s["attributes"]["error.type"] for s in spans] == ["ValueError"] * 2
    assert metric_total(rx, "lambdawrap.init_errors") == 2


def test_the_last_invocation_s_report_delivered_after_shutdown_is_measured(task):
    # GIVEN a platform that emits an invocation's report once every extension asked for its
    # next event (the environment frozen then), does not flush telemetry before SHUTDOWN and
    # buffers it a while: the last invocation's report reaches the companion after SHUTDOWN,
    # its runtimeDone before (the flush at the end of each invocation waits for it)
    with instrumented(task, env={"LAMBDAWRAP_FLUSH": "end"}) as (emu, rx):
        emu.invoke({})
        emu.bus.gate.flush_before_shutdown = False
        emu.bus.gate.min_buffer_s = 0.3
        emu.invoke({})
        # WHEN the environment spins down
    # THEN its billed time and memory, which no other word carries, are measured with the
    # others' (before: SHUTDOWN waited for its runtimeDone only, and they were lost)
    assert metric_total(rx, "faas.invocations") == 2
    assert metric_total(rx, "lambdawrap.billed_duration") == 2
    assert metric_total(rx, "faas.mem_usage") == 2


def test_drops_the_channel_reports_with_spans_ended_outside_an_invocation_are_counted(task):
    import os
    import tempfile

    from conftest import wait_for
    from lambdawrap.handler.channel import Channel
    from lambdawrap.shared import records

    socket_path = os.path.join(tempfile.mkdtemp(prefix="lw", dir="/tmp"), "s")  # 108-byte limit
    with instrumented(task, env={"LAMBDAWRAP_SOCKET": socket_path, "LAMBDAWRAP_FLUSH": "end"}) as (emu, rx):
        emu.invoke({})
        # GIVEN the function's channel, which counted 3 records it could not send, and a span of
        # the function's own that ends between invocations (a background thread's)
        channel = Channel(socket_path)
        channel.dropped = 3
        now = time.time_ns()
        span = records.span("background", "after the response", 0x1234, 0x5678, 0, 1, now - 1_000_000, now, {}, [], [], (0, ""))
        # WHEN that span is the next record to go through, carrying the count
        assert channel.send(records.spans([span]))
        emu.invoke({})
        # THEN the span is exported and the 3 drops are counted with their reason
        assert rx.wait_for_spans(lambda s: s["name"] == "after the response")
        wait_for(lambda: metric_total(rx, "lambdawrap.dropped", {"reason": "handler_channel"}) == 3, timeout=20, what="the channel's drops at the collector")


def test_drops_a_function_process_could_not_report_are_counted_at_a_spindown(task):
    import os
    import subprocess
    import tempfile

    from lambdawrap.shared import unreported_drops

    socket_path = os.path.join(tempfile.mkdtemp(prefix="lw", dir="/tmp"), "s")  # 108-byte limit
    with instrumented(task, env={"LAMBDAWRAP_SOCKET": socket_path}) as (emu, rx):
        assert emu.invoke({}).status == 200
        # GIVEN drops a function's process counted and kept beside the socket, that process
        # having ended with no record after to carry them (a pid of a process that has ended)
        ended = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout)
        assert unreported_drops.keep(socket_path, ended, 2)
        # WHEN the environment spins down, no later environment to follow
        emu.stop()
    # THEN they are counted with the environment's last metrics (before: only a later
    # environment's companion counted them, and after a spindown none comes)
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "handler_channel"}) == 2
    assert not os.path.exists(unreported_drops.path_for(socket_path, ended))


def test_a_retry_s_record_before_its_invoke_and_the_first_attempt_s_late_words_go_to_their_own_attempt():
    from lambdawrap.companion.correlator import Correlator
    from lambdawrap.shared import records

    class Sink:
        def __init__(self):
            self.spans, self.lines = [], []

        def invocation(self, inv):
            self.spans.append(inv)

        def made(self):
            return [(inv.request_id, inv.ids[1], (inv.outcome or {}).get("status"), inv.posted) for inv in self.spans]

        def log_line(self, line, time_ns, ids, request_id):
            self.lines.append((line, ids[1] if ids else None))

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    rid, arn = "8f5b7a3c-5d0e-4c2a-9f7e-1b2c3d4e5f60", "arn:aws:lambda:eu-west-1:123456789012:function:orders"
    sink = Sink()
    correlator = Correlator(sink, lambda reason, what: None)

    def record(span_id, error=None):
        start = json.loads(records.encode_invocation_start(request_id=rid, function_arn=arn, trace_id=span_id, span_id=span_id, parent_span_id=0, sampled=True, start_ns=time.time_ns(), cold_start=False, proactive_init=False, trigger="other", attributes={}, links=[], span_name="orders", span_kind=2))
        correlator.on_record({"version": records.VERSION, "type": records.INVOCATION, "start": start, "end": records.invocation_end(time.time_ns(), error=error)})

    def telemetry(kind, body):
        correlator.on_telemetry([{"time": "2026-12-03T10:00:00.000Z", "type": kind, "record": body}])

    error = {"type": "KeyError", "message": "'x'", "stack": ""}
    # GIVEN an attempt made from the runtime's post, whose platform words have not come yet
    correlator.on_invoke({"requestId": rid, "invokedFunctionArn": arn})
    telemetry("platform.start", {"requestId": rid})
    record(0x1111, error)
    correlator.on_record(records.posted(rid, "error"))
    assert sink.made() == [(rid, "0000000000001111", None, "error")]
    # WHEN its retry's record comes before the retry's INVOKE, and the first attempt's line,
    # runtimeDone and report come after that INVOKE
    record(0x2222)
    correlator.on_invoke({"requestId": rid, "invokedFunctionArn": arn})
    telemetry("function", "first attempt's last line")
    telemetry("platform.runtimeDone", {"requestId": rid, "status": "error"})
    telemetry("platform.report", {"requestId": rid, "status": "error"})
    telemetry("platform.start", {"requestId": rid})
    telemetry("function", "retry's line")
    telemetry("platform.runtimeDone", {"requestId": rid, "status": "success"})
    # THEN the retry is a span of its own, with its own platform word (before: its record was
    # taken for a duplicate, and it was never a span), and each line has its attempt's span
    assert sink.made() == [(rid, "0000000000001111", "error", "error"), (rid, "0000000000002222", "success", None)]
    assert sink.lines == [("first attempt's last line", "0000000000001111"), ("retry's line", "0000000000002222")]


def test_on_managed_instances_a_retry_announced_by_its_platform_start_is_a_span_of_its_own():
    from lambdawrap.companion.correlator import Correlator
    from lambdawrap.shared import records

    made = []
    sink = type("Sink", (), {"invocation": lambda self, inv: made.append(inv), "__getattr__": lambda self, name: (lambda *a, **k: None)})()
    correlator = Correlator(sink, lambda reason, what: None, managed_instances=True)
    rid, arn = "0d4c8a52-7b61-4f0e-8c3a-2e9f1a6b5c70", "arn:aws:lambda:eu-west-1:123456789012:function:orders"

    def attempt(span_id, status, record_first):
        start = json.loads(records.encode_invocation_start(request_id=rid, function_arn=arn, trace_id=span_id, span_id=span_id, parent_span_id=0, sampled=True, start_ns=time.time_ns(), cold_start=False, proactive_init=False, trigger="other", attributes={}, links=[], span_name="orders", span_kind=2))
        record = {"version": records.VERSION, "type": records.INVOCATION, "start": start, "end": records.invocation_end(time.time_ns())}
        announce = [{"time": "2026-12-03T10:00:00.000Z", "type": "platform.start", "record": {"requestId": rid}}]
        if record_first:
            correlator.on_record(record)
        correlator.on_telemetry(announce)
        if not record_first:
            correlator.on_record(record)
        correlator.on_telemetry([{"time": "2026-12-03T10:00:01.000Z", "type": "platform.runtimeDone", "record": {"requestId": rid, "status": status}}])

    # GIVEN a request that failed on the platform, and its two retries under the same id, one
    # announced before its record came and one after
    attempt(0x1111, "failure", record_first=False)
    attempt(0x2222, "failure", record_first=False)
    attempt(0x3333, "success", record_first=True)
    # THEN each attempt is a span, with its own outcome (before: only the first was)
    assert [(inv.ids[1], inv.outcome["status"]) for inv in made] == [("0000000000001111", "failure"), ("0000000000002222", "failure"), ("0000000000003333", "success")]


def test_a_record_of_an_accounted_id_that_no_invoke_follows_changes_nothing():
    from lambdawrap.companion.correlator import Correlator
    from lambdawrap.shared import records

    made, lines = [], []
    sink = type("Sink", (), {"invocation": lambda self, inv: made.append(inv), "log_line": lambda self, line, time_ns, ids, rid: lines.append((line, ids[1] if ids else None)), "__getattr__": lambda self, name: (lambda *a, **k: None)})()
    correlator = Correlator(sink, lambda reason, what: None)
    rid, arn = "5a1e0c3d-9b2f-4e71-a6d8-3c4b5e6f7a80", "arn:aws:lambda:eu-west-1:123456789012:function:orders"

    def record(span_id):
        start = json.loads(records.encode_invocation_start(request_id=rid, function_arn=arn, trace_id=span_id, span_id=span_id, parent_span_id=0, sampled=True, start_ns=time.time_ns(), cold_start=False, proactive_init=False, trigger="other", attributes={}, links=[], span_name="orders", span_kind=2))
        correlator.on_record({"version": records.VERSION, "type": records.INVOCATION, "start": start, "end": records.invocation_end(time.time_ns())})

    correlator.on_invoke({"requestId": rid, "invokedFunctionArn": arn})
    correlator.on_telemetry([{"time": "2026-12-03T10:00:00.000Z", "type": "platform.start", "record": {"requestId": rid}}])
    record(0x1111)
    correlator.on_record(records.posted(rid, "result"))
    # GIVEN a second record of that id, with other span ids, that no INVOKE follows (a thread
    # of the function that called its handler again once the invocation had ended)
    record(0x2222)
    # WHEN the invocation's background thread prints a line after the platform's word
    correlator.on_telemetry([{"time": "2026-12-03T10:00:00.100Z", "type": "platform.runtimeDone", "record": {"requestId": rid, "status": "success"}}])
    correlator.on_telemetry([{"time": "2026-12-03T10:00:00.200Z", "type": "function", "record": "background line"}])
    # THEN the invocation is one span, its line carrying its ids
    assert [inv.ids[1] for inv in made] == ["0000000000001111"]
    assert lines == [("background line", "0000000000001111")]


def test_an_http_status_code_the_runtime_writes_from_a_decimal_a_named_tuple_or_bytes_is_the_span_s(tmp_path):
    task = write_function(tmp_path / "task", """
        import collections, json
        from decimal import Decimal

        Response = collections.namedtuple("Response", ["statusCode", "body"])


        def handler(event, context):
            # a status code read from DynamoDB (boto3 gives its numbers as Decimal), a named
            # tuple, or JSON bytes (orjson.dumps: posted as they are): the runtime writes each as
            # the JSON the client's service reads
            shape, code = event["queryStringParameters"]["as"], event["queryStringParameters"]["code"]
            if shape == "decimal":
                return {"statusCode": Decimal(code), "body": "x"}
            if shape == "bytes":
                return json.dumps({"statusCode": int(code), "body": "x"}).encode()
            return Response(int(code), "x")
        """)
    http_api = json.loads((EVENTS / "apigw-http.json").read_text())
    asked = [(api, shape, code) for api in ("rest", "http") for shape in ("decimal", "tuple", "bytes") for code in ("503", "201")]
    # (flushing at every end: invocations this frequent are otherwise exported once a second,
    # and the last ones at the next thaw)
    with instrumented(task, env={"LAMBDAWRAP_FLUSH": "end"}) as (emu, rx):
        results = {key: emu.invoke(dict(apigw_event() if key[0] == "rest" else http_api, queryStringParameters={"as": key[1], "code": key[2]})) for key in asked}
        rids = {r.request_id: key for key, r in results.items()}
        spans = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") in rids, count=len(asked), timeout=30)
    # GIVEN the status code each caller's answer carries
    for (_, _, code), result in results.items():
        assert result.json()["statusCode"] == int(code)
    # THEN each span has it, a 5xx an error (before: none and no error on a REST API, 200 and
    # no error on an HTTP API, for the bytes; for the others, none, and no error)
    got = {rids[s["attributes"]["faas.invocation_id"]]: (s["attributes"].get("http.response.status_code"), s["status_code"]) for s in spans}
    assert got == {key: (int(key[2]), 2 if key[2] == "503" else 0) for key in asked}
