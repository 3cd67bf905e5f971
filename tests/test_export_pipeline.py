"""The companion's export pipeline, in a process of its own, against the real OTLP receiver."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from typing import Iterator

import pytest

from conftest import wait_for
from lambdawrap.devtools.otlp_receiver import OtlpReceiver
from support.local_servers import content_length, read_body, read_head
from support.log_pipeline_probe import LOG_PIPELINE


def run_probe(script: str, *args: str, env: dict | None = None) -> tuple:
    """(what the probe printed last, as JSON; the completed process) of `script` in a process of
    its own, with `env` added to the environment."""
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120, check=True, env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1]), out


def exported(rx: OtlpReceiver) -> tuple:
    """(spans, log records, probe.count values) the receiver got."""
    return len(rx.spans()), len(rx.logs()), [p["value"] for p in rx.metrics() if p["name"] == "probe.count"]


# For the probes: a span of an order lookup, and a wait for the export threads no flush waits
# for (a failing signal's), as the environment runs on meanwhile.
PROBE_HELPERS = """
def order_span(i):
    return signals.builder.span(name="GET /orders", trace_id=1, span_id=2 + i, parent_id=None, kind=SpanKind.SERVER, attributes={}, start=1, end=2, status=Status(StatusCode.UNSET))

def run_on():
    for sending in [t for t in threading.enumerate() if t.name.startswith("lambdawrap-export-")]:
        sending.join(30)
"""


def signals_probe(env: dict, body: str) -> str:
    """A probe script: the companion's pipeline and signals, made as lifecycle makes them,
    exporting to the endpoint in argv[1] with `env` set first; then `body`."""
    return f"""
import json, os, sys, threading, time
os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sys.argv[1]
os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "orders"
os.environ.update({env!r})
from opentelemetry.trace import SpanKind, Status, StatusCode
from lambdawrap.companion.exporting import Pipeline, built, make_exporters
from lambdawrap.companion.resource import build_resource
from lambdawrap.companion.signals import Signals
from lambdawrap.shared.settings import Settings
settings = Settings.from_env()
resource = build_resource(settings, "012345678912")
sink = []
pipeline = Pipeline(built(make_exporters(settings)), resource, lambda reason, count=1: sink[0].dropped(reason, count))
signals = Signals(settings, resource, pipeline.meter_provider)
sink.append(signals)
pipeline.attach(signals)
""" + PROBE_HELPERS + body


PIPELINE_PROBE = """
import json, os, sys, threading
os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sys.argv[1]
os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "orders"
from lambdawrap.companion.exporting import Pipeline, make_exporters
from lambdawrap.companion.resource import build_resource
from lambdawrap.shared.settings import Settings
settings = Settings.from_env()
pipeline = Pipeline(make_exporters(settings), build_resource(settings, "012345678912"), lambda *args: None)
pipeline.meter_provider.get_meter("probe").create_counter("probe.count").add(3)
flushed = pipeline.flush(wait_s=60)
print(json.dumps({"threads": sorted(t.name for t in threading.enumerate()), "flushed": flushed}))
"""


def test_metrics_go_with_each_flush_and_no_thread_waits_to_collect_them():
    # GIVEN the pipeline, a metric recorded and a flush asked for
    with OtlpReceiver() as rx:
        found, _ = run_probe(PIPELINE_PROBE, rx.endpoint)
        # THEN the flush exported it, and the pipeline runs its export worker alone: no SDK
        # ticker thread, which the freezer would stop and restart with every invocation
        assert found == {"threads": ["MainThread", "lambdawrap-export"], "flushed": True}
        assert [p["value"] for p in rx.metrics() if p["name"] == "probe.count"] == [3]


def test_each_log_record_carries_its_own_invocations_ids_in_a_mixed_batch():
    from opentelemetry.sdk.resources import Resource

    from lambdawrap.companion.log_records import log_records

    first, second = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"), ["4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"]
    # The second invocation's ids as an earlier environment carried them over (JSON: a list).
    entries = [("a", 1, first, "r1"), ("b", 2, second, "r2"), ("c", 3, first, "r1"), ("d", 4, None, None), ("e", 5, ("", ""), "r3")]
    found = [(r.log_record.body, r.log_record.trace_id, r.log_record.span_id, dict(r.log_record.attributes or {})) for r in log_records(entries, Resource({}))]
    assert found == [
        ("a", int(first[0], 16), int(first[1], 16), {"faas.invocation_id": "r1"}),
        ("b", int(second[0], 16), int(second[1], 16), {"faas.invocation_id": "r2"}),
        ("c", int(first[0], 16), int(first[1], 16), {"faas.invocation_id": "r1"}),
        ("d", 0, 0, {}),
        ("e", 0, 0, {"faas.invocation_id": "r3"}),
    ]


AT_ONCE_PROBE = """
import json, os, sys, threading, time
os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sys.argv[1]
os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "orders"
from opentelemetry.trace import SpanKind, Status, StatusCode
from lambdawrap.companion.exporting import Pipeline, make_exporters
from lambdawrap.companion.resource import build_resource
from lambdawrap.companion.signals import Signals
from lambdawrap.shared.settings import Settings
started, start = [], threading.Thread.start
def recorded_start(thread):
    started.append(thread.name)
    if sys.argv[2] == "no-threads" and thread.name.startswith("lambdawrap-export-"):
        raise RuntimeError("can't start new thread")
    start(thread)
threading.Thread.start = recorded_start
settings = Settings.from_env()
resource = build_resource(settings, "012345678912")
pipeline = Pipeline(make_exporters(settings), resource, lambda *args: None)
signals = Signals(settings, resource, pipeline.meter_provider)
pipeline.attach(signals)
counter = pipeline.meter_provider.get_meter("probe").create_counter("probe.count")
flushes = []
for i in range(3):
    signals.spans.add(signals.builder.span(name=f"GET /orders/{i}", trace_id=1, span_id=2 + i, parent_id=None, kind=SpanKind.SERVER, attributes={"faas.trigger": "http"}, start=1, end=2, status=Status(StatusCode.UNSET)))
    signals.log_line(f"looking up order {i}", time.time_ns(), None, "r1")
    counter.add(3)
    del started[:]
    latency = pipeline.latency_s if pipeline.exports else None
    began = time.monotonic()
    flushed = pipeline.flush(wait_s=60)
    flushes.append({"flushed": flushed, "seconds": time.monotonic() - began, "threads": sorted(started), "latency_before": latency})
print(json.dumps(flushes))
"""


def test_a_slow_collector_gets_every_signal_at_once_so_the_invoke_phase_waits_one_round_trip():
    # GIVEN a span, a log line and a metric to export at each of three flushes, and a collector
    # that answers each request after 2 s (a remote one, far away, on a busy machine)
    with OtlpReceiver() as rx:
        rx.set_behaviour(delay_s=2.0)
        # WHEN the pipeline flushes three times (as at the ends of three invocations)
        flushes, _ = run_probe(AT_ONCE_PROBE, rx.endpoint, "threads")
        answered = [(r["path"], r["received_at"]) for r in rx.requests()]
        got = exported(rx)
    assert [f["flushed"] for f in flushes] == [True] * 3 and got == (3, 3, [3, 3, 3])
    # THEN each flush's three requests were in flight at once, from two threads made for it
    # (the first before any latency was known, the others knowing it): answered together,
    # where one after the other they would be 2 s apart and the flush 6 s long
    for flush, answers in zip(flushes, (dict(answered[i : i + 3]) for i in (0, 3, 6))):
        assert flush["threads"] == ["lambdawrap-export-logs", "lambdawrap-export-metrics"], flushes
        assert sorted(answers) == ["/v1/logs", "/v1/metrics", "/v1/traces"], answered
        assert max(answers.values()) - min(answers.values()) < 1.5, answered
        assert flush["seconds"] < 3.5, flushes
    assert flushes[2]["latency_before"] >= 2.0


def test_a_collector_that_answers_at_once_gets_the_signals_in_turn():
    from lambdawrap.companion.exporting import AT_ONCE_LATENCY_S

    # GIVEN a collector that answers as soon as it can (one beside the function)
    with OtlpReceiver() as rx:
        # WHEN the pipeline flushes three times
        (first, _, third), _ = run_probe(AT_ONCE_PROBE, rx.endpoint, "threads")
        paths = [r["path"] for r in rx.requests()]
        got = exported(rx)
    assert first["flushed"] is third["flushed"] is True and got == (3, 3, [3, 3, 3])
    # THEN the first flush, knowing no latency yet, made its threads; the third went in turn
    # on the export worker alone, the collector's answers coming quicker than the threads
    # would save (on a machine so loaded that they did not, it made them again)
    assert first["threads"] == ["lambdawrap-export-logs", "lambdawrap-export-metrics"], first
    if third["latency_before"] < AT_ONCE_LATENCY_S:
        assert third["threads"] == [] and paths[6:] == ["/v1/traces", "/v1/metrics", "/v1/logs"], (third, paths)
    else:
        assert third["threads"] == first["threads"], third


def test_a_flush_that_cannot_have_its_threads_sends_everything_in_turn():
    # GIVEN a process that cannot start the flush's threads (at its memory limit, say)
    with OtlpReceiver() as rx:
        # WHEN the pipeline flushes
        (first, *_), out = run_probe(AT_ONCE_PROBE, rx.endpoint, "no-threads")
        paths = [r["path"] for r in rx.requests()]
        got = exported(rx)
    # THEN the flush still exported every signal, the spans first as ever, and nothing was
    # raised or lost
    assert first["flushed"] is True and first["threads"] == ["lambdawrap-export-logs", "lambdawrap-export-metrics"]
    assert paths[:3] == ["/v1/traces", "/v1/metrics", "/v1/logs"], paths
    assert got == (3, 3, [3, 3, 3]) and "Traceback" not in out.stderr, out.stderr


IN_FLIGHT_AT_SHUTDOWN_PROBE = signals_probe({"OTEL_EXPORTER_OTLP_TIMEOUT": "3"}, """
signals.spans.add(signals.builder.span(name="GET /orders", trace_id=1, span_id=2, parent_id=None, kind=SpanKind.SERVER, attributes={}, start=1, end=2, status=Status(StatusCode.UNSET)))
for i in range(300):
    signals.log_line(f"line {i}", time.time_ns(), None, "r1")
pipeline.request_flush()  # the end of an invocation
deadline = time.monotonic() + 30
while len(signals.logs) and time.monotonic() < deadline:
    time.sleep(0.01)  # until the lines are taken for their request
in_flight = 300 - len(signals.logs)
pipeline.close(1.0)  # SHUTDOWN while the lines are on their way
at_close = dict(signals.dropped_by_reason)
while any(t.name.startswith("lambdawrap-export-") for t in threading.enumerate()) and time.monotonic() < deadline:
    time.sleep(0.05)  # until the request under way has failed
print(json.dumps({"in_flight": in_flight, "at_close": at_close, "after": dict(signals.dropped_by_reason), "buffered_after": len(signals.logs)}))
""")


@pytest.mark.parametrize("stores", [False, True], ids=["dropped by the collector", "stored by the collector"])
def test_log_lines_on_their_way_when_shutdown_comes_are_counted_once(stores):
    # GIVEN 300 log lines on their way to a collector that holds each request 2.5 s and then
    # drops the connection without an answer, or stores the lines and answers
    with OtlpReceiver() as rx:
        rx.set_behaviour(delay_s=2.5, close_connection=not stores)
        # WHEN SHUTDOWN comes meanwhile, with 1 s left
        found, _ = run_probe(IN_FLIGHT_AT_SHUTDOWN_PROBE, rx.endpoint)
        if stores:
            wait_for(lambda: len(rx.logs()) == 300, timeout=30, what=lambda: f"300 lines stored: {len(rx.logs())}")
        logs_exported = len(rx.logs())
    # THEN the lines, whose request went whole, are counted when it ends, and only then, as
    # lines the collector may hold (before: `log_shutdown_deadline`, lines that could not go,
    # where the collector stored them), as the spans of such a request are: the answer or
    # failure that comes afterwards neither counts them again nor puts them back where nobody
    # counts
    assert found["in_flight"] == 300 and logs_exported == (300 if stores else 0), found
    assert found["at_close"].get("log_unanswered") == 300 and "log_shutdown_deadline" not in found["at_close"], found
    assert found["after"] == found["at_close"] and found["buffered_after"] == 0, found


FLOOD_PROBE = LOG_PIPELINE + """for i in range(1500):
    pipeline.logs.add(f"before {i}", i, None, "r1")
export = pipeline.log_exporter.export
def export_while_the_function_prints(batch, *args, **kwargs):
    for i in range(600):  # the function goes on printing while each batch is on its way
        pipeline.logs.add(f"during {i}", i, None, "r1")
    return export(batch, *args, **kwargs)
pipeline.log_exporter.export = export_while_the_function_prints
first = pipeline.flush(wait_s=60)
waiting = len(pipeline.logs)
pipeline.log_exporter.export = export
second = pipeline.flush(wait_s=60)
pipeline.logs.report_drops()
print(json.dumps({"flushed": [first, second], "waiting_after_first": waiting, "left": len(pipeline.logs), "drops": drops}))
"""


def test_a_flush_exports_the_lines_buffered_when_it_began_not_those_printed_meanwhile():
    # GIVEN 1,500 buffered lines, and a function that prints 600 more while each batch is sent
    with OtlpReceiver() as rx:
        found, _ = run_probe(FLOOD_PROBE, rx.endpoint)
        bodies = [item["body"] for item in rx.logs()]
    # THEN the first flush sent the 1,500 lines it found (3 batches, 1,800 lines printed
    # meanwhile), not what kept coming, which waited for the next flush: a flush's cost is
    # bounded by the buffer, whatever the function prints while it runs
    assert found["flushed"] == [True, True] and found["waiting_after_first"] == 1800
    assert bodies[:1500] == [f"before {i}" for i in range(1500)]
    assert len(bodies) == 3300 and found["left"] == 0 and found["drops"] == []


# Bytes that are not UTF-8 in the environment, as Python reads them (surrogateescape).
UNDECODABLE_ENVIRONMENT_PROBE = signals_probe({"OTEL_SERVICE_NAME": "orders-\udcff", "OTEL_RESOURCE_ATTRIBUTES": "team=\udce9quipe"}, """
signals.spans.add(signals.builder.span(name="GET /orders", trace_id=1, span_id=2, parent_id=None, kind=SpanKind.SERVER, attributes={}, start=1, end=2, status=Status(StatusCode.UNSET)))
# A span of the function's own, from a tracer whose name holds one too (the OpenTelemetry bridge)
signals.spans.add(signals.builder.user_span({"name": "lookup", "trace_id": "1" * 32, "span_id": "2" * 16, "start_ns": 1, "end_ns": 2, "scope": "orders.\\udc80handler"}))
signals.log_line("looking up an order", 1, None, "r1")
pipeline.meter_provider.get_meter("probe").create_counter("probe.count").add(3)
print(json.dumps({"flushed": pipeline.flush(wait_s=60)}))
""")


def test_text_that_is_not_utf8_still_exports_every_signal():
    # GIVEN a service name and resource attributes with bytes that are not UTF-8 (the resource
    # goes with every batch, and such text would have every batch refused), and a tracer name
    # with a lone surrogate
    with OtlpReceiver() as rx:
        found, out = run_probe(UNDECODABLE_ENVIRONMENT_PROBE, rx.endpoint)
        got = exported(rx)
        names = {r["resource"].get("service.name") for r in rx.spans()}
        scopes = {r["scope"] for r in rx.spans()}
    # THEN each signal went, the bytes that could not be read shown as U+FFFD
    assert found["flushed"] is True and got == (2, 1, [3]), out.stderr
    assert names == {"orders-\ufffd"} and "orders.\ufffdhandler" in scopes, scopes


def test_attributes_otlp_cannot_carry_are_left_out_and_the_rest_encode():
    # OTLP's int_value is int64: an int outside it (from an event, or a user's span) is left out,
    # an array holding one too; every other value is kept as it is.
    from opentelemetry.exporter.otlp.proto.common._internal import _encode_attributes

    from lambdawrap.companion.span_building import clean_attributes

    given = {"over": 2**63, "under": -(2**63) - 1, "max": 2**63 - 1, "min": -(2**63), "flag": True, "big_float": 1e300, "ints": [1, 2], "one_over": [1, 2**64], "text": "t"}
    cleaned = clean_attributes(given)
    assert cleaned == {"max": 2**63 - 1, "min": -(2**63), "flag": True, "big_float": 1e300, "ints": [1, 2], "text": "t"}
    assert len(_encode_attributes(cleaned)) == len(cleaned)


SLOW_ANSWER_AT_SHUTDOWN_PROBE = signals_probe({"OTEL_EXPORTER_OTLP_TIMEOUT": "20"}, """
def span(i):
    signals.spans.add(signals.builder.span(name="GET /orders", trace_id=1, span_id=2 + i, parent_id=None, kind=SpanKind.SERVER, attributes={}, start=1, end=2, status=Status(StatusCode.UNSET)))
span(0)
pipeline.flush(wait_s=60)  # the collector's latency, as the pipeline knows it
latency = pipeline.latency_s
span(1)
pipeline.request_flush()  # the end of an invocation
deadline = time.monotonic() + 30
while not pipeline.in_flight and time.monotonic() < deadline:
    time.sleep(0.005)
sent_at = time.monotonic()
pipeline.close(float(sys.argv[2]))  # SHUTDOWN while the span is on its way
print(json.dumps({"latency": latency, "closed_after": time.monotonic() - sent_at, "dropped": dict(signals.dropped_by_reason)}))
""")


# A collector this slow, and SHUTDOWN budgets with a second or more to spare after its answer,
# on a busy machine too: with the first, the metrics' share of the time (1.2 × the latency) is
# more than the budget, and none is kept; with the second it is kept, and the answer comes in it.
SLOW_ANSWER_S = 5.0
SLOW_ANSWER_BUDGETS = ["6.0", "7.5"]


@pytest.mark.parametrize("budget_s", SLOW_ANSWER_BUDGETS)
def test_a_span_request_answered_before_the_deadline_is_waited_for_not_counted_as_dropped(budget_s):
    # GIVEN a slow collector, and SHUTDOWN with a little more time left than its answer takes
    # while a span is on its way: the metrics could not go after its answer (they would need
    # their own), with the shorter budget not even kept a share of the time, with the longer
    # kept one the answer comes within
    with OtlpReceiver() as rx:
        rx.set_behaviour(delay_s=SLOW_ANSWER_S)
        found, out = run_probe(SLOW_ANSWER_AT_SHUTDOWN_PROBE, rx.endpoint, budget_s)
        spans = len(rx.spans())
    # THEN the companion waited for that answer, within the deadline, and the span went once,
    # exported and not also counted as dropped
    assert found["latency"] >= SLOW_ANSWER_S and found["closed_after"] < float(budget_s), found
    assert spans == 2 and found["dropped"].get("shutdown_deadline", 0) == 0, (found, out.stderr[-2000:])


def test_a_span_request_unanswered_at_the_deadline_is_counted_as_the_collector_may_hold_it():
    # GIVEN a collector that stores each request and answers it 5 s later, and SHUTDOWN with
    # 2 s left while a span's request, gone whole, awaits its answer
    with OtlpReceiver() as rx:
        rx.set_behaviour(delay_s=SLOW_ANSWER_S)
        found, out = run_probe(SLOW_ANSWER_AT_SHUTDOWN_PROBE, rx.endpoint, "2.0")
        wait_for(lambda: len(rx.spans()) == 2, timeout=30, what=lambda: f"2 spans stored: {len(rx.spans())}, {found}")
    # THEN the companion left at its deadline, and the span, which the collector stored, is
    # counted as one the collector may hold (`unanswered`), not as one that could not go
    # (before: `shutdown_deadline`, and exported)
    assert found["closed_after"] < 2.0 + 1.0 and found["dropped"] == {"unanswered": 1}, (found, out.stderr[-2000:])


@pytest.mark.parametrize("budget_s", SLOW_ANSWER_BUDGETS)
def test_a_grpc_span_request_answered_before_the_deadline_is_waited_for_not_cancelled(budget_s):
    from support.grpc_receiver import GrpcTraceReceiver

    # GIVEN spans going over OTLP/gRPC to a collector that answers slowly after it stored them,
    # and SHUTDOWN with a little more time left than that while a span is on its way
    with GrpcTraceReceiver() as grpc_rx, OtlpReceiver() as rx:
        grpc_rx.delay_s = SLOW_ANSWER_S
        env = {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": grpc_rx.endpoint}
        found, out = run_probe(SLOW_ANSWER_AT_SHUTDOWN_PROBE, rx.endpoint, budget_s, env=env)
        spans = len(grpc_rx.spans)
    # THEN the request was waited for, not cancelled, and its span is exported and not also
    # counted as dropped (before: the exporter's shutdown() closed its channel, which cancelled
    # the request the collector had stored, and the span was counted as dropped too)
    assert found["latency"] >= SLOW_ANSWER_S and found["closed_after"] < float(budget_s), found
    assert spans == 2 and found["dropped"].get("shutdown_deadline", 0) == 0, (found, out.stderr[-2000:])


SHORT_SHUTDOWN_PROBE = signals_probe({}, """
for i in range(5):
    signals.spans.add(signals.builder.span(name="GET /orders", trace_id=1, span_id=2 + i, parent_id=None, kind=SpanKind.SERVER, attributes={}, start=1, end=2, status=Status(StatusCode.UNSET)))
pipeline.close(float(sys.argv[2]))  # SHUTDOWN with little time left
print(json.dumps({"dropped": dict(signals.dropped_by_reason)}))
""")


@pytest.mark.parametrize("budget_s", ["0.25", "0.6"])
def test_a_shutdown_shorter_than_the_metrics_share_still_sends_the_spans(budget_s):
    # GIVEN 5 spans buffered and a collector that answers at once, and SHUTDOWN with 0.25 s left
    # (less than the 0.3 s the metrics are kept after the spans) or 0.6 s
    with OtlpReceiver() as rx:
        found, out = run_probe(SHORT_SHUTDOWN_PROBE, rx.endpoint, budget_s)
        spans = len(rx.spans())
    # THEN the spans go, none counted as dropped (before, with 0.25 s: close() gave the spans the
    # whole budget, but the worker still kept the metrics' share and started no span request:
    # all 5 counted shutdown_deadline, with the collector answering at once)
    assert spans == 5 and found["dropped"].get("shutdown_deadline", 0) == 0, (found, out.stderr[-2000:])


SLOW_TRACES_AT_SHUTDOWN_PROBE = signals_probe({}, """
signals.spans.add(order_span(0))
pipeline.flush(wait_s=30)  # answered in 2 s: the spans' collector is known slow
for i in (1, 2, 3):
    signals.spans.add(order_span(i))
pipeline.close(1.5)  # SHUTDOWN with 1.5 s left
print(json.dumps({"dropped": dict(signals.dropped_by_reason), "latency": pipeline.latency_s}))
""")


def test_a_slow_traces_collector_does_not_keep_the_drop_counts_from_a_quick_metrics_one():
    # GIVEN the spans' own collector answering each request after 2 s, the metrics' (and the
    # logs') answering at once
    with OtlpReceiver() as slow, OtlpReceiver() as quick:
        slow.set_behaviour(delay_s=2.0)
        # WHEN SHUTDOWN comes with 1.5 s left and three spans still to send
        found, out = run_probe(SLOW_TRACES_AT_SHUTDOWN_PROBE, quick.endpoint, env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": slow.endpoint + "/v1/traces"})
        dropped = {p["attributes"]["reason"]: p["value"] for p in quick.metrics() if p["name"] == "lambdawrap.dropped"}
    # THEN the spans that could not go in time are counted, and the count reaches the metrics'
    # collector (before: the spans' latency kept the metrics from being sent at all, and the
    # count was only carried over, to an environment that may never come)
    assert found["latency"] >= 2.0 and found["dropped"].get("shutdown_deadline", 0) >= 1, (found, out.stderr[-2000:])
    assert dropped.get("shutdown_deadline", 0) >= 1, (dropped, found)


LARGE_SPANS_HELD_PROBE = signals_probe({}, """
# The collector unreachable for a while: nothing is flushed while 100 spans of 300,000
# characters each (an exception's message quoting a payload, and its stack) come
for i in range(100):
    text = f"{i}: " + "x" * 150_000
    signals.spans.add(signals.builder.span(name="GET /orders", trace_id=1, span_id=2 + i, parent_id=None, kind=SpanKind.SERVER, attributes={"exception.message": text, "exception.stacktrace": text}, start=1, end=2, status=Status(StatusCode.ERROR)))
held = {"spans": len(signals.spans), "dropped": dict(signals.dropped_by_reason)}
flushed = pipeline.flush(wait_s=60)  # the collector back
print(json.dumps({"held": held, "flushed": flushed, "dropped": dict(signals.dropped_by_reason)}))
""")


def test_the_span_buffer_holds_a_bounded_amount_of_text_and_counts_the_rest():
    # GIVEN spans of 300,000 characters each arriving while nothing can be exported
    with OtlpReceiver() as rx:
        found, out = run_probe(LARGE_SPANS_HELD_PROBE, rx.endpoint)
        exported_spans = len(rx.spans())
    held = found["held"]
    # THEN the buffer held at most its 16 Mi characters (the companion's memory is the
    # function's), the others were counted as dropped at once, and what it held was exported
    # once the collector answered: each span exported or counted, once
    assert 0 < held["spans"] * 300_000 <= 16 * 1024 * 1024, held
    assert held["dropped"] == {"buffer_full": 100 - held["spans"]}, held
    assert found["flushed"] and exported_spans == held["spans"] and found["dropped"] == held["dropped"], (found, exported_spans, out.stderr[-2000:])


def test_a_user_span_s_text_in_maps_and_nested_arrays_counts_against_the_buffer_s_bound():
    from opentelemetry.sdk.metrics import MeterProvider

    from lambdawrap.companion.resource import build_resource
    from lambdawrap.companion.signals import Signals
    from lambdawrap.companion.span_building import text_size
    from lambdawrap.shared.settings import Settings

    settings = Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "orders", "AWS_REGION": "eu-west-1"})
    resource = build_resource(settings, None)
    builder = Signals(settings, resource, MeterProvider(resource=resource)).builder
    body = "x" * 200_000
    # GIVEN spans of the function's own carrying 200,000 characters in a map, in an array of
    # arrays, and in a map on an event (AnyValue attributes, as the API lets user spans have)
    for attributes, events in (({"req": {"body": body}}, []), ({"rows": [[body]]}, []), ({}, [["received", {"req": {"body": body}}, 1]])):
        span = builder.user_span({"name": "lookup", "trace_id": "1" * 32, "span_id": "2" * 16, "start_ns": 1, "end_ns": 2, "attributes": attributes, "events": events, "scope": "orders"})
        # THEN each counts its text against the 16 Mi characters the buffer holds (before: 8
        # characters a map or nested array: 10,000 such spans, 1.9 GiB, were "140,000")
        assert text_size(span) >= 200_000, (attributes, events, text_size(span))


LONG_SPANS_PROBE = signals_probe({}, """
for i in range(40):
    text = f"{i}: " + "x" * 150_000
    signals.spans.add(signals.builder.span(name="GET /orders", trace_id=1, span_id=2 + i, parent_id=None, kind=SpanKind.SERVER, attributes={"exception.message": text, "exception.stacktrace": text}, start=1, end=2, status=Status(StatusCode.ERROR)))
print(json.dumps({"flushed": pipeline.flush(wait_s=60), "left": len(signals.spans), "dropped": dict(signals.dropped_by_reason)}))
""")


def test_a_request_carries_a_bounded_amount_of_span_text():
    # GIVEN 40 spans of 300,000 characters each buffered (12 M characters)
    with OtlpReceiver() as rx:
        # WHEN they are flushed
        found, out = run_probe(LONG_SPANS_PROBE, rx.endpoint)
        sizes = [r["items"] for r in rx.requests() if r["path"] == "/v1/traces"]
    # THEN they went in requests of at most 2 Mi characters (6 such spans), not in one of
    # 12 MB: encoding a request holds about twice its text again, and collectors refuse large
    # ones (the OpenTelemetry Collector's gRPC limit is 4 MiB)
    assert found["flushed"] and found["left"] == 0 and found["dropped"] == {}, (found, out.stderr[-2000:])
    assert sum(sizes) == 40 and max(sizes) <= 6, sizes


LONG_VALUES_PROBE = signals_probe({}, """
import gc, tracemalloc
def flush_of(count, first_id, long):
    for i in range(count):
        # Each its own exception message and stack, 100 KB long, as a function raising errors
        # that quote the data they failed on has; the trigger attribute repeats
        text = f"{first_id + i}: " + "x" * 100_000 if long else "short"
        signals.spans.add(signals.builder.span(name="GET /orders", trace_id=1, span_id=first_id + i, parent_id=None, kind=SpanKind.SERVER, attributes={"faas.trigger": "http", "exception.message": text, "exception.stacktrace": "Traceback: " + text}, start=1, end=2, status=Status(StatusCode.ERROR)))
    return pipeline.flush(wait_s=60)
flush_of(1, 2, False)  # the pipeline warm
gc.collect()
tracemalloc.start()
flushed = [flush_of(10, 100 + 10 * n, True) for n in range(8)]
gc.collect()
print(json.dumps({"flushed": flushed, "retained": tracemalloc.get_traced_memory()[0], "left": len(signals.spans)}))
""")


def test_long_attribute_values_are_not_kept_after_their_export():
    # GIVEN spans whose long attribute values (100 KB each) never repeat
    with OtlpReceiver() as rx:
        # WHEN 80 of them are exported
        found, out = run_probe(LONG_VALUES_PROBE, rx.endpoint)
        exported_spans = len(rx.spans())
    # THEN all went, and the companion (whose memory is the function's) holds none of their
    # text afterwards: the encoder's cache keeps short values only
    assert all(found["flushed"]) and found["left"] == 0 and exported_spans == 81, (found, out.stderr[-2000:])
    assert found["retained"] < 2_000_000, found


OVERSTATED_REJECTIONS_PROBE = signals_probe({}, """
for i in range(5):
    signals.spans.add(signals.builder.span(name="GET /orders", trace_id=1, span_id=2 + i, parent_id=None, kind=SpanKind.SERVER, attributes={}, start=1, end=2, status=Status(StatusCode.UNSET)))
for i in range(3):
    signals.logs.add(f"line {i}", i, None, "r1")
flushed = pipeline.flush(wait_s=60)
print(json.dumps({"flushed": flushed, "dropped": dict(signals.dropped_by_reason)}))
""")


class AnsweringCollector:
    """An OTLP/HTTP collector on loopback whose answer to each POST is `answer(path)`: (status,
    body), the body sent as protobuf; each request is read whole first."""

    def __init__(self, answer, chunk_bytes: int = 0) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, body = answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                if not chunk_bytes:
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                # As Go's net/http sends a body it was given no length for (the OpenTelemetry
                # Collector's answers): a chunk for each write, whole (one write) or in pieces
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for at in range(0, len(body), chunk_bytes):
                    piece = body[at : at + chunk_bytes]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def __enter__(self) -> "AnsweringCollector":
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class OverstatingCollector(AnsweringCollector):
    """Answers every span and log request 200 with an OTLP partial success rejecting 100 items,
    whatever the request held; metrics are taken as they are."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        traces = trace_service_pb2.ExportTraceServiceResponse()
        traces.partial_success.rejected_spans = 100
        logs = logs_service_pb2.ExportLogsServiceResponse()
        logs.partial_success.rejected_log_records = 100
        answers = {"/v1/traces": traces.SerializeToString(), "/v1/logs": logs.SerializeToString()}
        super().__init__(lambda path: (200, answers.get(path, b"")))


def test_a_partial_success_counts_no_more_items_than_its_request_held():
    # GIVEN a collector whose partial successes say 100 items were rejected, whatever the
    # request held (a collector counting wrong, or a whole batch's count in each part)
    with OverstatingCollector() as collector:
        # WHEN 5 spans and 3 log lines go to it
        found, out = run_probe(OVERSTATED_REJECTIONS_PROBE, collector.endpoint)
    # THEN each is counted as rejected once: no drops of items that never were
    assert found["flushed"], out.stderr[-2000:]
    assert found["dropped"] == {"rejected_by_collector": 5, "log_rejected_by_collector": 3}, (found, out.stderr[-2000:])


class LongPartialSuccessCollector(AnsweringCollector):
    """Answers every span and log request 200 with an OTLP partial success rejecting 4 spans or
    2 log records, whose message (a reason for each rejected item) runs to 200 KB."""

    def __init__(self, chunk_bytes: int) -> None:
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        reason = "item over the tenant's attribute quota; " * 5000
        traces = trace_service_pb2.ExportTraceServiceResponse()
        traces.partial_success.rejected_spans = 4
        traces.partial_success.error_message = reason
        logs = logs_service_pb2.ExportLogsServiceResponse()
        logs.partial_success.rejected_log_records = 2
        logs.partial_success.error_message = reason
        answers = {"/v1/traces": traces.SerializeToString(), "/v1/logs": logs.SerializeToString()}
        super().__init__(lambda path: (200, answers.get(path, b"")), chunk_bytes=chunk_bytes)


@pytest.mark.parametrize("chunk_bytes", [0, 2048, 1 << 20], ids=["with its length", "in small chunks", "in one chunk"])
def test_a_partial_success_too_long_to_read_whole_still_counts_what_it_rejected(chunk_bytes):
    # GIVEN a collector whose partial successes are 200 KB long, past the 64 KiB of an answer
    # the companion reads, sent with its length or chunked (as the OpenTelemetry Collector sends
    # one: its one write is one chunk)
    with LongPartialSuccessCollector(chunk_bytes) as collector:
        # WHEN 5 spans and 3 log lines go to it
        found, out = run_probe(OVERSTATED_REJECTIONS_PROBE, collector.endpoint)
    # THEN the items it rejected are counted, from the answer's first bytes (before: the cut
    # answer was read as empty, and they were neither exported nor counted; in one chunk, still
    # so until the chunk under way was read too)
    assert found["flushed"], out.stderr[-2000:]
    assert found["dropped"] == {"rejected_by_collector": 4, "log_rejected_by_collector": 2}, (found, out.stderr[-2000:])
    assert "the collector rejected 4 spans of a request (its answer, too long to read whole, was cut)" in out.stderr, out.stderr[-2000:]


SHRINK_AND_GROW_PROBE = signals_probe({}, """
def flush_of(count, first_id):
    for i in range(count):
        signals.spans.add(signals.builder.span(name="GET /orders", trace_id=1, span_id=first_id + i, parent_id=None, kind=SpanKind.SERVER, attributes={}, start=1, end=2, status=Status(StatusCode.UNSET)))
    return pipeline.flush(wait_s=60)
first = flush_of(30, 2)
print("first flush done", flush=True)
sys.stdin.readline()  # the test reads the requests meanwhile
second = flush_of(30, 100)
print("second flush done", flush=True)
sys.stdin.readline()  # the test turns the collector's limit off meanwhile
third = flush_of(200, 200)
print(json.dumps({"flushed": [first, second, third], "dropped": dict(signals.dropped_by_reason)}))
""")


def test_requests_refused_as_too_large_go_smaller_then_grow_back():
    # GIVEN a collector that answers 413 to span requests of more than 8 spans, 30 buffered
    with OtlpReceiver() as rx:
        rx.set_behaviour(max_spans=8)
        probe = subprocess.Popen([sys.executable, "-c", SHRINK_AND_GROW_PROBE, rx.endpoint], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def span_requests() -> list:
            return [(r["items"], r["status"]) for r in rx.requests() if r["path"] == "/v1/traces"]

        try:
            assert probe.stdout.readline().strip() == "first flush done", probe.stderr.read()[-2000:]
            first = span_requests()
            # WHEN 30 more come, the limit still there
            probe.stdin.write("go\n")
            probe.stdin.flush()
            assert probe.stdout.readline().strip() == "second flush done", probe.stderr.read()[-2000:]
            second = span_requests()[len(first) :]
            # ... then the limit is gone, and 200 spans come
            rx.reset_behaviour()
            out, err = probe.communicate("go\n", timeout=120)
        finally:
            probe.kill()
        found = json.loads(out.strip().splitlines()[-1])
        third = span_requests()[len(first) + len(second) :]
    # THEN the first flush sent them in requests the collector takes, after two it refused
    # (30 spans, then 15), none dropped
    assert found["flushed"] == [True, True, True] and found["dropped"] == {}, (found, err[-2000:])
    assert [status for _, status in first] == [413, 413] + [200] * 5 and sum(items for items, _ in first) == 30, first
    # ... the next no request it refuses (before, requests grew back after each one taken and
    # every other one was refused) ...
    assert sum(items for items, _ in second) == 30 and all(status == 200 for _, status in second), second
    # ... and once the limit was gone, the requests grew back: 200 spans in fewer requests
    # than at that size (29)
    assert sum(items for items, _ in third) == 200 and all(status == 200 for _, status in third), third
    assert len(third) <= 12 and max(items for items, _ in third) > 8, third


HOLD_OFF_PROBE = signals_probe({}, """
def flush_of(first_id):
    for i in range(5):
        signals.spans.add(signals.builder.span(name="GET /orders", trace_id=1, span_id=first_id + i, parent_id=None, kind=SpanKind.SERVER, attributes={}, start=1, end=2, status=Status(StatusCode.UNSET)))
    return pipeline.flush(wait_s=60)
flushed = [flush_of(2 + 10 * n) for n in range(4)]
print(json.dumps({"flushed": flushed, "buffered": len(signals.spans)}), flush=True)
sys.stdin.readline()  # the test makes the collector take requests again meanwhile
pipeline.close(10.0)
print(json.dumps({"buffered": len(signals.spans), "dropped": dict(signals.dropped_by_reason)}), flush=True)
""")


@pytest.mark.parametrize("retry_after", ["30", "30.5", "Fri, 31 Dec 2100 23:59:59 GMT"])
def test_a_collector_asking_to_retry_later_is_not_asked_again_until_then(retry_after):
    # GIVEN a collector that answers every export 429 with a Retry-After longer than the
    # exporter's timeout (in seconds, or as a date, held for at most a minute)
    with OtlpReceiver() as rx:
        rx.set_behaviour(status=429, retry_after=retry_after)
        probe = subprocess.Popen([sys.executable, "-c", HOLD_OFF_PROBE, rx.endpoint], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # WHEN four flushes come, 5 spans before each
            first = json.loads(probe.stdout.readline() or "null")
            asked = [(r["path"], r["status"]) for r in rx.requests()]
            # ...and SHUTDOWN, the collector taking requests again
            rx.reset_behaviour()
            out, err = probe.communicate("go\n", timeout=120)
        finally:
            probe.kill()
        last = json.loads(out.strip().splitlines()[-1])
        spans = len(rx.spans())
    # THEN the collector was asked once per signal, at the first flush: the later flushes kept
    # the spans buffered, none dropped
    assert first == {"flushed": [True] * 4, "buffered": 20}, (first, err[-2000:])
    assert asked.count(("/v1/traces", 429)) == 1 and asked.count(("/v1/metrics", 429)) <= 1 and len(asked) <= 2, asked
    # ...and SHUTDOWN, the last chance, sent them all
    assert last == {"buffered": 0, "dropped": {}} and spans == 20, (last, spans, err[-2000:])


def test_a_hold_off_ends_by_the_wall_clock_while_the_monotonic_one_stands_still(monkeypatch):
    from types import SimpleNamespace

    from lambdawrap.companion import collector_answers

    # GIVEN clocks the test moves: Lambda's monotonic clock is reported to stand still while
    # the environment is frozen (lambda-platform-spec §10), which no freezer here reproduces
    clock = {"wall": 1_700_000_000.0, "monotonic": 500.0}
    monkeypatch.setattr(collector_answers, "time", SimpleNamespace(time=lambda: clock["wall"], monotonic=lambda: clock["monotonic"]))
    answers = collector_answers.Answers()

    def after(wall: float, monotonic: float) -> bool:
        clock["wall"] += wall
        clock["monotonic"] += monotonic
        return answers.held_off()

    # WHEN a collector asks for 30 s, and 31 s pass frozen: the wall clock on, the monotonic not
    answers.hold_off(30)
    # THEN the hold-off ended (before: it lasted 30 s of running time, hours for a sparse function)
    assert answers.held_off() and after(10, 10) and not after(21, 0)
    # ... and one the wall clock was set back across ends when the monotonic clock passes it
    answers.hold_off(30)
    assert after(-3600, 20) and not after(0, 11)
    # ... and a longer one holds for a minute at most, by either clock; none is held after 0
    answers.hold_off(3600)
    assert after(59, 59) and not after(2, 2)
    answers.hold_off(30)
    answers.hold_off(0)
    assert not answers.held_off()


EARLY_ANSWER_PROBE = signals_probe({"OTEL_EXPORTER_OTLP_TIMEOUT": "5"}, """
for i in range(512):  # 10 MB, more than the sockets hold: the collector's close breaks the send
    signals.spans.add(signals.builder.span(name="GET /orders", trace_id=1, span_id=2 + i, parent_id=None, kind=SpanKind.SERVER, attributes={"padding": "p" * 20000}, start=1, end=2, status=Status(StatusCode.UNSET)))
flushed = pipeline.flush(wait_s=60)
print(json.dumps({"flushed": flushed, "left": len(signals.spans), "dropped": dict(signals.dropped_by_reason)}))
""")


class EarlyRefusingCollector:
    """Reads each request's head; one whose body is over `limit` bytes is answered 413 at once
    and the connection closed, its body unread (as Go's net/http and nginx may do); the others
    are read and answered 200, counting the spans received."""

    def __init__(self, limit: int) -> None:
        import socket

        self.limit = limit
        self.spans = 0
        self.refused = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        pending = b""
        with conn:
            try:
                while True:
                    request = read_head(conn, pending)
                    if request is None:
                        return
                    head, pending = request
                    length = content_length(head)
                    if length > self.limit:
                        self.refused += 1
                        conn.sendall(b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        return
                    read = read_body(conn, pending, length)
                    if read is None:
                        return
                    body, pending = read
                    if head.split(b" ")[1].endswith(b"/v1/traces"):
                        request = trace_service_pb2.ExportTraceServiceRequest()
                        request.ParseFromString(body)
                        self.spans += sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                return

    def __enter__(self) -> "EarlyRefusingCollector":
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()


def test_a_413_the_collector_answers_before_reading_the_request_is_read_and_obeyed():
    # GIVEN a collector that answers 413 to a request over 200 KB as soon as it has its head,
    # and closes without reading the body, and 10 MB of spans to send
    with EarlyRefusingCollector(limit=200_000) as collector:
        # WHEN they are flushed
        found, out = run_probe(EARLY_ANSWER_PROBE, collector.endpoint)
        received, refused = collector.spans, collector.refused
    # THEN the 413 was read despite the broken send (as requests reads it), and the spans went
    # in requests it takes: none left behind, none dropped
    assert found["flushed"] and found["left"] == 0 and found["dropped"] == {}, (found, out.stderr[-2000:])
    assert received == 512 and refused > 0, (received, refused)


GRPC_FLUSHES_PROBE = signals_probe({}, """
# Over OTLP/gRPC (the traces endpoint in the environment): flushes of the span counts given on
# stdin, one line each, the spans' ids following on; each line answered with the flush's result.
next_id = 2
for line in sys.stdin:
    for _ in range(int(line)):
        signals.spans.add(signals.builder.span(name="GET /orders", trace_id=1, span_id=next_id, parent_id=None, kind=SpanKind.SERVER, attributes={"padding": "p" * 1000}, start=1, end=2, status=Status(StatusCode.UNSET)))
        next_id += 1
    started = time.monotonic()
    print(json.dumps({"flushed": pipeline.flush(wait_s=120), "took_s": time.monotonic() - started, "dropped": dict(signals.dropped_by_reason)}), flush=True)
""")


class GrpcFlushes:
    """The probe above against a gRPC trace receiver (metrics go to an HTTP one), or with
    `grpc_rx` None, against the HTTP one alone."""

    def __init__(self, grpc_rx, http_rx, **more_env: str) -> None:
        env = dict(os.environ, **{"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "30", **more_env})
        if grpc_rx is not None:
            env.update(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="grpc", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=grpc_rx.endpoint)
        self._probe = subprocess.Popen([sys.executable, "-c", GRPC_FLUSHES_PROBE, http_rx.endpoint], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def flush(self, spans: int) -> dict:
        self._probe.stdin.write(f"{spans}\n")
        self._probe.stdin.flush()
        line = self._probe.stdout.readline()
        assert line, self.stderr()
        return json.loads(line)

    def stderr(self) -> str:
        self._probe.kill()
        return self._probe.communicate(timeout=30)[1][-3000:]


@pytest.fixture
def grpc_flushes():
    from support.grpc_receiver import GrpcTraceReceiver

    made = []

    def start(**receiver_args):
        grpc_rx = GrpcTraceReceiver(**receiver_args).__enter__()
        http_rx = OtlpReceiver().__enter__()
        made.append((grpc_rx, http_rx))
        probe = GrpcFlushes(grpc_rx, http_rx)
        made.append(probe)
        return grpc_rx, probe

    yield start
    for item in reversed(made):
        if isinstance(item, GrpcFlushes):
            item.stderr()
        else:
            for server in item:
                server.__exit__(None, None, None)


@pytest.mark.parametrize("code", ["INVALID_ARGUMENT", "UNAUTHENTICATED", "UNIMPLEMENTED", "RESOURCE_EXHAUSTED"])
def test_a_grpc_request_refused_as_such_is_counted_and_not_sent_again(grpc_flushes, code):
    import grpc

    # GIVEN a gRPC collector that refuses the next request with a code OTLP does not retry
    grpc_rx, probe = grpc_flushes()
    grpc_rx.refuse(1, getattr(grpc.StatusCode, code))
    # WHEN 5 spans are flushed, then 3 more
    first, second = probe.flush(5), probe.flush(3)
    # THEN the 5 are counted as rejected by the collector, never sent again, and the 3 go
    # (before, the 5 went back to the buffer and came first at every flush)
    assert first["dropped"] == {"rejected_by_collector": 5} and second["dropped"] == {"rejected_by_collector": 5}, (first, second)
    assert [(r["spans"], r["refused"]) for r in grpc_rx.requests] == [(5, True), (3, False)]
    assert len(grpc_rx.spans) == 3
    # RESOURCE_EXHAUSTED without RetryInfo included: not retried by the exporter either (it
    # would, with backoff, for most of the 30 s timeout)
    assert first["took_s"] < 10, first


def test_a_grpc_request_refused_with_a_retry_advised_is_sent_again(grpc_flushes):
    import grpc

    # GIVEN a gRPC collector that refuses the next request as RESOURCE_EXHAUSTED, with a
    # RetryInfo of 0.2 s: OTLP's "retry then"
    grpc_rx, probe = grpc_flushes()
    grpc_rx.refuse(1, grpc.StatusCode.RESOURCE_EXHAUSTED, retry_after_s=0.2)
    found = probe.flush(4)
    # THEN the exporter retried, and the spans went, none counted as dropped
    assert found["flushed"] is True and found["dropped"] == {}, found
    assert [(r["spans"], r["refused"]) for r in grpc_rx.requests] == [(4, True), (4, False)]


def test_a_grpc_collector_advising_a_retry_beyond_the_timeout_is_not_asked_again_until_then(grpc_flushes):
    import grpc

    # GIVEN a gRPC collector that refuses the next request as RESOURCE_EXHAUSTED with a RetryInfo
    # of 45 s, longer than the exporter's 30 s timeout: it gives up at once
    grpc_rx, probe = grpc_flushes()
    grpc_rx.refuse(1, grpc.StatusCode.RESOURCE_EXHAUSTED, retry_after_s=45)
    first = probe.flush(4)
    # WHEN the next flushes come within those 45 s
    later = [probe.flush(1), probe.flush(1)]
    # THEN they leave the spans buffered, not sent to the collector again nor dropped
    assert first["dropped"] == {} and all(f["dropped"] == {} for f in later), (first, later)
    assert [(r["spans"], r["refused"]) for r in grpc_rx.requests] == [(4, True)], grpc_rx.requests
    assert first["took_s"] < 10, first


def test_a_retry_time_a_grpc_collector_gives_with_a_refusal_holds_no_later_span_back(grpc_flushes):
    import grpc

    # GIVEN a gRPC collector that refuses the next request as INVALID_ARGUMENT (OTLP: not
    # retried) with a RetryInfo of 45 s
    grpc_rx, probe = grpc_flushes()
    grpc_rx.refuse(1, grpc.StatusCode.INVALID_ARGUMENT, retry_after_s=45)
    # WHEN 5 spans are flushed, then 3 more
    first, second = probe.flush(5), probe.flush(3)
    # THEN the 5 are counted as rejected, and the 3 go at once (before: they waited the 45 s)
    assert second["dropped"] == {"rejected_by_collector": 5}, (first, second)
    assert [(r["spans"], r["refused"]) for r in grpc_rx.requests] == [(5, True), (3, False)], grpc_rx.requests


@pytest.mark.parametrize("code", ["INTERNAL", "UNKNOWN"])
def test_a_batch_a_grpc_collector_fails_on_twice_is_counted_not_sent_at_every_flush(grpc_flushes, code):
    import grpc

    # GIVEN a gRPC collector failing with an error of its own on the next two requests (one
    # failing on an item of the batch: a backend it fans out to refuses it)
    grpc_rx, probe = grpc_flushes()
    grpc_rx.refuse(2, getattr(grpc.StatusCode, code))
    # WHEN 5 spans are flushed, then 1, then 3 more
    first, second, third = probe.flush(5), probe.flush(1), probe.flush(3)
    # THEN the batch went again once (a blip), alone, then was counted as rejected, and the span
    # that came meanwhile went after it, then the 3 (before, it came first at every flush: every
    # later span was held back behind it; then the span that came meanwhile went with it, and
    # was counted having gone once)
    assert first["dropped"] == {} and second["dropped"] == {"rejected_by_collector": 5} == third["dropped"], (first, second, third)
    assert [(r["spans"], r["refused"]) for r in grpc_rx.requests] == [(5, True), (5, True), (1, False), (3, False)], grpc_rx.requests


def test_a_batch_an_http_collector_answers_500_twice_is_counted_not_sent_at_every_flush():
    # GIVEN an OTLP/HTTP collector answering 500 (OTLP: not to be retried) while two flushes go
    with OtlpReceiver() as rx:
        probe = GrpcFlushes(None, rx)
        try:
            rx.set_behaviour(status=500)
            first, second = probe.flush(5), probe.flush(1)
            rx.set_behaviour()
            # WHEN it takes requests again and 3 more spans are flushed
            third = probe.flush(3)
        finally:
            probe.stderr()
        statuses = [(r["status"], r.get("spans")) for r in rx.requests() if r["path"].endswith("/v1/traces")]
        spans = len(rx.spans())
    # THEN the batch went again once, alone, then was counted as rejected; the span that came
    # meanwhile failed once, and went once the collector took requests again, then the 3
    # (before: it went with the batch, and was counted with it having gone once)
    assert first["dropped"] == {} and second["dropped"] == {"rejected_by_collector": 5} == third["dropped"], (first, second, third)
    assert [status for status, _ in statuses] == [500, 500, 500, 200, 200] and spans == 4, statuses


def test_a_batch_failed_by_a_server_error_then_left_unanswered_is_counted_not_sent_at_every_flush():
    # GIVEN an OTLP/HTTP collector that fails a request of 5 spans with 500
    with OtlpReceiver() as rx:
        probe = GrpcFlushes(None, rx, OTEL_EXPORTER_OTLP_TRACES_TIMEOUT="1", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")
        try:
            rx.set_behaviour(status=500)
            first = probe.flush(5)
            # WHEN it takes the next request whole and answers after the exporter's timeout
            rx.set_behaviour(delay_s=1.5, remaining=1)
            second = probe.flush(1)
            third = probe.flush(0)
        finally:
            probe.stderr()
        sent = [r["status"] for r in rx.requests() if r["path"].endswith("/v1/traces")]
    # THEN the 5, failed twice in a row, are counted and not sent again, and the 1 goes (before:
    # the two failures reset each other's count, and the 5 went at every flush)
    assert first["dropped"] == {} and second["dropped"] == {"unanswered": 5} == third["dropped"], (first, second, third, sent)


def test_a_batch_refused_after_a_server_error_keeps_the_request_size_a_413_set():
    # GIVEN a collector refusing requests of more than 4 spans with 413, which made the requests
    # smaller
    with OtlpReceiver() as rx:
        probe = GrpcFlushes(None, rx)
        try:
            rx.set_behaviour(max_spans=4)
            probe.flush(8)
            # WHEN it then fails a batch with 500 twice (counted), and takes requests again
            rx.set_behaviour(status=500)
            probe.flush(3)
            probe.flush(0)
            rx.set_behaviour(max_spans=4)
            before = len(rx.requests())
            last = probe.flush(6)
        finally:
            probe.stderr()
        statuses = [r["status"] for r in rx.requests()[before:] if r["path"].endswith("/v1/traces")]
        spans = len(rx.spans())
    # THEN the requests stay within the 413's limit (before: the refusal made them full size
    # again, and the next was refused as too large)
    assert 413 not in statuses and spans == 8 + 6, statuses
    assert last["dropped"] == {"rejected_by_collector": 3}, last


@pytest.mark.parametrize("status, permanent", [(301, True), (308, True), (302, False), (307, False)])
def test_a_batch_the_collector_redirects_is_counted_not_sent_at_every_flush(status, permanent):
    # GIVEN an OTLP/HTTP collector answering a redirect (a load balancer moving http to https;
    # OTLP exporters follow none) while two flushes go
    with OtlpReceiver() as rx:
        probe = GrpcFlushes(None, rx)
        try:
            rx.set_behaviour(status=status)
            first, second = probe.flush(5), probe.flush(1)
            rx.set_behaviour()
            # WHEN it takes requests again and 3 more spans are flushed
            third = probe.flush(3)
        finally:
            stderr = probe.stderr()
        statuses = [r["status"] for r in rx.requests() if r["path"].endswith("/v1/traces")]
        spans = len(rx.spans())
    # THEN a permanent redirect's batch is counted as rejected at once, and so is the next span's;
    # a temporary one's is sent again once, alone, then counted, and the span that came meanwhile
    # goes once the collector takes requests again (before, the batch came first at every flush,
    # held back every later span, and ended counted as buffer_full or shutdown_deadline)
    assert first["dropped"] == ({"rejected_by_collector": 5} if permanent else {}), (first, second, third)
    assert second["dropped"] == {"rejected_by_collector": 6 if permanent else 5} == third["dropped"], (first, second, third)
    assert statuses == ([status, status, 200] if permanent else [status, status, status, 200, 200]) and spans == (3 if permanent else 4), statuses
    # ... and the refusal is logged once
    assert stderr.count(f"refused a request of 5 spans with HTTP {status}") == 1, stderr


def test_a_metric_batch_the_collector_refuses_as_bad_holds_back_no_later_one_and_loses_no_count():
    import grpc

    from support.grpc_receiver import GrpcTraceReceiver

    # GIVEN spans over gRPC and metrics over OTLP/HTTP, to a collector that refuses the first two
    # metric requests as bad (400: OTLP says not to send them again)
    with GrpcTraceReceiver() as grpc_rx, OtlpReceiver() as rx:
        probe = GrpcFlushes(grpc_rx, rx)
        try:
            rx.set_behaviour(status=400, remaining=2)
            # WHEN four flushes go, a span in each: the gRPC collector refuses the first three,
            # and each refusal is counted (a metric, sent with the next flush's)
            grpc_rx.refuse(3, grpc.StatusCode.INVALID_ARGUMENT)
            flushes = [probe.flush(1) for _ in range(4)]
        finally:
            stderr = probe.stderr()
        metric_statuses = [r["status"] for r in rx.requests() if r["path"].endswith("/v1/metrics")]
        rejected = [p["value"] for p in rx.metrics() if p["name"] == "lambdawrap.dropped" and p["attributes"].get("reason") == "rejected_by_collector"]
    # THEN each flush sent a batch of its own (before: the first refused batch went again at every
    # flush, and none after it went while it was refused) ...
    assert metric_statuses == [400, 400, 200, 200], metric_statuses
    assert flushes[-1]["dropped"] == {"rejected_by_collector": 3}, flushes
    # ... and the counts the refused batches held went in the ones taken: none lost, none twice
    assert sum(rejected) == 3, rejected
    assert "refused a request of 1 metrics with HTTP 400" in stderr, stderr


# A pipeline whose metrics time out after 1 s, its drops listed, and a counter to add to.
METRICS_PROBE = """
import json, os, sys, threading
os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sys.argv[1]
os.environ["OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"] = "1"
os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "orders"
from lambdawrap.companion.exporting import Pipeline, make_exporters
from lambdawrap.companion.resource import build_resource
from lambdawrap.shared.settings import Settings
settings = Settings.from_env()
drops = []
pipeline = Pipeline(make_exporters(settings), build_resource(settings, "012345678912"), lambda reason, count=1: drops.append(reason))
counter = pipeline.meter_provider.get_meter("probe").create_counter("probe.count")
""" + PROBE_HELPERS + """
def flush_and_run_on():
    pipeline.flush(wait_s=30)
    run_on()  # a batch whose collector failed goes on a thread no flush waits for
"""


SLOW_METRICS_PROBE = METRICS_PROBE + """
counter.add(3)
for _ in range(5):
    flush_and_run_on()
import collections
from lambdawrap.companion.signals import counter_key
# What an environment ending now would carry over of the 3 counted
carried = pipeline.unexported_counts(collections.Counter({counter_key("probe.count", {}): 3}))
print(json.dumps({"drops": drops, "carried": carried}))
"""


def test_a_metric_batch_a_slow_collector_stores_but_never_answers_in_time_is_not_sent_at_every_flush():
    # GIVEN a collector that stores each request but answers only after 1.5 s, past the
    # metrics' 1 s timeout, and a delta counter of 3
    with OtlpReceiver() as rx:
        rx.set_behaviour(delay_s=1.5)
        # WHEN five flushes go
        found, out = run_probe(SLOW_METRICS_PROBE, rx.endpoint)
        stored = lambda: [p["value"] for p in rx.metrics() if p["name"] == "probe.count"]  # noqa: E731
        wait_for(lambda: len(rx.requests()) >= 2 and len(stored()) >= 2, timeout=30, what="the requests stored late")
        time.sleep(2)  # any stored later still: each takes its 1.5 s
        values = stored()
    # THEN the batch went twice (a blip, then sent again once), then was dropped and counted,
    # not sent at every flush (before: the collector stored it at each, and counted 3 five times)
    assert values == [3, 3] and found["drops"] == ["export_failed"], (values, found, out.stderr[-2000:])
    # ... nor carried over to the next environment: the collector may hold it
    assert found["carried"] == [], found
    assert out.stderr.count("a metric batch went whole to the collector twice in a row") == 1, out.stderr[-2000:]


CARRIED_PROBE = METRICS_PROBE.replace('"OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"] = "1"', '"OTEL_EXPORTER_OTLP_METRICS_TIMEOUT"] = sys.argv[2]') + """
counter.add(3)
if sys.argv[4] == "flush":
    pipeline.flush(wait_s=float(sys.argv[3]))
else:
    pipeline.close(float(sys.argv[3]))  # SHUTDOWN, with this budget
import collections
from lambdawrap.companion.signals import counter_key
# What an environment ending now would carry over of the 3 counted
print(json.dumps({"carried": pipeline.unexported_counts(collections.Counter({counter_key("probe.count", {}): 3}))}), flush=True)
os._exit(0)
"""


@pytest.mark.parametrize(
    "timeout_s, delay_s, wait_s, ending, temporality",
    [("2", 3.0, 6.0, "flush", "delta"), ("10", 3.0, 0.5, "flush", "delta"), ("10", 3.0, 1.0, "close", "delta"), ("10", 3.0, 0.5, "flush", "cumulative")],
    ids=["unanswered in time", "still waiting for its answer", "cut short by SHUTDOWN's deadline", "cumulative, still waiting"],
)
def test_a_metric_batch_the_collector_may_hold_is_not_carried_to_the_next_environment(timeout_s, delay_s, wait_s, ending, temporality):
    # GIVEN a collector that stores each request and answers late, and a delta counter of 3
    assert "sys.argv[2]" in CARRIED_PROBE
    with OtlpReceiver() as rx:
        rx.set_behaviour(delay_s=delay_s)
        # WHEN the environment ends after a flush whose request went whole and was not answered
        # in time, or whose answer it is still waiting for, or a SHUTDOWN whose deadline cut its
        # request short
        found, out = run_probe(CARRIED_PROBE, rx.endpoint, timeout_s, str(wait_s), ending, env={"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": temporality})
        stored = lambda: [p["value"] for p in rx.metrics() if p["name"] == "probe.count"]  # noqa: E731
        wait_for(lambda: stored(), timeout=30, what="the request stored late")
    # THEN what it sent is not carried over: the collector holds it, and the next environment
    # would have sent it again, to be counted twice (before: carried, in a red team's run with
    # a 3-5 s collector and resets, faas.invocations was 47 for 20 invocations)
    # (Unanswered once, it may have gone once more meanwhile, as a blip's batch does: above.)
    assert set(stored()) == {3} and found["carried"] == [], (stored(), found, out.stderr[-2000:])


METRIC_FLUSHES_PROBE = METRICS_PROBE + """
for value in (3, 5, 0):
    counter.add(value)
    flush_and_run_on()
print(json.dumps({"drops": drops}))
"""


def test_a_metric_batch_refused_between_two_unanswered_ends_their_run():
    # GIVEN a collector whose metric answers are: none in time (1.5 s, past the 1 s timeout),
    # a 400, none in time again, then a 200
    answers = [None, 400, None, 200]
    paths = []

    def answer(path: str) -> tuple:
        paths.append(path)
        status = answers.pop(0) if answers else 200
        if status is None:
            time.sleep(1.5)
            status = 200
        return status, b""

    with AnsweringCollector(answer) as collector:
        # WHEN three flushes go
        found, out = run_probe(METRIC_FLUSHES_PROBE, collector.endpoint)
    # THEN the batch that went once unanswered after the refusal is kept and sent again, not
    # dropped as though it had gone twice (before: the refusal did not end the run)
    assert found["drops"] == [] and len(paths) >= 4, (found, paths, out.stderr[-2000:])


def test_a_grpc_request_refused_for_now_is_sent_again(grpc_flushes):
    import grpc

    # GIVEN a gRPC collector unavailable for one request: "not now", which the exporter retries
    grpc_rx, probe = grpc_flushes()
    grpc_rx.refuse(1, grpc.StatusCode.UNAVAILABLE)
    found = probe.flush(4)
    # THEN the spans went, none counted as dropped
    assert found["flushed"] is True and found["dropped"] == {}, found
    assert len(grpc_rx.spans) == 4


def test_spans_a_grpc_collector_rejects_in_a_partial_success_are_counted(grpc_flushes):
    # GIVEN a gRPC collector that takes each request but rejects 2 of its spans
    grpc_rx, probe = grpc_flushes()
    grpc_rx.reject_per_request = 2
    first, second = probe.flush(5), probe.flush(4)
    stderr = probe.stderr()
    # THEN each rejection is counted (before: neither exported nor counted), logged once in the
    # collector's words, and the rejected spans are not sent again
    assert second["dropped"] == {"rejected_by_collector": 4}, (first, second, stderr)
    assert len(grpc_rx.spans) == 5 and [r["spans"] for r in grpc_rx.requests] == [5, 4]
    assert stderr.count("the collector rejected 2 spans of a request (over the test receiver's quota)") == 1, stderr


def test_grpc_requests_over_the_collectors_message_size_go_smaller_at_once(grpc_flushes):
    # GIVEN a gRPC collector that takes messages of up to 12 KB (spans of ~1.1 KB: about 10),
    # and 30 spans to flush, with an export timeout of 30 s
    grpc_rx, probe = grpc_flushes(max_receive_bytes=12 * 1024)
    found = probe.flush(30)
    # THEN they all went, in requests the collector takes, none dropped; and without the
    # exporter's retries of RESOURCE_EXHAUSTED with backoff before each halving (1 + 2 + 4 + 8
    # + 16 s, until its timeout), which the same bytes would meet again
    assert found["flushed"] is True and found["dropped"] == {}, found
    assert sorted(span["span_id"] for span in grpc_rx.spans) == sorted(f"{i:016x}" for i in range(2, 32))
    assert max(r["spans"] for r in grpc_rx.requests) <= 10
    assert found["took_s"] < 10, found



class LogsRefusingCollector(AnsweringCollector):
    """Answers span requests 200, log requests 404 (a tracing backend's endpoint), and metric
    requests 200 the first time, then only after `stall_s` (a collector stuck on the last one)."""

    def __init__(self, stall_s: float) -> None:
        self.paths: list = []
        self.release = threading.Event()

        def answer(path: str) -> tuple:
            self.paths.append(path)
            if path.endswith("/v1/metrics") and self.paths.count(path) > 1:
                self.release.wait(stall_s)
            return (404 if path.endswith("/v1/logs") else 200), b""

        super().__init__(answer)

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        super().__exit__(*exc)


COUNTED_LATE_AT_SHUTDOWN_PROBE = signals_probe({}, """
for i in range(3):
    signals.spans.add(signals.builder.span(name="GET /orders", trace_id=1, span_id=2 + i, parent_id=None, kind=SpanKind.SERVER, attributes={}, start=1, end=2, status=Status(StatusCode.UNSET)))
signals.log_line("looking up an order", time.time_ns(), None, "r1")
started = time.monotonic()
pipeline.close(float(sys.argv[2]))  # SHUTDOWN
print(json.dumps({"closed_after": time.monotonic() - started, "dropped": dict(signals.dropped_by_reason)}))
""")


def test_the_metrics_sent_after_logs_were_refused_at_shutdown_never_hold_it_past_its_deadline():
    # GIVEN a collector that refuses log lines (404) and, at SHUTDOWN, takes 20 s to answer
    # the metrics that would carry their count
    with LogsRefusingCollector(stall_s=20) as collector:
        # WHEN the companion closes with 1.85 s left
        found, out = run_probe(COUNTED_LATE_AT_SHUTDOWN_PROBE, collector.endpoint, "1.85")
        paths = list(collector.paths)
    # THEN the line was counted as refused and the metrics were tried again with it ...
    assert found["dropped"].get("log_rejected_by_collector") == 1 and paths.count("/v1/metrics") == 2, (found, paths, out.stderr[-2000:])
    # ... and close() returned at its deadline (before, it waited for the collector: Lambda
    # ends the extension at the deadline, before it saves what was to be carried over)
    assert found["closed_after"] < 1.85 + 1.0, found


UNENCODABLE_SPAN_PROBE = signals_probe({}, """
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags
# A span the OTLP encoder fails on (an id no 16 bytes can hold), among good ones
signals.spans.add(ReadableSpan(name="bad", context=SpanContext(-1, 2, is_remote=False, trace_flags=TraceFlags(1)), kind=SpanKind.INTERNAL, resource=signals.spans_resource if hasattr(signals, "spans_resource") else None, start_time=1, end_time=2))
flushes = []
for i in range(3):
    signals.spans.add(signals.builder.span(name=f"good {i}", trace_id=1, span_id=2 + i, parent_id=None, kind=SpanKind.SERVER, attributes={}, start=1, end=2, status=Status(StatusCode.UNSET)))
    flushes.append(pipeline.flush(wait_s=60))
print(json.dumps({"flushes": flushes, "left": len(signals.spans), "dropped": dict(signals.dropped_by_reason)}))
""")


def test_a_span_the_encoder_fails_on_is_counted_and_holds_nothing_back():
    # GIVEN a span the OTLP encoder raises on, buffered before good ones
    with OtlpReceiver() as rx:
        # WHEN three flushes go, a good span before each
        found, out = run_probe(UNENCODABLE_SPAN_PROBE, rx.endpoint)
        names = sorted(s["name"] for s in rx.spans())
    # THEN the bad one is counted as malformed and the good ones went (before: the batch that
    # held it was given back and failed first at every flush, and no span went again)
    assert names == ["good 0", "good 1", "good 2"] and found["left"] == 0, (names, found, out.stderr[-2000:])
    assert found["dropped"] == {"malformed_span": 1}, found


UNANSWERED_PROBE = signals_probe({"OTEL_EXPORTER_OTLP_TIMEOUT": "1", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}, """
for n in range(4):
    signals.spans.add(signals.builder.span(name="GET /orders", trace_id=1, span_id=2 + n, parent_id=None, kind=SpanKind.SERVER, attributes={}, start=1, end=2, status=Status(StatusCode.UNSET)))
    pipeline.flush(wait_s=60)
pipeline.close(3.0)
print(json.dumps({"buffered": len(signals.spans), "dropped": dict(signals.dropped_by_reason)}), flush=True)
""")


def test_a_batch_the_collector_takes_but_answers_too_late_is_not_sent_at_every_flush():
    # GIVEN a collector that stores each request whole, then answers after the exporter's
    # timeout (1 s) has passed
    with OtlpReceiver() as rx:
        rx.set_behaviour(delay_s=1.5)
        # WHEN four flushes come, a span before each, then SHUTDOWN
        out = subprocess.run([sys.executable, "-c", UNANSWERED_PROBE, rx.endpoint], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        found = json.loads(out.stdout.strip().splitlines()[-1])
        rx.reset_behaviour()

        def copies() -> dict:
            counted: dict = {}
            for span in rx.spans():
                counted[span["span_id"]] = counted.get(span["span_id"], 0) + 1
            return counted

        # The collector stores the last request once its delay is over, after the probe is gone
        wait_for(lambda: found["dropped"].get("unanswered") == sum(1 for count in copies().values() if count == 2), timeout=30, what="the last delayed request stored")
        copies = copies()
    # THEN each span went at most twice (before: the first went at every flush, then again at
    # SHUTDOWN, and every one was counted as lost at the deadline as well)...
    assert copies and max(copies.values()) <= 2, (copies, out.stderr[-2000:])
    # ... and each is counted once, as one whose fate the collector never told (those sent twice,
    # never one a later flush added to the batch, sent once), unless SHUTDOWN's deadline came first
    assert found["buffered"] == 0 and sum(found["dropped"].values()) == 4 and found["dropped"].get("unanswered", 0) >= 2, (found, out.stderr[-2000:])
    assert found["dropped"]["unanswered"] == sum(1 for count in copies.values() if count == 2), (found, copies)
    assert out.stderr.count("went whole to the collector twice in a row") == 1, out.stderr[-2000:]



@contextlib.contextmanager
def companion_pipeline(rx: OtlpReceiver, monkeypatch) -> Iterator[tuple]:
    """(pipeline, signals) made as lifecycle makes them, exporting to `rx`; closed at the end."""
    from lambdawrap.companion.exporting import Pipeline, built, make_exporters
    from lambdawrap.companion.resource import build_resource
    from lambdawrap.companion.signals import Signals
    from lambdawrap.shared.settings import Settings

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
    settings = Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint, "AWS_LAMBDA_FUNCTION_NAME": "orders"}, warn=False)
    resource = build_resource(settings, "012345678912")
    sink = []
    pipeline = Pipeline(built(make_exporters(settings)), resource, lambda reason, count=1: sink[0].dropped(reason, count))
    signals = Signals(settings, resource, pipeline.meter_provider)
    sink.append(signals)
    pipeline.attach(signals)
    try:
        yield pipeline, signals
    finally:
        pipeline.close(5)


def _at(ms: int) -> str:
    return f"2026-12-01T10:00:{ms // 1000:02d}.{ms % 1000:03d}Z"


def _loading(ms: int, text: str) -> dict:
    """A line a Managed Instances worker printed as it loaded (the JSON format's requestId "")."""
    return {"type": "function", "time": _at(ms), "record": json.dumps({"level": "INFO", "message": text, "requestId": ""})}


def _invocation_record(rid: str) -> dict:
    from lambdawrap.shared import records
    from lambdawrap.shared.framing import HEADER_BYTES

    start = records.encode_invocation_start(rid, "arn:aws:lambda:eu-west-1:123456789012:function:orders", 0xA1, 0xB1, 0, True, 1, False, False, "other", {}, [], "orders", 1)
    return json.loads(records.encode_invocation(start, records.invocation_end(2))[HEADER_BYTES:])


def test_init_lines_past_those_held_wait_for_the_init_span_s_ids_before_they_go(monkeypatch):
    from lambdawrap.companion.correlator import MAX_PENDING_LOGS, Correlator

    with OtlpReceiver() as rx, companion_pipeline(rx, monkeypatch) as (pipeline, signals):
        corr = Correlator(signals, lambda reason, what: signals.dropped(reason), managed_instances=True)
        # GIVEN the workers of a Managed Instances environment printing more lines as they
        # load than the correlator holds for the init span: the rest go to the buffer
        corr.on_telemetry([{"type": "platform.initStart", "time": _at(0), "record": {"phase": "init", "initializationType": "lambda-managed-instances"}}])
        corr.on_telemetry([_loading(1 + n // 100, f"loading {n}") for n in range(MAX_PENDING_LOGS + 50)])
        # WHEN the timer's flush comes before any request has finished
        assert pipeline.flush(wait_s=30)
        # THEN none of them goes yet (before: those past the held ones went, without a trace)
        assert rx.logs() == []
        # WHEN a request finishes, the init span made with it, and the next flush comes
        rid = "8f5c2a4e-0000-4000-8000-000000000001"
        corr.on_telemetry([
            {"type": "platform.initRuntimeDone", "time": _at(20), "record": {"status": "success", "phase": "init"}},
            {"type": "platform.initReport", "time": _at(21), "record": {"phase": "init", "metrics": {"durationMs": 21.0}}},
            {"type": "platform.start", "time": _at(30), "record": {"requestId": rid}},
        ])
        corr.on_record(_invocation_record(rid))
        corr.on_telemetry([{"type": "platform.report", "time": _at(40), "record": {"requestId": rid, "status": "success", "metrics": {"durationMs": 10.0}}}])
        assert pipeline.flush(wait_s=30)
        # THEN every line goes, in the init span's trace
        init = rx.wait_for_spans(lambda s: s["name"] == "orders init")[0]
        lines = rx.wait_for_logs(lambda l: l["body"].startswith("loading "), count=MAX_PENDING_LOGS + 50)
        assert {(l["trace_id"], l["span_id"]) for l in lines} == {(init["trace_id"], init["span_id"])}


def test_lines_awaiting_an_init_span_never_made_hold_back_no_others_for_long(monkeypatch):
    from lambdawrap.companion.correlator import MAX_PENDING_LOGS, Correlator
    from lambdawrap.companion.log_buffer import MAX_LINES

    with OtlpReceiver() as rx, companion_pipeline(rx, monkeypatch) as (pipeline, signals):
        corr = Correlator(signals, lambda reason, what: signals.dropped(reason))
        # GIVEN an init that logged more lines than are held for its span, whose report was lost
        # (its span is not made before SHUTDOWN): the lines past those held await its ids
        corr.on_telemetry([{"type": "platform.initStart", "time": _at(0), "record": {"phase": "init", "initializationType": "on-demand"}}])
        corr.on_telemetry([{"type": "function", "time": _at(1), "record": f"loading {n}"} for n in range(MAX_PENDING_LOGS + 50)])
        # WHEN an invocation prints more than half the log buffer holds, and a flush comes
        rid = "8f5c2a4e-0000-4000-8000-000000000001"
        corr.on_invoke({"requestId": rid, "invokedFunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:orders"})
        printed = MAX_LINES // 2 + 500
        corr.on_telemetry([{"type": "platform.start", "time": _at(10), "record": {"requestId": rid}}] + [{"type": "function", "time": _at(11), "record": f"handling {n}"} for n in range(printed)])
        corr.on_record(_invocation_record(rid))
        corr.on_telemetry([{"type": "platform.runtimeDone", "time": _at(20), "record": {"requestId": rid, "status": "success"}}])
        assert pipeline.flush(wait_s=30)
        # THEN its lines go, and none is dropped (before that buffer's half, lines awaiting ids
        # held back all that came after them: a buffer full, the function's lines dropped)
        handled = rx.wait_for_logs(lambda l: l["body"].startswith("handling "), count=printed)
        assert len(handled) == printed and not signals.dropped_by_reason.get("log_buffer_full")


def test_lines_awaiting_an_init_span_go_as_they_are_once_they_waited_their_while(monkeypatch):
    from lambdawrap.companion import log_buffer
    from lambdawrap.companion.correlator import MAX_PENDING_LOGS, Correlator

    monkeypatch.setattr(log_buffer, "MAX_AWAIT_S", 0.5)
    with OtlpReceiver() as rx, companion_pipeline(rx, monkeypatch) as (pipeline, signals):
        corr = Correlator(signals, lambda reason, what: signals.dropped(reason), managed_instances=True)
        # GIVEN Managed Instances workers that logged more lines loading than are held for the
        # init span, then an idle environment's few lines (no request, so no init span yet)
        corr.on_telemetry([{"type": "platform.initStart", "time": _at(0), "record": {"phase": "init", "initializationType": "lambda-managed-instances"}}])
        corr.on_telemetry([_loading(1 + n // 100, f"loading {n}") for n in range(MAX_PENDING_LOGS + 50)])
        corr.on_telemetry([{"type": "function", "time": _at(20), "record": f"heartbeat {n}"} for n in range(10)])
        waited_from = time.time()
        assert pipeline.flush(wait_s=30)
        assert rx.logs() == [] or time.time() - waited_from >= 0.5
        # WHEN they have waited their while (MAX_AWAIT_S) and a flush comes
        time.sleep(max(0.0, waited_from + 0.6 - time.time()))
        assert pipeline.flush(wait_s=30)
        # THEN they go as they are, and the lines after them too (before: all held until a
        # request finished, or SHUTDOWN)
        rx.wait_for_logs(lambda l: l["body"].startswith("heartbeat "), count=10)
        assert len([l for l in rx.logs() if l["body"].startswith("loading ")]) == 50


@contextlib.contextmanager
def probe_in_steps(script: str, *args: str, env: dict) -> Iterator[subprocess.Popen]:
    """A probe that prints a JSON line at each step and waits for a line on its stdin where the
    test changes a collector's behaviour between two steps."""
    process = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    try:
        yield process
    finally:
        process.kill()
        process.wait(30)
        for stream in (process.stdin, process.stdout, process.stderr):
            stream.close()


def step(process: subprocess.Popen, go: bool = False) -> dict:
    if go:
        process.stdin.write("go\n")
        process.stdin.flush()
    return json.loads(process.stdout.readline())


SIDE_FAILS_ON_THE_WORKER_PROBE = signals_probe({}, """
if sys.argv[2] == "in turn":
    for i in range(20):  # healthy flushes first
        signals.spans.add(order_span(100 + i))
        pipeline.flush(wait_s=10)
    print(json.dumps({"warmed_up": True}), flush=True)
    sys.stdin.readline()  # the metrics' collector fails from now on
    # As answered in well under 2 ms, whatever this machine's load made of the last answers:
    # the next flush sends the signals in turn, on the export worker.
    pipeline.latency_s = 0.0
    signals.spans.add(order_span(0))
pipeline.request_flush()  # (alone: a flush before the invocation's span is made)
time.sleep(0.3)
signals.spans.add(order_span(1))
began = time.monotonic()
ticket = pipeline.request_flush()  # the next invocation's
while not pipeline.done(ticket) and time.monotonic() - began < 30:
    time.sleep(0.01)
print(json.dumps({"waited_s": time.monotonic() - began}), flush=True)
""")


@pytest.mark.parametrize("how", ["alone", "in turn"])
def test_metrics_failing_on_the_export_worker_hold_no_later_span_back(how):
    from support.local_servers import closed_port

    # GIVEN the metrics exported on the export worker itself: alone in a flush that has no span
    # (their endpoint a port nothing listens on), or in turn after the spans, to a collector
    # that answers at once, until it answers 503
    with OtlpReceiver() as rx, OtlpReceiver() as metrics_rx:
        metrics = metrics_rx.endpoint + "/v1/metrics" if how == "in turn" else f"http://127.0.0.1:{closed_port()}/v1/metrics"
        with probe_in_steps(SIDE_FAILS_ON_THE_WORKER_PROBE, rx.endpoint, how, env={"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": metrics}) as probe:
            if how == "in turn":
                step(probe)
                metrics_rx.set_behaviour(status=503)
            # WHEN the next flush is asked for while that export fails
            found = step(probe, go=how == "in turn")
    # THEN it is done at once, its span sent (before: it waited for the metrics' retries, 1, 2
    # and 4 s apart, about 7 s)
    assert found["waited_s"] < 3.0, found


ALONE_LOGS_AT_SHUTDOWN_PROBE = signals_probe({"OTEL_EXPORTER_OTLP_LOGS_TIMEOUT": "1"}, """
signals.log_line("first", time.time_ns(), None, "r0")
pipeline.flush(wait_s=30)  # refused for now (503): the logs go alone from now on
run_on()
print(json.dumps({"buffered": len(signals.logs)}), flush=True)
sys.stdin.readline()
for i in range(100):
    signals.log_line(f"line {i}", time.time_ns(), None, "r1")
pipeline.flush(wait_s=30)
while len(signals.logs) > 1:
    time.sleep(0.01)  # until the alone export has taken them
signals.log_line("late", time.time_ns(), None, "r2")
pipeline.close(3.0)
print(json.dumps({"dropped": dict(signals.dropped_by_reason)}), flush=True)
""")


def test_log_lines_an_export_on_its_own_gives_back_at_shutdown_are_sent_not_counted():
    # GIVEN logs whose collector failed their last export (so they go on a thread of their
    # own), and that fails the next request too, after 0.8 s, then answers
    with OtlpReceiver() as rx, OtlpReceiver() as logs_rx:
        logs_rx.set_behaviour(status=503, remaining=3)
        with probe_in_steps(ALONE_LOGS_AT_SHUTDOWN_PROBE, rx.endpoint, env={"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": logs_rx.endpoint + "/v1/logs"}) as probe:
            step(probe)
            logs_rx.set_behaviour(status=503, delay_s=0.8, remaining=1)
            # WHEN SHUTDOWN comes while that request is under way, with 3 s left
            found = step(probe, go=True)
        stored = len(logs_rx.logs())
    # THEN the lines it gave back go in the time left (before: counted as log_shutdown_deadline)
    assert found["dropped"] == {} and stored == 102, (found, stored)


NO_THREADS_LOGS_PROBE = signals_probe({"OTEL_EXPORTER_OTLP_LOGS_TIMEOUT": "1"}, """
start = threading.Thread.start
def no_helpers(thread):
    if thread.name.startswith("lambdawrap-export-"):
        raise RuntimeError("can't start new thread")
    start(thread)
threading.Thread.start = no_helpers
for i in range(4):
    signals.log_line(f"line {i}", time.time_ns(), None, "r1")
    pipeline.flush(wait_s=30)
    print(json.dumps({"buffered": len(signals.logs)}), flush=True)
    if i == 0:
        sys.stdin.readline()  # the logs' collector is back
""")


def test_a_failing_signal_no_thread_can_be_had_for_goes_in_turn():
    # GIVEN a process that can start no thread for a flush (at its memory limit), and the logs'
    # collector refusing the first export for now (503)
    with OtlpReceiver() as rx, OtlpReceiver() as logs_rx:
        logs_rx.set_behaviour(status=503)
        with probe_in_steps(NO_THREADS_LOGS_PROBE, rx.endpoint, env={"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": logs_rx.endpoint + "/v1/logs"}) as probe:
            assert step(probe) == {"buffered": 1}
            # WHEN it answers again, and three more flushes go
            logs_rx.reset_behaviour()
            after = [step(probe, go=index == 0) for index in range(3)]
        stored = len(logs_rx.logs())
    # THEN the lines go on the export worker, in turn (before: never, while the environment ran)
    assert after == [{"buffered": 0}] * 3 and stored == 4, (after, stored)
