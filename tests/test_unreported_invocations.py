"""Invocations the companion must account for without all it is usually told: no record from
the function, no word from the platform, or either late. Each ends as one span with the
status the caller got, or as one count with a reason; none is made up (a real Correlator and
a real Signals, fed as the companion feeds them)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.trace import StatusCode

from lambdawrap.companion.correlator import Correlator
from lambdawrap.companion.resource import build_resource
from lambdawrap.companion.signals import Signals
from lambdawrap.shared import records
from lambdawrap.shared.settings import Settings

ARN = "arn:aws:lambda:eu-west-1:123456789012:function:orders"
ENV = {"AWS_LAMBDA_FUNCTION_NAME": "orders", "AWS_REGION": "eu-west-1", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST"}


def environment(managed_instances: bool = False, socket_path: str = "") -> tuple:
    """(correlator, signals): the companion's correlator over a real Signals (reading the
    in-flight slots beside `socket_path`, if given)."""
    settings = Settings.from_env(ENV)
    resource = build_resource(settings, None)
    signals = Signals(settings, resource, MeterProvider(resource=resource))
    return Correlator(signals, lambda reason, detail: signals.dropped(reason), socket_path=socket_path, managed_instances=managed_instances), signals


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def invoke(correlator: Correlator, rid: str, deadline_in_s: float = 3.0) -> None:
    correlator.on_invoke({"eventType": "INVOKE", "requestId": rid, "invokedFunctionArn": ARN, "deadlineMs": int((time.time() + deadline_in_s) * 1000)})


def record(rid: str, error: dict | None = None, spans: list = (), http_status: int | None = None) -> dict:
    now = time.time_ns()
    start = json.loads(records.encode_invocation_start(request_id=rid, function_arn=ARN, trace_id=1, span_id=2, parent_span_id=0, sampled=True, start_ns=now - 1_000_000, cold_start=False, proactive_init=False, trigger="other", attributes={}, links=[], span_name="orders", span_kind=2))
    end = records.invocation_end(now, error=error, http_status=http_status)
    if spans:
        end["spans"] = list(spans)
    return {"version": records.VERSION, "type": records.INVOCATION, "start": start, "end": end}


def user_span(name: str, span_id: str = "1" * 16) -> dict:
    """A span of the function's, as its record carries it, under record()'s invocation span."""
    now = time.time_ns()
    return {"name": name, "trace_id": "0" * 31 + "1", "span_id": span_id, "parent_span_id": "0" * 15 + "2", "start_ns": now - 4_000_000, "end_ns": now - 2_000_000, "kind": 1, "attributes": {}, "status": [0, ""], "events": [], "scope": "orders"}


def platform_done(correlator: Correlator, rid: str, status: str = "success", duration_ms: float | None = None) -> None:
    record = {"requestId": rid, "status": status}
    if duration_ms is not None:
        record["metrics"] = {"durationMs": duration_ms}
    correlator.on_telemetry([{"time": stamp(), "type": "platform.runtimeDone", "record": record}])


def invocation_spans(signals: Signals) -> list:
    return [span for span in signals.spans.take(1000) if "faas.invocation_id" in span.attributes]


def test_at_a_spindown_an_invocation_nobody_told_of_is_counted_not_made_a_crash():
    # GIVEN a function whose handler sends no records (it is not wrapped), its last invocation's
    # runtimeDone still on its way when the environment spins down
    correlator, signals = environment()
    for rid in ("r1", "r2"):
        invoke(correlator, rid)
        platform_done(correlator, rid)
    invoke(correlator, "r3")
    # WHEN SHUTDOWN comes
    correlator.finish_unreported("spindown")
    # THEN r3 is one record_missing, as r1 and r2 are: a spindown follows an invocation that
    # ended (a failure resets instead), so no crash, error or timeout is made up for it (before:
    # an ERROR span "crash", counted in lambdawrap.crashes, lasting until the SHUTDOWN)
    assert invocation_spans(signals) == []
    assert signals.dropped_by_reason == {"record_missing": 3}


def test_a_timeout_without_the_platform_s_word_ends_at_the_deadline():
    # GIVEN an invocation whose deadline passed (0.2 s after its INVOKE), the platform's word on
    # it lost, and the SHUTDOWN that resets the environment coming later
    correlator, signals = environment()
    invoke(correlator, "r1", deadline_in_s=0.2)
    time.sleep(0.5)
    # WHEN SHUTDOWN says it timed out
    correlator.finish_unreported("timeout")
    # THEN its span is a timeout that lasted until the deadline, not until the SHUTDOWN
    (span,) = invocation_spans(signals)
    assert span.status.status_code == StatusCode.ERROR and span.attributes["lambdawrap.failure_reason"] == "timeout"
    assert 0 < (span.end_time - span.start_time) / 1e9 < 0.35, (span.end_time - span.start_time) / 1e9


def test_a_handler_that_raises_at_the_reset_s_sigterm_is_the_timeout_with_its_exception():
    # GIVEN an invocation the platform reports timed out, whose handler (Python 3.12+, where
    # the reset's SIGTERM reaches it) raised at that SIGTERM: its record comes after the
    # platform's word, a telemetry batch having been read before the socket
    correlator, signals = environment()
    invoke(correlator, "X", deadline_in_s=0.2)
    correlator.on_telemetry([{"time": stamp(), "type": "platform.runtimeDone", "record": {"requestId": "X", "status": "timeout"}}, platform_report("X", "timeout")])
    assert correlator.settled("X", record_grace_s=0.0) is None  # not made once a grace has passed either
    correlator.on_record(record("X", error={"type": "RuntimeError", "message": "stopped by SIGTERM", "stack": ""}))
    # WHEN the reset's SHUTDOWN comes
    correlator.finish_unreported("timeout")
    # THEN its one span is the caller's timeout with the handler's exception an event (before:
    # made at the platform's word, without it, the record then only a late one)
    (span,) = invocation_spans(signals)
    assert span.status.status_code == StatusCode.ERROR and span.attributes["lambdawrap.failure_reason"] == "timeout"
    assert [event.attributes["exception.type"] for event in span.events if event.name == "exception"] == ["RuntimeError"]
    assert signals.dropped_by_reason == {}


@pytest.mark.parametrize("order", ["the record, then the word", "the word, then the record"])
def test_a_timed_out_handler_that_ran_on_past_the_sigterm_ends_its_span_at_the_timeout(order):
    # GIVEN an invocation that timed out after 100 ms, as the platform says, whose handler ran on
    # at the reset's SIGTERM (Python 3.12+) and sent its record 500 ms after it started
    correlator, signals = environment()
    invoke(correlator, "X", deadline_in_s=0.1)
    late = record("X", error={"type": "RuntimeError", "message": "stopped by SIGTERM", "stack": ""})
    late["start"]["start_ns"] = late["end"]["end_ns"] - 500_000_000
    told = [lambda: correlator.on_record(late), lambda: platform_done(correlator, "X", "timeout", duration_ms=100.0)]
    for tell in told if order.startswith("the record") else reversed(told):
        tell()
    correlator.finish_unreported("timeout")
    # THEN its span lasts the 100 ms the caller waited, not the 500 ms the handler ran (before:
    # it ended at the handler's end, after the caller had its timeout), its exception at that end
    (span,) = invocation_spans(signals)
    assert span.attributes["lambdawrap.failure_reason"] == "timeout"
    assert span.end_time - span.start_time == 100_000_000
    assert [(event.attributes["exception.type"], event.timestamp) for event in span.events] == [("RuntimeError", span.end_time)]


def test_a_timed_out_handler_called_late_ends_its_span_at_the_deadline():
    # GIVEN an invocation whose handler was called 50 ms before its deadline (its event took long
    # to decode), that the platform timed out after its 100 ms, counted from its own start
    correlator, signals = environment()
    invoke(correlator, "X", deadline_in_s=0.1)
    deadline_ns = correlator._open["X"].invoke_event["deadlineMs"] * 1_000_000
    late = record("X")
    late["start"]["start_ns"] = deadline_ns - 50_000_000
    late["end"]["end_ns"] = deadline_ns + 400_000_000
    correlator.on_record(late)
    platform_done(correlator, "X", "timeout", duration_ms=100.0)
    correlator.finish_unreported("timeout")
    # THEN its span ends at the deadline, when the caller had its timeout (before: 50 ms after it,
    # the platform's 100 ms counted from the handler's start)
    (span,) = invocation_spans(signals)
    assert span.attributes["lambdawrap.failure_reason"] == "timeout"
    assert span.end_time == deadline_ns


def test_shutdown_awaits_the_report_of_a_timeout_whose_record_did_not_come_not_an_init_report_lost():
    # GIVEN an environment whose init report was lost, and whose invocation timed out: its
    # runtimeDone came, its report (billed time, memory) not yet
    correlator, signals = environment()
    invoke(correlator, "X", deadline_in_s=0.2)
    platform_done(correlator, "X", "timeout")
    # THEN SHUTDOWN waits for that report (its billed time and memory are in no other word)...
    assert correlator.awaiting_platform_words()
    # ... and once it came, for nothing more: not for the init's, which an invocation that ran
    # shows was no init failure (before: the invocation, open until SHUTDOWN, was not taken
    # for one that ran, and SHUTDOWN waited its whole second for that report)
    correlator.on_telemetry([platform_report("X", "timeout")])
    assert not correlator.awaiting_platform_words()


@pytest.mark.parametrize("order", ["the word, then the clear", "the clear, then the word"])
def test_a_timeout_whose_handler_cleared_its_slot_at_the_sigterm_and_whose_record_was_lost_keeps_its_trace(tmp_path, monkeypatch, order):
    from lambdawrap.companion import correlator as correlator_module

    monkeypatch.setattr(correlator_module, "MAX_PENDING_LOGS", 2)  # held for its span: 1,000 lines
    # GIVEN a function's process running an invocation at its deadline (the companion's wait
    # for its record ends then)
    socket_path = str(tmp_path / "lambdawrap.sock")
    correlator, signals = environment(socket_path=socket_path)
    started = record("X")["start"]
    holding = holding_process(socket_path, started, 0)
    deadline_ms = int(time.time() * 1000) + 200
    try:
        correlator.on_invoke({"eventType": "INVOKE", "requestId": "X", "invokedFunctionArn": ARN, "deadlineMs": deadline_ms})
        correlator.on_telemetry([platform_start("X")])
        time.sleep(0.3)
        correlator.read_slot_at_deadline("X")
        # WHEN its handler returns at the reset's SIGTERM, clearing its slot, and its record is
        # lost; the platform's word on the timeout read before or after that; then SHUTDOWN
        if order == "the word, then the clear":
            platform_done(correlator, "X", "timeout")
        holding.stdin.write("\n")
        holding.stdin.flush()
        assert holding.stdout.readline().strip() == "cleared"
        if order == "the clear, then the word":
            platform_done(correlator, "X", "timeout")
        # ... with more lines than are held for its span, printed at the SIGTERM
        correlator.on_telemetry([function_line(f"stopping {n}\n") for n in range(4)])
        ended_process(holding)
        correlator.finish_unreported("timeout")
    finally:
        ended_process(holding)
    # THEN those lines are in the trace its slot held
    assert sorted((text, ids) for text, _, ids, _ in signals.logs.take(100)) == [(f"stopping {n}\n", (started["trace_id"], started["span_id"], True)) for n in range(4)]
    # THEN its span is the timeout in the trace its slot held, from the handler's start to the
    # deadline (its word gave no duration), not to SHUTDOWN
    (span,) = invocation_spans(signals)
    assert format(span.context.trace_id, "032x") == started["trace_id"] and format(span.context.span_id, "016x") == started["span_id"]
    assert span.attributes["error.type"] == "Sandbox.Timedout"
    assert (span.start_time, span.end_time) == (started["start_ns"], deadline_ms * 1_000_000)


def test_a_timeout_word_with_a_deadline_far_ahead_ends_when_it_was_accounted_for():
    # GIVEN an INVOKE whose deadline is malformed (far ahead), and no word on how long it ran
    correlator, signals = environment()
    correlator.on_invoke({"eventType": "INVOKE", "requestId": "X", "invokedFunctionArn": ARN, "deadlineMs": 10**15})
    # WHEN SHUTDOWN says it timed out
    correlator.finish_unreported("timeout")
    # THEN its span ends when it was accounted for, not at that deadline
    (span,) = invocation_spans(signals)
    assert span.end_time <= time.time_ns()


@pytest.mark.parametrize("reason", ["timeout", "failure"])
def test_a_reset_s_cause_is_not_given_to_an_invocation_that_ended_before(reason):
    # GIVEN two invocations of which neither the record nor the platform's word came (a log
    # flood's logsDropped took them), the first posted as an error by the runtime, the second
    # neither; then the third, which the reset ends
    correlator, signals = environment()
    invoke(correlator, "r1")
    correlator.on_record(records.posted("r1", "error"))
    invoke(correlator, "r2")
    invoke(correlator, "r3")
    # WHEN SHUTDOWN says the environment timed out, or failed
    correlator.finish_unreported(reason)
    # THEN only r3 is what the reset says; r1 is the error its runtime posted, r2 a record
    # missing (before: all three were timeouts, or crashes, counted as such)
    spans = {span.attributes["faas.invocation_id"]: span for span in invocation_spans(signals)}
    assert sorted(spans) == ["r1", "r3"], sorted(spans)
    assert spans["r1"].attributes["lambdawrap.failure_reason"] == "runtime_error", dict(spans["r1"].attributes)
    assert spans["r3"].attributes["lambdawrap.failure_reason"] == ("timeout" if reason == "timeout" else "crash")
    assert signals.dropped_by_reason == {"record_missing": 1}


@pytest.mark.parametrize("told", [("initStart",), ("initStart", "initRuntimeDone")])
def test_an_init_spun_down_unused_whose_report_was_lost_is_still_its_span(told):
    # GIVEN an environment initialized ahead (a proactive init) of which the companion heard the
    # init's start, and maybe its runtime's end, but not its report (a flood's logsDropped)
    correlator, signals = environment()
    records_of = {"initStart": {"phase": "init", "initializationType": "on-demand"}, "initRuntimeDone": {"phase": "init", "status": "success"}}
    correlator.on_telemetry([{"time": stamp(), "type": f"platform.{kind}", "record": records_of[kind]} for kind in told])
    # WHEN it spins down unused
    correlator.finish_unreported("spindown")
    # THEN its init is a span, a healthy one (a spindown ends a healthy environment only; before:
    # neither exported nor counted)
    inits = [span for span in signals.spans.take(1000) if span.name.endswith(" init")]
    assert [span.status.status_code for span in inits] == [StatusCode.UNSET], inits
    assert not signals.dropped_by_reason, signals.dropped_by_reason


def posted(correlator: Correlator, rid: str, outcome: str, size: int | None = None) -> None:
    correlator.on_record(records.posted(rid, outcome, size))


def built_spans(calls: list) -> list:
    """The invocation spans a later-built sink makes of `calls` (a pipeline still loading, or the
    next environment's, carried over)."""
    _, signals = environment()
    for name, args, kwargs in calls:
        getattr(signals, name)(*args, **kwargs)
    return invocation_spans(signals)


def test_a_span_built_late_says_what_the_post_said_as_one_built_at_once_does():
    from lambdawrap.companion.deferred import DeferredSink

    # GIVEN an invocation whose response the runtime posted, the runtime dying after it (the
    # platform's word: Runtime.ExitError), once with the pipeline there and once while it loads
    def run(sink) -> Correlator:
        correlator = Correlator(sink, lambda reason, detail: None)
        invoke(correlator, "r1")
        correlator.on_record(record("r1"))
        posted(correlator, "r1", "result")
        platform_done(correlator, "r1", "failure")
        return correlator

    correlator, at_once = environment()
    run(at_once)
    waiting = DeferredSink()
    run(waiting)
    # THEN both spans say what the caller got, the response (before: the one built late took the
    # platform's later word, an ERROR)
    (live,) = invocation_spans(at_once)
    (late,) = built_spans(waiting.take_calls())
    assert live.status.status_code == late.status.status_code == StatusCode.UNSET


def test_a_carried_invocation_keeps_what_the_runtime_posted(tmp_path):
    from lambdawrap.companion import carryover
    from lambdawrap.companion.deferred import DeferredSink

    # GIVEN a response refused for its size, its span waiting for a pipeline that did not come
    # before SHUTDOWN
    waiting = DeferredSink()
    correlator = Correlator(waiting, lambda reason, detail: None)
    invoke(correlator, "r1")
    correlator.on_record(record("r1"))
    posted(correlator, "r1", "too_large", records.MAX_RESPONSE_BYTES + 1)
    platform_done(correlator, "r1", "failure")
    # WHEN the next environment exports it
    calls = waiting.take_calls()
    carryover.save(str(tmp_path / "lw.sock"), [], calls)
    carried = carryover.take(str(tmp_path / "lw.sock"))
    # THEN its span is the one this environment would have made: the refusal, in the caller's
    # words (before: posted and its size were not carried, and it became a crash of unknown cause)
    (direct,) = built_spans(calls)
    (replayed,) = built_spans(carried.calls)
    assert replayed.attributes["error.type"] == direct.attributes["error.type"] == "Function.ResponseSizeTooLarge"
    assert replayed.status.description == direct.status.description


def platform_start(rid: str) -> dict:
    return {"time": stamp(), "type": "platform.start", "record": {"requestId": rid}}


def platform_report(rid: str, status: str = "success") -> dict:
    return {"time": stamp(), "type": "platform.report", "record": {"requestId": rid, "status": status, "metrics": {"durationMs": 1.0, "billedDurationMs": 1}}}


def test_on_managed_instances_a_record_before_its_start_survives_a_full_house(monkeypatch):
    from lambdawrap.companion import correlator as correlator_module

    monkeypatch.setattr(correlator_module, "MAX_OPEN", 8)
    # GIVEN as many requests in flight as the correlator keeps open (1,024; 8 here), and a
    # request X whose record comes before its platform.start, as it often does there
    correlator, signals = environment(managed_instances=True)
    correlator.on_telemetry([platform_start(f"r{n}") for n in range(7)])
    correlator.on_record(record("X"))
    # WHEN another request starts, then X's start and report come
    correlator.on_telemetry([platform_start("Y"), platform_start("X"), platform_report("X")])
    # THEN X is its span (before: its record was forgotten to make room, and X counted as
    # record_missing although its record had come)
    assert [span.attributes["faas.invocation_id"] for span in invocation_spans(signals)] == ["X"]
    assert "record_missing" not in signals.dropped_by_reason


def test_an_invocation_that_ended_before_its_start_by_the_wall_clock_keeps_its_exception_inside_its_span():
    # GIVEN an invocation whose handler raised, the wall clock stepped back 5 ms while it ran
    correlator, signals = environment()
    invoke(correlator, "X")
    stepped = record("X", error={"type": "ValueError", "message": "bad order", "stack": ""})
    stepped["end"]["end_ns"] = stepped["start"]["start_ns"] - 5_000_000
    correlator.on_record(stepped)
    platform_done(correlator, "X", "error")
    # THEN its span ends where it began, and so does its exception event (before: the event
    # was 5 ms before the span it belongs to)
    (span,) = invocation_spans(signals)
    (event,) = span.events
    assert span.start_time == span.end_time == event.timestamp


@pytest.mark.parametrize("flag", [None, 0, "false"])
def test_a_record_whose_sampled_flag_is_no_flag_is_malformed(flag):
    # GIVEN a record not from our handler side, its sampling decision neither true nor false:
    # its log lines would be marked sampled and its span dropped as sampled out
    correlator, signals = environment()
    invoke(correlator, "X")
    forged = record("X")
    forged["start"]["sampled"] = flag
    # WHEN it comes
    correlator.on_record(forged)
    # THEN it is refused as malformed, as other forged records are
    assert signals.dropped_by_reason == {"malformed_record": 1}


@pytest.mark.parametrize("error_type", [None, "", 7])
def test_a_record_whose_error_has_no_type_is_malformed_and_the_platform_s_word_is_taken(error_type):
    # GIVEN a record not from our handler side: its error has no name
    correlator, signals = environment()
    invoke(correlator, "X")
    forged = record("X", error={"type": error_type, "message": "bad", "stack": ""})
    # WHEN it comes, then the platform's word that the invocation failed
    correlator.on_record(forged)
    platform_done(correlator, "X", "error")
    # THEN it is refused as malformed, and the span is the platform's (before: it exported
    # error.type "None")
    assert signals.dropped_by_reason == {"malformed_record": 1}
    (span,) = invocation_spans(signals)
    assert span.attributes["error.type"] not in ("None", "", "7")


@pytest.mark.parametrize("then", ["the process ends", "its record comes"])
def test_spans_held_by_a_process_still_running_at_the_platform_s_word_are_counted_once_it_ends(tmp_path, then):
    # GIVEN a function's process that holds three spans for an invocation's record, still
    # running when the platform's word that the invocation timed out comes (the reset has not
    # stopped it yet)
    socket_path = str(tmp_path / "lambdawrap.sock")
    correlator, signals = environment(socket_path=socket_path)
    late = record("X", spans=[user_span("load"), user_span("check", "2" * 16), user_span("price", "3" * 16)])
    holding = holding_process(socket_path, late["start"], 3)
    try:
        invoke(correlator, "X")
        platform_done(correlator, "X", "timeout")
        # (no span yet: the record may still come, or SHUTDOWN once the reset has stopped it)
        assert invocation_spans(signals) == [] and "process_ended" not in signals.dropped_by_reason
        # WHEN the process ends, or its record comes first (a handler that answered the
        # SIGTERM), and then the reset's SHUTDOWN
        if then == "its record comes":
            correlator.on_record(late)
        ended_process(holding)
        correlator.finish_overdue()
        correlator.finish_overdue()
        correlator.finish_unreported("timeout")
    finally:
        ended_process(holding)
    # THEN the invocation is the timeout; the spans are counted once, when the process has gone
    # without sending them, or exported, with the record that brought them, and not counted
    spans = [s for s in signals.spans.take(100) if not s.name.endswith(" init")]  # SHUTDOWN's init span
    assert [s.attributes["error.type"] for s in spans if "faas.invocation_id" in s.attributes] == ["Sandbox.Timedout"]
    if then == "the process ends":
        assert signals.dropped_by_reason == {"process_ended": 3}
        assert [s.name for s in spans if "faas.invocation_id" not in s.attributes] == []
    else:
        assert "process_ended" not in signals.dropped_by_reason
        assert sorted(s.name for s in spans if "faas.invocation_id" not in s.attributes) == ["check", "load", "price"]


@pytest.mark.parametrize("annotations", [
    {"events": [["retrying", {"attempt": 2}, 1]], "status": [1, ""], "attributes": {"faas.trigger": "pubsub"}},
    {"events": [["odd"], "x", ["bad time", {}, -1]], "status": ["2", None], "attributes": ["not", "a", "map"], "name": 7},
], ids=["the function's", "forged"])
def test_what_the_function_set_on_its_span_does_not_change_what_the_caller_got(annotations):
    from lambdawrap.companion.correlator import Invocation
    from lambdawrap.companion.span_building import SpanBuilder

    # GIVEN an HTTP invocation that answered 502, its function having set events, an OK
    # status and another trigger on the span it found current (or a record not from our
    # handler side, with annotations of no sense)
    served = record("X", http_status=502)
    served["start"]["attributes"] = {"faas.trigger": "http"}
    served["end"]["annotations"] = annotations
    inv = Invocation("X")
    inv.start, inv.end = served["start"], served["end"]
    inv.outcome = {"requestId": "X", "status": "success"}
    # WHEN its span is made
    span, facts = SpanBuilder(build_resource(Settings.from_env(ENV), None), "orders", lambda trace_id: True).invocation(inv)
    # THEN the 5xx is the span's error, not Lambda's, and is counted under the trigger it came by
    assert span.status.status_code == StatusCode.ERROR and span.attributes["error.type"] == "502"
    assert (facts.trigger, facts.error) == ("http", False)


def holding_process(socket_path: str, start: dict, spans: int) -> subprocess.Popen:
    """A process holding `start` in its in-flight slot, with `spans` held for its record."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from lambdawrap.shared.inflight import InflightSlot; slot = InflightSlot(sys.argv[1]); slot.hold(sys.argv[2].encode()); slot.held(int(sys.argv[3])); print('held', flush=True); sys.stdin.readline(); slot.clear(); print('cleared', flush=True); time.sleep(120)", socket_path, json.dumps(start), str(spans)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "held"
    return process


def ended_process(process: subprocess.Popen) -> None:
    process.kill()
    process.wait(timeout=30)
    for stream in (process.stdin, process.stdout):
        stream.close()


def test_on_managed_instances_each_attempt_of_a_retried_request_counts_the_spans_its_worker_held(tmp_path):
    # GIVEN a request that timed out in one worker, which runs on holding three spans, and its
    # retry, same id, timed out in another, holding two
    socket_path = str(tmp_path / "lambdawrap.sock")
    correlator, signals = environment(managed_instances=True, socket_path=socket_path)
    first, retry = record("A")["start"], record("A")["start"]
    retry["span_id"] = "0" * 14 + "22"
    workers = []
    try:
        for start, spans in ((first, 3), (retry, 2)):
            workers.append(holding_process(socket_path, start, spans))
            correlator.on_telemetry([platform_start("A"), {"time": stamp(), "type": "platform.report", "record": {"requestId": "A", "status": "timeout", "metrics": {"durationMs": 1000.0}}}])
        # WHEN both workers end, and the environment with them
    finally:
        for worker in workers:
            ended_process(worker)
    correlator.finish_overdue()
    correlator.finish_unreported("spindown")
    # THEN each attempt is its own span, and the spans each worker held are counted (before:
    # the retry's bookkeeping replaced the first attempt's, whose spans went uncounted)
    assert sorted(f"{span.context.span_id:016x}" for span in invocation_spans(signals)) == sorted([first["span_id"], retry["span_id"]])
    assert signals.dropped_by_reason["process_ended"] == 5


@pytest.mark.parametrize("loss_told", [True, False], ids=["after a loss the platform told", "no loss told"])
def test_on_managed_instances_a_timed_out_handler_s_record_after_more_requests_than_are_remembered_adds_only_its_spans(tmp_path, monkeypatch, loss_told):
    from lambdawrap.companion import correlator as correlator_module

    # GIVEN a request that timed out in a worker that runs on, holding its start in its slot
    # (its span made from it at the timeout), then more requests than the companion remembers
    # (2,048 finished, 16,384 forgotten: 8 and 16 here)
    monkeypatch.setattr(correlator_module, "KEEP_FINISHED", 8)
    monkeypatch.setattr(correlator_module, "KEEP_FORGOTTEN_IDS", 16)
    socket_path = str(tmp_path / "lambdawrap.sock")
    correlator, signals = environment(managed_instances=True, socket_path=socket_path)
    late = record("X", spans=[user_span("load"), user_span("check", "2" * 16)])
    late["end"]["remaining_ms"] = 0
    retry = record("X")["start"]
    retry["span_id"] = "0" * 14 + "99"
    timed_out = {"time": stamp(), "type": "platform.report", "record": {"requestId": "X", "status": "timeout", "errorType": "Sandbox.Timedout", "metrics": {"durationMs": 3000.0}}}
    worker = holding_process(socket_path, late["start"], 2)
    workers = [worker]
    try:
        if loss_told:
            correlator.on_telemetry([{"time": stamp(), "type": "platform.logsDropped", "record": {"droppedRecords": 1, "droppedBytes": 100, "reason": "lag"}}])
        correlator.on_telemetry([platform_start("X"), timed_out])
        # ... whose retry, same id, timed out in another worker that runs on too
        workers.append(holding_process(socket_path, retry, 1))
        correlator.on_telemetry([platform_start("X"), timed_out])
        for n in range(30):
            other = record(f"R{n}")
            other["start"]["span_id"] = f"{n + 16:016x}"
            other["end"]["remaining_ms"] = 3000
            correlator.on_telemetry([platform_start(f"R{n}")])
            correlator.on_record(other)
            correlator.on_telemetry([platform_report(f"R{n}")])
            correlator.finish_overdue()
        # WHEN its handler returns at last, clearing its slot, and its record comes
        worker.stdin.write("clear\n")
        worker.stdin.flush()
        assert worker.stdout.readline().strip() == "cleared"
        correlator.on_record(late)
        correlator.finish_overdue(time.monotonic() + 5)
        correlator.finish_unreported("spindown")
    finally:
        for each in workers:
            ended_process(each)
    # THEN each attempt is its one span, the timeout, and the spans the first's record brought
    # are exported (before: another span, a success, where the platform had told of a loss;
    # else the spans neither exported nor counted)
    spans = signals.spans.take(1000)
    assert [span.status.status_code for span in spans if span.attributes.get("faas.invocation_id") == "X"] == [StatusCode.ERROR] * 2
    assert sorted(span.name for span in spans if span.name in ("load", "check")) == ["check", "load"]
    assert "process_ended" not in signals.dropped_by_reason


def test_on_managed_instances_a_span_made_without_the_function_s_start_begins_when_the_platform_says(tmp_path):
    def at(ns: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns / 1e9)) + f".{ns // 1_000_000 % 1000:03d}Z"

    # GIVEN a request whose worker crashed before its slot held anything, the platform's words
    # on it read 3 s late (its telemetry batches held back under load)
    correlator, signals = environment(managed_instances=True, socket_path=str(tmp_path / "lambdawrap.sock"))
    started_ns = time.time_ns() - 3_000_000_000
    correlator.on_telemetry([{"time": at(started_ns), "type": "platform.start", "record": {"requestId": "X", "version": "$LATEST", "functionArn": ARN}}])
    correlator.on_telemetry([{"time": at(started_ns + 100_000_000), "type": "platform.report", "record": {"requestId": "X", "status": "error", "errorType": "Runtime.ExitError", "metrics": {"durationMs": 100.0}}}])
    # THEN its span begins when the platform says it did (before: when the companion read it,
    # 3 s on, and it ended in the future)
    (span,) = invocation_spans(signals)
    assert abs(span.start_time - started_ns) < 50_000_000, (span.start_time - started_ns) / 1e9
    assert span.end_time <= time.time_ns()


def test_on_managed_instances_the_slots_of_workers_running_on_are_read_once_a_tick_not_once_per_worker(tmp_path, monkeypatch):
    from lambdawrap.shared import inflight

    # GIVEN ten requests that timed out in workers that run on, each holding its slot
    socket_path = str(tmp_path / "lambdawrap.sock")
    correlator, signals = environment(managed_instances=True, socket_path=socket_path)
    workers = []
    try:
        for n in range(10):
            start = record(f"T{n}")["start"]
            start["span_id"] = f"{n + 16:016x}"
            workers.append(holding_process(socket_path, start, 1))
            correlator.on_telemetry([platform_start(f"T{n}"), {"time": stamp(), "type": "platform.report", "record": {"requestId": f"T{n}", "status": "timeout", "metrics": {"durationMs": 3000.0}}}])
        assert len(invocation_spans(signals)) == 10
        read_slot, reads = inflight._read_slot, []
        monkeypatch.setattr(inflight, "_read_slot", lambda path: reads.append(path) or read_slot(path))
        # WHEN the companion's tick looks for those whose workers have ended
        correlator.finish_overdue()
    finally:
        for worker in workers:
            ended_process(worker)
    # THEN each slot is read once (before: every slot for each of them, workers², 0.75 s of
    # each second at 256 workers)
    assert len(reads) == 10, len(reads)
    # ... and once the workers are gone, the spans each held are counted, once, and their
    # requests no longer remembered as running on (their records can never come)
    correlator.finish_overdue()
    assert signals.dropped_by_reason["process_ended"] == 10 and not correlator._ran_on


def test_a_slot_cleared_while_the_companion_reads_it_counts_nothing(tmp_path, monkeypatch):
    from lambdawrap.shared import inflight

    # GIVEN a timed-out invocation's process holding three spans when the companion reads its
    # slot, which clears it, sends its record and ends before the companion asks whether it has
    # ended (a handler that answered the SIGTERM; the companion CPU-throttled meanwhile)
    socket_path = str(tmp_path / "lambdawrap.sock")
    correlator, signals = environment(socket_path=socket_path)
    late = record("X", spans=[user_span("load"), user_span("check", "2" * 16), user_span("price", "3" * 16)])
    holding = holding_process(socket_path, late["start"], 3)
    ended = inflight.ended

    def ending_meanwhile(pid: int) -> bool:
        if pid == holding.pid and holding.poll() is None:
            holding.stdin.write("go\n")
            holding.stdin.flush()
            assert holding.stdout.readline().strip() == "cleared"
            holding.kill()
            holding.wait(timeout=30)
        return ended(pid)

    monkeypatch.setattr(inflight, "ended", ending_meanwhile)
    try:
        invoke(correlator, "X")
        platform_done(correlator, "X", "timeout")
        # WHEN its record comes
        correlator.on_record(late)
        correlator.finish_overdue()
    finally:
        ended_process(holding)
    # THEN its spans are exported with it, and not counted as well (before: process_ended 3)
    assert "process_ended" not in signals.dropped_by_reason
    assert sorted(s.name for s in signals.spans.take(100) if "faas.invocation_id" not in s.attributes) == ["check", "load", "price"]


def test_a_forged_record_with_annotations_too_deep_is_refused_and_the_real_one_taken():
    # GIVEN a record not from our handler side for a real request, what it sets on the span
    # nested 900 deep (the companion cleans them recursively)
    correlator, signals = environment()
    invoke(correlator, "X")
    deep: object = "x"
    for _ in range(900):
        deep = [deep]
    forged = record("X")
    forged["end"]["annotations"] = {"attributes": {"k": deep}}
    # WHEN it comes, then the real record with a span of the function's
    correlator.on_record(forged)
    correlator.on_record(record("X", spans=[user_span("load")]))
    platform_done(correlator, "X")
    # THEN the forged one is refused, and the real one is the invocation's span, with its span
    assert signals.dropped_by_reason == {"malformed_record": 1}
    assert sorted(s.name for s in signals.spans.take(100)) == ["load", "orders"]


def test_on_managed_instances_records_forgotten_for_room_still_bring_their_spans(monkeypatch):
    from lambdawrap.companion import correlator as correlator_module

    monkeypatch.setattr(correlator_module, "MAX_OPEN", 8)
    # GIVEN more records than the correlator keeps open (1,024; 8 here), each come before its
    # request's platform.start and carrying a span of the function's and one it could not keep
    correlator, signals = environment(managed_instances=True)
    rids = [f"r{n}" for n in range(9)]
    for n, rid in enumerate(rids):
        early = record(rid, spans=[user_span(f"lookup{n}", span_id=f"{n + 1:016x}")])
        early["end"]["spans_dropped"] = 1
        correlator.on_record(early)
    # WHEN every request's start and report come
    correlator.on_telemetry([event for rid in rids for event in (platform_start(rid), platform_report(rid))])
    correlator.finish_overdue(time.monotonic() + correlator_module.RECORD_GRACE_S + 1)
    # THEN every invocation is a span or a record_missing, and every span of the function's is
    # exported or counted (before: the records forgotten to make room lost theirs, uncounted)
    spans = signals.spans.take(1000)
    made = [span.attributes["faas.invocation_id"] for span in spans if "faas.invocation_id" in span.attributes]
    assert len(made) + signals.dropped_by_reason.get("record_missing", 0) == len(rids)
    assert 0 < signals.dropped_by_reason.get("record_missing", 0)
    assert sorted(span.name for span in spans if "faas.invocation_id" not in span.attributes) == sorted(f"lookup{n}" for n in range(9))
    assert signals.dropped_by_reason["span_limit"] == len(rids)


def test_a_record_that_comes_after_its_grace_still_brings_its_spans_and_counts():
    from lambdawrap.companion.correlator import RECORD_GRACE_S

    # GIVEN a request on Managed Instances that the platform reported ended well, its record
    # still missing when its grace ended (counted record_missing)
    correlator, signals = environment(managed_instances=True)
    correlator.on_telemetry([platform_start("X"), platform_report("X")])
    correlator.finish_overdue(time.monotonic() + RECORD_GRACE_S + 1)
    assert signals.dropped_by_reason == {"record_missing": 1}
    # WHEN the record comes, with a span of the function's and four it could not keep
    late = record("X", spans=[user_span("orders.lookup")])
    late["end"]["spans_dropped"] = 4
    correlator.on_record(late)
    # THEN the invocation stays counted once, and what its record carried is exported or
    # counted (before: taken for a duplicate and forgotten)
    assert [span.name for span in signals.spans.take(100)] == ["orders.lookup"]
    assert signals.dropped_by_reason == {"record_missing": 1, "span_limit": 4}


def test_the_wait_for_the_platform_s_word_does_not_count_the_pause_before_the_next_invocation():
    from lambdawrap.companion.correlator import OUTCOME_WAIT_S

    # GIVEN an invocation whose record came (no post reported: periodic export), its runtime
    # then failing to serialize the response, and the environment frozen for 10 s before the
    # next INVOKE, the platform's word on it delivered only after the thaw
    correlator, signals = environment()
    invoke(correlator, "n1", deadline_in_s=60)
    correlator.on_record(record("n1"))
    # WHEN the next INVOKE comes, the companion having waited 10 s for it
    correlator.paused(10.0)
    invoke(correlator, "n2", deadline_in_s=60)
    correlator.finish_overdue(time.monotonic() + 10.0)
    platform_done(correlator, "n1", "error")
    # THEN n1 waited for its word, and is the error the caller got (before: the pause counted
    # as the 2 s wait, and n1 went out from its record alone, UNSET)
    (span,) = invocation_spans(signals)
    assert span.status.status_code == StatusCode.ERROR, span.status
    # ... while a word lost for good still lets it go, once the environment has run that long
    correlator.on_record(record("n2"))
    correlator.finish_overdue(time.monotonic() + OUTCOME_WAIT_S + 1)
    assert [s.attributes["faas.invocation_id"] for s in invocation_spans(signals)] == ["n2"]


def test_a_timed_out_invocation_s_span_built_from_its_in_flight_slot_has_declared_secrets_scrubbed(tmp_path):
    from lambdawrap.companion.secret_scrub import SecretScrubber
    from lambdawrap.shared.inflight import InflightSlot

    # GIVEN a declared secret, and an invocation whose in-flight slot holds it (a webhook's
    # ?token= in its query), as the function's process wrote it before calling the handler
    secret = "sk_live_ABCDEFGH12345678"
    scrubber = SecretScrubber()
    scrubber.learn([secret])
    socket_path = str(tmp_path / "lw.sock")
    settings = Settings.from_env(ENV)
    resource = build_resource(settings, None)
    signals = Signals(settings, resource, MeterProvider(resource=resource))
    correlator = Correlator(signals, lambda reason, detail: signals.dropped(reason), socket_path, scrub=scrubber.scrub)
    start = json.loads(records.encode_invocation_start(request_id="r1", function_arn=ARN, trace_id=1, span_id=2, parent_span_id=0, sampled=True, start_ns=time.time_ns() - 1_000_000, cold_start=False, proactive_init=False, trigger="http", attributes={"faas.trigger": "http", "url.query": "token=" + secret}, links=[], span_name="GET /hook", span_kind=2))
    assert InflightSlot(socket_path).hold(json.dumps(start).encode())
    # WHEN it times out, its record never sent
    invoke(correlator, "r1")
    platform_done(correlator, "r1", "timeout")
    correlator.finish_unreported("timeout")
    # THEN its span is built from the slot with the secret scrubbed (before: exported in clear,
    # on exactly the invocations that time out or crash)
    (span,) = invocation_spans(signals)
    assert span.status.status_code is StatusCode.ERROR and secret not in json.dumps(dict(span.attributes)), dict(span.attributes)


def test_a_server_span_has_the_status_code_the_caller_got_and_none_it_did_not_get():
    # GIVEN HTTP invocations whose handlers returned a status: a 200 the runtime could not
    # serialize (the platform's Runtime.MarshalError), a 200 too large to post, a 200 after the
    # timeout, a 502 and a 200 that went
    correlator, signals = environment()
    for rid, status in (("marshal", 200), ("large", 200), ("late", 200), ("bad gateway", 502), ("fine", 200)):
        invoke(correlator, rid)
        correlator.on_record(record(rid, http_status=status))
        if rid == "large":
            posted(correlator, rid, "too_large", records.MAX_RESPONSE_BYTES + 1)
        if rid == "marshal":
            correlator.on_telemetry([{"time": stamp(), "type": "platform.runtimeDone", "record": {"requestId": rid, "status": "failure", "errorType": "Runtime.MarshalError"}}])
        else:
            platform_done(correlator, rid, "timeout" if rid == "late" else "success")
    spans = {span.attributes["faas.invocation_id"]: span for span in invocation_spans(signals)}
    # THEN a failed one names no status code (before: 200, where API Gateway answered 502 or 500
    # of its own), and a 5xx is an ERROR without a description, as the conventions ask (before:
    # "HTTP 502")
    for rid in ("marshal", "large", "late"):
        assert spans[rid].status.status_code is StatusCode.ERROR and "http.response.status_code" not in spans[rid].attributes, (rid, dict(spans[rid].attributes))
    assert spans["bad gateway"].attributes["http.response.status_code"] == 502 and spans["bad gateway"].status.status_code is StatusCode.ERROR and not spans["bad gateway"].status.description
    assert spans["fine"].attributes["http.response.status_code"] == 200 and spans["fine"].status.status_code is StatusCode.UNSET
    # ... and the invocation errors are the three the caller did not get an answer for, not the
    # 502 the handler answered with, as Lambda's Errors metric counts them (before: four)
    assert sum(count for key, count in signals.counted.items() if key[0] == "faas.errors") == 3


def test_an_asynchronous_retry_into_the_same_environment_before_the_first_attempts_word_is_its_own_invocation():
    # GIVEN an asynchronous invocation whose handler raised, its record sent, the platform's
    # word on it held back by the freeze that followed (periodic export asks for no post)
    correlator, signals = environment()
    invoke(correlator, "A", deadline_in_s=60)
    correlator.on_record(record("A", error={"type": "ValueError", "message": "first", "stack": ""}))
    # WHEN the platform retries it into the same environment a minute later, and the first
    # attempt's word comes after the retry's INVOKE, then the retry's record and word
    invoke(correlator, "A", deadline_in_s=60)
    platform_done(correlator, "A", "error")
    retry = record("A")
    retry["start"]["span_id"] = "3" * 16
    correlator.on_record(retry)
    platform_done(correlator, "A", "success")
    # THEN each attempt is one span, with its own status (before: the retry's record was taken
    # for a duplicate and the retry was lost, uncounted)
    spans = invocation_spans(signals)
    assert [(format(s.context.span_id, "016x"), s.status.status_code) for s in spans] == [("0" * 15 + "2", StatusCode.ERROR), ("3" * 16, StatusCode.UNSET)]
    assert signals.dropped_by_reason == {}


def test_a_replaced_attempt_whose_word_never_comes_is_accounted_for_at_the_spindown():
    # GIVEN a function whose handler sends no records, an invocation retried into the same
    # environment before the platform's word on its first attempt came
    correlator, signals = environment()
    invoke(correlator, "B")
    invoke(correlator, "B")
    platform_done(correlator, "B")
    # WHEN the environment spins down, no more words having come
    correlator.finish_unreported("spindown")
    # THEN both attempts are counted as ended without their record (before: one of them)
    assert invocation_spans(signals) == []
    assert signals.dropped_by_reason == {"record_missing": 2}


def test_a_replaced_attempt_without_a_record_is_accounted_for_when_its_word_and_report_come():
    # GIVEN a function whose handler sends no records, an invocation retried into the same
    # environment before the platform's word on its first attempt came, which then ended well
    # or with the handler's error; each word followed by its report, as the platform sends them
    for status, expected in (("success", ([], {"record_missing": 2})), ("error", ([StatusCode.ERROR], {"record_missing": 1}))):
        correlator, signals = environment()
        invoke(correlator, "C")
        invoke(correlator, "C")
        for word in (status, "success"):
            correlator.on_telemetry([{"time": stamp(), "type": "platform.runtimeDone", "record": {"requestId": "C", "status": word, "errorType": "Runtime.Unknown" if word == "error" else None}}, platform_report("C", word)])
        correlator.finish_overdue(time.monotonic() + 60)
        correlator.finish_unreported("spindown")
        # THEN each attempt is accounted for once (before: the first was forgotten with its report)
        assert ([s.status.status_code for s in invocation_spans(signals)], dict(signals.dropped_by_reason)) == expected, status


def test_the_handler_s_error_told_by_the_platform_before_its_record_waits_for_it():
    from lambdawrap.companion.correlator import RECORD_GRACE_S

    # GIVEN an invocation whose handler raised, the platform's word (the runtime posted the
    # error; its process lives on) read before the function's record (a throttled companion
    # reads its telemetry first)
    correlator, signals = environment()
    correlator.on_record(record("E0"))  # an earlier invocation: this function reports
    invoke(correlator, "E1", deadline_in_s=60)
    correlator.on_telemetry([{"time": stamp(), "type": "platform.runtimeDone", "record": {"requestId": "E1", "status": "error", "errorType": "Runtime.Unknown"}}])
    # WHEN the record comes just after
    correlator.on_record(record("E1", error={"type": "ValueError", "message": "bad order", "stack": ""}))
    # THEN the span is the record's: its trace, its span id and its exception (before: made at
    # once without it, in a trace of its own, the exception lost)
    (span,) = invocation_spans(signals)
    assert (span.context.trace_id, span.context.span_id) == (1, 2)
    assert span.status.status_code == StatusCode.ERROR and span.attributes["error.type"] == "ValueError"
    # ... while an error the runtime answered without calling the handler (no record will come)
    # is made from the platform's word once the grace is over
    invoke(correlator, "E2", deadline_in_s=60)
    correlator.on_telemetry([{"time": stamp(), "type": "platform.runtimeDone", "record": {"requestId": "E2", "status": "error", "errorType": "Runtime.Unknown"}}])
    assert invocation_spans(signals) == []
    correlator.finish_overdue(time.monotonic() + RECORD_GRACE_S + 1)
    (span,) = invocation_spans(signals)
    assert span.attributes["faas.invocation_id"] == "E2" and span.status.status_code == StatusCode.ERROR
    assert signals.dropped_by_reason == {}


def test_shutdown_waits_for_the_word_on_an_invocation_that_has_none_yet():
    # GIVEN an invocation whose record came (periodic export: no post reported), its runtime
    # then failing to serialize the response, the platform's word held by the freeze
    correlator, signals = environment()
    for rid in ("S0", "S1"):  # after one that went well
        invoke(correlator, rid, deadline_in_s=60)
        correlator.on_record(record(rid))
    platform_done(correlator, "S0")
    # WHEN SHUTDOWN comes THEN the companion waits for the word (before: only on Managed
    # Instances), which the thaw delivers, and the span is the error the caller got
    assert correlator.awaiting_platform_words()
    platform_done(correlator, "S1", "error")
    # ... and then for its report, the last invocation's, which comes once every extension
    # asked for its next event: its billed time and memory are in no other word
    assert correlator.awaiting_platform_words()
    correlator.on_telemetry([{"time": stamp(), "type": "platform.report", "record": {"requestId": "S1", "status": "error", "metrics": {"durationMs": 5.0, "billedDurationMs": 5, "memorySizeMB": 128, "maxMemoryUsedMB": 60}}}])
    assert not correlator.awaiting_platform_words()
    # ... as for one without its record (OOM and a crash differ only there, and a timed-out
    # handler's last lines come before its word)
    invoke(correlator, "S2", deadline_in_s=60)
    assert correlator.awaiting_platform_words()
    platform_done(correlator, "S2", "timeout")
    correlator.finish_unreported("spindown")
    assert [(s.attributes["faas.invocation_id"], s.status.status_code) for s in invocation_spans(signals)] == [("S0", StatusCode.UNSET), ("S1", StatusCode.ERROR), ("S2", StatusCode.ERROR)]


def test_spans_over_the_limit_and_spans_too_large_for_a_record_are_counted_apart():
    from lambdawrap.handler.channel import _span_frames

    # GIVEN an invocation whose function made more spans than its limit (50 dropped), one of
    # those kept larger than a record by itself, and ten others
    now = time.time_ns()

    def span(n: int, text: str) -> dict:
        return {"name": f"s{n}", "trace_id": "0" * 31 + "1", "span_id": f"{n + 1:016x}", "parent_span_id": "0" * 15 + "2", "start_ns": now, "end_ns": now, "kind": 1, "attributes": {"text": text}, "status": [0, ""], "events": [], "scope": "orders"}

    frames, too_large = _span_frames([span(0, "x" * 300_000)] + [span(n, "y") for n in range(1, 11)])
    assert (too_large, [count for _, count in frames]) == (1, [10])
    correlator, signals = environment()
    invoke(correlator, "L")
    late = record("L")
    late["end"].update(spans_dropped=50, spans_too_large=too_large)
    # WHEN its record comes
    correlator.on_record(late)
    platform_done(correlator, "L")
    # THEN each is counted under its own reason (before: all under record_too_large)
    assert signals.dropped_by_reason == {"span_limit": 50, "record_too_large": 1}


def test_an_init_span_is_a_cold_start_only_where_a_caller_waited_for_it():
    from opentelemetry.sdk.resources import Resource

    from lambdawrap.companion.correlator import InitFacts, Invocation
    from lambdawrap.companion.span_building import SpanBuilder

    builder = SpanBuilder(Resource.create({}), "orders", lambda trace_id: True)

    def init_cold(initialization_type: str, parent_said: bool | None, environment_cold: bool = True, phase: str = "init") -> bool:
        init = InitFacts(start_ns=time.time_ns(), phase=phase)
        init.initialization_type = initialization_type
        parent = None
        if parent_said is not None:
            parent = Invocation("P")
            # What the function's process says of its first call: not cold for a proactive init,
            # nor for one of provisioned concurrency.
            parent.start = dict(record("P")["start"], cold_start=parent_said, proactive_init=not parent_said and initialization_type == "on-demand")
            parent.environment_cold = environment_cold
            parent.init_in_invoke = environment_cold and phase == "invoke"
        return builder.init(init, parent).attributes["faas.coldstart"]

    # GIVEN inits on demand, ahead of demand (proactive: the first invocation not cold, as its
    # process or the companion tells) and of provisioned concurrency, THEN each says what its
    # first invocation's span says (before: all true)
    cases = [init_cold("on-demand", True), init_cold("on-demand", False), init_cold("on-demand", True, environment_cold=False), init_cold("provisioned-concurrency", None), init_cold("on-demand", None)]
    assert cases == [True, False, False, False, True]
    # ... and an init of provisioned concurrency that ran in its caller's invoke phase (after a
    # reset), which the caller waited for, is a cold start, whether it failed or its invocation
    # came (before: never, as the function's process takes a provisioned environment for warm)
    assert [init_cold("provisioned-concurrency", None, phase="invoke"), init_cold("provisioned-concurrency", False, phase="invoke")] == [True, True]
    assert init_cold("provisioned-concurrency", False, environment_cold=False) is False


def test_an_init_that_ran_out_of_time_is_not_described_by_an_error_it_logged_before():
    # GIVEN an init that logged an error and went on, then hung until its time ran out
    correlator, signals = environment()
    correlator.on_telemetry([
        {"time": stamp(), "type": "platform.initStart", "record": {"initializationType": "on-demand", "phase": "init"}},
        {"time": stamp(), "type": "function", "record": "[ERROR] ConnectionError: cache unreachable, going on without it\rTraceback (most recent call last):\r\u00a0\u00a0File \"/var/task/app.py\", line 3, in <module>\r"},
        {"time": stamp(), "type": "platform.initRuntimeDone", "record": {"initializationType": "on-demand", "phase": "init", "status": "timeout"}},
        {"time": stamp(), "type": "platform.initReport", "record": {"initializationType": "on-demand", "phase": "init", "status": "timeout", "metrics": {"durationMs": 10000.0}}},
    ])
    # WHEN its environment ends
    correlator.finish_unreported("failure")
    # THEN its span says it ran out of time, not the error line (before: "ConnectionError: ...")
    (init,) = [span for span in signals.spans.take(100) if span.name.endswith(" init")]
    assert init.status.status_code == StatusCode.ERROR and "ConnectionError" not in (init.status.description or ""), init.status
    assert "cache unreachable" not in str([dict(event.attributes) for event in init.events])
    # ... named, where the platform names no error, as a timed-out invocation is (before:
    # "timeout", unlike the invocation's Sandbox.Timedout)
    assert init.attributes["error.type"] == "Sandbox.Timedout" == dict(init.events[0].attributes)["exception.type"]


def made_from_its_record_alone(rid: str) -> tuple:
    """(correlator, signals) of Managed Instances where request `rid` was made from its record
    alone: the platform told of events it dropped, and its start and report had not come."""
    correlator, signals = environment(managed_instances=True)
    correlator.on_telemetry([{"time": stamp(), "type": "platform.logsDropped", "record": {"droppedRecords": 5, "reason": "lagging"}}])
    late = record(rid)
    late["end"]["remaining_ms"] = 0
    correlator.on_record(late)
    correlator.finish_overdue(time.monotonic() + 10)
    assert len(invocation_spans(signals)) == 1
    return correlator, signals


def test_on_managed_instances_a_request_made_from_its_record_alone_takes_its_late_start_and_report():
    # GIVEN a request on Managed Instances whose record came, the platform having told of events
    # it dropped, and whose start and report did not come in time: made from its record
    correlator, signals = made_from_its_record_alone("M")
    # WHEN its start and report come after all (late, not lost), then the environment ends
    correlator.on_telemetry([platform_start("M"), platform_report("M")])
    correlator.finish_overdue(time.monotonic() + 60)
    correlator.finish_unreported("spindown")
    # THEN it stays one request, accounted for once (before: taken for a retry, counted as
    # record_missing besides its span)
    assert invocation_spans(signals) == []
    assert signals.dropped_by_reason == {"platform_logs_dropped": 5}


def test_a_retry_s_report_and_record_are_its_own_when_the_attempt_it_replaced_is_finished_late(monkeypatch):
    # GIVEN a function that reports, an invocation retried into the same environment before
    # its first attempt's word, that attempt's record lost, and the function's process holding
    # the retry's start in the id's in-flight slot
    correlator, signals = environment()
    correlator.on_record(record("E0"))
    invoke(correlator, "C", deadline_in_s=60)
    invoke(correlator, "C", deadline_in_s=60)
    retry = record("C")
    retry["start"]["span_id"] = "3" * 16
    monkeypatch.setattr(correlator, "_inflight_start", lambda rid: dict(retry["start"]))
    reports: list = []
    monkeypatch.setattr(signals, "report", lambda record, trigger="other": reports.append(record["requestId"]))
    # WHEN the first attempt's word (the handler's error) and report come, then the retry's
    # record, word and report
    correlator.on_telemetry([{"time": stamp(), "type": "platform.runtimeDone", "record": {"requestId": "C", "status": "error", "errorType": "Runtime.Unknown"}}, platform_report("C", "error")])
    correlator.on_record(retry)
    correlator.on_telemetry([{"time": stamp(), "type": "platform.runtimeDone", "record": {"requestId": "C", "status": "success"}}, platform_report("C")])
    correlator.finish_unreported("spindown")
    # THEN the first attempt is a span of ids of its own, the retry its record's span, and each
    # report is measured (before: the first took the retry's ids from the slot, the retry was
    # counted as record_missing, and its report was taken by the first)
    spans = invocation_spans(signals)
    assert [(format(s.context.span_id, "016x") == "3" * 16, s.status.status_code) for s in spans] == [(False, StatusCode.ERROR), (True, StatusCode.UNSET)]
    assert signals.dropped_by_reason == {} and reports == ["C", "C"]


def test_the_late_record_of_an_attempt_a_retry_replaced_is_that_attempt_s():
    # GIVEN an asynchronous invocation whose first attempt's record was not read before the
    # environment froze, then retried into it (a minute or more later) before that attempt's word
    correlator, signals = environment()
    correlator.on_record(record("E0"))
    first = record("C", error={"type": "ValueError", "message": "no", "stack": ""})
    first["start"]["start_ns"] -= 120 * 1_000_000_000
    invoke(correlator, "C", deadline_in_s=60)
    invoke(correlator, "C", deadline_in_s=60)
    retry = record("C")
    retry["start"]["span_id"] = "3" * 16
    # WHEN the first attempt's record comes, its word, then the retry's record and word
    correlator.on_record(first)
    correlator.on_telemetry([{"time": stamp(), "type": "platform.runtimeDone", "record": {"requestId": "C", "status": "error", "errorType": "ValueError"}}, platform_report("C", "error")])
    correlator.on_record(retry)
    correlator.on_telemetry([{"time": stamp(), "type": "platform.runtimeDone", "record": {"requestId": "C", "status": "success"}}, platform_report("C")])
    correlator.finish_unreported("spindown")
    # THEN each attempt is its own record's span (before: the first's record was taken for the
    # retry's, the retry's own was dropped as a duplicate, and the first counted as missing)
    spans = invocation_spans(signals)
    assert sorted((format(s.context.span_id, "016x"), s.status.status_code) for s in spans) == [("0" * 15 + "2", StatusCode.ERROR), ("3" * 16, StatusCode.UNSET)]
    assert signals.dropped_by_reason == {}


def test_a_retry_s_own_record_is_its_own_though_the_companion_read_its_invoke_late():
    # GIVEN an attempt that timed out (no record), retried into the same environment; the
    # retry's handler started 1.5 s before the companion, thawed and busy, read its INVOKE
    correlator, signals = environment()
    correlator.on_record(record("E0"))
    invoke(correlator, "C", deadline_in_s=60)
    retry = record("C")
    retry["start"]["span_id"] = "3" * 16
    retry["start"]["start_ns"] = time.time_ns() - 1_500_000_000
    invoke(correlator, "C", deadline_in_s=60)
    # WHEN the retry's record comes, then the first attempt's word and the retry's
    correlator.on_record(retry)
    correlator.on_telemetry([{"time": stamp(), "type": "platform.runtimeDone", "record": {"requestId": "C", "status": "timeout"}}, platform_report("C", "timeout")])
    correlator.on_telemetry([{"time": stamp(), "type": "platform.runtimeDone", "record": {"requestId": "C", "status": "success"}}, platform_report("C")])
    correlator.finish_unreported("spindown")
    # THEN the retry is its own record's span and ended well; the first attempt timed out
    spans = {format(s.context.span_id, "016x"): s.status.status_code for s in invocation_spans(signals)}
    assert spans.pop("3" * 16) == StatusCode.UNSET and list(spans.values()) == [StatusCode.ERROR], spans
    assert signals.dropped_by_reason == {}


def test_on_managed_instances_a_retry_after_a_request_whose_start_was_lost_is_its_own():
    # GIVEN a request made from its record alone, its start and report lost for good
    correlator, signals = made_from_its_record_alone("M")
    # WHEN a retry of it comes: its record first, then its start and report
    retry = record("M")
    retry["start"]["span_id"] = "3" * 16
    retry["end"]["remaining_ms"] = 0
    correlator.on_record(retry)
    correlator.on_telemetry([platform_start("M"), platform_report("M")])
    correlator.finish_overdue(time.monotonic() + 60)
    correlator.finish_unreported("spindown")
    # THEN the retry is exported (before: its start was taken for the first's, late, and the
    # retry was neither exported nor counted)
    assert [format(s.context.span_id, "016x") for s in invocation_spans(signals)] == ["3" * 16]
    assert signals.dropped_by_reason == {"platform_logs_dropped": 5}


def test_a_carried_init_keeps_its_initialization_type():
    from lambdawrap.companion.correlator import InitFacts

    # GIVEN an init of provisioned concurrency carried to the next environment
    init = InitFacts(start_ns=time.time_ns())
    init.initialization_type = "provisioned-concurrency"
    # THEN it is still one (before: carried without it, its span said it was a cold start)
    assert InitFacts.from_dict(json.loads(json.dumps(init.to_dict()))).initialization_type == "provisioned-concurrency"


def test_an_init_whose_first_invocation_lost_its_record_is_a_trace_of_its_own():
    # GIVEN an init, then a first invocation that ended well but whose record never came
    correlator, signals = environment()
    correlator.on_telemetry([
        {"time": stamp(), "type": "platform.initStart", "record": {"initializationType": "on-demand", "phase": "init"}},
        {"time": stamp(), "type": "platform.initRuntimeDone", "record": {"initializationType": "on-demand", "phase": "init", "status": "success"}},
        {"time": stamp(), "type": "platform.initReport", "record": {"initializationType": "on-demand", "phase": "init", "status": "success", "metrics": {"durationMs": 500.0}}},
    ])
    invoke(correlator, "r1")
    platform_done(correlator, "r1")
    correlator.finish_overdue(time.monotonic() + 60)
    # WHEN a second, warm invocation comes with its record
    invoke(correlator, "r2")
    correlator.on_record(record("r2"))
    platform_done(correlator, "r2")
    spans = signals.spans.take(100)
    (init,) = [span for span in spans if span.name.endswith(" init")]
    (second,) = [span for span in spans if span.attributes.get("faas.invocation_id") == "r2"]
    # THEN the init is a cold start of its own, not a child of the warm invocation (before: it
    # joined r2's trace, under r2's span, saying no cold start)
    assert init.parent is None and init.context.trace_id != second.context.trace_id
    assert init.attributes["faas.coldstart"] is True
    assert signals.dropped_by_reason["record_missing"] == 1



def stamp_before(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - seconds))


def init_records(ago_s: float = 0.0, reported: bool = True) -> list:
    found = [{"time": stamp_before(ago_s), "type": "platform.initStart", "record": {"initializationType": "on-demand", "phase": "init"}},
             {"time": stamp_before(ago_s), "type": "platform.initRuntimeDone", "record": {"initializationType": "on-demand", "phase": "init", "status": "success"}}]
    if reported:
        found.append({"time": stamp_before(ago_s), "type": "platform.initReport", "record": {"initializationType": "on-demand", "phase": "init", "status": "success", "metrics": {"durationMs": 500.0}}})
    return found


def test_a_proactive_init_whose_first_invocation_lost_its_record_is_no_cold_start():
    # GIVEN an init a minute before its first invocation (a proactive one), which lost its record
    correlator, signals = environment()
    correlator.on_telemetry(init_records(ago_s=60))
    invoke(correlator, "r1")
    platform_done(correlator, "r1")
    correlator.finish_overdue(time.monotonic() + 60)
    # THEN the init span stands alone and says no caller waited for it (before: cold start) ...
    (init,) = [span for span in signals.spans.take(100) if span.name.endswith(" init")]
    assert init.parent is None and init.attributes["faas.coldstart"] is False
    # ... also as an environment that ended before its pipeline loaded carries it to the next
    from lambdawrap.companion.correlator import InitFacts

    assert InitFacts.from_dict(correlator.init.to_dict()).cold is False


def test_on_managed_instances_an_init_whose_first_request_lost_its_record_is_a_trace_of_its_own():
    # GIVEN Managed Instances, where the first request to finish lost its record
    correlator, signals = environment(managed_instances=True)
    correlator.on_telemetry(init_records())
    for rid, reported in (("r1", False), ("r2", True)):
        correlator.on_telemetry([{"time": stamp(), "type": "platform.start", "record": {"requestId": rid}}])
        if reported:
            correlator.on_record(record(rid))
        correlator.on_telemetry([{"time": stamp(), "type": "platform.report", "record": {"requestId": rid, "status": "success", "metrics": {"durationMs": 5.0}}}])
        correlator.finish_overdue(time.monotonic() + 60)
    spans = signals.spans.take(100)
    (init,) = [span for span in spans if span.name.endswith(" init")]
    (second,) = [span for span in spans if span.attributes.get("faas.invocation_id") == "r2"]
    # THEN the init is not a child of the later request
    assert init.parent is None and init.context.trace_id != second.context.trace_id
    # ... and a long-ago init, ahead of traffic, is no cold start
    correlator, signals = environment(managed_instances=True)
    correlator.on_telemetry(init_records(ago_s=60))
    correlator.on_telemetry([{"time": stamp(), "type": "platform.start", "record": {"requestId": "r1"}}, {"time": stamp(), "type": "platform.report", "record": {"requestId": "r1", "status": "success", "metrics": {"durationMs": 5.0}}}])
    correlator.finish_overdue(time.monotonic() + 60)
    (init,) = [span for span in signals.spans.take(100) if span.name.endswith(" init")]
    assert init.attributes["faas.coldstart"] is False


def test_an_environment_whose_only_invocation_lost_its_record_and_its_init_report_keeps_its_init():
    for reason in ("spindown", "failure"):
        # GIVEN an init whose report never came, and one invocation that lost its record
        correlator, signals = environment()
        correlator.on_telemetry(init_records(reported=False))
        invoke(correlator, "r1")
        platform_done(correlator, "r1")
        correlator.finish_overdue(time.monotonic() + 60)
        # WHEN the environment ends
        correlator.finish_unreported(reason)
        # THEN its init is one span, served and not failed (before: none at a spindown, a failed
        # init at a failure)
        (init,) = [span for span in signals.spans.take(100) if span.name.endswith(" init")]
        assert init.status.status_code != StatusCode.ERROR, reason


def test_on_managed_instances_the_late_word_on_a_request_forgotten_since_makes_nothing_more(monkeypatch):
    from lambdawrap.companion import correlator as correlator_module

    monkeypatch.setattr(correlator_module, "KEEP_FINISHED", 8)
    # GIVEN requests on Managed Instances finished without the platform's word (it lagged), and
    # more of them finished since than the correlator remembers (2,048; 8 here)
    correlator, signals = environment(managed_instances=True)
    for n in range(12):
        correlator.on_telemetry([platform_start(f"R{n}")])
        ended = record(f"R{n}")
        ended["end"]["remaining_ms"] = 0
        correlator.on_record(ended)
        correlator.finish_overdue(time.monotonic() + 60)
    assert len(invocation_spans(signals)) == 12
    # WHEN the word on the first ones comes at last: a start and report, or a report alone
    correlator.on_telemetry([platform_start("R0"), platform_report("R0", "timeout"), platform_report("R1", "timeout")])
    correlator.finish_overdue(time.monotonic() + 60)
    correlator.finish_unreported("spindown")
    # THEN nothing more is made of it (before: a second span for R0, a span and a
    # record_missing for R1)
    assert invocation_spans(signals) == [] and not signals.dropped_by_reason, (invocation_spans(signals), signals.dropped_by_reason)


def test_on_managed_instances_the_late_record_of_a_request_forgotten_since_makes_nothing_more(monkeypatch):
    from lambdawrap.companion import correlator as correlator_module

    monkeypatch.setattr(correlator_module, "KEEP_FINISHED", 4)
    # GIVEN Managed Instances where the platform once told of events it dropped, and a request
    # that timed out, its handler running on while more requests finished than the correlator
    # remembers (2,048; 4 here)
    correlator, signals = environment(managed_instances=True)
    correlator.on_telemetry([{"time": stamp(), "type": "platform.logsDropped", "record": {"reason": "buffer full", "droppedRecords": 3, "droppedBytes": 300}}])
    correlator.on_telemetry([platform_start("X"), platform_report("X", "timeout")])
    correlator.finish_overdue(time.monotonic() + 1)  # past the grace its record had
    for n in range(10):
        correlator.on_telemetry([platform_start(f"R{n}")])
        correlator.on_record(record(f"R{n}"))
        correlator.on_telemetry([platform_report(f"R{n}")])
    assert len(invocation_spans(signals)) == 11
    # WHEN the timed-out handler's record comes at last, with a span of the function's own
    late = record("X", spans=[user_span("after the timeout")])
    late["end"]["remaining_ms"] = 0
    correlator.on_record(late)
    correlator.finish_overdue(time.monotonic() + 600)
    correlator.finish_unreported("spindown")
    # THEN no second invocation is made of it (before: one more span, and faas.invocations
    # counted it twice), and the span it carried still goes
    assert [s.name for s in signals.spans.take(10) if not s.name.endswith(" init")] == ["after the timeout"]
    assert signals.dropped_by_reason == {"platform_logs_dropped": 3}


def test_on_managed_instances_a_retry_of_a_request_forgotten_since_is_its_own(monkeypatch):
    from lambdawrap.companion import correlator as correlator_module

    monkeypatch.setattr(correlator_module, "KEEP_FINISHED", 8)
    monkeypatch.setattr(correlator_module, "RETRY_AFTER_S", 0.0)
    # GIVEN a request forgotten since (8 more finished after it)
    correlator, signals = environment(managed_instances=True)
    for n in range(10):
        correlator.on_telemetry([platform_start(f"R{n}"), platform_report(f"R{n}")])
        correlator.on_record(record(f"R{n}"))
    assert len(invocation_spans(signals)) == 10
    # WHEN its asynchronous retry comes, under the same id (a minute later at the soonest)
    correlator.on_telemetry([platform_start("R0")])
    retry = record("R0")
    retry["start"]["span_id"] = "%016x" % 0x33  # a span of its own
    correlator.on_record(retry)
    correlator.on_telemetry([platform_report("R0")])
    correlator.finish_unreported("spindown")
    # THEN it is an invocation of its own
    assert [span.attributes["faas.invocation_id"] for span in invocation_spans(signals)] == ["R0"]


def test_on_managed_instances_a_retry_s_record_before_its_start_is_its_own_however_soon_after_the_first_was_forgotten(monkeypatch):
    from lambdawrap.companion import correlator as correlator_module

    monkeypatch.setattr(correlator_module, "KEEP_FINISHED", 8)
    # GIVEN a request forgotten since (8 more finished after it, within a second here: a busy
    # instance), once the platform had told of events it dropped
    correlator, signals = environment(managed_instances=True)
    correlator.on_telemetry([{"time": stamp(), "type": "platform.logsDropped", "record": {"reason": "buffer full", "droppedRecords": 3, "droppedBytes": 300}}])
    for n in range(10):
        correlator.on_telemetry([platform_start(f"R{n}"), platform_report(f"R{n}")])
        correlator.on_record(record(f"R{n}"))
    assert len(invocation_spans(signals)) == 10
    # WHEN its asynchronous retry's record comes before the retry's start: a span of its own
    retry = record("R0")
    retry["start"]["span_id"] = "%016x" % 3
    correlator.on_record(retry)
    correlator.on_telemetry([platform_start("R0"), platform_report("R0")])
    correlator.finish_unreported("spindown")
    # THEN the retry is an invocation of its own (before: taken for the first attempt's late
    # record within 30 s of its being forgotten, and lost with its start and report)
    assert [(span.attributes["faas.invocation_id"], span.context.span_id) for span in invocation_spans(signals)] == [("R0", 3)]


def test_on_managed_instances_a_forgotten_request_s_late_record_after_its_retry_began_is_not_the_retry_s(monkeypatch):
    from lambdawrap.companion import correlator as correlator_module

    monkeypatch.setattr(correlator_module, "KEEP_FINISHED", 8)
    monkeypatch.setattr(correlator_module, "RETRY_AFTER_S", 0.0)
    # GIVEN a request that timed out (its span from its in-flight start), forgotten since, and
    # its asynchronous retry begun under the same id
    correlator, signals = environment(managed_instances=True)
    first = record("X")
    first["start"]["span_id"] = "%016x" % 0x11
    correlator.on_telemetry([platform_start("X")])
    correlator.on_record(first)
    correlator.on_telemetry([platform_report("X", "timeout")])
    for n in range(10):
        correlator.on_telemetry([platform_start(f"R{n}"), platform_report(f"R{n}")])
        correlator.on_record(record(f"R{n}"))
    invocation_spans(signals)
    correlator.on_telemetry([platform_start("X")])
    # WHEN the first attempt's record comes again late (its handler ran on), then the retry's
    late = json.loads(json.dumps(first))
    retry = record("X")
    retry["start"]["span_id"] = "%016x" % 0x22
    correlator.on_record(late)
    correlator.on_record(retry)
    correlator.on_telemetry([platform_report("X")])
    correlator.finish_unreported("spindown")
    # THEN the retry is its own span (before: the first attempt's record was taken for it, its
    # span id exported twice, and the retry's record dropped as a duplicate)
    assert [(span.attributes["faas.invocation_id"], span.context.span_id) for span in invocation_spans(signals)] == [("X", 0x22)]


def test_an_init_whose_start_was_lost_is_still_its_span():
    # GIVEN an init whose platform.initStart was lost (a batch the platform told it dropped),
    # its initRuntimeDone and initReport come, and an invocation follows
    correlator, signals = environment()
    correlator.on_telemetry([{"time": stamp(), "type": "platform.logsDropped", "record": {"reason": "buffer full", "droppedRecords": 1, "droppedBytes": 100}}])
    reported = time.time() - 5  # a report read late: its time, not the reading's, says when
    reported_stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(reported)) + ".250Z"
    correlator.on_telemetry([
        {"time": stamp(), "type": "platform.initRuntimeDone", "record": {"initializationType": "on-demand", "phase": "init", "status": "success"}},
        {"time": reported_stamp, "type": "platform.initReport", "record": {"initializationType": "on-demand", "phase": "init", "metrics": {"durationMs": 180.0}}},
    ])
    invoke(correlator, "r1")
    correlator.on_record(record("r1"))
    platform_done(correlator, "r1")
    # THEN the init is a span, in the invocation's trace (before: none, and nothing counted it)
    spans = signals.spans.take(10)
    (init,) = [span for span in spans if span.name.endswith(" init")]
    (invocation,) = [span for span in spans if "faas.invocation_id" in span.attributes]
    assert init.context.trace_id == invocation.context.trace_id and init.end_time > init.start_time
    # ... ending when its report says, its duration long (before the companion's start was its
    # start: after registration and imports, late)
    assert init.end_time == (int(reported) * 1_000_000_000 + 250_000_000) and init.end_time - init.start_time == 180_000_000


@pytest.mark.parametrize("report_before_retry", [True, False], ids=["report before the retry", "report after it"])
def test_on_managed_instances_a_timed_out_attempt_s_late_record_is_not_taken_for_its_retry_s(monkeypatch, report_before_retry):
    # GIVEN on Managed Instances a request that timed out, its span made from its in-flight
    # slot, and its handler running on (hung on a call), then retried on another worker (the
    # first attempt's report coming before the retry's start, or after it)
    correlator, signals = environment(managed_instances=True)
    first = record("R", error={"type": "TimeoutError", "message": "socket hung", "stack": ""}, spans=[user_span("late-call")])
    first["start"]["span_id"] = "1" * 16
    monkeypatch.setattr(correlator, "_inflight_start", lambda rid: dict(first["start"]))
    timed_out = {"time": stamp(), "type": "platform.runtimeDone", "record": {"requestId": "R", "status": "timeout", "errorType": "Sandbox.Timedout"}}
    correlator.on_telemetry([platform_start("R"), timed_out, *([platform_report("R", "timeout")] if report_before_retry else []), platform_start("R")])
    # WHEN the first attempt's record comes at last, then the retry's record and report
    retry = record("R", spans=[user_span("retry-call", "4" * 16)])
    retry["start"]["span_id"] = "3" * 16
    correlator.on_record(first)
    if not report_before_retry:
        correlator.on_telemetry([platform_report("R", "timeout")])
    correlator.on_record(retry)
    correlator.on_telemetry([platform_report("R")])
    # THEN the first attempt stays its timed-out span, and the retry is its own span, ending
    # as it did, with its function's span (before: the late record was taken for the retry's,
    # which became a second span of the first attempt's ids, ended in error, and the retry's
    # own record was dropped as a duplicate, its spans uncounted)
    spans = signals.spans.take(1000)
    made = [(format(s.context.span_id, "016x"), s.status.status_code) for s in spans if "faas.invocation_id" in s.attributes]
    assert made == [("1" * 16, StatusCode.ERROR), ("3" * 16, StatusCode.UNSET)]
    # ... and what the late record carried still counts: its function's span goes too
    assert sorted(s.name for s in spans if "faas.invocation_id" not in s.attributes) == ["late-call", "retry-call"]


@pytest.mark.parametrize("phase, cold", [("invoke", True), ("init", False)])
def test_a_provisioned_environment_s_init_its_caller_waited_for_is_a_cold_start(phase, cold):
    # GIVEN an environment of provisioned concurrency whose init ran in its own phase, or in its
    # first caller's invoke phase (after a reset: a timeout, a crash), and the function's
    # process, which takes a provisioned environment's first call for warm
    correlator, signals = environment()
    correlator.on_telemetry([
        {"time": stamp(), "type": "platform.initStart", "record": {"initializationType": "provisioned-concurrency", "phase": phase}},
        {"time": stamp(), "type": "platform.initRuntimeDone", "record": {"status": "success"}},
        {"time": stamp(), "type": "platform.initReport", "record": {"metrics": {"durationMs": 250.0}}},
    ])
    invoke(correlator, "W")
    correlator.on_record(record("W"))
    platform_done(correlator, "W")
    # THEN the invocation and its init are a cold start only where the caller waited for the
    # init (before: never, for provisioned concurrency)
    spans = signals.spans.take(100)
    assert sorted((s.name, s.attributes["faas.coldstart"]) for s in spans) == [("orders", cold), ("orders init", cold)]


def test_on_managed_instances_a_request_told_by_its_report_alone_ends_when_the_report_says():
    # GIVEN on Managed Instances a request whose start was lost with its batch, and whose
    # report, stamped 5 s ago, says it ran out its 3 s
    correlator, signals = environment(managed_instances=True)
    reported_s = int(time.time()) - 5
    correlator.on_telemetry([
        {"time": stamp(), "type": "platform.logsDropped", "record": {"droppedRecords": 3, "droppedBytes": 900}},
        {"time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(reported_s)), "type": "platform.report", "record": {"requestId": "L", "status": "timeout", "errorType": "Sandbox.Timedout", "metrics": {"durationMs": 3000.0}}},
    ])
    correlator.finish_overdue(time.monotonic() + 1)  # past the grace its record had
    # THEN its span runs the 3 s up to the report's time (before: from when the companion read
    # the report, ending 3 s after it, in the future)
    (span,) = invocation_spans(signals)
    assert (span.start_time, span.end_time) == ((reported_s - 3) * 10**9, reported_s * 10**9)
    # ... and, no start having named the function, it has no ARN attributes (before: "")
    assert "aws.lambda.invoked_arn" not in span.attributes and "cloud.resource_id" not in span.attributes


def test_on_managed_instances_a_handler_that_returned_as_its_deadline_came_keeps_its_record_s_ids():
    from lambdawrap.companion.correlator import RECORD_GRACE_S

    # GIVEN a request on Managed Instances whose handler returned as its deadline came: its
    # worker (which a timeout does not stop) cleared its in-flight slot and sent its record,
    # not read yet when the platform's timeout report is
    correlator, signals = environment(managed_instances=True)
    correlator.on_telemetry([platform_start("X")])
    timed_out = dict(platform_report("X", "timeout"), record={"requestId": "X", "status": "timeout", "errorType": "Sandbox.Timedout", "metrics": {"durationMs": 3000.0}})
    correlator.on_telemetry([timed_out])
    # WHEN the record is read just after
    correlator.on_record(record("X", spans=[user_span("orders.lookup")]))
    # THEN the span is the record's, in its trace, a timeout, and its child joins it (before:
    # made at once from the platform's word, its ids made up: the function's span an orphan)
    spans = signals.spans.take(100)
    (span,) = [s for s in spans if "faas.invocation_id" in s.attributes]
    (child,) = [s for s in spans if s.name == "orders.lookup"]
    assert (span.context.trace_id, span.context.span_id) == (1, 2) and span.status.status_code is StatusCode.ERROR
    assert child.parent.span_id == span.context.span_id
    # ... and one whose record never comes is made once the grace is over, counted once
    correlator.on_telemetry([platform_start("Y"), dict(timed_out, record=dict(timed_out["record"], requestId="Y"))])
    assert not [s for s in signals.spans.take(100) if "faas.invocation_id" in s.attributes]
    correlator.finish_overdue(time.monotonic() + RECORD_GRACE_S + 1)
    (late,) = [s for s in signals.spans.take(100) if "faas.invocation_id" in s.attributes]
    assert late.attributes["faas.invocation_id"] == "Y" and late.status.status_code is StatusCode.ERROR
    assert "record_missing" not in signals.dropped_by_reason


def test_on_managed_instances_a_retry_while_a_timed_out_attempt_awaits_its_record_is_its_own():
    # GIVEN a request that timed out on Managed Instances with neither record nor slot, its
    # record still awaited (the grace)
    correlator, signals = environment(managed_instances=True)
    timed_out = dict(platform_report("X", "timeout"), record={"requestId": "X", "status": "timeout", "errorType": "Sandbox.Timedout", "metrics": {"durationMs": 3000.0}})
    correlator.on_telemetry([platform_start("X"), timed_out])
    # WHEN its retry starts meanwhile, and ends well
    correlator.on_telemetry([platform_start("X")])
    correlator.on_record(record("X"))
    correlator.on_telemetry([platform_report("X")])
    correlator.finish_unreported("spindown")
    # THEN each attempt is its span: the first a timeout, the retry as it ended (before: the
    # retry's record and start were taken for the first attempt's, one span, the retry's
    # report lost)
    assert sorted(span.status.status_code.name for span in invocation_spans(signals)) == ["ERROR", "UNSET"]
    assert "record_missing" not in signals.dropped_by_reason


def platform_start_of(rid: str) -> dict:
    return {"time": stamp(), "type": "platform.start", "record": {"requestId": rid}}


def function_line(line: str) -> dict:
    return {"time": stamp(), "type": "function", "record": line}


@pytest.mark.parametrize("line", ["[ERROR]\t2024-01-01T00:00:00.000Z\tr2\tpayment failed\n", "payment failed, printed\n"])
def test_after_the_platform_dropped_events_a_request_whose_start_was_lost_keeps_its_lines(line):
    # GIVEN an on-demand environment whose first request is done, then told of events the
    # platform dropped (a log flood), among them the second request's platform.start
    correlator, signals = environment()
    invoke(correlator, "r1")
    correlator.on_telemetry([platform_start_of("r1"), function_line("r1's line\n")])
    correlator.on_record(record("r1"))
    platform_done(correlator, "r1")
    correlator.on_telemetry([{"time": stamp(), "type": "platform.logsDropped", "record": {"droppedRecords": 3, "reason": "lagging"}}])
    invoke(correlator, "r2")
    # WHEN the second request's lines come, a logging line naming it or a printed one
    correlator.on_telemetry([function_line(line)])
    correlator.on_record(record("r2"))
    platform_done(correlator, "r2")
    # THEN each line is its own request's (before: the second's went to the first, its trace
    # with them)
    owners = {text.strip(): rid for text, _, _, rid in signals.logs.take(100)}
    assert owners == {"r1's line": "r1", line.strip(): "r2"}, owners


def test_a_logging_line_goes_to_the_request_it_names_where_the_platform_lost_that_request_s_start_and_the_last_one_s_end():
    # GIVEN a first request whose runtimeDone the platform dropped, and a second whose
    # platform.start it dropped too
    correlator, signals = environment()
    invoke(correlator, "r1")
    correlator.on_telemetry([platform_start_of("r1")])
    correlator.on_record(record("r1"))
    correlator.on_telemetry([{"time": stamp(), "type": "platform.logsDropped", "record": {"droppedRecords": 2, "reason": "lagging"}}])
    invoke(correlator, "r2")
    # WHEN a logging line of the second comes (awslambdaric's Text format names its request)
    correlator.on_telemetry([function_line("[INFO]\t2024-01-01T00:00:00.000Z\tr2\tcharged\n")])
    correlator.on_record(record("r2"))
    platform_done(correlator, "r2")
    # THEN it is the second's
    assert [rid for _, _, _, rid in signals.logs.take(100)] == ["r2"]


def test_after_a_request_whose_start_came_a_line_printed_after_the_last_response_stays_that_request_s():
    # GIVEN an on-demand environment told of events the platform dropped, then a request whose
    # platform.start came after all
    correlator, signals = environment()
    correlator.on_telemetry([{"time": stamp(), "type": "platform.logsDropped", "record": {"droppedRecords": 1, "reason": "lagging"}}])
    invoke(correlator, "r1")
    correlator.on_telemetry([platform_start_of("r1")])
    correlator.on_record(record("r1"))
    platform_done(correlator, "r1")
    # WHEN the next request is announced before a line r1's thread printed after its response
    # comes (INVOKE comes ahead of the telemetry's batches)
    invoke(correlator, "r2")
    correlator.on_telemetry([function_line("r1's thread, after its response\n"), platform_start_of("r2")])
    correlator.on_record(record("r2"))
    platform_done(correlator, "r2")
    # THEN the line stays r1's: only the INVOKE right after a drop takes it for the next one's
    assert [rid for _, _, _, rid in signals.logs.take(100)] == ["r1"]


def test_a_request_whose_start_was_lost_keeps_its_lines_when_the_platform_tells_of_the_loss_after_announcing_it():
    # GIVEN an on-demand environment whose first request is done, and the second announced
    # (INVOKE comes ahead of the telemetry)
    correlator, signals = environment()
    invoke(correlator, "r1")
    correlator.on_telemetry([platform_start_of("r1")])
    correlator.on_record(record("r1"))
    platform_done(correlator, "r1")
    invoke(correlator, "r2")
    # WHEN the batch that tells of the dropped events (the second's platform.start among them)
    # holds a line the second printed
    correlator.on_telemetry([{"time": stamp(), "type": "platform.logsDropped", "record": {"droppedRecords": 1, "reason": "lagging"}}, function_line("printed by r2\n")])
    correlator.on_record(record("r2"))
    platform_done(correlator, "r2")
    # THEN the line is the second's
    assert [rid for _, _, _, rid in signals.logs.take(100)] == ["r2"]


def flood_dropped(correlator: Correlator) -> None:
    """The platform's word that it dropped events of a log flood (what it dropped unknown)."""
    correlator.on_telemetry([{"time": stamp(), "type": "platform.logsDropped", "record": {"droppedRecords": 5000, "droppedBytes": 500_000, "reason": "buffer full"}}])


def attempt_record(rid: str, span_id: str, error: dict | None = None, spans: list = ()) -> dict:
    found = record(rid, error=error, spans=spans)
    found["start"]["span_id"] = span_id
    return found


def test_a_third_attempt_of_a_retried_invocation_leaves_neither_earlier_attempt_unaccounted():
    # GIVEN an asynchronous invocation whose handler raised, retried twice into the same
    # environment (Lambda's default), the platform's word on each attempt lost in the flood the
    # handler logged
    correlator, signals = environment()
    for n in (1, 2, 3):
        invoke(correlator, "A", deadline_in_s=60)
        correlator.on_record(attempt_record("A", f"{n:016x}", error={"type": "ValueError", "message": f"attempt {n}", "stack": ""}))
        flood_dropped(correlator)
    correlator.finish_unreported("spindown")
    # THEN each attempt is one span, from its own record (before: the first was replaced by the
    # second in the wait for its word, neither exported nor counted)
    spans = invocation_spans(signals)
    assert sorted((format(s.context.span_id, "016x"), s.status.status_code, s.events[0].attributes["exception.message"]) for s in spans) == [(f"{n:016x}", StatusCode.ERROR, f"attempt {n}") for n in (1, 2, 3)]
    assert set(signals.dropped_by_reason) == {"platform_logs_dropped"}


def test_a_retry_s_record_read_before_its_invoke_while_the_first_attempt_waits_for_its_word_is_the_retry_s():
    # GIVEN an asynchronous invocation whose handler raised, its record sent, the platform's
    # word on it held back by the freeze that followed
    correlator, signals = environment()
    invoke(correlator, "A", deadline_in_s=60)
    correlator.on_record(attempt_record("A", "2" * 16, error={"type": "ValueError", "message": "first", "stack": ""}))
    # WHEN at the thaw a minute later the retry's record (with a span of the function's) is read
    # before the retry's INVOKE, and then both attempts' words come
    correlator.on_record(attempt_record("A", "3" * 16, spans=[user_span("db-query", "4" * 16)]))
    invoke(correlator, "A", deadline_in_s=60)
    platform_done(correlator, "A", "error")
    platform_done(correlator, "A", "success")
    # THEN each attempt is its own span, the retry with its function's span (before: the retry's
    # record was taken for a duplicate, the retry counted record_missing, its span lost uncounted)
    spans = signals.spans.take(1000)
    assert [(format(s.context.span_id, "016x"), s.status.status_code) for s in spans if "faas.invocation_id" in s.attributes] == [("2" * 16, StatusCode.ERROR), ("3" * 16, StatusCode.UNSET)]
    assert [s.name for s in spans if "faas.invocation_id" not in s.attributes] == ["db-query"]
    assert signals.dropped_by_reason == {}


def test_a_healthy_init_spun_down_unused_whose_runtime_s_word_was_lost_is_no_failed_init():
    # GIVEN an init ahead of demand whose module logged a flood: the platform dropped its
    # initRuntimeDone, and reported the init
    correlator, signals = environment()
    start, _, report = init_records()
    correlator.on_telemetry([start])
    flood_dropped(correlator)
    correlator.on_telemetry([report])
    # WHEN the environment spins down unused
    correlator.finish_unreported("spindown")
    # THEN its init is a healthy span (a spindown ends a healthy environment only; before: a
    # failed init, "an extension failed")
    (init,) = [span for span in signals.spans.take(1000) if span.name.endswith(" init")]
    assert init.status.status_code == StatusCode.UNSET, (init.status, dict(init.attributes))


@pytest.mark.parametrize("told", ["an extension's error", "the report's error", "no loss"])
def test_an_init_spun_down_unused_without_its_runtime_s_word_failed_where_nothing_says_the_word_was_lost(told):
    # GIVEN an init reported without initRuntimeDone: an extension told of its error, or the
    # report says the init failed, or the platform told of no events it dropped
    correlator, signals = environment()
    start, _, report = init_records()
    events = [start]
    if told == "an extension's error":
        events.append({"time": stamp(), "type": "platform.extension", "record": {"name": "other", "state": "Ready", "events": [], "errorType": "Extension.Crash"}})
    if told != "no loss":
        flood_dropped(correlator)
    if told == "the report's error":
        report = dict(report, record=dict(report["record"], status="error", errorType="Extension.Crash"))
    correlator.on_telemetry(events + [report])
    # WHEN the environment ends as a spindown (as lambdawrap also ends when it loses the API)
    correlator.finish_unreported("spindown")
    # THEN the init is a failed one
    (init,) = [span for span in signals.spans.take(1000) if span.name.endswith(" init")]
    assert init.status.status_code == StatusCode.ERROR, told


@pytest.mark.parametrize("reported", [True, False])
def test_an_init_whose_first_invocation_told_nothing_goes_when_the_next_finishes_in_a_trace_of_its_own(reported):
    # GIVEN a cold start whose first invocation's record and platform word were both lost (and
    # maybe the init's report)
    correlator, signals = environment()
    correlator.on_telemetry(init_records(reported=reported))
    invoke(correlator, "first")
    flood_dropped(correlator)
    # WHEN the next invocation finishes
    invoke(correlator, "second")
    correlator.on_record(attempt_record("second", "b" * 16))
    platform_done(correlator, "second")
    # THEN the environment is served: no flush waits for a lost init report any more ...
    assert correlator.serving_first() is False
    # ... and a reported init's span goes now, in a trace of its own, a cold start (not at the
    # environment's end)
    inits = [span for span in signals.spans.take(1000) if span.name.endswith(" init")]
    assert [(init.parent, init.attributes["faas.coldstart"]) for init in inits] == ([(None, True)] if reported else [])


def test_the_init_span_joins_the_first_invocation_though_the_second_finished_first():
    # GIVEN a cold start whose first invocation's word was lost in its log flood, so that it
    # waits for it while the next invocation finishes
    correlator, signals = environment()
    correlator.on_telemetry(init_records())
    invoke(correlator, "first")
    first = attempt_record("first", "a" * 16)
    first["start"].update(trace_id="a" * 32, cold_start=True)
    correlator.on_record(first)
    flood_dropped(correlator)
    invoke(correlator, "second")
    correlator.on_record(attempt_record("second", "b" * 16))
    platform_done(correlator, "second")
    # WHEN the first is accounted for at last
    correlator.finish_unreported("spindown")
    # THEN the init span is in the first invocation's trace, under its span, a cold start
    # (before: in the second's, which was no cold start)
    (init,) = [span for span in signals.spans.take(1000) if span.name.endswith(" init")]
    assert (format(init.context.trace_id, "032x"), format(init.parent.span_id, "016x"), init.attributes["faas.coldstart"]) == ("a" * 32, "a" * 16, True)


def init_failed_record(error_type: object = "Runtime.ImportModuleError") -> dict:
    now = time.time_ns()
    return records.init_failed(now - 5_000_000, now, {"type": error_type, "message": "Unable to import module 'app': No module named 'x'", "stack": ""})


def init_told(correlator: Correlator, status: str, report: str | None = None) -> None:
    """The platform's word on a Managed Instances init: its runtime done with `status`, and
    its report (Managed Instances' may carry a status of its own: `report`)."""
    failed = {"errorType": "Runtime.ImportModuleError"} if status != "success" else {}
    told = [("initStart", {"phase": "init", "initializationType": "lambda-managed-instances"}), ("initRuntimeDone", {"phase": "init", "status": status, **failed})]
    told.append(("initReport", {"phase": "init", "initializationType": "lambda-managed-instances", "metrics": {"durationMs": 80.0}, **({"status": report, "errorType": "Extension.Crash"} if report else {})}))
    correlator.on_telemetry([{"time": stamp(), "type": f"platform.{kind}", "record": record} for kind, record in told])


def init_spans(signals: Signals) -> list:
    return [span for span in signals.spans.take(1000) if span.name.endswith(" init")]


@pytest.mark.parametrize("order", ["record first", "platform first"])
def test_on_managed_instances_a_worker_s_failed_init_is_its_span_once_the_environment_s_init_succeeded(order):
    # GIVEN a Managed Instances environment, one of whose workers tells that its init failed,
    # before or after the platform tells that the environment's init succeeded
    correlator, signals = environment(managed_instances=True)
    steps = [lambda: correlator.on_record(init_failed_record()), lambda: init_told(correlator, "success")]
    for step in steps if order == "record first" else reversed(steps):
        step()
    # THEN the worker's failed init is a span of its own, an error named as the runtime named it
    (span,) = [span for span in init_spans(signals) if span.status.status_code == StatusCode.ERROR]
    assert span.parent is None
    assert span.attributes["error.type"] == "Runtime.ImportModuleError" and span.attributes["lambdawrap.init.worker"] is True
    assert "No module named 'x'" in span.status.description


def test_on_managed_instances_a_worker_s_failed_init_waits_for_the_environment_s_report():
    # GIVEN a worker's failed init, and the platform's word that the environment's runtime was
    # done, but not yet its report (the last word, which may name a failure of its own)
    correlator, signals = environment(managed_instances=True)
    correlator.on_record(init_failed_record())
    correlator.on_telemetry([{"time": stamp(), "type": "platform.initRuntimeDone", "record": {"phase": "init", "status": "success"}}])
    assert not init_spans(signals)
    # WHEN the environment's report comes, a failure of its own (an extension's)
    correlator.on_telemetry([{"time": stamp(), "type": "platform.initReport", "record": {"phase": "init", "status": "error", "errorType": "Extension.Crash", "metrics": {"durationMs": 80.0}}}])
    correlator.finish_unreported("failure")
    # THEN the environment's init failed, once, named as its report names it (before: its span
    # was a success, and only the worker's told of a failure)
    inits = init_spans(signals)
    assert len(inits) == 1 and "lambdawrap.init.worker" not in inits[0].attributes, inits
    assert inits[0].status.status_code == StatusCode.ERROR and inits[0].attributes["error.type"] == "Extension.Crash"


def test_a_worker_s_failed_init_carried_to_a_later_environment_keeps_its_mark(tmp_path):
    from lambdawrap.companion import carryover

    # GIVEN a worker's failed init span, made where the environment ended before it could be
    # exported (the sink's calls are what a later environment replays)
    calls: list = []

    class Recording:
        def init_span(self, init, parent):
            calls.append(("init_span", (init, parent), {}))

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    correlator = Correlator(Recording(), lambda reason, detail: None, managed_instances=True)
    correlator.on_record(init_failed_record())
    init_told(correlator, "success")
    worker_calls = [call for call in calls if call[1][0].worker]
    assert len(worker_calls) == 1
    # WHEN it is carried over and replayed in the next environment
    carryover.save(str(tmp_path / "lw.sock"), [], worker_calls)
    _, signals = environment()
    for name, args, kwargs in carryover.take(str(tmp_path / "lw.sock")).calls:
        getattr(signals, name)(*args, **kwargs)
    # THEN it is still the worker's (before: an environment's failed init, its duration measured)
    (span,) = init_spans(signals)
    assert span.attributes["lambdawrap.init.worker"] is True and span.status.status_code == StatusCode.ERROR


@pytest.mark.parametrize("ending", [False, True])
def test_on_managed_instances_workers_failed_init_are_the_environment_s_where_it_failed(ending):
    # GIVEN workers that tell their init failed, where the environment's init failed (the
    # first worker's failure, which the runtime reported), told or not before the end
    correlator, signals = environment(managed_instances=True)
    correlator.on_record(init_failed_record())
    correlator.on_record(init_failed_record())
    if not ending:
        init_told(correlator, "error")
    correlator.finish_unreported("failure")
    # THEN the failure is one init span, the environment's
    inits = init_spans(signals)
    assert len(inits) == 1 and "lambdawrap.init.worker" not in inits[0].attributes, inits
    assert inits[0].status.status_code == StatusCode.ERROR


@pytest.mark.parametrize("forged", [{"error_type": ""}, {"error_type": None}, {"times": (5, 4)}, {"times": (0, 4)}])
def test_a_forged_init_failed_record_is_malformed(forged):
    correlator, signals = environment(managed_instances=True)
    record = init_failed_record(forged.get("error_type", "Runtime.ImportModuleError"))
    if "times" in forged:
        record["start_ns"], record["end_ns"] = forged["times"]
    correlator.on_record(record)
    init_told(correlator, "success")
    assert signals.dropped_by_reason == {"malformed_record": 1}
    assert not [span for span in init_spans(signals) if "lambdawrap.init.worker" in span.attributes]
