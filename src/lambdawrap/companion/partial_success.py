"""What a collector's answer says it rejected (OTLP partial success): a 200 whose body counts the
items it refused (over a quota, invalid data) and says why. The exporters read no answer's
body, so those items would be neither exported nor counted; here they are counted as dropped,
and the first rejection of each signal is logged with the collector's words. They are not
sent again: OTLP says a rejected item must not be retried. OTLP/HTTP only (the gRPC exporters
keep their answers to themselves)."""

from __future__ import annotations

import logging
from typing import Callable

logger = logging.getLogger("lambdawrap.companion")

# signal: (the response message's module and class, its count of rejected items, drop reason)
_ANSWERS = {
    "spans": ("opentelemetry.proto.collector.trace.v1.trace_service_pb2", "ExportTraceServiceResponse", "rejected_spans", "rejected_by_collector"),
    "logs": ("opentelemetry.proto.collector.logs.v1.logs_service_pb2", "ExportLogsServiceResponse", "rejected_log_records", "log_rejected_by_collector"),
    # Metric data points rejected are logged, not counted: the counts travel as metrics.
    "metrics": ("opentelemetry.proto.collector.metrics.v1.metrics_service_pb2", "ExportMetricsServiceResponse", "rejected_data_points", None),
}


class PartialSuccessReader:
    """Reads one signal's answers (a transport's `answered`); never raises."""

    def __init__(self, signal: str, on_drop: Callable[..., None]) -> None:
        self._signal = signal
        self._on_drop = on_drop
        self._logged = False
        self._response_class = None

    def __call__(self, body: bytes) -> None:
        try:
            self._read(body)
        except Exception:  # noqa: BLE001 - an answer we cannot read must not fail the export
            logger.debug("lambdawrap: could not read the collector's answer to %s", self._signal, exc_info=True)

    def _read(self, body: bytes) -> None:
        module, name, field, reason = _ANSWERS[self._signal]
        if self._response_class is None:
            import importlib

            self._response_class = getattr(importlib.import_module(module), name)
        answer = self._response_class()
        answer.ParseFromString(body)
        if not answer.HasField("partial_success"):
            return
        rejected = getattr(answer.partial_success, field)
        if rejected > 0 and reason is not None:
            self._on_drop(reason, rejected)
        if (rejected > 0 or answer.partial_success.error_message) and not self._logged:
            self._logged = True
            logger.warning("lambdawrap: the collector rejected %d %s of a request (%s)%s; logged once", rejected, self._signal if self._signal != "metrics" else "metric data points", answer.partial_success.error_message or "no reason given", ", counted as dropped" if reason and rejected else "")
