"""Bridges the user's own OpenTelemetry API calls to the companion.

Loaded only when the user's code imports `opentelemetry.trace` (a post-import hook). During each
invocation the invocation span is the current span, so the user's spans nest under it. If the
user set no tracer provider of their own, ours records their spans and sends them over the local
channel; the companion exports them with the invocation's. It implements the API only; the SDK
is never imported in the handler's process.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from typing import Any, Iterator, Optional, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from lambdawrap.handler.channel import Channel
from lambdawrap.shared import records
from lambdawrap.shared.ids import new_span_id, new_trace_id

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_ALLOWED = (str, bool, int, float)


def _value(value: Any) -> Any:
    if isinstance(value, _ALLOWED):
        return value
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, _ALLOWED)]
    return str(value)


def _attrs(attributes: Any) -> dict:
    if not attributes:
        return {}
    try:
        return {str(k): _value(v) for k, v in dict(attributes).items()}
    except (TypeError, ValueError):
        return {}


class _Span(trace.Span):
    def __init__(self, channel: Channel, scope: str, name: str, span_context: SpanContext, parent_id: int, kind: SpanKind, attributes: Any, links: Any, start_time: Optional[int]) -> None:
        self._channel = channel
        self._scope = scope
        self._name = name
        self._context = span_context
        self._parent_id = parent_id
        self._kind = kind
        self._attributes = _attrs(attributes)
        self._events: list = []
        self._links = [[f"{l.context.trace_id:032x}", f"{l.context.span_id:016x}", _attrs(l.attributes)] for l in (links or []) if getattr(l, "context", None)]
        self._status = (0, "")
        self._start = start_time or time.time_ns()
        self._ended = False

    def get_span_context(self) -> SpanContext:
        return self._context

    def set_attributes(self, attributes: Any) -> None:
        if not self._ended:
            self._attributes.update(_attrs(attributes))

    def set_attribute(self, key: str, value: Any) -> None:
        if not self._ended:
            self._attributes[str(key)] = _value(value)

    def add_event(self, name: str, attributes: Any = None, timestamp: Optional[int] = None) -> None:
        if not self._ended:
            self._events.append([str(name), _attrs(attributes), timestamp or time.time_ns()])

    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        if not self._ended and context is not None:
            self._links.append([f"{context.trace_id:032x}", f"{context.span_id:016x}", _attrs(attributes)])

    def update_name(self, name: str) -> None:
        self._name = str(name)

    def is_recording(self) -> bool:
        return not self._ended

    def set_status(self, status: Any, description: Optional[str] = None) -> None:
        if isinstance(status, Status):
            code, text = status.status_code, status.description
        else:
            code, text = status, description
        self._status = (int(getattr(code, "value", 0)), text or "")

    def record_exception(self, exception: BaseException, attributes: Any = None, timestamp: Optional[int] = None, escaped: bool = False) -> None:
        stack = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
        event = {"exception.type": type(exception).__qualname__, "exception.message": str(exception), "exception.stacktrace": stack}
        event.update(_attrs(attributes))
        self.add_event("exception", event, timestamp)

    def end(self, end_time: Optional[int] = None) -> None:
        if self._ended:
            return
        self._ended = True
        span = records.span(
            scope=self._scope,
            name=self._name,
            trace_id=self._context.trace_id,
            span_id=self._context.span_id,
            parent_span_id=self._parent_id,
            kind=self._kind.value if isinstance(self._kind, SpanKind) else 0,
            start_ns=self._start,
            end_ns=end_time or time.time_ns(),
            attributes=self._attributes,
            events=self._events,
            links=self._links,
            status=self._status,
        )
        self._channel.send(records.spans([span]))


class _Tracer(trace.Tracer):
    def __init__(self, channel: Channel, scope: str) -> None:
        self._channel = channel
        self._scope = scope

    def start_span(self, name: str, context: Any = None, kind: SpanKind = SpanKind.INTERNAL, attributes: Any = None, links: Any = None, start_time: Optional[int] = None, record_exception: bool = True, set_status_on_exception: bool = True) -> trace.Span:
        parent = trace.get_current_span(context).get_span_context()
        trace_id = parent.trace_id if parent.is_valid else new_trace_id()
        span_context = SpanContext(trace_id, new_span_id(), is_remote=False, trace_flags=_SAMPLED)
        return _Span(self._channel, self._scope, name, span_context, parent.span_id if parent.is_valid else 0, kind, attributes, links, start_time)

    @contextlib.contextmanager
    def start_as_current_span(self, name: str, context: Any = None, kind: SpanKind = SpanKind.INTERNAL, attributes: Any = None, links: Any = None, start_time: Optional[int] = None, record_exception: bool = True, set_status_on_exception: bool = True, end_on_exit: bool = True) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        with trace.use_span(span, end_on_exit=end_on_exit, record_exception=record_exception, set_status_on_exception=set_status_on_exception) as current:
            yield current


class _TracerProvider(trace.TracerProvider):
    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def get_tracer(self, instrumenting_module_name: str, instrumenting_library_version: Optional[str] = None, schema_url: Optional[str] = None, attributes: Any = None) -> trace.Tracer:
        return _Tracer(self._channel, instrumenting_module_name or "user")


class UserSpans:
    """Makes the invocation span current while the handler runs."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._checked = False

    def _ensure_provider(self) -> None:
        # Decided at the first invocation, after the user's module-level code had its chance
        # to install a provider of its own; theirs always wins.
        self._checked = True
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(_TracerProvider(self._channel))

    def enter(self, trace_id: int, span_id: int) -> Any:
        if not self._checked:
            self._ensure_provider()
        invocation = NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=False, trace_flags=_SAMPLED))
        return otel_context.attach(trace.set_span_in_context(invocation))

    def exit(self, token: Any) -> None:
        otel_context.detach(token)


__all__: Sequence[str] = ["UserSpans"]
