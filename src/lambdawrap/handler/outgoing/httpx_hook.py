"""httpx, sync and async: a span per request its transport sends (`HTTPTransport.handle_request`,
`AsyncHTTPTransport.handle_async_request`), where OpenTelemetry's httpx instrumentation traces
too; the request's headers get the trace context."""

from __future__ import annotations

from lambdawrap.handler.outgoing.http_calls import HttpCalls, answered_with, async_wrapper, sync_wrapper
from lambdawrap.handler.outgoing.urls import DEFAULT_PORTS

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from types import ModuleType
    from typing import Any, Callable


def patch(module: "ModuleType", calls: HttpCalls, function_wrapper: "Callable") -> None:
    def begin(instance: "Any", args: tuple, kwargs: dict) -> tuple:
        request = args[0] if args else kwargs.get("request")
        url, method = getattr(request, "url", None), getattr(request, "method", None)
        if url is None or not isinstance(method, str):
            return None, args, kwargs
        scheme = url.scheme
        rest = url.raw_path.decode("ascii", "replace") + (f"#{url.fragment}" if url.fragment else "")
        userinfo = url.userinfo.decode("ascii", "replace") if url.userinfo else ""
        return calls.begin(method, scheme, url.host, url.port or DEFAULT_PORTS.get(scheme, 0), rest, request.headers, userinfo), args, kwargs

    sync_transport, async_transport = module.HTTPTransport, module.AsyncHTTPTransport
    sync_transport.handle_request = function_wrapper(sync_transport.handle_request, sync_wrapper(calls, begin, answered_with(calls, "status_code")))
    async_transport.handle_async_request = function_wrapper(async_transport.handle_async_request, async_wrapper(calls, begin, answered_with(calls, "status_code")))
