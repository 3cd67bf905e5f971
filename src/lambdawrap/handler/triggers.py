"""Recognise what invoked a Lambda function from its event, and describe it with span attributes.

Runs on every invocation inside the user's process, so it is standard library only, cheap to
import, and never raises: an event of any shape (any JSON value or Python object) is at worst
classified as ``"other"``.

Attribute names follow the OpenTelemetry semantic conventions (``faas.*``, ``http.*``, ``url.*``,
``messaging.*``...). Two are lambdawrap-specific, for EventBridge events, which have no
convention of their own: ``aws.eventbridge.source`` (the event's ``source``) and
``aws.eventbridge.detail_type`` (its ``detail-type``).
"""

from __future__ import annotations

import time

from lambdawrap.handler.trace_context import collect_links, sns_message_context, sqs_message_context

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing and dataclasses cost the handler's cold start
    from typing import Dict, Optional

__all__ = [
    "ALB",
    "APIGW_HTTP",
    "APIGW_REST",
    "DYNAMODB",
    "EVENTBRIDGE",
    "FUNCTION_URL",
    "HTTP_KINDS",
    "KINDS",
    "KINESIS",
    "OTHER",
    "S3",
    "SCHEDULE",
    "SNS",
    "SQS",
    "Trigger",
    "detect_trigger",
    "response_status_code",
]

APIGW_REST = "apigw-rest"
APIGW_HTTP = "apigw-http"
FUNCTION_URL = "function-url"
ALB = "alb"
SQS = "sqs"
SNS = "sns"
S3 = "s3"
DYNAMODB = "dynamodb"
KINESIS = "kinesis"
EVENTBRIDGE = "eventbridge"
SCHEDULE = "schedule"
OTHER = "other"

KINDS = (
    APIGW_REST, APIGW_HTTP, FUNCTION_URL, ALB, SQS, SNS, S3, DYNAMODB, KINESIS,
    EVENTBRIDGE, SCHEDULE, OTHER,
)
HTTP_KINDS = frozenset((APIGW_REST, APIGW_HTTP, FUNCTION_URL, ALB))

# Kinds whose service infers "200 OK" when the function does not return a {"statusCode": ...}
# object (payload format 2.0: HTTP APIs and function URLs).
_INFERS_200 = frozenset((APIGW_HTTP, FUNCTION_URL))

# HTTP semantic conventions: http.request.method holds only these exact (case-sensitive)
# names; anything else becomes "_OTHER" with the original in http.request.method_original.
_KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)


class Trigger:
    """What invoked the function.

    kind: one of the kind constants of this module.
    attributes: span attributes (values are str, bool, int, float, or lists of one of those).
    headers: HTTP request headers with lowercased names, for HTTP kinds only (else ``None``).
    is_http: whether kind is one of ``HTTP_KINDS``.
    """

    __slots__ = ("kind", "attributes", "headers", "is_http", "links")

    def __init__(self, kind: str, attributes: dict, headers: Optional[dict], is_http: bool, links: Optional[list] = None) -> None:
        self.kind = kind
        self.attributes = attributes
        self.headers = headers
        self.is_http = is_http
        self.links = [] if links is None else links  # SpanContexts of a batch's messages, for span links

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trigger):
            return NotImplemented
        return (self.kind, self.attributes, self.headers, self.is_http, self.links) == (other.kind, other.attributes, other.headers, other.is_http, other.links)

    def __repr__(self) -> str:
        return f"Trigger(kind={self.kind!r}, attributes={self.attributes!r}, headers={self.headers!r}, is_http={self.is_http!r}, links={self.links!r})"


def _str(value: object) -> Optional[str]:
    """``value`` if it is a non-empty string, else ``None``."""
    return value if isinstance(value, str) and value else None


def _dict(value: object) -> dict:
    """``value`` if it is a dict, else an empty dict (so lookups can be chained)."""
    return value if isinstance(value, dict) else {}


def _put(attributes: Dict[str, object], key: str, value: object) -> None:
    """Set a string attribute only when there is a non-empty string to set."""
    if isinstance(value, str) and value:
        attributes[key] = value


# ---------------------------------------------------------------------------------------------
# HTTP: API Gateway REST (payload 1.0), HTTP API (payload 2.0), function URLs, ALB.


def _http_kind(event: dict, context: dict) -> Optional[str]:
    """The HTTP kind of an event that has a ``requestContext`` dict, or ``None``."""
    # Lambda authorizers receive request-shaped events but answer with a policy, not a
    # response: they are not HTTP server invocations.
    if "methodArn" in event or "routeArn" in event:
        return None
    if isinstance(context.get("elb"), dict):
        return ALB
    if event.get("version") == "2.0" and isinstance(context.get("http"), dict):
        domain = context.get("domainName")
        # Function URL hosts are <url-id>.lambda-url.<region>.on.aws; HTTP APIs use
        # execute-api.<region>.amazonaws.com or a custom domain. Both send routeKey "$default".
        if isinstance(domain, str) and ".lambda-url." in domain and domain.endswith(".on.aws"):
            return FUNCTION_URL
        return APIGW_HTTP
    if isinstance(event.get("httpMethod"), str) or isinstance(context.get("httpMethod"), str):
        return APIGW_REST
    return None


def _headers(event: dict) -> Dict[str, str]:
    """Request headers with lowercased names; ``multiValueHeaders`` when ``headers`` is empty."""
    out: Dict[str, str] = {}
    single = event.get("headers")
    if isinstance(single, dict) and single:
        try:
            # The usual case, in one fast pass: string names and string values.
            fast = {name.lower(): value for name, value in single.items() if value.__class__ is str}
            if len(fast) == len(single):
                return fast
        except AttributeError:
            pass  # a name that is not a string: take the careful path below
        for name, value in single.items():
            if not isinstance(name, str):
                continue
            if isinstance(value, str):
                out[name.lower()] = value
            elif isinstance(value, list):
                joined = ", ".join(v for v in value if isinstance(v, str))
                if joined:
                    out[name.lower()] = joined
        return out
    # ALB with multi-value headers enabled sends only multiValueHeaders. Repeated fields are
    # combined with ", " as HTTP allows.
    multi = event.get("multiValueHeaders")
    if isinstance(multi, dict):
        for name, values in multi.items():
            if not isinstance(name, str):
                continue
            if isinstance(values, list):
                joined = ", ".join(v for v in values if isinstance(v, str))
                if joined:
                    out[name.lower()] = joined
            elif isinstance(values, str):
                out[name.lower()] = values
    return out


def _rebuild_query(event: dict, encode: bool) -> Optional[str]:
    """Rebuild a raw query string from (multiValue)queryStringParameters.

    API Gateway REST hands over decoded values (so they are percent-encoded again); ALB hands
    them over exactly as received (so they are used as they are).
    """
    pairs = []
    multi = event.get("multiValueQueryStringParameters")
    if isinstance(multi, dict) and multi:
        for key, values in multi.items():
            if not isinstance(key, str):
                continue
            if isinstance(values, list):
                for value in values:
                    if isinstance(value, str):
                        pairs.append((key, value))
            elif isinstance(values, str):
                pairs.append((key, values))
    else:
        single = event.get("queryStringParameters")
        if not isinstance(single, dict):
            return None
        for key, value in single.items():
            if isinstance(key, str) and isinstance(value, str):
                pairs.append((key, value))
    if not pairs:
        return None
    if encode:
        return "&".join(_quote(k) + "=" + _quote(v) for k, v in pairs)
    return "&".join(k + "=" + v for k, v in pairs)


_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"


def _quote(text: str) -> str:
    """Percent-encode a query component; most need nothing, and str.strip checks that in C."""
    if not text.strip(_UNRESERVED):
        return text
    # Imported here: only values that need escaping pay for it.
    from urllib.parse import quote

    return quote(text, safe="")


def _first_hop(forwarded_for: Optional[str]) -> Optional[str]:
    """The original client in an ``X-Forwarded-For`` list (its first entry)."""
    if not forwarded_for:
        return None
    return forwarded_for.split(",", 1)[0].strip() or None


def _http_trigger(kind: str, event: dict, context: dict) -> Trigger:
    headers = _headers(event)
    attributes: Dict[str, object] = {"faas.trigger": "http"}
    client = None
    if kind == APIGW_HTTP or kind == FUNCTION_URL:
        http = _dict(context.get("http"))
        method = _str(http.get("method"))
        path = _str(event.get("rawPath")) or _str(http.get("path"))
        query = event.get("rawQueryString")
        if not isinstance(query, str):
            # Not a real 2.0 event, but rebuild what can be rebuilt (values are decoded).
            query = _rebuild_query(event, encode=True)
        route = None
        if kind == APIGW_HTTP:
            # routeKey is "<METHOD> <path template>" ("ANY /pets/{id}"), or "$default" when no
            # route matched, which names no route at all.
            route_key = _str(event.get("routeKey")) or _str(context.get("routeKey"))
            if route_key and route_key != "$default":
                route = route_key.partition(" ")[2] or None
        user_agent = headers.get("user-agent") or _str(http.get("userAgent"))
        client = _str(http.get("sourceIp"))
        scheme = "https"  # both only listen on HTTPS
    else:
        method = _str(event.get("httpMethod")) or _str(context.get("httpMethod"))
        if kind == APIGW_REST:
            # requestContext.path is the path as requested (with the stage or base path
            # mapping); the top-level path is relative to the API.
            path = _str(context.get("path")) or _str(event.get("path"))
            route = _str(event.get("resource")) or _str(context.get("resourcePath"))
            client = _str(_dict(context.get("identity")).get("sourceIp"))
            user_agent = headers.get("user-agent") or _str(
                _dict(context.get("identity")).get("userAgent")
            )
            scheme = "https"  # REST APIs only listen on HTTPS
        else:  # ALB
            path = _str(event.get("path"))
            route = None
            user_agent = headers.get("user-agent")
            # ALB listeners may be plain HTTP; the load balancer says which in X-Forwarded-Proto.
            proto = headers.get("x-forwarded-proto")
            scheme = proto if proto in ("http", "https") else "https"
        query = _rebuild_query(event, encode=kind == APIGW_REST)
    if method:
        if method in _KNOWN_METHODS:
            attributes["http.request.method"] = method
        else:
            attributes["http.request.method"] = "_OTHER"
            attributes["http.request.method_original"] = method
    _put(attributes, "url.path", path)
    if query:
        attributes["url.query"] = query  # redacted by the invocation wrapper, with the configured keys
    attributes["url.scheme"] = scheme
    _put(attributes, "server.address", headers.get("host") or _str(context.get("domainName")))
    _put(attributes, "http.route", route)
    _put(attributes, "user_agent.original", user_agent)
    _put(attributes, "client.address", client or _first_hop(headers.get("x-forwarded-for")))
    return Trigger(kind, attributes, headers, True)


# ---------------------------------------------------------------------------------------------
# Records batches: SQS, SNS, S3, DynamoDB Streams, Kinesis.


def _arn_resource(arn: object) -> Optional[str]:
    """The resource part of an ARN (after ``arn:partition:service:region:account:``)."""
    if not isinstance(arn, str) or not arn.startswith("arn:"):
        return None
    parts = arn.split(":", 5)
    return (parts[5] or None) if len(parts) == 6 else None


# The source queue/topic/stream ARN. Not `cloud.resource_id`: on a FaaS span that names the
# function itself, which the companion sets.
EVENT_SOURCE_ARN = "lambdawrap.event_source.arn"


def _messaging(
    system: str, arn: object, name: Optional[str], count: int, message_id: object
) -> Dict[str, object]:
    attributes: Dict[str, object] = {
        "faas.trigger": "pubsub",
        "messaging.system": system,
        "messaging.operation.type": "process",
    }
    _put(attributes, "messaging.destination.name", name)
    # Lambda always hands over a batch (a Records array), so the batch size is always set; a
    # message id only describes the whole invocation when the batch holds a single message.
    attributes["messaging.batch.message_count"] = count
    if count == 1:
        _put(attributes, "messaging.message.id", message_id)
    if isinstance(arn, str) and arn.startswith("arn:"):
        attributes[EVENT_SOURCE_ARN] = arn
    return attributes


def _sqs(records: list, first: dict) -> Trigger:
    arn = first.get("eventSourceARN")
    queue = _arn_resource(arn)  # arn:aws:sqs:<region>:<account>:<queue name>
    attributes = _messaging("aws_sqs", arn, queue, len(records), first.get("messageId"))
    return Trigger(SQS, attributes, None, False, collect_links(records, sqs_message_context))


def _sns(records: list, first: dict) -> Trigger:
    sns = _dict(first.get("Sns"))
    arn = sns.get("TopicArn")
    topic = _arn_resource(arn)  # arn:aws:sns:<region>:<account>:<topic name>
    attributes = _messaging("aws_sns", arn, topic, len(records), sns.get("MessageId"))
    return Trigger(SNS, attributes, None, False, collect_links(records, sns_message_context))


def _kinesis(records: list, first: dict) -> Trigger:
    arn = first.get("eventSourceARN")
    resource = _arn_resource(arn)  # stream/<name>, or stream/<name>/consumer/... (fan-out)
    stream = None
    if resource and resource.startswith("stream/"):
        stream = resource[7:].partition("/")[0] or None
    # Kinesis records have no message id of their own (eventID is shard + sequence number).
    attributes = _messaging("aws_kinesis", arn, stream, len(records), None)
    return Trigger(KINESIS, attributes, None, False)


def _s3(first: dict) -> Trigger:
    attributes: Dict[str, object] = {"faas.trigger": "datasource"}
    s3 = _dict(first.get("s3"))
    _put(attributes, "faas.document.collection", _dict(s3.get("bucket")).get("name"))
    event_name = first.get("eventName")
    if isinstance(event_name, str) and event_name.startswith("ObjectCreated:"):
        operation = "insert"
    elif isinstance(event_name, str) and event_name.startswith("ObjectRemoved:"):
        operation = "delete"
    else:
        operation = "edit"  # restores, replication, tagging, ACL and lifecycle events
    attributes["faas.document.operation"] = operation
    _put(attributes, "faas.document.time", first.get("eventTime"))
    name = _str(_dict(s3.get("object")).get("key"))
    if name and ("%" in name or "+" in name):
        # Event keys are URL-encoded with "+" for spaces; the document is the real key.
        from urllib.parse import unquote_plus

        name = unquote_plus(name)
    _put(attributes, "faas.document.name", name)
    return Trigger(S3, attributes, None, False)


_DYNAMODB_OPERATIONS = {"INSERT": "insert", "MODIFY": "edit", "REMOVE": "delete"}


def _dynamodb(first: dict) -> Trigger:
    attributes: Dict[str, object] = {"faas.trigger": "datasource"}
    # arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<label>
    resource = _arn_resource(first.get("eventSourceARN"))
    if resource and resource.startswith("table/"):
        table = resource[6:].partition("/")[0]
        if table:
            attributes["faas.document.collection"] = table
            attributes["aws.dynamodb.table_names"] = [table]
    event_name = first.get("eventName")
    if isinstance(event_name, str) and event_name in _DYNAMODB_OPERATIONS:
        attributes["faas.document.operation"] = _DYNAMODB_OPERATIONS[event_name]
    created = _dict(first.get("dynamodb")).get("ApproximateCreationDateTime")
    if isinstance(created, (int, float)) and not isinstance(created, bool):
        try:
            # Epoch seconds; faas.document.time is an ISO 8601 string.
            attributes["faas.document.time"] = time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)
            )
        except (OverflowError, OSError, ValueError):
            pass
    return Trigger(DYNAMODB, attributes, None, False)


def _records_trigger(records: list) -> Optional[Trigger]:
    first = records[0]
    if not isinstance(first, dict):
        return None
    source = first.get("eventSource")
    if source == "aws:sqs":
        return _sqs(records, first)
    if source == "aws:s3":
        return _s3(first)
    if source == "aws:dynamodb":
        return _dynamodb(first)
    if source == "aws:kinesis":
        return _kinesis(records, first)
    if first.get("EventSource") == "aws:sns":  # SNS records capitalise their keys
        return _sns(records, first)
    return None


# ---------------------------------------------------------------------------------------------
# EventBridge and scheduled events.


def _eventbridge_trigger(event: dict, source: str, detail_type: str) -> Trigger:
    if source == "aws.events" and detail_type == "Scheduled Event":
        # The schedule expression is not in the event, so faas.cron cannot be set.
        attributes: Dict[str, object] = {"faas.trigger": "timer"}
        _put(attributes, "faas.time", event.get("time"))
        return Trigger(SCHEDULE, attributes, None, False)
    attributes = {
        "faas.trigger": "pubsub",
        "aws.eventbridge.source": source,
        "aws.eventbridge.detail_type": detail_type,
    }
    return Trigger(EVENTBRIDGE, attributes, None, False)


def _other() -> Trigger:
    # A fresh dict every time: callers may add attributes to the one they get.
    return Trigger(OTHER, {"faas.trigger": "other"}, None, False)


def detect_trigger(event: object) -> Trigger:
    """Classify an invocation event and derive its span attributes and (HTTP) request headers.

    Never raises: anything unrecognised, malformed, or not a dict is ``"other"``. Batches are
    described by their first record (all records of one event source mapping share a source).
    """
    try:
        if not isinstance(event, dict):
            return _other()
        context = event.get("requestContext")
        if isinstance(context, dict):
            kind = _http_kind(event, context)
            if kind is not None:
                return _http_trigger(kind, event, context)
        records = event.get("Records")
        if isinstance(records, list) and records:
            trigger = _records_trigger(records)
            if trigger is not None:
                return trigger
        source = event.get("source")
        detail_type = event.get("detail-type")
        if _str(source) and _str(detail_type) and "detail" in event:
            return _eventbridge_trigger(event, source, detail_type)  # type: ignore[arg-type]
    except Exception:  # never let tracing break the handler
        pass
    return _other()


def _status_from(value: object) -> Optional[int]:
    """An HTTP status code from an int, an integral float, or a string of digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        code = value
    elif isinstance(value, float):
        if not value.is_integer():
            return None
        code = int(value)
    elif isinstance(value, str):
        value = value.strip()
        # isdecimal() alone would accept non-ASCII digits such as "２００".
        if not value or len(value) > 3 or not value.isascii() or not value.isdecimal():
            return None
        code = int(value)
    else:
        return None
    return code if 100 <= code <= 999 else None


def response_status_code(trigger: Trigger, response: object) -> Optional[int]:
    """The HTTP status code the client gets for ``response``, or ``None`` if not HTTP/unknown.

    For HTTP kinds: the ``statusCode`` of a dict response (an int or a string of digits). HTTP
    APIs and function URLs (payload 2.0) answer 200 when the response is not a dict with a
    ``statusCode``: they then treat the whole response as the body.
    """
    try:
        kind = trigger.kind
        if kind not in HTTP_KINDS:
            return None
        if isinstance(response, dict) and "statusCode" in response:
            return _status_from(response["statusCode"])
        if kind in _INFERS_200:
            return 200
    except Exception:  # never let tracing break the handler
        pass
    return None
