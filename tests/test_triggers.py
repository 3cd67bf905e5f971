"""Tests for lambdawrap.handler.triggers: trigger detection, span attributes, names and kinds,
response status codes. The corpus of other people's sample events is checked as a whole in
test_event_corpus.py; these tests pin the rules one by one, on the project's examples
(examples/events) and on corpus events changed to reach each branch."""

from __future__ import annotations

import ast
import base64
import collections
import functools
import gzip
import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lambdawrap.handler import triggers
from lambdawrap.handler.trace_context import SpanContext, choose_parent, parse_traceparent
from lambdawrap.handler.triggers import (
    ALB,
    APIGW_HTTP,
    APIGW_REST,
    CLOUDFRONT,
    CONFIG,
    FUNCTION_URL,
    HTTP_KINDS,
    KINDS,
    OTHER,
    SQS,
    VPC_LATTICE,
    Trigger,
    detect_trigger,
    response_status_code,
)
from lambdawrap.handler.triggers.http_sources import MAX_PARSED_RESPONSE_BYTES
from support import corpus
from support.recording import recorded

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "events"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
FUZZ = settings(max_examples=300, deadline=None, database=None)
SERVER, CONSUMER = 1, 4

# What each kind is reported as, written from the FaaS conventions' definitions of the values
# (not read from the module): an HTTP request to answer, messages, a data change, a schedule, or
# anything else. Config rules run periodically or on a change.
EXPECTED_FAAS_TRIGGER = {
    "apigw-rest": {"http"}, "apigw-http": {"http"}, "function-url": {"http"}, "alb": {"http"},
    "vpc-lattice": {"http"}, "cloudfront": {"http"},
    "sqs": {"pubsub"}, "sns": {"pubsub"}, "eventbridge": {"pubsub"}, "kinesis": {"pubsub"},
    "firehose": {"pubsub"}, "kafka": {"pubsub"}, "activemq": {"pubsub"}, "rabbitmq": {"pubsub"},
    "cloudwatch-logs": {"pubsub"}, "ses": {"pubsub"},
    "s3": {"datasource"}, "s3-object-lambda": {"datasource"}, "dynamodb": {"datasource"},
    "documentdb": {"datasource"},
    "schedule": {"timer"}, "config": {"timer", "other"},
    "apigw-websocket": {"other"}, "apigw-authorizer": {"other"}, "appsync": {"other"},
    "appsync-authorizer": {"other"}, "cognito": {"other"}, "iot": {"other"}, "codecommit": {"other"},
    "codepipeline": {"other"}, "secretsmanager": {"other"}, "bedrock-agent": {"other"},
    "cloudformation": {"other"}, "cloudwatch-alarm": {"other"}, "s3-batch": {"other"},
    "other": {"other"},
}


@functools.lru_cache(maxsize=None)
def _example(kind: str) -> str:
    return (EXAMPLES / f"{kind}.json").read_text()


def load(kind: str) -> dict:
    """A fresh copy of the project's example event of that kind, else of a corpus event of it."""
    if (EXAMPLES / f"{kind}.json").exists():
        return json.loads(_example(kind))
    return corpus.sample(kind)


def assert_valid_trigger(trigger: object) -> None:
    """The invariants every detect_trigger() result keeps, whatever the input."""
    assert isinstance(trigger, Trigger)
    assert trigger.kind in KINDS
    assert trigger.is_http is (trigger.kind in HTTP_KINDS)
    assert isinstance(trigger.attributes, dict)
    assert trigger.attributes["faas.trigger"] in EXPECTED_FAAS_TRIGGER[trigger.kind]
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
    if trigger.headers is not None:
        for name, value in trigger.headers.items():
            assert isinstance(name, str) and name == name.lower()
            assert isinstance(value, str)
    assert isinstance(trigger.span_name, str)
    # Messaging "process" spans are consumers; every other invocation span is a server span.
    assert trigger.span_kind == (CONSUMER if trigger.attributes["faas.trigger"] == "pubsub" else SERVER)
    assert isinstance(trigger.links, list) and all(isinstance(link, SpanContext) for link in trigger.links)
    assert trigger.parent is None or isinstance(trigger.parent, SpanContext)


# --- every example ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.stem)
def test_each_example_is_detected_as_the_kind_it_is_named_after(path):
    trigger = detect_trigger(json.loads(path.read_text()))
    assert trigger.kind == path.stem
    assert_valid_trigger(trigger)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_a_sample_that_is_detected_as_it(kind):
    trigger = detect_trigger(load(kind))
    assert trigger.kind == kind
    assert_valid_trigger(trigger)


def test_every_kind_has_its_expected_faas_trigger():
    assert set(KINDS) == set(EXPECTED_FAAS_TRIGGER)


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
        "server.port": 443,
        "http.route": "/pets/{petId}",
        "user_agent.original": "curl/8.5.0",
        "client.address": "203.0.113.10",
        "network.protocol.version": "1.1",
    }
    assert (trigger.span_name, trigger.span_kind) == ("GET /pets/{petId}", SERVER)
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
        "server.port": 443,
        "http.route": "/orders/{orderId}/items",
        "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0",
        "client.address": "198.51.100.23",
        "network.protocol.version": "1.1",
    }
    assert trigger.span_name == "POST /orders/{orderId}/items"
    assert trigger.headers["traceparent"] == TRACEPARENT


def test_function_url_sample():
    trigger = detect_trigger(load("function-url"))
    # No http.route: function URLs have no routes ("$default"), so the span is named {method}.
    assert trigger.attributes == {
        "faas.trigger": "http",
        "http.request.method": "GET",
        "url.path": "/health",
        "url.query": "verbose=1",
        "url.scheme": "https",
        "server.address": "k2vxmpl3ghqzq4rd7cbm5xyz2a0xqwer.lambda-url.eu-west-1.on.aws",
        "server.port": 443,
        "user_agent.original": "curl/8.5.0",
        "client.address": "192.0.2.44",
        "network.protocol.version": "1.1",
    }
    assert trigger.span_name == "GET"


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
        "server.port": 443,
        "user_agent.original": (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_3) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.3 Safari/605.1.15"
        ),
        # X-Forwarded-For first hop
        "client.address": "72.21.198.66",
        "lambdawrap.event_source.arn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/lambda-search/6d0ecf831eec9f09",
    }


@pytest.mark.parametrize("multi_value", [False, True], ids=["headers", "multi-value headers"])
def test_the_trace_context_after_the_256th_header_is_still_read(multi_value):
    # GIVEN an ALB request with 300 headers, its trace context among the last (as a client
    # writes their names)
    event = load("alb")
    headers = dict(event.pop("headers"), **{f"x-h{n}": "v" for n in range(300)})
    headers.update({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "Tracestate": "congo=t61rcWkgMzE"})
    if multi_value:
        event["multiValueHeaders"] = {name: [value] for name, value in headers.items()}
        event["headers"] = None
    else:
        event["headers"] = headers
    # WHEN detected
    trigger = detect_trigger(event)
    # THEN its parent is the caller's (before: the fields past the 256th were not read, and the
    # span lost its parent)
    assert trigger.headers["traceparent"] == headers["traceparent"] and trigger.headers["tracestate"] == "congo=t61rcWkgMzE"


@pytest.mark.parametrize("traceparent", [None, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"])
def test_repeated_baggage_lines_of_a_rest_request_are_combined_with_or_without_a_parent(traceparent):
    # GIVEN a REST API request (payload 1.0) whose client sent baggage in two lines: the
    # single-value map holds the last one only
    event = load("apigw-rest")
    event["headers"] = {"Host": "api.example.com", "baggage": "b=2"}
    event["multiValueHeaders"] = {"Host": ["api.example.com"], "baggage": ["a=1", "b=2"]}
    if traceparent:
        event["headers"]["traceparent"], event["multiValueHeaders"]["traceparent"] = traceparent, [traceparent]
    # WHEN its context is chosen
    trigger = detect_trigger(event)
    beside = choose_parent(trigger.headers, None, trigger.parent, None)[2]
    # THEN both lines are the baggage, in order (before: without a traceparent, the last alone)
    assert beside == (None, "a=1, b=2")


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


@pytest.mark.parametrize("port, expected", [("8443", 8443), ("0", None), ("65536", None), ("443x", None), ("", None), ("١٢", None)])
def test_server_port_from_forwarded_port(port, expected):
    event = load("alb")
    event["headers"]["x-forwarded-port"] = port
    assert detect_trigger(event).attributes.get("server.port") == expected


@pytest.mark.parametrize(
    "headers, address, port",
    [
        # Host carries the port whenever it is not the scheme's default (RFC 9110 7.2)
        ({"host": "alb-1.us-east-1.elb.amazonaws.com:8080", "x-forwarded-port": "8080"}, "alb-1.us-east-1.elb.amazonaws.com", 8080),
        ({"host": "[2001:db8::1]:8443"}, "2001:db8::1", 8443),
        ({"host": "[2001:db8::1]", "x-forwarded-port": "443"}, "2001:db8::1", 443),
        ({"host": "10.1.2.80:81, 10.1.2.80:81"}, "10.1.2.80", 81),
        # the header's port first, then X-Forwarded-Port
        ({"host": "example.com:8443", "x-forwarded-port": "443"}, "example.com", 8443),
        ({"host": "example.com:bad", "x-forwarded-port": "443"}, "example.com", 443),
        ({"host": "2001:db8::1"}, "2001:db8::1", None),
        # the original host a proxy passes on comes first: Forwarded, then X-Forwarded-Host
        ({"host": "internal:8080", "x-forwarded-host": "shop.example.com, proxy.internal", "x-forwarded-port": "443"}, "shop.example.com", 443),
        ({"host": "internal:8080", "x-forwarded-host": "shop.example.com:8443", "forwarded": 'for=192.0.2.60;Host="[2001:db8::2]:9443";proto=https, host=b'}, "2001:db8::2", 9443),
        ({"host": "internal", "forwarded": "for=192.0.2.60;proto=https", "x-forwarded-host": "shop.example.com"}, "shop.example.com", None),
        ({":authority": "h2.example.com:8443", "host": "other"}, "h2.example.com", 8443),
        ({"host": ":8080"}, None, None),
    ],
)
def test_server_address_and_port_from_the_headers(headers, address, port):
    # HTTP server conventions, "Setting server.address and server.port": the first of
    # Forwarded#host, X-Forwarded-Host, :authority, Host, parsed into host and port.
    event = load("alb")
    event["headers"] = headers
    attributes = detect_trigger(event).attributes
    assert (attributes.get("server.address"), attributes.get("server.port")) == (address, port)


def test_server_address_falls_back_to_the_domain_name():
    event = load("apigw-http")
    event["headers"] = {"host": "[", "x-forwarded-port": "443"}
    attributes = detect_trigger(event).attributes
    assert (attributes["server.address"], attributes["server.port"]) == ("r3pmxmplak.execute-api.us-east-2.amazonaws.com", 443)


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
    # A key with no string value is never read: one that cannot be percent-encoded (a lone
    # surrogate) must not cost the event its trigger, its trace context or the other parameters.
    event["multiValueQueryStringParameters"] = {"\ud800": [], "q": ["1"], "\udfff": [None]}
    trigger = detect_trigger(event)
    assert (trigger.kind, trigger.attributes["url.query"]) == (APIGW_REST, "q=1")
    event["headers"]["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert choose_parent(detect_trigger(event).headers, None, None, None)[0].span_id == 0xB7AD6B7169203331


def test_apigw_http_raw_query_redacted_and_empty_omitted():
    # The keys of semantic conventions v1.44.0 (a SigV4 presigned URL's credential, session token
    # and signature, Azure's sig, Google's signature), in any case; other keys are kept.
    event = load("apigw-http")
    event["rawQueryString"] = "X-Amz-Signature=1&sig=abc&q=1&X-Amz-Credential=AKIA%2Fx&x-amz-security-token=t&X-Goog-Signature=g&X-Amz-Date=d"
    assert url_query(event) == "X-Amz-Signature=REDACTED&sig=REDACTED&q=1&X-Amz-Credential=REDACTED&x-amz-security-token=REDACTED&X-Goog-Signature=REDACTED&X-Amz-Date=d"
    event["rawQueryString"] = ""
    assert "url.query" not in detect_trigger(event).attributes


def test_apigw_http_routes():
    event = load("apigw-http")
    event["routeKey"] = "ANY /{proxy+}"
    trigger = detect_trigger(event)
    assert trigger.attributes["http.route"] == "/{proxy+}" and trigger.span_name == "POST /{proxy+}"
    event["routeKey"] = "$default"
    trigger = detect_trigger(event)
    assert "http.route" not in trigger.attributes and trigger.span_name == "POST"


def test_http_fallbacks_without_headers():
    # No headers: server.address from domainName, user agent and client from requestContext.
    event = load("apigw-http")
    event["headers"] = None
    attributes = detect_trigger(event).attributes
    assert attributes["server.address"] == "r3pmxmplak.execute-api.us-east-2.amazonaws.com"
    assert attributes["user_agent.original"].startswith("Mozilla/5.0")
    assert attributes["client.address"] == "198.51.100.23"
    assert "server.port" not in attributes  # X-Forwarded-Port was a header

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
    trigger = detect_trigger(event)
    assert trigger.attributes["http.request.method"] == "_OTHER"
    assert trigger.attributes["http.request.method_original"] == "PROPFIND"
    # The conventions name such spans "HTTP", never after the unknown method.
    assert trigger.span_name == "HTTP /orders/{orderId}/items"
    # Method names are case-sensitive in the conventions.
    event["requestContext"]["http"]["method"] = "get"
    assert detect_trigger(event).attributes["http.request.method"] == "_OTHER"


def test_query_method_is_known_on_server_and_client_spans_alike():
    # The conventions (v1.38 on) know the QUERY method (httpbis-safe-method-w-body).
    from lambdawrap.handler.outgoing import http_calls
    from lambdawrap.handler.triggers import http_request

    event = load("apigw-http")
    event["requestContext"]["http"]["method"] = "QUERY"
    trigger = detect_trigger(event)
    assert trigger.attributes["http.request.method"] == "QUERY" and "http.request.method_original" not in trigger.attributes
    assert trigger.span_name == "QUERY /orders/{orderId}/items"
    # One list for both sides: a method is never known to one and _OTHER to the other.
    assert http_calls.KNOWN_HTTP_METHODS is http_request.KNOWN_HTTP_METHODS


def test_function_url_vs_http_api_distinction():
    # GIVEN a 2.0 event on an HTTP API custom domain with "$default" route THEN apigw-http
    event = load("function-url")
    event["requestContext"]["domainName"] = "api.example.com"
    assert detect_trigger(event).kind == APIGW_HTTP
    # GIVEN an HTTP API event served on a lambda-url host THEN function-url, without a route
    event = load("apigw-http")
    event["requestContext"]["domainName"] = "abc.lambda-url.us-east-1.on.aws"
    trigger = detect_trigger(event)
    assert trigger.kind == FUNCTION_URL and "http.route" not in trigger.attributes


def test_http_api_payload_v1_is_rest_shaped():
    # HTTP APIs with payload format 1.0 send the REST shape.
    event = load("apigw-rest")
    event["version"] = "1.0"
    assert detect_trigger(event).kind == APIGW_REST


def test_lattice_v1_splits_the_raw_path():
    event = corpus.load("powertools-lambda-python/vpcLatticeEvent.json")
    event["raw_path"] = "/orders/7?expand=items&token=abc"
    event["headers"]["x-forwarded-proto"] = "http"
    trigger = detect_trigger(event)
    assert trigger.kind == VPC_LATTICE
    assert trigger.attributes["url.path"] == "/orders/7"
    assert trigger.attributes["url.scheme"] == "http"
    assert url_query(event) == "expand=items&token=REDACTED"
    # Without a query in raw_path, the parameters are used.
    event["raw_path"] = "/orders/7"
    assert detect_trigger(event).attributes["url.query"] == "order-id=1"


def test_lattice_v2_list_valued_headers_and_parameters():
    trigger = detect_trigger(corpus.load("powertools-lambda-python/vpcLatticeV2EventWithHeaders.json"))
    assert trigger.headers["header2"] == "value1, value2"
    assert trigger.attributes["url.query"] == "parameter1=value1&parameter1=value2&parameter2=value"
    assert "url.scheme" not in trigger.attributes  # the listener's scheme is not in the event
    assert trigger.attributes["lambdawrap.event_source.arn"].startswith("arn:aws:vpc-lattice:")


def test_cloudfront_request_headers_and_forwarded_scheme():
    event = corpus.load("aws-lambda-java-libs/cloudfront_event.json")
    request = event["Records"][0]["cf"]["request"]
    request["headers"]["traceparent"] = [{"key": "traceparent", "value": TRACEPARENT}]
    request["headers"]["cloudfront-forwarded-proto"] = [{"key": "CloudFront-Forwarded-Proto", "value": "https"}]
    request["headers"]["x-multi"] = [{"key": "X-Multi", "value": "a"}, {"key": "X-Multi", "value": "b"}, {"key": "X-Multi"}]
    event["Records"][0]["cf"]["config"]["eventType"] = "viewer-request"
    trigger = detect_trigger(event)
    assert trigger.kind == CLOUDFRONT and trigger.span_name == "GET"
    assert trigger.headers["traceparent"] == TRACEPARENT and trigger.headers["x-multi"] == "a, b"
    assert trigger.attributes["url.scheme"] == "https"
    assert trigger.attributes["lambdawrap.cloudfront.event_type"] == "viewer-request"


@pytest.mark.parametrize(
    "name, authorizer_type",
    [
        ("powertools-lambda-python/apiGatewayAuthorizerTokenEvent.json", "TOKEN"),
        ("powertools-lambda-python/apiGatewayAuthorizerRequestEvent.json", "REQUEST"),
        ("powertools-lambda-python/apiGatewayAuthorizerV2Event.json", "REQUEST"),
    ],
)
def test_authorizers_are_not_requests_to_answer_but_keep_their_headers(name, authorizer_type):
    event = corpus.load(name)
    trigger = detect_trigger(event)
    assert trigger.kind == "apigw-authorizer" and not trigger.is_http
    assert trigger.attributes == {"faas.trigger": "other", "lambdawrap.apigateway.authorizer.type": authorizer_type}
    assert trigger.span_name == "" and response_status_code(trigger, {"statusCode": 200}) is None
    if "headers" in event:  # REQUEST authorizers see the request's headers: the caller's context
        assert trigger.headers and all(name == name.lower() for name in trigger.headers)


def test_websocket_routes():
    event = corpus.load("datadog-lambda-python/api-gateway-websocket-connect.json")
    event["headers"]["traceparent"] = TRACEPARENT
    trigger = detect_trigger(event)
    assert trigger.kind == "apigw-websocket"
    assert trigger.attributes == {
        "faas.trigger": "other",
        "lambdawrap.apigateway.websocket.event_type": "CONNECT",
        "lambdawrap.apigateway.websocket.route_key": "$connect",
    }
    assert trigger.headers["traceparent"] == TRACEPARENT


# --- messaging --------------------------------------------------------------------------------


def test_sqs_sample():
    trigger = detect_trigger(load("sqs"))
    assert trigger.attributes == {
        "faas.trigger": "pubsub",
        "messaging.system": "aws_sqs",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "orders-queue",
        "messaging.batch.message_count": 3,
        "lambdawrap.event_source.arn": "arn:aws:sqs:us-east-1:123456789012:orders-queue",
    }
    assert (trigger.span_name, trigger.span_kind) == ("process orders-queue", CONSUMER)
    assert trigger.headers is None and not trigger.is_http and trigger.parent is None


def test_sqs_single_message_has_message_id_and_still_links():
    # An SQS event is a batch, even of one: its context is a link, as the Lambda conventions ask.
    event = load("sqs")
    event["Records"] = event["Records"][:1]
    trigger = detect_trigger(event)
    assert trigger.attributes["messaging.batch.message_count"] == 1
    assert trigger.attributes["messaging.message.id"] == "059f36b4-87a3-44ab-83d2-661975830a7d"
    assert len(trigger.links) == 1 and trigger.parent is None


def test_sqs_batch_from_several_queues_names_no_destination():
    event = load("sqs")
    event["Records"][-1]["eventSourceARN"] = "arn:aws:sqs:us-east-1:123456789012:other-queue"
    trigger = detect_trigger(event)
    assert "messaging.destination.name" not in trigger.attributes and trigger.span_name == "process"
    assert "lambdawrap.event_source.arn" not in trigger.attributes


def test_sns_sample():
    trigger = detect_trigger(load("sns"))
    # One message per invocation: no batch size, and its context is the parent.
    assert trigger.attributes == {
        "faas.trigger": "pubsub",
        "messaging.system": "aws.sns",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "order-events",
        "messaging.message.id": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
        "aws.sns.topic.arn": "arn:aws:sns:us-east-1:123456789012:order-events",
    }
    assert trigger.span_name == "process order-events"
    assert trigger.parent == SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB9C7C989F97918E1, True)
    assert trigger.links == []


def test_kinesis_sample():
    trigger = detect_trigger(load("kinesis"))
    assert trigger.attributes == {
        "faas.trigger": "pubsub",
        "messaging.system": "aws.kinesis",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "clickstream",
        "messaging.destination.partition.id": "shardId-000000000006",
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
    for record in event["Records"]:
        record["eventSourceARN"] = "not-an-arn"
    attributes = detect_trigger(event).attributes
    assert "messaging.destination.name" not in attributes and "lambdawrap.event_source.arn" not in attributes


def test_kafka_batch_over_several_partitions_and_topics():
    event = corpus.load("powertools-lambda-python/kafkaEventMsk.json")
    (key, records), = event["records"].items()
    event["records"]["mytopic-1"] = [dict(records[0], partition=1, offset=16)]
    trigger = detect_trigger(event)
    # Two partitions of one topic: the topic is named, no partition, no single-message fields.
    assert trigger.attributes["messaging.destination.name"] == "mytopic"
    assert trigger.attributes["messaging.batch.message_count"] == 2
    for absent in ("messaging.destination.partition.id", "messaging.kafka.offset", "messaging.kafka.message.key"):
        assert absent not in trigger.attributes
    event["records"]["othertopic-0"] = [dict(records[0], topic="othertopic")]
    trigger = detect_trigger(event)
    assert "messaging.destination.name" not in trigger.attributes and trigger.span_name == "process"


def test_a_batch_over_more_partitions_or_queues_than_are_read_is_counted_whole():
    # GIVEN batches of 600 records over 300 partitions (Kafka) and 300 queues (RabbitMQ): more
    # groups than detection reads (MAX_GROUPS)
    kafka = corpus.load("powertools-lambda-python/kafkaEventMsk.json")
    (record,) = next(iter(kafka["records"].values()))[:1]
    kafka["records"] = {f"mytopic-{i}": [dict(record, partition=i), dict(record, partition=i, offset=16)] for i in range(300)}
    rabbitmq = corpus.load("powertools-lambda-python/rabbitMQEvent.json")
    message = next(iter(rabbitmq["rmqMessagesByQueue"].values()))[0]
    rabbitmq["rmqMessagesByQueue"] = {f"q{i}::/": [message, message] for i in range(300)}
    # THEN each says its 600 records (before: those of the groups read, 512)
    for event in (kafka, rabbitmq):
        assert detect_trigger(event).attributes["messaging.batch.message_count"] == 600


@pytest.mark.parametrize("value", [None, "absent", "cmVjb3Jk"], ids=["null", "absent", "a value"])
def test_a_kafka_batch_s_one_tombstone_says_so(value):
    # GIVEN a batch of one record whose value Lambda gives as null, or leaves out (a tombstone)
    kafka = corpus.load("powertools-lambda-python/kafkaEventMsk.json")
    records = next(iter(kafka["records"].values()))
    del records[1:]
    (pipe_record,) = _pipe("pipes-msk")
    for record in (records[0], pipe_record):
        record.pop("value", None)
        if value != "absent":
            record["value"] = value
    # THEN its span says it is a tombstone, from an event source mapping or a Pipe alike (the
    # conventions require the attribute when it is true), and a record with a value is none
    for event, record in ((kafka, records[0]), ([pipe_record], pipe_record)):
        attributes = detect_trigger(event).attributes
        assert attributes.get("messaging.kafka.message.tombstone") is (None if value == "cmVjb3Jk" else True)
        assert attributes["messaging.kafka.offset"] == record["offset"]


@pytest.mark.parametrize("key, expected", [(base64.b64encode("clé".encode()).decode(), "clé"), (base64.b64encode(b"\xff\xfe").decode(), None), ("%%%", None), (None, None)])
def test_kafka_key_is_text_only_when_it_decodes_to_text(key, expected):
    event = corpus.load("powertools-lambda-python/kafkaEventMsk.json")
    next(iter(event["records"].values()))[0]["key"] = key
    assert detect_trigger(event).attributes.get("messaging.kafka.message.key") == expected


def test_rabbitmq_destination_is_the_queue():
    trigger = detect_trigger(corpus.load("powertools-lambda-python/rabbitMQEvent.json"))
    assert trigger.attributes["messaging.destination.name"] == "pizzaQueue"
    assert trigger.span_name == "process pizzaQueue"


def test_eventbridge_sample():
    trigger = detect_trigger(load("eventbridge"))
    assert trigger.attributes == {
        "faas.trigger": "pubsub",
        "messaging.system": "aws.eventbridge",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "lambdawrap.eventbridge.source": "aws.ec2",
        "lambdawrap.eventbridge.detail_type": "EC2 Instance State-change Notification",
    }
    # The event names no bus: a process span without a destination.
    assert (trigger.span_name, trigger.span_kind) == ("process", CONSUMER)


def _gzip_base64(document: str) -> str:
    return base64.b64encode(gzip.compress(document.encode())).decode()


def test_cloudwatch_logs_names_the_log_group_from_the_start_of_the_payload():
    events = [{"id": str(i), "timestamp": i, "message": "x" * 200} for i in range(5000)]
    document = json.dumps({"messageType": "DATA_MESSAGE", "owner": "1", "logGroup": "/aws/lambda/orders", "logStream": "s", "logEvents": events})
    trigger = detect_trigger({"awslogs": {"data": _gzip_base64(document)}})
    assert trigger.attributes["messaging.destination.name"] == "/aws/lambda/orders"
    assert trigger.span_name == "process /aws/lambda/orders"
    for garbage in ("not base64!", base64.b64encode(b"not gzip").decode(), _gzip_base64('{"logGroup": 5}'), ""):
        trigger = detect_trigger({"awslogs": {"data": garbage}})
        assert trigger.kind == "cloudwatch-logs" and "messaging.destination.name" not in trigger.attributes


# --- data sources -----------------------------------------------------------------------------


def test_s3_sample():
    trigger = detect_trigger(load("s3"))
    assert trigger.attributes == {
        "faas.trigger": "datasource",
        "faas.document.collection": "photo-uploads-123456789012",
        "faas.document.operation": "insert",
        "faas.document.time": "2024-03-13T09:15:42.315Z",
        # the event's key is URL-encoded ("+" for spaces); the document name is the real key
        "faas.document.name": "uploads/2024/summer vacation(1).jpg",
    }
    assert (trigger.span_name, trigger.span_kind) == ("", SERVER)  # named after the function


@pytest.mark.parametrize(
    "event_name, operation",
    [
        ("ObjectCreated:Put", "insert"),
        ("ObjectCreated:CompleteMultipartUpload", "insert"),
        ("ObjectRemoved:Delete", "delete"),
        ("ObjectRemoved:DeleteMarkerCreated", "delete"),
        # S3 Lifecycle expiring an object deletes it (or puts a delete marker on it), as
        # EventBridge's "Object Deleted" with reason "Lifecycle Expiration" says
        ("LifecycleExpiration:Delete", "delete"),
        ("LifecycleExpiration:DeleteMarkerCreated", "delete"),
        ("s3:LifecycleExpiration:Delete", "delete"),  # as the SDKs' samples spell newer types
        ("ObjectRestore:Completed", "edit"),
        ("ObjectRestore:Delete", "edit"),  # the restored copy expired: the object stays
        ("ObjectTagging:Put", "edit"),
        ("LifecycleTransition", "edit"),
        (None, "edit"),
    ],
)
def test_s3_operations(event_name, operation):
    event = load("s3")
    event["Records"][0]["eventName"] = event_name
    assert detect_trigger(event).attributes["faas.document.operation"] == operation


@pytest.mark.parametrize(
    "detail_type, operation",
    [("Object Created", "insert"), ("Object Deleted", "delete"), ("Object Restore Completed", "edit"), ("Object Tags Added", "edit")],
)
def test_s3_through_eventbridge(detail_type, operation):
    event = corpus.load("powertools-lambda-python/s3EventBridgeNotificationObjectCreatedEvent.json")
    event["detail-type"] = detail_type
    event["detail"]["object"]["key"] = "a+b%2Fc.txt"
    trigger = detect_trigger(event)
    assert trigger.kind == "s3" and trigger.attributes["faas.document.operation"] == operation
    assert trigger.attributes["faas.document.name"] == "a b/c.txt"
    # An S3 API call recorded by CloudTrail is an ordinary EventBridge event.
    event["detail-type"] = "AWS API Call via CloudTrail"
    assert detect_trigger(event).kind == "eventbridge"


def test_dynamodb_sample():
    trigger = detect_trigger(load("dynamodb"))
    assert trigger.attributes == {
        "faas.trigger": "datasource",
        "faas.document.collection": "Orders",
        "faas.document.operation": "insert",  # from the first record
        "faas.document.time": "2024-03-13T09:15:42Z",
        "db.system.name": "aws.dynamodb",
        "db.collection.name": "Orders",
        "aws.dynamodb.table_names": ["Orders"],
        "messaging.batch.message_count": 2,
        "lambdawrap.event_source.arn": "arn:aws:dynamodb:us-east-1:123456789012:table/Orders/stream/2024-03-01T00:00:00.000",
    }


@pytest.mark.parametrize("event_name, operation", [("INSERT", "insert"), ("MODIFY", "edit"), ("REMOVE", "delete"), ("TRUNCATE", "edit")])
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


def test_dynamodb_creation_time_in_milliseconds():
    event = load("dynamodb")
    event["Records"][0]["dynamodb"]["ApproximateCreationDateTime"] = 1710321342000
    assert detect_trigger(event).attributes["faas.document.time"] == "2024-03-13T09:15:42Z"


@pytest.mark.parametrize("operation_type, operation", [("insert", "insert"), ("update", "edit"), ("replace", "edit"), ("delete", "delete"), ("drop", "drop"), (None, "edit")])
def test_documentdb_operations(operation_type, operation):
    event = corpus.load("aws-lambda-rust-runtime/example-documentdb-insert-event.json")
    event["events"][0]["event"]["operationType"] = operation_type
    attributes = detect_trigger(event).attributes
    assert attributes["faas.document.operation"] == operation
    assert (attributes["faas.document.collection"], attributes["faas.document.name"]) == ("test_database", "test_collection")
    assert (attributes["db.namespace"], attributes["db.collection.name"]) == ("test_database", "test_collection")


def test_s3_object_lambda_reads_the_key_from_the_request_url():
    event = corpus.load("aws-lambda-go/s3-object-lambda-event-get-object-iam.json")
    event["userRequest"]["url"] = "https://my-ap-111122223333.s3-object-lambda.us-east-1.amazonaws.com/a%20b+c.txt?X-Amz-Security-Token=x"
    event["userRequest"]["headers"]["traceparent"] = TRACEPARENT
    trigger = detect_trigger(event)
    assert trigger.attributes == {
        "faas.trigger": "datasource",
        "faas.document.collection": "example-ap",
        "faas.document.operation": "read",
        "faas.document.name": "a b+c.txt",  # a URL path: "+" is a plus
    }
    assert trigger.headers["traceparent"] == TRACEPARENT


def test_the_longest_s3_keys_are_named_whole_in_notifications_and_object_lambda_urls():
    from urllib.parse import quote, quote_plus

    # GIVEN a key of 1,024 UTF-8 bytes (S3's limit), which S3 writes URL-encoded in 3,072
    # characters, and a key of 700 bytes of Japanese (2,093 characters)
    for key in ("注文/" + "あ" * 230 + ".pdf", "a/" + "é" * 510 + "b" * 2):
        assert len(key.encode()) <= 1024
        notification = load("s3")
        notification["Records"][0]["s3"]["object"]["key"] = quote_plus(key, safe="/")
        object_lambda = corpus.load("aws-lambda-go/s3-object-lambda-event-get-object-iam.json")
        object_lambda["userRequest"]["url"] = "https://my-ap-111122223333.s3-object-lambda.us-east-1.amazonaws.com/" + quote(key) + "?X-Amz-Security-Token=" + "t" * 1500
        # THEN each names the real key (before: cut inside an escape, ending in "\ufffd%")
        assert detect_trigger(notification).attributes["faas.document.name"] == key
        assert detect_trigger(object_lambda).attributes["faas.document.name"] == key


# --- timers and other services ----------------------------------------------------------------


def test_schedule_sample():
    trigger = detect_trigger(load("schedule"))
    assert trigger.attributes == {
        "faas.trigger": "timer",
        "faas.time": "2024-03-13T09:00:00Z",
        "lambdawrap.event_source.arn": "arn:aws:events:us-east-1:123456789012:rule/nightly-report",
    }
    assert (trigger.span_name, trigger.span_kind) == ("", SERVER)


def test_eventbridge_scheduler_is_a_timer_but_its_api_calls_are_events():
    event = corpus.load("assembled/eventbridge-scheduler.json")
    assert detect_trigger(event).attributes["faas.trigger"] == "timer"
    event["detail-type"] = "AWS API Call via CloudTrail"
    assert detect_trigger(event).kind == "eventbridge"


def test_config_rule_periodic_or_on_a_change():
    periodic = detect_trigger(corpus.load("powertools-lambda-python/awsConfigRuleScheduled.json"))
    assert periodic.kind == CONFIG and periodic.attributes["faas.trigger"] == "timer"
    assert periodic.attributes["faas.time"] == "2023-04-27T13:26:17.741Z"
    change = detect_trigger(corpus.load("powertools-lambda-python/awsConfigRuleConfigurationChanged.json"))
    assert change.kind == CONFIG and change.attributes == {"faas.trigger": "other", "lambdawrap.config.rule_name": "MyRule"}
    broken = corpus.load("powertools-lambda-python/awsConfigRuleScheduled.json")
    broken["invokingEvent"] = '{"messageType":"ScheduledNotification", broken'
    assert "faas.time" not in detect_trigger(broken).attributes


def test_secrets_manager_secret_arn_only_when_it_is_one():
    event = corpus.load("powertools-lambda-python/secretsManagerEvent.json")
    assert detect_trigger(event).attributes["aws.secretsmanager.secret.arn"].startswith("arn:aws:secretsmanager:")
    event["SecretId"] = "prod/db"
    assert "aws.secretsmanager.secret.arn" not in detect_trigger(event).attributes


def test_s3_batch_names_the_bucket_in_both_schemas():
    v1 = detect_trigger(corpus.load("powertools-lambda-python/s3BatchOperationEventSchemaV1.json"))
    v2 = detect_trigger(corpus.load("powertools-lambda-python/s3BatchOperationEventSchemaV2.json"))
    assert v1.attributes == v2.attributes == {
        "faas.trigger": "other",
        "aws.s3.bucket": "powertools-dataset",
        "aws.s3.key": "prefix/dataset/dataset.20231222.json.gz",
        "lambdawrap.s3_batch.job.id": "f3cc4f60-61f6-4a2b-8a21-d07600c373ce",
    }


def test_appsync_root_fields_name_the_operation_type():
    event = corpus.load("powertools-lambda-python/appSyncDirectResolver.json")
    assert detect_trigger(event).attributes["graphql.operation.type"] == "mutation"
    event["info"]["parentTypeName"] = "Post"
    assert "graphql.operation.type" not in detect_trigger(event).attributes
    # An AppSync batch resolver hands over a list of such events.
    batch = corpus.load("powertools-lambda-python/appSyncBatchEvent.json")
    assert isinstance(batch, list) and detect_trigger(batch).kind == "appsync"


def test_eventbridge_pipe_batch_is_its_source():
    # An EventBridge Pipe hands its target the source's records as a JSON array.
    records = load("sqs")["Records"]
    assert detect_trigger(records).kind == SQS


def _pipe(name: str) -> list:
    return corpus.load(f"awsdocs-eventbridge-user-guide/{name}.json")


def test_an_eventbridge_pipe_s_kafka_batches_name_what_the_whole_batch_shares():
    # The Pipes guide's MSK sample: flat records, "partition" a string.
    (record,) = _pipe("pipes-msk")
    two_partitions = [record, dict(record, partition=1, offset=16)]
    trigger = detect_trigger(two_partitions)
    assert trigger.attributes["messaging.destination.name"] == "mytopic"
    assert trigger.attributes["messaging.batch.message_count"] == 2
    for absent in ("messaging.destination.partition.id", "messaging.kafka.offset", "messaging.message.id"):
        assert absent not in trigger.attributes
    # the event source mapping's records write the partition as a number: the same attribute
    assert detect_trigger([dict(record, partition=3)]).attributes["messaging.destination.partition.id"] == "3"
    for odd in ("-1", "zero", None, True, [0], "9" * 40):
        assert "messaging.destination.partition.id" not in detect_trigger([dict(record, partition=odd)]).attributes
    trigger = detect_trigger([record, dict(record, topic="other")])
    assert "messaging.destination.name" not in trigger.attributes and trigger.span_name == "process"
    key = base64.b64encode(b"order-7").decode()
    assert detect_trigger([dict(record, key=key)]).attributes["messaging.kafka.message.key"] == "order-7"


def test_an_eventbridge_pipe_s_mq_batches():
    activemq = _pipe("pipes-activemq")
    attributes = detect_trigger(activemq).attributes
    assert (attributes["messaging.system"], attributes["messaging.destination.name"], attributes["messaging.batch.message_count"]) == ("activemq", "testQueue", 2)
    one = detect_trigger(activemq[:1]).attributes
    assert one["messaging.message.id"].startswith("ID:b-9bcfa592")
    # a property carrying a context is read as an event source mapping's message's is
    trigger = detect_trigger([dict(activemq[0], properties={"traceparent": TRACEPARENT})])
    assert trigger.links == [parse_traceparent(TRACEPARENT)]
    rabbitmq = _pipe("pipes-rabbitmq")
    trigger = detect_trigger(rabbitmq + [dict(rabbitmq[0], eventSourceKey="other::/")])
    assert "messaging.destination.name" not in trigger.attributes
    properties = dict(rabbitmq[0]["basicProperties"], messageId="m-1", correlationId="c-1")
    attributes = detect_trigger([dict(rabbitmq[0], basicProperties=properties)]).attributes
    assert (attributes["messaging.message.id"], attributes["messaging.message.conversation_id"]) == ("m-1", "c-1")


@pytest.mark.parametrize("source", ["aws:kafka", "SelfManagedKafka", "aws:amq", "aws:rmq"])
def test_an_eventbridge_pipe_s_odd_records_are_still_its_source(source):
    # Nulls, missing keys and wrong types where the samples have values: recognised, nothing
    # made up, never raising.
    for record in ({"eventSource": source}, {"eventSource": source, "topic": None, "partition": None, "headers": None, "destination": [], "basicProperties": "x", "eventSourceKey": 7, "eventSourceArn": None}):
        for batch in ([record], [record, None, 5, "x"], [record] * 10_000):
            trigger = detect_trigger(batch)
            assert_valid_trigger(trigger)
            assert trigger.attributes["messaging.batch.message_count"] == len(batch)
            assert "messaging.destination.name" not in trigger.attributes and trigger.links == []


def test_other_sample_and_non_events():
    for event in (load("other"), None, 0, "x", [], [{"Records": []}], {"Records": []}, {}, [1, 2]):
        trigger = detect_trigger(event)
        assert trigger == Trigger(OTHER, {"faas.trigger": "other"})


@pytest.mark.parametrize(
    "payload, parent, state, baggage",
    [
        # OpenTelemetry's botocore instrumentation injects a Lambda Invoke's context into
        # "headers", its baggage too (before: dropped)
        ({"order": 7, "headers": {"traceparent": TRACEPARENT, "tracestate": "a=b", "baggage": "tenant=acme"}}, TRACEPARENT, "a=b", "tenant=acme"),
        # the payload's own context comes first
        ({"traceparent": TRACEPARENT, "headers": {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "baggage": "k=v"}}, TRACEPARENT, None, None),
        ({"headers": {"traceparent": "not one", "tracestate": "a=b", "baggage": "k=v"}}, None, None, None),
        ({"headers": {"Traceparent": TRACEPARENT}}, None, None, None),  # a propagator writes it lowercase
        ({"headers": [TRACEPARENT]}, None, None, None),
    ],
)
def test_other_payload_s_headers_carry_its_context(payload, parent, state, baggage):
    trigger = detect_trigger(payload)
    assert trigger.kind == OTHER
    assert (trigger.parent, trigger.parent_state, trigger.parent_baggage) == (parse_traceparent(parent), state, baggage)


def test_other_attributes_are_not_shared():
    first = detect_trigger(None)
    first.attributes["x"] = 1
    assert detect_trigger(None).attributes == {"faas.trigger": "other"}


# --- bounded work -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _big_events() -> dict:
    """Events of about 6 MB (Lambda's payload limit), shaped like each source's."""
    sqs = load("sqs")
    one = dict(sqs["Records"][1], body="b" * 600)  # a message without context
    kinesis = load("kinesis")
    record = kinesis["Records"][0]
    kafka = corpus.sample("kafka")
    kafka_record = next(iter(kafka["records"].values()))[0]
    rest = load("apigw-rest")
    s3 = load("s3")
    s3["Records"][0]["s3"]["object"]["key"] = "%41" * 2_000_000
    eventbridge = load("eventbridge")
    eventbridge["detail"] = {"blob": "e" * 6_000_000, "traceparent": TRACEPARENT}
    edge = corpus.load("aws-lambda-java-libs/cloudfront_event.json")
    edge["Records"][0]["cf"]["request"]["headers"] = {f"h{i}": [] for i in range(500_000)}
    return {
        "10,000 SQS messages": dict(sqs, Records=[one] * 10_000),
        "one 6 MB SQS message": dict(sqs, Records=[dict(one, body="b" * 6_000_000 + json.dumps({"traceparent": TRACEPARENT}))]),
        "10,000 Kinesis records": dict(kinesis, Records=[dict(record, kinesis=dict(record["kinesis"], data="QUJD" * 150))] * 10_000),
        "10,000 Kafka partitions": dict(kafka, records={f"t-{i}": [kafka_record] for i in range(10_000)}),
        # An EventBridge Pipe's flat records, each with a context of its own (none repeated).
        "10,000 Kafka records from a Pipe": [
            dict(_pipe("pipes-msk")[0], headers=[{"x": [1] * 200}] * 31 + [{"traceparent": list(f"00-{i + 1:032x}-{i + 1:016x}-01".encode())}]) for i in range(10_000)
        ],
        "100,000 headers and parameters": dict(rest, headers={f"h{i}": "v" for i in range(100_000)}, multiValueQueryStringParameters={f"q{i}": ["v"] for i in range(100_000)}),
        # Every value to percent-encode: 17 MB of query, of which the attribute keeps 4 KB.
        "256 x 256 multi-value parameters": dict(rest, multiValueQueryStringParameters={f"k{i}": [" " * 85] * 256 for i in range(256)}),
        "256 x 256 multi-value headers": dict(load("alb"), headers={}, multiValueHeaders={f"h{i}": [" " * 85] * 256 for i in range(256)}),
        "256 x 256 multi-value parameters, as ALB sends them": dict(load("alb"), multiValueQueryStringParameters={f"k{i}": ["%20" * 30] * 256 for i in range(256)}),
        "10,000 DynamoDB records": dict(load("dynamodb"), Records=load("dynamodb")["Records"] * 5_000),
        "a 6 MB S3 key": s3,
        "a 6 MB EventBridge detail": eventbridge,
        "a 6 MB CloudWatch Logs payload": {"awslogs": {"data": "H4sI" + "A" * 6_000_000}},
        # Lambda@Edge headers are lists of {key, value}: 500,000 names without a value.
        "500,000 CloudFront headers without values": edge,
    }


@pytest.mark.parametrize("name", sorted(_big_events()))
def test_a_6_mb_event_costs_what_a_small_one_does(name):
    # What is read of an event is capped (messages scanned, headers, text windows, string
    # lengths), so detection of the largest event Lambda delivers stays in the microseconds of a
    # small one. The bound is loose (a shared CI machine), the uncapped cost is seconds.
    import time

    event = _big_events()[name]
    assert_valid_trigger(detect_trigger(event))
    cost = min(_timed(time.perf_counter, detect_trigger, event) for _ in range(3))
    assert cost < 0.05, f"{name}: {cost * 1000:.1f} ms"


def _query_prefix_cases() -> list:
    many = {f"k{i}": [" v&é" * 40] * 256 for i in range(256)}
    return [
        ("many values to encode", many, True),
        ("values as received", {f"k{i}": ["%20x" * 50] * 256 for i in range(256)}, False),
        ("one value longer than the attribute", {"a": ["1"], "long": ["é " * 10_000], "z": ["2"]}, True),
        ("a key longer than the attribute", {"k" * 9_000: ["v"], "z": ["2"]}, True),
        ("just under the limit", {"a": ["x" * 4_000], "b": ["y" * 93]}, True),
        ("just over the limit", {"a": ["x" * 4_000], "b": ["y" * 94], "c": ["z"]}, True),
    ]


@pytest.mark.parametrize("case", [case[0] for case in _query_prefix_cases()])
def test_a_rebuilt_query_is_the_whole_querys_first_4096_characters(case):
    # The query is built only until it fills the attribute, and what is built is the start of
    # the whole query (urlencode's, with spaces as %20): the cap costs no character.
    from urllib.parse import quote, urlencode

    from lambdawrap.handler.invocation import MAX_ATTRIBUTE_CHARS

    _, parameters, encode = next(c for c in _query_prefix_cases() if c[0] == case)
    event = load("apigw-rest" if encode else "alb")
    event["multiValueQueryStringParameters"] = parameters
    whole = urlencode(parameters, doseq=True, quote_via=quote) if encode else "&".join(f"{k}={v}" for k, vs in parameters.items() for v in vs)
    assert detect_trigger(event).attributes["url.query"] == whole[:MAX_ATTRIBUTE_CHARS]
    assert url_query(event) == whole[:MAX_ATTRIBUTE_CHARS]


def _timed(clock, function, argument) -> float:
    started = clock()
    function(argument)
    return clock() - started


# --- response status codes --------------------------------------------------------------------

STATUS_FIELD = {kind: "status" if kind == CLOUDFRONT else "statusCode" for kind in HTTP_KINDS}


@pytest.mark.parametrize("kind", sorted(HTTP_KINDS))
@pytest.mark.parametrize(
    "value, expected",
    [
        (201, 201),
        ("404", 404),
        (" 503 ", 503),
        (200.0, 200),
        (200.5, None),
        (True, None),
        ("abc", None),
        ("２００", None),
        ("-200", None),
        (42, None),
        (1000, None),
        (None, None),
        # DynamoDB's numbers: the runtime writes a Decimal as its number (before: no status)
        (Decimal("503"), 503),
        (Decimal("2.01E+2"), 201),
        (Decimal("200.5"), None),
        (Decimal("NaN"), None),
        (Decimal("Infinity"), None),
    ],
)
def test_status_code_from_dict(kind, value, expected):
    # API Gateway, ALB, function URLs and Lattice answer with statusCode; CloudFront with status.
    trigger = detect_trigger(load(kind))
    assert response_status_code(trigger, {STATUS_FIELD[kind]: value, "body": ""}) == expected


@pytest.mark.parametrize("kind", sorted(HTTP_KINDS))
def test_status_code_of_a_named_tuple_the_runtime_writes_as_an_object(kind):
    # GIVEN a handler returning a named tuple, which awslambdaric's encoder writes as an object
    Response = collections.namedtuple("Response", [STATUS_FIELD[kind], "body"])
    trigger = detect_trigger(load(kind))
    # THEN its status code is the client's (before: none, or 200 inferred for payload 2.0)
    assert response_status_code(trigger, Response(503, "down")) == 503
    # ... and one without the field is a body, as a dict without it is
    Other = collections.namedtuple("Other", ["message"])
    assert response_status_code(trigger, Other("hi")) == response_status_code(trigger, {"message": "hi"})


class _Interrupted(BaseException):
    pass


class _GuardedBytes(bytes):
    """Bytes whose own methods raise what no `except Exception` catches: the runtime posts their
    buffer and runs none of them."""

    def __len__(self):
        raise _Interrupted("__len__ ran")

    def decode(self, *args, **kwargs):
        raise _Interrupted("decode ran")

    def __getitem__(self, index):
        raise _Interrupted("__getitem__ ran")


def test_a_bytes_response_of_the_function_s_own_class_is_read_without_running_its_code():
    from lambdawrap.handler.redact import payload_text
    from lambdawrap.handler.response_posted import _deliverable, _size

    # GIVEN an HTTP API's response given as bytes of the function's own class
    trigger = detect_trigger(load("apigw-http"))
    response = _GuardedBytes(b'{"statusCode": 503, "body": "down"}')
    # WHEN lambdawrap reads its status, its size and (capturing payloads) its text THEN none of
    # its methods run, and each reads what the runtime posts (before: they ran, and their
    # BaseException escaped into the runtime)
    assert response_status_code(trigger, response) == 503
    assert _deliverable(response) is True and _size(response) == len(bytes(memoryview(response)))
    assert json.loads(payload_text(response)) == {"statusCode": 503, "body": "down"}


@pytest.mark.parametrize("kind", sorted(HTTP_KINDS))
def test_status_code_of_json_bytes_the_runtime_posts_as_they_are(kind):
    # GIVEN a handler returning JSON bytes (orjson.dumps): awslambdaric posts them as they are,
    # and the service reads the status from them (before: none, or 200 inferred for payload 2.0)
    trigger = detect_trigger(load(kind))
    assert response_status_code(trigger, json.dumps({STATUS_FIELD[kind]: 503, "body": "down"}).encode()) == 503
    assert response_status_code(trigger, b'{"%s": "404"}' % STATUS_FIELD[kind].encode()) == 404
    # ... bytes that are not JSON, or too long to parse, give no status rather than a guess
    assert response_status_code(trigger, b"<html>not json</html>") is None
    assert response_status_code(trigger, b'{"%s": 503, "body": "%s"}' % (STATUS_FIELD[kind].encode(), b"x" * MAX_PARSED_RESPONSE_BYTES)) is None


@pytest.mark.parametrize("response", [None, "hello", {"message": "ok"}, [1, 2], 7, b'"hello"', b'{"message": "ok"}', object()])
def test_status_code_inferred_200_for_payload_v2(response):
    # HTTP APIs and function URLs treat a response without statusCode as the body of a 200.
    for kind in (APIGW_HTTP, FUNCTION_URL):
        assert response_status_code(detect_trigger(load(kind)), response) == 200
    # The others do not infer anything.
    for kind in sorted(HTTP_KINDS - {APIGW_HTTP, FUNCTION_URL}):
        assert response_status_code(detect_trigger(load(kind)), response) is None


@pytest.mark.parametrize("kind", sorted(set(KINDS) - HTTP_KINDS))
def test_status_code_none_for_non_http(kind):
    trigger = detect_trigger(load(kind))
    assert response_status_code(trigger, {"statusCode": 200}) is None
    assert response_status_code(trigger, None) is None


@pytest.fixture
def failures():
    """lambdawrap's failure count in this process, as it was again after the test."""
    from lambdawrap.handler.invocation import FAILURES

    count, by_kind = FAILURES.count, dict(FAILURES.by_kind)
    yield FAILURES
    FAILURES.count, FAILURES.by_kind = count, by_kind


def test_status_code_never_raises_on_bad_trigger(failures):
    before = failures.count
    assert response_status_code(None, {"statusCode": 200}) is None  # type: ignore[arg-type]
    assert response_status_code("apigw-http", {}) is None  # type: ignore[arg-type]
    # a caller's mistake is lambdawrap's failure: counted, not taken for a response without status
    assert failures.count == before + 2


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
def test_hostile_objects_never_raise(event, failures):
    trigger = detect_trigger(event)
    assert_valid_trigger(trigger)
    assert response_status_code(trigger, ExplodingDict()) in (None, 200)


def test_a_recogniser_that_raises_is_counted_as_lambdawrap_s_failure(failures):
    # GIVEN an object that raises wherever it is read (a Python object: the runtime hands over
    # JSON values, on which no recogniser raises, as tests/test_fuzz.py holds them to)
    before = failures.count
    # WHEN it is recognised THEN it is "other", and the failure is counted and named, as every
    # failure of lambdawrap's own is (before: taken silently for an event nothing recognises)
    assert detect_trigger(ExplodingDict()) == triggers.trigger.other()
    assert failures.count == before + 1 and "recognising the event" in failures.by_kind


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
    "eventSource", "EventSource", "eventSourceARN", "eventSourceArn", "Sns", "TopicArn", "s3",
    "bucket", "object", "key", "name", "eventName", "dynamodb", "ApproximateCreationDateTime",
    "source", "detail-type", "detail", "time", "methodArn", "routeArn", "messageId", "MessageId",
    "statusCode", "status", "connectionId", "eventType", "serviceNetworkArn", "targetGroupArn",
    "method", "raw_path", "cf", "config", "request", "uri", "querystring", "records", "topic",
    "partition", "offset", "deliveryStreamArn", "messages", "destination", "physicalName",
    "rmqMessagesByQueue", "basicProperties", "events", "event", "ns", "operationType", "awslogs",
    "data", "triggerSource", "userPoolId", "info", "fieldName", "parentTypeName", "arguments",
    "RequestType", "ResponseURL", "Step", "SecretId", "invokingEvent", "configRuleName",
    "CodePipeline.job", "agent", "actionGroup", "invocationSchemaVersion", "tasks", "userRequest",
    "getObjectContext", "protocolData", "clickType", "serialNumber", "alarmData", "alarmArn",
    "_lambdawrap", "traceparent", "messageAttributes", "body",
]
KNOWN_VALUES = [
    "2.0", "aws:sqs", "aws:sns", "aws:s3", "aws:dynamodb", "aws:kinesis", "aws.events",
    "aws.scheduler", "aws.s3", "Object Created", "aws.cloudwatch", "aws:kafka", "SelfManagedKafka",
    "aws:mq", "aws:amq", "aws:docdb", "aws:ses", "aws:codecommit", "CONNECT", "Query",
    "Scheduled Event", "GET", "x.lambda-url.us-east-1.on.aws", "$default", "GET /a/{b}",
    "arn:aws:sqs:us-east-1:1:q", "arn:aws:dynamodb:us-east-1:1:table/T/stream/x",
    "arn:aws:kinesis:us-east-1:1:stream/s", "ObjectCreated:Put", "INSERT", "a%2", "+", "",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", '{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}',
    "ScheduledNotification", '{"messageType":"ScheduledNotification"}',
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


def test_modules_import_only_cheap_stdlib():
    # The handler side must not pull in third-party packages, nor slow stdlib ones (dataclasses
    # cost cold start; typing only under TYPE_CHECKING).
    package = Path(triggers.__file__).parent
    sources = sorted(package.glob("*.py")) + [package.parent / "message_context.py", package.parent / "trace_context.py"]
    allowed = {"__future__", "binascii", "collections", "itertools", "json", "re", "time", "typing", "urllib", "zlib"}
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed or name == "lambdawrap.handler" or name.startswith(("lambdawrap.handler.", "lambdawrap.shared.")), (source.name, name)


def test_each_module_of_the_package_stays_small():
    for source in Path(triggers.__file__).parent.glob("*.py"):
        assert len(source.read_text().splitlines()) <= 400, source.name


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
