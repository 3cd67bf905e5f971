"""Failures the caller got from the platform although the function's own record came: the
handler ended the runtime (`sys.exit`), or the invocation timed out after the handler returned
(while the runtime serialized the response). The span says what the caller got, the handler's
exception an event, and faas.timeouts / lambdawrap.crashes count each such invocation once,
whether its record came first or not (emulator + awslambdaric + layer + OTLP receiver)."""

from __future__ import annotations

import pytest

from conftest import write_function
from support.python_versions import every_python
from support.stack import instrumented, metric_total

APP = """
import sys, time


class SlowToSerialize(tuple):
    # awslambdaric's JSON encoder calls a tuple subclass's _asdict: the response takes this
    # long to serialize, after the handler returned.
    def _asdict(self):
        time.sleep(self[0])
        return {"serialized": True}


class ExitsWhenSerialized(tuple):
    def _asdict(self):
        sys.exit(self[0])


def handler(event, context):
    do = event.get("do")
    if do == "exit":
        sys.exit(event["code"])
    if do == "exit_serializing":
        return ExitsWhenSerialized((event["code"],))
    if do == "interrupt":
        raise KeyboardInterrupt
    if do == "raise":
        raise ValueError("an ordinary error")
    if do == "late":
        # Return this many ms before the deadline, with a response that outlasts it.
        time.sleep(max(0, context.get_remaining_time_in_millis() - event["left_ms"]) / 1000)
        return SlowToSerialize((5.0,))
    return {"ok": True}
"""

TIMEOUT_S = 3.0


@pytest.fixture
def task(tmp_path):
    return write_function(tmp_path / "task", APP)


def one_span_each(rx, results) -> dict:
    """{request id: its span}, once every invocation has exactly one."""
    ids = {r.request_id for r in results}
    rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") in ids, count=len(ids), timeout=60)
    spans = [s for s in rx.spans() if s["attributes"].get("faas.invocation_id") in ids]
    assert sorted(s["attributes"]["faas.invocation_id"] for s in spans) == sorted(ids)
    return {s["attributes"]["faas.invocation_id"]: s for s in spans}


def exception_types(span) -> list:
    return [e["attributes"]["exception.type"] for e in span["events"] if e["name"] == "exception"]


@every_python
def test_a_handler_that_ends_the_runtime_is_a_crash_as_the_caller_got_it(task, runtime_python):
    events = [{}, {"do": "exit", "code": 3}, {}, {"do": "exit", "code": 0}, {"do": "interrupt"}, {"do": "raise"}, {}]
    results, spans, rx = invoke_each(task, events, runtime_python)
    got = [(r.json() or {}).get("errorType") if r.function_error else None for r in results]
    # GIVEN three invocations that ended the runtime, the caller getting Runtime.ExitError
    assert got == [None, "Runtime.ExitError", None, "Runtime.ExitError", "Runtime.ExitError", "ValueError", None]
    # THEN each span names what the caller got, the handler's exception its event
    for result, event in zip(results, events):
        span = spans[result.request_id]
        if event.get("do") in ("exit", "interrupt"):
            assert span["status_code"] == 2 and span["attributes"]["error.type"] == "Runtime.ExitError"
            assert span["attributes"]["lambdawrap.failure_reason"] == "crash"
            assert exception_types(span) == ["SystemExit" if event["do"] == "exit" else "KeyboardInterrupt"]
        elif event.get("do") == "raise":
            assert span["attributes"]["error.type"] == "ValueError" and "lambdawrap.failure_reason" not in span["attributes"]
        else:
            assert span["status_code"] == 0
    # ... and each is counted once as a crash and an error
    assert metric_total(rx, "lambdawrap.crashes") == 3
    assert metric_total(rx, "faas.errors") == 4
    assert metric_total(rx, "faas.timeouts") == 0
    assert metric_total(rx, "faas.invocations") == len(events)


def invoke_each(task, events: list, runtime_python) -> tuple:
    """(results, span by request id, the receiver) of the events invoked in turn."""
    with instrumented(task, timeout_s=TIMEOUT_S, python=runtime_python) as (emu, rx):
        results = [emu.invoke(event) for event in events]
        return results, one_span_each(rx, results), rx


def assert_timed_out(span: dict) -> None:
    """The span says the caller's timeout, with its reason."""
    assert span["status_code"] == 2 and span["attributes"]["error.type"] == "Sandbox.Timedout"
    assert span["attributes"]["lambdawrap.failure_reason"] == "timeout"


@every_python
def test_a_timeout_while_the_response_is_serialized_is_counted_whatever_the_margin(task, runtime_python):
    # GIVEN handlers that return 150 ms before their deadline (their record goes at once) and
    # 900 ms before it (held for the runtime's post where the version has one), with a
    # response that takes longer than that to serialize
    events = [{}, {"do": "late", "left_ms": 150}, {}, {"do": "late", "left_ms": 900}, {}]
    results, spans, rx = invoke_each(task, events, runtime_python)
    got = [(r.json() or {}).get("errorType") if r.function_error else None for r in results]
    assert got == [None, "Sandbox.Timedout", None, "Sandbox.Timedout", None]
    # THEN both spans say the caller's timeout, with its reason, and both are counted once
    for result, event in zip(results, events):
        span = spans[result.request_id]
        if event.get("do") == "late":
            assert_timed_out(span)
            assert span["status_message"] == "invocation ended by the platform (timeout)"
        else:
            assert span["status_code"] == 0
    assert metric_total(rx, "faas.timeouts") == 2
    assert metric_total(rx, "faas.errors") == 2
    assert metric_total(rx, "lambdawrap.crashes") == 0
    assert metric_total(rx, "faas.invocations") == len(events)


@every_python
def test_a_platform_late_to_tell_of_a_failure_after_the_record_leaves_the_span_as_the_caller_got_it(task, runtime_python):
    # GIVEN a platform that does not flush telemetry before SHUTDOWN and holds each batch 2.5 s
    # (Lambda promises neither), and invocations whose record came, but whose caller got the
    # platform's error: a handler that ended the runtime, an exit while the response was
    # serialized (the environment's first invocation, whose record goes before the post), and a
    # timeout there
    events = [{}, {"do": "exit", "code": 3}, {"do": "exit_serializing", "code": 4}, {"do": "late", "left_ms": 150}, {"do": "interrupt"}, {}]
    with instrumented(task, timeout_s=TIMEOUT_S, python=runtime_python) as (emu, rx):
        results = [emu.invoke(events[0])]
        emu.bus.gate.flush_before_shutdown = False
        emu.bus.gate.min_buffer_s = 2.5
        results += [emu.invoke(event) for event in events[1:-1]]
        assert emu.wait_idle(30)  # the last reset, SHUTDOWN first, before the platform is mended
        emu.bus.gate.flush_before_shutdown = True
        emu.bus.gate.min_buffer_s = 0.0
        results.append(emu.invoke(events[-1]))
        got = [(r.json() or {}).get("errorType") if r.function_error else None for r in results]
        assert got == [None, "Runtime.ExitError", "Runtime.ExitError", "Sandbox.Timedout", "Runtime.ExitError", None]
        spans = one_span_each(rx, results)
    # THEN each span says what the caller got, not how the handler ended (before: SystemExit,
    # a success, a success, KeyboardInterrupt), the handler's exception an event
    said = [(spans[r.request_id]["attributes"].get("error.type"), spans[r.request_id]["attributes"].get("lambdawrap.failure_reason"), exception_types(spans[r.request_id])) for r in results]
    assert said == [
        (None, None, []),
        ("Runtime.ExitError", "crash", ["SystemExit"]),
        ("Runtime.ExitError", "crash", []),
        ("Sandbox.Timedout", "timeout", []),
        ("Runtime.ExitError", "crash", ["KeyboardInterrupt"]),
        (None, None, []),
    ]
    # ... and each is counted once, as the caller's failure
    assert metric_total(rx, "lambdawrap.crashes") == 3
    assert metric_total(rx, "faas.timeouts") == 1
    assert metric_total(rx, "faas.errors") == 4
    assert metric_total(rx, "faas.invocations") == len(events)


def slow_to_load(tmp_path, seconds: float):
    """A function whose module takes `seconds` to load, and whose handler answers "ok"."""
    return write_function(tmp_path / "task", f"""
        import time
        time.sleep({seconds})

        def handler(event, context):
            return "ok"
        """)


def test_an_init_that_times_out_is_one_error_and_one_timeout_of_the_invocation_it_failed(tmp_path):
    # GIVEN a function whose import outlasts both the 10 s init limit and its 3 s timeout
    task = slow_to_load(tmp_path, 11)
    with instrumented(task, timeout_s=3.0) as (emu, rx):
        # WHEN it is invoked: init runs out its 10 s, is run again inside the invocation (the
        # platform's suppressed init) and times out there
        answer = emu.invoke({})
        assert answer.json()["errorType"] == "Sandbox.Timedout"
    # THEN both inits are failed init spans and init errors, but the caller's one failure is one
    # invocation error, and a timeout
    inits = rx.wait_for_spans(lambda s: s["name"].endswith(" init") and s["status_code"] == 2, count=2)
    assert len(inits) == 2
    # ... each with its exception event at its end, naming the platform's error and nothing
    # empty (before: an empty message and stack trace, and the time the span was built)
    for init in inits:
        (exception,) = [e for e in init["events"] if e["name"] == "exception"]
        assert exception["time_unix_nano"] == init["end_time_unix_nano"], (exception, init)
        assert all(value != "" for value in exception["attributes"].values()), exception
    assert metric_total(rx, "lambdawrap.init_errors") == 2
    assert metric_total(rx, "faas.errors") == 1
    assert metric_total(rx, "faas.timeouts") == 1 == metric_total(rx, "faas.timeouts", {"faas.trigger": "other"})
    # ... of an invocation counted, a cold start (before: an error of no invocation)
    assert metric_total(rx, "faas.invocations") == 1 == metric_total(rx, "faas.coldstarts")


def test_an_init_that_fails_is_one_error_of_the_invocation_it_failed(tmp_path):
    # GIVEN a function whose module raises as it loads
    task = write_function(tmp_path / "task", """
        raise RuntimeError("no configuration")
        """)
    with instrumented(task) as (emu, rx):
        # WHEN it is invoked: init fails, is run again inside the invocation (the platform's
        # suppressed init) and fails there too
        answer = emu.invoke({})
        assert answer.json()["errorType"] == "RuntimeError"
    # THEN both inits are failed init spans and init errors, but the caller's one failure is
    # one invocation error (before: two, the init phase's failure counted as the caller's too)
    inits = rx.wait_for_spans(lambda s: s["name"].endswith(" init") and s["status_code"] == 2, count=2)
    assert sorted(init["attributes"]["lambdawrap.init.phase"] for init in inits) == ["init", "invoke"]
    assert metric_total(rx, "lambdawrap.init_errors") == 2
    assert metric_total(rx, "faas.errors") == 1 == metric_total(rx, "faas.errors", {"faas.trigger": "other"})
    assert metric_total(rx, "faas.invocations") == 1 == metric_total(rx, "faas.coldstarts")


def test_the_first_invocation_after_an_init_run_again_inside_it_is_a_cold_start_however_long_it_took(tmp_path):
    # GIVEN a function whose module takes 10.5 s to load: more than init's 10 s, less than its
    # 30 s timeout
    task = slow_to_load(tmp_path, 10.5)
    with instrumented(task, timeout_s=30.0) as (emu, rx):
        # WHEN it is invoked: init runs out its 10 s and is run again inside the invocation
        # (the platform's suppressed init), which it waits for, then answers
        results = [emu.invoke({}), emu.invoke({})]
        assert [r.json() for r in results] == ["ok", "ok"]
        spans = one_span_each(rx, results)
    # THEN its first invocation is the cold start (before: a proactive init, its module having
    # loaded more than LAMBDAWRAP_PROACTIVE_INIT_MS after lambdawrap's boot), the second not
    flags = [(spans[r.request_id]["attributes"]["faas.coldstart"], spans[r.request_id]["attributes"].get("lambdawrap.proactive_init", False)) for r in results]
    assert flags == [(True, False), (False, False)]
    assert metric_total(rx, "faas.coldstarts") == 1
    assert metric_total(rx, "lambdawrap.init_errors") == 1  # the init that ran out its 10 s


GRACEFUL_APP = """
import signal, time


def handler(event, context):
    # A graceful stop: at SIGTERM (the platform's, at the timeout) the handler returns what it
    # has, or raises; the runtime then posts that answer, after the deadline
    stop = []

    def on_term(signum, frame):
        if event.get("on_term") == "raise":
            raise RuntimeError("stopped by SIGTERM")
        stop.append(signum)

    if event.get("on_term"):
        signal.signal(signal.SIGTERM, on_term)
        while not stop:
            time.sleep(0.01)
        time.sleep(event.get("linger_s", 0))  # what it has takes a while to gather
        return {"partial": True}
    return {"ok": True}
"""


LINGER_S = 0.5  # within the 0.6 s the reset gives the runtime between its SIGTERM and SIGKILL


@every_python
def test_an_answer_the_runtime_posts_after_the_timeout_is_not_what_the_caller_got(tmp_path, runtime_python):
    task = write_function(tmp_path / "task", GRACEFUL_APP)
    events = [{}, {"on_term": "return", "linger_s": LINGER_S}, {}, {"on_term": "raise"}, {}]
    results, spans, rx = invoke_each(task, events, runtime_python)
    got = [(r.json() or {}).get("errorType") if r.function_error else None for r in results]
    # GIVEN two invocations that timed out, whose handler returned (taking 0.5 s to) or raised at
    # the platform's SIGTERM, the runtime posting that answer after the caller had its timeout
    assert got == [None, "Sandbox.Timedout", None, "Sandbox.Timedout", None]
    # THEN both spans say the caller's timeout (before: the first was a success, the second
    # the handler's RuntimeError), the exception an event
    for result, event in zip(results, events):
        span = spans[result.request_id]
        if event:
            assert_timed_out(span)
            assert exception_types(span) == (["RuntimeError"] if event["on_term"] == "raise" else [])
            # ... lasting as long as the caller waited, not until the handler was done
            assert (span["end_time_unix_nano"] - span["start_time_unix_nano"]) / 1e9 < TIMEOUT_S + LINGER_S / 2
        else:
            assert span["status_code"] == 0
    # ... and both are counted as timeouts and errors, once
    assert metric_total(rx, "faas.timeouts") == 2
    assert metric_total(rx, "faas.errors") == 2
    assert metric_total(rx, "faas.invocations") == len(events)


# An integration of the function's own that wraps the runtime's handling of each event (as
# Sentry's patches awslambdaric's handle_event_request): its code runs before the handler is
# called, and so before lambdawrap's wrapper knows of the invocation.
INTEGRATION_APP = """
import json, os, time
import awslambdaric.bootstrap as bootstrap

_handle = bootstrap.handle_event_request


def before_each_event(*args, **kwargs):
    event = json.loads(args[3])
    if event.get("integration") == "exit":
        os._exit(7)
    if event.get("integration") == "hang":
        time.sleep(30)
    return _handle(*args, **kwargs)


bootstrap.handle_event_request = before_each_event


def handler(event, context):
    return {"ok": True}
"""

XRAY_ROOT = "1-5759e988-bd862e3fe1be46a994272793"
XRAY_PARENT = "53995c3f42cd8ad8"


def test_an_invocation_that_ends_before_its_handler_is_called_is_in_the_platform_s_sampled_trace(tmp_path):
    task = write_function(tmp_path / "task", INTEGRATION_APP)
    sampled = f"Root={XRAY_ROOT};Parent={XRAY_PARENT};Sampled=1"
    unsampled = f"Root={XRAY_ROOT};Parent={XRAY_PARENT};Sampled=0"
    # GIVEN invocations in a sampled X-Ray trace (active tracing, or a traced caller) that crash
    # or time out before the handler is called, and one whose trace is not sampled
    calls = [({}, sampled), ({"integration": "exit"}, sampled), ({"integration": "hang"}, sampled), ({"integration": "exit"}, unsampled)]
    with instrumented(task, timeout_s=TIMEOUT_S) as (emu, rx):
        results = [emu.invoke(event, trace_header=header) for event, header in calls]
        got = [(r.json() or {}).get("errorType") if r.function_error else None for r in results]
        assert got == [None, "Runtime.ExitError", "Sandbox.Timedout", "Runtime.ExitError"]
        spans = one_span_each(rx, results)
    traces = [(spans[r.request_id]["trace_id"], spans[r.request_id]["parent_span_id"]) for r in results]
    # THEN each span of the sampled trace is in it, a child of the platform's X-Ray segment, as
    # the handler's span is (before: a trace of its own, with no parent)
    platform_trace = (XRAY_ROOT[2:10] + XRAY_ROOT[11:], XRAY_PARENT)
    assert traces[:3] == [platform_trace] * 3
    assert [spans[r.request_id]["attributes"].get("lambdawrap.failure_reason") for r in results] == [None, "crash", "timeout", "crash"]
    # ... and an unsampled X-Ray trace is not joined, as the function's process does not join it
    assert traces[3][0] != platform_trace[0] and not traces[3][1]


def test_with_otel_propagators_none_an_invocation_that_ends_before_its_handler_is_called_joins_no_trace(tmp_path):
    task = write_function(tmp_path / "task", INTEGRATION_APP)
    sampled = f"Root={XRAY_ROOT};Parent={XRAY_PARENT};Sampled=1"
    # GIVEN OTEL_PROPAGATORS=none, and invocations in a sampled X-Ray trace: one the handler
    # serves, one that crashes before the handler is called
    with instrumented(task, env={"OTEL_PROPAGATORS": "none"}, timeout_s=TIMEOUT_S) as (emu, rx):
        results = [emu.invoke(event, trace_header=sampled) for event in ({}, {"integration": "exit"})]
        assert [bool(r.function_error) for r in results] == [False, True]
        spans = one_span_each(rx, results)
    # THEN neither joins the platform's trace: the companion's span as the function's process's
    # (before: the one the companion made joined it, whatever the setting)
    platform_trace = XRAY_ROOT[2:10] + XRAY_ROOT[11:]
    for result in results:
        span = spans[result.request_id]
        assert span["trace_id"] != platform_trace and not span["parent_span_id"], span


NAMES_ITS_CALLER = """
import logging, sys, warnings

logger = logging.getLogger("deprecations")
handler_ = logging.StreamHandler(sys.stderr)
handler_.setFormatter(logging.Formatter("logged at %(pathname)s:%(lineno)d"))
logger.addHandler(handler_)
logger.propagate = False

def handler(event, context):
    warnings.warn("old API", DeprecationWarning, stacklevel=2)
    logger.warning("old API", stacklevel=2)
    return "ok"
"""


@pytest.mark.timeout(600)
@every_python
def test_a_warning_or_log_line_naming_the_handler_s_caller_names_the_runtime_s_line_as_without_the_layer(tmp_path, runtime_python, python_version):
    from lambdawrap.devtools.emulator import Emulator

    # GIVEN a handler that warns, and logs, naming its caller (stacklevel=2, as a deprecation
    # helper does), with every warning shown
    task = write_function(tmp_path / "task", NAMES_ITS_CALLER)
    env = {"PYTHONWARNINGS": "always"}

    def caller_lines(emu) -> list:
        assert emu.invoke({}).json() == "ok"
        return [line for line in emu.log_lines("function") if "old API" in line or "logged at" in line]

    with Emulator(str(task), "app.handler", invoke_port=None, timeout_s=30, env=env, python=runtime_python) as bare:
        without = caller_lines(bare)
    with instrumented(task, env=env, timeout_s=30, python=runtime_python) as (emu, rx):
        with_layer = caller_lines(emu)
    # THEN the warning names the runtime's line that called the handler, as without the layer
    # (before: the wrapper's line); so does the log line from 3.11, where logging passes over
    # the import system's frames as warnings does
    assert len(without) == 2 and "bootstrap.py" in without[0], without
    if python_version == "3.10":
        with_layer, without = with_layer[:1], without[:1]
    assert with_layer == without, (python_version, with_layer, without)
