"""Tests for lambdawrap.handler.trace_context: W3C traceparent and X-Ray parsing/formatting, links, ids."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lambdawrap.handler import trace_context as tc
from lambdawrap.handler.triggers import detect_trigger
from lambdawrap.shared import ids
from lambdawrap.shared.ids import new_span_id, new_trace_id
from lambdawrap.handler.trace_context import (
    MAX_LINKS,
    MAX_SCANNED_MESSAGES,
    SpanContext,
    choose_parent,
    client_context_w3c,
    extract_parent,
    format_traceparent,
    format_xray,
    header,
    parse_message_context,
    parse_traceparent,
    parse_xray,
    xray_root_trace_id,
)

def extract_links(event):
    """The span links an invocation gets for an event (its trigger reads them)."""
    return detect_trigger(event).links


EVENTS = Path(__file__).resolve().parent.parent / "examples" / "events"

TRACE_HEX = "0af7651916cd43dd8448eb211c80319c"
SPAN_HEX = "b7ad6b7169203331"
VALID = f"00-{TRACE_HEX}-{SPAN_HEX}-01"
VALID_CTX = SpanContext(int(TRACE_HEX, 16), int(SPAN_HEX, 16), True)

XRAY_TRACE = 0x5759E988BD862E3FE1BE46A994272793
XRAY_SPAN = 0x53995C3F42CD8AD8

FUZZ = settings(max_examples=300, deadline=None, database=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=60),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=20), children, max_size=6),
    max_leaves=25,
)
# Small leaves for nesting inside structured strategies (keeps generation fast).
scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=60)
span_contexts = st.builds(
    SpanContext,
    st.integers(1, (1 << 128) - 1),
    st.integers(1, (1 << 64) - 1),
    st.booleans(),
)


def load(kind: str) -> dict:
    return json.loads((EVENTS / f"{kind}.json").read_text())


def assert_valid_context(ctx: object) -> None:
    assert isinstance(ctx, SpanContext)
    assert type(ctx.trace_id) is int and 0 < ctx.trace_id < 1 << 128
    assert type(ctx.span_id) is int and 0 < ctx.span_id < 1 << 64
    assert type(ctx.sampled) is bool


# --- traceparent ------------------------------------------------------------------------------


def test_parse_traceparent_valid_sampled():
    # GIVEN the W3C example value WHEN parsed THEN ids and the sampled flag come out
    assert parse_traceparent(VALID) == VALID_CTX


def test_parse_traceparent_not_sampled_and_other_flag_bits():
    # Only bit 0 of the flags means "sampled"; other bits (e.g. level 2 "random") are ignored.
    assert parse_traceparent(f"00-{TRACE_HEX}-{SPAN_HEX}-00").sampled is False
    assert parse_traceparent(f"00-{TRACE_HEX}-{SPAN_HEX}-02").sampled is False
    assert parse_traceparent(f"00-{TRACE_HEX}-{SPAN_HEX}-03").sampled is True
    assert parse_traceparent(f"00-{TRACE_HEX}-{SPAN_HEX}-ff").sampled is True


def test_parse_traceparent_tolerates_surrounding_whitespace():
    assert parse_traceparent(f"  {VALID}\t") == VALID_CTX


@pytest.mark.parametrize(
    "value",
    [
        VALID.upper(),  # uppercase hex is not allowed
        f"00-{TRACE_HEX.upper()}-{SPAN_HEX}-01",
        f"00-{TRACE_HEX}-{SPAN_HEX.upper()}-01",
        f"00-{TRACE_HEX}-{SPAN_HEX}-0A",
        f"0A-{TRACE_HEX}-{SPAN_HEX}-01",
        f"00-{'0' * 32}-{SPAN_HEX}-01",  # all-zero trace id
        f"00-{TRACE_HEX}-{'0' * 16}-01",  # all-zero span id
        f"ff-{TRACE_HEX}-{SPAN_HEX}-01",  # version ff is forbidden
        f"00-{TRACE_HEX}-{SPAN_HEX}-01-extra",  # version 00 has no extra fields
        f"00-{TRACE_HEX}-{SPAN_HEX}-010",
        f"00-{TRACE_HEX[:-1]}-{SPAN_HEX}-01",  # wrong lengths
        f"00-{TRACE_HEX}0-{SPAN_HEX}-01",
        f"00-{TRACE_HEX}-{SPAN_HEX[:-1]}-01",
        f"00-{TRACE_HEX}-{SPAN_HEX}0-01",
        f"00-{TRACE_HEX}-{SPAN_HEX}-1",
        f"0-{TRACE_HEX}-{SPAN_HEX}-01",
        f"00_{TRACE_HEX}_{SPAN_HEX}_01",  # wrong separators
        f"00-{TRACE_HEX[:-2]}+1-{SPAN_HEX}-01",  # int() would accept "+" or "_"
        f"00-{TRACE_HEX[:-2]}_1-{SPAN_HEX}-01",
        f"00-{TRACE_HEX[:-2]} 1-{SPAN_HEX}-01",
        f"00-{TRACE_HEX}-{SPAN_HEX}-0g",
        f"00-{TRACE_HEX[:-1]}\u0661-{SPAN_HEX}-01",  # non-ASCII digit
        "",
        "00",
        None,
        55,
        b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        [VALID],
    ],
)
def test_parse_traceparent_rejects(value):
    assert parse_traceparent(value) is None


def test_parse_traceparent_future_version():
    # GIVEN a higher version WHEN it has the four known fields THEN they are used; extra fields
    # must start with "-" and are ignored.
    assert parse_traceparent(f"01-{TRACE_HEX}-{SPAN_HEX}-01") == VALID_CTX
    assert parse_traceparent(f"cc-{TRACE_HEX}-{SPAN_HEX}-01-what-the-future-will-be-like") == VALID_CTX
    assert parse_traceparent(f"cc-{TRACE_HEX}-{SPAN_HEX}-00-x").sampled is False
    # ...but not without the dash, nor shorter than version 00
    assert parse_traceparent(f"cc-{TRACE_HEX}-{SPAN_HEX}-01.what") is None
    assert parse_traceparent(f"cc-{TRACE_HEX}-{SPAN_HEX}-01x") is None
    assert parse_traceparent(f"cc-{TRACE_HEX}-{SPAN_HEX}-1") is None
    assert parse_traceparent(f"CC-{TRACE_HEX}-{SPAN_HEX}-01") is None


def test_format_traceparent():
    assert format_traceparent(VALID_CTX) == VALID
    assert format_traceparent(SpanContext(1, 2, False)) == f"00-{1:032x}-{2:016x}-00"


@pytest.mark.parametrize(
    "ctx",
    [
        SpanContext(0, 1, True),
        SpanContext(1, 0, True),
        SpanContext(1 << 128, 1, True),
        SpanContext(1, 1 << 64, True),
        SpanContext(-1, 1, True),
        SpanContext(True, 1, True),
        SpanContext("1", 1, True),
        None,
        "00-x",
    ],
)
def test_format_rejects_invalid_contexts(ctx):
    assert format_traceparent(ctx) == ""
    assert format_xray(ctx) == ""


@FUZZ
@given(span_contexts)
def test_traceparent_round_trip(ctx):
    assert parse_traceparent(format_traceparent(ctx)) == ctx


# --- X-Ray ------------------------------------------------------------------------------------


def test_parse_xray_valid():
    value = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    assert parse_xray(value) == SpanContext(XRAY_TRACE, XRAY_SPAN, True)


@pytest.mark.parametrize(
    "value",
    [
        "Parent=53995c3f42cd8ad8;Sampled=1;Root=1-5759e988-bd862e3fe1be46a994272793",
        "Sampled=1; Root=1-5759e988-bd862e3fe1be46a994272793 ;  Parent=53995c3f42cd8ad8",
        " Root = 1-5759e988-bd862e3fe1be46a994272793 ; Parent = 53995c3f42cd8ad8 ; Sampled = 1 ",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;"
        "Lineage=a87bd80c:1|68fd508a:5|c512fbe3:2",
        "Self=1-5759e988-00000000000000000000000a;Root=1-5759e988-bd862e3fe1be46a994272793;"
        "Parent=53995c3f42cd8ad8;Sampled=1",
        "Root=1-5759E988-BD862E3FE1BE46A994272793;Parent=53995C3F42CD8AD8;Sampled=1",
        "root=1-5759e988-bd862e3fe1be46a994272793;parent=53995c3f42cd8ad8;sampled=1",
    ],
)
def test_parse_xray_field_order_whitespace_and_extra_fields(value):
    assert parse_xray(value) == SpanContext(XRAY_TRACE, XRAY_SPAN, True)


@pytest.mark.parametrize(
    "value, trace_id",
    [
        ("Root=1-5759e988-bd862e3fe1be46a994272793", XRAY_TRACE),  # a bare Root, as a function may set
        (" root = 1-5759E988-BD862E3FE1BE46A994272793 ;Parent=53995c3f42cd8ad8", XRAY_TRACE),
        ("Root=1-5759e988-bd862e3fe1be46a994272793;Root=1-66666666-777777777777777777777777", XRAY_TRACE),
        ("Parent=53995c3f42cd8ad8;Sampled=1", None),
        ("Root=1-5759e988-bd862e3fe1be46a99427279", None),
        ("Root=15759e988bd862e3fe1be46a994272793", None),
        ("Root=1-00000000-000000000000000000000000", None),
        (None, None),
    ],
)
def test_xray_root_trace_id_reads_the_root_with_or_without_a_parent(value, trace_id):
    assert xray_root_trace_id(value) == trace_id


@pytest.mark.parametrize("sampled", ["Sampled=0", "Sampled=?", "", "Sampled=", "Sampled=yes"])
def test_parse_xray_not_sampled(sampled):
    value = f"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;{sampled}"
    assert parse_xray(value) == SpanContext(XRAY_TRACE, XRAY_SPAN, False)


@pytest.mark.parametrize(
    "value",
    [
        "Root=1-5759e988-bd862e3fe1be46a994272793",  # no Parent: nothing to continue
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
        "Parent=53995c3f42cd8ad8;Sampled=1",  # no Root
        "Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",  # unknown version
        "Root=1-5759e98-bd862e3fe1be46a9942727930;Parent=53995c3f42cd8ad8",  # misplaced dash
        "Root=1-5759e988-bd862e3fe1be46a99427279;Parent=53995c3f42cd8ad8",  # short
        "Root=1-5759e988-bd862e3fe1be46a9942727933;Parent=53995c3f42cd8ad8",  # long
        "Root=1-5759e988-bd862e3fe1be46a99427279g;Parent=53995c3f42cd8ad8",  # not hex
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8a",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=+3995c3f42cd8ad8",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=0000000000000000",
        "Root=1-00000000-000000000000000000000000;Parent=53995c3f42cd8ad8",
        "Root=1-5759e988-bd862e3fe1be46a994272793,Parent=53995c3f42cd8ad8",
        "",
        ";;;",
        None,
        42,
        {"Root": "1-5759e988-bd862e3fe1be46a994272793"},
    ],
)
def test_parse_xray_rejects(value):
    assert parse_xray(value) is None


def test_format_xray():
    ctx = SpanContext(XRAY_TRACE, XRAY_SPAN, True)
    assert format_xray(ctx) == (
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    )
    assert format_xray(ctx._replace(sampled=False)).endswith(";Sampled=0")
    assert format_xray(SpanContext(1, 1, False)) == (
        "Root=1-00000000-000000000000000000000001;Parent=0000000000000001;Sampled=0"
    )


@FUZZ
@given(span_contexts)
def test_xray_round_trip(ctx):
    assert parse_xray(format_xray(ctx)) == ctx


# --- header lookup and parent extraction ------------------------------------------------------


def test_header_lookup():
    headers = {"Traceparent": VALID, "x-list": ["a", "b"], "x-empty": [], "x-int": 5, "x-none": None}
    assert header(headers, "traceparent") == VALID
    assert header(headers, "TRACEPARENT") == VALID
    assert header({"traceparent": VALID}, "TraceParent") == VALID
    assert header(headers, "X-List") == "a"
    assert header(headers, "x-empty") is None
    assert header(headers, "x-int") is None
    assert header(headers, "x-none") is None
    assert header(headers, "missing") is None
    assert header({"x": [1, "a"]}, "x") is None
    assert header({1: "a", None: "b", "x": "c"}, "x") == "c"


@pytest.mark.parametrize("headers", [None, [], [("traceparent", VALID)], "traceparent", 3, {}, set()])
def test_header_non_dicts(headers):
    assert header(headers, "traceparent") is None


def test_header_survives_hostile_mapping():
    class Hostile(dict):
        def get(self, *args, **kwargs):
            raise RuntimeError("boom")

    assert header(Hostile(traceparent=VALID), "traceparent") is None


def test_extract_parent_prefers_traceparent():
    xray = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    assert extract_parent({"traceparent": VALID}, xray) == (VALID_CTX, "traceparent")


def test_extract_parent_falls_back_to_xray():
    xray = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0"
    expected = (SpanContext(XRAY_TRACE, XRAY_SPAN, False), "xray")
    assert extract_parent({"traceparent": VALID.upper()}, xray) == expected
    assert extract_parent(None, xray) == expected
    assert extract_parent({}, xray) == expected


def test_extract_parent_none():
    assert extract_parent(None, None) == (None, "none")
    assert extract_parent({"traceparent": "garbage"}, "Root=1-5759e988-bd862e3fe1be46a994272793") == (
        None,
        "none",
    )


def test_extract_parent_from_sample_events():
    from lambdawrap.handler.triggers import detect_trigger

    for kind in ("apigw-rest", "apigw-http"):
        trigger = detect_trigger(load(kind))
        assert extract_parent(trigger.headers, header(trigger.headers, "x-amzn-trace-id")) == (
            VALID_CTX,
            "traceparent",
        )
    # The ALB sample only carries an X-Ray header (with a Parent).
    trigger = detect_trigger(load("alb"))
    ctx, source = extract_parent(trigger.headers, header(trigger.headers, "X-Amzn-Trace-Id"))
    assert source == "xray" and ctx.span_id == XRAY_SPAN and ctx.sampled is True


# --- links ------------------------------------------------------------------------------------


def test_extract_links_sqs_sample():
    # GIVEN three records: W3C attribute, X-Ray system attribute only, and a repeat of the first
    # THEN two links, in record order, the duplicate dropped
    assert extract_links(load("sqs")) == [
        SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True),
        SpanContext(XRAY_TRACE, XRAY_SPAN, True),
    ]


def test_extract_links_sqs_prefers_w3c_over_xray():
    record = {
        "eventSource": "aws:sqs",
        "messageAttributes": {"traceparent": {"stringValue": VALID, "dataType": "String"}},
        "attributes": {"AWSTraceHeader": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8"},
    }
    assert extract_links({"Records": [record]}) == [VALID_CTX]


def test_sns_message_context_is_the_parent_not_a_link():
    # SNS hands over one message per invocation: its creation context parents the span.
    trigger = detect_trigger(load("sns"))
    assert trigger.links == []
    assert trigger.parent == SpanContext(int(TRACE_HEX, 16), 0xB9C7C989F97918E1, True)


def test_sns_batch_of_several_messages_links_instead():
    event = load("sns")
    event["Records"] = event["Records"] * 2
    trigger = detect_trigger(event)
    assert trigger.parent is None
    assert trigger.links == [SpanContext(int(TRACE_HEX, 16), 0xB9C7C989F97918E1, True)]


@pytest.mark.parametrize("kind", ["s3", "dynamodb", "kinesis", "apigw-rest", "eventbridge", "other"])
def test_extract_links_other_events(kind):
    assert extract_links(load(kind)) == []


def test_extract_links_skips_invalid_and_caps():
    def record(value):
        return {"eventSource": "aws:sqs", "messageAttributes": {"traceparent": {"stringValue": value}}}

    records = [record("garbage"), {"eventSource": "aws:sqs"}, "not a record", None]
    records += [record(f"00-{i + 1:032x}-{i + 1:016x}-01") for i in range(MAX_LINKS + 50)]
    links = extract_links({"Records": records})
    assert len(links) == MAX_LINKS == 128
    assert links[0] == SpanContext(1, 1, True)
    assert links[-1] == SpanContext(MAX_LINKS, MAX_LINKS, True)


def test_extract_links_deduplicates_by_ids():
    # Same ids with different flags are one link (the first one seen).
    records = [
        {"eventSource": "aws:sqs", "messageAttributes": {"traceparent": {"stringValue": VALID}}},
        {"eventSource": "aws:sqs", "messageAttributes": {"traceparent": {"stringValue": VALID[:-1] + "0"}}},
    ]
    assert extract_links({"Records": records}) == [VALID_CTX]


@pytest.mark.parametrize(
    "event",
    [None, 1, "Records", [], {}, {"Records": None}, {"Records": {"a": 1}}, {"Records": [1, [], None]}],
)
def test_extract_links_malformed(event):
    assert extract_links(event) == []


def test_links_come_from_the_first_messages_of_a_large_batch_only():
    # GIVEN 10,000 messages, the context in the last ones only WHEN detected THEN those are not
    # read: a batch of any size costs what MAX_SCANNED_MESSAGES messages do.
    class Counted(dict):
        reads = 0

        def get(self, *args):
            Counted.reads += 1
            return super().get(*args)

    records = [Counted(eventSource="aws:sqs", body="{}") for _ in range(10_000)]
    records[-1]["messageAttributes"] = {"traceparent": {"stringValue": VALID}}
    Counted.reads = 0
    assert extract_links({"Records": records}) == []
    # three reads for each message looked at (attributes, body, system attributes), a few for the batch
    assert Counted.reads <= 3 * MAX_SCANNED_MESSAGES + 10


def _padded_contexts() -> dict:
    """Events whose trace context value is padded to ~6 MB (Lambda's payload limit) with blanks."""
    padded = " " * 6_000_000 + VALID
    sns = json.loads((EVENTS / "sns.json").read_text())
    sns["Records"][0]["Sns"]["MessageAttributes"] = {"traceparent": {"Type": "String", "Value": padded}}
    sqs = json.loads((EVENTS / "sqs.json").read_text())
    sqs["Records"] = [dict(sqs["Records"][0], messageAttributes={"traceparent": {"stringValue": padded, "dataType": "String"}})]
    http = json.loads((EVENTS / "apigw-http.json").read_text())
    http["headers"]["traceparent"] = padded
    xray = json.loads((EVENTS / "apigw-http.json").read_text())
    xray["headers"].pop("traceparent", None)
    xray["headers"]["x-amzn-trace-id"] = "Sampled=1;" * 600_000
    return {"an SNS message attribute": sns, "an SQS message attribute": sqs, "an HTTP header": http, "an X-Ray header": xray}


@pytest.mark.parametrize("place", sorted(_padded_contexts()))
def test_a_6_mb_trace_context_value_costs_what_a_real_one_does(place):
    # GIVEN a traceparent padded with 6 MB of blanks (or an X-Ray header of 6 MB) WHEN the wrapper
    # reads the event's context THEN it is not read past its first characters: no context, at the
    # cost of a real one (before: blanks stripped at each of up to four readings, ~190 ms)
    import time

    from support.recording import recorded

    event = _padded_contexts()[place]
    costs = []
    for _ in range(3):
        started = time.perf_counter()
        record = recorded(event)["start"]
        costs.append(time.perf_counter() - started)
    assert not record["parent_span_id"] and record["links"] == []
    assert min(costs) < 0.03, f"{place}: {min(costs) * 1000:.1f} ms"


# --- the parent of the invocation span --------------------------------------------------------

XRAY_SAMPLED = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
XRAY_UNSAMPLED = XRAY_SAMPLED[:-1] + "0"
XRAY_CTX = SpanContext(XRAY_TRACE, XRAY_SPAN, True)
OTHER_TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OTHER_CTX = parse_traceparent(OTHER_TP)
MESSAGE_CTX = SpanContext(7, 9, True)


@pytest.mark.parametrize(
    "headers, client_context, message, xray, expected",
    [
        # A Lambda Invoke caller's client context first, before the traceparent of the HTTP
        # event it passed on; the platform's sampled X-Ray context is linked.
        ({"traceparent": VALID}, {"traceparent": OTHER_TP}, MESSAGE_CTX, XRAY_SAMPLED, (OTHER_CTX, XRAY_CTX, None)),
        ({"traceparent": VALID}, {"other": "x"}, MESSAGE_CTX, XRAY_SAMPLED, (VALID_CTX, XRAY_CTX, None)),
        ({"traceparent": VALID}, None, None, XRAY_UNSAMPLED, (VALID_CTX, None, None)),
        # ... with the tracestate and baggage of the same carrier as they came, never another's
        ({"traceparent": VALID, "tracestate": "a=b", "baggage": "k=v"}, {"traceparent": OTHER_TP, "tracestate": "x=y"}, None, None, (OTHER_CTX, None, ("x=y", None))),
        ({"traceparent": VALID, "Tracestate": "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7", "baggage": "userId=alice"}, {"traceparent": "garbage", "tracestate": "x=y"}, None, None,
         (VALID_CTX, None, ("congo=t61rcWkgMzE, rojo=00f067aa0ba902b7", "userId=alice"))),
        ({"Traceparent": VALID, "TraceState": ["a=b", "c=d"], "BAGGAGE": "k=v"}, None, None, None, (VALID_CTX, None, ("a=b", "k=v"))),
        ({"traceparent": "garbage", "tracestate": "a=b"}, {"traceparent": OTHER_TP, "tracestate": "x=y", "baggage": "k=v"}, None, None, (OTHER_CTX, None, ("x=y", "k=v"))),
        ({"traceparent": VALID, "tracestate": "k=" + "v" * 9000}, None, None, None, (VALID_CTX, None, None)),  # not read, nor carried
        # Then the message's own context.
        ({}, {"traceparent": OTHER_TP}, MESSAGE_CTX, None, (OTHER_CTX, None, None)),
        (None, {"traceparent": "garbage"}, MESSAGE_CTX, XRAY_SAMPLED, (MESSAGE_CTX, XRAY_CTX, None)),
        # Without any of those: a sampled X-Ray context, from the environment, then a header.
        (None, None, None, XRAY_SAMPLED, (XRAY_CTX, None, None)),
        ({"X-Amzn-Trace-Id": XRAY_SAMPLED}, None, None, XRAY_UNSAMPLED, (XRAY_CTX, None, None)),
        # An unsampled X-Ray header (which Lambda hands every invocation) is never a parent.
        ({"x-amzn-trace-id": XRAY_UNSAMPLED}, None, None, XRAY_UNSAMPLED, (None, None, None)),
        (None, None, None, None, (None, None, None)),
        # The caller's baggage without a W3C parent, read apart as OpenTelemetry's propagator
        # reads it (its client context's first); a tracestate belongs to a traceparent
        ({"baggage": "k=v", "tracestate": "a=b"}, None, None, XRAY_SAMPLED, (XRAY_CTX, None, (None, "k=v"))),
        ({"traceparent": "garbage", "Baggage": "k=v"}, {"baggage": "c=1"}, None, None, (None, None, (None, "c=1"))),
        ({"BAGGAGE": "k=v"}, {"other": "x"}, None, None, (None, None, (None, "k=v"))),
        ({"tracestate": "a=b"}, None, None, None, (None, None, None)),
    ],
)
def test_choose_parent(headers, client_context, message, xray, expected):
    assert choose_parent(headers, client_context, message, xray) == expected


XRAY_HEADER = "Root=1-6759e988-0123456789abcdef01234567;Parent=1122334455667788;Sampled=1"
@pytest.mark.parametrize(
    "propagators, headers, client_context, message, expected",
    [
        # none: no context from the event or its caller; the platform's sampled X-Ray a link
        ((), {"traceparent": VALID, "x-amzn-trace-id": XRAY_SAMPLED}, {"traceparent": OTHER_TP}, MESSAGE_CTX, (None, XRAY_CTX, None)),
        # without tracecontext: no W3C context (a header's, a client context's, a message's)
        # ... its baggage read apart, as OpenTelemetry's baggage propagator reads it
        (("baggage",), {"traceparent": VALID, "baggage": "k=v"}, {"traceparent": OTHER_TP}, MESSAGE_CTX, (XRAY_CTX, None, (None, "k=v"))),
        (("baggage",), {"traceparent": VALID}, {"traceparent": OTHER_TP, "baggage": "c=1"}, None, (XRAY_CTX, None, (None, "c=1"))),
        (("xray",), {"traceparent": VALID, "baggage": "k=v"}, None, None, (XRAY_CTX, None, None)),
        (("xray",), {"traceparent": VALID, "X-Amzn-Trace-Id": XRAY_HEADER}, None, None, (XRAY_CTX, None, None)),
        # with it: as by default
        (("tracecontext",), {"traceparent": VALID}, None, MESSAGE_CTX, (VALID_CTX, XRAY_CTX, None)),
        # a caller's baggage without a W3C parent, only where baggage is propagated
        (("tracecontext", "baggage"), {"baggage": "k=v"}, None, None, (XRAY_CTX, None, (None, "k=v"))),
        (("tracecontext",), {"baggage": "k=v"}, None, None, (XRAY_CTX, None, None)),
    ],
)
def test_the_parent_is_taken_only_from_the_propagators_otel_propagators_names(propagators, headers, client_context, message, expected):
    assert choose_parent(headers, client_context, message, XRAY_SAMPLED, propagators=propagators) == expected


@pytest.mark.parametrize("value, parent", [("none", None), ("xray", None), ("baggage", None), ("tracecontext,baggage", VALID_CTX.span_id), ("", VALID_CTX.span_id)])
def test_a_caller_s_traceparent_parents_the_invocation_only_with_tracecontext_in_otel_propagators(value, parent):
    # GIVEN an HTTP API event whose client sent a traceparent (unsampled: with the default
    # parent-based sampler, its flags would decide whether the invocation is recorded)
    from support.recording import CONTEXT

    from lambdawrap.handler.invocation import InvocationTracer
    from lambdawrap.shared.settings import Settings
    from support.recording import RecordingChannel

    event = {"version": "2.0", "routeKey": "GET /orders", "rawPath": "/orders", "headers": {"traceparent": VALID[:-2] + "00"}, "requestContext": {"http": {"method": "GET", "path": "/orders"}}}
    channel = RecordingChannel()
    wrapper = InvocationTracer(Settings.from_env({"OTEL_PROPAGATORS": value} if value else {}), channel, environ={})
    wrapper.wrap(lambda e, c: {"statusCode": 200})(event, CONTEXT)
    start = channel.records[0]["start"]
    # THEN the invocation joins the client's trace only where OpenTelemetry's own extraction,
    # with those propagators, would (before: always, OTEL_PROPAGATORS=none too)
    assert (int(start["parent_span_id"], 16) if start["parent_span_id"] else None) == parent
    assert (start["trace_id"] == "%032x" % VALID_CTX.trace_id) == (parent is not None)


@pytest.mark.parametrize("value, w3c_links", [("xray", False), ("baggage", False), ("none", False), ("tracecontext", True), ("", True)])
def test_a_batch_s_messages_are_linked_by_their_w3c_context_only_with_tracecontext_in_otel_propagators(value, w3c_links):
    # GIVEN an SQS batch (one message with a traceparent attribute and the AWSTraceHeader SQS
    # set, one with a traceparent in its body only) and a Kinesis one, each record's data
    # carrying a traceparent
    from support.recording import CONTEXT, RecordingChannel

    from lambdawrap.handler.invocation import InvocationTracer
    from lambdawrap.shared.settings import Settings

    def attribute(tp: str) -> dict:
        return {"traceparent": {"stringValue": tp, "dataType": "String"}}

    sqs = {"Records": [
        {"messageId": "1", "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q", "body": "{}", "messageAttributes": attribute(VALID), "attributes": {"AWSTraceHeader": XRAY_SAMPLED}},
        {"messageId": "2", "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q", "body": json.dumps({"traceparent": OTHER_TP}), "attributes": {}},
    ]}
    kinesis = {"Records": [
        {"eventSource": "aws:kinesis", "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/s", "eventID": str(n), "kinesis": {"partitionKey": "k", "sequenceNumber": str(n), "data": base64.b64encode(json.dumps({"traceparent": tp}).encode()).decode()}}
        for n, tp in enumerate((OTHER_TP, VALID))
    ]}
    channel = RecordingChannel()
    try:
        wrapper = InvocationTracer(Settings.from_env({"OTEL_PROPAGATORS": value} if value else {}), channel, environ={})
        handler = wrapper.wrap(lambda e, c: None)
        handler(sqs, CONTEXT)
        handler(kinesis, CONTEXT)
    finally:
        InvocationTracer(Settings.from_env({}), RecordingChannel(), environ={})  # the default again, for the tests after
    sqs_links, kinesis_links = [[(int(t, 16), int(s, 16)) for t, s, _ in record["start"]["links"]] for record in channel.records]
    other = tc.parse_traceparent(OTHER_TP)
    # THEN the messages' W3C contexts are links only where OpenTelemetry's extraction, with
    # those propagators, would read them (before: always); the X-Ray header SQS set, the
    # platform's, is the first message's link otherwise
    if w3c_links:
        assert sqs_links == [(VALID_CTX.trace_id, VALID_CTX.span_id), (other.trace_id, other.span_id)]
        assert kinesis_links == [(other.trace_id, other.span_id), (VALID_CTX.trace_id, VALID_CTX.span_id)]
    else:
        assert sqs_links == [(XRAY_CTX.trace_id, XRAY_CTX.span_id)]
        assert kinesis_links == []


ORDERS = [
    ("tracecontext", "xray-lambda"),  # OTEL_PROPAGATORS=tracecontext,baggage,xray-lambda (the conventions' example)
    ("xray-lambda",),
    ("xray-lambda", "tracecontext"),
    ("tracecontext", "xray", "xray-lambda"),  # the conventions call it invalid; the SDK still extracts
]
# Names as the propagators' default getter looks them up (case-sensitively; lambdawrap reads
# them in any case, as HTTP APIs lowercase them and REST APIs do not).
CARRIERS = [
    {},
    {"traceparent": VALID},
    {"X-Amzn-Trace-Id": XRAY_HEADER},
    {"traceparent": VALID, "X-Amzn-Trace-Id": XRAY_HEADER},
    {"traceparent": "garbage", "X-Amzn-Trace-Id": "Root=garbage"},
]


@pytest.mark.parametrize("order", ORDERS, ids=",".join)
@pytest.mark.parametrize("carrier", CARRIERS, ids=lambda c: "+".join(c) or "none")
@pytest.mark.parametrize("xray", [XRAY_SAMPLED, XRAY_UNSAMPLED, None], ids=["env-sampled", "env-unsampled", "no-env"])
def test_with_xray_lambda_the_parent_is_the_one_opentelemetry_s_propagators_extract(order, carrier, xray, monkeypatch):
    # GIVEN OTEL_PROPAGATORS naming xray-lambda (the semantic conventions' way to give Lambda's
    # X-Ray active tracing context priority: before, lambdawrap ignored the order and the HTTP
    # traceparent always won) WHEN the parent is chosen THEN it is the one the SDK's composite
    # propagator extracts with opentelemetry-propagator-aws-xray's propagators, sampled or not
    from opentelemetry import trace
    from opentelemetry.propagators.aws import AwsXRayLambdaPropagator, AwsXRayPropagator
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if xray is None:
        monkeypatch.delenv("_X_AMZN_TRACE_ID", raising=False)
    else:
        monkeypatch.setenv("_X_AMZN_TRACE_ID", xray)
    by_name = {"tracecontext": TraceContextTextMapPropagator(), "xray": AwsXRayPropagator(), "xray-lambda": AwsXRayLambdaPropagator()}
    extracted = trace.get_current_span(CompositePropagator([by_name[name] for name in order]).extract(carrier)).get_span_context()
    parent, link, _ = choose_parent(carrier, None, MESSAGE_CTX, xray, xray_lambda_order=order)
    if extracted.is_valid:
        assert parent is not None and (parent.trace_id, parent.span_id, parent.sampled) == (extracted.trace_id, extracted.span_id, extracted.trace_flags.sampled)
        # ... the single message's context, not chosen, is linked when X-Ray's was
        if parent.trace_id != VALID_CTX.trace_id:
            assert link == (VALID_CTX if "traceparent" in carrier and carrier["traceparent"] == VALID else MESSAGE_CTX)
    else:
        # nothing extracted (not on Lambda): lambdawrap's own order
        assert (parent, link) == choose_parent(carrier, None, MESSAGE_CTX, xray)[:2]


def test_with_xray_lambda_first_the_request_s_baggage_still_goes_on():
    # OpenTelemetry's baggage propagator reads baggage apart from the parent: the X-Ray
    # context is the parent, the request's traceparent a link, its baggage carried (its
    # tracestate, which belongs to that traceparent, not)
    headers = {"traceparent": VALID, "tracestate": "a=b", "baggage": "tenant=acme"}
    assert choose_parent(headers, None, None, XRAY_SAMPLED, xray_lambda_order=("xray-lambda",)) == (XRAY_CTX, VALID_CTX, (None, "tenant=acme"))
    assert choose_parent({"traceparent": VALID}, None, None, XRAY_SAMPLED, xray_lambda_order=("xray-lambda",)) == (XRAY_CTX, VALID_CTX, None)


class _CountedItems(dict):
    """A header object that counts the names its readers walk."""

    walked = 0

    def items(self):
        for item in super().items():
            self.walked += 1
            yield item


@pytest.mark.parametrize("order", [("xray-lambda",), ("tracecontext", "xray-lambda")], ids=",".join)
def test_with_xray_lambda_a_forged_event_s_huge_headers_are_not_walked_whole(order):
    # GIVEN an event whose own `headers` object (read with xray-lambda, as OpenTelemetry's Lambda
    # instrumentations read any event's) holds 400,000 names, its context written as clients do
    headers = _CountedItems({f"x-filler-{n}": "v" for n in range(400_000)})
    headers.update({"Traceparent": VALID, "X-Amzn-Trace-Id": XRAY_HEADER, "Baggage": "tenant=acme"})
    # WHEN the parent is chosen
    parent, _, beside = choose_parent(headers, None, None, XRAY_SAMPLED, xray_lambda_order=order)
    # THEN its context is found, and no more than a request's worth of names is walked (before:
    # every one, ~95 ms an invocation)
    assert parent is not None and beside == (None, "tenant=acme"), beside
    assert headers.walked <= 2 * tc.MAX_SCANNED_NAMES, headers.walked
    assert tc.header(headers, "traceparent") == VALID and tc.header(headers, "x-amzn-trace-id") == XRAY_HEADER
    # ... and a name in another case among the first ones is still found
    assert tc.header(_CountedItems({"TRACEPARENT": VALID}), "traceparent") == VALID


def test_an_invocation_without_a_traceparent_walks_its_headers_once():
    # GIVEN a REST API's headers as its client wrote them, with no traceparent (most invocations)
    headers = _CountedItems({f"X-Header-{n}": "v" for n in range(20)})
    headers.update({"X-Amzn-Trace-Id": XRAY_HEADER.replace("Sampled=1", "Sampled=0"), "Baggage": "tenant=acme"})
    # WHEN the parent is chosen
    parent, _, beside = choose_parent(headers, None, None, XRAY_SAMPLED.replace("Sampled=1", "Sampled=0"))
    # THEN the caller's baggage is found in the same walk that looked for a traceparent (before:
    # two walks, one for each)
    assert parent is None and beside == (None, "tenant=acme")
    assert headers.walked <= len(headers), headers.walked


_W3C_NAMES = ["traceparent", "Traceparent", "TRACEPARENT", "tracestate", "TraceState", "baggage", "Baggage", "BAGGAGE", "x"]


@FUZZ
@given(st.dictionaries(st.sampled_from(_W3C_NAMES) | st.text(max_size=12), st.text(max_size=60) | st.lists(st.text(max_size=60), max_size=2) | st.none() | st.integers(), max_size=6))
def test_fuzz_the_three_w3c_fields_are_read_as_header_reads_each(headers):
    # One name in one case each, as a client sends them: then the one walk that reads the three
    # finds what three header() lookups would (an empty tracestate or baggage is none). A
    # lowercase traceparent comes with lowercase names (HTTP APIs, function URLs, ALB): the other
    # two are then not walked for.
    assume(len({key.lower() for key in headers}) == len(headers) and "traceparent" not in headers)
    expected = [header(headers, name) for name in ("traceparent", "tracestate", "baggage")]
    expected[1:] = [value if value and len(value) <= tc.MAX_RAW_CHARS else None for value in expected[1:]]
    found = tc._w3c_fields(headers)
    assert (found[0], found[1] or None, found[2] or None) == tuple(expected)


def test_xray_lambda_order_is_read_from_otel_propagators():
    from lambdawrap.shared.settings import Settings

    def order(value: str) -> tuple:
        return Settings.from_env({"OTEL_PROPAGATORS": value}, warn=False).xray_lambda_order

    assert order("tracecontext,baggage,xray-lambda") == ("tracecontext", "xray-lambda")
    assert order(" XRAY-LAMBDA , tracecontext") == ("xray-lambda", "tracecontext")
    assert order("tracecontext,baggage,xray") == order("") == order("none,xray-lambda") == ()


@pytest.mark.parametrize(
    "value, expected",
    [
        ("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        (" congo=t61rcWkgMzE ,\t, rojo=1 ", "congo=t61rcWkgMzE,rojo=1"),  # blanks and empty members dropped
        ("tenant@system=v", "tenant@system=v"),  # a multi-tenant key
        ("a=1,a=2", ""),  # a repeated key
        ("Congo=1", ""),  # keys are lowercase
        ("congo", ""),  # not key=value
        ("congo=a,b", ""),  # a value with a comma is two members, one of them invalid
        (",".join(f"k{n}=v" for n in range(33)), ""),  # over 32 members
        ("k=" + "v" * 255 + ",j=" + "v" * 255, ""),  # over 512 characters: members over 128 go first
        # Over 512 characters: members over 128 go first, then from the end (W3C Trace Context),
        # not the whole state
        ("big=" + "b" * 200 + "," + ",".join(f"k{n}=" + "v" * 40 for n in range(12)), ",".join(f"k{n}=" + "v" * 40 for n in range(11))),
        (",".join(f"k{n}=" + "v" * 40 for n in range(12)), ",".join(f"k{n}=" + "v" * 40 for n in range(11))),
        # Valid at 2,125 characters: cut, not discarded (before: over 2,048 was discarded whole)
        (",".join([f"s{n}=v" for n in range(16)] + [f"b{n:02}=" + "x" * 250 for n in range(8)]), ",".join(f"s{n}=v" for n in range(16))),
        ("k=v," + "j" * 8190, ""),  # longer than any kept where it is found: not read
        (None, ""),
        (7, ""),
    ],
)
def test_parse_tracestate(value, expected):
    from lambdawrap.shared.w3c_fields import parse_tracestate

    assert parse_tracestate(value) == expected


class _ClientContext:
    def __init__(self, custom):
        self.custom = custom


class _Context:
    def __init__(self, w3c=None, custom=None):
        self.client_context = _ClientContext(custom) if custom is not None else None
        if w3c is not None:
            self.w3c = lambda: w3c


@pytest.mark.parametrize(
    "context, expected",
    [
        (_Context(w3c={"traceparent": VALID}, custom={"traceparent": OTHER_TP}), VALID),  # w3c() first
        (_Context(w3c={}, custom={"traceparent": OTHER_TP}), OTHER_TP),
        (_Context(w3c={"traceparent": "00-bad", "tracestate": "w=1"}, custom={"traceparent": OTHER_TP}), OTHER_TP),  # a malformed one hides nothing
        (_Context(custom={"traceparent": OTHER_TP}), OTHER_TP),
        (_Context(custom={"traceparent": 5}), None),
        # without a traceparent, those carrying a baggage alone (w3c() first)
        (_Context(w3c={"baggage": "k=1"}, custom={"baggage": "k=2"}), None),
        (_Context(custom={"baggage": "k=2"}), None),
        (_Context(w3c="not a dict", custom="not a dict"), None),
        (_Context(), None),
        (None, None),
        (object(), None),
    ],
)
def test_client_context_traceparent(context, expected):
    fields = client_context_w3c(context)
    assert (fields.get("traceparent") if fields is not None else None) == expected


def test_client_context_baggage_without_a_traceparent():
    assert client_context_w3c(_Context(w3c={"baggage": "k=1"}, custom={"baggage": "k=2"})) == {"baggage": "k=1"}
    assert client_context_w3c(_Context(w3c={"traceparent": "00-bad"}, custom={"baggage": "k=2", "other": "x"})) == {"baggage": "k=2", "other": "x"}


def test_client_context_of_a_hostile_context_is_none():
    class Hostile:
        def __getattr__(self, name):
            raise RuntimeError("boom")

    assert client_context_w3c(Hostile()) is None


@pytest.mark.parametrize(
    "found, expected",
    [((VALID, True), VALID_CTX), ("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1", None), ((None, False), None), (("garbage", True), None), (None, None)],
)
def test_parse_message_context(found, expected):
    assert parse_message_context(found) == expected


# --- ids --------------------------------------------------------------------------------------


def test_new_ids_in_range():
    for _ in range(1000):
        trace_id, span_id = new_trace_id(), new_span_id()
        assert 0 < trace_id < 1 << 128
        assert 0 < span_id < 1 << 64


def test_new_ids_never_zero(monkeypatch):
    # GIVEN a random source that first yields zeros WHEN ids are drawn THEN zero is skipped.
    draws = iter([0, 0, 7, 0, 9])
    monkeypatch.setattr(ids, "_getrandbits", lambda bits: next(draws))
    assert new_trace_id() == 7
    assert new_span_id() == 9


SRC = str(Path(__file__).resolve().parent.parent / "src")

DRAWS_IDS_IN_A_FORK = """
import os
from lambdawrap.shared.ids import new_trace_id

new_trace_id()
read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:  # child
    try:
        os.write(write_end, b"%x" % new_trace_id())
    finally:
        os._exit(0)
os.close(write_end)
parent_id = new_trace_id()
child_id = int(os.read(read_end, 64), 16)
os.waitpid(pid, 0)
print(parent_id, child_id)
"""


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs fork")
def test_ids_differ_after_fork():
    # GIVEN a forked child (of a process of its own: a fork of the test runner's, its threads
    # and their locks, may hang) WHEN parent and child both draw ids THEN they differ (the
    # child is reseeded)
    done = subprocess.run([sys.executable, "-c", DRAWS_IDS_IN_A_FORK], capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": SRC})
    parent_id, child_id = done.stdout.split()
    assert child_id != parent_id, done.stderr


# --- fuzzing: nothing raises, outputs keep their invariants ------------------------------------


@FUZZ
@given(st.one_of(st.text(max_size=80), json_values))
def test_fuzz_parsers(value):
    for parse in (parse_traceparent, parse_xray):
        ctx = parse(value)
        if ctx is not None:
            assert_valid_context(ctx)


@FUZZ
@given(
    st.lists(st.sampled_from(list("0123456789abcdefABCDEF-;= \t")), max_size=70).map("".join)
)
def test_fuzz_parsers_near_valid_text(value):
    # Text from the parsers' own alphabet reaches far deeper than random unicode.
    for parse in (parse_traceparent, parse_xray):
        ctx = parse(value)
        if ctx is not None:
            assert_valid_context(ctx)
    ctx = parse_traceparent(value)
    if ctx is not None:
        # A valid value round-trips on its ids and sampled bit.
        assert parse_traceparent(format_traceparent(ctx)) == ctx


@FUZZ
@given(json_values, st.text(max_size=20))
def test_fuzz_header(headers, name):
    value = header(headers, name)
    assert value is None or isinstance(value, str)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["traceparent", "Traceparent", "TRACEPARENT", "x"]) | st.text(max_size=5),
        st.text(max_size=60) | st.lists(st.text(max_size=60), max_size=2) | json_values,
        max_size=4,
    )
    | json_values,
    st.none() | st.text(max_size=100),
)
def test_fuzz_extract_parent(headers, xray):
    ctx, source = extract_parent(headers, xray)
    assert source in ("traceparent", "xray", "none")
    if source == "none":
        assert ctx is None
    else:
        assert_valid_context(ctx)


traceparent_texts = st.sampled_from(
    [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
    ]
) | st.text(max_size=60)


def maybe(values):
    return st.fixed_dictionaries({}, optional=values)


sqs_like_records = maybe(
    {
        "eventSource": st.sampled_from(["aws:sqs", "aws:sns"]) | scalars,
        "EventSource": st.sampled_from(["aws:sns"]) | scalars,
        "messageAttributes": maybe({"traceparent": maybe({"stringValue": traceparent_texts | scalars}) | scalars})
        | scalars,
        "attributes": maybe({"AWSTraceHeader": traceparent_texts | scalars}) | scalars,
        "Sns": maybe(
            {
                "MessageAttributes": maybe({"traceparent": maybe({"Value": traceparent_texts | scalars}) | scalars})
                | scalars
            }
        )
        | scalars,
    }
)


@FUZZ
@given(json_values | st.fixed_dictionaries({"Records": st.lists(sqs_like_records | scalars, max_size=8)}))
def test_fuzz_extract_links(event):
    links = extract_links(event)
    assert isinstance(links, list) and len(links) <= MAX_LINKS
    for ctx in links:
        assert_valid_context(ctx)
    assert len({(c.trace_id, c.span_id) for c in links}) == len(links)


@pytest.mark.parametrize("value", [object(), float("nan"), b"\x00", bytearray(b"x"), Ellipsis, {1, 2}])
def test_arbitrary_python_objects(value):
    assert parse_traceparent(value) is None
    assert parse_xray(value) is None
    assert header(value, "traceparent") is None
    assert extract_parent(value, value) == (None, "none")
    assert extract_links(value) == []
    assert extract_links({"Records": [value]}) == []


TRACESTATES = [
    "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
    " congo=t61rcWkgMzE ,\t, rojo=1 ",
    "tenant@system=v",
    "1tenant@system=v",
    "1vendor=abc",  # a simple key starts with a letter
    "a=1,a=2",
    "Congo=1",
    "congo",
    "congo=a,b",
    "k=v\r\nx: y",
    "k=" + "v" * 256,
    "k=has space",
    "k=trailing ",
    ",".join(f"k{n}=v" for n in range(32)),
    ",".join(f"k{n}=v" for n in range(33)),
    ",".join(f"k{n}=" + "v" * 40 for n in range(12)),  # over 512 characters
]


@pytest.mark.parametrize("value", TRACESTATES)
def test_parse_tracestate_keeps_what_opentelemetry_keeps(value, caplog):
    # The tracestate is given to the OpenTelemetry API (the user's spans) and SDK (the companion):
    # what lambdawrap keeps must be what they keep, or they log a warning into the function's
    # log at every invocation and drop it from the spans.
    from opentelemetry.trace import TraceState

    from lambdawrap.shared.w3c_fields import parse_tracestate

    kept = parse_tracestate(value)
    library = TraceState.from_header([value])
    if len(value) > 512:
        # The API keeps a longer one whole; W3C asks a propagator to cut it, as lambdawrap does
        assert TraceState.from_header([kept]).to_header() == kept and library.to_header().startswith(kept.partition(",")[0])
    elif kept:
        assert TraceState.from_header([kept]).to_header() == kept == library.to_header()
    else:
        assert len(library) == 0


@pytest.mark.parametrize(
    "value, expected",
    [
        ("userId=alice,tenant=acme", "userId=alice,tenant=acme"),
        ("  k=v ", "k=v"),
        ("tenant=acme\r\nX-Injected: yes", ""),  # it goes into the function's own request headers
        ("k=v\x00", ""),
        ("k=caf\u00e9", ""),
        ("noequals", ""),
        ("k=" + "v" * 8192, ""),
        (None, ""),
        # Members that are not key=value as W3C Baggage writes them go; the others stay
        ("=", ""),
        ("k=v,=x", "k=v"),
        (",,,=", ""),
        ("k=v w,j=1", "j=1"),
        ('k="v",j=1;prop=x;flag', "j=1;prop=x;flag"),
        ("user id=1,j = 2 ", "j = 2"),
        # ... properties too; and as OpenTelemetry's propagator reads it: 180 members, of up to
        # 4,096 characters each
        ("k=v;,j=1;;,l=2;bad prop,m=3; p ; q = r ", "m=3; p ; q = r"),
        (",".join(f"k{n}=v" for n in range(200)), ",".join(f"k{n}=v" for n in range(180))),
        ("big=" + "v" * 4093 + ",k=v", "k=v"),
    ],
)
def test_parse_baggage_keeps_only_what_can_be_a_header(value, expected):
    from lambdawrap.shared.w3c_fields import parse_baggage

    assert parse_baggage(value) == expected


@pytest.mark.parametrize("value", ["k=v,=x", "a=1, b = 2 ;p=1,c", "k=v w,j=1", 'k="v",j=%22', "k=v;p,j=ok", "x=1,,y=2", "t=a%2Cb", "k=v;,j=1;;,l=2;bad prop,m=3; p ; q = r ", ",".join(f"k{n}=v" for n in range(200)), "big=" + "v" * 4093 + ",k=v"])
def test_parse_baggage_keeps_the_entries_opentelemetry_keeps(value):
    # What lambdawrap carries on is what the function's own OpenTelemetry propagator would
    # read: the same entries, with the same values
    from opentelemetry.baggage import get_all
    from opentelemetry.baggage.propagation import W3CBaggagePropagator

    from lambdawrap.shared.w3c_fields import parse_baggage

    read = lambda text: dict(get_all(W3CBaggagePropagator().extract({"baggage": text}))) if text else {}
    assert read(parse_baggage(value)) == read(value)
    # ... and nothing it would drop: what is carried on is read whole
    kept = parse_baggage(value)
    assert len(read(kept)) == (kept.count(",") + 1 if kept else 0)
