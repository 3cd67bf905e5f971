"""What every HTTP client hook shares: one CLIENT span per logical request, with the stable
HTTP client conventions (`http.request.method`, `url.full`, `server.address`, `server.port`,
`http.response.status_code`, `error.type`), and the trace context in the request's headers.

A hook asks `begin()` for a call (None: record nothing, call through) and ends it with
`answered()` or `failed()`. `begin()` marks the call as under way in this context, so that the
layers below (urllib3 under requests, http.client under urllib3) record nothing more; nothing
here raises (failures are counted and the call goes on untraced).
"""

from __future__ import annotations

from lambdawrap.handler.invocation import FAILURES, drop_own_frame, labelled_as_bootstrap
from lambdawrap.handler.outgoing.propagation import Propagation, add_missing
from lambdawrap.handler.outgoing.recorder import CLIENT, IN_CLIENT_CALL, IN_RESPONSE_HOOK, ClientSpan, Recorder, capped, contrib_active, contrib_span_current, interrupted_below, otel_suppressed, unmark
from lambdawrap.handler.outgoing.recorder import mark as mark_call  # `mark` names begin()'s argument
from lambdawrap.handler.outgoing.urls import full_url
from lambdawrap.shared.semconv import KNOWN_HTTP_METHODS

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Any, Callable


class Call:
    """One HTTP request under way."""

    __slots__ = ("span", "token")

    def __init__(self, span: ClientSpan, token: "Any") -> None:
        self.span = span
        self.token = token


class HttpCalls:
    """Begins and ends the spans of one library's requests."""

    def __init__(self, library: str, recorder: Recorder, propagation: Propagation, redaction_keys: frozenset, contrib: "tuple[str, str]") -> None:
        self.scope = f"lambdawrap.{library}"
        self._library = library
        self._recorder = recorder
        self._propagation = propagation
        self._keys = redaction_keys
        self._contrib = contrib

    def begin(self, method: str, scheme: str, host: str, port: int, rest: str, headers: "Any" = None, userinfo: str = "", mark: object = True) -> "Call | None":
        """A call to record, or None (inside another traced call, our own traffic, an excluded
        host, OpenTelemetry's own instrumentation active). `headers`, if given, gets the trace
        context (what the user set stays). The context is marked with `mark` (an object of a
        hook's, which code under the call reads back); False leaves it unmarked (for a hook
        whose end is a separate call, which could otherwise leave the mark behind)."""
        try:
            if self.inside_a_call():
                return None
            if otel_suppressed() or contrib_active(*self._contrib) or contrib_span_current(self._contrib[0]) or self._recorder.excluded(host, port):
                if headers is not None:
                    # A request object sent again (or redirected) here holds the context of
                    # its earlier send: it would name another call's span to a host that is to
                    # get none.
                    add_missing(headers, [], self._propagation.per_send)
                return None
            known = method if method in KNOWN_HTTP_METHODS else ""
            attributes = {
                "http.request.method": known or "_OTHER",
                "url.full": capped(full_url(scheme, host, port, rest, self._keys, userinfo)),
                "server.address": host,
                "server.port": port,
            }
            if not known:
                attributes["http.request.method_original"] = capped(method)
            span = self._recorder.start(self.scope, known or "HTTP", CLIENT, attributes)
            if headers is not None:
                add_missing(headers, self._propagation.http_headers(span))
            self._recorder.publish(span)
            return Call(span, mark_call(mark) if mark else None)
        except Exception:  # noqa: BLE001 - the request goes out untraced
            FAILURES.record(f"tracing a {self._library} request")
            return None

    def inside_a_call(self) -> bool:
        """Whether a traced call is under way in this context: the request is one of its layers
        (its headers are that call's)."""
        marked = IN_CLIENT_CALL.get()
        # A response hook's calls are the function's own (a re-send through the request's
        # adapter is marked as under the request again: requests_hook).
        return marked is not IN_RESPONSE_HOOK and bool(marked)

    def mark(self, call: Call) -> None:
        """Mark a call begun with `mark=False` as under way, once nothing is left that could
        fail before it is sent."""
        call.token = mark_call(True)

    def headers_for(self, call: Call) -> list:
        """[(name, value)] of the trace context, for hooks that build the headers themselves."""
        return self._propagation.http_headers(call.span)

    def per_send(self) -> bool:
        """Whether the propagators carry a header of one send's own (propagation.carried_changes)."""
        return self._propagation.per_send

    def answered(self, call: Call, status: "Any", invocation: "Any" = None) -> None:
        """The server answered: 4xx and 5xx mark the span as failed, as the conventions ask of
        a client. `invocation`: the one a call ended at its end belongs to."""
        try:
            unmark(call.token)
            call.token = None
            error = ""
            if type(status) is int:
                call.span.attributes["http.response.status_code"] = status
                if status >= 400:
                    error = str(status)
            self._recorder.end(call.span, error, invocation=invocation)
        except Exception:  # noqa: BLE001
            FAILURES.record(f"tracing a {self._library} response")

    def failed(self, call: Call, exc: BaseException, status: "int | None" = None) -> None:
        """No answer (refused, timed out, cancelled, ...), or `status` was answered and the
        call failed after it (a body that could not be read): the conventions keep both."""
        try:
            unmark(call.token)
            call.token = None
            error = type(exc).__qualname__
            if status is None:
                # urllib3's Retry gave up on answers (status_forcelist): the last was answered,
                # and it is what failed the call, as the conventions name a failed status.
                status = _status_given_up_on(exc)
                error = str(status) if status is not None else error
            if type(status) is int:
                call.span.attributes["http.response.status_code"] = status
            self._recorder.end(call.span, error, _message(exc), exc)
        except Exception:  # noqa: BLE001
            FAILURES.record(f"tracing a failed {self._library} request")


Begin = "Callable[[Any, tuple, dict], tuple]"  # (instance, args, kwargs) -> (call or None, args, kwargs)


def sync_wrapper(calls: HttpCalls, begin: "Callable", on_answer: "Callable", on_error: "Callable | None" = None) -> "Callable":
    """A FunctionWrapper wrapper tracing each call of a sending method: `begin` picks the call
    (and may give the method a copy of its arguments carrying the context); `on_answer(call,
    instance, result)` and `on_error(call, exc)` (default: the call failed) end it."""
    failed = on_error or calls.failed

    def wrapper(wrapped: "Callable", instance: "Any", args: tuple, kwargs: dict) -> "Any":
        call, args, kwargs = guarded_begin(calls, begin, instance, args, kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            if call is not None:
                _ended(calls, call, failed, (call, exc), exc)
            else:
                interrupted_below(exc)
            drop_own_frame(exc)
            raise
        if call is not None:
            _ended(calls, call, on_answer, (call, instance, result))
        return result

    return labelled_as_bootstrap(wrapper)  # on 3.10 its entry is taken out further up


def async_wrapper(calls: HttpCalls, begin: "Callable", on_answer: "Callable") -> "Callable":
    """`sync_wrapper` for a coroutine method."""

    async def wrapper(wrapped: "Callable", instance: "Any", args: tuple, kwargs: dict) -> "Any":
        call, args, kwargs = guarded_begin(calls, begin, instance, args, kwargs)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            if call is not None:
                calls.failed(call, exc)
            else:
                interrupted_below(exc)
            drop_own_frame(exc)
            raise
        if call is not None:
            _ended(calls, call, on_answer, (call, instance, result))
        return result

    return labelled_as_bootstrap(wrapper)


def _ended(calls: HttpCalls, call: Call, end: "Callable", args: tuple, exc: "BaseException | None" = None) -> None:
    """End `call` with `end(*args)`, which reads the library's answer or exception `exc` (a
    property of a subclass may raise anything): what it raises is counted, never raised in place
    of the function's own result or exception, and the call still ends, answered or failed with
    the exception the function gets."""
    try:
        end(*args)
    except Exception:  # noqa: BLE001
        FAILURES.record(f"reading a {calls.scope} answer")
        if exc is None:
            calls.answered(call, None)
        else:
            calls.failed(call, exc)


def answered_with(calls: HttpCalls, status_attribute: str) -> "Callable":
    """An `on_answer` ending the call with the status the result carries in that attribute."""
    return lambda call, instance, result: calls.answered(call, getattr(result, status_attribute, None))


def guarded_begin(calls: HttpCalls, begin: "Callable", instance: "Any", args: tuple, kwargs: dict) -> tuple:
    try:
        return begin(instance, args, kwargs)
    except Exception:  # noqa: BLE001 - an argument shape we did not expect: call through untraced
        FAILURES.record(f"reading a {calls.scope} request")
        return None, args, kwargs


def _status_given_up_on(exc: BaseException) -> "int | None":
    """The status urllib3's Retry gave up on ("too many 503 error responses": the ResponseError
    a MaxRetryError gives as its reason, requests' RetryError around it); None for another
    failure. Read from the library's own exception types, never the function's."""
    try:
        for error in (exc, exc.args[0] if exc.args else None):
            reason = getattr(error, "reason", None) if type(error).__name__ in _GIVING_UP else None
            if type(reason).__name__ == "ResponseError":
                words = str(reason).split()
                if len(words) == 5 and words[:2] == ["too", "many"] and words[2].isdigit():
                    return int(words[2])
    except Exception:  # noqa: BLE001 - an exception of another shape: no status known
        pass
    return None


_GIVING_UP = ("MaxRetryError", "RetryError")


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a library's __str__ may raise
        return ""
