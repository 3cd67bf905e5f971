"""Tests for lambdawrap.handler.message_context: where each kind of message carries its creator's
trace context, and that a message of any size is read only so far."""

from __future__ import annotations

import base64
import binascii
import json
import types

import pytest

from lambdawrap.handler import message_context as mc

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TP2 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
FILLER = "x" * 10_000


def b64(document: object) -> str:
    text = document if isinstance(document, str) else json.dumps(document)
    return base64.b64encode(text.encode()).decode()


# --- JSON payloads ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, expected",
    [
        ({"_lambdawrap": {"traceparent": TP, "tracestate": "lw=1"}, "traceparent": TP2}, TP),
        ({"traceparent": TP2}, TP2),
        ({"_lambdawrap": {"traceparent": 5}, "traceparent": TP2}, TP2),
        # an invalid value in _lambdawrap does not hide a valid top-level one
        ({"_lambdawrap": {"traceparent": "00-bad", "tracestate": "lw=1"}, "traceparent": TP2}, TP2),
        ({"_lambdawrap": "nope"}, None),
        ({"detail": {"traceparent": TP}}, None),  # parsed payloads: only the top level counts
        ([TP], None),
        (None, None),
    ],
)
def test_payload_context(payload, expected):
    assert mc.payload_context(payload) == expected


def test_a_payload_s_tracestate_is_the_one_beside_the_context_used():
    assert mc.payload_state({"_lambdawrap": {"traceparent": TP, "tracestate": "lw=1"}, "tracestate": "top=1"}) == "lw=1"
    assert mc.payload_state({"_lambdawrap": {"traceparent": "00-bad", "tracestate": "lw=1"}, "traceparent": TP2, "tracestate": "top=1"}) == "top=1"


@pytest.mark.parametrize(
    "text, expected",
    [
        (json.dumps({"order": 1, "traceparent": TP}), TP),
        (json.dumps({"order": 1, "_lambdawrap": {"traceparent": TP, "tracestate": "a=b"}}), TP),
        (json.dumps({"traceparent" : TP}, indent=4), TP),
        # the envelope SNS writes into an SQS body: attributes as {"Type", "Value"} objects
        (json.dumps({"Type": "Notification", "Message": "m", "MessageAttributes": {"traceparent": {"Type": "String", "Value": TP}}}), TP),
        # a context inside a JSON string nested in the document is escaped: not this message's
        (json.dumps({"Message": json.dumps({"traceparent": TP})}), None),
        (json.dumps({"traceparent": "not a traceparent"}), None),
        (json.dumps({"traceparent": TP.upper()}), None),
        ("traceparent", None),
        ("", None),
        (None, None),
        (b'{"traceparent": "%s"}' % TP.encode(), None),
    ],
)
def test_text_context(text, expected):
    assert mc.text_context(text) == expected


def test_text_context_reads_the_two_ends_of_a_large_text_only():
    head = json.dumps({"traceparent": TP, "filler": FILLER})
    tail = json.dumps({"filler": FILLER, "_lambdawrap": {"traceparent": TP2}})
    middle = json.dumps({"filler": FILLER, "traceparent": TP, "more": FILLER})
    assert mc.text_context(head) == TP
    assert mc.text_context(tail) == TP2
    assert mc.text_context(middle) is None  # the price of a bounded cost


def test_text_context_tries_the_first_eight_traceparent_keys_of_a_window():
    # A list of items, each with a key of that name, the ninth holding the context.
    def items(invalid: int) -> str:
        return json.dumps([{"traceparent": None}] * invalid + [{"traceparent": TP}])

    assert mc.text_context(items(7)) == TP
    assert mc.text_context(items(8)) is None  # the price of a bounded cost


def test_a_window_full_of_traceparent_keys_costs_about_what_a_plain_one_does():
    # A forged body of nothing but '"traceparent":{' cost a regex try per key, 30x a plain body
    # (tens of ms for a batch); keys tried are bounded. The bound is loose: a shared CI machine.
    import timeit

    forged = ('"traceparent":{' * 300)[: 2 * mc._WINDOW_CHARS]
    plain = json.dumps({"filler": "x" * (2 * mc._WINDOW_CHARS - 100), "traceparent": TP})
    assert mc.text_context(plain) == TP and mc.text_context(forged) is None

    def cost(text: str) -> float:
        return min(timeit.repeat(lambda: mc.text_context(text), number=50, repeat=7))

    assert cost(forged) < 8 * cost(plain)


def test_text_context_window_size(monkeypatch):
    seen = []
    monkeypatch.setattr(mc, "_search", lambda window: seen.append(len(window)))
    mc.text_context("y" * 6_000_000)
    assert seen and max(seen) <= 2048


# --- base64 record data -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, expected",
    [
        (b64({"clicks": 1, "traceparent": TP}), TP),
        (b64({"_lambdawrap": {"traceparent": TP}}), TP),
        (b64({"filler": FILLER, "_lambdawrap": {"traceparent": TP2}}), TP2),  # at the end of a large record
        (b64({"filler": FILLER, "traceparent": TP, "more": FILLER}), None),
        (b64("plain text, not JSON, traceparent"), None),
        ("!!not base64!!", None),
        (b64({"traceparent": TP})[:-3], None),  # cut: no longer decodes
        ("", None),
        (None, None),
        (12, None),
    ],
)
def test_base64_context(data, expected):
    assert mc.base64_context(data) == expected


def test_base64_context_decodes_two_windows_at_most(monkeypatch):
    decoded = []

    def a2b_base64(data):
        decoded.append(len(data))
        return binascii.a2b_base64(data)

    monkeypatch.setattr(mc, "binascii", types.SimpleNamespace(a2b_base64=a2b_base64, Error=binascii.Error))
    # A record without the word is not decoded at all: its base64 text is searched for it.
    assert mc.base64_context(b64({"filler": "z" * 6_000_000})) is None
    assert decoded == []
    # One with the word at both ends (and no valid context) is decoded in two windows only.
    assert mc.base64_context(b64({"traceparent": 1, "filler": "z" * 6_000_000, "traceparent ": 2})) is None
    assert len(decoded) == 2 and max(decoded) <= 2732


# --- one reader per source --------------------------------------------------------------------


def test_sqs_reads_the_attribute_then_the_body_then_the_xray_header():
    record = {
        "messageAttributes": {"traceparent": {"stringValue": TP, "dataType": "String"}},
        "body": json.dumps({"traceparent": TP2}),
        "attributes": {"AWSTraceHeader": XRAY},
    }
    assert mc.sqs_message_context(record) == (TP, True)
    del record["messageAttributes"]
    assert mc.sqs_message_context(record) == (TP2, True)
    record["body"] = "plain"
    assert mc.sqs_message_context(record) == (XRAY, False)
    assert mc.sqs_message_context({"attributes": {"AWSTraceHeader": 5}, "body": None}) == (None, False)


def test_an_eventbridge_event_sns_delivered_to_a_queue_gives_its_context():
    # GIVEN an SQS message whose body is the envelope of an SNS message (raw delivery off, the
    # default) holding an EventBridge event, its context in detail._lambdawrap: escaped in the
    # envelope's Message string
    event = {"detail-type": "OrderPlaced", "source": "shop", "detail": {"order": 7, "_lambdawrap": {"traceparent": TP}}}
    envelope = {"Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": json.dumps(event), "MessageAttributes": {}}
    record = {"body": json.dumps(envelope), "attributes": {"AWSTraceHeader": XRAY}}
    # THEN the link is to the producer (before: the X-Ray header SQS set, of another trace)
    assert mc.sqs_message_context(record) == (TP, True)
    # ... and an escaped key holding no context leaves the X-Ray header the message's
    event["detail"]["_lambdawrap"]["traceparent"] = "00-" + "0" * 32 + "-" + "0" * 16 + "-01"
    record["body"] = json.dumps(dict(envelope, Message=json.dumps(event)))
    assert mc.sqs_message_context(record) == (XRAY, False)
    # ... while an event stored as a string in a message of another kind is a document it
    # carries, not its producer's context; nor does one in its head hide the message's own
    stored = {"kind": "audit", "event": json.dumps({"detail": {"_lambdawrap": {"traceparent": TP}}})}
    assert mc.sqs_message_context({"body": json.dumps(stored), "attributes": {"AWSTraceHeader": XRAY}}) == (XRAY, False)
    stored.update(pad="p" * 5000, _lambdawrap={"traceparent": TP2})
    assert mc.sqs_message_context({"body": json.dumps(stored)}) == (TP2, True)


def test_sns_reads_the_attribute_then_the_message():
    record = {"Sns": {"MessageAttributes": {"traceparent": {"Type": "String", "Value": TP}}, "Message": json.dumps({"traceparent": TP2})}}
    assert mc.sns_message_context(record) == (TP, True)
    record["Sns"]["MessageAttributes"] = {}
    assert mc.sns_message_context(record) == (TP2, True)
    assert mc.sns_message_context({"Sns": "x"}) == (None, False)


def test_binary_message_attributes_are_read_as_the_text_they_encode():
    # GIVEN a producer that writes its context as Binary message attributes (the event gives
    # them in base64: SQS's binaryValue, SNS's Value with Type Binary)
    b64 = lambda text: base64.b64encode(text.encode()).decode()
    sqs = {"messageAttributes": {"traceparent": {"stringValue": None, "binaryValue": b64(TP), "dataType": "Binary"}}, "attributes": {"AWSTraceHeader": XRAY}}
    sns = {"Sns": {"MessageAttributes": {"traceparent": {"Type": "Binary", "Value": b64(TP)}, "tracestate": {"Type": "Binary", "Value": b64("a=b")}, "baggage": {"Type": "String", "Value": "k=v"}}}}
    # THEN the context is the one they carry (before: the X-Ray header, or none)
    assert mc.sqs_message_context(sqs) == (TP, True)
    assert (mc.sns_message_context(sns), mc.sns_message_beside(sns)) == ((TP, True), ("a=b", "k=v"))
    # ... and a Binary value that is not base64 text, or not text, is no context
    for value in ("%%%", b64("\u00e9") * 2, "A" * 20_000, None):
        sqs["messageAttributes"]["traceparent"]["binaryValue"] = value
        assert mc.sqs_message_context(sqs) == (XRAY, False)
    sns["Sns"]["MessageAttributes"]["traceparent"] = {"Type": "Binary", "Value": base64.b64encode(b"\xff" * 55).decode()}
    assert mc.sns_message_context(sns) == (None, False)


@pytest.mark.parametrize(
    "bad",
    [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # no flags
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "not a traceparent",
        "",
    ],
)
def test_a_malformed_w3c_value_does_not_hide_the_next_place(bad):
    # A user's bad traceparent attribute (or body key) must not lose the context the next place
    # holds: the body's, then the X-Ray header AWS set on the message.
    record = {
        "messageAttributes": {"traceparent": {"stringValue": bad, "dataType": "String"}},
        "body": json.dumps({"traceparent": TP2}),
        "attributes": {"AWSTraceHeader": XRAY},
    }
    assert mc.sqs_message_context(record) == (TP2, True)
    record["body"] = json.dumps({"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"})
    assert mc.sqs_message_context(record) == (XRAY, False)
    sns = {"Sns": {"MessageAttributes": {"traceparent": {"Type": "String", "Value": bad}, "tracestate": {"Type": "String", "Value": "a=b"}}, "Message": json.dumps({"traceparent": TP2})}}
    assert mc.sns_message_context(sns) == (TP2, True)
    # the tracestate came beside the bad value, not beside the context used
    assert mc.sns_message_beside(sns) == (None, None)
    sns["Sns"]["MessageAttributes"]["traceparent"]["Value"] = TP
    assert (mc.sns_message_context(sns), mc.sns_message_beside(sns)) == ((TP, True), ("a=b", None))


@pytest.mark.parametrize("placeholder", ["00-00000000000000000000000000000000-00f067aa0ba902b7-01", "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"])
def test_a_well_formed_value_that_is_no_context_does_not_hide_the_one_after_it_in_a_text(placeholder):
    # GIVEN a message body whose own document holds a placeholder traceparent before
    # lambdawrap's carrier WHEN the context is read THEN the carrier's (before: none at all)
    body = json.dumps({"audit": {"traceparent": placeholder}, "_lambdawrap": {"traceparent": TP}})
    assert mc.text_context(body) == TP
    assert mc.sqs_message_context({"body": body}) == (TP, True)


def test_a_pipe_s_kinesis_records_hold_their_data_at_the_top():
    # An EventBridge Pipe hands over Kinesis records flat: {"data", "eventSource", ...}.
    assert mc.kinesis_record_context({"eventSource": "aws:kinesis", "data": b64({"traceparent": TP})}) == (TP, True)
    assert mc.kinesis_record_context({"data": None}) == (None, False)


@pytest.mark.parametrize(
    "headers, expected",
    [
        ([{"a": [1]}, {"traceparent": list(TP.encode())}], (TP, True)),
        ([{"traceparent": TP}], (TP, True)),
        ([{"traceparent": [-123, 5]}], (None, False)),  # not bytes (Java's signed bytes)
        ([{"traceparent": [0] * 1000}], (None, False)),  # too long to be a traceparent
        ([{"traceparent": None}], (None, False)),
        ([{"x": [1]}] * 40 + [{"traceparent": TP}, {"x": [1]}] + [{"x": [1]}] * 40, (None, False)),  # past the headers read
        # of a record with more than 32 headers, the last ones are read first (before: the first
        # 32 only, so the newest hop, appended last, was passed over for an older one or missed)
        ([{"x": [1]}] * 40 + [{"traceparent": TP}], (TP, True)),
        ([{"traceparent": list(TP2.encode())}] + [{"x": [1]}] * 35 + [{"traceparent": list(TP.encode())}], (TP, True)),
        ([{"traceparent": list(TP2.encode())}] + [{"x": [1]}] * 35, (TP2, True)),
        # a record forwarded with its headers, and the forwarder's own traceparent appended:
        # the last is the newest hop, as Kafka's lastHeader (before: the first, the old hop)
        ([{"traceparent": list(TP2.encode())}, {"a": [1]}, {"traceparent": list(TP.encode())}], (TP, True)),
        ("traceparent", (None, False)),
        (None, (None, False)),
    ],
)
def test_kafka_record_headers(headers, expected):
    assert mc.kafka_record_context({"headers": headers}) == expected


@pytest.mark.parametrize(
    "value, expected",
    [({"bytes": list(TP.encode())}, (TP, True)), (TP, (TP, True)), ({"bytes": "x"}, (None, False)), (7, (None, False))],
)
def test_rabbitmq_headers(value, expected):
    assert mc.rabbitmq_message_context({"basicProperties": {"headers": {"traceparent": value}}}) == expected
    assert mc.rabbitmq_message_context({"basicProperties": None}) == (None, False)


def test_activemq_properties_and_stream_records():
    assert mc.mq_message_context({"properties": {"traceparent": TP}}) == (TP, True)
    assert mc.mq_message_context({"properties": [TP]}) == (None, False)
    assert mc.kinesis_record_context({"kinesis": {"data": b64({"traceparent": TP})}}) == (TP, True)
    assert mc.kinesis_record_context({"kinesis": None}) == (None, False)
    assert mc.firehose_record_context({"data": b64({"traceparent": TP})}) == (TP, True)
    assert mc.firehose_record_context({}) == (None, False)


# --- what lambdawrap's producers write, its consumers read -------------------------------------

ENABLED = ("sqs", "sns", "eventbridge", "kinesis", "stepfunctions", "lambda")
FIELDS = {"traceparent": TP, "tracestate": "lw=1", "baggage": "tenant=acme"}


def _sent(service: str, operation: str, params: dict) -> dict:
    """The parameters of an AWS call as lambdawrap's outgoing hook leaves them."""
    from lambdawrap.handler.outgoing import aws_carriers

    assert aws_carriers.inject(service, operation, params, dict(FIELDS), ENABLED)
    return params


def test_producers_and_consumers_agree():
    # GIVEN the calls lambdawrap's outgoing hook carries context in, WHEN the services deliver
    # what was sent (in the shapes their Lambda events have) THEN the consumer finds the context.
    from lambdawrap.handler.trace_context import client_context_w3c, parse_traceparent
    from lambdawrap.handler.triggers import detect_trigger

    expected = parse_traceparent(TP)
    sqs = _sent("sqs", "SendMessage", {"QueueUrl": "q", "MessageBody": "order 7"})
    record = {"eventSource": "aws:sqs", "body": sqs["MessageBody"], "messageAttributes": {k: {"stringValue": v["StringValue"], "dataType": v["DataType"]} for k, v in sqs["MessageAttributes"].items()}}
    assert detect_trigger({"Records": [record]}).links == [expected]

    sns = _sent("sns", "Publish", {"TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": "order 7"})
    message = {"TopicArn": sns["TopicArn"], "Message": sns["Message"], "MessageAttributes": {k: {"Type": v["DataType"], "Value": v["StringValue"]} for k, v in sns["MessageAttributes"].items()}}
    trigger = detect_trigger({"Records": [{"EventSource": "aws:sns", "Sns": message}]})
    assert trigger.parent == expected
    # ... with the tracestate and baggage the producer spent attributes on (before: the baggage
    # was dropped at this hop)
    assert (trigger.parent_state, trigger.parent_baggage) == (FIELDS["tracestate"], FIELDS["baggage"])

    entry = _sent("events", "PutEvents", {"Entries": [{"Source": "orders", "DetailType": "placed", "Detail": '{"order": 7}'}]})["Entries"][0]
    event = {"version": "0", "id": "1", "source": entry["Source"], "detail-type": entry["DetailType"], "detail": json.loads(entry["Detail"])}
    assert detect_trigger(event).parent == expected

    data = _sent("kinesis", "PutRecord", {"StreamName": "s", "PartitionKey": "k", "Data": json.dumps({"order": 7, "filler": FILLER})})["Data"]
    kinesis = {"eventSource": "aws:kinesis", "eventSourceARN": "arn:aws:kinesis:us-east-1:1:stream/s", "kinesis": {"data": b64(data)}}
    assert detect_trigger({"Records": [kinesis]}).links == [expected]

    execution = _sent("stepfunctions", "StartExecution", {"stateMachineArn": "arn", "input": '{"order": 7}'})
    assert detect_trigger(json.loads(execution["input"])).parent == expected

    invoke = _sent("lambda", "Invoke", {"FunctionName": "f", "Payload": b"{}"})
    custom = json.loads(base64.b64decode(invoke["ClientContext"]))["custom"]
    context = types.SimpleNamespace(client_context=types.SimpleNamespace(custom=custom))
    assert client_context_w3c(context)["traceparent"] == TP


@pytest.mark.parametrize(
    "service, operation, params, carried",
    [
        # SNS counts the subject, attributes' names, types and values (binary as bytes), and
        # multi-byte text by its bytes: one byte more than the context leaves, then exactly that
        ("sns", "Publish", {"Message": "m" * (256 * 1024 - 72 - 9 + 1), "Subject": "ninechars"}, False),
        ("sns", "Publish", {"Message": "m" * (256 * 1024 - 72 - 9), "Subject": "ninechars"}, True),
        ("sqs", "SendMessage", {"MessageBody": "\u00e9" * ((256 * 1024 - 72) // 2 + 1)}, False),
        ("sqs", "SendMessage", {"MessageBody": "\u00e9" * ((256 * 1024 - 72) // 2)}, True),
        ("sqs", "SendMessage", {"MessageBody": "x" * (256 * 1024 - 72 - 17 + 1), "MessageAttributes": {"blob": {"DataType": "Binary", "BinaryValue": b"\x00" * 7}}}, False),
        ("sqs", "SendMessage", {"MessageBody": "x" * (256 * 1024 - 72 - 17), "MessageAttributes": {"blob": {"DataType": "Binary", "BinaryValue": b"\x00" * 7}}}, True),
        # attributes that are not a map: the call fails its validation as the function wrote it
        ("sqs", "SendMessage", {"MessageBody": "x", "MessageAttributes": "not a map"}, False),
    ],
)
def test_the_context_goes_only_where_the_message_stays_within_its_size(service, operation, params, carried):
    from lambdawrap.handler.outgoing import aws_carriers

    fields = {"traceparent": TP}  # 11 + 6 + 55 = 72 bytes as SQS and SNS count an attribute
    sent = dict(params)
    assert aws_carriers.inject(service, operation, sent, fields, ENABLED) is carried
    attributes = sent.get("MessageAttributes")
    assert (isinstance(attributes, dict) and "traceparent" in attributes) is carried
    if not carried:
        assert sent == params  # as the function wrote it


@pytest.mark.parametrize("service, operation, text", [("sqs", "SendMessage", "MessageBody"), ("sns", "Publish", "Message")])
def test_a_message_attribute_of_the_users_named_like_a_field_stays_and_the_traceparent_goes_beside_it(service, operation, text):
    from lambdawrap.handler.outgoing import aws_carriers

    fields = {"traceparent": TP, "tracestate": "lw=1", "baggage": "tenant=ours"}
    theirs = {"baggage": {"DataType": "String", "StringValue": "gift-wrap"}}  # their own meaning
    params = {text: "m", "MessageAttributes": theirs}
    assert aws_carriers.inject(service, operation, params, fields, ENABLED) is True
    sent = params["MessageAttributes"]
    assert sent["baggage"] == theirs["baggage"] and theirs == {"baggage": {"DataType": "String", "StringValue": "gift-wrap"}}
    assert sent["traceparent"]["StringValue"] == TP and sent["tracestate"]["StringValue"] == "lw=1"
    # Eight of theirs and a baggage: the traceparent and tracestate would make eleven, so the
    # traceparent goes alone (before: neither, counted: the consumer lost its link)
    nine = {f"a{i}": {"DataType": "String", "StringValue": "v"} for i in range(8)} | theirs
    params = {text: "m", "MessageAttributes": nine}
    assert aws_carriers.inject(service, operation, params, fields, ENABLED) is True
    assert set(params["MessageAttributes"]) == set(nine) | {"traceparent"} and len(nine) == 9
    # Ten of theirs: no room even for it, so the message goes as written, and that is counted
    ten = nine | {"a9": {"DataType": "String", "StringValue": "v"}}
    params = {text: "m", "MessageAttributes": ten}
    assert aws_carriers.inject(service, operation, params, fields, ENABLED) is False
    assert params["MessageAttributes"] is ten
    # Their own traceparent: their context stands whole, ours adds nothing
    own = {"traceparent": {"DataType": "String", "StringValue": TP2}}
    params = {text: "m", "MessageAttributes": own}
    assert aws_carriers.inject(service, operation, params, fields, ENABLED) is True
    assert params["MessageAttributes"] is own


def test_a_context_an_earlier_hop_left_in_a_forwarded_payload_is_replaced_by_this_call_s():
    from lambdawrap.handler.outgoing import aws_carriers

    # GIVEN a function that forwards the payload it was invoked with, which holds the context
    # of the call that sent it (our key), to EventBridge, Kinesis, Step Functions and Lambda
    fields = {"traceparent": TP}
    forwarded = '{"order": 1, "_lambdawrap": {"traceparent": "%s"}, "items": [1, 2]}' % TP2
    events = {"Entries": [{"Source": "s", "DetailType": "d", "Detail": forwarded}]}
    record = {"StreamName": "s", "PartitionKey": "k", "Data": forwarded.encode()}
    execution = {"stateMachineArn": "arn", "input": forwarded}
    invoke = {"FunctionName": "f", "Payload": forwarded.encode()}
    for service, operation, params in (("events", "PutEvents", events), ("kinesis", "PutRecord", record), ("stepfunctions", "StartExecution", execution), ("lambda", "Invoke", invoke)):
        assert aws_carriers.inject(service, operation, params, fields, ENABLED) is True
    # THEN this call's context goes, the earlier hop's key gone and the rest as written (before:
    # the payload went as it was, and the consumer took the earlier hop for its parent)
    expected = '{"_lambdawrap":{"traceparent":"%s"},"order": 1, "items": [1, 2]}' % TP
    assert events["Entries"][0]["Detail"] == execution["input"] == record["Data"].decode() == expected
    # ... and Lambda's callee reads this call's context from the client context, first
    assert json.loads(base64.b64decode(invoke["ClientContext"]))["custom"]["traceparent"] == TP
    # A top-level traceparent of the function's own still stands
    own = {"stateMachineArn": "arn", "input": '{"traceparent": "%s", "_lambdawrap": {}}' % TP2}
    assert aws_carriers.inject("stepfunctions", "StartExecution", own, fields, ENABLED) is True and own["input"] == '{"traceparent": "%s", "_lambdawrap": {}}' % TP2


def test_json_payloads_gain_the_context_only_while_the_request_stays_within_its_limit():
    from lambdawrap.handler.outgoing import aws_carriers

    fields = {"traceparent": TP}
    added = len(',"_lambdawrap":{"traceparent":"%s"}' % TP)

    def entry(detail_bytes: int) -> dict:
        # EventBridge counts Time (14), Source, DetailType, Detail and Resources
        return {"Time": "2026-01-01", "Source": "orders", "DetailType": "placed", "Resources": ["arn:r"], "Detail": '{"p":"' + "x" * (detail_bytes - 8) + '"}'}

    overhead = 14 + len("orders") + len("placed") + len("arn:r")
    room_for_one = aws_carriers.MAX_EVENT_BYTES - 2 * overhead - added
    # Two entries whose total leaves room for one context: the first gains it, the second not
    params = {"Entries": [entry(room_for_one // 2), entry(room_for_one - room_for_one // 2)]}
    assert aws_carriers.inject("events", "PutEvents", params, fields, ENABLED) is False
    assert ['"_lambdawrap"' in e["Detail"] for e in params["Entries"]] == [True, False]
    assert sum(aws_carriers._event_entry_bytes(e) for e in params["Entries"]) <= aws_carriers.MAX_EVENT_BYTES
    # Kinesis: a record within 1 MiB with its partition key, and a request within 5 MiB
    record = {"PartitionKey": "k", "Data": b'{"p":"' + b"y" * (aws_carriers.MAX_KINESIS_RECORD_BYTES - 1 - 8 - added) + b'"}'}
    assert aws_carriers.inject("kinesis", "PutRecord", dict(record), fields, ENABLED) is True
    record["Data"] = record["Data"][:-2] + b'y"}'
    assert aws_carriers.inject("kinesis", "PutRecord", dict(record), fields, ENABLED) is False
    each = (aws_carriers.MAX_KINESIS_REQUEST_BYTES - (2 * added + 12)) // 6  # room for two contexts
    records = {"Records": [{"PartitionKey": "k", "Data": b'{"p":"' + b"z" * (each - 1 - 8) + b'"}'} for _ in range(6)]}
    assert aws_carriers.inject("kinesis", "PutRecords", records, fields, ENABLED) is False
    assert [b"_lambdawrap" in r["Data"] for r in records["Records"]] == [True, True, False, False, False, False]


def test_a_batch_or_its_resources_given_as_a_tuple_are_measured_and_carried_as_a_list():
    # botocore takes a tuple wherever its model has a list
    from lambdawrap.handler.outgoing import aws_carriers

    fields = {"traceparent": TP}
    added = len(',"_lambdawrap":{"traceparent":"%s"}' % TP)
    resources = tuple("arn:aws:s3:::bucket-%04d" % i for i in range(100))  # 2,200 bytes
    # An entry whose resources leave less room than the context needs: it goes as written
    detail = '{"p":"' + "x" * (aws_carriers.MAX_EVENT_BYTES - 2 - sum(map(len, resources)) - 8 - added + 1) + '"}'
    full = {"Source": "s", "DetailType": "t", "Resources": resources, "Detail": detail}
    params = {"Entries": (full,)}
    assert aws_carriers.inject("events", "PutEvents", params, fields, ENABLED) is False
    assert params["Entries"][0]["Detail"] == detail
    # A tuple of entries with room gains the context in each, as a list would
    params = {"Entries": ({"Source": "s", "DetailType": "t", "Detail": '{"a":1}'}, {"Source": "s", "DetailType": "t", "Detail": '{"b":2}'})}
    assert aws_carriers.inject("events", "PutEvents", params, fields, ENABLED) is True
    assert all(mc.payload_context(json.loads(e["Detail"])) == TP for e in params["Entries"])
    batch = {"QueueUrl": "q", "Entries": ({"Id": "1", "MessageBody": "a"},)}
    assert aws_carriers.inject("sqs", "SendMessageBatch", batch, fields, ENABLED) is True
    assert batch["Entries"][0]["MessageAttributes"]["traceparent"]["StringValue"] == TP


@pytest.mark.parametrize(
    "service, operation, params",
    [
        # botocore refuses these as the function wrote them; with the context they would pass or
        # fail with other words (the context in the user's exception)
        ("sqs", "SendMessage", {"MessageBody": "x", "MessageAttributes": None}),
        ("sns", "Publish", {"Message": "x", "MessageAttributes": None}),
        ("events", "PutEvents", {"Entries": [{"Source": "s", "DetailType": "t", "Detail": b'{"a":1}'}]}),
        ("stepfunctions", "StartExecution", {"input": b'{"a":1}'}),
        ("lambda", "Invoke", {"FunctionName": "f", "ClientContext": base64.b64encode(b'{"custom":{}}')}),
        # a client context no header can hold (a line break), or not UTF-8: sent as written
        ("lambda", "Invoke", {"FunctionName": "f", "ClientContext": base64.encodebytes(b'{"custom":{}}').decode()}),
        ("lambda", "Invoke", {"FunctionName": "f", "ClientContext": base64.b64encode('{"custom":{}}'.encode("utf-16")).decode()}),
        # the function's own context where context.w3c() reads it
        ("lambda", "Invoke", {"FunctionName": "f", "ClientContext": base64.b64encode(('{"w3c":{"traceparent":"%s"}}' % TP2).encode()).decode()}),
        # a payload carrying the function's own context at its top, which the consumer reads
        ("events", "PutEvents", {"Entries": [{"Source": "s", "DetailType": "t", "Detail": '{"traceparent": "%s", "a": 1}' % TP2}]}),
        ("stepfunctions", "StartExecution", {"input": '{"traceparent": "%s", "a": 1}' % TP2}),
        ("kinesis", "PutRecord", {"PartitionKey": "k", "Data": b'{"traceparent": "%s", "a": 1}' % TP2.encode()}),
        # a blob that is not UTF-8 JSON (UTF-16 here): not read, not rewritten
        ("kinesis", "PutRecord", {"PartitionKey": "k", "Data": '{"a":1}'.encode("utf-16-le")}),
    ],
)
def test_parameters_botocore_would_refuse_or_not_ours_to_read_are_left_as_written(service, operation, params):
    from lambdawrap.handler.outgoing import aws_carriers

    import copy

    sent = copy.deepcopy(params)
    aws_carriers.inject(service, operation, sent, {"traceparent": TP}, ENABLED)
    assert sent == params


def test_a_client_context_s_own_tracestate_stays_beside_our_traceparent():
    # GIVEN a client context whose custom object holds a tracestate of the function's own (no
    # traceparent) WHEN the context is carried THEN ours joins it, theirs is not replaced (as on
    # an HTTP request; before: replaced by the invocation's)
    from lambdawrap.handler.outgoing import aws_carriers

    params = {"FunctionName": "f", "ClientContext": base64.b64encode(b'{"custom":{"tracestate":"mine=1","k":"v"}}').decode()}
    assert aws_carriers.inject("lambda", "Invoke", params, {"traceparent": TP, "tracestate": "vendor=x"}, ENABLED)
    assert json.loads(base64.b64decode(params["ClientContext"]))["custom"] == {"tracestate": "mine=1", "k": "v", "traceparent": TP}


@pytest.mark.parametrize("text", ["\u00e9" * 1200, "\u65e5" * 800, "lone \ud800 surrogate"])
def test_a_client_context_s_text_goes_as_utf_8_within_the_platform_s_limit(text):
    # GIVEN a client context whose text is not ASCII, written as UTF-8: 1,200 accented letters
    # are 3,228 bytes of base64, within the platform's 3,583
    from lambdawrap.handler.outgoing import aws_carriers

    # (a lone surrogate, which UTF-8 cannot hold, written as its escape)
    written = json.dumps({"custom": {"note": text}}, ensure_ascii="\ud800" in text).encode("utf-8")
    params = {"FunctionName": "f", "ClientContext": base64.b64encode(written).decode()}
    # WHEN the context is carried
    assert aws_carriers.inject("lambda", "Invoke", params, {"traceparent": TP}, ENABLED)
    # THEN it goes, the text as it was (before: rewritten as escapes, 6 bytes a letter, over
    # the limit, and the call went without the context)
    sent = base64.b64decode(params["ClientContext"])
    assert json.loads(sent)["custom"] == {"note": text, "traceparent": TP}
    assert len(params["ClientContext"]) <= aws_carriers.MAX_CLIENT_CONTEXT_BYTES
    assert sent == written.replace(b'{"custom": {', b'{"custom": {"traceparent":"%s",' % TP.encode())


@pytest.mark.parametrize(
    "written, sent",
    [
        # numbers a parse and a dump would write otherwise (1e5 as 100000.0, 1e400 as Infinity,
        # which is not JSON), spacing, escapes, repeated keys: the last custom is the one read
        (' {"n": 1e5, "big": 1e400, "s": "\\u00e9",\n "custom": {"k": 1}, "custom" : { "k": 2 } }',
         ' {"n": 1e5, "big": 1e400, "s": "\\u00e9",\n "custom": {"k": 1}, "custom" : {%s, "k": 2 } }'),
        ('{"env": {"stage": "prod"}}', '{"custom":{%s},"env": {"stage": "prod"}}'),
        ('{"custom": null, "env": 1}', '{"custom": {%s}, "env": 1}'),
        ('{"custom": { }}', '{"custom": {%s }}'),
        ("{}", '{"custom":{%s}}'),
        (None, '{"custom":{%s}}'),
    ],
)
def test_a_client_context_gains_the_context_and_keeps_every_other_byte(written, sent):
    # GIVEN a client context as the function wrote it (or none) WHEN the context is carried
    from lambdawrap.handler.outgoing import aws_carriers

    params = {"FunctionName": "f"}
    if written is not None:
        params["ClientContext"] = base64.b64encode(written.encode()).decode()
    assert aws_carriers.inject("lambda", "Invoke", params, {"traceparent": TP, "tracestate": "vendor=x"}, ENABLED)
    # THEN ours is the custom object's first members, and every other byte is the function's
    # (before: parsed and dumped, compact, 1e5 as 100000.0, 1e400 left without the context)
    ours = '"traceparent":"%s","tracestate":"vendor=x"' % TP
    assert base64.b64decode(params["ClientContext"]).decode() == sent % ours
    assert json.loads(sent % ours)["custom"]["traceparent"] == TP


def test_a_json_payload_gains_the_context_and_keeps_every_other_byte():
    from lambdawrap.handler.outgoing import aws_carriers

    # Numbers a parse would round or make Infinity, repeated keys, spacing, non-ASCII text
    detail = ' {\n  "big": 1e400, "exact": 0.10000000000000000001, "k": 1, "k": 2, "name": "\u00e9t\u00e9"\n}'
    params = {"Entries": [{"Source": "s", "DetailType": "t", "Detail": detail}, {"Source": "s", "DetailType": "t", "Detail": "{}"}]}
    assert aws_carriers.inject("events", "PutEvents", params, {"traceparent": TP}, ENABLED)
    member = '"_lambdawrap":{"traceparent":"%s"}' % TP
    assert params["Entries"][0]["Detail"] == ' {' + member + ',\n  "big": 1e400, "exact": 0.10000000000000000001, "k": 1, "k": 2, "name": "\u00e9t\u00e9"\n}'
    assert params["Entries"][1]["Detail"] == "{" + member + "}"
    assert mc.payload_context(json.loads(params["Entries"][1]["Detail"])) == TP
    data = '{"order": "\u00e9"}'.encode("utf-8")
    record = {"PartitionKey": "k", "Data": data}
    assert aws_carriers.inject("kinesis", "PutRecord", record, {"traceparent": TP}, ENABLED)
    assert record["Data"] == b"{" + member.encode() + b"," + data[1:]


@pytest.mark.parametrize(
    "service, operation, params",
    [
        ("sqs", "SendMessageBatch", {"QueueUrl": "https://sqs.us-east-1.amazonaws.com/1/q", "Entries": [{"Id": "1", "MessageBody": "a"}, {"Id": "2", "MessageBody": "b"}]}),
        # botocore takes a tuple for a list (before: no count)
        ("sqs", "SendMessageBatch", {"QueueUrl": "https://sqs.us-east-1.amazonaws.com/1/q", "Entries": ({"Id": "1", "MessageBody": "a"}, {"Id": "2", "MessageBody": "b"})}),
        # SNS's batch (before: no count)
        ("sns", "PublishBatch", {"TopicArn": "arn:aws:sns:us-east-1:1:t", "PublishBatchRequestEntries": [{"Id": "1", "Message": "a"}, {"Id": "2", "Message": "b"}]}),
    ],
)
def test_a_batch_send_s_span_counts_its_messages(service, operation, params):
    # The messaging conventions: messaging.batch.message_count on an operation on a batch.
    from lambdawrap.handler.outgoing import aws_services

    attributes: dict = {}
    aws_services.request_attributes(service, operation, params, "us-east-1", attributes)
    assert attributes["messaging.batch.message_count"] == 2 and attributes["messaging.operation.type"] == "send"


@pytest.mark.parametrize("answer, count", [({"Messages": [{"MessageId": "a"}, {"MessageId": "b"}, {"MessageId": "c"}]}, 3), ({}, 0), ({"Messages": []}, 0)], ids=["three", "none", "empty"])
def test_a_receive_s_span_counts_the_messages_it_returned_none_included(answer, count):
    # The SQS conventions (v1.44.0): ReceiveMessage is an operation on a batch, whose count is
    # Conditionally Required, 0 among its examples (before: no count on any receive)
    from lambdawrap.handler.outgoing import aws_services

    attributes: dict = {}
    aws_services.response_attributes("sqs", "ReceiveMessage", answer, attributes)
    assert attributes == {"messaging.batch.message_count": count}


@pytest.mark.parametrize(
    "operation, answer, expected",
    [
        # One write's metrics, and a batch's per table: the size estimates stay
        ("PutItem", {"ItemCollectionMetrics": {"ItemCollectionKey": {"pk": {"S": "customer-4711"}}, "SizeEstimateRangeGB": [0.0, 1.0]}}, '{"SizeEstimateRangeGB": [0.0, 1.0]}'),
        ("BatchWriteItem", {"ItemCollectionMetrics": {"orders": [{"ItemCollectionKey": {"pk": {"S": "customer-4711"}}, "SizeEstimateRangeGB": [0.0, 1.0]}]}}, '{"orders": [{"SizeEstimateRangeGB": [0.0, 1.0]}]}'),
    ],
)
def test_a_dynamodb_write_s_item_collection_metrics_leave_out_the_items_key(operation, answer, expected):
    # An ItemCollectionKey holds the written items' partition key value, a value of an item,
    # which no span records (OpenTelemetry's instrumentation writes it; moto never answers one).
    from lambdawrap.handler.outgoing import aws_services

    attributes: dict = {}
    aws_services.response_attributes("dynamodb", operation, answer, attributes)
    assert attributes == {"aws.dynamodb.item_collection_metrics": expected}


class _Counting:
    """Stands for the module's regex or binascii, counting the calls that cost a try."""

    def __init__(self, real, name: str) -> None:
        self._real, self._name, self.calls = real, name, 0

    def __getattr__(self, attribute: str):
        found = getattr(self._real, attribute)
        if attribute != self._name:
            return found

        def counted(*args, **kwargs):
            self.calls += 1
            return found(*args, **kwargs)

        return counted


def _forged(count: int, context: str = "") -> str:
    # "traceparent" keys holding no context, in both windows a message is searched in; or seven
    # of them, then a context
    if context:
        return "{" + ", ".join([f'"traceparent": "x{count}-{i}"' for i in range(7)] + [f'"traceparent": "{context}"']) + "}"
    decoys = ", ".join(f'"traceparent": "00-{"0" * 32}-{"0" * 16}-01", "traceparent": "x{i}"' for i in range(8))
    return "{" + decoys + ', "pad": "' + "p" * 20_000 + '", ' + decoys + "}"


@pytest.mark.parametrize("ending", ["nothing", "a context"])
@pytest.mark.parametrize("source", ["sqs", "kinesis"])
def test_a_batch_of_forged_messages_costs_a_bounded_number_of_tries(source, ending, monkeypatch):
    from lambdawrap.handler.triggers import detect_trigger

    # GIVEN a batch of 255 messages made of "traceparent" keys holding no context (what anyone
    # who can write to the queue or stream can send), each ending with nothing or with one same
    # context, then one message with a real context of its own
    pattern = _Counting(mc._traceparent_pattern(), "match")
    decoder = _Counting(mc.binascii, "a2b_base64")
    monkeypatch.setattr(mc, "_pattern", pattern)
    monkeypatch.setattr(mc, "binascii", decoder)
    real = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    forged = "00-11111111111111111111111111111111-2222222222222222-01"
    bodies = [_forged(i, "" if ending == "nothing" else forged) for i in range(255)] + [json.dumps({"traceparent": real})]
    if source == "sqs":
        event = {"Records": [{"eventSource": "aws:sqs", "messageId": str(i), "body": body, "eventSourceARN": "arn:aws:sqs:us-east-1:1:q"} for i, body in enumerate(bodies)]}
    else:
        event = {"Records": [{"eventSource": "aws:kinesis", "eventSourceARN": "arn:aws:kinesis:us-east-1:1:stream/s", "kinesis": {"data": base64.b64encode(body.encode()).decode(), "sequenceNumber": str(i)}} for i, body in enumerate(bodies)]}
    trigger = detect_trigger(event)
    # THEN detection gives up on them after a bounded number of tries across the batch (before:
    # 8 per window, 2 windows per message: 4,080 regex matches, and 510 base64 decodes of
    # 2.7 KB for Kinesis, ~10 ms per invocation on a full core), the last message unread
    assert int(real[3:35], 16) not in [link.trace_id for link in trigger.links]
    assert pattern.calls <= 2 * mc._MAX_BATCH_MISSES and decoder.calls <= 2 * mc._MAX_BATCH_MISSES, (pattern.calls, decoder.calls)
    # ... and a batch read after it starts with its own tries
    assert detect_trigger({"Records": event["Records"][-1:]}).links[0].trace_id == int(real[3:35], 16)


def test_a_batch_whose_every_message_carries_a_context_is_read_whole():
    from lambdawrap.handler.triggers import detect_trigger

    # GIVEN 200 messages, each with its own context, a placeholder key before it
    contexts = [f"00-{i + 1:032x}-{i + 1:016x}-01" for i in range(200)]
    records = [{"eventSource": "aws:sqs", "messageId": str(i), "body": json.dumps({"traceparent": "none", "x": {"traceparent": value}})} for i, value in enumerate(contexts)]
    # THEN every context within the link limit is found: only tries that found nothing are bounded
    # (one per message here, 200 in all, beyond the bound)
    links = detect_trigger({"Records": records}).links
    assert len(links) == 128 and [link.span_id for link in links] == [i + 1 for i in range(128)]


def test_a_binary_traceparent_too_long_to_be_one_is_not_decoded(monkeypatch):
    from lambdawrap.handler.triggers import detect_trigger

    # GIVEN a batch whose messages each hold a Binary "traceparent" attribute of 8 KB (what
    # anyone who may send to the queue can send), and one holding a real context so
    decoder = _Counting(mc.binascii, "a2b_base64")
    monkeypatch.setattr(mc, "binascii", decoder)
    long = base64.b64encode(b"0" * 8000).decode()
    records = [{"eventSource": "aws:sqs", "messageId": str(i), "body": "{}", "eventSourceARN": "arn:aws:sqs:us-east-1:1:q", "messageAttributes": {"traceparent": {"dataType": "Binary", "binaryValue": long}}} for i in range(255)]
    records.append(dict(records[0], messageId="real", messageAttributes={"traceparent": {"dataType": "Binary", "binaryValue": base64.b64encode(TP.encode()).decode()}}))
    links = detect_trigger({"Records": records}).links
    # THEN only the real one is decoded (before: each 8 KB value was, then refused as too long)
    assert decoder.calls == 1 and [link.trace_id for link in links] == [int(TP[3:35], 16)]
