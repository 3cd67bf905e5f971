"""The per-invocation wrapper around the user's handler.

Three zones, as the style guide asks: a guarded before-call, the unguarded call of the user's
handler (their exceptions pass through untouched), and a guarded after-call. Nothing of ours
ever escapes into the invocation; the one record per invocation goes to the companion
without blocking.
"""

from __future__ import annotations

import os
import time
import traceback

from lambdawrap.handler import trace_context, triggers
from lambdawrap.handler.channel import Channel
from lambdawrap.handler.redact import URL_QUERY_KEYS, redact_query
from lambdawrap.shared import records
from lambdawrap.shared.ids import new_span_id, new_trace_id
from lambdawrap.shared.log import Failures
from lambdawrap.shared.settings import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Any, Callable

MAX_MESSAGE_CHARS = 4096
MAX_STACK_CHARS = 32768
# Trigger attributes come from the event (paths, queries, user agents): a 6 MB event could
# otherwise make a record too large for the channel, and the invocation would lose its span.
MAX_ATTRIBUTE_CHARS = 4096
_MARKER = "_self_lambdawrap"  # wrapt keeps `_self_` attributes on the proxy itself


# lambdawrap's own failures in this process, reported with the next invocation record.
FAILURES = Failures()


class InvocationTracer:
    """Makes ids, cold-start and trigger facts for each invocation and reports it."""

    def __init__(self, settings: Settings, channel: Channel, booted_at: float | None = None, environ: Any = None) -> None:
        env = os.environ if environ is None else environ
        self.settings = settings
        self.channel = channel
        self.booted_at = time.monotonic() if booted_at is None else booted_at
        self._provisioned = env.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "provisioned-concurrency"
        self._invocations = 0
        self._query_keys = URL_QUERY_KEYS | frozenset(settings.redact_keys)  # lowercased by the settings
        self._redact_keys: Any = None
        if settings.capture_payload:
            from lambdawrap.handler.redact import redaction_keys  # deferred: only when payload capture is on

            self._redact_keys = redaction_keys(settings.redact_keys)
        self.user_spans: Any = None  # set by the OpenTelemetry bridge when the user's code uses the API
        if hasattr(os, "register_at_fork"):
            # Each forked worker serves its own first invocation.
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._invocations = 0

    def wrap(self, handler: Callable) -> Callable:
        """The handler wrapped once; a handler we already wrapped comes back unchanged."""
        if getattr(handler, _MARKER, False):
            return handler
        import wrapt  # deferred: only needed once the handler module is imported

        wrapped = wrapt.FunctionWrapper(handler, self._call)
        setattr(wrapped, _MARKER, True)
        return wrapped

    def _call(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        try:
            state = self._before(args, kwargs)
        except Exception:  # noqa: BLE001 - instrumentation fails open
            FAILURES.record("before the handler")
            state = None
        if state is None:
            return wrapped(*args, **kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            self._after_safely(state, None, exc)
            raise
        self._after_safely(state, result, None)
        return result

    def _before(self, args: tuple, kwargs: dict) -> dict:
        start_ns = time.time_ns()
        event = args[0] if args else kwargs.get("event")
        context = args[1] if len(args) > 1 else kwargs.get("context")
        self._invocations += 1
        first = self._invocations == 1
        proactive = first and (time.monotonic() - self.booted_at) * 1000 > self.settings.proactive_init_ms
        trigger = triggers.detect_trigger(event)
        parent, source = trace_context.extract_parent(trigger.headers, os.environ.get("_X_AMZN_TRACE_ID"))
        if source == "xray" and parent is not None and not parent.sampled:
            # Lambda hands every invocation an X-Ray id, Sampled=0 when active tracing is
            # off; parenting to it would make every span unsampled.
            parent, source = None, "none"
        trace_id = parent.trace_id if parent else new_trace_id()
        span_id = new_span_id()
        state = records.invocation(
            request_id=getattr(context, "aws_request_id", "") or "",
            function_arn=getattr(context, "invoked_function_arn", "") or "",
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=parent.span_id if parent else 0,
            sampled=parent.sampled if parent else True,
            start_ns=start_ns,
            cold_start=first and not proactive and not self._provisioned,
            proactive_init=proactive,
            trigger=trigger.kind,
            attributes=self._attributes(trigger.attributes),
            links=trigger.links,
        )
        state["_trigger"] = trigger
        if self._redact_keys is not None:
            # Before the call: the request as it came, whatever the handler does to it.
            payload = _payload(event, self._redact_keys)
            if payload is not None:
                state["request_payload"] = payload
        if self.user_spans is not None:
            state["_otel_token"] = self.user_spans.enter(trace_id, span_id)
        return state

    def _attributes(self, attributes: dict) -> dict:
        attributes = _capped(attributes)
        query = attributes.get("url.query")
        if query:
            # A token or password in a query string would otherwise land in every span: the
            # conventions' keys and the configured ones are redacted ("REDACTED", as the
            # conventions write it).
            redacted = redact_query(query, self._query_keys, "REDACTED")
            if redacted != query:
                attributes = dict(attributes, **{"url.query": redacted})
        return attributes

    def _after_safely(self, state: dict, result: Any, error: BaseException | None) -> None:
        try:
            self._after(state, result, error)
        except Exception:  # noqa: BLE001 - instrumentation fails open
            FAILURES.record("after the handler")

    def _after(self, state: dict, result: Any, error: BaseException | None) -> None:
        end_ns = time.time_ns()
        trigger = state.pop("_trigger")
        token = state.pop("_otel_token", None)
        if token is not None:
            self.user_spans.exit(token)
        if error is not None:
            records.finish_invocation(state, end_ns, error=_describe(error))
        else:
            records.finish_invocation(state, end_ns, http_status=triggers.response_status_code(trigger, result))
            if self._redact_keys is not None:
                payload = _payload(result, self._redact_keys)
                if payload is not None:
                    state["response_payload"] = payload
        failures = FAILURES.count
        if failures:
            state["internal_errors"] = failures
        if self.channel.send(state) and failures:
            FAILURES.count -= failures


def _capped(attributes: dict) -> dict:
    for value in attributes.values():
        if isinstance(value, str) and len(value) > MAX_ATTRIBUTE_CHARS:
            break
    else:
        return attributes  # the usual case: nothing to copy
    return {k: v[:MAX_ATTRIBUTE_CHARS] if isinstance(v, str) else v for k, v in attributes.items()}


def _payload(value: Any, keys: Any) -> str | None:
    from lambdawrap.handler.redact import payload_text  # already imported when capture is on

    return payload_text(value, keys)


def _describe(error: BaseException) -> dict:
    stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        message = str(error)
    except Exception:  # noqa: BLE001 - a user's __str__ may raise
        message = f"<unprintable {type(error).__name__}>"
    return {
        "type": type(error).__module__ + "." + type(error).__qualname__ if type(error).__module__ not in ("builtins", "__main__") else type(error).__qualname__,
        "message": message[:MAX_MESSAGE_CHARS],
        "stack": stack[-MAX_STACK_CHARS:],
    }

