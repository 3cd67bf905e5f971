"""The AWS SDK (botocore, so boto3): one span per API call (CLIENT; PRODUCER for an SQS or SNS
send), through botocore's own event system. No method of botocore is wrapped, so no frame of
ours is ever in the traceback of an error the SDK raises.

Our handlers join botocore's built-in ones (`botocore.handlers.BUILTIN_HANDLERS`, registered
last): every session created from then on registers them, and every client copies its
session's handlers when it is made. Per call, sharing botocore's request context:

  provide-client-params   a copy of the parameters, for a call whose carrier writes into them
  before-parameter-build  the span starts (parent: the innermost active span); the context goes
                          into the payload for the services that carry it (aws_carriers), before
                          botocore validates, serializes and signs the parameters
  before-call             server.address/port; with the xray propagator, the X-Amzn-Trace-Id
                          header botocore set (Lineage and all) is re-pointed at our span
  before-sign             once per attempt (botocore signs each retry anew): attempts are
                          counted, and the HTTP request below is marked as part of this call
  needs-retry             once per attempt, its HTTP request done: the mark ends (the next
                          attempt's before-sign sets it again); an SQS message refused as an
                          invalid parameter with the context in it is sent again as written
                          (its queue's limit may be smaller than 256 KiB). Not at after-call: a handler
                          of the function's that raises there (one on `after-call.s3`, say,
                          runs before ours) ends the event, and the mark would stay set in
                          the thread's context, every HTTP call after it untraced
  after-call              first, for an SQS send: the answer as without the layer (the digests
                          of the function's own attributes, no attempt of ours counted), before
                          a handler of the function's reads it; last: the span's answer
                          (status, request ids, the AWS error code, retries)
  after-call-error        no answer (connection refused, timeout, ...)

Each attempt's answer (or failure), seen at needs-retry, is kept on the call: a handler of the
function's that raises at after-call or after-call-error ends the event before ours, and the
call is then ended with that answer at its invocation's end (`Invocation.unfinished_calls`),
at the time it was answered. A call of another thread (which may still be retrying when the
invocation ends) or outside an invocation (at import time) is lost so.

botocore and aiobotocore emit after-call-error for an `Exception` only: a call whose HTTP request
is interrupted by another BaseException (an asyncio cancellation: `asyncio.timeout()` around an
aiobotocore call) is ended by that request's hook instead (`AwsCall.interrupted`), or its mark
would stay set in the task's context, and every HTTP call after it would go untraced.

A call that fails before it is sent (parameter validation) records no span, nor does a presigned
URL or POST (botocore builds and signs it like a call, but never sends it).
"""

from __future__ import annotations

import sys
import time
from _thread import get_ident

from lambdawrap.handler.invocation import FAILURES, active_invocation, count_context_not_injected
from lambdawrap.handler.outgoing import aws_carriers, aws_services, sqs_digests
from lambdawrap.handler.outgoing.propagation import XRAY_HEADER, Propagation, xray
from lambdawrap.handler.outgoing.recorder import CLIENT, PRODUCER, ClientSpan, Recorder, contrib_active, mark, otel_suppressed, unmark
from lambdawrap.handler.outgoing.urls import split_url
from lambdawrap.shared.own_stdlib import standard

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from types import ModuleType
    from typing import Any

SCOPE = "lambdawrap.botocore"
_STATE = "lambdawrap"  # our key in botocore's per-call request context
_CONTRIB = ("opentelemetry.instrumentation.botocore", "BotocoreInstrumentor")
_PRESIGNING = ("-query", "-presign-post")  # botocore's signature version suffixes for presigning


class AwsCall:
    """One AWS API call under way; while it is signed and sent, the value of IN_CLIENT_CALL (recorder.mark)."""

    __slots__ = ("span", "service", "operation", "attempts", "token", "ended", "answer", "pending", "digests", "unsent", "resent", "_events")

    def __init__(self, span: ClientSpan, service: str, operation: str, events: "AwsCallEvents") -> None:
        self.span = span
        self.service = service
        self.operation = operation
        self.attempts = 0
        self.token: "Any" = None
        self.ended = False
        # The last attempt's (response, caught_exception, request context, time answered).
        self.answer: "tuple | None" = None
        self.pending: "dict | None" = None  # the invocation's unfinished calls, once answered
        self.digests: "dict | None" = None  # the SQS answer's digests to give back (sqs_digests)
        self.unsent: "dict | None" = None  # an SQS message's parameters as written (_send_as_written)
        self.resent = False
        self._events = events

    def claim(self) -> bool:
        """Whether the caller is the one to end this call: its invocation's end may have."""
        if self.ended:
            return False
        pending = self.pending
        if pending is not None and pending.pop(id(self), None) is None:
            return False
        self.ended = True
        return True

    def finish_late(self, invocation: "Any") -> None:
        """Its invocation is over and no after-call ended it: ended with its last answer."""
        self.ended = True
        self._events.answered_late(self, invocation)

    def interrupted(self, exc: BaseException) -> None:
        """The HTTP request below this call ended with a BaseException that is no Exception
        (a cancellation): botocore emits no after-call-error for it, so the call ends here."""
        self._events.interrupted(self, exc)


def _botocores_own(header: str) -> bool:
    """Whether an X-Amzn-Trace-Id is the one botocore adds (the environment's _X_AMZN_TRACE_ID,
    URL-quoted), not one the function set itself (a before-call handler of its own), which is
    sent as it wrote it, as on HTTP requests."""
    import os
    return standard("urllib.parse").unquote(header) == os.environ.get("_X_AMZN_TRACE_ID")


class AwsCallEvents:
    """botocore event handlers (each never raises: a failure is counted, the call goes on)."""

    def __init__(self, recorder: Recorder, propagation: Propagation, carriers: tuple) -> None:
        self._recorder = recorder
        self._propagation = propagation
        # Payloads carry a trace context only where the propagators carry one (not with
        # OTEL_PROPAGATORS=none, nor baggage alone): the function chose that none goes.
        self._carriers = carriers if propagation.per_send else ()

    def __deepcopy__(self, memo: dict) -> "AwsCallEvents":
        # One per process, shared: botocore deep-copies a call's request context (a presigned
        # copy of an EC2/RDS cross-region request), and with it the AwsCall that refers to us.
        return self

    def provide_client_params(self, params: "Any" = None, model: "Any" = None, **kwargs: "Any") -> "Any":
        """A copy of the parameters of a call whose carrier writes into them: botocore hands on
        the dict it was given, which is the caller's own where a library calls the client's
        `_make_api_call` with it (a dict used again would carry a stale context, and the caller
        would find our attributes in it). None (no say) for the others."""
        try:
            if self._carriers and isinstance(params, dict) and aws_carriers.carries(model.service_model.service_name, model.name, self._carriers):
                return dict(params)  # a subclass (an OrderedDict a library passes) is the caller's too
        except Exception:  # noqa: BLE001 - the call goes on with its own parameters
            FAILURES.record("copying an AWS SDK call's parameters")
        return None

    def before_parameter_build(self, params: "Any" = None, model: "Any" = None, context: "Any" = None, **kwargs: "Any") -> None:
        try:
            # A presigned URL or POST is made, not sent: botocore runs this event and signs it
            # (before-sign), but no after-call ends it, which would leave the mark set.
            if context is None or context.get("is_presign_request") or contrib_active(*_CONTRIB) or otel_suppressed():
                return
            service_model = model.service_model
            service, operation = service_model.service_name, model.name
            region = context.get("client_region") or ""
            attributes = {"rpc.system": "aws-api", "rpc.service": str(service_model.service_id), "rpc.method": operation, "cloud.region": region}
            aws_services.request_attributes(service, operation, params, region, attributes)
            name = aws_services.span_name(service, operation, attributes) or f"{attributes['rpc.service']}.{operation}"
            span = self._recorder.start(SCOPE, name, PRODUCER if aws_services.sends_messages(service, operation) else CLIENT, attributes)
            context[_STATE] = call = AwsCall(span, service, operation, self)
            if self._carriers:
                as_written = sqs_digests.sent_as_written(operation, params) if service == "sqs" else None
                written = dict(params) if as_written is not None and operation == "SendMessage" else None
                if not aws_carriers.inject(service, operation, params, self._propagation.message_fields(span), self._carriers):
                    count_context_not_injected()
                if as_written is not None:
                    call.digests = sqs_digests.to_restore(as_written, params)
                    if written is not None and params.get("MessageAttributes") is not written.get("MessageAttributes"):
                        call.unsent = written
        except Exception:  # noqa: BLE001 - the call goes on untraced
            FAILURES.record("tracing an AWS SDK call")

    def before_call(self, params: "Any" = None, context: "Any" = None, **kwargs: "Any") -> None:
        call = context.get(_STATE) if context else None
        if call is None:
            return
        try:
            parts = split_url(params.get("url") or "")
            if parts is not None:
                if self._recorder.excluded(parts[1], parts[2]):
                    # LAMBDAWRAP_INSTRUMENT_EXCLUDE_HOSTS: known only now that botocore resolved
                    # the endpoint, after the parameters (the payload's context) were written.
                    call.span.sampled = False  # never recorded
                    return
                call.span.attributes["server.address"] = parts[1]
                call.span.attributes["server.port"] = parts[2]
            # Here, not as the span starts: the parameters are valid and the endpoint resolved
            # (a call botocore refuses before sending is no call under way).
            self._recorder.publish(call.span)
            if self._propagation.xray:
                headers = params["headers"]
                existing = headers.get(XRAY_HEADER) or ""
                if not existing or _botocores_own(existing):
                    headers[XRAY_HEADER] = xray(call.span, existing)
        except Exception:  # noqa: BLE001
            FAILURES.record("tracing an AWS SDK request")

    def before_sign(self, request: "Any" = None, signature_version: "Any" = None, **kwargs: "Any") -> None:
        if isinstance(signature_version, str) and signature_version.endswith(_PRESIGNING):
            # A presigned URL made from a call's own request (EC2 CopySnapshot and RDS copies
            # with SourceRegion: botocore deep-copies the request, our state with it): it is
            # not sent, and nothing would end the mark.
            return
        context = getattr(request, "context", None)
        call = context.get(_STATE) if context else None
        if call is None:
            return  # an untraced call
        call.attempts += 1
        if call.token is None:
            call.token = mark(call)

    def needs_retry(self, request_dict: "Any" = None, response: "Any" = None, caught_exception: "Any" = None, operation: "Any" = None, **kwargs: "Any") -> "int | None":
        context = request_dict.get("context") if isinstance(request_dict, dict) else None
        call = context.get(_STATE) if context else None
        if call is None:
            return None
        if call.token is not None:
            unmark(call.token)
            call.token = None
        try:
            if call.unsent is not None and caught_exception is None and _refused_as_invalid(response):
                delay = _send_as_written(call, request_dict, operation)
                if delay is not None:
                    return delay
            call.answer = (response, caught_exception, context, time.time_ns())
            if call.pending is None and not call.ended:
                invocation = active_invocation()
                if invocation is not None and invocation.thread == get_ident():
                    call.pending = invocation.unfinished_calls()
                    call.pending[id(call)] = call
        except Exception:  # noqa: BLE001
            FAILURES.record("tracing an AWS SDK attempt")
        return None

    def sqs_answer(self, http_response: "Any" = None, parsed: "Any" = None, context: "Any" = None, **kwargs: "Any") -> None:
        """An SQS send's answer as the function would have it without the layer, before any
        after-call handler of the function's reads it (registered first, for every call)."""
        call = context.get(_STATE) if context else None
        if call is None or (call.digests is None and not call.resent):
            return
        try:
            if call.digests is not None and getattr(http_response, "raw", None) is not None:
                # Only an answer SQS sent: one a handler of the function's made (botocore's
                # Stubber, a cache) is the function's own dict, as it wrote it.
                sqs_digests.restore(call.digests, parsed)
            if call.resent:
                _uncount_resend(parsed, context)
        except Exception:  # noqa: BLE001 - the answer goes as SQS gave it
            FAILURES.record("restoring an SQS answer")
        call.digests, call.resent = None, False

    def after_call(self, http_response: "Any" = None, parsed: "Any" = None, context: "Any" = None, **kwargs: "Any") -> None:
        call = context.pop(_STATE, None) if context else None
        if call is None or not call.claim():
            return
        self._answered(call, http_response, parsed, context)

    def answered_late(self, call: AwsCall, invocation: "Any") -> None:
        response, exception, context, end_ns = call.answer
        call.answer = None  # it refers to the request context, which refers to the call
        if exception is not None or not isinstance(response, tuple) or len(response) != 2:
            self._failed(call, exception, end_ns, invocation)
        else:
            self._answered(call, response[0], response[1], context, end_ns, invocation)

    def _answered(self, call: AwsCall, http_response: "Any", parsed: "Any", context: "Any", end_ns: "int | None" = None, invocation: "Any" = None) -> None:
        try:
            unmark(call.token)
            call.token = None
            attributes = call.span.attributes
            status = getattr(http_response, "status_code", None)
            parsed = parsed if isinstance(parsed, dict) else {}
            metadata = parsed.get("ResponseMetadata") or {}
            _request_ids(metadata, attributes)
            attributes["retry_attempts"] = metadata.get("RetryAttempts", max(call.attempts - 1, 0))
            if type(status) is int:
                attributes["http.response.status_code"] = status
            if type(status) is int and status >= 300:
                error = parsed.get("Error") or {}
                # The answer's own code, which the function reads (`Error.Code`) and botocore's
                # message names; SQS's is its query code (`AWS.SimpleQueueService.NonExistentQueue`,
                # the conventions' example), where botocore's override names the exception's class.
                code = str(error.get("Code") or context.get("error_code_override") or status)
                retries = f" (reached max retries: {metadata.get('RetryAttempts')})" if metadata.get("MaxAttemptsReached") else ""
                description = f"An error occurred ({error.get('Code', 'Unknown')}) when calling the {call.operation} operation{retries}: {error.get('Message', 'Unknown')}"
                # Only a failure the conventions call one (4xx, 5xx) marks the span; a 3xx
                # (S3's 304 Not Modified) still raises in the SDK but is no error of the call.
                self._recorder.end(call.span, code if status >= 400 else "", description, end_ns=end_ns, invocation=invocation)
                return
            aws_services.response_attributes(call.service, call.operation, parsed, attributes)
            self._recorder.end(call.span, end_ns=end_ns, invocation=invocation)
        except Exception:  # noqa: BLE001
            FAILURES.record("tracing an AWS SDK answer")

    def after_call_error(self, exception: "BaseException | None" = None, context: "Any" = None, **kwargs: "Any") -> None:
        call = context.pop(_STATE, None) if context else None
        if call is None or not call.claim():
            return
        self._failed(call, exception)

    def interrupted(self, call: AwsCall, exception: BaseException) -> None:
        if call.claim():
            self._failed(call, exception)

    def _failed(self, call: AwsCall, exception: "BaseException | None", end_ns: "int | None" = None, invocation: "Any" = None) -> None:
        try:
            unmark(call.token)
            call.token = None
            call.span.attributes["retry_attempts"] = max(call.attempts - 1, 0)
            kind = type(exception).__qualname__ if exception is not None else "Error"
            self._recorder.end(call.span, kind, str(exception) if exception is not None else "", exception, end_ns, invocation)
        except Exception:  # noqa: BLE001
            FAILURES.record("tracing a failed AWS SDK call")


def _refused_as_invalid(response: "Any") -> bool:
    """Whether SQS refused the message as an invalid parameter: among the reasons, a message
    larger than its queue's MaximumMessageSize (1 KiB to 1 MiB, not known here), which the
    context's attributes may have made it."""
    if not isinstance(response, tuple) or len(response) != 2 or getattr(response[0], "status_code", None) != 400:
        return False
    return _invalid_parameter(response[1])


def _invalid_parameter(parsed: "Any") -> bool:
    error = (parsed.get("Error") or {}) if isinstance(parsed, dict) else {}
    # The JSON protocol's code, or the query protocol's one the x-amzn-query-error header names.
    return error.get("Code") in _INVALID_PARAMETER or error.get("QueryErrorCode") in _INVALID_PARAMETER


_INVALID_PARAMETER = ("InvalidParameterValue", "InvalidParameterValueException")


def _send_as_written(call: AwsCall, request_dict: dict, operation: "Any") -> "int | None":
    """Have botocore send the message again, at once, as the function wrote it: refused, it was
    not queued, and what the function gets is what SQS answers that (the same refusal where the
    context was not the cause). Counted as sent without the context. None: botocore's
    serializers are not loaded (they come with its clients: never so for a client's call)."""
    unsent, call.unsent = call.unsent, None
    serialize = sys.modules.get("botocore.serialize")  # never imported here: the function's botocore
    if serialize is None:
        return None
    service_model = operation.service_model
    protocol = getattr(service_model, "resolved_protocol", None) or service_model.metadata["protocol"]
    request_dict["body"] = serialize.create_serializer(protocol, include_validation=False).serialize_to_request(unsent, operation)["body"]
    call.resent = True
    count_context_not_injected()
    return 0


def _uncount_resend(parsed: "Any", context: dict) -> None:
    """The answer counts our send as written as an attempt of botocore's: the function's own
    are one fewer. Where they end in a success, or in the same refusal, they reached the most
    botocore allows only if they did without ours; another failure (a throttled re-send) had
    its attempts spent, ours among them."""
    metadata = parsed.get("ResponseMetadata") if isinstance(parsed, dict) else None
    if not (isinstance(metadata, dict) and type(metadata.get("RetryAttempts")) is int and metadata["RetryAttempts"] > 0):
        return
    metadata["RetryAttempts"] -= 1
    retries = context.get("retries")
    most = retries.get("max") if isinstance(retries, dict) else None
    settled = not parsed.get("Error") or _invalid_parameter(parsed)
    if metadata.get("MaxAttemptsReached") and settled and type(most) is int and metadata["RetryAttempts"] + 1 < most:
        del metadata["MaxAttemptsReached"]


def _request_ids(metadata: dict, attributes: dict) -> None:
    headers = metadata.get("HTTPHeaders") or {}
    request_id = metadata.get("RequestId") or headers.get("x-amzn-requestid") or headers.get("x-amz-request-id")
    if request_id:
        attributes["aws.request_id"] = request_id
    extended = headers.get("x-amz-id-2")  # S3's extended request id
    if extended:
        attributes["aws.extended_request_id"] = extended


class _NotOurHandlers:
    """A filter on botocore's `botocore.hooks` logger. At DEBUG (AWS_LAMBDA_LOG_LEVEL=DEBUG, or a
    function's own basicConfig) botocore logs each handler it calls: the lines about ours are
    left out, so that the function's log is the one it has without the layer."""

    def __init__(self, events: AwsCallEvents) -> None:
        self._events = events

    def filter(self, record: "Any") -> bool:
        try:
            args = record.args  # ('Event %s: calling handler %s', event_name, handler)
            return not (type(args) is tuple and len(args) == 2 and getattr(args[1], "__self__", None) is self._events)
        except Exception:  # noqa: BLE001 - a record we cannot read goes through as it is
            return True


def patch(handlers: "ModuleType", recorder: Recorder, propagation: Propagation, carriers: tuple) -> None:
    """Join botocore's built-in handlers (module `botocore.handlers`)."""
    import logging  # botocore has imported it already

    events = AwsCallEvents(recorder, propagation, carriers)
    logging.getLogger("botocore.hooks").addFilter(_NotOurHandlers(events))
    last = handlers.REGISTER_LAST
    handlers.BUILTIN_HANDLERS.extend(
        [
            # Under wildcards: botocore calls the handlers of `after-call.*.*` before those of
            # any other name an after-call event matches, the function's among them.
            ("after-call.*.*", events.sqs_answer, handlers.REGISTER_FIRST),
            ("provide-client-params", events.provide_client_params, last),
            ("before-parameter-build", events.before_parameter_build, last),
            ("before-call", events.before_call, last),
            ("before-sign", events.before_sign, last),
            ("needs-retry", events.needs_retry, last),
            ("after-call", events.after_call, last),
            ("after-call-error", events.after_call_error, last),
        ]
    )
