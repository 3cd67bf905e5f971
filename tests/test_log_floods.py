"""A function that floods its log: every line is exported or counted, the companion's memory
stays bounded, and the time after the response stays inside the flush budget."""

from __future__ import annotations

import json
import time

import pytest

from conftest import write_function
from support.faults import companion_process
from support.stack import instrumented

from lambdawrap.companion import log_buffer

LINES = 8000  # per invocation: 8 MB, twice the companion's log buffer
FLOOD_APP = f"""
def handler(event, context):
    line = "f" * 999
    for _ in range({LINES}):
        print(line)
    return {{"printed": {LINES}}}
"""
BUDGET_MS = 1000


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.timeout(600)
def test_every_line_is_exported_or_counted_and_memory_stays_bounded(tmp_path):
    task = write_function(tmp_path / "task", FLOOD_APP)
    env = {"LAMBDAWRAP_FLUSH": "end", "LAMBDAWRAP_FLUSH_BUDGET_MS": str(BUDGET_MS)}
    with instrumented(task, env=env, timeout_s=60, memory_mb=2048) as (emu, rx):
        invocations = 3
        after_response_ms = []
        for _ in range(invocations):
            started = time.perf_counter()
            result = emu.invoke({})
            assert result.json() == {"printed": LINES}
            emu.wait_idle(60)
            after_response_ms.append((time.perf_counter() - started) * 1000 - result.duration_ms)
        peak_mb = peak_rss_mb(companion_process(emu).pid)
    produced = len(emu.log_lines("function"))  # every line the platform made a log record of
    printed = invocations * LINES
    exported = len(rx.logs())
    assert produced >= printed
    dropped = {}
    for point in rx.metrics():
        if point["name"] == "lambdawrap.dropped":
            reason = point["attributes"]["reason"]
            dropped[reason] = dropped.get(reason, 0) + point["value"]
    # The platform's count of what it dropped (platform.logsDropped) takes in every record, a
    # platform event too: those are not lines.
    other_records_dropped = sum(count for kind, count in emu.bus.dropped_types().items() if kind != "function")
    line_drops = sum(dropped.get(reason, 0) for reason in ("log_buffer_full", "log_shutdown_deadline", "platform_logs_dropped")) - other_records_dropped
    # THEN every line is exported or counted, once
    assert exported + line_drops == produced, (exported, dropped, produced)
    assert dropped.get("log_buffer_full", 0) > 0  # the flood was larger than the buffer
    # ... the companion's memory stays bounded (its buffer holds at most 4 MB of lines)
    assert peak_mb < 100, peak_mb
    # ... and the invoke phase after the response stays near the flush budget (the budget, plus
    # waiting for the platform's word on the invocation, plus a busy machine's slack)
    assert max(after_response_ms) < BUDGET_MS + 2000, after_response_ms
    print(f"\nlog flood: {printed} lines printed, {exported} exported, drops {dropped}, companion peak RSS {peak_mb:.0f} MB, after the response {[round(ms) for ms in after_response_ms]} ms")


def _flood_batches() -> list:
    """Two invocations' telemetry, as batches: r1 floods (2 KB lines, a line over the buffer's
    line limit, an error line and a JSON line amid them), ends inside a batch, then r2 floods."""

    def line(text: str) -> dict:
        return {"type": "function", "time": "2026-12-01T10:00:00.%03dZ" % (len(text) % 1000), "record": text}

    def platform(kind: str, rid: str) -> dict:
        return {"type": kind, "time": "2026-12-01T10:00:01.000Z", "record": {"requestId": rid, "status": "success"}}

    events = [platform("platform.start", "r1")]
    events += [line(f"{n:06d} " + "x" * 2000) for n in range(3000)]
    events.insert(2500, line("[ERROR] Exception: late " + "e" * 3000))  # too long to fit: read all the same
    events.insert(2600, {"type": "function", "time": "2026-12-01T10:00:00.500Z", "record": {"requestId": "r1", "message": "as JSON"}})
    events.insert(2700, line("y" * (log_buffer.MAX_LINE_CHARS + 10)))
    events += [platform("platform.runtimeDone", "r1"), platform("platform.start", "r2")]
    events += [line(f"r2 {n:06d} " + "z" * 500) for n in range(2000)]
    return [events[i : i + 97] for i in range(0, len(events), 97)]


def _signals():
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource

    from lambdawrap.companion.signals import Signals
    from lambdawrap.shared.settings import Settings

    signals = Signals(Settings(buffer_max_spans=100), Resource({}), MeterProvider())
    signals.logs = log_buffer.LogBuffer(signals.dropped, max_lines=3000, max_bytes=2_000_000)
    return signals


def _run_flood(fast: bool) -> tuple:
    signals = _signals()
    counted_early = []
    if fast:
        real = signals.dropped_log_line
        signals.dropped_log_line = lambda chars: real(chars) and not counted_early.append(chars)
    return _run_flood_through(signals, flooded=None if fast else (lambda: False)) + (len(counted_early),)


def _run_flood_through(sink, batches: list | None = None, announced: tuple = ("r1", "r2"), announced_after: tuple = (), attach_after: int = 0, flooded=None) -> tuple:
    """Batches (the flood's by default) through a correlator into `sink`, with the requests
    `announced` before them and `announced_after` after (a DeferredSink is attached to a Signals
    after `attach_after` batches): what was kept, the drops, each invocation's pending lines and
    error line."""
    from lambdawrap.companion.correlator import Correlator

    def announce(rids: tuple) -> None:
        for rid in rids:
            correlator.on_invoke({"requestId": rid, "invokedFunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:f"})

    signals = sink if attach_after == 0 else _signals()
    correlator = Correlator(sink, lambda reason, what: sink.dropped(reason))
    if flooded is not None:
        correlator._flooded = flooded  # e.g. every line the whole way
    announce(announced)
    for number, batch in enumerate(_flood_batches() if batches is None else batches):
        if attach_after and number == attach_after:
            sink.attach(signals)
        correlator.on_telemetry(batch)
    announce(announced_after)
    pending = {rid: [entry[0] for entry in inv.logs] for rid, inv in correlator._open.items()}
    errors = {rid: inv.error_line for rid, inv in correlator._open.items()}
    return [entry[:1] + entry[2:] for entry in signals.logs.take(10**6)], dict(signals.dropped_by_reason), pending, errors


def test_a_flood_s_lines_are_kept_and_counted_as_the_whole_way_keeps_and_counts_them():
    # Once an invocation's own lines are taken and the buffer is full, its lines are counted
    # without being read further: the same lines kept, the same drops, the same error line.
    *fast, counted_early = _run_flood(fast=True)
    *full, _ = _run_flood(fast=False)
    kept, drops, pending, errors = fast
    assert drops["log_buffer_full"] > 1500 and counted_early > 1500 and len(kept) > 900 and pending["r1"] and errors["r1"]
    assert fast == full


def _json_flood_batches(as_objects: bool = False) -> list:
    """A flood in awslambdaric's JSON log format (every line starts with "{"; `as_objects`: each
    record an object, as the Telemetry API delivers that format), the runtime's report of an
    error amid it."""
    written = (lambda fields: fields) if as_objects else json.dumps

    def record(n: int) -> dict:
        text = written({"timestamp": "2026-12-01T10:00:00Z", "level": "INFO", "message": f"{n:06d} " + "j" * 900, "logger": "root", "requestId": "r1"})
        return {"type": "function", "time": "2026-12-01T10:00:00.%03dZ" % (n % 1000), "record": text}

    report = written({"timestamp": "2026-12-01T10:00:01Z", "level": "ERROR", "errorMessage": "late", "errorType": "Exception", "requestId": "r1", "stackTrace": ['  File "/var/task/app.py", line 3, in handler\n']})
    events = [{"type": "platform.start", "time": "2026-12-01T10:00:00.000Z", "record": {"requestId": "r1"}}]
    events += [record(n) for n in range(5000)]
    events.insert(4000, {"type": "function", "time": "2026-12-01T10:00:01.000Z", "record": report})
    return [events[i : i + 97] for i in range(0, len(events), 97)]


def test_a_json_format_flood_s_lines_are_counted_without_being_parsed():
    # GIVEN a flood in the JSON log format: each line starts with "{", as the runtime's JSON
    # report of an error does; parsing each to tell made such a flood's lines cost the companion
    # 8 times a Text flood's
    import lambdawrap.companion.runtime_errors as runtime_errors

    parsed = []
    real = runtime_errors._from_json

    def counting(line):
        parsed.append(line)
        return real(line)

    signals = _signals()
    counted_early = []
    real_drop = signals.dropped_log_line
    signals.dropped_log_line = lambda chars: real_drop(chars) and not counted_early.append(chars)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runtime_errors, "_from_json", counting)
        # WHEN it goes through the correlator
        fast = _run_flood_through(signals, batches=_json_flood_batches(), announced=("r1",))
    # THEN once the buffer is full its lines are counted without being read, the runtime's
    # error report is read all the same, and all is as the whole way keeps and counts it
    kept, drops, pending, errors = fast
    assert counted_early and len(counted_early) == drops["log_buffer_full"] > 1500
    assert len(parsed) == 1 and errors["r1"]["type"] == "Exception"
    assert fast == _run_flood_through(_signals(), batches=_json_flood_batches(), announced=("r1",), flooded=lambda: False)


def test_a_flood_of_json_format_objects_is_counted_without_being_written_back():
    # GIVEN a flood in the JSON log format as the Telemetry API delivers it, each record an
    # object, the runtime's report of an error amid it
    signals = _signals()
    counted_early = []
    real_drop = signals.dropped_log_line
    signals.dropped_log_line = lambda chars: real_drop(chars) and not counted_early.append(chars)
    # WHEN it goes through the correlator
    fast = _run_flood_through(signals, batches=_json_flood_batches(as_objects=True), announced=("r1",))
    # THEN once the buffer is full its records are counted without being written back as lines
    # and routed (before: each went the whole way, six times a line's CPU, to be dropped), the
    # error report is read all the same, and all is as the whole way keeps and counts it
    kept, drops, pending, errors = fast
    assert counted_early and len(counted_early) == drops["log_buffer_full"] > 1500
    assert errors["r1"]["type"] == "Exception"
    assert fast == _run_flood_through(_signals(), batches=_json_flood_batches(as_objects=True), announced=("r1",), flooded=lambda: False)


def test_in_a_flood_of_json_format_objects_a_record_naming_another_open_request_is_kept_for_it():
    # GIVEN two requests open, the second flooding in the JSON log format (objects), then a few
    # records naming the first (its background thread), whose lines are still held for it
    def record(rid: str, n: int) -> dict:
        return {"type": "function", "time": "2026-12-01T10:00:00.%03dZ" % (n % 1000), "record": {"timestamp": "2026-12-01T10:00:00Z", "level": "INFO", "message": f"{rid} {n:06d} " + "j" * 900, "logger": "root", "requestId": rid}}

    events = [{"type": "platform.start", "time": "2026-12-01T10:00:00.000Z", "record": {"requestId": rid}} for rid in ("r0", "r1")]
    events += [record("r1", n) for n in range(5000)] + [record("r0", n) for n in range(5)]
    batches = [events[i : i + 97] for i in range(0, len(events), 97)]
    fast = _run_flood_through(_signals(), batches=batches, announced=("r0", "r1"))
    # THEN they are held for it as the whole way holds them (before: counted as dropped)
    kept, drops, pending, errors = fast
    assert len(pending["r0"]) == 5 and drops["log_buffer_full"] > 1500
    assert fast == _run_flood_through(_signals(), batches=batches, announced=("r0", "r1"), flooded=lambda: False)


def test_before_the_sdk_loads_a_flood_s_lines_take_the_whole_way_and_are_counted_once():
    # The deferred sink remembers calls for the sink to come; a question asked of it is not one
    # of them (replayed, it would count lines that log_line already carries).
    from lambdawrap.companion.deferred import DeferredSink

    *early, _ = _run_flood_through(DeferredSink(), attach_after=len(_flood_batches()) // 2)
    *settled, _ = _run_flood(fast=False)
    assert early[:2] == settled[:2]  # the same lines kept, the same drops


def test_before_the_sdk_loads_a_flood_waits_within_the_log_buffer_s_bounds():
    from lambdawrap.companion.correlator import Correlator
    from lambdawrap.companion.deferred import DeferredSink

    # GIVEN no export pipeline yet (the SDK still importing at 128 MB, or a re-init, which does
    # not wait for it), and an invocation printing 3,000 lines of 16 KB
    sink = DeferredSink()
    correlator = Correlator(sink, lambda reason, what: sink.dropped(reason))
    correlator.on_invoke({"requestId": "r1", "invokedFunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:f"})
    events = [{"type": "platform.start", "time": "2026-12-01T10:00:00.000Z", "record": {"requestId": "r1"}}]
    events += [{"type": "function", "time": "2026-12-01T10:00:00.500Z", "record": f"{n:06d} " + "w" * 16_000} for n in range(3000)]
    # WHEN its lines come
    for i in range(0, len(events), 97):
        correlator.on_telemetry(events[i : i + 97])
    # THEN what waits for the pipeline stays within the log buffer's bounds (before: all of it,
    # 48 MB of a 128 MB function's memory)
    waiting = sum(len(args[0]) for name, args, _ in sink._calls if name == "log_line")
    assert 0 < waiting <= log_buffer.MAX_BYTES, waiting
    # ... and once the pipeline is there, every line is exported, held or counted, once
    signals = _signals()
    sink.attach(signals)
    kept = signals.logs.take(10**6)
    held = sum(len(inv.logs) for inv in correlator._open.values())
    assert len(kept) + held + signals.dropped_by_reason["log_buffer_full"] == 3000, (len(kept), held, dict(signals.dropped_by_reason))


def test_lines_waiting_for_a_pipeline_that_never_comes_are_let_go_and_counted_the_rest_waits_for_shutdown():
    from lambdawrap.companion.deferred import DeferredSink

    # GIVEN calls and lines waiting for the pipeline (what an earlier environment left among them)
    sink = DeferredSink()
    sink.invocation("from an earlier environment")
    sink.dropped("handler_channel")
    sink.log_line("a line", 1, None, "r1")
    # WHEN it failed to start (telemetry is off in this environment)
    sink.abandon()
    # THEN the lines are let go, and those to come are dropped at once (no 4 MiB held for
    # nothing), all counted (the user asked for them; before, none was), while the rest still
    # waits for SHUTDOWN to carry it to the next environment
    assert sink.dropped_log_line(10)
    sink.log_line("another", 2, None, "r1")
    assert [(name, args) for name, args, _ in sink.take_calls()] == [("invocation", ("from an earlier environment",)), ("dropped", ("handler_channel", 1)), ("dropped", ("log_pipeline_failed", 3))]


def test_calls_waiting_for_a_pipeline_that_never_comes_are_bounded_and_their_counts_kept():
    from lambdawrap.companion.deferred import MAX_ABANDONED_CALLS, DeferredSink

    # GIVEN a pipeline that failed to start, and an environment that goes on for 200,000
    # invocations, each with a drop counted
    sink = DeferredSink()
    sink.abandon()
    for n in range(200_000):
        sink.invocation(n)
        sink.dropped("context_not_injected", 1)
    # THEN what waits for SHUTDOWN is bounded (before: 100,000 calls, ~90 MB of the function's
    # memory for invocations that the carry-over file could not hold anyway, and the drops'
    # calls took the invocations' room), the first kept, the rest counted, and the drops added
    # up, none lost
    calls = [(name, args) for name, args, _ in sink.take_calls()]
    kept = [args[0] for name, args in calls if name == "invocation"]
    assert kept == list(range(MAX_ABANDONED_CALLS)), len(kept)
    assert [args for name, args in calls if name == "dropped"] == [("context_not_injected", 200_000), ("startup_backlog", 200_000 - MAX_ABANDONED_CALLS)]


def test_lines_nobody_exports_are_not_held_nor_counted_while_the_pipeline_loads():
    from lambdawrap.companion.deferred import DeferredSink

    # GIVEN OTEL_LOGS_EXPORTER=none, and a flood before the pipeline loads
    sink = DeferredSink(logs_exported=False)
    for n in range(6000):
        if not sink.dropped_log_line(1):
            sink.log_line("x", n, None, "r1")
    # THEN nothing is held and nothing counted, as the log buffer does once it is there
    signals = _signals()
    sink.attach(signals)
    assert sink.take_calls() == [] and "log_buffer_full" not in signals.dropped_by_reason


def test_json_lines_naming_requests_never_announced_are_the_current_request_s_even_in_a_flood(monkeypatch):
    # A user's own JSON naming requests of its own (an upstream `requestId`): on demand those
    # lines are the request under way's, as plain lines are; none is held under an id the
    # platform never announced (it would be held until forgotten).
    from lambdawrap.companion import correlator

    monkeypatch.setattr(correlator, "MAX_OPEN", 8)
    monkeypatch.setattr(correlator, "MAX_PENDING_LOGS", 3)

    def fn(record) -> dict:
        return {"type": "function", "time": "2026-12-01T10:00:00.000Z", "record": record}

    batches = [
        [{"type": "platform.start", "time": "2026-12-01T10:00:00.000Z", "record": {"requestId": "r1"}}] + [fn(f"r1 line {n}") for n in range(5)],
        [fn({"requestId": f"x{n}", "message": "as JSON"}) for n in range(10)] + [fn(f"after {n}") for n in range(3)] + [fn("[ERROR] E: boom")],
    ]
    produced = 5 + 10 + 4

    def sink():
        signals = _signals()
        signals.logs = log_buffer.LogBuffer(signals.dropped, max_lines=6)
        return signals

    fast, full = (_run_flood_through(sink(), batches, announced=(), announced_after=("r1",), flooded=flooded) for flooded in (None, lambda: False))
    assert fast == full
    kept, drops, pending, _ = fast
    assert len(kept) + drops.get("log_buffer_full", 0) + sum(map(len, pending.values())) == produced
    assert pending == {"r1": ["r1 line 0", "r1 line 1", "r1 line 2"]}
    assert {entry[2] for entry in kept} <= {"r1"}  # each kept line names the request under way


def test_a_sink_that_cannot_tell_whether_a_line_fits_gets_every_line_the_whole_way():
    class Asked(Exception):
        pass

    def unable(chars: int) -> bool:
        raise Asked

    fast_signals = _signals()
    fast_signals.dropped_log_line = unable
    fast = _run_flood_through(fast_signals)
    whole = _run_flood_through(_signals(), flooded=lambda: False)
    assert fast == whole and "malformed_telemetry" not in fast[1]


LONG_RUNNING_LOGGER = """
import json
import time

def handler(event, context):
    for n in range(1500):
        print("line", n)
    time.sleep(0.5)  # the lines reach the companion long before the invocation's end
    return "done"
"""


def test_lines_past_the_held_ones_carry_the_span_s_ids_and_keep_their_order(tmp_path):
    from lambdawrap.companion.correlator import MAX_PENDING_LOGS

    task = write_function(tmp_path / "task", LONG_RUNNING_LOGGER)
    with instrumented(task, env={"LAMBDAWRAP_FLUSH": "end"}, timeout_s=30) as (emu, rx):
        # WHEN an invocation prints more lines than are held for its span's ids before it ends
        result = emu.invoke({})
        assert result.json() == "done"
        records = rx.wait_for_logs(lambda r: str(r["body"]).startswith("line "), count=1500, timeout=60)
        span = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id, timeout=60)[0]
    assert 1500 > MAX_PENDING_LOGS
    # THEN every line carries the span's ids, those past the held ones too, in the order printed
    assert {(r["trace_id"], r["span_id"]) for r in records} == {(span["trace_id"], span["span_id"])}
    assert [int(str(r["body"]).split()[1]) for r in records] == list(range(1500))


def test_json_records_delivered_as_objects_keep_their_text_and_init_lines_stay_with_the_init():
    # The JSON log format may come as objects (spec §4): written back as awslambdaric writes
    # them, and what was logged while the module loaded (`"requestId": ""`) is the init's.
    from lambdawrap.companion.correlator import Correlator

    class Lines:
        def __init__(self) -> None:
            self.lines: list = []

        def log_line(self, line, time_ns, ids, request_id) -> None:
            self.lines.append((line, request_id))

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    sink = Lines()
    correlator = Correlator(sink, lambda reason, what: None)
    init_record = {"timestamp": "2026-12-01T10:00:00Z", "level": "WARNING", "message": "loading café ✓", "logger": "root", "requestId": ""}
    correlator.on_telemetry([
        {"type": "platform.initStart", "time": "2026-12-01T10:00:00.000Z", "record": {"phase": "init"}},
        {"type": "function", "time": "2026-12-01T10:00:00.001Z", "record": init_record},
    ])
    assert [line for line, _ in correlator.init.logs] == [json.dumps(init_record, ensure_ascii=False)]
    assert not correlator._open  # nothing held under the empty id


def test_on_managed_instances_the_lines_held_for_requests_under_way_are_bounded_together():
    from lambdawrap.companion import correlator
    from lambdawrap.companion.correlator import Correlator

    # GIVEN Managed Instances running 8 requests at once, each logging 900 JSON lines of
    # 1,100 characters (each request under its own cap of 1 Mi characters held) before any of
    # their records came
    signals = _signals()
    signals.logs = log_buffer.LogBuffer(signals.dropped, max_lines=10**6, max_bytes=10**9)
    corr = Correlator(signals, lambda reason, what: signals.dropped(reason), managed_instances=True)
    rids = [f"m{n}" for n in range(8)]
    corr.on_telemetry([{"type": "platform.start", "time": "2026-12-01T10:00:00.000Z", "record": {"requestId": rid}} for rid in rids])
    produced = 0
    most_held = 0
    for n in range(900):
        corr.on_telemetry([{"type": "function", "time": "2026-12-01T10:00:00.100Z", "record": {"requestId": rid, "message": f"{rid} {n:04d} " + "v" * 1090}} for rid in rids])
        produced += len(rids)
        most_held = max(most_held, sum(len(line) for inv in corr._open.values() for line, _ in inv.logs))
    # THEN what the companion holds for them together stays under its bound (before: each held
    # its own 1 Mi, 7.9 M characters in all, and 1,600 requests could hold 1.6 G)
    assert most_held <= 4 * correlator.MAX_PENDING_CHARS, most_held
    # ... and no line is lost: each is held for its request or went on, named by its own
    kept = signals.logs.take(10**6)
    held = sum(len(inv.logs) for inv in corr._open.values())
    assert len(kept) + held == produced and not signals.dropped_by_reason
    assert all(entry[0].split('"message": "', 1)[1].startswith(entry[3] + " ") for entry in kept), kept[:2]


def _cjk_flood_batches() -> list:
    """A flood of CJK lines (3 bytes a character): once the buffer is full by its bytes, many
    still fit by their characters."""

    def line(text: str) -> dict:
        return {"type": "function", "time": "2026-12-01T10:00:00.500Z", "record": text}

    events = [{"type": "platform.start", "time": "2026-12-01T10:00:00.000Z", "record": {"requestId": "r1"}}]
    events += [line(f"r1 {n:06d} " + "日志" * (100 + n % 400)) for n in range(3000)]
    return [events[i : i + 97] for i in range(0, len(events), 97)]


def test_a_non_ascii_flood_s_lines_are_kept_and_counted_as_the_whole_way_keeps_and_counts_them():
    # GIVEN a buffer bounded in bytes, asked in characters whether a line would be dropped
    signals = _signals()
    counted_early = []
    real = signals.dropped_log_line
    signals.dropped_log_line = lambda chars: real(chars) and not counted_early.append(chars)
    # WHEN a CJK flood goes through the correlator
    fast = _run_flood_through(signals, batches=_cjk_flood_batches(), announced=("r1",))
    # THEN the lines counted early are only those the whole way drops, and all is as the whole
    # way keeps and counts it, within the buffer's bytes
    kept, drops, _, _ = fast
    assert counted_early and drops["log_buffer_full"] >= len(counted_early)
    assert sum(len(entry[0].encode()) for entry in kept) <= 2_000_000
    assert fast == _run_flood_through(_signals(), batches=_cjk_flood_batches(), announced=("r1",), flooded=lambda: False)
