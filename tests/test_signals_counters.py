"""The companion's measurements, handed to the OpenTelemetry SDK when the metrics are collected:
counters summed per series, so that a flood of drops costs a dict update each, not the SDK's
measurement path; histogram values recorded in one pass, aggregated exactly as the SDK
aggregates them one by one. Nothing measured is lost or exported twice, whichever thread
measures, and what waits for a collection is bounded."""

from __future__ import annotations

import random
import threading
from typing import Iterator

from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader, Sum
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource

from lambdawrap.companion import signals as signals_module
from lambdawrap.companion.signals import Signals
from lambdawrap.shared.settings import Settings


def make_signals() -> tuple:
    reader = InMemoryMetricReader(preferred_temporality={Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA})
    return Signals(Settings(), Resource({}), MeterProvider(metric_readers=[reader])), reader


def collected(signals: Signals, reader: InMemoryMetricReader) -> dict:
    """{(metric, attributes): value} of one collection, as the pipeline makes it."""
    signals.settle_measurements()
    found: dict = {}
    for metric in collection(reader):
        if not isinstance(metric.data, Sum):
            continue  # the buffer's high-water gauge
        for point in metric.data.data_points:
            key = (metric.name, tuple(sorted(point.attributes.items())))
            found[key] = found.get(key, 0) + point.value
    return found


def collection(reader: InMemoryMetricReader) -> Iterator:
    """The metrics of one collection."""
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            yield from scope_metrics.metrics


def test_a_flood_of_drops_is_one_data_point_with_the_whole_count():
    signals, reader = make_signals()
    for _ in range(10_000):
        signals.dropped("log_buffer_full")
    signals.dropped("span_limit", 7)
    assert collected(signals, reader) == {
        ("lambdawrap.dropped", (("reason", "log_buffer_full"),)): 10_000,
        ("lambdawrap.dropped", (("reason", "span_limit"),)): 7,
    }
    assert signals.counted[("lambdawrap.dropped", (("reason", "log_buffer_full"),))] == 10_000


def test_log_lines_beyond_the_buffer_are_counted_in_one_report_and_never_lost():
    # GIVEN a full log buffer and a flood of lines on top of it
    signals, reader = make_signals()
    reports = []
    drop = signals.logs._on_drop
    signals.logs._on_drop = lambda reason, count: (reports.append((reason, count)), drop(reason, count))
    capacity = 5000  # log_buffer.MAX_LINES; 10-byte lines stay far below MAX_BYTES
    for i in range(capacity + 12_345):
        signals.log_line(f"line {i:05d}", i, None, "rid")
    # THEN the buffer holds its bound, and the drops wait to be counted in one report: the
    # collection counts them all, and once
    assert len(signals.logs) == capacity and reports == []
    key = ("lambdawrap.dropped", (("reason", "log_buffer_full"),))
    assert collected(signals, reader) == {key: 12_345} and reports == [("log_buffer_full", 12_345)]
    assert collected(signals, reader) == {}
    # AND drops after the last collection are in the totals an ending environment carries over
    for i in range(3):
        signals.log_line("one more", i, None, "rid")
    assert signals.counted[key] == 12_348 and signals.dropped_by_reason["log_buffer_full"] == 12_348
    assert collected(signals, reader) == {key: 3}


def test_a_reader_of_the_totals_waits_for_a_report_of_log_drops_under_way():
    # GIVEN the export worker reporting the log buffer's drops, held inside the report
    signals, _ = make_signals()
    for i in range(5000 + 100):
        signals.log_line("x", i, None, "rid")
    inside, release = threading.Event(), threading.Event()
    drop = signals.logs._on_drop
    signals.logs._on_drop = lambda reason, count: (inside.set(), release.wait(60), drop(reason, count))
    worker = threading.Thread(target=signals.settle_measurements)
    worker.start()
    assert inside.wait(60)
    # WHEN the loop reads the totals meanwhile (an environment ending carries them over)
    seen = []
    reader = threading.Thread(target=lambda: seen.append(signals.counted[("lambdawrap.dropped", (("reason", "log_buffer_full"),))]))
    reader.start()
    reader.join(0.2)
    # THEN it waits for the report, and sees the 100 drops (never a moment with them nowhere)
    assert reader.is_alive()
    release.set()
    worker.join(60), reader.join(60)
    assert seen == [100]


def test_counts_after_a_collection_go_with_the_next_one_once():
    signals, reader = make_signals()
    signals.internal_errors("function", 2)
    assert collected(signals, reader) == {("lambdawrap.internal_errors", (("lambdawrap.process", "function"),)): 2}
    assert collected(signals, reader) == {}  # delta: nothing new, nothing again
    signals.internal_errors("function")
    signals.internal_errors("companion")
    assert collected(signals, reader) == {
        ("lambdawrap.internal_errors", (("lambdawrap.process", "function"),)): 1,
        ("lambdawrap.internal_errors", (("lambdawrap.process", "companion"),)): 1,
    }


def test_counting_from_threads_while_collecting_loses_nothing():
    signals, reader = make_signals()
    per_thread, threads = 5_000, 4
    start = threading.Barrier(threads + 1)
    total = {"value": 0}
    counting = [threading.Thread(target=lambda: (start.wait(), [signals.dropped("log_buffer_full") for _ in range(per_thread)])) for _ in range(threads)]
    for thread in counting:
        thread.start()
    start.wait()
    while any(thread.is_alive() for thread in counting):
        total["value"] += sum(collected(signals, reader).values())
    for thread in counting:
        thread.join()
    total["value"] += sum(collected(signals, reader).values())
    assert total["value"] == per_thread * threads


def histogram_points(reader: InMemoryMetricReader, settle=None) -> dict:
    """{metric: (count, sum, min, max, bucket_counts, bounds)} of one collection."""
    if settle is not None:
        settle()
    found: dict = {}
    for metric in collection(reader):
        if isinstance(metric.data, HistogramData):
            for point in metric.data.data_points:
                found[metric.name] = (point.count, point.sum, point.min, point.max, tuple(point.bucket_counts), tuple(point.explicit_bounds))
    return found


def report(signals: Signals, billed: float, memory_mb: int) -> None:
    signals.report({"metrics": {"billedDurationMs": billed, "maxMemoryUsedMB": memory_mb}})


def test_histogram_values_aggregate_as_the_sdk_records_them_one_by_one():
    # GIVEN the platform's reports of 500 invocations, and the same values recorded straight
    # into SDK histograms of the same names and boundaries
    signals, reader = make_signals()
    direct_reader = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    meter = MeterProvider(metric_readers=[direct_reader]).get_meter("direct")
    billed = meter.create_histogram("lambdawrap.billed_duration", unit="s", explicit_bucket_boundaries_advisory=signals_module._DURATION_BUCKETS_S)
    memory = meter.create_histogram("faas.mem_usage", unit="By", explicit_bucket_boundaries_advisory=signals_module._MEMORY_BUCKETS_BY)
    rng = random.Random(15)
    for _ in range(500):
        b, m = rng.choice([1, 2, 3, 7, 100, 1500, 900_000]) * rng.random(), rng.randint(20, 10_240)
        report(signals, b, m)
        billed.record(b / 1000)
        memory.record(m * 1024 * 1024)
    # THEN one collection gives the same points: count, sum, min, max and every bucket
    ours = histogram_points(reader, signals.settle_measurements)
    assert set(ours) == {"lambdawrap.billed_duration", "faas.mem_usage"}
    assert ours == histogram_points(direct_reader)
    assert ours["lambdawrap.billed_duration"][0] == 500


def test_histogram_values_after_a_collection_go_with_the_next_one_once():
    signals, reader = make_signals()
    for _ in range(3):
        report(signals, 5, 64)
    assert histogram_points(reader, signals.settle_measurements)["faas.mem_usage"][0] == 3
    assert "faas.mem_usage" not in histogram_points(reader, signals.settle_measurements)  # delta: nothing new
    report(signals, 9, 128)
    assert histogram_points(reader, signals.settle_measurements)["faas.mem_usage"][:2] == (1, 128 * 1024 * 1024)


def test_what_waits_for_a_collection_is_bounded_and_still_all_recorded():
    # GIVEN no collection for a long while (a collector that refuses the metrics holds it back)
    signals, reader = make_signals()
    waiting = []
    for _ in range(3 * signals_module.MAX_UNRECORDED):
        report(signals, 1, 64)
        waiting.append(len(signals._unrecorded))
    # THEN no more than the bound ever waits, and the next collection has every value
    assert max(waiting) < signals_module.MAX_UNRECORDED
    assert histogram_points(reader, signals.settle_measurements)["lambdawrap.billed_duration"][0] == 3 * signals_module.MAX_UNRECORDED


def test_values_measured_while_another_thread_collects_are_each_recorded_once():
    signals, reader = make_signals()
    total = 20_000
    done = threading.Event()
    counts = []

    def collect_until_done() -> None:
        while not done.is_set():
            counts.append(histogram_points(reader, signals.settle_measurements).get("faas.mem_usage", (0,))[0])
        counts.append(histogram_points(reader, signals.settle_measurements).get("faas.mem_usage", (0,))[0])

    worker = threading.Thread(target=collect_until_done)
    worker.start()
    for _ in range(total):
        report(signals, 1, 64)
    done.set()
    worker.join(60)
    assert sum(counts) == total and len(counts) > 1


def first_points(reader: InMemoryMetricReader) -> dict:
    """{metric: (start, time)} of the first data point of each metric in one collection."""
    found: dict = {}
    for metric in collection(reader):
        point = metric.data.data_points[0]
        found[metric.name] = (point.start_time_unix_nano, point.time_unix_nano)
    return found


def test_a_series_first_point_begins_when_its_first_value_came_not_at_the_collection():
    # GIVEN a counter and a histogram series whose first values come 0.2 s before a collection
    import time

    signals, reader = make_signals()
    measured_at = time.time_ns()
    signals.internal_errors("function")
    report(signals, 3, 64)
    first_values_in = time.time_ns()  # (a busy machine may hold this thread between any two lines)
    time.sleep(0.2)
    report(signals, 4, 64)  # later values of the series wait for the collection
    signals.internal_errors("function")
    signals.settle_measurements()
    points = first_points(reader)
    # THEN each point covers the time since its series' first value, as recording each value
    # as it came would have it
    for name in ("lambdawrap.internal_errors", "lambdawrap.billed_duration", "faas.mem_usage"):
        start, end = points[name]
        assert measured_at <= start <= first_values_in and end - start >= 200_000_000, (name, start - measured_at, end - start)
    assert histogram_points(reader) == {}  # nothing new since (delta), and nothing twice


def errors_of_a_failed_init(told: list, phase_before: str = "init", unseen: bool = False) -> float:
    """faas.errors counted for an init the platform told of with `told` (telemetry events), or
    that failed unseen (before the companion could subscribe), after a phase known beforehand."""
    from lambdawrap.companion.correlator import Correlator

    signals, reader = make_signals()
    correlator = Correlator(signals, lambda reason, detail: signals.dropped(reason))
    correlator.init.phase = phase_before  # as the companion sets it where an init ran before in the sandbox
    if unseen:
        correlator.init_failed_unseen(1_700_000_000_000_000_000)
    correlator.on_telemetry([{"time": "2026-12-05T00:00:00.000Z", "type": f"platform.{kind}", "record": record} for kind, record in told])
    correlator.finish_unreported("failure")
    return sum(value for (name, _), value in collected(signals, reader).items() if name == "faas.errors")


def test_a_failed_init_s_run_inside_the_invocation_is_the_caller_s_error_however_little_was_told():
    failed = {"phase": "invoke", "status": "error", "errorType": "Runtime.ImportModuleError"}
    # GIVEN a failed init run again inside the first invocation (the platform's suppressed
    # init) THEN it is one invocation error: told whole; its initStart lost (a flood's
    # logsDropped: the phase read from initRuntimeDone and initReport); or failed before the
    # companion could subscribe (before: both counted as the init phase's, and the caller's
    # failure was counted nowhere)
    assert errors_of_a_failed_init([("initStart", {"phase": "invoke"}), ("initRuntimeDone", failed), ("initReport", {"phase": "invoke", "metrics": {"durationMs": 5.0}})]) == 1
    assert errors_of_a_failed_init([("initRuntimeDone", failed), ("initReport", {"phase": "invoke", "metrics": {"durationMs": 5.0}})]) == 1
    assert errors_of_a_failed_init([], phase_before="invoke", unseen=True) == 1
    # ... and the init phase's own attempt none: no caller waited on it
    assert errors_of_a_failed_init([("initStart", {"phase": "init"}), ("initRuntimeDone", dict(failed, phase="init")), ("initReport", {"phase": "init", "metrics": {"durationMs": 5.0}})]) == 0


def test_a_report_s_numbers_no_environment_could_measure_are_missing_values(caplog):
    # GIVEN the platform's reports of a well-formed invocation and of malformed ones: negative,
    # and past anything Lambda measures (a day billed, a TiB of memory)
    signals, reader = make_signals()
    report(signals, 12, 128)
    for billed, memory in ((-5, -1), (9e15, 9e15), (86_400_001, 2**21)):
        report(signals, billed, memory)
    # THEN only the well-formed values are recorded (before: a negative value logged an SDK
    # warning at each report, and a huge one skewed the histograms' sums and max)
    points = histogram_points(reader, signals.settle_measurements)
    assert points["lambdawrap.billed_duration"][:4] == (1, 0.012, 0.012, 0.012)
    assert points["faas.mem_usage"][:4] == (1, 128 * 1024 * 1024, 128 * 1024 * 1024, 128 * 1024 * 1024)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
