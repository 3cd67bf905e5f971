"""urllib3: a span per `HTTPConnectionPool.urlopen()`, its retries inside it (a PoolManager
follows a redirect with a urlopen() of its own: a span each, as OpenTelemetry's urllib3
instrumentation has them).
The user's headers mapping is never changed: a copy carries the trace context."""

from __future__ import annotations

from lambdawrap.handler.outgoing.http_calls import HttpCalls, answered_with, sync_wrapper
from lambdawrap.handler.outgoing.urls import DEFAULT_PORTS, split_url

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from types import ModuleType
    from typing import Any, Callable

_HEADERS_AT = 3  # urlopen(self, method, url, body=None, headers=None, ...): args index without self


def patch(module: "ModuleType", calls: HttpCalls, function_wrapper: "Callable") -> None:
    pool = module.HTTPConnectionPool

    def begin(instance: "Any", args: tuple, kwargs: dict) -> tuple:
        method = args[0] if args else kwargs.get("method")
        url = args[1] if len(args) > 1 else kwargs.get("url")
        if not isinstance(method, str) or not isinstance(url, str):
            return None, args, kwargs
        parts = split_url(url) if not url.startswith("/") else None
        if parts is not None:
            scheme, host, port, userinfo, rest = parts
        else:
            scheme = getattr(instance, "scheme", "http") or "http"
            host, port, userinfo, rest = str(instance.host).lower(), instance.port or DEFAULT_PORTS.get(scheme, 0), "", url
        given = args[_HEADERS_AT] if len(args) > _HEADERS_AT else kwargs.get("headers")
        original = given if given is not None else instance.headers
        # A copy, as urlopen() makes one itself, of a mapping only: another value (pairs in a tuple
        # or a list) is left to fail the call untraced, as without us (a dict of it would succeed).
        if not callable(getattr(original, "copy", None)) or not callable(getattr(original, "items", None)):
            return None, args, kwargs
        headers = original.copy()
        call = calls.begin(method, scheme, host, port, rest, headers, userinfo)
        if call is None:
            return None, args, kwargs
        if len(args) > _HEADERS_AT:
            return call, args[:_HEADERS_AT] + (headers,) + args[_HEADERS_AT + 1 :], kwargs
        return call, args, dict(kwargs, headers=headers)

    pool.urlopen = function_wrapper(pool.urlopen, sync_wrapper(calls, begin, answered_with(calls, "status")))
