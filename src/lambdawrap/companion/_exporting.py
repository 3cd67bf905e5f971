"""OTLP export for the companion: exporters chosen from the standard OTEL_* variables, a worker
thread that flushes spans, metrics and logs in that priority order, and a budget so that
waiting on a slow collector never holds the invoke phase open longer than allowed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Sequence

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, ObservableCounter, UpDownCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExporter, MetricExportResult, MetricsData, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ..settings import Settings
from ._signals import SpanBuffer

logger = logging.getLogger("lambdawrap.companion")

SPAN_BATCH = 512
RETAINED_BATCHES = 64  # metric/log batches kept for retry when the collector is down
_NEVER_MS = 10**9  # periodic readers only export when we ask them to


def _protocol(signal: str) -> str:
    value = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if value not in ("grpc", "http/protobuf"):
        logger.warning("lambdawrap: OTLP protocol %r is not supported; using http/protobuf", value)
        return "http/protobuf"
    return value


def make_exporters() -> tuple:
    """(span, metric, log) exporters; each reads its OTEL_EXPORTER_OTLP_* settings itself."""
    if _protocol("TRACES") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    if _protocol("METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    if _protocol("LOGS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    return OTLPSpanExporter(), OTLPMetricExporter, OTLPLogExporter()


def temporality(preference: str) -> dict:
    delta, cumulative = AggregationTemporality.DELTA, AggregationTemporality.CUMULATIVE
    if preference == "cumulative":
        return {}
    counters = delta
    return {Counter: counters, Histogram: delta, ObservableCounter: counters, UpDownCounter: cumulative}


class RetainingMetricExporter(MetricExporter):
    """Keeps batches the collector refused and sends them first next time (delta data would
    otherwise be lost for good)."""

    def __init__(self, inner: MetricExporter, on_drop) -> None:
        super().__init__(preferred_temporality=inner._preferred_temporality, preferred_aggregation=inner._preferred_aggregation)
        self._inner = inner
        self._retained: list = []
        self._on_drop = on_drop

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        self._retained.append(metrics_data)
        while self._retained:
            if self._inner.export(self._retained[0], timeout_millis=timeout_millis) != MetricExportResult.SUCCESS:
                while len(self._retained) > RETAINED_BATCHES:
                    self._retained.pop(0)
                    self._on_drop("export_failed")
                return MetricExportResult.FAILURE
            self._retained.pop(0)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis)


class RetainingLogExporter(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter, on_drop) -> None:
        self._inner = inner
        self._retained: list = []
        self._on_drop = on_drop
        self.pending = 0

    def export(self, batch: Sequence) -> LogRecordExportResult:
        self._retained.append(list(batch))
        while self._retained:
            if self._inner.export(self._retained[0]) != LogRecordExportResult.SUCCESS:
                while len(self._retained) > RETAINED_BATCHES:
                    self._on_drop("export_failed", len(self._retained.pop(0)))
                return LogRecordExportResult.FAILURE
            self._retained.pop(0)
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        self._inner.shutdown()


class Pipeline:
    """Owns the SDK providers and exporters, and the one export worker thread."""

    def __init__(self, settings: Settings, resource: Resource, on_drop) -> None:
        span_exporter, metric_exporter_cls, log_exporter = make_exporters()
        self.span_exporter: SpanExporter = span_exporter
        metric_exporter = metric_exporter_cls(preferred_temporality=temporality(settings.metrics_temporality))
        self._metric_reader = PeriodicExportingMetricReader(RetainingMetricExporter(metric_exporter, on_drop), export_interval_millis=_NEVER_MS)
        self.meter_provider = MeterProvider(resource=resource, metric_readers=[self._metric_reader])
        self.logger_provider = LoggerProvider(resource=resource)
        self._log_processor = BatchLogRecordProcessor(RetainingLogExporter(log_exporter, on_drop), schedule_delay_millis=_NEVER_MS, max_queue_size=8192, max_export_batch_size=512)
        self.logger_provider.add_log_record_processor(self._log_processor)
        self.spans: SpanBuffer | None = None
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._requested = 0
        self._completed = 0
        self._deadline = 0.0
        self.exports = 0
        self.last_flush = 0.0
        self._thread = threading.Thread(target=self._run, name="lambdawrap-export", daemon=True)
        self._thread.start()

    def flush(self, wait_s: float, deadline_s: float | None = None) -> bool:
        """Ask the worker to export everything; wait up to wait_s. True if it finished."""
        with self._wake:
            self._requested += 1
            ticket = self._requested
            self._deadline = time.monotonic() + (deadline_s if deadline_s is not None else 30.0)
            self._wake.notify_all()
            end = time.monotonic() + wait_s
            while self._completed < ticket:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(left)
            return True

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._completed >= self._requested:
                    self._wake.wait()
                target = self._requested
                deadline = self._deadline
            try:
                self._export_all(deadline)
            except Exception:  # noqa: BLE001 - the worker must survive any exporter bug
                logger.exception("lambdawrap: export failed")
            with self._wake:
                self._completed = target
                self.last_flush = time.monotonic()
                self._wake.notify_all()

    def _export_all(self, deadline: float) -> None:
        # Priority order: spans, then metrics, then logs.
        while self.spans is not None and len(self.spans) and time.monotonic() < deadline:
            batch = self.spans.take(SPAN_BATCH)
            if self.span_exporter.export(batch) != SpanExportResult.SUCCESS:
                self.spans.give_back(batch)
                break
            self.exports += 1
        left_ms = (deadline - time.monotonic()) * 1000
        if left_ms > 0:
            self._metric_reader.force_flush(timeout_millis=left_ms)
        left_ms = (deadline - time.monotonic()) * 1000
        if left_ms > 0:
            self._log_processor.force_flush(timeout_millis=int(left_ms))
