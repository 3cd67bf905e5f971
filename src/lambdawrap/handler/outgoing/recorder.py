"""The client span recorder every outgoing-call hook shares.

A client span is started before the call leaves the process and ended when it is answered (or
failed). Its parent is the innermost active span: the user's current OpenTelemetry span when
their code uses the API and one is current, else the invocation span (from any thread: a call
made on a thread the handler started belongs to the invocation under way). It follows the
trace's sampling decision: an unsampled trace records nothing, but the call still carries the
context (sampled flag off), so that downstream services agree.

Ended spans ride with the invocation's record (`Invocation.add_span`: one send per invocation,
capped by LAMBDAWRAP_MAX_SPANS_PER_INVOCATION); outside an invocation (at import time, on a thread
that outlived it) a span is sent alone.

`IN_CLIENT_CALL` marks a call under way in this context, so that the layers below it (requests
over urllib3 over http.client; the HTTP request under an AWS SDK call) add no span of their own.
An AWS call's mark is the call itself: a request below it that a cancellation interrupts ends it
(`interrupted_below`), as botocore reports no such end.
"""

from __future__ import annotations

import json
import sys
import time
from _thread import allocate_lock

from lambdawrap.handler import init_trace, secret_cuts
from lambdawrap.handler.invocation import FAILURES, active_invocation, deliver_span, describe_exception
from lambdawrap.handler.redact import urls_redacted
from lambdawrap.shared import records, unreported_drops
from lambdawrap.shared.ids import new_span_id, new_trace_id
from lambdawrap.shared.own_stdlib import standard
from lambdawrap.shared.process_id import own_pid
from lambdawrap.shared.settings import loopback_as_one

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Any, Callable

    from lambdawrap.shared.inflight import InflightSlot

CLIENT = 2  # the API's SpanKind values, as records.span carries them (OTLP numbers them one higher)
PRODUCER = 3
STATUS_ERROR = 2
MAX_ATTRIBUTE_CHARS = 2048  # a URL or an ARN: enough to tell it, never a payload

# Truthy while a client span is open in this context: the layers below add none of their own.
# _contextvars, the module contextvars re-exports, the standard one (own_stdlib: an extension
# module, a file of the function's could take its name), and `contextvars` stays out of
# sys.modules where the function did not import it.
ContextVar = standard("_contextvars").ContextVar
IN_CLIENT_CALL: "Any" = ContextVar("lambdawrap_in_client_call", default=False)
# Its value while requests runs a traced request's response hooks (the function's code, inside
# Session.send): the calls a hook makes are the function's own, but a re-send through the request's
# adapter (`r.connection.send`: HTTPDigestAuth, requests-ntlm and requests-kerberos answer a 401 so)
# is still the request's: requests' adapter, sending from a hook, marks it as under a call again.
IN_RESPONSE_HOOK = "in a requests response hook"
# OpenTelemetry's own suppression keys (its instrumentations set them around the calls they trace):
# the plain names older APIs used (and `suppress_instrumentation()` still sets), and the names
# the API's `create_key` made for this process (a uuid appended: from API 1.2x its only key for
# `suppress_http_instrumentation()`, which e.g. the requests instrumentation wraps its call in).
_OTEL_SUPPRESS_KEYS = ("suppress_instrumentation", "suppress_http_instrumentation")
_OTEL_SUPPRESS_ATTRIBUTES = ("_SUPPRESS_INSTRUMENTATION_KEY", "_SUPPRESS_HTTP_INSTRUMENTATION_KEY")
# OpenTelemetry's instrumentations of the layers a call of ours may send through (urllib3 under
# requests and botocore, urllib's opener, aiohttp's client under aiobotocore): only while one is
# enabled does a call of ours set their suppression key in the function's context.
_CONTRIB_BELOW = (
    ("opentelemetry.instrumentation.urllib3", "URLLib3Instrumentor"),
    ("opentelemetry.instrumentation.urllib", "URLLibInstrumentor"),
    ("opentelemetry.instrumentation.aiohttp_client", "AioHttpClientInstrumentor"),
)


class ClientSpan:
    """One outgoing call under way."""

    __slots__ = ("trace_id", "span_id", "parent_id", "sampled", "trace_state", "name", "kind", "scope", "start_ns", "attributes", "parent_remote", "published")

    def __init__(self, trace_id: int, span_id: int, parent_id: int, sampled: bool, trace_state: str, name: str, kind: int, scope: str, attributes: dict, parent_remote: bool = False) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        # A context the user's code made current from another process's (a message's, say).
        self.parent_remote = parent_remote
        self.sampled = sampled
        self.trace_state = trace_state  # the parent's W3C tracestate, carried on unchanged
        self.name = name
        self.kind = kind
        self.scope = scope
        self.start_ns = time.time_ns()
        self.attributes = attributes
        self.published: tuple | None = None  # its place in the in-flight slot (see `Recorder.publish`)


class Recorder:
    """Starts and ends client spans; one per process, made by `outgoing.install`."""

    def __init__(self, sampled_as_root: "Callable[[int, Any], bool]", inflight: "InflightSlot", channel: "Any", own_endpoints: tuple, excluded_hosts: tuple, query_keys: frozenset = frozenset()) -> None:
        self._sampled_as_root = sampled_as_root
        self._inflight = inflight  # the process's in-flight slot, where calls under way are held
        self._init_held = 0  # the process (pid) whose slot holds the init's mark (see publish)
        self._init_marking = allocate_lock()  # two threads' first calls of the init mark it once
        self._query_keys = query_keys  # redacted in the URLs a failure's texts hold, as in url.full
        self._channel = channel
        self._own = frozenset(own_endpoints)
        self._excluded = frozenset(_as_compared(entry) for entry in excluded_hosts)

    def excluded(self, host: str, port: int) -> bool:
        """Whether a call to host:port is lambdawrap's own traffic or a host the user excluded."""
        host = loopback_as_one(host.lower())
        address = f"{host}:{port}"
        return address in self._own or host in self._excluded or address in self._excluded

    def start(self, scope: str, name: str, kind: int, attributes: dict) -> ClientSpan:
        """A client span under the innermost active span (a new trace when there is none);
        never recorded for lambdawrap's own calls."""
        if _own_call():
            return ClientSpan(new_trace_id(), new_span_id(), 0, False, "", name, kind, scope, attributes)
        parent = _current_otel_parent()
        if parent is not None:
            trace_id, parent_id, sampled, trace_state, remote = parent
            return ClientSpan(trace_id, new_span_id(), parent_id, sampled, trace_state, name, kind, scope, attributes, remote)
        invocation = active_invocation() or init_trace.current()
        if invocation is not None:
            trace_id, parent_id, sampled, trace_state = invocation.trace_id, invocation.span_id, invocation.sampled, invocation.trace_state
        else:
            trace_id, parent_id, trace_state = new_trace_id(), 0, ""
            sampled = self._sampled_as_root(trace_id, None)
        return ClientSpan(trace_id, new_span_id(), parent_id, sampled, trace_state, name, kind, scope, attributes)

    def publish(self, span: ClientSpan) -> None:
        """The call of `span` leaves now (its attributes set, its host not excluded): tell the
        in-flight slot of the invocation under way, so that should the platform end the process
        before the call ends (a timeout while the handler waits on it), the companion ends its
        span there, rather than lose the call the invocation was cut short in. Likewise a call
        of the init's, the slot marked with the init span's ids (an init that times out while
        its module waits on a call). Once a call."""
        if span.published is not None or not span.sampled:
            return
        invocation = active_invocation()
        if (invocation is not None and invocation.slot is not None) or (invocation is None and self._init_slot(span)):  # its start is held there
            try:
                made = json.dumps(_as_record(span, span.start_ns, [], (0, "")), separators=(",", ":")).encode()
                # The span keeps only the token, plain numbers: botocore deep-copies the request
                # that holds it.
                span.published = self._inflight.call_started(span.span_id, made)
            except Exception:  # noqa: BLE001 - the call goes on; only a cut-short end would miss it
                FAILURES.record("publishing a call under way")

    def _init_slot(self, span: ClientSpan) -> bool:
        """Whether the slot holds the init's mark for `span`, a call of the init's (marked now,
        once a process: the first invocation's start replaces the mark)."""
        init = init_trace.chosen()
        if init is None or span.trace_id != init.trace_id:
            return False
        pid = own_pid()
        if self._init_held != pid:
            with self._init_marking:
                if self._init_held != pid:
                    mark = records.init_mark([init.trace_hex, init.span_hex], time.time_ns(), unreported_drops.process_start())
                    # Not once the first invocation has begun: its start, held by then, stays.
                    if not self._inflight.hold_if(mark, time.time_ns(), lambda: init_trace.chosen() is init):
                        return False
                    self._init_held = pid
        return True

    def end(self, span: ClientSpan, error: str = "", description: str = "", exception: BaseException | None = None, end_ns: int | None = None, invocation: "Any" = None) -> None:
        """Record the finished span; `error` (the error.type) marks it as failed. `end_ns` and
        `invocation` for a span ended after the fact (at its invocation's end)."""
        if span.published is not None:
            token, span.published = span.published, None
            try:
                self._inflight.call_ended(span.span_id, token)
            except Exception:  # noqa: BLE001 - at worst its place stays taken
                FAILURES.record("ending a call under way")
        if not span.sampled:
            return
        if end_ns is None:
            end_ns = time.time_ns()
        events = []
        status = (0, "")
        if error:
            span.attributes["error.type"] = error
            # A client's error names the URL it was sent to (urllib3's "Max retries exceeded
            # with url: /blob?sig=..."): a presigned URL's credentials, redacted in url.full.
            status = (STATUS_ERROR, capped(self._redacted(capped(description))))  # a marker may be longer than the value
            if exception is not None:
                described = describe_exception(exception, redact=self._redacted)
                events.append(["exception", {"exception.type": described["type"], "exception.message": described["message"], "exception.stacktrace": described["stack"]}, end_ns])
        deliver_span(self._channel, _as_record(span, end_ns, events, status), invocation)

    def _redacted(self, text: str) -> str:
        return urls_redacted(text, self._query_keys, "REDACTED") if self._query_keys else text


def _as_record(span: ClientSpan, end_ns: int, events: list, status: tuple) -> dict:
    # No value is left out as no attribute: the companion keeps a None as the SDK keeps it in a
    # span the function's code made (an empty value).
    attributes = {key: value for key, value in span.attributes.items() if value is not None}
    return records.span(span.scope, span.name, span.trace_id, span.span_id, span.parent_id, span.kind, span.start_ns, end_ns, attributes, events, [], status, span.trace_state, parent_remote=span.parent_remote)


def _as_compared(entry: str) -> str:
    """An excluded `host` or `host:port` as `excluded()` compares it: the host a loopback name
    as one (with its port too: `localhost:2772` is where a call to 127.0.0.1:2772 goes), an IPv6
    literal out of its brackets (`[::1]:8080`)."""
    if entry.startswith("["):
        host, _, after = entry[1:].partition("]")
        port = after[1:] if after.startswith(":") else ""
    else:
        host, sep, port = entry.rpartition(":")
        if not sep or ":" in host or not port.isdigit():  # a host alone (an IPv6 one unbracketed)
            host, port = entry, ""
    host = loopback_as_one(host)
    return f"{host}:{port}" if port else host


def _own_call() -> bool:
    # The handler side's refresh of the secrets (when the boot fetched them itself, boto3 runs in
    # this process, on the refresh worker): the function made no such call.
    secret_cache = sys.modules.get("lambdawrap.handler.secret_cache")
    return secret_cache is not None and secret_cache.making_own_calls()


def _current_otel_parent() -> "tuple | None":
    # Only when the user's code brought the API in; the bridge makes the invocation span current
    # during the handler, so a valid current span is the innermost one, whoever started it.
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    try:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        trace_state = context.trace_state.to_header() if context.trace_state else ""
        return context.trace_id, context.span_id, context.trace_flags.sampled, trace_state, context.is_remote is True
    except Exception:  # noqa: BLE001 - an API of any version: fall back to the invocation span
        FAILURES.record("reading the current OpenTelemetry span")
        return None


def otel_suppressed() -> bool:
    """Whether OpenTelemetry's instrumentations asked for no spans in this context (theirs
    wrap the calls they trace in it: e.g. the HTTP request under their botocore span)."""
    context = sys.modules.get("opentelemetry.context")
    if context is None:
        return False
    try:
        if any(context.get_value(key) for key in _OTEL_SUPPRESS_KEYS):
            return True
        keys = (getattr(context, name, None) for name in _OTEL_SUPPRESS_ATTRIBUTES)
        return any(context.get_value(key) for key in keys if isinstance(key, str))
    except Exception:  # noqa: BLE001 - an API of any version
        return False


def contrib_active(module_name: str, class_name: str) -> bool:
    """Whether the function enabled OpenTelemetry's own instrumentation of a library (then ours
    steps aside for it: no duplicate spans, no duplicate context)."""
    module = sys.modules.get(module_name)
    if module is None:
        return False
    instrumentor = getattr(module, class_name, None)
    instance = getattr(instrumentor, "_instance", None)
    return bool(getattr(instance, "_is_instrumented_by_opentelemetry", False))


def contrib_span_current(module_name: str) -> bool:
    """Whether the current OpenTelemetry span is one that library's OpenTelemetry instrumentation
    started (its tracer is named after its module): it traces this very call, enabled for one
    client or session only (httpx's `instrument_client`, aiohttp's `create_trace_config`), which
    `contrib_active` does not see. Ours then steps aside: no second span, no second context."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return False
    try:
        span = trace.get_current_span()
        scope = getattr(span, "instrumentation_scope", None)  # the SDK's spans
        if scope is not None:
            return getattr(scope, "name", None) == module_name
        own = getattr(span, "_scope", None)  # lambdawrap's bridge: (name, version, schema URL)
        return type(own) is tuple and bool(own) and own[0] == module_name
    except Exception:  # noqa: BLE001 - an API of any version: not theirs, as far as we can tell
        return False


def interrupted_below(exc: BaseException) -> None:
    """A request that added no span (it runs under another call) ended with `exc`: a
    BaseException that is no Exception (a cancellation) ends the AWS call above it, for which
    botocore and aiobotocore emit no after-call-error (they catch Exception only)."""
    if isinstance(exc, Exception):
        return
    try:
        interrupted = getattr(IN_CLIENT_CALL.get(), "interrupted", None)
        if interrupted is not None:
            interrupted(exc)
    except Exception:  # noqa: BLE001
        FAILURES.record("ending an interrupted AWS SDK call")


def mark(value: object, suppress: bool = True) -> tuple:
    """Mark a call under way in this context (`IN_CLIENT_CALL` set to `value`) and, when the
    function enabled an OpenTelemetry instrumentation of a layer below ours (urllib3's, under a
    requests or AWS SDK call), set the `suppress_http_instrumentation` key of its context, as
    OpenTelemetry's own instrumentations do around the calls they trace: that one then adds no
    second span and no second traceparent. `suppress=False` lifts the key again, where it is
    set, for the function's own code run inside a call. Returns the token `unmark` takes."""
    return IN_CLIENT_CALL.set(value), _otel_http_suppression(suppress)


def _otel_http_suppression(value: bool, wanted: bool = False) -> "tuple | None":
    """(API module, its token, the context attached, the key's value before) or None where the
    function's context is left alone: the function's own attach and detach inside the call
    (a response hook's, an adapter's) would be undone by ours, or end on our key."""
    context = sys.modules.get("opentelemetry.context")
    key = getattr(context, "_SUPPRESS_HTTP_INSTRUMENTATION_KEY", None)
    if not isinstance(key, str):  # no API loaded, or one of another shape
        return None
    try:
        before = context.get_value(key)
        if not wanted and (bool(before) is value or value and not any(contrib_active(*below) for below in _CONTRIB_BELOW)):
            return None
        attached = context.set_value(key, value)
        return context, context.attach(attached), attached, before
    except Exception:  # noqa: BLE001 - an API of any version: theirs may then add a span
        FAILURES.record("marking a call for OpenTelemetry's instrumentations")
        return None


def unmark(token: "Any") -> None:
    """End the mark `mark()` made (its token), wherever the call ended."""
    if token is None:
        return
    ours, theirs = token
    try:
        IN_CLIENT_CALL.reset(ours)
    except ValueError:  # ended in another context (an async generator, say)
        IN_CLIENT_CALL.set(False)
        if theirs is not None:  # its token is of that other context too: lifted here instead
            _otel_http_suppression(bool(theirs[3]), wanted=True)
        return
    if theirs is None:
        return
    context, otel_token, attached, before = theirs
    try:
        if context.get_current() is attached:
            context.detach(otel_token)
        else:
            # The function attached a context of its own inside the call, still current: it
            # stays, with the key as it was before the call.
            _otel_http_suppression(bool(before), wanted=True)
    except Exception:  # noqa: BLE001 - an API of any version
        FAILURES.record("unmarking a call for OpenTelemetry's instrumentations")


def capped(value: str) -> str:
    """`value` within MAX_ATTRIBUTE_CHARS, cut clear of any secret's value (a URL's key)."""
    return secret_cuts.head(value, MAX_ATTRIBUTE_CHARS)
