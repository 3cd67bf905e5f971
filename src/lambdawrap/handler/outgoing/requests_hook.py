"""requests: a span per `Session.send()` (redirects are followed inside it: one span per logical
request, its final answer). The prepared request's headers get the trace context, as with
OpenTelemetry's requests instrumentation (it is the request being sent). A 4xx/5xx answer that a
response hook raises for (`raise_for_status()`, inside `send()`) is recorded as the answer it is.
The response hooks are the function's code, run inside `send()`: the calls they make are not
under the request (`sessions.dispatch_hook` runs them marked IN_RESPONSE_HOOK), so each is traced
on its own, those made with urllib3 or http.client directly too; a re-send through the
request's adapter (an auth handler's answer to a 401: `HTTPAdapter.send` from a hook) stays
inside the request's span. A request that fails once answered (a body it cannot decode or read
whole, too many redirects, a hook's own error) keeps the status it was answered with."""

from __future__ import annotations

import weakref

from lambdawrap.handler.invocation import drop_own_frame, labelled_as_bootstrap
from lambdawrap.handler.outgoing.http_calls import HttpCalls, answered_with, sync_wrapper
from lambdawrap.handler.outgoing.recorder import IN_CLIENT_CALL, IN_RESPONSE_HOOK, mark, unmark
from lambdawrap.handler.outgoing.urls import split_url

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from types import ModuleType
    from typing import Any, Callable


# The responses traced sends returned, by id, while the function holds them: an error a hook
# raises for one of them is that request's answer, not the request's whose hook it is.
_SENDS_ANSWERED: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()


class _Answered:
    """A traced request's mark of the context: the status of the last response it handed its
    hooks (a redirect's too). Gone with the mark when the request ends, so nothing of it stays
    in the function's context."""

    __slots__ = ("status",)

    def __init__(self) -> None:
        self.status: "int | None" = None


def patch(module: "ModuleType", calls: HttpCalls, function_wrapper: "Callable") -> None:
    unprepared = getattr(module, "Request", None)
    unprepared = unprepared if isinstance(unprepared, type) else ()

    def begin(instance: "Any", args: tuple, kwargs: dict) -> tuple:
        request = args[0] if args else kwargs.get("request")
        if isinstance(request, unprepared):  # send() refuses it: no call, and left as it was
            return None, args, kwargs
        method, url = getattr(request, "method", None), getattr(request, "url", None)
        parts = split_url(url) if isinstance(method, str) and isinstance(url, str) else None
        if parts is None:
            return None, args, kwargs
        scheme, host, port, userinfo, rest = parts
        return calls.begin(method, scheme, host, port, rest, request.headers, userinfo, _Answered()), args, kwargs

    request_error = getattr(module, "RequestException", ())  # HTTPError's base

    def failed(call: "Any", exc: BaseException) -> None:
        answered = IN_CLIENT_CALL.get()
        response = getattr(exc, "response", None)
        if response is not None and _SENDS_ANSWERED.get(id(response)) is response:
            # Another traced request's answer (one a hook made and raised for), not this one's:
            # this one's come from its adapter, untraced. An answer a hook put in place of this
            # one's (an auth handler's re-send) is this one's.
            calls.failed(call, exc, getattr(answered, "status", None))
            return
        status = getattr(response, "status_code", None)
        if isinstance(exc, request_error) and type(status) is int and status >= 400:
            calls.answered(call, status)  # an answer, which a response hook raised for
        else:
            calls.failed(call, exc, status if type(status) is int else getattr(answered, "status", None))

    answered_with_status = answered_with(calls, "status_code")

    def answered(call: "Any", instance: "Any", response: "Any") -> None:
        try:
            _SENDS_ANSWERED[id(response)] = response
        except TypeError:  # an object no weak reference can hold: none is told apart
            pass
        answered_with_status(call, instance, response)

    module.Session.send = function_wrapper(module.Session.send, sync_wrapper(calls, begin, answered, failed))

    sessions = getattr(module, "sessions", None)
    if callable(getattr(sessions, "dispatch_hook", None)):
        sessions.dispatch_hook = function_wrapper(sessions.dispatch_hook, _outside_the_call)
    adapter = getattr(getattr(module, "adapters", None), "HTTPAdapter", None)
    if isinstance(adapter, type) and callable(getattr(adapter, "send", None)):
        adapter.send = function_wrapper(adapter.send, _resent_inside_the_call)


@labelled_as_bootstrap
def _outside_the_call(wrapped: "Callable", instance: "Any", args: tuple, kwargs: dict) -> "Any":
    """Run a traced request's response hooks marked IN_RESPONSE_HOOK: a call they make is one
    of the function's, a re-send through the request's adapter is still the request's."""
    # OpenTelemetry's instrumentations are told so too (mark's suppress=False): not under ours.
    token = None
    marked = IN_CLIENT_CALL.get()
    if marked:
        status = getattr(args[2], "status_code", None) if len(args) > 2 and args[0] == "response" else None
        if type(status) is int and isinstance(marked, _Answered):
            marked.status = status
        token = mark(IN_RESPONSE_HOOK, suppress=False)
    try:
        return wrapped(*args, **kwargs)
    except BaseException as exc:
        drop_own_frame(exc)
        raise
    finally:
        if token is not None:
            unmark(token)


@labelled_as_bootstrap
def _resent_inside_the_call(wrapped: "Callable", instance: "Any", args: tuple, kwargs: dict) -> "Any":
    """A send through the adapter from a response hook (an auth handler answering a 401) is
    the request's own, sent again: marked as under it, the layers below record nothing of it."""
    token = mark(True) if IN_CLIENT_CALL.get() is IN_RESPONSE_HOOK else None
    try:
        return wrapped(*args, **kwargs)
    except BaseException as exc:
        drop_own_frame(exc)  # the traceback the function gets has no frame of ours
        raise
    finally:
        if token is not None:
            unmark(token)
