"""`urllib.request`: a span per `OpenerDirector.open()` (what `urlopen()` calls), the redirects
it follows inside it; http.client below it adds none. A 4xx/5xx answer, which urllib raises as
`HTTPError`, is recorded with its status code, as is a 304; a redirect it would not follow
(a loop, a 307 to a POST) is a failed call. The request's headers get the trace context
(`Request.add_unredirected_header` would hide it from redirects: a plain header goes along)."""

from __future__ import annotations

from lambdawrap.handler.outgoing.http_calls import HttpCalls, answered_with, sync_wrapper
from lambdawrap.handler.outgoing.propagation import CARRIED, carried_changes, header_text, written_by_us
from lambdawrap.handler.outgoing.urls import split_url

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from types import ModuleType
    from typing import Any, Callable


_HTTP = ("http", "https")
_REDIRECTS = frozenset((301, 302, 303, 307, 308))  # those urllib's redirect handler follows


def patch(module: "ModuleType", calls: HttpCalls, function_wrapper: "Callable") -> None:
    request_class = module.Request

    def begin(instance: "Any", args: tuple, kwargs: dict) -> tuple:
        target = args[0] if args else kwargs.get("fullurl")
        if isinstance(target, str):
            # A copy of what open() would make itself, so that the headers can be added.
            try:
                target = request_class(target, args[1] if len(args) > 1 else kwargs.get("data"))
            except ValueError:  # no URL ("unknown url type"): open() raises it to the function itself
                return None, args, kwargs
            args = (target,) + args[1:] if args else args
            if not args:
                kwargs = dict(kwargs, fullurl=target)
        if not isinstance(target, request_class):
            return None, args, kwargs
        parts = split_url(target.full_url)
        if parts is None or parts[0] not in _HTTP:  # file://, ftp://: no HTTP request to trace
            return None, args, kwargs
        scheme, host, port, userinfo, rest = parts
        # Marked only once its headers are set: what raises before (a Request subclass's
        # add_header) leaves the request untraced, and no mark behind for every later call.
        method = target.get_method()
        if target.data is None and (args[1] if len(args) > 1 else kwargs.get("data")) is not None:
            # open(request, data) sets the request's data only after this: it goes as a POST.
            method = getattr(target, "method", None) or "POST"
        call = calls.begin(method, scheme, host, port, rest, None, userinfo, mark=False)
        if call is None and calls.inside_a_call():
            return None, args, kwargs
        # urllib keeps header names capitalize()d, str or bytes as given (it sends either); a
        # Request sent again holds ours already, which go where this call carries none (an
        # excluded host).
        keys, present = {}, {}
        for key, value in target.header_items():
            name = header_text(key).lower()
            if name in CARRIED:
                keys[name], present[name] = key, header_text(value)
        if call is None and not present:
            return None, args, kwargs
        for name, value in _opener_headers(instance).items():
            present.setdefault(name, value)
        to_set, to_remove = carried_changes(present, calls.headers_for(call) if call is not None else [], None if call is not None else calls.per_send(), target)
        for name, value in to_set:
            if name.lower() in keys:
                target.remove_header(keys[name.lower()])  # ours from an earlier send, maybe as bytes
            target.add_header(name, value)
        for name in to_remove:
            target.remove_header(keys[name])
        if call is not None:
            calls.mark(call)
        return call, args, kwargs

    def failed(call: "Any", exc: BaseException) -> None:
        code = getattr(exc, "code", None)
        if isinstance(exc, module.HTTPError) and type(code) is int:
            if code not in _REDIRECTS:
                calls.answered(call, code)  # an answer, which urllib raises (a 304 too)
                return
            # A redirect urllib would not follow (a loop, a 307 to a POST): the call failed.
            call.span.attributes["http.response.status_code"] = code
        calls.failed(call, exc)

    open_url = sync_wrapper(calls, begin, answered_with(calls, "status"), failed)

    module.OpenerDirector.open = function_wrapper(module.OpenerDirector.open, open_url)


def _opener_headers(opener: "Any") -> dict:
    """The function's trace headers among the opener's own (`opener.addheaders`), lowercase name
    -> value: urllib adds each where the request has none of that name (do_request_), so one of
    ours on the request would take its place."""
    found = {}
    try:
        for key, value in getattr(opener, "addheaders", None) or ():
            name, text = header_text(key).lower(), header_text(value)
            if name in CARRIED and not written_by_us(name, text):
                found.setdefault(name, text)
    except (TypeError, ValueError):  # not pairs: urllib fails the request on them itself
        return {}
    return found
