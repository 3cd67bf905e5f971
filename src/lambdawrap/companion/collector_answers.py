"""What a collector's answers say it refused, which the exporters leave unread (OTLP/HTTP only:
the gRPC exporters keep their answers to themselves).

- An OTLP partial success: a 200 whose body counts the items the collector rejected (over a
  quota, invalid data) and says why. Those items would be neither exported nor counted; they
  are counted as dropped, and the first rejection of each signal is logged in the collector's
  words. Not sent again: OTLP says a rejected item must not be retried.
- A request refused as such, with a 4xx other than 408 and 429: the same bytes would be
  refused again, and a batch given back to the buffer would come first at every flush, holding
  back every later span of the environment. 413 (too large) asks for smaller requests; any
  other is the batch's end, counted as rejected."""

from __future__ import annotations

import logging
from typing import Callable

logger = logging.getLogger("lambdawrap.companion")

# The drop reason of items a collector refused, by signal. Metric data points rejected are
# logged, not counted: the counts travel as metrics.
REJECTED_REASONS = {"spans": "rejected_by_collector", "logs": "log_rejected_by_collector"}

# signal: (the response message's module and class, its count of rejected items)
_ANSWERS = {
    "spans": ("opentelemetry.proto.collector.trace.v1.trace_service_pb2", "ExportTraceServiceResponse", "rejected_spans"),
    "logs": ("opentelemetry.proto.collector.logs.v1.logs_service_pb2", "ExportLogsServiceResponse", "rejected_log_records"),
    "metrics": ("opentelemetry.proto.collector.metrics.v1.metrics_service_pb2", "ExportMetricsServiceResponse", "rejected_data_points"),
}


class PartialSuccessReader:
    """Reads one signal's answers (a transport's `answered`), telling `on_rejected(signal,
    count)` of the items rejected (spans and log records); never raises."""

    def __init__(self, signal: str, on_rejected: Callable[[str, int], None]) -> None:
        self._signal = signal
        self._on_rejected = on_rejected
        self._logged = False
        self._response_class = None

    def __call__(self, body: bytes) -> None:
        try:
            self._read(body)
        except Exception:  # noqa: BLE001 - an answer we cannot read must not fail the export
            logger.debug("lambdawrap: could not read the collector's answer to %s", self._signal, exc_info=True)

    def _read(self, body: bytes) -> None:
        module, name, field = _ANSWERS[self._signal]
        counted = self._signal in REJECTED_REASONS
        if self._response_class is None:
            import importlib

            self._response_class = getattr(importlib.import_module(module), name)
        answer = self._response_class()
        answer.ParseFromString(body)
        if not answer.HasField("partial_success"):
            return
        rejected = getattr(answer.partial_success, field)
        if rejected > 0 and counted:
            self._on_rejected(self._signal, rejected)
        if (rejected > 0 or answer.partial_success.error_message) and not self._logged:
            self._logged = True
            logger.warning("lambdawrap: the collector rejected %d %s of a request (%s)%s; logged once", rejected, self._signal if self._signal != "metrics" else "metric data points", answer.partial_success.error_message or "no reason given", ", counted as dropped" if counted and rejected else "")


RETRY_LATER = (408, 429)  # 4xx statuses that say "not now", not "not this"


def refusal(status: int | None) -> str | None:
    """"too_large", "refused" or None (sent, or worth sending again) for the status of the last
    answer to an export that failed."""
    if status == 413:
        return "too_large"
    if status is not None and 400 <= status < 500 and status not in RETRY_LATER:
        return "refused"
    return None


class RefusalLog:
    """Logs the first refusal of each signal and status, with what is done about it."""

    def __init__(self) -> None:
        self._logged: set = set()

    def __call__(self, signal: str, status: int, count: int, outcome: str) -> None:
        if (signal, status) not in self._logged:
            self._logged.add((signal, status))
            logger.warning("lambdawrap: the collector refused a request of %d %s with HTTP %d: %s; logged once", count, signal, status, outcome)
