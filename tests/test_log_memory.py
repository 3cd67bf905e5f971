"""What the companion holds of the function's log lines and finished invocations stays within
its bounds in bytes, whatever the text (a CJK line takes 3 bytes a character) and whatever a
record carries (up to 256 KB), including when the export pipeline never comes."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc

import pytest

from lambdawrap.companion import carryover, log_buffer
from lambdawrap.companion.correlator import Invocation
from lambdawrap.companion.deferred import DeferredSink
from lambdawrap.devtools.otlp_receiver import OtlpReceiver
from support.log_pipeline_probe import LOG_PIPELINE

CJK_LINE = "日志" * 500  # 1,000 characters, 3,000 bytes of UTF-8


def _held_bytes(entries: list) -> int:
    return sum(len(entry[0].encode("utf-8")) for entry in entries)


def test_the_log_buffer_s_bound_is_in_bytes_whatever_the_script():
    # GIVEN a function printing 2,000 CJK lines of 1,000 characters (6 MB of UTF-8)
    drops = []
    buffer = log_buffer.LogBuffer(lambda reason, count: drops.append((reason, count)))
    # WHEN they come
    for n in range(2000):
        buffer.add(CJK_LINE, n, None, "r1")
    buffer.report_drops()
    # THEN the buffer holds 4 MiB of them, not 4 Mi characters (before: all 2,000, 6 MB, and
    # twice that again once encoded), the rest counted
    kept = buffer.take(10**6)
    assert _held_bytes(kept) <= log_buffer.MAX_BYTES < _held_bytes(kept) + 3000, _held_bytes(kept)
    assert drops == [("log_buffer_full", 2000 - len(kept))]
    assert buffer.bytes == 0


def test_lines_given_back_take_the_room_they_took():
    # GIVEN a buffer of mixed lines, a batch taken for export
    buffer = log_buffer.LogBuffer(lambda reason, count: None)
    for n, line in enumerate(["ascii", CJK_LINE, "é" * 10, "\udc80 a lone surrogate", "😀"]):
        buffer.add(line, n, None, "r1")
    before = buffer.bytes
    batch = buffer.take(3)
    # WHEN the collector refused it and it comes back
    buffer.give_back(batch)
    # THEN the buffer counts the same bytes as before, none lost
    assert len(buffer) == 5 and buffer.bytes == before == 5 + 3000 + 20 + 3 + len(" a lone surrogate") + 4


def test_a_batch_of_log_lines_is_bounded_in_bytes_but_takes_at_least_one():
    buffer = log_buffer.LogBuffer(lambda reason, count: None)
    for n in range(10):
        buffer.add(CJK_LINE, n, None, "r1")
    assert len(buffer.take(512, max_bytes=10_000)) == 3  # 9,000 bytes: a fourth line would pass the bound
    assert len(buffer.take(512, max_bytes=10)) == 1  # one line larger than the bound still goes
    assert len(buffer.take(512)) == 6 and buffer.bytes == 0


def test_before_the_sdk_loads_non_ascii_lines_wait_within_the_log_buffer_s_bytes():
    # GIVEN no export pipeline yet, and 2,000 CJK lines of 1,000 characters
    sink = DeferredSink()
    for n in range(2000):
        if not sink.dropped_log_line(len(CJK_LINE)):
            sink.log_line(CJK_LINE, n, None, "r1")
    # THEN what waits is within the log buffer's bytes, the rest counted as it counts them
    waiting = [args for name, args, _ in sink._calls if name == "log_line"]
    assert 0 < _held_bytes(waiting) <= log_buffer.MAX_BYTES, _held_bytes(waiting)
    dropped = dict(args for name, args, _ in sink.take_calls() if name == "dropped")
    assert dropped == {"log_buffer_full": 2000 - len(waiting)}


LONG_LINES_PROBE = LOG_PIPELINE + """for i in range(16):  # 4,000,000 bytes: the whole buffer
    pipeline.logs.add(f"{i:06d} " + "l" * 249_993, i, None, "r1")
flushed = pipeline.flush(wait_s=60)
print(json.dumps({"flushed": flushed, "left": len(pipeline.logs), "drops": drops}))
"""


def test_a_log_request_carries_a_bounded_amount_of_text():
    # GIVEN a buffer holding 16 lines of 250,000 characters (4 MB)
    with OtlpReceiver() as rx:
        # WHEN they are flushed
        out = subprocess.run([sys.executable, "-c", LONG_LINES_PROBE, rx.endpoint], capture_output=True, text=True, timeout=120, check=True)
        found = json.loads(out.stdout.strip().splitlines()[-1])
        sizes = [r["items"] for r in rx.requests() if r["path"] == "/v1/logs"]
    # THEN they went in requests of at most 2 MiB of text (8 such lines), as spans do, not in
    # one of 4 MB (the OpenTelemetry Collector's gRPC limit is 4 MiB)
    assert found["flushed"] and found["left"] == 0 and found["drops"] == [], (found, out.stderr[-2000:])
    assert sum(sizes) == 16 and max(sizes) <= 8, sizes


def _held_by(work) -> int:  # noqa: ANN001 - any callable
    """The bytes of Python memory still held once `work` has run."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()


def _big_invocation(n: int, size: int = 250_000) -> Invocation:
    """A finished invocation whose record carries an exception's stack of `size` characters."""
    inv = Invocation(f"r{n}")
    inv.end = {"error": {"type": "ValueError", "stacktrace": f"{n:06d}" + "s" * (size - 6)}}
    return inv


def _kept_and_dropped(calls: list) -> tuple:
    kept = [args[0] for name, args, _ in calls if name == "invocation"]
    return kept, dict(args for name, args, _ in calls if name == "dropped")


def test_calls_kept_for_the_next_environment_are_bounded_by_their_size(tmp_path):
    # GIVEN invocations whose records carry 250 KB each, 30 waiting when the pipeline failed to
    # start, 70 finished after
    sink = DeferredSink()
    for n in range(30):
        sink.invocation(_big_invocation(n))
    sink.abandon()
    for n in range(30, 100):
        sink.invocation(_big_invocation(n))
    # WHEN SHUTDOWN takes them for the next environment
    kept, dropped = _kept_and_dropped(sink.take_calls())
    # THEN what was kept is what its carry-over file holds (before: up to 1,000 calls, all 100
    # here, 25 MB of the memory the function shares), the first kept, the rest counted
    assert [inv.request_id for inv in kept] == [f"r{n}" for n in range(len(kept))] and 10 <= len(kept) < 100
    assert dropped == {"startup_backlog": 100 - len(kept)}
    socket_path = str(tmp_path / "lambdawrap.sock")
    carryover.save(socket_path, [], [("invocation", (inv,), {}) for inv in kept])
    carried = carryover.take(socket_path)
    assert len(carried.request_ids) == len(kept) and carried.counts == []  # nothing shed there


def test_calls_kept_once_no_pipeline_will_come_hold_a_bounded_amount_of_memory():
    # GIVEN a pipeline that failed to start, and 200 invocations whose records carry 100 KB each
    sink = DeferredSink()
    sink.abandon()
    held = _held_by(lambda: [sink.invocation(_big_invocation(n, size=100_000)) for n in range(200)])
    # THEN the sink holds about the carry-over file's 4 MB of them (before: all, 20 MB)
    assert held < carryover.MAX_BYTES + 2 * 1024 * 1024, held


def test_calls_waiting_for_the_sdk_are_bounded_by_their_size():
    # GIVEN no export pipeline yet, and 100 invocations whose records carry 250 KB each
    sink = DeferredSink()
    for n in range(100):
        sink.invocation(_big_invocation(n))
    # WHEN the pipeline comes
    got = []

    class Target:
        def invocation(self, inv):
            got.append(("invocation", (inv,), {}))

        def dropped(self, reason, count=1):
            got.append(("dropped", (reason, count), {}))

    sink.attach(Target())
    # THEN it got what the span buffer could hold of them (before: all of them, up to 100,000,
    # in the memory the function shares), the rest counted
    kept, dropped = _kept_and_dropped(got)
    assert [inv.request_id for inv in kept] == [f"r{n}" for n in range(len(kept))]
    assert 16 * 1024 * 1024 // 260_000 <= len(kept) <= 16 * 1024 * 1024 // 250_000, len(kept)
    assert dropped == {"startup_backlog": 100 - len(kept)}


@pytest.mark.parametrize("abandoned", [False, True], ids=["waiting", "abandoned"])
def test_an_invocation_past_the_bounds_counts_what_its_record_carried(abandoned):
    # GIVEN no export pipeline yet (or one that failed to start), and invocations whose records
    # carry 250 KB, two of the function's spans, 3 spans past the limits, one span too large for
    # the record and one outgoing call whose context could not travel
    sink = DeferredSink()
    if abandoned:
        sink.abandon()
    count = 100
    for n in range(count):
        inv = _big_invocation(n)
        inv.end.update(spans=[{"name": "a"}, {"name": "b"}], spans_dropped=3, spans_too_large=1, context_not_injected=1)
        sink.invocation(inv)
    # WHEN the calls are taken
    kept, dropped = _kept_and_dropped(sink.take_calls())
    # THEN each invocation past the bounds is counted with the function's spans its record
    # carried (before: one each, those spans uncounted) and the counts it carried (before: lost)
    over = count - len(kept)
    assert 0 < over < count
    assert dropped == {"startup_backlog": over * 3, "span_limit": over * 3, "record_too_large": over, "context_not_injected": over}


@pytest.mark.parametrize("logs_exported", [True, False], ids=["logs exported", "OTEL_LOGS_EXPORTER=none"])
def test_spans_and_init_lines_past_the_bounds_are_counted_one_each(logs_exported):
    # GIVEN no export pipeline yet, its bounds taken up by invocations of 250 KB, then calls
    # that do not fit: the function's spans handed over three at once, none at once, and an
    # init holding two log lines
    from lambdawrap.companion.correlator import InitFacts

    sink = DeferredSink(logs_exported=logs_exported)
    for n in range(100):
        sink.invocation(_big_invocation(n))
    kept = len(_kept_and_dropped(list(sink._calls))[0])
    sink.user_spans([{"name": "a"}, {"name": "b"}, {"name": "c"}])
    sink.user_spans([])
    init = InitFacts(start_ns=1)
    init.logs = [("loading", 1), ("loaded", 2)]
    sink.init_span(init, None)
    # WHEN the calls are taken
    _, dropped = _kept_and_dropped(sink.take_calls())
    # THEN each span, and the init with its lines, is counted (before: one per call, whatever
    # it held, an empty one too); its lines only where logs are exported: nobody asked for them
    assert dropped == {"startup_backlog": (100 - kept) + 3 + 0 + (1 + (2 if logs_exported else 0))}


def test_lines_nobody_exports_are_not_counted_when_the_pipeline_fails_to_start():
    # GIVEN OTEL_LOGS_EXPORTER=none, and a pipeline that failed to start
    sink = DeferredSink(logs_exported=False)
    sink.log_line("x", 1, None, "r1")
    sink.abandon()
    # WHEN lines come
    assert sink.dropped_log_line(1)
    sink.log_line("y", 2, None, "r1")
    # THEN none is held nor counted: nobody asked for them
    assert sink.take_calls() == []


def test_the_correlator_lets_go_of_the_records_of_invocations_no_pipeline_will_export():
    import time

    from lambdawrap.companion.correlator import Correlator
    from lambdawrap.shared import records

    # GIVEN a companion whose pipeline failed to start, and 200 invocations whose records carry
    # an exception's stack of 100 KB each
    sink = DeferredSink()
    sink.abandon()
    correlator = Correlator(sink, lambda reason, what: None)
    arn = "arn:aws:lambda:eu-west-1:123456789012:function:f"

    def invoked(n: int) -> None:
        rid = f"r{n}"
        correlator.on_invoke({"requestId": rid, "invokedFunctionArn": arn, "deadlineMs": int(time.time() * 1000) + 60_000})
        start = json.loads(records.encode_invocation_start(request_id=rid, function_arn=arn, trace_id=1, span_id=n + 1, parent_span_id=0, sampled=True, start_ns=time.time_ns(), cold_start=False, proactive_init=False, trigger="other", attributes={}, links=[], span_name="f", span_kind=2))
        error = {"type": "ValueError", "message": "x", "stack": f"{n:06d}" + "s" * 100_000}
        correlator.on_record({"version": records.VERSION, "type": records.INVOCATION, "start": start, "end": records.invocation_end(time.time_ns(), error=error)})
        correlator.on_telemetry([{"time": "2026-12-04T10:00:00.000Z", "type": "platform.runtimeDone", "record": {"requestId": rid, "status": "error", "errorType": "Runtime.Unknown"}}])

    held = _held_by(lambda: [invoked(n) for n in range(200)])
    # THEN what is held is about what the carry-over file takes (before: the correlator kept
    # every record the sink could not take whole, 20 MB here, up to 2,048 of 256 KB)
    assert held < carryover.MAX_BYTES + 3 * 1024 * 1024, held


def test_an_invocations_lines_being_handed_over_do_not_take_the_room_of_kept_calls():
    # GIVEN a pipeline that failed to start, and invocations that each still hold 1,000 lines of
    # 1 KB as they are finished (the correlator hands them over right after)
    sink = DeferredSink()
    sink.abandon()
    for n in range(12):
        inv = Invocation(f"r{n}")
        inv.logs = [("l" * 1000, n) for _ in range(1000)]
        sink.invocation(inv)
        inv.logs = []
    # WHEN SHUTDOWN takes them for the next environment THEN all are kept: they take ~1 KB each
    # (before: sized with their lines, four were kept and the rest counted)
    kept, dropped = _kept_and_dropped(sink.take_calls())
    assert (len(kept), dropped) == (12, {})
