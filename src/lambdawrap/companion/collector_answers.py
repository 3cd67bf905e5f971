"""What a collector's answers say it refused, which the exporters leave unread.

- An OTLP partial success: an accepted request whose answer counts the items the collector
  rejected (over a quota, invalid data) and says why. Those items would be neither exported
  nor counted; they are counted as dropped, and the first rejection of each signal is logged in
  the collector's words. Not sent again: OTLP says a rejected item must not be retried.
- A request refused as such: over OTLP/HTTP a 4xx other than 408 and 429, over OTLP/gRPC a
  code OTLP does not retry, short of a server error. The same bytes would be refused again,
  and a batch given back to the buffer would come first at every flush, holding back every
  later span of the environment. 413 (too large) asks for smaller requests; any other is the
  batch's end, counted as rejected.

- A request answered "not before N seconds" (HTTP Retry-After with 429 or a 5xx, a gRPC
  RetryInfo): the exporter waits that long within one export only if its timeout allows, and
  gives up otherwise; the next flushes then leave that signal's items in their buffer until the
  time is past (`Answers.hold_off`), rather than asking a throttling collector again at every
  invocation. SHUTDOWN sends regardless: it is the last chance.

The HTTP transport (otlp_transport) and the gRPC stub's tap (grpc_answers) hand the answers
here the same way (`Answers`)."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Callable

logger = logging.getLogger("lambdawrap.companion")

# The drop reason of items a collector refused, by signal. Metric data points rejected are
# logged, not counted: the counts travel as metrics.
REJECTED_REASONS = {"spans": "rejected_by_collector", "logs": "log_rejected_by_collector"}
# Items of a request the collector took whole and did not answer within the timeout, twice in a
# row: stored or not, nobody can tell; sent again at every flush, a slow collector stored each
# batch as many times, and they were counted as lost all the same at SHUTDOWN.
UNANSWERED_REASONS = {"spans": "unanswered", "logs": "log_unanswered"}

# signal: (the response message's module and class, its count of rejected items)
_ANSWERS = {
    "spans": ("opentelemetry.proto.collector.trace.v1.trace_service_pb2", "ExportTraceServiceResponse", "rejected_spans"),
    "logs": ("opentelemetry.proto.collector.logs.v1.logs_service_pb2", "ExportLogsServiceResponse", "rejected_log_records"),
    "metrics": ("opentelemetry.proto.collector.metrics.v1.metrics_service_pb2", "ExportMetricsServiceResponse", "rejected_data_points"),
}


# The longest a collector's "retry after" holds a signal back: one asking for hours (a proxy's
# maintenance page) would otherwise keep every span in the buffer, and drop the overflow, until
# SHUTDOWN.
MAX_HOLD_OFF_S = 60.0
# The HTTP statuses whose Retry-After the exporters honour (they retry these).
RETRY_AFTER_STATUSES = frozenset({429, 502, 503, 504})


class Answers:
    """Where a sender leaves what a collector answered: each accepted request's answer for
    `answered`, the status of each thread's last answer (`last_status`), and until when the
    collector asked not to be sent to (`hold_off`)."""

    def __init__(self) -> None:
        # Told each accepted request's answer: the exporters read none, and an OTLP partial
        # success there says how many items the collector rejected.
        self.answered: Callable[[object], None] | None = None
        # Told each request that failed in a way the exporter retries (no answer, a 429 or 5xx
        # it names, gRPC's retryable codes), on the thread that made it: the retries come
        # seconds apart, and a flush need not wait for them.
        self.failed: Callable[[], None] | None = None
        self._answers = threading.local()
        # Until when, by each clock; shared by the threads, unlike the last status.
        self._not_before = (0.0, 0.0)

    def hold_off(self, seconds: float) -> None:
        """The collector asked for no request before `seconds` from now (at most
        MAX_HOLD_OFF_S); 0 or less: it took a request, nothing is held."""
        wait = min(seconds, MAX_HOLD_OFF_S) if seconds > 0 else 0.0
        self._not_before = (time.time() + wait, time.monotonic() + wait) if wait else (0.0, 0.0)

    def tell_failed(self) -> None:
        if self.failed is not None:
            self.failed()

    def held_off(self) -> bool:
        """Whether the collector's last "retry after" is still to come, by both clocks: the
        monotonic one may stand still while the environment is frozen (a sparse function's
        spans would wait hours), the wall clock may be set back."""
        wall, monotonic = self._not_before
        return wall > time.time() and monotonic > time.monotonic()

    @property
    def last_status(self) -> int | str | None:
        """The status of the last answer to a request made on this thread: an HTTP status, or
        a gRPC code's name (None: no answer, or none since it was set to None).
        The exporters report a failure without it, and a request refused as such is not worth
        sending again. Per thread: a flush sends its signals from threads of their own, and
        SHUTDOWN from another."""
        return getattr(self._answers, "status", None)

    @last_status.setter
    def last_status(self, status: int | str | None) -> None:
        self._answers.status = status

    @property
    def unanswered(self) -> bool:
        """Whether a request made on this thread since it was set to False went whole and its
        answer did not come in time (the collector may have stored it)."""
        return getattr(self._answers, "unanswered", False)

    @unanswered.setter
    def unanswered(self, value: bool) -> None:
        self._answers.unanswered = value

    @property
    def last_request_s(self) -> float | None:
        """How long the last request made on this thread took, answered or not (None: none since
        it was set to None). Not the export's: the exporters retry within one export, with
        back-off waits of seconds between requests, which say nothing of how long the
        collector takes to answer."""
        return getattr(self._answers, "request_s", None)

    @last_request_s.setter
    def last_request_s(self, seconds: float | None) -> None:
        self._answers.request_s = seconds


class PartialSuccessReader:
    """Reads one signal's answers (a transport's `answered`), telling `on_rejected(signal,
    count)` of the items rejected (spans and log records); never raises."""

    def __init__(self, signal: str, on_rejected: Callable[[str, int], None]) -> None:
        self._signal = signal
        self._on_rejected = on_rejected
        self._logged = False
        self._response_class = None

    def __call__(self, answer: object) -> None:
        """Read an answer: its bytes (OTLP/HTTP), or the message itself (OTLP/gRPC)."""
        try:
            try:
                message = self._parsed(answer) if isinstance(answer, bytes) else answer
            except Exception:  # noqa: BLE001 - the protobuf runtimes raise errors of their own
                self._read_cut(answer)
            else:
                self._read(message)
        except Exception:  # noqa: BLE001 - an answer we cannot read must not fail the export
            logger.debug("lambdawrap: could not read the collector's answer to %s", self._signal, exc_info=True)

    def _read_cut(self, body: object) -> None:
        """An answer that is no whole message: cut at MAX_ANSWER_BYTES (a partial success whose
        message lists every rejected item), whose count of rejected items comes first."""
        rejected = rejected_in_cut_answer(body) if isinstance(body, bytes) else None
        if rejected is None:
            raise ValueError("not an OTLP answer, whole or cut")
        self._report(rejected, "its answer, too long to read whole, was cut")

    def _parsed(self, body: bytes) -> object:
        if self._response_class is None:
            import importlib

            module, name, _ = _ANSWERS[self._signal]
            self._response_class = getattr(importlib.import_module(module), name)
        answer = self._response_class()
        answer.ParseFromString(body)
        return answer

    def _read(self, answer: object) -> None:
        field = _ANSWERS[self._signal][2]
        if not answer.HasField("partial_success"):
            return
        self._report(getattr(answer.partial_success, field), answer.partial_success.error_message)

    def _report(self, rejected: int, reason: str) -> None:
        counted = self._signal in REJECTED_REASONS
        if rejected > 0 and counted:
            self._on_rejected(self._signal, rejected)
        if (rejected > 0 or reason) and not self._logged:
            self._logged = True
            logger.warning("lambdawrap: the collector rejected %d %s of a request (%s)%s; logged once", rejected, self._signal if self._signal != "metrics" else "metric data points", reason or "no reason given", ", counted as dropped" if counted and rejected else "")


def rejected_in_cut_answer(body: bytes) -> int | None:
    """The count of rejected items in the first bytes of an OTLP Export*ServiceResponse, read by
    hand: its partial_success (field 1) is its only field, and the count (field 1 of that) is
    written before the message (field 2) by the protobuf runtimes. None when it is not there."""
    try:
        if body[:1] != b"\x0a":
            return None
        _, at = _varint(body, 1)  # partial_success's length: past the cut
        while at < len(body):
            key, at = _varint(body, at)
            if key == 0x08:
                return _varint(body, at)[0]
            wire_type = key & 7
            if wire_type == 0:
                at = _varint(body, at)[1]
            elif wire_type == 2:
                length, at = _varint(body, at)
                at += length
            else:
                return None
    except IndexError:
        return None
    return None


def _varint(data: bytes, at: int) -> tuple:
    """(value, where the next field starts) of the base-128 varint at `at`."""
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80 or shift > 63:
            return value, at
        shift += 7


def retry_after_s(value: str | None) -> float | None:
    """The wait an HTTP Retry-After value asks for, in seconds (delay-seconds, or an HTTP-date
    from now); None if there is none or it cannot be read."""
    if not value:
        return None
    value = value.strip()
    try:
        # RFC 9110 has whole seconds; the OTLP exporters read any number (30.5, +30; a negative
        # one as none), and a collector may write one.
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        from email.utils import parsedate_to_datetime  # deferred: only a date-valued answer needs it

        return parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


RETRY_LATER = (408, 429)  # 4xx statuses that say "not now", not "not this"
# The gRPC codes OTLP says not to retry, but for the server's own errors (UNKNOWN, INTERNAL),
# which are retried as a 5xx is (a collector restarting behind a load balancer answers so for a
# moment): the gRPC counterparts of the refusing 4xx. RESOURCE_EXHAUSTED is one unless the
# server advises a retry (RetryInfo), as OTLP says.
GRPC_REFUSALS = frozenset({"INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "FAILED_PRECONDITION", "UNIMPLEMENTED", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED"})
GRPC_RETRY_ADVISED = "RESOURCE_EXHAUSTED (a retry advised)"
# A gRPC request over the server's message size (4 MiB by default, the OpenTelemetry
# Collector's too) is refused with RESOURCE_EXHAUSTED, which otherwise says "not now".
GRPC_TOO_LARGE = "RESOURCE_EXHAUSTED (larger than the collector's maximum message size)"


# The server's own errors, which OTLP says not to retry: a collector restarting behind a load
# balancer answers so for a moment, and one failing on an item of the batch (a backend it fans
# out to) answers so every time. Sent again a bounded number of times (Pipeline: SERVER_ERROR_TRIES).
GRPC_SERVER_ERRORS = frozenset({"UNKNOWN", "INTERNAL"})


# Redirects, which OTLP exporters do not follow (the headers may hold a key): a permanent one
# will be answered to the same request at every flush; a temporary one may not be.
PERMANENT_REDIRECTS = frozenset({301, 308})


def server_error(status: int | str | None) -> bool:
    """Whether the status of a failed export's last answer is the server's own error (HTTP 5xx
    but 502, 503 and 504; gRPC UNKNOWN and INTERNAL), or a temporary redirect: either is
    worth one more try, not one at every flush."""
    if isinstance(status, str):
        return status in GRPC_SERVER_ERRORS
    if status is not None and 300 <= status < 400:
        return status not in PERMANENT_REDIRECTS
    return status is not None and 500 <= status < 600 and status not in RETRY_AFTER_STATUSES


def refusal(status: int | str | None) -> str | None:
    """"too_large", "refused" or None (sent, or worth sending again) for the status of the last
    answer to an export that failed (an HTTP status or a gRPC code's name)."""
    if status == 413 or status == GRPC_TOO_LARGE:
        return "too_large"
    if isinstance(status, str):
        return "refused" if status in GRPC_REFUSALS else None
    if status is not None and (400 <= status < 500 and status not in RETRY_LATER or status in PERMANENT_REDIRECTS):
        return "refused"
    return None


class RefusalLog:
    """Logs the first refusal of each signal and status, with what is done about it."""

    def __init__(self) -> None:
        self._logged: set = set()

    def __call__(self, signal: str, status: int | str, count: int, outcome: str) -> None:
        if (signal, status) not in self._logged:
            self._logged.add((signal, status))
            logger.warning("lambdawrap: the collector refused a request of %d %s with %s %s: %s; logged once", count, signal, "gRPC" if isinstance(status, str) else "HTTP", status, outcome)
