"""Recognise what invoked a Lambda function from its event, and describe the invocation the way
the OpenTelemetry semantic conventions describe FaaS, HTTP server, messaging and database spans
(the version is lambdawrap.shared.semconv.SEMCONV_VERSION; docs/semantic-conventions.md has the
table of sources and the choices made where the conventions leave one).

Runs on every invocation inside the user's process, so it is standard library only, cheap to
import, does bounded work whatever the event's size, and never raises: an event of any shape (any
JSON value or Python object) is at worst classified as ``"other"``, with nothing else attached.

One module per family of sources: http_sources, messaging_sources, stream_sources,
eventbridge_sources, data_sources, api_callers and service_callers; pipe_sources reads the
records an EventBridge Pipe flattens (Kafka, Amazon MQ). This module only dispatches:
each family's recogniser is tried when the event has the key that family's events always have.
"""

from __future__ import annotations

from lambdawrap.handler.message_context import payload_context, payload_state
from lambdawrap.handler.trace_context import parse_traceparent
from lambdawrap.handler.triggers import (
    api_callers,
    data_sources,
    eventbridge_sources,
    http_sources,
    messaging_sources,
    pipe_sources,
    service_callers,
    stream_sources,
)
from lambdawrap.handler.triggers.pipe_sources import ACTIVEMQ_SOURCES, KAFKA_SOURCES
from lambdawrap.handler.triggers.trigger import (
    ACTIVEMQ,
    ALB,
    APIGW_AUTHORIZER,
    APIGW_HTTP,
    APIGW_REST,
    APIGW_WEBSOCKET,
    APPSYNC,
    APPSYNC_AUTHORIZER,
    BEDROCK_AGENT,
    CLOUDFORMATION,
    CLOUDFRONT,
    CLOUDWATCH_ALARM,
    CLOUDWATCH_LOGS,
    CODECOMMIT,
    CODEPIPELINE,
    CONFIG,
    DOCUMENTDB,
    DYNAMODB,
    EVENTBRIDGE,
    FAAS_TRIGGER,
    FIREHOSE,
    FUNCTION_URL,
    HTTP_KINDS,
    IOT,
    KAFKA,
    KINDS,
    KINESIS,
    OTHER,
    RABBITMQ,
    S3,
    S3_BATCH,
    S3_OBJECT_LAMBDA,
    SCHEDULE,
    SECRETS_MANAGER,
    SES,
    SNS,
    SQS,
    VPC_LATTICE,
    Trigger,
    other,
    text,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Optional

__all__ = [
    "ACTIVEMQ",
    "ALB",
    "APIGW_AUTHORIZER",
    "APIGW_HTTP",
    "APIGW_REST",
    "APIGW_WEBSOCKET",
    "APPSYNC",
    "APPSYNC_AUTHORIZER",
    "BEDROCK_AGENT",
    "CLOUDFORMATION",
    "CLOUDFRONT",
    "CLOUDWATCH_ALARM",
    "CLOUDWATCH_LOGS",
    "CODECOMMIT",
    "CODEPIPELINE",
    "CONFIG",
    "DOCUMENTDB",
    "DYNAMODB",
    "EVENTBRIDGE",
    "FAAS_TRIGGER",
    "FIREHOSE",
    "FUNCTION_URL",
    "HTTP_KINDS",
    "IOT",
    "KAFKA",
    "KINDS",
    "KINESIS",
    "OTHER",
    "RABBITMQ",
    "S3",
    "S3_BATCH",
    "S3_OBJECT_LAMBDA",
    "SCHEDULE",
    "SECRETS_MANAGER",
    "SES",
    "SNS",
    "SQS",
    "VPC_LATTICE",
    "Trigger",
    "detect_trigger",
    "response_status_code",
]


def _records(records: object) -> Optional[Trigger]:
    """A ``Records`` batch, told apart by its first record (all records of one event source
    mapping share a source). Also the list an EventBridge Pipe hands over."""
    if not isinstance(records, list) or not records or not isinstance(records[0], dict):
        return None
    head = records[0]
    source = head.get("eventSource")
    if source == "aws:sqs":
        return messaging_sources.sqs(records, head)
    if source == "aws:s3":
        return data_sources.s3(head)
    if source == "aws:dynamodb":
        return data_sources.dynamodb(records, head)
    if source == "aws:kinesis":
        return stream_sources.kinesis(records, head)
    if source == "aws:ses":
        return messaging_sources.ses(records, head)
    if source == "aws:codecommit":
        return service_callers.codecommit(head)
    if head.get("EventSource") == "aws:sns":  # SNS records capitalise their keys
        return messaging_sources.sns(records, head)
    if "cf" in head:
        return http_sources.cloudfront(head)
    return None


def _request_context(event: dict) -> Optional[Trigger]:
    context = event.get("requestContext")
    if not isinstance(context, dict):
        return None
    if "methodArn" in event or "routeArn" in event:
        return api_callers.apigw_authorizer(event)
    if "eventType" in context and "connectionId" in context:
        return api_callers.websocket(event, context)
    return http_sources.from_request_context(event, context) or api_callers.appsync_authorizer(event, context)


def _lowercase_records(event: dict) -> Optional[Trigger]:
    if text(event.get("eventSource")) in KAFKA_SOURCES or "bootstrapServers" in event:
        return stream_sources.kafka(event)
    if "deliveryStreamArn" in event:
        return stream_sources.firehose(event)
    return None


def _activemq(event: dict) -> Optional[Trigger]:
    # Lambda's documentation writes "aws:mq", the events seen in the SDKs' samples "aws:amq".
    return stream_sources.activemq(event) if text(event.get("eventSource")) in ACTIVEMQ_SOURCES else None


def _documentdb(event: dict) -> Optional[Trigger]:
    return data_sources.documentdb(event) if event.get("eventSource") == "aws:docdb" else None


# A key every event of a family has, and the family's recogniser, in the order they are tried:
# the most frequent sources first. Looking a key up costs the same whatever the event's size.
_BY_KEY = (
    ("Records", lambda event: _records(event["Records"])),
    ("requestContext", _request_context),
    ("detail-type", eventbridge_sources.from_detail_type),
    ("records", _lowercase_records),
    ("methodArn", api_callers.apigw_authorizer),
    ("routeArn", api_callers.apigw_authorizer),
    ("messages", _activemq),
    ("rmqMessagesByQueue", stream_sources.rabbitmq),
    ("events", _documentdb),
    ("raw_path", http_sources.lattice_v1),
    ("awslogs", messaging_sources.cloudwatch_logs),
    ("triggerSource", api_callers.cognito),
    ("info", api_callers.appsync),
    ("fieldName", api_callers.appsync),
    ("RequestType", service_callers.cloudformation),
    ("Step", service_callers.secrets_rotation),
    ("invokingEvent", service_callers.config),
    ("CodePipeline.job", service_callers.codepipeline),
    ("actionGroup", service_callers.bedrock_agent),
    ("invocationSchemaVersion", service_callers.s3_batch),
    ("userRequest", data_sources.s3_object_lambda),
    ("protocolData", api_callers.iot_authorizer),
    ("deviceEvent", api_callers.iot_device),
    ("clickType", api_callers.iot_device),
    ("alarmData", service_callers.cloudwatch_alarm),
)


def _carrying_context(event: dict) -> Optional[Trigger]:
    """A payload with a valid W3C context at its top (``_lambdawrap``/``traceparent``), with that
    context as its parent; None for any other event."""
    parent = parse_traceparent(payload_context(event))
    return other(parent, payload_state(event)) if parent is not None else None


def _payload(event: dict) -> Trigger:
    """An event nothing recognises (a direct invocation's payload, a Step Functions input) and
    that carries no context at its top (``_carrying_context``), with the W3C context in its
    ``headers`` object as its parent, where OpenTelemetry's botocore instrumentation (Python)
    injects the caller's context into a Lambda ``Invoke``'s payload and its Lambda
    instrumentations read it."""
    headers = event.get("headers")
    if isinstance(headers, dict):
        # A propagator writes lowercase names: looked up as written, whatever the object's size.
        return other(parse_traceparent(headers.get("traceparent")), text(headers.get("tracestate")), text(headers.get("baggage")))
    return other()


def _list_event(event: list) -> Optional[Trigger]:
    """Events that are JSON arrays: an EventBridge Pipe's batch of records (those of an event
    source mapping, or the flattened records of Kafka and Amazon MQ), an AppSync batch."""
    head = event[0] if event else None
    if not isinstance(head, dict):
        return None
    if "eventSource" in head or "EventSource" in head:
        return _records(event) or pipe_sources.pipe_records(event, head)
    return api_callers.appsync(head)


def detect_trigger(event: object) -> Trigger:
    """Classify an invocation event and derive its span attributes, name and kind, the (HTTP)
    request headers, and the trace context its messages carry.

    Never raises: anything unrecognised, malformed, or not a dict is ``"other"``; an event
    nothing recognises may still carry a W3C context (a Step Functions input, a direct
    invocation's payload), which then becomes its parent. One with a valid context at its top is
    such a payload whatever else it holds (an event passed on to a workflow). A recogniser that raises all the same
    (a bug) is counted in the invocation wrapper's FAILURES, and the event is ``"other"``.
    """
    try:
        if isinstance(event, dict):
            if "_lambdawrap" in event or "traceparent" in event:
                # No AWS service writes these keys at an event's top: a payload holding them is
                # its caller's (a Step Functions input), even when it is an event passed on (a
                # workflow started with the S3 notification or EventBridge event it handles).
                trigger = _carrying_context(event)
                if trigger is not None:
                    return trigger
            for key, recognise in _BY_KEY:
                if key in event:
                    trigger = recognise(event)
                    if trigger is not None:
                        return trigger
            return _payload(event)
        if isinstance(event, list):
            trigger = _list_event(event)
            if trigger is not None:
                return trigger
    except Exception:  # never let tracing break the handler
        _failed("recognising the event")
    return other()


def _failed(what: str) -> None:
    """A recogniser raised: a bug of ours, counted and logged once like every other (it would
    otherwise pass for an event nothing recognises). Imported here: the invocation wrapper, which
    keeps the count, imports this package."""
    from lambdawrap.handler.invocation import FAILURES

    FAILURES.record(what)


def response_status_code(trigger: Trigger, response: object) -> Optional[int]:
    """The HTTP status code the client gets for ``response``, or ``None`` if not HTTP/unknown."""
    try:
        if trigger.kind in HTTP_KINDS:
            return http_sources.response_status(trigger, response)
    except Exception:  # never let tracing break the handler
        _failed("reading the response's status code")
    return None
