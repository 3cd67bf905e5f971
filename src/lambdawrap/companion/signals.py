"""The correlator's sink: turns finished invocations into spans (span_building), metrics (an SDK
MeterProvider, delta temporality by default) and log records (log_buffer), and counts what is
dropped, by reason.

Measurements reach the SDK when the metrics are collected (`settle_measurements`, which the
pipeline calls first), not as they are made: the SDK's path for one measurement costs ~10 µs,
more on the cold caches of each invocation's wake-up, where a pass over many runs hot.
Counters are summed here and handed over once per series (a log flood drops hundreds of
thousands of lines, each counted); histogram values wait in a list and are recorded in one
pass, which the SDK aggregates exactly as it would have one by one (no exemplars either way:
nothing is recorded inside a span's context here). A series' first value goes straight in:
the SDK starts a series' first point at its first value, and a point begun at the collection
would claim its values came in a fraction of a millisecond. At most MAX_UNRECORDED values
wait: a collector that refuses the metrics holds collection back, and the values then go
straight to the SDK.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource

from lambdawrap import __version__
from lambdawrap.companion.correlator import InitFacts, Invocation, platform_duration_ms, platform_number, record_extras, trigger_of
from lambdawrap.companion.log_buffer import LogBuffer
from lambdawrap.companion.span_building import SpanBuffer, SpanBuilder
from lambdawrap.shared import records
from lambdawrap.shared.sampling import make_sampler
from lambdawrap.shared.semconv import SCHEMA_URL
from lambdawrap.shared.settings import Settings

logger = logging.getLogger("lambdawrap.companion")

_DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0, 300.0, 900.0)
_MIB = 1024 * 1024
# More memory than any environment has (Lambda's 10,240 MB; a Managed Instance's) is no
# measurement: a malformed report's, whose one value would skew the histogram's sum.
MAX_MEMORY_MB = 1024 * 1024
# Memory used, in bytes, up to Lambda's largest memory size (10,240 MB): the SDK's default
# boundaries (0 to 10,000) would put every value past the last one.
_MEMORY_BUCKETS_BY = tuple(mb * _MIB for mb in (16, 32, 64, 128, 256, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192, 10240))
# Histogram values that may wait for a collection; beyond, they go straight to the SDK.
MAX_UNRECORDED = 1024
# Counters whose values an environment that ends unexported hands to the next (see carryover).
CARRIED_COUNTERS = ("faas.invocations", "faas.errors", "faas.timeouts", "lambdawrap.crashes", "faas.coldstarts", "lambdawrap.init_errors", "lambdawrap.internal_errors", "lambdawrap.dropped")


def counter_key(name: str, attributes: object) -> tuple:
    """How a counter's series is named in Signals.counted and in what the exporter acknowledges."""
    return name, tuple(sorted(dict(attributes or {}).items()))


class Signals:
    """Builds spans into the buffer, records metrics, keeps log lines for export."""

    def __init__(self, settings: Settings, resource: Resource, meter_provider: MeterProvider) -> None:
        self.settings = settings
        self.resource = resource
        sampled = make_sampler(settings.sampler, settings.sampler_ratio)
        self.builder = SpanBuilder(resource, settings.function_name, lambda trace_id: sampled(trace_id, None), settings.span_limits)
        self.spans = SpanBuffer(settings.buffer_max_spans, self.dropped)
        self.logs = LogBuffer(self.dropped)
        self._logs_exported = "logs" in settings.exported_signals
        meter = meter_provider.get_meter("lambdawrap", __version__, schema_url=SCHEMA_URL)  # the faas.* names are the conventions'
        self._counters = {
            "faas.invocations": meter.create_counter("faas.invocations", unit="{invocation}", description="Invocations of the function"),
            "faas.errors": meter.create_counter("faas.errors", unit="{error}", description="Invocations (and inits) that ended in an error"),
            "faas.timeouts": meter.create_counter("faas.timeouts", unit="{timeout}", description="Invocations that timed out"),
            "lambdawrap.crashes": meter.create_counter("lambdawrap.crashes", unit="{crash}", description="Invocations whose runtime exited (Runtime.ExitError, out of memory)"),
            "faas.coldstarts": meter.create_counter("faas.coldstarts", unit="{coldstart}", description="Invocations that were cold starts"),
            "lambdawrap.init_errors": meter.create_counter("lambdawrap.init_errors", unit="{error}", description="Inits that failed (the function's import, its handler, a required secret)"),
            "lambdawrap.dropped": meter.create_counter("lambdawrap.dropped", unit="{item}", description="Telemetry dropped by lambdawrap, by reason"),
            "lambdawrap.internal_errors": meter.create_counter("lambdawrap.internal_errors", unit="{error}", description="lambdawrap's own failures, by process (function or companion); the function was unaffected"),
        }
        self._duration = meter.create_histogram("faas.invoke_duration", unit="s", description="Duration of the handler", explicit_bucket_boundaries_advisory=_DURATION_BUCKETS_S)
        self._init_duration = meter.create_histogram("faas.init_duration", unit="s", description="Duration of the environment's init", explicit_bucket_boundaries_advisory=_DURATION_BUCKETS_S)
        # In seconds, as the conventions have every duration (the platform reports milliseconds):
        # comparable with faas.invoke_duration, bucket for bucket.
        self._billed = meter.create_histogram("lambdawrap.billed_duration", unit="s", description="Billed duration (platform.report)", explicit_bucket_boundaries_advisory=_DURATION_BUCKETS_S)
        self._memory = meter.create_histogram("faas.mem_usage", unit="By", description="Max memory used (platform.report)", explicit_bucket_boundaries_advisory=_MEMORY_BUCKETS_BY)
        meter.create_observable_gauge("lambdawrap.buffer.high_water", callbacks=[self._observe_high_water], unit="{span}", description="Most spans the export buffer held at once in this environment (its bound is LAMBDAWRAP_BUFFER_MAX_SPANS)")
        self._dropped_by_reason: collections.Counter = collections.Counter()
        # Every counter's total so far, by (name, attributes): what is not acknowledged by the
        # collector when the environment ends is carried over to the next one.
        self._counted: collections.Counter = collections.Counter()
        # Counted since the last collection, by (name, attributes); drops come from several threads.
        self._unsettled: collections.Counter = collections.Counter()
        # Histogram values since the last collection: (histogram, value, attributes).
        self._unrecorded: list = []
        self._series_begun: set = set()  # (histogram, attributes) that have had a first value
        self._counts_lock = threading.Lock()

    def _observe_high_water(self, options: Any) -> list:
        return [Observation(self.spans.high_water, {"lambdawrap.buffer.capacity": self.spans.capacity})]

    @property
    def counted(self) -> collections.Counter:
        """Every counter's total so far, by (name, attributes), the log buffer's drops included."""
        self.logs.report_drops()
        return self._counted

    @property
    def dropped_by_reason(self) -> collections.Counter:
        self.logs.report_drops()
        return self._dropped_by_reason

    def _add(self, name: str, value: float, attributes: dict) -> None:
        key = counter_key(name, attributes)
        with self._counts_lock:
            first = key not in self._counted
            self._counted[key] += value
            if not first:
                self._unsettled[key] += value
                return
        self._counters[name].add(value, attributes)  # the series begins now (below)

    def _measure(self, histogram: Any, value: float, attributes: dict | None = None) -> None:
        series = (histogram, tuple(attributes.items()) if attributes else ())
        with self._counts_lock:
            if series in self._series_begun:
                self._unrecorded.append((histogram, value, attributes))
                if len(self._unrecorded) < MAX_UNRECORDED:
                    return
                unrecorded, self._unrecorded = self._unrecorded, []
            else:
                self._series_begun.add(series)
                unrecorded = [(histogram, value, attributes)]
        _record_all(unrecorded)

    def settle_measurements(self) -> None:
        """Hand what was measured since the last call to the SDK: one add per counter series,
        and every histogram value in order."""
        self.logs.report_drops()
        with self._counts_lock:
            unsettled, self._unsettled = self._unsettled, collections.Counter()
            unrecorded, self._unrecorded = self._unrecorded, []
        for (name, attributes), value in unsettled.items():
            self._counters[name].add(value, dict(attributes))
        _record_all(unrecorded)

    def count_again(self, counts: list) -> None:
        """Counter values, [(counter_key, value)], of a batch the collector refused: they go in
        the next batch, counted once in `counted` (added to the SDK only)."""
        with self._counts_lock:
            for key, value in counts:
                if key[0] in self._counters:
                    self._unsettled[key] += value

    # Sink ----------------------------------------------------------------------

    def dropped(self, reason: str, count: int = 1) -> None:
        with self._counts_lock:  # the export threads count too (a flush's signals go at once)
            self._dropped_by_reason[reason] += count
        self._add("lambdawrap.dropped", count, {"reason": reason})

    def internal_errors(self, process: str, count: int = 1) -> None:
        self._add("lambdawrap.internal_errors", count, {"lambdawrap.process": process})

    def restore_counts(self, counts: list) -> None:
        """Counter values an earlier environment could not export (it ended while the collector
        was unreachable): added to ours, so that they go out with our next export."""
        for count in counts if isinstance(counts, list) else ():
            try:
                name, attributes, value = count["name"], dict(count["attributes"]), count["value"]
                if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0 or name not in CARRIED_COUNTERS:
                    continue
                if name == "lambdawrap.dropped":
                    self.dropped(str(attributes.get("reason", "unknown")), value)
                else:
                    self._add(name, value, {str(k): v for k, v in attributes.items() if isinstance(v, (str, bool, int, float))})
            except (KeyError, TypeError, ValueError, AttributeError):
                continue

    def invocation(self, inv: Invocation) -> bool:
        """Make the invocation's span and count it; True once done with `inv` (the correlator
        may then let go of what only the span needed)."""
        try:
            span, facts = self.builder.invocation(inv)
        except Exception:  # noqa: BLE001 - counted, so the invocation is still accounted for
            logger.warning("lambdawrap: the span of invocation %s could not be built", inv.request_id, exc_info=True)
            self.dropped("malformed_record")
            record_extras(self, inv.end or {})  # the function's spans it carried stand by themselves
            return True
        if span is None:
            self.dropped("sampled_out")
        else:
            self.spans.add(span)
        record_extras(self, inv.end or {})
        labels = {"faas.trigger": facts.trigger}
        self._add("faas.invocations", 1, labels)
        if facts.error:
            self._add("faas.errors", 1, labels)
        if facts.cold:
            self._add("faas.coldstarts", 1, labels)
        if facts.failure == "timeout":
            self._add("faas.timeouts", 1, labels)
        elif facts.failure in ("crash", "out_of_memory"):
            self._add("lambdawrap.crashes", 1, {})
        self._measure(self._duration, facts.duration_s, labels)
        return True

    def init_span(self, init: InitFacts, parent: Invocation | None) -> None:
        # The init's lines carry the init span's ids, the span they were printed in; with no
        # init span (sampled out, its start unseen) the first invocation's, whose trace it joins.
        ids = parent.ids if parent is not None else None
        try:
            self._init_span(init, parent, ids)
        finally:
            # The lines past those held wait in the buffer with this list: told whatever
            # happened here, they wait no more.
            if not init.late_ids.known:
                init.late_ids.fill(ids)

    def _init_span(self, init: InitFacts, parent: Invocation | None, ids: tuple | None) -> None:
        span = self.builder.init(init, parent)
        if span is not None:
            self.spans.add(span)
            ids = (f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}")
        elif init.start_ns is not None:
            self.dropped("sampled_out")
        labels = {"faas.trigger": trigger_of(parent)}
        if init.duration_ms is not None and not init.worker:
            self._measure(self._init_duration, init.duration_ms / 1000, labels)
        if init.failed:
            self._add("lambdawrap.init_errors", 1, {})
            # An init that failed in the init phase is run again inside the invocation (the
            # platform's suppressed init): that attempt's failure is the caller's, once. Its
            # span stands for the invocation, which never reached the function: counted as one,
            # a cold start, so that no error goes without its invocation.
            if init.phase != "init":
                self._add("faas.invocations", 1, labels)
                self._add("faas.coldstarts", 1, labels)
                self._add("faas.errors", 1, labels)
                if init.status == "timeout":
                    self._add("faas.timeouts", 1, labels)
        for line, time_ns in init.logs:
            self.log_line(line, time_ns, ids, None)
        # The lines past those held are in the buffer already, with this list for their ids.
        init.late_ids.fill(ids)

    def report(self, record: dict, trigger: str = "other") -> None:
        metrics = record.get("metrics")
        if not isinstance(metrics, dict):
            return
        billed = platform_duration_ms(metrics.get("billedDurationMs"))
        if billed is not None:
            self._measure(self._billed, billed / 1000)
        memory = platform_number(metrics.get("maxMemoryUsedMB"))
        if memory is not None and 0 <= memory <= MAX_MEMORY_MB:
            self._measure(self._memory, int(memory * _MIB), {"faas.trigger": trigger})

    def log_line(self, line: str, time_ns: int, ids: tuple | list | None, request_id: str | None) -> None:
        if self._logs_exported:
            self.logs.add(line, time_ns, ids, request_id)

    def dropped_log_line(self, chars: int) -> bool:
        """Whether a line of `chars` characters would be dropped now; if so it is counted. With
        logs not exported (OTEL_LOGS_EXPORTER=none) every line would be, and none is counted:
        nobody asked for them."""
        return not self._logs_exported or self.logs.drop_if_full(chars)

    def user_spans(self, spans: list) -> None:
        """Spans the user's code made with the OpenTelemetry API, as the bridge sent them."""
        for raw in spans if isinstance(spans, list) else [None]:
            if records.span_problem(raw) is not None:
                self.dropped("malformed_span")
                continue
            try:
                self.spans.add(self.builder.user_span(raw))
            except (AttributeError, KeyError, TypeError, ValueError, OverflowError, RecursionError):
                self.dropped("malformed_span")


def _record_all(unrecorded: list) -> None:
    for histogram, value, attributes in unrecorded:
        histogram.record(value, attributes)
