"""Invocation spans of HTTP and messaging events end to end: the emulator with the layer, the
real awslambdaric and the real OTLP receiver. test_triggers.py pins the rules one by one in the
function's process; these check what is exported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_function
from support.stack import EVENTS, instrumented

CORPUS = Path(__file__).resolve().parent / "events"

APP = """
def handler(event, context):
    return {"statusCode": 200, "body": "ok"}
"""


@pytest.fixture
def task(tmp_path: Path) -> Path:
    return write_function(tmp_path / "task", APP)


def event(name: str, **changes) -> dict:
    loaded = json.loads((EVENTS / f"{name}.json").read_text())
    loaded.update(changes)
    return loaded


def exported(events: list, task: Path) -> list:
    """The invocation span each event became, in order."""
    with instrumented(task) as (emu, rx):
        results = [emu.invoke(e) for e in events]
        assert [r.function_error for r in results] == [None] * len(events)
        return [rx.wait_for_spans(lambda s, r=r: s["attributes"].get("faas.invocation_id") == r.request_id, timeout=20)[0] for r in results]


def test_the_query_method_is_named_as_the_conventions_know_it(task):
    # GIVEN an HTTP API request with the QUERY method (HTTP semantic conventions v1.38 on)
    request = event("apigw-http")
    request["requestContext"]["http"]["method"] = "QUERY"
    # WHEN it is handled THEN the span is named after it and records it as it is
    (span,) = exported([request], task)
    assert span["name"] == "QUERY /orders/{orderId}/items"
    assert span["attributes"]["http.request.method"] == "QUERY" and "http.request.method_original" not in span["attributes"]


def test_server_address_and_port_are_parsed_from_the_host_header(task):
    # GIVEN requests to a load balancer listening on 8080 (the client sends the port in Host, the
    # load balancer passes Host on as received), one through a proxy that names the original host
    on_8080 = event("alb")
    on_8080["headers"].update({"host": "internal-search-alb-1234567890.us-east-1.elb.amazonaws.com:8080", "x-forwarded-port": "8080"})
    proxied = event("alb")
    proxied["headers"].update({"host": "internal:8080", "forwarded": 'for=192.0.2.60;host="[2001:db8::1]:8443"'})
    # WHEN they are handled THEN server.address is the host alone and server.port the port
    spans = exported([on_8080, proxied], task)
    assert [(s["attributes"]["server.address"], s["attributes"]["server.port"]) for s in spans] == [
        ("internal-search-alb-1234567890.us-east-1.elb.amazonaws.com", 8080),
        ("2001:db8::1", 8443),
    ]


def test_an_offset_outside_int64_is_left_out_without_breaking_the_export(task):
    # GIVEN a Kafka record whose offset OTLP cannot carry (int_value is int64): 2**64
    record_event = json.loads((CORPUS / "aws-lambda-go" / "kafka-event.json").read_text())
    topic, records = next(iter(record_event["records"].items()))
    record_event["records"] = {topic: [dict(records[0], offset=2**64)]}
    with instrumented(task) as (emu, rx):
        # WHEN it is handled, twice
        results = [emu.invoke(record_event) for _ in range(2)]
        spans = [rx.wait_for_spans(lambda s, r=r: s["attributes"].get("faas.invocation_id") == r.request_id, timeout=20)[0] for r in results]
        assert emu.wait_idle()
        extension_output = "\n".join(emu.log_lines("extension"))
    # THEN each span is exported with its other attributes, without the offset, and the
    # companion said nothing about it (the encoder's traceback came with every span)
    assert [r.function_error for r in results] == [None, None]
    for span in spans:
        assert span["attributes"]["messaging.system"] == "kafka" and span["attributes"]["messaging.kafka.message.key"]
        assert "messaging.kafka.offset" not in span["attributes"]
    assert "Traceback" not in extension_output and "Failed to encode" not in extension_output, extension_output


KNOWN_METHODS_APP = """
import urllib.request

def handler(event, context):
    for method in ("GET", "PUT"):
        request = urllib.request.Request(event["headers"]["x-target"] + "/status/200", method=method, data=b"x" if method == "PUT" else None)
        urllib.request.urlopen(request, timeout=5).read()
    return {"statusCode": 200, "body": "ok"}
"""


def test_the_known_methods_can_be_replaced_as_the_conventions_require(tmp_path):
    from support.local_servers import recording_server

    # GIVEN a function whose HTTP methods include PURGE, configured as the only methods besides GET
    task = write_function(tmp_path / "task", KNOWN_METHODS_APP)
    env = {"OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS": "GET,PURGE"}
    with recording_server() as server, instrumented(task, env=env) as (emu, rx):
        purge, post = event("apigw-http"), event("apigw-http")
        for request, method in ((purge, "PURGE"), (post, "POST")):
            request["requestContext"]["http"]["method"] = method
            request["headers"]["x-target"] = server.url
        # WHEN a PURGE and a POST arrive, each making a GET and a PUT call
        results = [emu.invoke(request) for request in (purge, post)]
        assert [r.function_error for r in results] == [None, None], [r.body for r in results]
        spans = [rx.wait_for_spans(lambda s, r=r: s["attributes"].get("faas.invocation_id") == r.request_id, timeout=20)[0] for r in results]
        calls = rx.wait_for_spans(lambda s: s["kind"] == 3 and s["attributes"].get("url.full", "").startswith(server.url), count=4, timeout=20)
    # THEN PURGE is recorded as it is, and POST and PUT, no longer in the list, are _OTHER, on
    # server and client spans alike
    assert (spans[0]["name"], spans[0]["attributes"]["http.request.method"]) == ("PURGE /orders/{orderId}/items", "PURGE")
    assert (spans[1]["name"], spans[1]["attributes"]["http.request.method"], spans[1]["attributes"]["http.request.method_original"]) == ("HTTP /orders/{orderId}/items", "_OTHER", "POST")
    assert sorted((c["name"], c["attributes"]["http.request.method"], c["attributes"].get("http.request.method_original")) for c in calls) == [("GET", "GET", None)] * 2 + [("HTTP", "_OTHER", "PUT")] * 2


def test_a_message_s_tracestate_stays_with_the_context_it_came_beside(task):
    # GIVEN an SNS message and an EventBridge event carrying a context as lambdawrap's producers
    # write it: a traceparent and, beside it, a tracestate
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    sns = event("sns")
    sns["Records"][0]["Sns"]["MessageAttributes"] = {"traceparent": {"Type": "String", "Value": traceparent}, "tracestate": {"Type": "String", "Value": state}}
    eventbridge = event("eventbridge")
    eventbridge["detail"] = dict(eventbridge.get("detail") or {}, _lambdawrap={"traceparent": traceparent, "tracestate": state})
    # WHEN they are handled THEN each span continues the message's trace with its tracestate
    for span in exported([sns, eventbridge], task):
        assert (span["trace_id"], span["parent_span_id"], span["trace_state"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", state)


def test_a_payload_s_headers_parent_the_span_as_opentelemetry_s_botocore_instrumentation_writes_them(task):
    # GIVEN a direct invocation as OpenTelemetry's botocore instrumentation (Python) sends a Lambda
    # Invoke: the caller's context injected into the payload's "headers" object, where
    # OpenTelemetry's Lambda instrumentations read it (instrumentation/botocore/extensions/lmbd.py)
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    state = "congo=t61rcWkgMzE"
    payload = {"order": 7, "headers": {"traceparent": caller, "tracestate": state}}
    # the platform's X-Ray context: the function's own segment (active tracing), then tracing off
    xray = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    with instrumented(task) as (emu, rx):
        # WHEN it is invoked with each
        results = [emu.invoke(payload, trace_header=xray), emu.invoke(payload)]
        assert [r.function_error for r in results] == [None, None]
        spans = [rx.wait_for_spans(lambda s, r=r: s["attributes"].get("faas.invocation_id") == r.request_id, timeout=20)[0] for r in results]
    # THEN each span continues the caller's trace as its child, with its tracestate; the sampled
    # X-Ray context the function ran in is a link
    for span in spans:
        assert (span["trace_id"], span["parent_span_id"], span["trace_state"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", state)
    assert [[(link["trace_id"], link["span_id"]) for link in span["links"]] for span in spans] == [[("5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8")], []]


def test_a_malformed_traceparent_does_not_hide_the_context_the_event_carries_elsewhere(task):
    # GIVEN an SQS message whose sender set a malformed traceparent attribute, and which AWS
    # marked with the X-Ray context of its traced sender (AWSTraceHeader); and an SNS message
    # with a malformed traceparent attribute (and a tracestate beside it) whose body carries
    # lambdawrap's context
    sqs = json.loads((CORPUS / "assembled" / "sqs-malformed-traceparent-xray-header.json").read_text())
    sns = json.loads((CORPUS / "assembled" / "sns-malformed-traceparent-message-context.json").read_text())
    # and a direct invocation's payload whose _lambdawrap key holds a bad value beside a valid
    # top-level traceparent
    payload = {"order": 7, "_lambdawrap": {"traceparent": "00-bad", "tracestate": "lw=1"}, "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    # WHEN they are handled
    sqs_span, sns_span, payload_span = exported([sqs, sns, payload], task)
    # THEN the SQS span links to the sender's X-Ray trace, and the SNS span continues the body's
    # context, without the tracestate that came beside the bad attribute
    assert [(link["trace_id"], link["span_id"]) for link in sqs_span["links"]] == [("5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8")]
    assert (sns_span["trace_id"], sns_span["parent_span_id"], sns_span["trace_state"]) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "")
    assert (payload_span["trace_id"], payload_span["parent_span_id"], payload_span["trace_state"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "")


def test_an_eventbridge_pipe_s_kafka_mq_and_kinesis_batches_are_their_sources(task):
    # GIVEN the JSON arrays an EventBridge Pipe hands a Lambda target from Amazon MSK, RabbitMQ
    # and Kinesis (the Pipes guide's samples), their records carrying their producers' context
    names = ("pipes-msk-traceparent-header", "pipes-rabbitmq-traceparent-header", "pipes-kinesis-data-traceparent")
    batches = [json.loads((CORPUS / "assembled" / f"{name}.json").read_text()) for name in names]
    # WHEN they are handled THEN each is a consumer span of its source, linked to each context
    spans = exported(batches, task)
    got = [(s["attributes"]["lambdawrap.trigger"], s["name"], s["kind"], [(link["trace_id"], link["span_id"]) for link in s["links"]]) for s in spans]
    producer = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert got == [
        ("kafka", "process mytopic", 5, [producer]),
        ("rabbitmq", "process pizzaQueue", 5, [producer]),
        ("kinesis", "process lambda-stream", 5, [producer, ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")]),
    ]
    assert spans[0]["attributes"]["messaging.destination.partition.id"] == "0" and spans[0]["attributes"]["messaging.system"] == "kafka"


def test_a_payload_s_top_level_tracestate_does_not_join_lambdawrap_s_context(task):
    # GIVEN a direct invocation's payload carrying lambdawrap's context (no tracestate) and, at
    # its top, another trace's traceparent with that trace's tracestate (the caller's own fields)
    payload = {
        "_lambdawrap": {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "other=of-another-trace",
    }
    # WHEN it is handled
    (span,) = exported([payload], task)
    # THEN the span continues lambdawrap's context without the other trace's vendor state (a
    # tracestate belongs to the traceparent it came with; before: "other=of-another-trace")
    assert (span["trace_id"], span["parent_span_id"], span["trace_state"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "")


def test_a_header_sent_twice_is_read_from_multi_value_headers_for_the_trace_context(task):
    # GIVEN REST API requests (payload 1.0: "headers" holds the last value of a repeated header,
    # "multiValueHeaders" every value, as API Gateway hands them over): one whose client sent its
    # tracestate in two header lines, as W3C Trace Context allows (they are one list, combined),
    # and one that came with two traceparent headers (W3C: not a valid context; the trace
    # restarts, as it does for an HTTP API, which hands the two over joined)
    first, second = "00-12345678901234567890123456789011-1234567890123456-01", "00-12345678901234567890123456789012-1234567890123456-01"
    two_states = event("apigw-rest")
    two_states["headers"].update(traceparent=first, tracestate="baz=3")
    two_states["multiValueHeaders"].update(traceparent=[first], tracestate=["foo=1,bar=2", "baz=3"])
    two_parents = event("apigw-rest")
    two_parents["headers"].update(traceparent=second, tracestate="baz=3")
    two_parents["multiValueHeaders"].update(traceparent=[first, second], tracestate=["baz=3"])
    # WHEN they are handled
    state_span, parents_span = exported([two_states, two_parents], task)
    # THEN the first continues its trace with the whole tracestate, in the order sent (before:
    # "baz=3", the other lines dropped), and the second starts a trace of its own (before: the
    # second traceparent was its parent)
    assert (state_span["trace_id"], state_span["parent_span_id"], state_span["trace_state"]) == ("12345678901234567890123456789011", "1234567890123456", "foo=1,bar=2,baz=3")
    assert parents_span["parent_span_id"] == "" and parents_span["trace_id"] not in ("12345678901234567890123456789011", "12345678901234567890123456789012")


def test_a_query_value_with_a_lone_surrogate_keeps_the_request_s_description_and_parent(task):
    # GIVEN a REST API request with a traceparent header whose query parameter holds a lone
    # surrogate (a JSON escape, \ud800, which UTF-8 cannot encode, and which API Gateway hands
    # over decoded, to be percent-encoded again)
    request = event("apigw-rest")
    request["headers"]["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    request["queryStringParameters"] = {"q": "a\ud800b"}
    request["multiValueQueryStringParameters"] = {"q": ["a\ud800b"]}
    # WHEN it is handled
    (span,) = exported([request], task)
    # THEN it is still an HTTP request continuing its caller's trace, the value's bytes encoded in
    # the query (before: the whole event was "other", and the trace restarted)
    assert (span["attributes"]["lambdawrap.trigger"], span["trace_id"], span["parent_span_id"]) == ("apigw-rest", "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert span["attributes"]["url.query"] == "q=a%ED%A0%80b"


def test_a_field_of_the_wrong_type_costs_that_field_not_the_batch(task):
    # GIVEN a Kafka batch whose records carry their producer's context, the topic of the first
    # given as a list (not text, nor hashable); and an ActiveMQ-looking event whose eventSource is
    # a list, a payload with its caller's traceparent at its top
    producer = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    kafka = json.loads((CORPUS / "aws-lambda-go" / "kafka-event.json").read_text())
    record = kafka["records"]["AWSKafkaTopic-0"][0]
    record["headers"] = [{"traceparent": list(producer.encode())}]
    kafka["records"]["AWSKafkaTopic-0"] = [dict(record, topic=["AWSKafkaTopic"]), record]
    payload = {"eventSource": ["aws:mq"], "messages": [], "traceparent": producer}
    # WHEN they are handled
    kafka_span, payload_span = exported([kafka, payload], task)
    # THEN the batch is still Kafka's, linked to its producer, only without a destination; and
    # the payload continues its caller's trace (before: both were "other", nothing kept)
    assert (kafka_span["attributes"]["lambdawrap.trigger"], kafka_span["name"], kafka_span["attributes"]["messaging.batch.message_count"]) == ("kafka", "process", 2)
    assert [(link["trace_id"], link["span_id"]) for link in kafka_span["links"]] == [("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")]
    assert (payload_span["attributes"]["lambdawrap.trigger"], payload_span["trace_id"], payload_span["parent_span_id"]) == ("other", "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")


NESTED_APP = """
def handler(event, context):
    if "nested_reply" in event:
        return b"[" * 100_000 + b"]" * 100_000  # JSON nested deeper than Python's json parses
    return {"statusCode": 200, "body": "ok"}
"""


def test_values_nested_or_numbers_larger_than_python_reads_cost_only_that_value(tmp_path):
    # GIVEN a DynamoDB change record whose creation time is an integer of 400 digits, a periodic
    # Config rule's invokingEvent nested 1,000 deep, and an HTTP API request whose handler answers
    # with bytes of JSON nested 100,000 deep (which the runtime posts as they are)
    task = write_function(tmp_path / "task", NESTED_APP)
    dynamodb = event("dynamodb")
    dynamodb["Records"][0]["dynamodb"]["ApproximateCreationDateTime"] = 10**400
    config = json.loads((CORPUS / "powertools-lambda-python" / "awsConfigRuleScheduled.json").read_text())
    config["invokingEvent"] = "[" * 1_000 + '"ScheduledNotification"'
    request = event("apigw-http", nested_reply=True)
    with instrumented(task) as (emu, rx):
        # WHEN they are handled
        results = [emu.invoke(e) for e in (dynamodb, config, request)]
        assert [r.function_error for r in results] == [None] * 3
        spans = [rx.wait_for_spans(lambda s, r=r: s["attributes"].get("faas.invocation_id") == r.request_id, timeout=30)[0] for r in results]
        assert emu.wait_idle()
        function_output = "\n".join(emu.log_lines("function"))
    # THEN each is what it is, without the value Python cannot read (before: the record and the
    # rule were "other", their attributes lost), and the answer has no status code; none of it
    # is a failure of lambdawrap's own, nor a line in the function's log
    assert [s["attributes"]["lambdawrap.trigger"] for s in spans] == ["dynamodb", "config", "apigw-http"]
    assert "faas.document.time" not in spans[0]["attributes"] and spans[1]["attributes"]["faas.trigger"] == "timer"
    assert "http.response.status_code" not in spans[2]["attributes"]
    assert results[2].body == b"[" * 100_000 + b"]" * 100_000
    assert "lambdawrap" not in function_output, function_output


def test_a_malformed_w3c_client_context_does_not_hide_the_custom_one(task):
    # GIVEN a Lambda Invoke caller whose client context holds a malformed traceparent in w3c
    # (which awslambdaric moves to context.w3c()) and a valid one in custom, where the SDK
    # instrumentations write it
    custom = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with instrumented(task) as (emu, rx):
        # WHEN it invokes the function
        result = emu.invoke({}, client_context={"custom": {"traceparent": custom}, "w3c": {"traceparent": "00-not-a-context", "tracestate": "w=1"}})
        assert result.function_error is None
        (span,) = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id, timeout=30)
    # THEN the custom context parents the span, as a malformed value anywhere else hides nothing
    # (before: the w3c place was taken as the caller's, and the trace restarted)
    assert (span["trace_id"], span["parent_span_id"], span["trace_state"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "")


def test_an_http_event_passed_on_by_an_invoking_function_is_parented_by_that_function(task):
    # GIVEN a function that invokes this one with the HTTP event it got: the event still holds
    # the client's traceparent (and tracestate), and the client context holds the invoking
    # function's own, as lambdawrap's AWS SDK hook writes it
    forwarded = event("apigw-http")
    forwarded["headers"].update(traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", tracestate="client=1")
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with instrumented(task) as (emu, rx):
        # WHEN it is invoked so, and again with the event alone
        passed_on = emu.invoke(forwarded, client_context={"custom": {"traceparent": caller, "tracestate": "caller=1"}})
        direct = emu.invoke(forwarded)
        spans = {s["attributes"]["faas.invocation_id"]: s for s in rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") in (passed_on.request_id, direct.request_id), count=2, timeout=30)}
    # THEN the invoking function's span parents it, with its tracestate (before: the client's,
    # two hops up, and the Invoke call's span had no child), and the event's alone otherwise
    assert (spans[passed_on.request_id]["trace_id"], spans[passed_on.request_id]["parent_span_id"], spans[passed_on.request_id]["trace_state"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "caller=1")
    assert (spans[direct.request_id]["trace_id"], spans[direct.request_id]["parent_span_id"], spans[direct.request_id]["trace_state"]) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "client=1")


def test_an_http_api_s_default_route_in_payload_1_0_names_no_route(task):
    # GIVEN an HTTP API request that matched no route, delivered in payload format 1.0 (as a real
    # one comes: resource and resourcePath "$default"), and one that matched "/pets/{petId}"
    unmatched = event("apigw-rest", version="1.0", resource="$default")
    unmatched["requestContext"].update(resourcePath="$default", resourceId="$default", stage="$default", path="/question")
    matched = event("apigw-rest", version="1.0")
    # WHEN they are handled THEN "$default" names no route (it is no path template): the span is
    # named after the method alone, as a 2.0 event of the same request is; a real route is kept
    spans = exported([unmatched, matched], task)
    assert [(s["name"], s["attributes"].get("http.route")) for s in spans] == [("GET", None), ("GET /pets/{petId}", "/pets/{petId}")]
    assert spans[0]["attributes"]["url.path"] == "/question"


BODY_ONLY_APP = """
def handler(event, context):
    return {"body": "no status"}
"""


def test_an_http_api_s_payload_1_0_answer_without_a_status_is_its_500(tmp_path):
    # GIVEN a function that answers without a statusCode, behind an HTTP API's payload 1.0 (the
    # event says "version": "1.0"; a REST API's does not), a REST API and an HTTP API's 2.0
    task = write_function(tmp_path / "task", BODY_ONLY_APP)
    http_api_v1 = event("apigw-rest", version="1.0")
    # WHEN each is handled
    spans = exported([http_api_v1, event("apigw-rest"), event("apigw-http")], task)
    # THEN the HTTP API's payload 1.0 is what the client got from it, a 500 (the service makes no
    # assumption about a 1.0 response), an error; a REST API's is not guessed, a 2.0's is a 200
    assert [s["attributes"].get("http.response.status_code") for s in spans] == [500, None, 200]
    assert (spans[0]["status_code"], spans[0]["attributes"]["error.type"]) == (2, "500")
    assert [s["status_code"] for s in spans[1:]] == [0, 0]


def test_a_workflow_s_input_that_passes_an_event_on_is_the_workflow_s_payload(task):
    # GIVEN Step Functions inputs that are events passed on by the function they triggered (an S3
    # notification, an EventBridge event: sfn.start_execution(input=json.dumps(event))), which
    # lambdawrap's producer gave its context as the document's first member, or another producer
    # a top-level traceparent; and the same S3 notification as S3 sends it
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    state = "congo=t61rcWkgMzE"
    s3_passed_on = {"_lambdawrap": {"traceparent": caller, "tracestate": state}, **event("s3")}
    eventbridge_passed_on = {"_lambdawrap": {"traceparent": caller}, **event("eventbridge")}
    sqs_passed_on = {"traceparent": caller, **event("sqs")}
    # WHEN a state machine's task invokes the function with each
    spans = exported([s3_passed_on, eventbridge_passed_on, sqs_passed_on, event("s3")], task)
    # THEN the workflow's inputs are payloads ("other", as every Step Functions task is) whose
    # parent is the context they carry, with its tracestate; not the S3 object's change, an
    # event bus's message or a queue's batch, which no AWS service sent (none writes these keys)
    for span in spans[:3]:
        assert (span["attributes"]["lambdawrap.trigger"], span["attributes"]["faas.trigger"], span["kind"]) == ("other", "other", 2)
        assert (span["trace_id"], span["parent_span_id"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
        assert not any(key.startswith(("faas.document.", "messaging.")) for key in span["attributes"])
    assert spans[0]["trace_state"] == state
    # and the notification S3 sent is S3's, as before
    assert spans[3]["attributes"]["lambdawrap.trigger"] == "s3" and not spans[3]["parent_span_id"]


def test_a_kafka_partition_that_is_no_number_names_none(task):
    # GIVEN Kafka batches of one partition whose records give it as true (JSON's boolean, which
    # Python counts as an int), as 3, and as "3" through an EventBridge Pipe
    kafka = json.loads((CORPUS / "aws-lambda-go" / "kafka-event.json").read_text())
    group, records = next(iter(kafka["records"].items()))
    as_boolean = dict(kafka, records={group: [dict(records[0], partition=True)]})
    as_number = dict(kafka, records={group: [dict(records[0], partition=3)]})
    piped = [dict(records[0], eventSource="aws:kafka", partition="3"), dict(records[0], eventSource="aws:kafka", partition=True)]
    # WHEN they are handled
    spans = exported([as_boolean, as_number, piped], task)
    # THEN a partition is named only when it is one: "3" for the number, none for true, and none
    # for the Pipe's batch whose last record says true, as the Pipe's records are read
    assert [s["attributes"].get("messaging.destination.partition.id") for s in spans] == [None, "3", None]
    assert all(s["attributes"]["lambdawrap.trigger"] == "kafka" for s in spans)


def test_an_appsync_events_handler_s_span_continues_the_publisher_s_trace(task):
    # GIVEN an AppSync Events API's handler event (its shape as AWS documents it), the publisher's
    # context in the request's headers
    published = {
        "identity": None,
        "result": None,
        "request": {"headers": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "content-type": "application/json"}, "domainName": None},
        "info": {"channel": {"path": "/default/orders", "segments": ["default", "orders"]}, "channelNamespace": {"name": "default"}, "operation": "PUBLISH"},
        "error": None,
        "prev": None,
        "stash": {},
        "outErrors": [],
        "events": [{"payload": {"data": "data_1"}, "id": "1"}, {"payload": {"data": "data_2"}, "id": "2"}],
    }
    # WHEN it is handled
    (span,) = exported([published], task)
    # THEN its span is the publisher's request's child and names the channel and the operation
    # (before: an event of no known source, a trace of its own)
    assert (span["trace_id"], span["parent_span_id"]) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"), span
    assert span["attributes"]["faas.trigger"] == "other"
    assert (span["attributes"]["lambdawrap.appsync.channel"], span["attributes"]["lambdawrap.appsync.operation"]) == ("/default/orders", "PUBLISH")
