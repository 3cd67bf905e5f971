"""Turns finished invocations into OpenTelemetry spans, metrics and logs with the SDK.

Spans are built as SDK `ReadableSpan`s with exactly the ids made in the handler's process;
metrics aggregate in an SDK MeterProvider (delta temporality by default); log lines become SDK
log records carrying the invocation's trace and span ids.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from lambdawrap import __version__
from lambdawrap.companion.correlator import InitFacts, Invocation
from lambdawrap.shared import records
from lambdawrap.shared.ids import new_span_id
from lambdawrap.shared.settings import Settings

logger = logging.getLogger("lambdawrap.companion")

SCOPE = InstrumentationScope("lambdawrap", __version__)
_PUBSUB_KINDS = ("sqs", "sns", "kinesis", "eventbridge")
_CRASH_ERRORS = ("Runtime.ExitError", "Runtime.OutOfMemory")
_DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0, 300.0, 900.0)
_MS_BUCKETS = tuple(b * 1000 for b in _DURATION_BUCKETS_S)
_MIB = 1024 * 1024
MAX_PAYLOAD_ATTRIBUTE_CHARS = 8192


def counter_key(name: str, attributes: object) -> tuple:
    """How a counter's series is named in Signals.counted and in what the exporter acknowledges."""
    return name, tuple(sorted(dict(attributes or {}).items()))


def build_resource(settings: Settings, account_id: str | None) -> Resource:
    """The SDK's own attributes, then cloud.* and faas.* from the platform, then
    OTEL_RESOURCE_ATTRIBUTES, then the service name (OTEL_SERVICE_NAME, or the function's)."""
    from opentelemetry.sdk.version import __version__ as sdk_version

    ours: dict[str, Any] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": sdk_version,
        "cloud.provider": "aws",
        "cloud.platform": "aws_lambda",
        "faas.name": settings.function_name,
        "faas.version": settings.function_version,
        "cloud.region": settings.region,
        "faas.max_memory": settings.memory_mb * _MIB,
        "cloud.account.id": account_id,
    }
    ours = {k: v for k, v in ours.items() if v}
    ours.update(settings.resource_attributes)
    ours["service.name"] = settings.service_name or "lambda"
    return Resource(ours)


def make_sampler(settings: Settings) -> Sampler:
    """The SDK sampler that OTEL_TRACES_SAMPLER[_ARG] name (parsed by the settings)."""
    from opentelemetry.sdk.trace import sampling

    ratio = sampling.TraceIdRatioBased(settings.sampler_ratio)
    root = {"always_on": sampling.ALWAYS_ON, "always_off": sampling.ALWAYS_OFF, "traceidratio": ratio}
    name = settings.sampler
    if name.startswith("parentbased_"):
        return sampling.ParentBased(root[name[len("parentbased_") :]])
    return root[name]


class SpanBuffer:
    """A capped FIFO of finished spans; what does not fit is dropped and counted."""

    def __init__(self, capacity: int, on_drop) -> None:
        self.capacity = capacity
        self._items: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._on_drop = on_drop
        self.high_water = 0

    def add(self, span: ReadableSpan) -> None:
        with self._lock:
            if len(self._items) >= self.capacity:
                self._on_drop("buffer_full")
                return
            self._items.append(span)
            self.high_water = max(self.high_water, len(self._items))

    def take(self, limit: int) -> list:
        with self._lock:
            batch = []
            while self._items and len(batch) < limit:
                batch.append(self._items.popleft())
            return batch

    def give_back(self, batch: list) -> None:
        """Put an unexported batch back at the front; what exceeds the cap is dropped."""
        with self._lock:
            room = self.capacity - len(self._items)
            keep = batch[:room] if room > 0 else []
            for span in reversed(keep):
                self._items.appendleft(span)
            lost = len(batch) - len(keep)
        for _ in range(lost):
            self._on_drop("buffer_full")

    def __len__(self) -> int:
        return len(self._items)


class Signals:
    """The correlator's sink: builds spans into the buffer, records metrics, emits logs."""

    def __init__(self, settings: Settings, resource: Resource, meter_provider: MeterProvider, logger_provider: LoggerProvider, sampler: Sampler) -> None:
        self.settings = settings
        self.resource = resource
        self.sampler = sampler
        self.spans = SpanBuffer(settings.buffer_max_spans, self.dropped)
        meter = meter_provider.get_meter("lambdawrap", __version__)
        self._invocations = meter.create_counter("faas.invocations", unit="{invocation}", description="Invocations of the function")
        self._errors = meter.create_counter("faas.errors", unit="{error}", description="Invocations that ended in an error")
        self._timeouts = meter.create_counter("faas.timeouts", unit="{timeout}", description="Invocations that timed out")
        self._crashes = meter.create_counter("lambdawrap.crashes", unit="{crash}", description="Invocations whose runtime exited (Runtime.ExitError, out of memory)")
        self._coldstarts = meter.create_counter("faas.coldstarts", unit="{coldstart}", description="Invocations that were cold starts")
        self._duration = meter.create_histogram("faas.invoke_duration", unit="s", description="Duration of the handler", explicit_bucket_boundaries_advisory=_DURATION_BUCKETS_S)
        self._init_duration = meter.create_histogram("faas.init_duration", unit="s", description="Duration of the environment's init", explicit_bucket_boundaries_advisory=_DURATION_BUCKETS_S)
        self._billed = meter.create_histogram("lambdawrap.billed_duration", unit="ms", description="Billed duration (platform.report)", explicit_bucket_boundaries_advisory=_MS_BUCKETS)
        self._memory = meter.create_histogram("faas.mem_usage", unit="By", description="Max memory used (platform.report)")
        self._dropped = meter.create_counter("lambdawrap.dropped", unit="{item}", description="Telemetry dropped by lambdawrap, by reason")
        self._internal_errors = meter.create_counter("lambdawrap.internal_errors", unit="{error}", description="lambdawrap's own failures, by process (function or companion); the function was unaffected")
        meter.create_observable_gauge("lambdawrap.buffer.high_water", callbacks=[self._observe_high_water], unit="{span}", description="Most spans the export buffer held at once in this environment (its bound is LAMBDAWRAP_BUFFER_MAX_SPANS)")
        self._logger = logger_provider.get_logger("lambdawrap", __version__)
        self.dropped_by_reason: collections.Counter = collections.Counter()
        # Every counter's total so far, by (name, attributes): what is not acknowledged by the
        # collector when the environment ends is carried over to the next one.
        self.counted: collections.Counter = collections.Counter()

    def _observe_high_water(self, options: Any) -> list:
        return [Observation(self.spans.high_water, {"lambdawrap.buffer.capacity": self.spans.capacity})]

    # Sink ----------------------------------------------------------------------

    def _add(self, counter: Any, value: float, attributes: dict) -> None:
        counter.add(value, attributes)
        self.counted[counter_key(counter.name, attributes)] += value

    def dropped(self, reason: str, count: int = 1) -> None:
        self.dropped_by_reason[reason] += count
        self._add(self._dropped, count, {"reason": reason})

    def internal_errors(self, process: str, count: int = 1) -> None:
        self._add(self._internal_errors, count, {"lambdawrap.process": process})

    def restore_counts(self, counts: list) -> None:
        """Counter values an earlier environment could not export (it ended while the collector
        was unreachable): added to ours, so that they go out with our next export."""
        counters = {
            "faas.invocations": self._invocations,
            "faas.errors": self._errors,
            "faas.timeouts": self._timeouts,
            "lambdawrap.crashes": self._crashes,
            "faas.coldstarts": self._coldstarts,
            "lambdawrap.internal_errors": self._internal_errors,
        }
        for count in counts if isinstance(counts, list) else ():
            try:
                name, attributes, value = count["name"], dict(count["attributes"]), count["value"]
                if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                    continue
                if name == "lambdawrap.dropped":
                    self.dropped(str(attributes.get("reason", "unknown")), value)
                elif name in counters:
                    self._add(counters[name], value, _clean(attributes))
            except (KeyError, TypeError, ValueError, AttributeError):
                continue

    def invocation(self, inv: Invocation) -> None:
        try:
            if inv.record is not None:
                self._from_record(inv)
            else:
                self._from_platform(inv)
        except Exception:  # noqa: BLE001 - counted, so the invocation is still accounted for
            logger.warning("lambdawrap: the span of invocation %s could not be built", inv.request_id, exc_info=True)
            self.dropped("malformed_record")

    def init_span(self, init: InitFacts, parent: Invocation) -> None:
        ids = parent.ids
        if not ids or init.start_ns is None:
            return
        duration_ns = int((init.duration_ms or 0) * 1_000_000)
        status = Status(StatusCode.ERROR, init.error_type or init.status) if init.status != "success" else Status(StatusCode.UNSET)
        span = self._span(
            name=f"{self.settings.function_name or 'function'} init",
            trace_id=int(ids[0], 16),
            span_id=new_span_id(),
            parent_id=int(ids[1], 16),
            kind=SpanKind.INTERNAL,
            attributes={"faas.coldstart": True, "lambdawrap.init.phase": init.phase},
            start=init.start_ns,
            end=init.start_ns + duration_ns,
            status=status,
        )
        self.spans.add(span)
        if init.duration_ms is not None:
            self._init_duration.record(init.duration_ms / 1000)
        for line, time_ns in init.logs:
            self.log_line(line, time_ns, ids, None)

    def report(self, record: dict) -> None:
        metrics = record.get("metrics")
        if not isinstance(metrics, dict):
            return
        billed = metrics.get("billedDurationMs")
        if isinstance(billed, (int, float)):
            self._billed.record(billed)
        memory = metrics.get("maxMemoryUsedMB")
        if isinstance(memory, (int, float)):
            self._memory.record(int(memory * _MIB))

    def log_line(self, line: str, time_ns: int, ids: tuple | None, request_id: str | None) -> None:
        context = None
        if ids and ids[0] and ids[1]:
            span_context = SpanContext(int(ids[0], 16), int(ids[1], 16), is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
            context = trace.set_span_in_context(NonRecordingSpan(span_context))
        severity, text = _severity(line)
        attributes = {"faas.invocation_id": request_id} if request_id else None
        self._logger.emit(timestamp=time_ns, observed_timestamp=time_ns, body=line, severity_number=severity, severity_text=text, attributes=attributes, context=context)

    def user_spans(self, spans: list) -> None:
        """Spans the user's code made with the OpenTelemetry API, as the bridge sent them."""
        for raw in spans if isinstance(spans, list) else [None]:
            if records.span_problem(raw) is not None:
                self.dropped("malformed_span")
                continue
            try:
                span = self._user_span(raw)
            except (AttributeError, KeyError, TypeError, ValueError, OverflowError):
                self.dropped("malformed_span")
                continue
            if span is not None:
                self.spans.add(span)

    def _user_span(self, raw: dict) -> ReadableSpan | None:
        code, description = (raw.get("status") or [0, ""])[:2]
        status = Status(StatusCode(int(code)), description or None) if int(code) == StatusCode.ERROR.value else Status(StatusCode(int(code)))
        events = [Event(str(name), _clean(attrs or {}), timestamp=int(ts)) for name, attrs, ts in raw.get("events") or []]
        links = [Link(SpanContext(int(t, 16), int(s, 16), is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)), _clean(attrs or {})) for t, s, attrs in raw.get("links") or []]
        span = self._span(
            name=str(raw["name"]),
            trace_id=int(raw["trace_id"], 16),
            span_id=int(raw["span_id"], 16),
            parent_id=int(raw["parent_span_id"], 16) if raw.get("parent_span_id") else None,
            kind=SpanKind(int(raw.get("kind") or 0)),
            attributes=dict(raw.get("attributes") or {}),
            start=int(raw["start_ns"]),
            end=int(raw["end_ns"]),
            status=status,
            events=events,
            links=links,
            scope=InstrumentationScope(str(raw.get("scope") or "user")),
        )
        return span

    # spans ---------------------------------------------------------------------

    def _from_record(self, inv: Invocation) -> None:
        rec = inv.record
        attrs = dict(rec.get("attributes") or {})
        trigger = str(rec.get("trigger") or "other")
        attrs.update(
            {
                "faas.invocation_id": inv.request_id,
                "faas.coldstart": bool(rec.get("cold_start")),
                "cloud.resource_id": rec.get("function_arn") or (inv.invoke_event or {}).get("invokedFunctionArn", ""),
                "lambdawrap.trigger": trigger,
            }
        )
        if rec.get("proactive_init"):
            attrs["lambdawrap.proactive_init"] = True
        # Only present when the function opted in (LAMBDAWRAP_CAPTURE_PAYLOAD), redacted there.
        for field, name in (("request_payload", "lambdawrap.request.payload"), ("response_payload", "lambdawrap.response.payload")):
            payload = rec.get(field)
            if isinstance(payload, str):
                attrs[name] = payload[:MAX_PAYLOAD_ATTRIBUTE_CHARS]
        attrs.setdefault("faas.trigger", "other")
        status = Status(StatusCode.UNSET)
        events = []
        error = rec.get("error")
        http_status = rec.get("http_status")
        if isinstance(http_status, int):
            attrs["http.response.status_code"] = http_status
            if http_status >= 500:
                status = Status(StatusCode.ERROR, f"HTTP {http_status}")
        if isinstance(error, dict):
            status = Status(StatusCode.ERROR, f"{error.get('type')}: {error.get('message')}"[:1024])
            attrs["error.type"] = str(error.get("type"))
            events.append(Event("exception", {"exception.type": str(error.get("type")), "exception.message": str(error.get("message")), "exception.stacktrace": str(error.get("stack"))}, timestamp=int(rec.get("end_ns") or 0) or None))
        kind = SpanKind.CONSUMER if trigger in _PUBSUB_KINDS else SpanKind.SERVER
        start, end = int(rec.get("start_ns") or 0), int(rec.get("end_ns") or 0)
        links = [Link(SpanContext(int(t, 16), int(s, 16), is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else 0))) for t, s, sampled in rec.get("links") or []]
        span = self._span(
            name=_span_name(attrs, self.settings.function_name),
            trace_id=int(rec["trace_id"], 16),
            span_id=int(rec["span_id"], 16),
            parent_id=int(rec["parent_span_id"], 16) if rec.get("parent_span_id") else None,
            kind=kind,
            attributes=attrs,
            start=start,
            end=end,
            status=status,
            events=events,
            links=links,
            parent_sampled=rec.get("sampled", True),
        )
        if span is not None:
            self.spans.add(span)
        self._count(attrs, error=status.status_code == StatusCode.ERROR, cold=bool(rec.get("cold_start")), duration_s=max(0, end - start) / 1e9)

    def _from_platform(self, inv: Invocation) -> None:
        """A span for an invocation the handler could not report: timeout, crash, OOM."""
        done = inv.runtime_done or {}
        status_text = str(done.get("status") or "failure")
        error_type = str(done.get("errorType") or ("Sandbox.Timedout" if status_text == "timeout" else "Runtime.ExitError"))
        trace_id, span_id = (int(part, 16) for part in inv.synthetic_ids)
        duration_ms = (done.get("metrics") or {}).get("durationMs")
        start = inv.invoked_at_ns
        end = start + int(duration_ms * 1_000_000) if isinstance(duration_ms, (int, float)) else time.time_ns()
        reason = {"timeout": "timeout", "error": "crash", "failure": "crash"}.get(status_text, status_text)
        if error_type == "Runtime.OutOfMemory":
            reason = "out_of_memory"
        elif status_text == "error" and error_type not in _CRASH_ERRORS and not error_type.startswith("Extension."):
            # The runtime answered an error itself, before or around the handler (e.g. an event
            # it could not decode): the process did not die.
            reason = "runtime_error"
        attrs = {
            "faas.invocation_id": inv.request_id,
            "faas.trigger": "other",
            "cloud.resource_id": (inv.invoke_event or {}).get("invokedFunctionArn", ""),
            "error.type": error_type,
            "lambdawrap.failure_reason": reason,
        }
        span = self._span(
            name=self.settings.function_name or "function",
            trace_id=trace_id,
            span_id=span_id,
            parent_id=None,
            kind=SpanKind.SERVER,
            attributes=attrs,
            start=start,
            end=max(end, start),
            status=Status(StatusCode.ERROR, f"{error_type}: invocation ended by the platform ({reason})"),
        )
        if span is not None:
            self.spans.add(span)
        if status_text == "timeout":
            self._add(self._timeouts, 1, {})
        elif reason != "runtime_error":
            self._add(self._crashes, 1, {})
        self._count(attrs, error=True, cold=False, duration_s=max(0, end - start) / 1e9)

    def _count(self, attrs: dict, error: bool, cold: bool, duration_s: float) -> None:
        labels = {"faas.trigger": attrs.get("faas.trigger", "other")}
        self._add(self._invocations, 1, labels)
        if error:
            self._add(self._errors, 1, labels)
        if cold:
            self._add(self._coldstarts, 1, labels)
        self._duration.record(duration_s, labels)

    def _span(self, *, name: str, trace_id: int, span_id: int, parent_id: int | None, kind: SpanKind, attributes: dict, start: int, end: int, status: Status, events: list = (), links: list = (), parent_sampled: bool = True, scope: InstrumentationScope = SCOPE) -> ReadableSpan | None:
        parent = SpanContext(trace_id, parent_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED if parent_sampled else 0)) if parent_id else None
        parent_ctx = trace.set_span_in_context(NonRecordingSpan(parent)) if parent else None
        decision = self.sampler.should_sample(parent_ctx, trace_id, name, kind, attributes, links)
        if decision.decision != Decision.RECORD_AND_SAMPLE:
            self.dropped("sampled_out")
            return None
        context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        return ReadableSpan(
            name=name,
            context=context,
            parent=parent,
            resource=self.resource,
            attributes=_clean(attributes),
            events=tuple(events),
            links=tuple(links),
            kind=kind,
            instrumentation_scope=scope,
            status=status,
            start_time=start,
            end_time=end,
        )


def _span_name(attrs: dict, function_name: str) -> str:
    method = attrs.get("http.request.method")
    route = attrs.get("http.route")
    if method and route:
        return f"{method} {route}"
    if method:
        return str(method)
    destination = attrs.get("messaging.destination.name")
    if destination:
        return f"{destination} process"
    return function_name or "function"


def _clean(attributes: dict) -> dict:
    allowed = (str, bool, int, float)
    out = {}
    for key, value in attributes.items():
        if isinstance(value, allowed):
            out[str(key)] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, allowed) for v in value):
            out[str(key)] = list(value)
    return out


def _severity(line: str) -> tuple:
    head = line[:10].upper()
    for text, number in (("[ERROR]", SeverityNumber.ERROR), ("[WARNING]", SeverityNumber.WARN), ("[INFO]", SeverityNumber.INFO), ("[DEBUG]", SeverityNumber.DEBUG), ("[CRITICAL]", SeverityNumber.FATAL)):
        if head.startswith(text):
            return number, text.strip("[]")
    return SeverityNumber.INFO, "INFO"

