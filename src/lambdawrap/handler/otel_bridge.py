"""Bridges the user's own OpenTelemetry API calls to the companion.

Loaded only when the user's code imports `opentelemetry.trace` (a post-import hook). During each
invocation the invocation span is the current span, so the user's spans nest under it, whoever
records them. While the user has installed no tracer provider of their own, the API's proxy
tracers start lambdawrap's spans instead of no-op ones: they ride with the invocation's record
to the companion, which exports them. lambdawrap never takes the API's global provider slot,
so a provider the user sets, at any time, is theirs alone and works as without the layer.

It implements the API only (the SDK is never imported in the function's process), follows the
trace's sampling decision, and never raises into the user's code.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from _thread import get_ident
from collections import abc
from typing import Any, Callable, Iterator, Optional, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from lambdawrap.handler import init_trace, secret_cuts
from lambdawrap.handler.invocation import FAILURES, active_invocation, deliver_span, describe_exception

try:  # the API's own: usable as a context manager and as a decorator of sync and async functions
    from opentelemetry.util._decorator import _agnosticcontextmanager as _context_manager
except ImportError:  # older API versions
    _context_manager = contextlib.contextmanager
from lambdawrap.shared.own_stdlib import binascii
from lambdawrap.shared import records
from lambdawrap.shared.attribute_values import BYTES_TAG, MAX_NESTING
from lambdawrap.shared.ids import new_span_id, new_trace_id
from lambdawrap.shared.process_id import own_pid
from lambdawrap.shared.span_limits import SpanLimits

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_ALLOWED = (str, bool, int, float)
# Tracers made once per scope; a scope per call (attributes that change each time) would grow the
# table without end.
_MAX_TRACERS = 64


def _value(value: Any, length: Optional[int] = None, depth: int = 0) -> Any:
    """An attribute value as the SDK's BoundedAttributes keeps it (any of OTLP's AnyValue: None,
    bytes, sequences of any of them, mappings), strings cut to `length`, made of what the
    record can carry: bytes as BYTES_TAG. Raises ValueError for a value nested deeper than
    MAX_NESTING (the record's encoder would refuse the whole record)."""
    if isinstance(value, str):
        return value if length is None else secret_cuts.head(value, length)
    if value is None or isinstance(value, _ALLOWED):
        return value
    if isinstance(value, bytes):
        return {BYTES_TAG: binascii.b2a_base64(value, newline=False).decode("ascii")}
    if depth >= MAX_NESTING:
        raise ValueError("attribute value nested too deep")
    if isinstance(value, abc.Sequence):
        return [_value(v, length, depth + 1) for v in value]
    if isinstance(value, abc.Mapping):
        return _mapping(value, length, depth + 1)
    # As the SDK: an object that can say what it is (a Decimal, a datetime, a UUID) as its
    # text, anything else as no value; a __str__ that raises is no value too, never an error.
    if _says_what_it_is(type(value)):
        try:
            return str(value)
        except Exception:  # noqa: BLE001 - the user's __str__
            return None
    return None


def _says_what_it_is(cls: type) -> bool:
    return cls.__str__ is not object.__str__ or cls.__repr__ is not object.__repr__


def _key(key: Any) -> Optional[str]:
    # A mapping's key as the SDK's keeps it: a non-empty text, or another key's text.
    if isinstance(key, str):
        return key or None
    try:
        return str(key) or None if key and _says_what_it_is(type(key)) else None
    except Exception:  # noqa: BLE001 - the user's __str__ (or __bool__)
        return None


def _mapping(attributes: Any, length: Optional[int], depth: int = 0, limit: Optional[int] = None) -> dict:
    bounded: dict = {}
    for k, v in attributes.items():
        key = _key(k)
        if key is None:
            pass
        elif depth:
            bounded[key] = _value(v, length, depth)
        else:
            _put_value(bounded, key, v, length, limit)
    return bounded


def _put_value(attributes: dict, key: str, value: Any, length: Optional[int], limit: Optional[int]) -> None:
    """attributes[key] = the value as kept; a value nested too deep is left out, alone."""
    try:
        kept = _value(value, length)
    except ValueError:
        return
    _put(attributes, key, kept, limit)


def _put(attributes: dict, key: str, value: Any, limit: Optional[int]) -> None:
    """attributes[key] = value, as the SDK's BoundedAttributes: when full, the oldest goes."""
    attributes.pop(key, None)
    if limit is not None and len(attributes) >= limit:
        if not limit:
            return
        del attributes[next(iter(attributes))]
    attributes[key] = value


def _attrs(attributes: Any, limit: Optional[int], length: Optional[int]) -> dict:
    if not attributes:
        return {}
    try:
        return _mapping(attributes, length, 0, limit)
    except Exception:  # noqa: BLE001 - a mapping of the user's may raise while we read it
        return {}


def _link(context: Any, attributes: Any, limits: SpanLimits) -> Optional[list]:
    # A link to no span (say, the context of a message that came without one) is left out, as
    # the SDK leaves it out, unless it says something (attributes, a tracestate): the SDK keeps
    # that one, its ids zeros. The span is kept either way.
    if not isinstance(context, SpanContext) or not (context.is_valid or attributes or context.trace_state):
        return None
    return [f"{_link_id(context.trace_id, 128):032x}", f"{_link_id(context.span_id, 64):016x}", _attrs(attributes, limits.link_attributes, limits.attribute_length), context.is_remote is True]


def _escaped_text(escaped: Any) -> str:
    # As the SDK writes it, str(escaped): a truthy value that is not True is its own text.
    if escaped is True or escaped is False:
        return str(escaped)
    try:
        return str(escaped)
    except Exception:  # noqa: BLE001 - a value of the user's whose __str__ raises
        return "True" if escaped else "False"


def _link_id(value: Any, bits: int) -> int:
    # An invalid context's id may be anything (negative, too large): zeros, as no span.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << bits:
        return int(value)
    return 0


def _guarded(method: Callable) -> Callable:
    """A span method that can never raise into the user's code (failures are counted)."""

    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception:  # noqa: BLE001 - the API promises the user no exception from us
            FAILURES.record(f"the OpenTelemetry bridge ({method.__name__})")
            return None

    guarded.__name__ = method.__name__
    guarded.__doc__ = method.__doc__
    return guarded


class _Span(trace.Span):
    def __init__(self, send: Callable[[dict], None], limits: SpanLimits, scope: tuple, name: str, span_context: SpanContext, parent: SpanContext, kind: SpanKind, attributes: Any, links: Any, start_time: Optional[int], record_exception: bool = True, set_status_on_exception: bool = True) -> None:
        self._send = send
        self._limits = limits
        self._scope = scope
        self._name = str(name)
        self._context = span_context
        self._parent_id = parent.span_id if parent.is_valid else 0
        self._parent_remote = parent.is_valid and parent.is_remote is True
        self._kind = kind.value if isinstance(kind, SpanKind) else 0
        self._attributes = _attrs(attributes, limits.span_attributes, limits.span_attribute_length)
        self._events: collections.deque = collections.deque(maxlen=limits.events)
        self._links = collections.deque((link for link in (_link(getattr(l, "context", None), getattr(l, "attributes", None), limits) for l in (links or [])) if link), maxlen=limits.links)
        self._status = (0, "")
        self._start = start_time if isinstance(start_time, int) else time.time_ns()
        self._ended = False
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception

    def get_span_context(self) -> SpanContext:
        return self._context

    @_guarded
    def set_attributes(self, attributes: Any) -> None:
        if not self._ended:
            for key, value in _attrs(attributes, None, self._limits.span_attribute_length).items():
                _put(self._attributes, key, value, self._limits.span_attributes)

    @_guarded
    def set_attribute(self, key: str, value: Any) -> None:
        if not self._ended and isinstance(key, str) and key:
            _put_value(self._attributes, key, value, self._limits.span_attribute_length, self._limits.span_attributes)

    @_guarded
    def add_event(self, name: str, attributes: Any = None, timestamp: Optional[int] = None) -> None:
        if not self._ended:
            self._events.append([str(name), _attrs(attributes, self._limits.event_attributes, self._limits.attribute_length), timestamp if isinstance(timestamp, int) else time.time_ns()])

    @_guarded
    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        link = _link(context, attributes, self._limits) if not self._ended else None
        if link:
            self._links.append(link)

    @_guarded
    def update_name(self, name: str) -> None:
        if not self._ended:
            self._name = str(name)

    def is_recording(self) -> bool:
        return not self._ended

    @_guarded
    def set_status(self, status: Any, description: Optional[str] = None) -> None:
        if isinstance(status, Status):
            code, text = status.status_code, status.description
        else:
            code, text = status, description
        code = int(getattr(code, "value", 0))
        # As the SDK: OK is final, UNSET is ignored, and an ended span keeps its status.
        if self._ended or self._status[0] == StatusCode.OK.value or code == StatusCode.UNSET.value:
            return
        self._status = (code, text if isinstance(text, str) else "")

    @_guarded
    def record_exception(self, exception: BaseException, attributes: Any = None, timestamp: Optional[int] = None, escaped: bool = False) -> None:
        if isinstance(exception, BaseException):  # else nothing, as the API's span records nothing
            self._record(describe_exception(exception), attributes, timestamp, escaped)

    def _record(self, described: dict, attributes: Any = None, timestamp: Optional[int] = None, escaped: bool = False) -> None:
        event = {"exception.type": described["type"], "exception.message": described["message"], "exception.stacktrace": described["stack"], "exception.escaped": _escaped_text(escaped)}
        # The user's attributes as they came, kept once by add_event: kept twice, their bytes
        # (base64 text by then) would be cut to the value length limit.
        with contextlib.suppress(Exception):  # a mapping of the user's may raise while we read it
            event.update(attributes or {})
        self.add_event("exception", event, timestamp)

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        # `with tracer.start_span(...) as span:` (not use_span, which records for itself): what
        # escapes the block is recorded, as the SDK's span records it.
        self._escaped(exc_val)
        self.end()

    @_guarded
    def _escaped(self, error: Any, escaped: bool = True, record: Optional[bool] = None, set_status: Optional[bool] = None) -> None:
        # escaped=False where the API's use_span would have recorded it (start_as_current_span,
        # use_span), which says whether to `record` and `set_status` (else the span's start did).
        if not isinstance(error, BaseException) or self._ended:
            return
        described = describe_exception(error)
        if self._record_exception if record is None else record:
            self._record(described, escaped=escaped)
        if self._set_status_on_exception if set_status is None else set_status:
            self.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {described['message']}"))

    @_guarded
    def end(self, end_time: Optional[int] = None) -> None:
        if self._ended:
            return
        self._ended = True
        self._send(
            records.span(
                scope=self._scope[0],
                scope_version=self._scope[1],
                scope_schema_url=self._scope[2],
                scope_attributes=self._scope[3],
                parent_remote=self._parent_remote,
                name=self._name,
                trace_id=self._context.trace_id,
                span_id=self._context.span_id,
                parent_span_id=self._parent_id,
                kind=self._kind,
                start_ns=self._start,
                end_ns=end_time if isinstance(end_time, int) else time.time_ns(),
                attributes=self._attributes,
                events=list(self._events),
                links=list(self._links),
                status=self._status,
                trace_state=self._context.trace_state.to_header() if self._context.trace_state else "",
            )
        )


class _InvocationSpan(_Span):
    """The invocation span, as the function finds it current (`trace.get_current_span()`):
    what it sets on it (attributes, events, an exception, its status, its name) goes with the
    invocation's record (`annotations`), as OpenTelemetry's Lambda instrumentation records it
    on its span. Ending it is the invocation's to do, not the function's."""

    def __init__(self, limits: SpanLimits, span_context: SpanContext) -> None:
        # Only what the setters read: made at every invocation of a function using the API.
        self._limits = limits
        self._context = span_context
        self._name = ""
        self._attributes: dict = {}
        self._events: collections.deque = collections.deque(maxlen=limits.events)
        self._status = (0, "")
        self._ended = False
        self._record_exception = self._set_status_on_exception = True

    @_guarded
    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        pass  # the invocation's links are its trigger's (batch messages)

    def end(self, end_time: Optional[int] = None) -> None:
        self._ended = True  # as an SDK span: what was set stays, nothing more is taken

    def annotations(self) -> Optional[dict]:
        """What the function set, for the record; nothing more is taken once asked (a thread
        of the function's that writes on is writing to an ended span)."""
        self._ended = True
        found: dict = {}
        if self._attributes:
            found["attributes"] = self._attributes
        if self._events:
            found["events"] = list(self._events)
        if self._status[0] in (StatusCode.OK.value, StatusCode.ERROR.value):
            found["status"] = list(self._status)
        if self._name:
            found["name"] = self._name
        return found or None


class _Tracer(trace.Tracer):
    """lambdawrap's recording tracer, behind the API's proxy tracers."""

    def __init__(self, bridge: "UserSpans", scope: tuple) -> None:
        self._bridge = bridge
        self._scope = scope

    def start_span(self, name: str, context: Any = None, kind: SpanKind = SpanKind.INTERNAL, attributes: Any = None, links: Any = None, start_time: Optional[int] = None, record_exception: bool = True, set_status_on_exception: bool = True) -> trace.Span:
        try:
            parent = trace.get_current_span(context).get_span_context()
            if not parent.is_valid and context is None:
                parent = _default_parent() or parent
            trace_state = None
            if parent.is_valid:
                # The configured sampler's decision, as the SDK asks it: a parent-based one (the
                # default) keeps the parent's, a root sampler decides alone.
                trace_id, trace_state = parent.trace_id, parent.trace_state
                sampled = self._bridge.sampled(trace_id, _ParentFlag(parent.trace_flags.sampled))
            else:
                trace_id = new_trace_id()
                sampled = self._bridge.sampled(trace_id, None)
            span_context = SpanContext(trace_id, new_span_id(), is_remote=False, trace_flags=_SAMPLED if sampled else _NOT_SAMPLED, trace_state=trace_state)
            if not sampled:
                return NonRecordingSpan(span_context)  # the trace was sampled out at its root
            return _Span(self._bridge.send, self._bridge.limits, self._scope, name, span_context, parent, kind, attributes, links, start_time, record_exception, set_status_on_exception)
        except Exception:  # noqa: BLE001 - the API promises the user no exception from us
            FAILURES.record("the OpenTelemetry bridge (start_span)")
            return trace.INVALID_SPAN

    @_context_manager
    def start_as_current_span(self, name: str, context: Any = None, kind: SpanKind = SpanKind.INTERNAL, attributes: Any = None, links: Any = None, start_time: Optional[int] = None, record_exception: bool = True, set_status_on_exception: bool = True, end_on_exit: bool = True) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception)
        with _using(span, end_on_exit) as used:
            yield used

    # A wrong call's TypeError names the method as the API's tracer without a provider does.
    start_span.__qualname__ = "NoOpTracer.start_span"
    getattr(start_as_current_span, "__wrapped__", start_as_current_span).__qualname__ = "NoOpTracer.start_as_current_span"


@_context_manager
def _using(span: trace.Span, end_on_exit: bool = False, record_exception: Optional[bool] = None, set_status_on_exception: Optional[bool] = None) -> Iterator[trace.Span]:
    """As the API's use_span, but the escaping exception recorded by the span, guarded: the
    API's formats the exception's text itself, and one whose __str__ raises would leave the
    user's block as that error, not its own (its no-op tracer formats nothing)."""
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    except Exception as error:  # as the API's: not a BaseException (GeneratorExit, say)
        if isinstance(span, _Span):
            span._escaped(error, escaped=False, record=record_exception, set_status=set_status_on_exception)
        raise
    finally:
        otel_context.detach(token)
        if end_on_exit:
            span.end()


def _patch_use_span(function_wrapper: Any) -> None:
    """The API's use_span, given a span of ours, records an escaping exception as _using does;
    any other span (the user's provider's) goes to the API's own."""
    use_span = getattr(trace, "use_span", None)
    if use_span is None or getattr(use_span, "_self_lambdawrap", False):
        return

    def ours(span: trace.Span, end_on_exit: bool = False, record_exception: bool = True, set_status_on_exception: bool = True) -> Any:
        return _using(span, end_on_exit, record_exception, set_status_on_exception)

    ours.__name__ = ours.__qualname__ = "use_span"  # a wrong call's TypeError names it as the API's does

    def choose(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        span = args[0] if args else kwargs.get("span")
        return (ours if isinstance(span, _Span) else wrapped)(*args, **kwargs)

    trace.use_span = function_wrapper(use_span, choose)
    trace.use_span._self_lambdawrap = True


def _default_parent() -> Optional[SpanContext]:
    """The invocation span, for a span started where no span is current while an invocation
    runs: on a thread the handler started (a ThreadPoolExecutor's: the invocation span is current
    in the handler's thread only), or in the invocation during which the user's code first
    imported the API where it could not be made current then (in an event loop's task). Such
    spans nest under it, as the client spans of outgoing calls do, and OpenTelemetry's
    instrumentations enabled there (their spans, the context they send) too; the process runs
    one invocation at a time. While the handler's module loads, the init span (init_trace)."""
    invocation = active_invocation()
    if invocation is None:
        init = init_trace.current()
        if init is None:
            return None
        return SpanContext(init.trace_id, init.span_id, is_remote=False, trace_flags=_SAMPLED if init.sampled else _NOT_SAMPLED)
    if invocation.pid != own_pid():
        return None
    trace_state = invocation.trace_state if invocation.beside else ""
    return SpanContext(invocation.trace_id, invocation.span_id, is_remote=False, trace_flags=_SAMPLED if invocation.sampled else _NOT_SAMPLED, trace_state=TraceState.from_header([trace_state]) if trace_state else None)


class UserSpans:
    """Makes the invocation span current while the handler runs, and records the user's spans
    while the user has no tracer provider of their own."""

    def __init__(self, channel: Any, sampled: Callable[[int, Any], bool], function_wrapper: Any, limits: SpanLimits) -> None:
        self._channel = channel
        # As the SDK's: without them a span the user fills in a loop makes the invocation's
        # record too large, and every span of the invocation is dropped, where the SDK keeps
        # the newest 128.
        self.limits = limits
        self.sampled = sampled
        self._tracers: dict = {}
        self._context_loads: Optional[bool] = None  # known when first needed
        self._patch_proxy_tracer(function_wrapper)
        _patch_use_span(function_wrapper)

    def context_loads(self) -> bool:
        """Whether the API's runtime context works. An API before 1.30 has no fallback when the
        one OTEL_PYTHON_CONTEXT names cannot be loaded (a typo, a bundle stripped of its
        *.dist-info): each of its context calls raises, which its no-op tracer never makes.
        Then lambdawrap leaves its tracers and the context alone, as without the layer."""
        if self._context_loads is None:
            # The API logs its failure at each attempt: asked silently, once.
            api_logger = logging.getLogger(otel_context.__name__)
            disabled, api_logger.disabled = api_logger.disabled, True
            try:
                otel_context.get_current()
                self._context_loads = True
            except Exception:  # noqa: BLE001 - the API's loader may fail in many ways
                self._context_loads = False
            finally:
                api_logger.disabled = disabled
        return self._context_loads

    def _patch_proxy_tracer(self, function_wrapper: Any) -> None:
        # The proxy tracers the API hands out before any provider is set (module-level
        # `trace.get_tracer(...)` included) start our spans until the user sets a provider,
        # then theirs: each call looks at the API's slot, which stays the user's to fill.
        # An API older than 1.1 has no proxy tracers (nor that slot): nothing to route.
        proxy = getattr(trace, "ProxyTracer", None)
        if proxy is None or not hasattr(trace, "_TRACER_PROVIDER") or getattr(proxy, "_self_lambdawrap", False):
            return
        bridge = self

        def route(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
            if getattr(trace, "_TRACER_PROVIDER", None) is not None or not bridge.context_loads():
                return wrapped(*args, **kwargs)
            scope = (getattr(instance, name, None) for name in ("_instrumenting_module_name", "_instrumenting_library_version", "_schema_url", "_attributes"))
            return getattr(bridge.tracer(*scope), wrapped.__name__)(*args, **kwargs)

        @_context_manager
        def as_current(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Iterator[trace.Span]:
            # Routed when the span starts, not when its context manager is made: as a decorator
            # (at import, say) it is made once and started at each call, by then perhaps with a
            # provider the user has set since, which gets the span as without the layer.
            with route(wrapped, instance, args, kwargs) as span:
                yield span

        proxy.start_span = function_wrapper(proxy.start_span, route)
        proxy.start_as_current_span = function_wrapper(proxy.start_as_current_span, as_current)
        proxy._self_lambdawrap = True

    def tracer(self, name: Any, version: Any = None, schema_url: Any = None, attributes: Any = None) -> _Tracer:
        # The scope the SDK would give the spans: the tracer's name, version, schema URL and
        # attributes (an API from 1.27 on takes them).
        # A missing name is the SDK's "" (it logs that the name is missing).
        key = (name if isinstance(name, str) else "", version if isinstance(version, str) else "", schema_url if isinstance(schema_url, str) else "")
        kept = _attrs(attributes, None, None) if attributes else {}
        if kept:
            key += (repr(kept),)
        tracer = self._tracers.get(key)
        if tracer is None:
            if len(self._tracers) >= _MAX_TRACERS:
                self._tracers.clear()
            tracer = self._tracers[key] = _Tracer(self, key[:3] + (kept,))
        return tracer

    def send(self, span: dict) -> None:
        """A finished span: with its invocation's record when one is under way, else alone."""
        deliver_span(self._channel, span)

    def enter(self, trace_id: int, span_id: int, sampled: bool, trace_state: str = "", baggage: str = "") -> Any:
        """Make the invocation span current, with the caller's `baggage` (W3C), as the
        OpenTelemetry instrumentation extracts them: at the invocation's start, or in its middle
        (the handler imported the API), on top of what the function attached already."""
        if not self.context_loads():
            return None
        before = otel_context.get_current()
        state = TraceState.from_header([trace_state]) if trace_state else None
        span_context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=_SAMPLED if sampled else _NOT_SAMPLED, trace_state=state)
        invocation = _InvocationSpan(self.limits, span_context) if sampled else NonRecordingSpan(span_context)
        context = trace.set_span_in_context(invocation)
        if baggage:
            context = _with_baggage(baggage, context)
        return _Entered(otel_context.attach(context), context, before, invocation)

    def exit(self, entered: Any) -> Optional[dict]:
        """Take the invocation span off the context; what the function set on it (see
        _InvocationSpan), None where it set nothing."""
        self._leave(entered)
        return entered.span.annotations() if isinstance(entered.span, _InvocationSpan) else None

    def _leave(self, entered: Any) -> None:
        current = otel_context.get_current()
        if current is entered.context:
            otel_context.detach(entered.token)
            return
        # The function left a context of its own on top (attached, never detached): it stays, as
        # without the layer, but without what the invocation put in it, which it inherited: the
        # caller's baggage became every later invocation's, sent on in their requests, and
        # resetting to what was current before dropped the function's context. Where the
        # function took the invocation's off itself (detaching a context attached before it),
        # nothing of it is left to take out.
        cleaned = _without_invocation(current, entered.context, entered.before)
        if cleaned is not current:
            otel_context.attach(cleaned)


def _with_baggage(header: str, context: Any) -> Any:
    """`context` with the caller's baggage, as the API's propagator extracts it; silently: it
    warns of each entry it leaves out, which would be in the function's log at every invocation
    (the function's own extract, without the layer, is the function's to make). Only this
    thread's records are held back: the function's other threads log as they would."""
    from opentelemetry.baggage.propagation import W3CBaggagePropagator

    api_logger = logging.getLogger("opentelemetry.baggage.propagation")
    quiet = _ThisThreadQuiet()
    api_logger.addFilter(quiet)
    try:
        return W3CBaggagePropagator().extract({"baggage": header}, context)
    finally:
        api_logger.removeFilter(quiet)


class _ThisThreadQuiet:
    """A logging filter (duck-typed) dropping the records of the thread that made it."""

    __slots__ = ("thread",)

    def __init__(self) -> None:
        self.thread = get_ident()

    def filter(self, record: Any) -> bool:
        return get_ident() != self.thread


class _ParentFlag:
    """A parent's sampled flag, as the sampler reads it."""

    __slots__ = ("sampled",)

    def __init__(self, sampled: bool) -> None:
        self.sampled = sampled


class _Entered:
    """What `enter` attached (`context`, its `token`, the invocation's `span`) on top of what
    (`before`)."""

    __slots__ = ("token", "context", "before", "span")

    def __init__(self, token: Any, context: Any, before: Any, span: Any) -> None:
        self.token = token
        self.context = context
        self.before = before
        self.span = span


_MISSING = object()


def _without_invocation(current: Any, entered: Any, before: Any) -> Any:
    """`current` (a context the function made on top of the invocation's, `entered`) with each
    value the invocation set (those `entered` holds and `before` does not) back to `before`'s,
    where the function kept it; of a mapping (the baggage, the invocation's over `before`'s)
    the function changed, each entry the invocation put there and the function left as it was
    back to `before`'s (or gone), the function's own changes kept. The same context where none
    is left."""
    values = dict(current)
    changed = False
    for key, ours in entered.items():
        earlier = before.get(key, _MISSING)
        if earlier is ours:
            continue  # not the invocation's
        kept = current.get(key, _MISSING)
        if kept is ours:
            restored = earlier
        elif isinstance(kept, abc.Mapping) and isinstance(ours, abc.Mapping):
            earlier_entries = earlier if isinstance(earlier, abc.Mapping) else {}
            restored = dict(kept)
            for name, value in ours.items():
                if earlier_entries.get(name, _MISSING) is value or restored.get(name, _MISSING) is not value:
                    continue  # the function's context's own, or changed by the function
                if name in earlier_entries:
                    restored[name] = earlier_entries[name]
                else:
                    del restored[name]
            if restored == kept:
                continue
        else:
            continue  # the function's own (its span, left current)
        changed = True
        if restored is _MISSING:
            values.pop(key, None)
        else:
            values[key] = restored
    return type(current)(values) if changed else current


__all__: Sequence[str] = ["UserSpans"]
