"""What an event is recognised as: the kinds, the Trigger that describes one invocation's event,
and the few readers every family of sources uses to take values out of untrusted JSON."""

from __future__ import annotations

import time

from lambdawrap.shared.semconv import CONSUMER, SERVER

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Callable, Dict, List, Optional

    from lambdawrap.handler.trace_context import SpanContext

# HTTP: the function's answer is the response to a client's request.
APIGW_REST = "apigw-rest"
APIGW_HTTP = "apigw-http"
FUNCTION_URL = "function-url"
ALB = "alb"
VPC_LATTICE = "vpc-lattice"
CLOUDFRONT = "cloudfront"
# Messages and records from queues, topics, buses and streams.
SQS = "sqs"
SNS = "sns"
EVENTBRIDGE = "eventbridge"
KINESIS = "kinesis"
FIREHOSE = "firehose"
KAFKA = "kafka"
ACTIVEMQ = "activemq"
RABBITMQ = "rabbitmq"
CLOUDWATCH_LOGS = "cloudwatch-logs"
SES = "ses"
# Changes to (or reads of) stored data.
S3 = "s3"
S3_OBJECT_LAMBDA = "s3-object-lambda"
DYNAMODB = "dynamodb"
DOCUMENTDB = "documentdb"
# Schedules: EventBridge scheduled rules and EventBridge Scheduler.
SCHEDULE = "schedule"
# Other AWS services calling the function for a purpose of their own.
APIGW_WEBSOCKET = "apigw-websocket"
APIGW_AUTHORIZER = "apigw-authorizer"
APPSYNC = "appsync"
APPSYNC_AUTHORIZER = "appsync-authorizer"
COGNITO = "cognito"
IOT = "iot"
CONFIG = "config"
CODECOMMIT = "codecommit"
CODEPIPELINE = "codepipeline"
SECRETS_MANAGER = "secretsmanager"
BEDROCK_AGENT = "bedrock-agent"
CLOUDFORMATION = "cloudformation"
CLOUDWATCH_ALARM = "cloudwatch-alarm"
S3_BATCH = "s3-batch"
OTHER = "other"

# Every kind, with the faas.trigger it is reported as. Config rules are the one kind with two:
# "timer" when the rule runs periodically, "other" when a configuration change ran it.
FAAS_TRIGGER = {
    APIGW_REST: "http",
    APIGW_HTTP: "http",
    FUNCTION_URL: "http",
    ALB: "http",
    VPC_LATTICE: "http",
    CLOUDFRONT: "http",
    SQS: "pubsub",
    SNS: "pubsub",
    EVENTBRIDGE: "pubsub",
    KINESIS: "pubsub",
    FIREHOSE: "pubsub",
    KAFKA: "pubsub",
    ACTIVEMQ: "pubsub",
    RABBITMQ: "pubsub",
    CLOUDWATCH_LOGS: "pubsub",
    SES: "pubsub",
    S3: "datasource",
    S3_OBJECT_LAMBDA: "datasource",
    DYNAMODB: "datasource",
    DOCUMENTDB: "datasource",
    SCHEDULE: "timer",
    APIGW_WEBSOCKET: "other",
    APIGW_AUTHORIZER: "other",
    APPSYNC: "other",
    APPSYNC_AUTHORIZER: "other",
    COGNITO: "other",
    IOT: "other",
    CONFIG: "other",
    CODECOMMIT: "other",
    CODEPIPELINE: "other",
    SECRETS_MANAGER: "other",
    BEDROCK_AGENT: "other",
    CLOUDFORMATION: "other",
    CLOUDWATCH_ALARM: "other",
    S3_BATCH: "other",
    OTHER: "other",
}
KINDS = tuple(FAAS_TRIGGER)
HTTP_KINDS = frozenset(kind for kind, trigger in FAAS_TRIGGER.items() if trigger == "http")

# The source's ARN (queue, stream, broker, rule...), where the conventions name no attribute for
# it. Not `cloud.resource_id`: on a FaaS span that names the function itself.
EVENT_SOURCE_ARN = "lambdawrap.event_source.arn"

# Strings the recognisers parse (split, unquote, lowercase) are cut to this first: a forged
# 6 MB value costs no more than a real one. Real ARNs, keys and names are far shorter.
MAX_PARSED_CHARS = 2048
# What the invocation wrapper keeps of a string attribute (handler/invocation.py imports it): a
# value the recognisers build, such as a query rebuilt from parameters, is built only this far.
MAX_ATTRIBUTE_CHARS = 4096


class Trigger:
    """What invoked the function, and how its invocation span is described.

    kind: one of the kind constants of this module.
    attributes: span attributes (str, bool, int, float, or non-empty lists of one of those).
    headers: HTTP request headers (lowercased names) of an HTTP-shaped event, else ``None``;
        the invocation wrapper reads the caller's trace context from them.
    links: SpanContexts of a batch's messages, for span links.
    span_name: the invocation span's name; ``""`` names it after the function.
    span_kind: the invocation span's kind (lambdawrap.shared.semconv numbering).
    parent: the context a single message or payload carries, to parent the span on.
    parent_state: the W3C ``tracestate`` beside that context, as it came (checked where used).
    parent_baggage: the W3C ``baggage`` beside that context, as it came (checked where used).
    status_without_code: the HTTP status the service answers when the function's response names
        none (200 for payload 2.0, 500 for an HTTP API's payload 1.0); ``None`` when not known.
    """

    __slots__ = ("kind", "attributes", "headers", "links", "span_name", "span_kind", "parent", "parent_state", "parent_baggage", "status_without_code")

    def __init__(
        self,
        kind: str,
        attributes: dict,
        headers: Optional[dict] = None,
        links: Optional[list] = None,
        span_name: str = "",
        span_kind: int = SERVER,
        parent: Optional[SpanContext] = None,
        parent_state: Optional[str] = None,
        status_without_code: Optional[int] = None,
        parent_baggage: Optional[str] = None,
    ) -> None:
        self.kind = kind
        self.attributes = attributes
        self.headers = headers
        self.links = [] if links is None else links
        self.span_name = span_name
        self.span_kind = span_kind
        self.parent = parent
        # What came beside a context is nothing without it.
        self.parent_state = parent_state if parent else None
        self.parent_baggage = parent_baggage if parent else None
        self.status_without_code = status_without_code

    @property
    def is_http(self) -> bool:
        return self.kind in HTTP_KINDS

    def _fields(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trigger):
            return NotImplemented
        return self._fields() == other._fields()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"Trigger({fields})"


def other(parent: Optional[SpanContext] = None, parent_state: Optional[str] = None, parent_baggage: Optional[str] = None) -> Trigger:
    # A fresh dict every time: callers may add attributes to the one they get.
    return Trigger(OTHER, {"faas.trigger": "other"}, parent=parent, parent_state=parent_state, parent_baggage=parent_baggage)


def text(value: object) -> Optional[str]:
    """``value`` if it is a non-empty string, else ``None``."""
    return value if isinstance(value, str) and value else None


def mapping(value: object) -> dict:
    """``value`` if it is a dict, else an empty dict (so lookups can be chained)."""
    return value if isinstance(value, dict) else {}


def put(attributes: Dict[str, object], key: str, value: object) -> None:
    """Set a string attribute only when there is a non-empty string to set."""
    if isinstance(value, str) and value:
        attributes[key] = value


def put_arn(attributes: Dict[str, object], key: str, value: object) -> None:
    """Set an attribute to an ARN, only when the value is one."""
    if isinstance(value, str) and value.startswith("arn:"):
        attributes[key] = value


def first(items: object) -> dict:
    """The first element of a list when it is a dict, else an empty dict."""
    if isinstance(items, list) and items:
        head = items[0]
        if isinstance(head, dict):
            return head
    return {}


def first_text(items: object) -> Optional[str]:
    """The first element of a list when it is a non-empty string."""
    return text(items[0]) if isinstance(items, list) and items else None


def same_in_batch(items: list, read: Callable[[dict], object]) -> Optional[str]:
    """What ``read`` gives for the first item, when the last item agrees: an event source mapping
    reads one queue or stream, but a hand-made batch may mix them, and then none is named.
    (Comparing the ends keeps the cost constant; a batch mixed only in its middle is rare.)"""
    head = first(items)
    value = text(read(head))
    last = items[-1] if value is not None else None
    if last is head:
        return value
    return value if isinstance(last, dict) and read(last) == value else None


def arn_resource(arn: object) -> Optional[str]:
    """The resource part of an ARN (after ``arn:partition:service:region:account:``)."""
    if not isinstance(arn, str) or not arn.startswith("arn:"):
        return None
    parts = arn[:MAX_PARSED_CHARS].split(":", 5)
    return (parts[5] or None) if len(parts) == 6 else None


def arn_name(arn: object, prefix: str) -> Optional[str]:
    """The name after ``prefix`` in an ARN's resource (``stream/`` gives a stream's name), up to
    the next ``/``; ``None`` if the resource does not start with the prefix."""
    resource = arn_resource(arn)
    if resource is None or not resource.startswith(prefix):
        return None
    return resource[len(prefix) :].partition("/")[0] or None


# Epoch times past this many seconds (the year 5138) are taken as milliseconds, which some
# producers of DynamoDB stream records write.
_MAX_EPOCH_SECONDS = 10**11


def iso_time(epoch_seconds: object) -> Optional[str]:
    """Epoch seconds (or milliseconds) as the ISO 8601 UTC text the faas.*time attributes hold."""
    if isinstance(epoch_seconds, bool) or not isinstance(epoch_seconds, (int, float)):
        return None
    try:
        if epoch_seconds > _MAX_EPOCH_SECONDS:
            epoch_seconds = epoch_seconds / 1000  # an integer of 400 digits is no float: OverflowError
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_seconds))
    except (OverflowError, OSError, ValueError):
        return None


def messaging_attributes(system: str, destination: Optional[str], count: Optional[int], message_id: object) -> Dict[str, object]:
    """The attributes of a messaging "process" span (faas.trigger "pubsub").

    count is the batch size for sources that deliver batches (``None`` for single messages); a
    message id describes the invocation only when it processes one message.
    """
    attributes: Dict[str, object] = {
        "faas.trigger": "pubsub",
        "messaging.system": system,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
    }
    put(attributes, "messaging.destination.name", destination)
    if count is not None:
        attributes["messaging.batch.message_count"] = count
    if count is None or count == 1:
        put(attributes, "messaging.message.id", message_id)
    return attributes


def messaging_trigger(kind: str, attributes: dict, links: Optional[List] = None, parent: Optional[SpanContext] = None, parent_state: Optional[str] = None, parent_baggage: Optional[str] = None) -> Trigger:
    """A consumer span named ``process {destination}`` (``process`` when the batch has no single
    destination), as the messaging conventions name "process" spans."""
    destination = attributes.get("messaging.destination.name")
    name = "process " + destination if destination else "process"
    return Trigger(kind, attributes, None, links, name, CONSUMER, parent, parent_state, parent_baggage=parent_baggage)
