"""Builds the SDK's ReadableSpans from what the correlator joined, with exactly the ids the
function's process made, and keeps them in a bounded buffer until they are exported.

Each span follows its trace's sampling decision, made once in the function's process (the
record's `sampled`); only a span nothing of the function's survived for (its process died
before it wrote its in-flight slot) or a failed init decides here, as the root of its trace.
"""

from __future__ import annotations

import binascii
import collections
import functools
import json
from binascii import a2b_base64
import threading
from typing import Any, Callable, Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from lambdawrap import __version__
from lambdawrap.companion.correlator import InitFacts, Invocation, platform_end_ns, platform_failure, platform_parent
from lambdawrap.companion.encodable_text import encodable
from lambdawrap.companion.lambda_arns import function_resource_id
from lambdawrap.companion.sized_items import take_front
from lambdawrap.companion.span_bounds import bounded_attributes, bounded_events
from lambdawrap.shared.attribute_values import BYTES_TAG, MAX_NESTING
from lambdawrap.shared.ids import new_span_id, new_trace_id
from lambdawrap.shared.records import MAX_RESPONSE_BYTES, event_ok
from lambdawrap.shared.semconv import SCHEMA_URL
from lambdawrap.shared.span_limits import SpanLimits
from lambdawrap.shared.w3c_fields import parse_tracestate

SCOPE = InstrumentationScope("lambdawrap", __version__, schema_url=SCHEMA_URL)
CLIENT_SCOPE_PREFIX = "lambdawrap."  # the outgoing-call hooks' scopes (handler/outgoing)
# Failures whose error the caller got from the platform, not from the runtime's post.
_CALLERS_PLATFORM_FAILURES = ("timeout", "crash", "out_of_memory")
# The platform's word when the runtime posted an error without naming its type (awslambdaric
# never sends the error-type header): the runtime's own error line says more, if it logged one.
_UNNAMED_ERRORS = ("Runtime.Unknown", "Function.Unknown", None)
MAX_PAYLOAD_ATTRIBUTE_CHARS = 8192
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
# Made once: calling an Enum class, or building a Status, costs a microsecond each per span.
_UNSET = Status(StatusCode.UNSET)
_SPAN_KINDS = {kind.value: kind for kind in SpanKind}
_STATUS_CODES = {code.value: code for code in StatusCode}
_SERVER_KIND, _UNSET_CODE, _OK_CODE, _ERROR_CODE = SpanKind.SERVER.value, StatusCode.UNSET.value, StatusCode.OK.value, StatusCode.ERROR.value
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1  # OTLP's AnyValue.int_value
MAX_REMEMBERED = 64  # resource ids (by invoked ARN) and user scopes (by name) made once and kept


# The text the span buffer may hold, in characters, whatever its count: a span can carry up to
# the record's 256 KB (an exception's message and its stack quoting a payload), and 10,000 such
# held while the collector is down would be gigabytes of the memory the companion shares with
# the function (a 128 MB function raising 100 KB errors was killed for it after ~300 invocations,
# what the companion held lost uncounted). Typical spans (~1,000 characters) reach the count
# first.
MAX_BUFFER_CHARS = 16 * 1024 * 1024


class SpanBuffer:
    """A capped FIFO of finished spans, bounded in count and in the characters of their text;
    what does not fit is dropped and counted."""

    def __init__(self, capacity: int, on_drop: Callable[[str], None], max_chars: int = MAX_BUFFER_CHARS) -> None:
        self.capacity = capacity
        self.max_chars = max_chars
        self.chars = 0
        self._items: collections.deque = collections.deque()  # (span, its text's characters)
        self._lock = threading.Lock()
        self._on_drop = on_drop
        self.high_water = 0

    def add(self, span: ReadableSpan) -> None:
        size = text_size(span)
        with self._lock:
            if len(self._items) >= self.capacity or self.chars + size > self.max_chars:
                self._on_drop("buffer_full")
                return
            self._items.append((span, size))
            self.chars += size
            self.high_water = max(self.high_water, len(self._items))

    def take(self, limit: int, max_chars: int | None = None) -> list:
        """Up to `limit` spans, oldest first, and with `max_chars` no more text than that (but
        at least one span)."""
        with self._lock:
            batch, chars = take_front(self._items, limit, max_chars)
            self.chars -= chars
            return batch

    def give_back(self, batch: list) -> None:
        """Put an unexported batch back at the front; what exceeds the caps is dropped (the
        batch's oldest spans are kept)."""
        sized = [(span, text_size(span)) for span in batch]
        with self._lock:
            room, chars_room, keep = self.capacity - len(self._items), self.max_chars - self.chars, 0
            while keep < len(sized) and keep < room and sized[keep][1] <= chars_room:
                chars_room -= sized[keep][1]
                keep += 1
            for entry in reversed(sized[:keep]):
                self._items.appendleft(entry)
                self.chars += entry[1]
            lost = len(batch) - keep
        for _ in range(lost):
            self._on_drop("buffer_full")

    def __len__(self) -> int:
        return len(self._items)


def text_size(span: ReadableSpan) -> int:
    """About how many characters of text `span` holds: its name, status message, and the keys
    and values of its attributes, its events' and its links' (a number as 8). A few µs."""
    size = len(span.name) + len(span.status.description or "") + _attributes_size(span.attributes)
    for event in span.events:
        size += len(event.name) + _attributes_size(event.attributes)
    for link in span.links:
        size += _attributes_size(link.attributes)
    return size


def _attributes_size(attributes: Mapping[str, Any] | None) -> int:
    if not attributes:
        return 0
    size = sum(map(len, attributes))
    # By exact type: the spans are built from JSON records, whose text is plain str (a third
    # faster than isinstance() on every value, at every span).
    for value in attributes.values():
        kind = type(value)
        size += len(value) if kind is str or kind is bytes else _value_size(value, 0)
    return size


def _value_size(value: Any, depth: int) -> int:
    """A user span's AnyValue: maps and arrays held in one another (MAX_NESTING deep at most)
    count their text too, or a span of 200 KB in a map would count as 8 characters against
    the buffer's bound."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if depth >= MAX_NESTING:
        return 8
    if isinstance(value, (tuple, list)):
        return sum(_value_size(item, depth + 1) for item in value)
    if isinstance(value, Mapping):
        return sum(_value_size(key, depth + 1) + _value_size(item, depth + 1) for key, item in value.items())
    return 8


class InvocationFacts:
    """What the metrics need of an invocation, besides its span."""

    __slots__ = ("trigger", "error", "cold", "duration_s", "failure")

    def __init__(self, trigger: str, error: bool, cold: bool, duration_s: float, failure: str | None) -> None:
        self.trigger = trigger
        self.error = error
        self.cold = cold
        self.duration_s = duration_s
        self.failure = failure  # timeout, crash, out_of_memory, runtime_error; None if it ran to its end


def _synthetic_sampled(ids: tuple, sampled_as_root: Callable[[int], bool]) -> bool:
    """The sampling decision for ids the correlator made: its own (made with the parent it
    chose), or, for ids an earlier version carried over without one, the sampler's for a root."""
    return ids[2] if len(ids) > 2 else sampled_as_root(int(ids[0], 16))


def cold_start(inv: Invocation) -> bool:
    """Whether the invocation was a cold start: the function's process says so of its first
    call of the handler (which tells a proactive init by the module's load time); the companion
    knows which INVOKE was the environment's first, handler called or not (environment_cold:
    None where it cannot tell, on Managed Instances), and whether its init ran in the invoke
    phase (a re-init after a reset), which its caller waited for: the function's process takes a
    provisioned environment's first call for warm, then too."""
    said = bool((inv.start or {}).get("cold_start"))
    if inv.environment_cold is None:
        return said
    return inv.environment_cold and (said or inv.start is None or inv.init_in_invoke)


class SpanBuilder:
    def __init__(self, resource: Resource, function_name: str, sampled_as_root: Callable[[int], bool], limits: SpanLimits | None = None) -> None:
        self.resource = resource
        self._limits = limits  # the SDK's span limits, None for none (a rehearsal's span)
        self.function_name = function_name or "function"
        self._sampled_as_root = sampled_as_root
        self._resource_id_of = functools.partial(function_resource_id, version=str(resource.attributes.get("faas.version") or ""))
        self._resource_ids: dict = {}  # invoked ARN -> cloud.resource_id: one environment sees few
        self._scopes: dict = {}

    def span(self, *, name: str, trace_id: int, span_id: int, parent_id: int | None, kind: SpanKind, attributes: dict, start: int, end: int, status: Status, events: list = (), links: list = (), scope: InstrumentationScope = SCOPE, trace_state: object = None, clean: Callable[[Mapping], dict] | None = None, parent_remote: bool = False, bounded: bool = True) -> ReadableSpan:
        # The trace's W3C tracestate, as the SDK's samplers give a span its parent's: checked
        # here (the function's process carries it as it came), so that the SDK never logs it.
        checked = parse_tracestate(trace_state) if trace_state else ""
        state = TraceState.from_header([checked]) if checked else None
        parent = SpanContext(trace_id, parent_id, is_remote=parent_remote, trace_flags=_SAMPLED, trace_state=state) if parent_id else None
        if status.description and not status.description.isascii():
            status = Status(status.status_code, encodable(status.description))
        clean = clean or clean_attributes
        limits = self._limits if bounded else None
        attributes = clean(attributes)
        if limits is not None:
            attributes = bounded_attributes(attributes, limits.span_attributes, limits.span_attribute_length)
        if events:
            events = [Event(encodable(e.name), _event_attributes(clean(e.attributes or {}), limits), timestamp=e.timestamp) for e in events]
            if limits is not None:
                events = bounded_events(events, limits.events)
        return ReadableSpan(
            name=encodable(name),
            context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=_SAMPLED, trace_state=state),
            parent=parent,
            resource=self.resource,
            attributes=attributes,
            events=events if isinstance(events, BoundedList) else tuple(events),
            links=tuple(links),
            kind=kind,
            instrumentation_scope=scope,
            status=status,
            start_time=start,
            end_time=max(end, start),
        )

    def invocation(self, inv: Invocation) -> tuple:
        """(span or None when sampled out, InvocationFacts)."""
        start = inv.start or {}
        outcome = inv.outcome or {}
        attrs = dict(start.get("attributes") or {}) if isinstance(start.get("attributes"), dict) else {}
        # What the function set on the span it found current: over the trigger's attributes, as
        # set later; not over what is known of the invocation only at its end (set below).
        notes = (inv.end or {}).get("annotations")
        notes = notes if isinstance(notes, dict) else {}
        faas_trigger = str(attrs.get("faas.trigger") or "other")  # the metrics' label: the trigger's
        noted = notes.get("attributes")
        if isinstance(noted, dict) and noted:
            attrs.update(noted)
        trigger = str(start.get("trigger") or "other")
        invoked_arn = str(start.get("function_arn") or (inv.invoke_event or {}).get("invokedFunctionArn", ""))
        attrs.update(
            {
                "faas.invocation_id": inv.request_id,
                "faas.coldstart": cold_start(inv),
                "lambdawrap.trigger": trigger,
            }
        )
        if invoked_arn:
            # The version that ran is a resource attribute (faas.version); the invoked ARN may
            # name an alias instead. None known (on Managed Instances, a request told of by its
            # report alone, before any start named the function): left out, not "".
            attrs["cloud.resource_id"] = _remembered(self._resource_ids, invoked_arn, self._resource_id_of)
            attrs["aws.lambda.invoked_arn"] = invoked_arn
        attrs.setdefault("faas.trigger", "other")
        if start.get("proactive_init"):
            attrs["lambdawrap.proactive_init"] = True
        end = inv.end
        status, events, failure = _UNSET, [], None
        start_ns = int(start.get("start_ns") or inv.invoked_at_ns)
        if end is not None:
            # Not before its start (the wall clock stepped back between the two): the span
            # and its exception event end where it began.
            end_ns = max(int(end.get("end_ns") or 0), start_ns)
            if inv.failed_on_platform and not inv.verdict_known:
                # The caller's answer was the platform's: the span ends where that came, not where a
                # handler that ran on past the timeout's SIGTERM (Python 3.12+) finished.
                end_ns = max(start_ns, min(end_ns, platform_end_ns(inv, platform_failure(inv.outcome)[1])))
            status, events, failure = self._reported_status(inv, attrs, end_ns)
        else:
            end_ns, failure = self._platform_end(inv, attrs)
            if failure == "runtime_error" and inv.error_line and attrs["error.type"] in _UNNAMED_ERRORS:
                # The runtime answered an error without the function's word (an event it could
                # not decode: the handler never ran); the platform does not name it, the
                # runtime's error line does, as the caller got it.
                attrs["error.type"] = str(inv.error_line.get("type"))
                events = [_exception_event(inv.error_line, end_ns)]
            # The runtime's error, where it named one, is described as an exception is: by its
            # message, the one the caller got.
            status = Status(StatusCode.ERROR, (_described(inv.error_line) if events else None) or _ended_by_the_platform(failure))
        # Only present when the function opted in (LAMBDAWRAP_CAPTURE_PAYLOAD), redacted there.
        for name, payload in (("lambdawrap.request.payload", start.get("request_payload")), ("lambdawrap.response.payload", (end or {}).get("response_payload"))):
            if isinstance(payload, str):
                attrs[name] = payload[:MAX_PAYLOAD_ATTRIBUTE_CHARS]
        # An invocation error, as Lambda's Errors metric counts them: not a 5xx the handler
        # returned (the span's ERROR, by the HTTP conventions), which it served without one.
        invocation_error = status.status_code == StatusCode.ERROR and not (events == [] and failure is None and attrs.get("error.type") == str(attrs.get("http.response.status_code")))
        facts = InvocationFacts(faas_trigger, invocation_error, attrs["faas.coldstart"], max(0, end_ns - start_ns) / 1e9, failure)
        ids = inv.ids
        trace_id, span_id = int(ids[0], 16), int(ids[1], 16)
        if not (start.get("sampled", True) if inv.start is not None else _synthetic_sampled(ids, self._sampled_as_root)):
            return None, facts
        parent_id = int(start["parent_span_id"], 16) if start.get("parent_span_id") else None
        if inv.start is None:
            # Ids made by the correlator: in the platform's sampled X-Ray trace where it had one.
            parent = platform_parent(inv.invoke_event)
            parent_id = parent.span_id if parent is not None and parent.trace_id == trace_id else None
        links = [Link(SpanContext(int(t, 16), int(s, 16), is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else 0))) for t, s, sampled in start.get("links") or []]
        if status.status_code == StatusCode.UNSET and isinstance(notes.get("status"), list) and notes["status"][:1] in ([_OK_CODE], [_ERROR_CODE]):
            # The function's own status, where the invocation's outcome sets none (an error the
            # caller got is the span's error, whatever the function said of it); the span's
            # only: Lambda's Errors, as the metrics count them, are the caller's.
            code, description = (notes["status"] + [""])[:2]
            status = Status(StatusCode.OK) if code == _OK_CODE else Status(StatusCode.ERROR, str(description or "") or None)
        if isinstance(notes.get("events"), list) and notes["events"]:
            events = [*_user_events(notes["events"]), *events]  # before the invocation's end
        # The function's process names the span and picks its kind as the conventions do for its
        # trigger (validated with the record); an empty name is the function's (the FaaS default),
        # a name the function gave the span it found current is the span's.
        span = self.span(
            name=str(notes.get("name") or start.get("span_name") or self.function_name),
            trace_id=trace_id,
            span_id=span_id,
            parent_id=parent_id,
            parent_remote=True,  # the caller's, from the event
            kind=_member(_SPAN_KINDS, SpanKind, start.get("span_kind", _SERVER_KIND)),
            attributes=attrs,
            start=start_ns,
            end=end_ns,
            status=status,
            events=events,
            links=links,
            trace_state=start.get("trace_state"),
            clean=clean_any_attributes if notes else None,  # the function's may be of any AnyValue
        )
        return span, facts

    def _reported_status(self, inv: Invocation, attrs: dict, end_ns: int) -> tuple:
        """(status, events, failure reason) of an invocation the function reported, as the
        caller got it: the platform's own error where the caller got that (the invocation timed
        out or the runtime exited before it could post: the handler's exception, if it raised,
        is then an event); a response too large to post; the handler's exception; the platform's
        word on a failure after the handler returned; else the HTTP status."""
        end, outcome = inv.end, inv.outcome or {}
        http_status = end.get("http_status")
        if not isinstance(http_status, int) or isinstance(http_status, bool):
            http_status = None
        error = end.get("error") if isinstance(end.get("error"), dict) else None
        if inv.failed_on_platform and not inv.verdict_known:
            # What the runtime posted is what the caller got (a later word of the platform is not
            # news); without a post, a timeout or an exit is the caller's answer.
            error_type, failure = platform_failure(outcome)
            if failure in _CALLERS_PLATFORM_FAILURES:
                attrs["error.type"] = error_type
                attrs["lambdawrap.failure_reason"] = failure
                status = Status(StatusCode.ERROR, _ended_by_the_platform(failure))
                return status, [_exception_event(error, end_ns)] if error is not None else [], failure
        events, failure = [], None
        if inv.posted == "too_large":
            # What the caller got, in its words, for a response or an error too large to post
            # (the platform's own word is only that the runtime then exited, and it did: a
            # crash); the handler's exception, if it raised, stays as its event.
            if error is not None:
                events.append(_exception_event(error, end_ns))
            error = {"type": "Function.ResponseSizeTooLarge", "message": f"Response payload size ({inv.refused_bytes} bytes) exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).", "stack": ""}
            attrs["lambdawrap.failure_reason"] = "after_return"
            failure = "crash"
        elif error is None and inv.failed_on_platform and not inv.verdict_known:
            # (Not where the post already told: the platform's later word is not news, however
            # late the span is built: the export pipeline still loading, or carried over.)
            error = dict(inv.error_line or {"type": None, "message": "", "stack": ""})
            if outcome.get("errorType") not in _UNNAMED_ERRORS or not error.get("type"):
                error["type"] = outcome.get("errorType") or "Runtime.Unknown"
            attrs["lambdawrap.failure_reason"] = "after_return"
        if error is not None:
            # No status code: the caller did not get the handler's response (API Gateway, a
            # function URL and ALB answer 502 or 500 of their own).
            attrs["error.type"] = str(error.get("type"))
            return Status(StatusCode.ERROR, _described(error)), events or [_exception_event(error, end_ns)], failure
        if http_status is not None:
            attrs["http.response.status_code"] = http_status
            if http_status >= 500:
                # As the HTTP conventions name a 5xx; no description, which the status code says.
                attrs["error.type"] = str(http_status)
                return Status(StatusCode.ERROR), [], None
        return _UNSET, [], None

    def _platform_end(self, inv: Invocation, attrs: dict) -> tuple:
        """(end_ns, failure reason) of an invocation the function could not report."""
        error_type, reason = platform_failure(inv.outcome or {})
        attrs["error.type"] = error_type
        attrs["lambdawrap.failure_reason"] = reason
        return platform_end_ns(inv, reason), reason

    def init(self, init: InitFacts, parent: Invocation | None) -> ReadableSpan | None:
        """The init span: in the first invocation's trace, or, for a failed init, its own; the
        root of the trace the function's process chose for the calls its module made as it
        loaded, where it made any, linked to the first invocation."""
        if init.start_ns is None:
            return None
        # Whether a caller waited for this init, as its first invocation's span says: not a
        # provisioned concurrency's, nor a proactive one's.
        if parent is not None:
            cold = cold_start(parent)
        else:
            cold = init.cold if init.cold is not None else init.phase == "invoke" or init.initialization_type != "provisioned-concurrency"
        attrs: dict = {"faas.coldstart": cold, "lambdawrap.init.phase": init.phase}
        if init.worker:
            attrs["lambdawrap.init.worker"] = True
        events: list = []
        links: list = []
        if init.own_trace is not None:
            # Sampled: the function's process sends no span of a trace sampled out, and it sent
            # the ids with the spans that are this one's children.
            trace_id, parent_id = int(init.own_trace[0], 16), None
            if parent is not None and parent.ids:
                sampled = parent.start.get("sampled", True) if parent.start is not None else _synthetic_sampled(parent.ids, self._sampled_as_root)
                links.append(Link(SpanContext(int(parent.ids[0], 16), int(parent.ids[1], 16), is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else 0))))
        elif parent is not None:
            if not parent.ids or (parent.start is not None and not parent.start.get("sampled", True)):
                return None
            trace_id, parent_id = int(parent.ids[0], 16), int(parent.ids[1], 16)
            if parent.start is None and not _synthetic_sampled(parent.ids, self._sampled_as_root):
                return None
        else:
            trace_id, parent_id = new_trace_id(), None
            if not self._sampled_as_root(trace_id):
                return None
        status = _UNSET
        if init.failed:
            # Where the platform names no error, it is named as an invocation's is (a timeout:
            # Sandbox.Timedout, not "timeout").
            error = init.error or {"type": platform_failure({"status": init.status, "errorType": init.error_type})[0], "message": "", "stack": ""}
            error_type = init.error_type if init.error_type not in _UNNAMED_ERRORS else error.get("type")
            attrs["error.type"] = str(error_type)
            status = Status(StatusCode.ERROR, _described(error))
            events.append(_exception_event(dict(error, type=error_type), init.start_ns + int((init.duration_ms or 0) * 1_000_000)))
        return self.span(
            name=f"{self.function_name} init",
            trace_id=trace_id,
            span_id=int(init.span_id, 16) if init.span_id else new_span_id(),  # the correlator's, which its late lines carry
            parent_id=parent_id,
            kind=SpanKind.INTERNAL,
            attributes=attrs,
            start=init.start_ns,
            end=init.start_ns + int((init.duration_ms or 0) * 1_000_000),
            status=status,
            events=events,
            links=links,
            trace_state=(parent.start or {}).get("trace_state") if parent is not None and init.own_trace is None else None,  # the caller's, as every span under its invocation's
        )

    def _user_scope(self, raw: dict) -> InstrumentationScope:
        # The tracer's name, version, schema URL and attributes, as `trace.get_tracer` gave them.
        attributes = raw.get("scope_attributes")
        return _remembered(self._scopes, _scope_key(raw), lambda key: InstrumentationScope(*key[:3], clean_any_attributes(attributes) if attributes else None))

    def user_span(self, raw: dict) -> ReadableSpan:
        """A span the user's code made with the OpenTelemetry API (validated by the caller)."""
        code, description = (raw.get("status") or [0, ""])[:2]
        status = _UNSET if code == _UNSET_CODE else Status(_member(_STATUS_CODES, StatusCode, code), (description or None) if code == _ERROR_CODE else None)
        events = _user_events(raw.get("events") or [])
        links = [Link(SpanContext(int(t, 16), int(s, 16), is_remote=remote, trace_flags=_SAMPLED), clean_any_attributes(attrs or {})) for t, s, attrs, remote in raw.get("links") or []]
        return self.span(
            name=raw["name"],
            trace_id=int(raw["trace_id"], 16),
            span_id=int(raw["span_id"], 16),
            parent_id=int(raw["parent_span_id"], 16) if raw.get("parent_span_id") else None,
            parent_remote=raw.get("parent_remote") is True,
            kind=_member(_SPAN_KINDS, SpanKind, raw.get("kind") or 0),
            attributes=dict(raw.get("attributes") or {}),
            start=int(raw["start_ns"]),
            end=int(raw["end_ns"]),
            status=status,
            events=events,
            links=links,
            scope=self._user_scope(raw),
            trace_state=raw.get("trace_state"),
            clean=clean_any_attributes,
            # The function's own spans came within the limits, as the SDK keeps them (an
            # object's text is not cut); a client call's span of ours did not.
            bounded=str(raw.get("scope") or "").startswith(CLIENT_SCOPE_PREFIX),
        )


def _event_attributes(attributes: Mapping, limits: SpanLimits | None) -> Mapping:
    return attributes if limits is None else bounded_attributes(attributes, limits.event_attributes, limits.attribute_length)


def _optional_text(value: object) -> str | None:
    return encodable(value) if isinstance(value, str) and value else None


def _scope_key(raw: dict) -> tuple:
    """What tells one user tracer's scope from another's, hashable."""
    key = (encodable(str(raw.get("scope") or "")), _optional_text(raw.get("scope_version")), _optional_text(raw.get("scope_schema_url")))
    if key[0].startswith(CLIENT_SCOPE_PREFIX) and key[1:] == (None, None):
        # A client span of ours (lambdawrap.botocore, ...): its record leaves out what every
        # one of them would carry, bytes the function's process would send with each.
        key = (key[0], __version__, SCHEMA_URL)
    attributes = raw.get("scope_attributes")
    return key + (json.dumps(attributes, sort_keys=True, default=str),) if attributes else key


def _remembered(made: dict, key: Any, make: Callable[[Any], Any]) -> Any:
    """make(key), made once while `made` holds it (at most MAX_REMEMBERED keys)."""
    value = made.get(key)
    if value is None:
        if len(made) >= MAX_REMEMBERED:
            made.clear()
        value = made[key] = make(key)
    return value


def _member(members: dict, enum: Any, value: object) -> Any:
    # Values the Enum would refuse still raise (ValueError), as calling it does.
    return members[value] if type(value) is int and value in members else enum(value)


def clean_attributes(attributes: Mapping) -> dict:
    """The attributes OTLP can carry, their text encodable.

    An int outside OTLP's int64 (a forged Kafka offset of 2**64, say), or an array holding one,
    is left out: the SDK's exporter leaves out an attribute it cannot encode too, but only after
    logging the encoder's traceback, for every span that carries it."""
    allowed = (str, bool, int, float)
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if isinstance(value, str):
            out[encodable(str(key))] = encodable(value)
        elif isinstance(value, allowed):
            if _fits(value):
                out[encodable(str(key))] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, allowed) and _fits(v) for v in value):
            out[encodable(str(key))] = [encodable(v) if isinstance(v, str) else v for v in value]
    return out


def clean_any_attributes(attributes: Mapping) -> dict:
    """The attributes of a span the function's code made, which may hold any of OTLP's
    AnyValue (shared.attribute_values): None, bytes, and arrays and maps of any of them, as
    the SDK keeps them. An attribute OTLP cannot carry (an int outside int64, anywhere in it)
    is left out, alone, as the SDK's exporter leaves it out."""
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        try:
            out[encodable(str(key))] = _any_value(value)
        except ValueError:
            pass
    return out


def _any_value(value: object) -> Any:
    if isinstance(value, str):
        return encodable(value)
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        if _fits(value):
            return value
        raise ValueError("an int OTLP cannot carry")
    if isinstance(value, list):
        return [_any_value(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and BYTES_TAG in value:
            text = value[BYTES_TAG]
            if isinstance(text, str):
                try:
                    return a2b_base64(text)
                except (binascii.Error, ValueError):
                    raise ValueError("bytes that are not base64") from None
        return {encodable(str(k)): _any_value(v) for k, v in value.items()}
    raise ValueError(f"no OTLP value for {type(value).__name__}")


def _fits(value: object) -> bool:
    return not isinstance(value, int) or _INT64_MIN <= value <= _INT64_MAX


def _user_events(raw: list) -> list:
    """The events of a span of the function's, [name, attributes, time_ns] each (any other
    shape left out: a record not from our handler side)."""
    return [Event(str(event[0]), event[1], timestamp=event[2]) for event in raw if event_ok(event)]


def _exception_event(error: dict, end_ns: int) -> Event:
    """The conventions' exception event, at the end of the span it ends: its message and
    stack trace left out where there are none (a platform's failure, an error without one)."""
    attributes = {"exception.type": str(error.get("type"))}
    for name, key in (("exception.message", "message"), ("exception.stacktrace", "stack")):
        if error.get(key):
            attributes[name] = str(error[key])
    return Event("exception", attributes, timestamp=end_ns or None)


def _described(error: dict) -> str | None:
    """A failed span's status description: the exception's message alone, as the conventions
    ask (error.type says the type; none without a message)."""
    message = error.get("message")
    return str(message)[:1024] if message else None


def _ended_by_the_platform(failure: str | None) -> str:
    return f"invocation ended by the platform ({failure})"
