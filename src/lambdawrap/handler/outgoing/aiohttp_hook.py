"""aiohttp's client: a span per `ClientSession` request, through aiohttp's own tracing signals
(request start, end, exception; redirects stay inside the one span), added to every session the
function makes. aiohttp calls them itself, so no frame of ours is in the way of the function's
exceptions but the session maker's, which takes its entry out of what aiohttp raises as a
session is made. A 4xx/5xx answer the session raises for (`raise_for_status`) is recorded as
the answer it is."""

from __future__ import annotations

from lambdawrap.handler.invocation import drop_own_frame, labelled_as_bootstrap
from lambdawrap.handler.outgoing.http_calls import HttpCalls, guarded_begin
from lambdawrap.handler.outgoing.recorder import interrupted_below
from lambdawrap.handler.outgoing.urls import DEFAULT_PORTS

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from types import ModuleType
    from typing import Any, Callable

_CALL = "lambdawrap_call"  # the request's call, on aiohttp's per-request trace context


def patch(module: "ModuleType", calls: HttpCalls, function_wrapper: "Callable") -> None:
    response_error = getattr(module, "ClientResponseError", ())  # what raise_for_status raises

    def begin(context: "Any", args: tuple, kwargs: dict) -> tuple:
        params = args[0]
        url = params.url
        scheme = url.scheme
        rest = url.raw_path_qs + (f"#{url.raw_fragment}" if url.raw_fragment else "")
        userinfo = url.raw_user or ""
        return calls.begin(params.method, scheme, (url.host or "").lower(), url.port or DEFAULT_PORTS.get(scheme, 0), rest, params.headers, userinfo, mark=False), args, kwargs

    async def on_request_start(session: "Any", context: "Any", params: "Any") -> None:
        setattr(context, _CALL, guarded_begin(calls, begin, context, (params,), {})[0])

    async def on_request_end(session: "Any", context: "Any", params: "Any") -> None:
        call = getattr(context, _CALL, None)
        if call is not None:
            calls.answered(call, params.response.status)

    async def on_request_exception(session: "Any", context: "Any", params: "Any") -> None:
        call = getattr(context, _CALL, None)
        exc = params.exception
        status = getattr(exc, "status", None)
        if call is not None and isinstance(exc, response_error) and type(status) is int and status >= 400:
            calls.answered(call, status)  # an answer, which raise_for_status raised for
        elif call is not None:
            calls.failed(call, exc)
        else:
            interrupted_below(exc)  # under aiobotocore: a cancellation ends its call

    trace_config = module.TraceConfig()
    trace_config.on_request_start.append(on_request_start)
    trace_config.on_request_end.append(on_request_end)
    trace_config.on_request_exception.append(on_request_exception)
    trace_config.freeze()

    @labelled_as_bootstrap
    def session_init(wrapped: "Callable", instance: "Any", args: tuple, kwargs: dict) -> "Any":
        configs = kwargs.get("trace_configs")
        # Only where asking is harmless: a generator would be used up by `in`, and a value
        # aiohttp refuses must meet aiohttp's own error, not ours.
        if configs is None or (type(configs) in (list, tuple) and trace_config not in configs):
            # The type aiohttp keeps (the function's, but a list for none): code of the
            # function's may read it back.
            kwargs = dict(kwargs, trace_configs=(tuple if configs and type(configs) is tuple else list)([*(configs or ()), trace_config]))
        try:
            return wrapped(*args, **kwargs)
        except BaseException as exc:  # arguments aiohttp refuses: its error, as without the layer
            drop_own_frame(exc)
            raise

    module.ClientSession.__init__ = function_wrapper(module.ClientSession.__init__, session_init)
