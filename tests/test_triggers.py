"""Tests for lambdawrap.handler.triggers: trigger detection, span attributes, response status codes."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lambdawrap.handler import triggers
from support.recording import recorded
from lambdawrap.handler.triggers import (
    ALB,
    APIGW_HTTP,
    APIGW_REST,
    DYNAMODB,
    EVENTBRIDGE,
    FUNCTION_URL,
    HTTP_KINDS,
    KINDS,
    KINESIS,
    OTHER,
    S3,
    SCHEDULE,
    SNS,
    SQS,
    Trigger,
    detect_trigger,
    response_status_code,
)

EVENTS = Path(__file__).resolve().parent.parent / "examples" / "events"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
FUZZ = settings(max_examples=300, deadline=None, database=None)

FAAS_TRIGGERS = {"http", "pubsub", "datasource", "timer", "other"}
EXPECTED_FAAS_TRIGGER = {
    APIGW_REST: "http",
    APIGW_HTTP: "http",
    FUNCTION_URL: "http",
    ALB: "http",
    SQS: "pubsub",
    SNS: "pubsub",
    KINESIS: "pubsub",
    EVENTBRIDGE: "pubsub",
    S3: "datasource",
    DYNAMODB: "datasource",
    SCHEDULE: "timer",
    OTHER: "other",
}


@functools.lru_cache(maxsize=None)
def _read(kind: str) -> str:
    return (EVENTS / f"{kind}.json").read_text()


def load(kind: str) -> dict:
    """A fresh copy of the sample event of that kind (tests may modify it)."""
    return json.loads(_read(kind))


def assert_valid_trigger(trigger: object) -> None:
    """The invariants every detect_trigger() result keeps, whatever the input."""
    assert isinstance(trigger, Trigger)
    assert trigger.kind in KINDS
    assert trigger.is_http is (trigger.kind in HTTP_KINDS)
    assert isinstance(trigger.attributes, dict)
    assert trigger.attributes["faas.trigger"] == EXPECTED_FAAS_TRIGGER[trigger.kind]
    for key, value in trigger.attributes.items():
        assert isinstance(key, str) and key
        if isinstance(value, list):
            assert value and len({type(v) for v in value}) == 1
            assert all(isinstance(v, (str, bool, int, float)) for v in value)
        else:
            assert isinstance(value, (str, bool, int, float)), (key, value)
        if isinstance(value, str):
            assert value, key  # no empty strings
    if trigger.is_http:
        assert isinstance(trigger.headers, dict)
        for name, value in trigger.headers.items():
            assert isinstance(name, str) and name == name.lower()
            assert isinstance(value, str)
    else:
        assert trigger.headers is None


# --- every sample file ------------------------------------------------------------------------


def test_every_kind_has_a_sample():
    assert {p.stem for p in EVENTS.glob("*.json")} == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_sample_detected_as_its_kind(kind):
    trigger = detect_trigger(load(kind))
    assert trigger.kind == kind
    assert_valid_trigger(trigger)


# --- HTTP -------------------------------------------------------------------------------------


def test_apigw_rest_sample():
    trigger = detect_trigger(load("apigw-rest"))
    assert trigger.is_http
    assert trigger.attributes == {
        "faas.trigger": "http",
        "http.request.method": "GET",
        # requestContext.path: the path as requested, with the stage
        "url.path": "/prod/pets/42",
        # rebuilt from multiValueQueryStringParameters (both values kept)
        "url.query": "include=owner&include=vet",
        "url.scheme": "https",
        "server.address": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
        "http.route": "/pets/{petId}",
        "user_agent.original": "curl/8.5.0",
        "client.address": "203.0.113.10",
    }
    assert trigger.headers["traceparent"] == TRACEPARENT
    assert trigger.headers["host"] == "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com"
    assert "Host" not in trigger.headers


def test_apigw_http_sample():
    trigger = detect_trigger(load("apigw-http"))
    assert trigger.attributes == {
        "faas.trigger": "http",
        "http.request.method": "POST",
        "url.path": "/orders/1234/items",
        "url.query": "dryRun=true&source=web",
        "url.scheme": "https",
        "server.address": "r3pmxmplak.execute-api.us-east-2.amazonaws.com",
        "http.route": "/orders/{orderId}/items",
        "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0",
        "client.address": "198.51.100.23",
    }
    assert trigger.headers["traceparent"] == TRACEPARENT


def test_function_url_sample():
    trigger = detect_trigger(load("function-url"))
    # No http.route: function URLs have no routes ("$default").
    assert trigger.attributes == {
        "faas.trigger": "http",
        "http.request.method": "GET",
        "url.path": "/health",
        "url.query": "verbose=1",
        "url.scheme": "https",
        "server.address": "k2vxmpl3ghqzq4rd7cbm5xyz2a0xqwer.lambda-url.eu-west-1.on.aws",
        "user_agent.original": "curl/8.5.0",
        "client.address": "192.0.2.44",
    }


def test_alb_sample():
    trigger = detect_trigger(load("alb"))
    assert trigger.attributes == {
        "faas.trigger": "http",
        "http.request.method": "GET",
        "url.path": "/search",
        # ALB passes query values as received (still encoded): used as they are
        "url.query": "q=lambda%20otel&page=2",
        "url.scheme": "https",
        "server.address": "internal-search-alb-1234567890.us-east-1.elb.amazonaws.com",
        "user_agent.original": (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_3) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.3 Safari/605.1.15"
        ),
        # X-Forwarded-For first hop
        "client.address": "72.21.198.66",
    }


def test_alb_multi_value_mode_merges_headers():
    # GIVEN ALB with multi-value headers enabled (no "headers", no "queryStringParameters")
    event = load("alb")
    headers = event.pop("headers")
    event["multiValueHeaders"] = {k.title(): [v] for k, v in headers.items()}
    event["multiValueHeaders"]["X-Custom"] = ["a", "b"]
    event["multiValueQueryStringParameters"] = {"q": ["lambda%20otel"], "tag": ["x", "y"]}
    del event["queryStringParameters"]
    event["headers"] = None
    # WHEN detected THEN headers are lowercased and merged, the query keeps repeats
    trigger = detect_trigger(event)
    assert trigger.kind == ALB
    assert trigger.headers["host"] == headers["host"]
    assert trigger.headers["x-custom"] == "a, b"
    assert trigger.attributes["url.query"] == "q=lambda%20otel&tag=x&tag=y"
    assert trigger.attributes["client.address"] == "72.21.198.66"


def test_alb_plain_http_listener():
    event = load("alb")
    event["headers"]["x-forwarded-proto"] = "http"
    assert detect_trigger(event).attributes["url.scheme"] == "http"
    event["headers"]["x-forwarded-proto"] = "gopher"
    assert detect_trigger(event).attributes["url.scheme"] == "https"


def url_query(event: dict) -> str:
    """url.query as the invocation's record carries it (redacted by the wrapper)."""
    return recorded(event)["start"]["attributes"]["url.query"]


def test_apigw_rest_query_is_reencoded_and_redacted():
    # API Gateway REST decodes query values; the raw query is rebuilt percent-encoded, and
    # sensitive values are redacted (semantic conventions for url.query; any case).
    event = load("apigw-rest")
    event["multiValueQueryStringParameters"] = {
        "q": ["black cat&dog"],
        "Signature": ["abc=="],
        "sig": ["s"],
        "AWSAccessKeyId": ["AKIA"],
        "X-Goog-Signature": ["g"],
        "signature": ["kept"],
    }
    assert url_query(event) == (
        "q=black%20cat%26dog&Signature=REDACTED&sig=REDACTED&AWSAccessKeyId=REDACTED"
        "&X-Goog-Signature=REDACTED&signature=REDACTED"
    )
    event["multiValueQueryStringParameters"] = None
    event["queryStringParameters"] = {"a": "1", "b": "é"}
    assert detect_trigger(event).attributes["url.query"] == "a=1&b=%C3%A9"
    event["queryStringParameters"] = None
    assert "url.query" not in detect_trigger(event).attributes


def test_apigw_http_raw_query_redacted_and_empty_omitted():
    event = load("apigw-http")
    event["rawQueryString"] = "X-Amz-Signature=1&sig=abc&q=1"
    assert url_query(event) == "X-Amz-Signature=1&sig=REDACTED&q=1"
    event["rawQueryString"] = ""
    assert "url.query" not in detect_trigger(event).attributes


def test_apigw_http_routes():
    event = load("apigw-http")
    event["routeKey"] = "ANY /{proxy+}"
    assert detect_trigger(event).attributes["http.route"] == "/{proxy+}"
    event["routeKey"] = "$default"
    assert "http.route" not in detect_trigger(event).attributes


def test_http_fallbacks_without_headers():
    # No headers: server.address from domainName, user agent and client from requestContext.
    event = load("apigw-http")
    event["headers"] = None
    attributes = detect_trigger(event).attributes
    assert attributes["server.address"] == "r3pmxmplak.execute-api.us-east-2.amazonaws.com"
    assert attributes["user_agent.original"].startswith("Mozilla/5.0")
    assert attributes["client.address"] == "198.51.100.23"

    event = load("apigw-rest")
    event["headers"] = event["multiValueHeaders"] = None
    del event["requestContext"]["identity"]
    attributes = detect_trigger(event).attributes
    assert attributes["server.address"] == "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com"
    assert "client.address" not in attributes and "user_agent.original" not in attributes
    assert detect_trigger(event).headers == {}


def test_client_address_falls_back_to_forwarded_for():
    event = load("apigw-rest")
    event["requestContext"]["identity"]["sourceIp"] = None
    assert detect_trigger(event).attributes["client.address"] == "203.0.113.10"
    event["headers"]["X-Forwarded-For"] = " 198.51.100.7 ,10.0.0.1"
    assert detect_trigger(event).attributes["client.address"] == "198.51.100.7"


def test_unknown_http_method():
    event = load("apigw-http")
    event["requestContext"]["http"]["method"] = "PROPFIND"
    attributes = detect_trigger(event).attributes
    assert attributes["http.request.method"] == "_OTHER"
    assert attributes["http.request.method_original"] == "PROPFIND"
    # Method names are case-sensitive in the conventions.
    event["requestContext"]["http"]["method"] = "get"
    assert detect_trigger(event).attributes["http.request.method"] == "_OTHER"


def test_function_url_vs_http_api_distinction():
    # GIVEN a 2.0 event on an HTTP API custom domain with "$default" route THEN apigw-http
    event = load("function-url")
    event["requestContext"]["domainName"] = "api.example.com"
    assert detect_trigger(event).kind == APIGW_HTTP
    # GIVEN an HTTP API event served on a lambda-url host THEN function-url
    event = load("apigw-http")
    event["requestContext"]["domainName"] = "abc.lambda-url.us-east-1.on.aws"
    assert detect_trigger(event).kind == FUNCTION_URL


def test_http_api_payload_v1_is_rest_shaped():
    # HTTP APIs with payload format 1.0 send the REST shape.
    event = load("apigw-rest")
    event["version"] = "1.0"
    assert detect_trigger(event).kind == APIGW_REST


@pytest.mark.parametrize(
    "event",
    [
        # REST API Lambda authorizer (REQUEST type)
        {"type": "REQUEST", "methodArn": "arn:aws:execute-api:us-east-1:1:a/prod/GET/x",
         "httpMethod": "GET", "headers": {}, "requestContext": {"httpMethod": "GET"}},
        # HTTP API Lambda authorizer (2.0)
        {"version": "2.0", "type": "REQUEST", "routeArn": "arn:aws:execute-api:us-east-1:1:a/$default/GET/",
         "requestContext": {"http": {"method": "GET"}}},
        # WebSocket API message
        {"requestContext": {"routeKey": "$default", "eventType": "MESSAGE", "connectionId": "abc="},
         "body": "hi"},
    ],
)
def test_non_request_api_gateway_events_are_other(event):
    assert detect_trigger(event).kind == OTHER


# --- messaging --------------------------------------------------------------------------------


def test_sqs_sample():
    trigger = detect_trigger(load("sqs"))
    assert trigger.attributes == {
        "faas.trigger": "pubsub",
        "messaging.system": "aws_sqs",
        "messaging.operation.type": "process",
        "messaging.destination.name": "orders-queue",
        "messaging.batch.message_count": 3,
        "lambdawrap.event_source.arn": "arn:aws:sqs:us-east-1:123456789012:orders-queue",
    }
    assert trigger.headers is None and not trigger.is_http


def test_sqs_single_message_has_message_id():
    event = load("sqs")
    event["Records"] = event["Records"][:1]
    attributes = detect_trigger(event).attributes
    assert attributes["messaging.batch.message_count"] == 1
    assert attributes["messaging.message.id"] == "059f36b4-87a3-44ab-83d2-661975830a7d"


def test_sns_sample():
    assert detect_trigger(load("sns")).attributes == {
        "faas.trigger": "pubsub",
        "messaging.system": "aws_sns",
        "messaging.operation.type": "process",
        "messaging.destination.name": "order-events",
        "messaging.batch.message_count": 1,
        "messaging.message.id": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
        "lambdawrap.event_source.arn": "arn:aws:sns:us-east-1:123456789012:order-events",
    }


def test_kinesis_sample():
    assert detect_trigger(load("kinesis")).attributes == {
        "faas.trigger": "pubsub",
        "messaging.system": "aws_kinesis",
        "messaging.operation.type": "process",
        "messaging.destination.name": "clickstream",
        "messaging.batch.message_count": 2,
        "lambdawrap.event_source.arn": "arn:aws:kinesis:us-east-1:123456789012:stream/clickstream",
    }


def test_kinesis_enhanced_fan_out_arn():
    event = load("kinesis")
    event["Records"][0]["eventSourceARN"] = (
        "arn:aws:kinesis:us-east-1:123456789012:stream/clickstream/consumer/reporting:1710321342"
    )
    assert detect_trigger(event).attributes["messaging.destination.name"] == "clickstream"


def test_malformed_arns_give_no_destination():
    event = load("sqs")
    for record in event["Records"]:
        record["eventSourceARN"] = "arn:aws:sqs:EXAMPLE"
    attributes = detect_trigger(event).attributes
    assert "messaging.destination.name" not in attributes
    assert attributes["lambdawrap.event_source.arn"] == "arn:aws:sqs:EXAMPLE"
    event["Records"][0]["eventSourceARN"] = "not-an-arn"
    attributes = detect_trigger(event).attributes
    assert "messaging.destination.name" not in attributes and "lambdawrap.event_source.arn" not in attributes


# --- data sources -----------------------------------------------------------------------------


def test_s3_sample():
    assert detect_trigger(load("s3")).attributes == {
        "faas.trigger": "datasource",
        "faas.document.collection": "photo-uploads-123456789012",
        "faas.document.operation": "insert",
        "faas.document.time": "2024-03-13T09:15:42.315Z",
        # the event's key is URL-encoded ("+" for spaces); the document name is the real key
        "faas.document.name": "uploads/2024/summer vacation(1).jpg",
    }


@pytest.mark.parametrize(
    "event_name, operation",
    [
        ("ObjectCreated:Put", "insert"),
        ("ObjectCreated:CompleteMultipartUpload", "insert"),
        ("ObjectRemoved:Delete", "delete"),
        ("ObjectRemoved:DeleteMarkerCreated", "delete"),
        ("ObjectRestore:Completed", "edit"),
        ("ObjectTagging:Put", "edit"),
        ("LifecycleTransition", "edit"),
        (None, "edit"),
    ],
)
def test_s3_operations(event_name, operation):
    event = load("s3")
    event["Records"][0]["eventName"] = event_name
    assert detect_trigger(event).attributes["faas.document.operation"] == operation


def test_dynamodb_sample():
    assert detect_trigger(load("dynamodb")).attributes == {
        "faas.trigger": "datasource",
        "faas.document.collection": "Orders",
        "aws.dynamodb.table_names": ["Orders"],
        "faas.document.operation": "insert",  # from the first record
        "faas.document.time": "2024-03-13T09:15:42Z",
    }


@pytest.mark.parametrize(
    "event_name, operation", [("INSERT", "insert"), ("MODIFY", "edit"), ("REMOVE", "delete")]
)
def test_dynamodb_operations(event_name, operation):
    event = load("dynamodb")
    event["Records"][0]["eventName"] = event_name
    assert detect_trigger(event).attributes["faas.document.operation"] == operation


@pytest.mark.parametrize("created", [10**30, float("inf"), float("nan"), True, "1710321342", None])
def test_dynamodb_odd_creation_times_are_skipped(created):
    event = load("dynamodb")
    event["Records"][0]["dynamodb"]["ApproximateCreationDateTime"] = created
    attributes = detect_trigger(event).attributes
    assert "faas.document.time" not in attributes
    assert attributes["faas.document.collection"] == "Orders"


# --- EventBridge ------------------------------------------------------------------------------


def test_eventbridge_sample():
    trigger = detect_trigger(load("eventbridge"))
    assert trigger.attributes == {
        "faas.trigger": "pubsub",
        "aws.eventbridge.source": "aws.ec2",
        "aws.eventbridge.detail_type": "EC2 Instance State-change Notification",
    }


def test_schedule_sample():
    assert detect_trigger(load("schedule")).attributes == {
        "faas.trigger": "timer",
        "faas.time": "2024-03-13T09:00:00Z",
    }


def test_other_sample_and_non_events():
    for event in (load("other"), None, 0, "x", [], [{"Records": []}], {"Records": []}, {}):
        trigger = detect_trigger(event)
        assert trigger == Trigger(OTHER, {"faas.trigger": "other"}, None, False)


def test_other_attributes_are_not_shared():
    first = detect_trigger(None)
    first.attributes["x"] = 1
    assert detect_trigger(None).attributes == {"faas.trigger": "other"}


# --- response status codes --------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(HTTP_KINDS))
@pytest.mark.parametrize(
    "response, expected",
    [
        ({"statusCode": 201, "body": ""}, 201),
        ({"statusCode": "404"}, 404),
        ({"statusCode": " 503 "}, 503),
        ({"statusCode": 200.0}, 200),
        ({"statusCode": 200.5}, None),
        ({"statusCode": True}, None),
        ({"statusCode": "abc"}, None),
        ({"statusCode": "２００"}, None),
        ({"statusCode": "-200"}, None),
        ({"statusCode": 42}, None),
        ({"statusCode": 1000}, None),
        ({"statusCode": None}, None),
    ],
)
def test_status_code_from_dict(kind, response, expected):
    trigger = detect_trigger(load(kind))
    assert response_status_code(trigger, response) == expected


@pytest.mark.parametrize("response", [None, "hello", {"message": "ok"}, [1, 2], 7, b"x", object()])
def test_status_code_inferred_200_for_payload_v2(response):
    # HTTP APIs and function URLs treat a response without statusCode as the body of a 200.
    for kind in (APIGW_HTTP, FUNCTION_URL):
        assert response_status_code(detect_trigger(load(kind)), response) == 200
    # REST APIs and ALB do not infer anything.
    for kind in (APIGW_REST, ALB):
        assert response_status_code(detect_trigger(load(kind)), response) is None


@pytest.mark.parametrize("kind", sorted(set(KINDS) - HTTP_KINDS))
def test_status_code_none_for_non_http(kind):
    trigger = detect_trigger(load(kind))
    assert response_status_code(trigger, {"statusCode": 200}) is None
    assert response_status_code(trigger, None) is None


def test_status_code_never_raises_on_bad_trigger():
    assert response_status_code(None, {"statusCode": 200}) is None  # type: ignore[arg-type]
    assert response_status_code("apigw-http", {}) is None  # type: ignore[arg-type]


# --- robustness -------------------------------------------------------------------------------


class ExplodingDict(dict):
    def get(self, *args, **kwargs):
        raise RuntimeError("boom")

    def __getitem__(self, key):
        raise RuntimeError("boom")

    def __contains__(self, key):
        raise RuntimeError("boom")


@pytest.mark.parametrize(
    "event",
    [
        object(),
        ExplodingDict(),
        {"requestContext": ExplodingDict(), "httpMethod": "GET"},
        {"Records": [ExplodingDict(eventSource="aws:sqs")]},
        {"Records": [{"eventSource": "aws:s3", "s3": ExplodingDict()}]},
        {"requestContext": {"http": {"method": "GET"}}, "version": "2.0", "headers": ExplodingDict(a="b")},
        {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}, "time": 5},
        {1: 2, (1, 2): "x", None: None},
    ],
)
def test_hostile_objects_never_raise(event):
    trigger = detect_trigger(event)
    assert_valid_trigger(trigger)
    assert response_status_code(trigger, ExplodingDict()) in (None, 200)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=15), children, max_size=5),
    max_leaves=20,
)

KNOWN_KEYS = [
    "requestContext", "Records", "headers", "multiValueHeaders", "httpMethod", "path", "resource",
    "version", "routeKey", "rawPath", "rawQueryString", "queryStringParameters",
    "multiValueQueryStringParameters", "elb", "http", "domainName", "identity", "sourceIp",
    "eventSource", "EventSource", "eventSourceARN", "Sns", "TopicArn", "s3", "bucket", "object",
    "key", "name", "eventName", "dynamodb", "ApproximateCreationDateTime", "source",
    "detail-type", "detail", "time", "methodArn", "messageId", "MessageId", "statusCode",
]
KNOWN_VALUES = [
    "2.0", "aws:sqs", "aws:sns", "aws:s3", "aws:dynamodb", "aws:kinesis", "aws.events",
    "Scheduled Event", "GET", "x.lambda-url.us-east-1.on.aws", "$default", "GET /a/{b}",
    "arn:aws:sqs:us-east-1:1:q", "arn:aws:dynamodb:us-east-1:1:table/T/stream/x",
    "arn:aws:kinesis:us-east-1:1:stream/s", "ObjectCreated:Put", "INSERT", "a%2", "+", "",
]
# Dicts keyed by the names the detector looks for, so fuzzing reaches the deep branches.
shaped_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.sampled_from(KNOWN_VALUES),
    lambda children: st.lists(children, min_size=1, max_size=3)
    | st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=8), children, max_size=6),
    max_leaves=30,
)


@st.composite
def mutated_samples(draw):
    """A sample event with a few subtrees replaced by arbitrary values."""
    event = load(draw(st.sampled_from(KINDS)))
    for _ in range(draw(st.integers(1, 4))):
        node, key = None, None
        current = event
        # Walk down a random path, then replace the value found there.
        for _depth in range(draw(st.integers(0, 5))):
            if isinstance(current, dict) and current:
                k = draw(st.sampled_from(sorted(current, key=str)))
            elif isinstance(current, list) and current:
                k = draw(st.integers(0, len(current) - 1))
            else:
                break
            node, key = current, k
            current = current[k]
        if node is None:
            continue
        node[key] = draw(json_values | shaped_values)
    return event


def check_all(event: object) -> None:
    trigger = detect_trigger(event)
    assert_valid_trigger(trigger)
    for response in (None, {"statusCode": 200}, event):
        code = response_status_code(trigger, response)
        assert code is None or (type(code) is int and 100 <= code <= 999)
        if not trigger.is_http:
            assert code is None


@FUZZ
@given(json_values)
def test_fuzz_arbitrary_json(event):
    check_all(event)


@FUZZ
@given(shaped_values)
def test_fuzz_shaped_json(event):
    check_all(event)


@FUZZ
@given(mutated_samples())
def test_fuzz_mutated_samples(event):
    check_all(event)


@FUZZ
@given(
    st.sampled_from(sorted(HTTP_KINDS)),
    st.dictionaries(st.text(max_size=20), st.text(max_size=40) | json_values, max_size=8) | json_values,
)
def test_fuzz_http_headers(kind, headers):
    # Arbitrary header maps (any value types) in every HTTP event shape.
    event = load(kind)
    event["headers"] = headers
    event["multiValueHeaders"] = headers
    trigger = detect_trigger(event)
    assert trigger.kind == kind
    assert_valid_trigger(trigger)


def test_module_has_only_stdlib_imports():
    # The handler side must not pull in third-party packages, nor slow stdlib ones (dataclasses
    # cost cold start; typing only under TYPE_CHECKING).
    import ast

    for module in (triggers, __import__("lambdawrap.handler.trace_context", fromlist=["x"])):
        tree = ast.parse(Path(module.__file__).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in {"__future__", "collections", "random", "time", "typing", "urllib"} or name.startswith(("lambdawrap.handler.", "lambdawrap.shared.")), name


def test_odd_header_and_query_shapes():
    # Non-string names and values are skipped; lists are joined; a bare string list value is kept.
    event = load("alb")
    event["headers"] = {1: "x", "X-A": ["p", 2, "q"], "X-B": 3, "X-C": [], "Host": "h"}
    trigger = detect_trigger(event)
    assert trigger.headers == {"x-a": "p, q", "host": "h"}
    event["headers"] = {}
    event["multiValueHeaders"] = {2: ["x"], "X-D": "single", "X-E": [None], "User-Agent": ["ua"]}
    trigger = detect_trigger(event)
    assert trigger.headers == {"x-d": "single", "user-agent": "ua"}
    assert trigger.attributes["user_agent.original"] == "ua"
    event["multiValueQueryStringParameters"] = {3: ["x"], "a": "b", "c": [1, "d"], "e": None}
    assert detect_trigger(event).attributes["url.query"] == "a=b&c=d"
    event["multiValueQueryStringParameters"] = {}
    event["queryStringParameters"] = {"k": 1, 2: "v"}
    assert "url.query" not in detect_trigger(event).attributes
