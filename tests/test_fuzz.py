"""Fuzzing every parser on both sides of the layer with hypothesis: no input makes an exception
escape, into the function (handler side) or out of a companion thread.

- the invocation wrapper as a whole: any event, headers, result or exception (trigger
  detection, trace context, links, status codes, payload capture, the record it sends);
- trace context headers on their own;
- configuration (every LAMBDAWRAP_* variable, the secrets syntax);
- the local socket: frames (any bytes, any split), records (any JSON object);
- telemetry batches (any JSON, and real batches mutated), down to the spans and metrics built;
- redaction, the secrets API's request handling, the extensions API response parser.
"""

from __future__ import annotations

import calendar
import collections
import decimal
import json
import logging
import os
import socket
import time
import types
import unittest.mock
from datetime import datetime

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lambdawrap.handler import trace_context as tc
from lambdawrap.shared.framing import MAX_RECORD_BYTES, FrameReader, decode_json, encode, encode_json
from lambdawrap.handler.invocation import FAILURES, MAX_ATTRIBUTE_CHARS, InvocationTracer
from lambdawrap.handler.redact import REDACTED, TRUNCATED, payload_text, redaction_keys
from lambdawrap.shared.secret_sources import SecretSource, parse_sources
from lambdawrap.companion.correlator import Correlator, parse_time_ns
from lambdawrap.shared.records import encode_invocation_start, invocation_problem
from lambdawrap.companion.http_lite import ConnectionClosed, decode_body, read_response
from lambdawrap.companion.secrets_api import SecretsHttpApi
from lambdawrap.shared.settings import FlushStrategy, Settings
from support import corpus
from support.recording import CONTEXT, tracer
from support.stack import EVENTS

FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_LIGHT = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=30)
json_values = st.recursive(scalars, lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5), max_leaves=25)
hex_ids = st.sampled_from(["0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "0" * 32, "f" * 16, "xyz", ""])
header_values = st.text(max_size=60) | st.sampled_from(
    [
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        "ff-" + "0" * 32 + "-" + "0" * 16 + "-01",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        "Root=;Parent=;Sampled=",
    ]
) | json_values
header_maps = st.dictionaries(st.sampled_from(["traceparent", "Traceparent", "TRACEPARENT", "tracestate", "X-Amzn-Trace-Id", "Host", "User-Agent", "Authorization"]) | st.text(max_size=10), header_values, max_size=6) | json_values


def sample(kind: str) -> dict:
    return json.loads((EVENTS / f"{kind}.json").read_text())


SAMPLE_KINDS = sorted(path.stem for path in EVENTS.glob("*.json"))


@st.composite
def events(draw) -> object:
    """Any JSON value, or a real event with parts replaced by anything."""
    if draw(st.booleans()):
        return draw(json_values)
    event = sample(draw(st.sampled_from(SAMPLE_KINDS)))
    for _ in range(draw(st.integers(0, 4))):
        node = event
        path = draw(st.lists(st.sampled_from(["headers", "requestContext", "Records", 0, "http", "messageAttributes", "traceparent", "Sns", "body", "queryStringParameters", "multiValueHeaders", "attributes", "AWSTraceHeader"]), min_size=1, max_size=4))
        for key in path[:-1]:
            nxt = node.get(key) if isinstance(node, dict) else node[key] if isinstance(node, list) and isinstance(key, int) and key < len(node) else None
            if not isinstance(nxt, (dict, list)):
                break
            node = nxt
        last = path[-1]
        if isinstance(node, dict) and not isinstance(last, int):
            node[last] = draw(header_maps if last in ("headers", "multiValueHeaders") else json_values)
    if isinstance(event, dict) and draw(st.booleans()):
        event["headers"] = draw(header_maps)
    return event




# Malformed fields: wrong types, nulls, huge strings, deep nesting, near-valid trace context.
DEEP_LIST: list = []
DEEP_DICT: dict = {}
_node_list, _node_dict = DEEP_LIST, DEEP_DICT
for _ in range(5000):
    _node_list.append([])
    _node_list = _node_list[0]
    _node_dict["d"] = {}
    _node_dict = _node_dict["d"]
MALFORMED = [
    None, True, 0, -1, 2**70, 1e308, float("nan"), "", " ", "x" * 6_000_000, "%" * 100_000, "arn:" + "a:" * 100_000,
    [], {}, [None], [[]], DEEP_LIST, DEEP_DICT, {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", [{"traceparent": [300, -1]}], {"bytes": ["a"]},
]


def _paths(node: object, depth: int = 0):
    """Every (container, key) down to a few levels of a parsed event."""
    if depth > 6:
        return
    items = node.items() if isinstance(node, dict) else enumerate(node[:3]) if isinstance(node, list) else ()
    for key, child in items:
        yield node, key
        yield from _paths(child, depth + 1)


@st.composite
def malformed_corpus_events(draw) -> object:
    """A corpus event of any source with a few of its fields replaced by malformed values."""
    event = corpus.load(draw(st.sampled_from(CORPUS_FILES)))
    # The places are taken before any change, so the shared malformed values are never changed.
    places = list(_paths(event))
    for _ in range(draw(st.integers(1, 4)) if places else 0):
        node, key = draw(st.sampled_from(places))
        node[key] = draw(st.sampled_from(MALFORMED))
    return event


CORPUS_FILES = corpus.event_files()


@pytest.fixture(autouse=True)
def _no_internal_failures():
    before = FAILURES.count
    yield
    assert FAILURES.count == before, "the wrapper recorded an internal error"


# ---------------------------------------------------------------------------------------------
# The invocation wrapper: events, headers, trace context, results, payload capture.


@FUZZ
@given(events(), json_values | st.builds(object) | st.binary(max_size=20), st.booleans(), st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=80) | st.none())
def test_wrapper_passes_any_event_and_result_through_and_sends_a_valid_record(event, result, capture, xray):
    wrapper, channel = tracer(capture_payload=capture, redact_keys=redaction_keys(("password", "token")))
    handler = wrapper.wrap(lambda e, c: result)
    if xray is None:
        os.environ.pop("_X_AMZN_TRACE_ID", None)
    else:
        os.environ["_X_AMZN_TRACE_ID"] = xray
    try:
        assert handler(event, CONTEXT) is result
    finally:
        os.environ.pop("_X_AMZN_TRACE_ID", None)
    (record,) = channel.records
    # The companion accepts what the handler side sends: the two ends agree on the format.
    assert invocation_problem(record) is None, record
    assert len(encode(record)) <= MAX_RECORD_BYTES
    start, end = record["start"], record["end"]
    assert all(len(v) <= MAX_ATTRIBUTE_CHARS for v in start["attributes"].values() if isinstance(v, str))
    if capture:
        assert isinstance(start["request_payload"], str) and isinstance(end["response_payload"], str)
    else:
        assert "request_payload" not in start and "response_payload" not in end


@FUZZ
@given(malformed_corpus_events(), st.booleans())
def test_malformed_fields_in_events_of_every_source_give_a_valid_record(event, capture):
    # GIVEN an event of any source whose fields have the wrong type, are null, huge or deeply
    # nested WHEN the wrapper sees it THEN the handler's result comes back and the record sent
    # is one the companion accepts, small enough for the channel.
    wrapper, channel = tracer(capture_payload=capture)
    assert wrapper.wrap(lambda e, c: "ok")(event, CONTEXT) == "ok"
    (record,) = channel.records
    assert invocation_problem(record) is None, record
    assert len(encode(record)) <= MAX_RECORD_BYTES
    assert len(record["start"]["span_name"]) <= MAX_ATTRIBUTE_CHARS


@FUZZ_LIGHT
@given(events(), st.sampled_from([ValueError("v"), KeyError("k"), MemoryError(), SystemExit(3), KeyboardInterrupt()]))
def test_wrapper_lets_the_users_exception_through_untouched(event, error):
    wrapper, channel = tracer(capture_payload=True)

    def handler(e, c):
        raise error

    with pytest.raises(type(error)) as raised:
        wrapper.wrap(handler)(event, CONTEXT)
    assert raised.value is error
    assert channel.records[0]["end"]["error"]["type"] == type(error).__qualname__


@FUZZ
@given(header_maps, st.text(max_size=80) | st.none() | json_values)
def test_trace_context_never_raises_and_yields_valid_ids(headers, xray):
    parent, source = tc.extract_parent(headers, xray)
    assert source in ("traceparent", "xray", "none")
    if parent is None:
        assert source == "none"
    else:
        assert 0 < parent.trace_id < 2**128 and 0 < parent.span_id < 2**64
    for name in ("traceparent", "X-Amzn-Trace-Id", ""):
        value = tc.header(headers, name)
        assert value is None or isinstance(value, str)


# ---------------------------------------------------------------------------------------------
# Configuration.

VARIABLES = [
    "LAMBDAWRAP_DISABLED", "LAMBDAWRAP_LOG_LEVEL", "LAMBDAWRAP_SOCKET", "LAMBDAWRAP_FLUSH", "LAMBDAWRAP_FLUSH_BUDGET_MS",
    "LAMBDAWRAP_BUFFER_MAX_SPANS", "LAMBDAWRAP_CAPTURE_PAYLOAD", "LAMBDAWRAP_REDACT_KEYS", "LAMBDAWRAP_PROACTIVE_INIT_MS",
    "LAMBDAWRAP_SECRETS", "LAMBDAWRAP_SECRETS_TIMEOUT_MS", "LAMBDAWRAP_SECRETS_TTL", "LAMBDAWRAP_SECRETS_REQUIRED",
    "LAMBDAWRAP_SECRETS_PORT", "LAMBDAWRAP_SECRETS_COMPAT_PORT", "LAMBDAWRAP_SECRETS_TOKEN", "LAMBDAWRAP_SECRETS_ALLOW_UNDECLARED",
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
]
config_values = st.text(max_size=30) | st.sampled_from(["true", "FALSE", " 1 ", "periodic,0", "periodic, 250", "end,", "nan", "inf", "-0", "1e3", "0x10", "１２", "  ", "optional", "Required", "65536"])


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@FUZZ
@given(st.dictionaries(st.sampled_from(VARIABLES), config_values, max_size=len(VARIABLES)))
def test_configuration_never_raises_warns_once_per_bad_value_and_stays_in_range(environ):
    collect = _Collect()
    log = logging.getLogger("lambdawrap")
    log.addHandler(collect)
    try:
        s = Settings.from_env(environ)
    finally:
        log.removeHandler(collect)
    # One warning at most per variable, naming it.
    for name in environ:
        assert len([m for m in collect.messages if f"ignoring {name}=" in m]) <= 1
    assert len(collect.messages) <= len(environ)
    assert isinstance(s.disabled, bool) and isinstance(s.capture_payload, bool) and isinstance(s.secrets_required, bool)
    assert s.log_level in ("debug", "info", "warning", "error") and s.metrics_temporality in ("delta", "cumulative", "lowmemory")
    assert isinstance(s.flush, FlushStrategy) and s.flush.mode in ("end", "periodic", "adaptive") and s.flush.interval_ms >= 1
    assert 0 <= s.flush_budget_ms <= 60_000 and 1 <= s.buffer_max_spans <= 1_000_000 and 1 <= s.secrets_port <= 65535
    assert 0 <= s.secrets_ttl_s and s.secrets_ttl_s == s.secrets_ttl_s and 0 <= s.secrets_timeout_ms <= 60_000
    assert s.secrets_compat_port is None or 1 <= s.secrets_compat_port <= 65535
    assert s.secrets_token in ("required", "optional") and isinstance(s.secrets_allow_undeclared, bool)
    assert all(isinstance(k, str) and k == k.lower() and k for k in s.redact_keys)


@FUZZ
@given(st.text(max_size=120) | st.lists(st.sampled_from(["A=ssm:/x", "B=secretsmanager:id#key@AWSCURRENT", "=", "1X=ssm:y", "C=vault:z", ",", " ", "D=secretsmanager:#", "E=ssm:"]), max_size=6).map(",".join))
def test_secrets_syntax_never_raises(spec):
    sources, problems = parse_sources(spec)
    assert all(isinstance(p, str) and "LAMBDAWRAP_SECRETS" in p for p in problems)
    assert all(s.env_name.isidentifier() for s in sources)


# ---------------------------------------------------------------------------------------------
# The local socket: frames and records.


@FUZZ
@given(st.binary(max_size=600), st.lists(st.integers(1, 64), max_size=8))
def test_frame_reader_returns_records_or_refuses_the_stream(data, cuts):
    reader = FrameReader(max_bytes=512)
    position = 0
    try:
        for cut in cuts + [len(data)]:
            for record in reader.feed(data[position : position + cut]):
                json.dumps(record)  # decoded JSON, nothing else
            position += cut
    except ValueError:
        pass  # a corrupt stream is refused as a whole: the server drops that connection


@FUZZ
@given(st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=4), min_size=1, max_size=4), st.lists(st.integers(1, 50), max_size=10))
def test_frames_round_trip_whatever_the_split(records, cuts):
    stream = b"".join(encode(r) for r in records)
    reader = FrameReader()
    out, position = [], 0
    for cut in cuts + [len(stream)]:
        out += reader.feed(stream[position : position + cut])
        position += cut
    assert out == [json.loads(json.dumps(r)) for r in records]


def _outcome(decode, data: bytes) -> tuple:
    try:
        return "value", decode(data)
    except RecursionError:
        return ("too deep",)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        return type(exc).__name__, str(exc)


# Bytes as they come: JSON values encoded (with what may surround or follow them), and anything.
json_documents = st.builds(
    lambda prefix, value, suffix, encoding: (prefix + json.dumps(value, ensure_ascii=encoding == "ascii") + suffix).encode("utf-8" if encoding == "ascii" else encoding, "surrogatepass"),
    st.sampled_from(["", " ", "\ufeff", "\n"]),
    json_values,
    st.sampled_from(["", " ", "\r\n", "\x0b", " 1", "]", "\u2028", "\x00"]),
    st.sampled_from(["ascii", "utf-8", "utf-16", "utf-16-le", "utf-32"]),
)


@FUZZ
@given(json_documents | st.binary(max_size=80) | st.builds(lambda head, tail: head + tail, st.sampled_from([b"{", b"[", b"{\x00", b"[\xed\xa0\x80"]), st.binary(max_size=40)))
def test_decode_json_answers_as_json_loads_does(data):
    # NaN never equals itself: compare what both decoded through their JSON text.
    expected, got = _outcome(json.loads, data), _outcome(decode_json, data)
    assert json.dumps(got, default=repr) == json.dumps(expected, default=repr)


class _Text(str):
    pass


any_text = st.text(st.characters(exclude_categories=()), max_size=30)  # lone surrogates too
attribute_values = st.one_of(any_text, st.integers(-(2**70), 2**70), st.floats(), st.booleans(), st.lists(st.text(max_size=6), max_size=3), json_values)
span_contexts = st.builds(tc.SpanContext, st.integers(1, 2**128 - 1), st.integers(1, 2**64 - 1), st.booleans())
# What a context may hand as a request id: text, or anything else, encoded as its repr (a mock
# claims to be a str; a Decimal's str is not its repr).
request_ids = st.one_of(any_text, st.builds(_Text, any_text), st.just(unittest.mock.Mock(spec=str)), st.just(decimal.Decimal("1.10")), st.none(), st.integers())


def _start_object(request_id, function_arn, trace_id, span_id, parent_span_id, sampled, start_ns, cold_start, proactive_init, trigger, attributes, links, span_name, span_kind) -> dict:
    """The start part as shared/records.py's table describes it: the oracle for its encoder."""
    return {
        "request_id": request_id,
        "function_arn": function_arn,
        "trace_id": f"{trace_id:032x}",
        "span_id": f"{span_id:016x}",
        "parent_span_id": f"{parent_span_id:016x}" if parent_span_id else "",
        "sampled": sampled,
        "start_ns": start_ns,
        "cold_start": cold_start,
        "proactive_init": proactive_init,
        "trigger": trigger,
        "span_name": span_name,
        "span_kind": span_kind,
        "attributes": attributes,
        "links": [[f"{link.trace_id:032x}", f"{link.span_id:016x}", link.sampled] for link in links],
    }


@FUZZ
@given(
    request_ids,
    any_text,
    st.integers(0, 2**64 - 1),
    st.dictionaries(st.one_of(any_text, st.integers(), st.booleans(), st.none()), attribute_values, max_size=6),
    st.lists(span_contexts, max_size=3),
    any_text,
    st.booleans(),
    st.booleans(),
    st.one_of(st.none(), any_text),
    st.booleans(),
)
def test_the_start_record_is_written_as_the_json_encoder_writes_it(request_id, function_arn, parent, attributes, links, name, sampled, cold, payload, init):
    # The start is written field by field before every handler call; the companion decodes
    # it as JSON, and the in-flight slot holds the same bytes: they must be json's, byte for byte.
    fields = dict(request_id=request_id, function_arn=function_arn, trace_id=2**128 - 1, span_id=1, parent_span_id=parent, sampled=sampled, start_ns=time.time_ns(), cold_start=cold, proactive_init=not cold, trigger="apigw-rest", attributes=attributes, links=links, span_name=name, span_kind=4)
    init_span = [f"{2**127 + 5:032x}", f"{2**63 + 9:016x}"] if init else None
    expected = _start_object(**fields)
    if payload is not None:
        expected["request_payload"] = payload
    if init_span is not None:
        expected["init_span"] = init_span
    assert encode_invocation_start(**fields, request_payload=payload, init_span=init_span) == encode_json(expected)


def test_the_start_record_is_the_same_without_the_c_encoder(monkeypatch):
    # An interpreter without json's C accelerator takes the encoder's Python path.
    from lambdawrap.shared import framing

    fields = dict(request_id="r\u00e9\ud800", function_arn="arn", trace_id=7, span_id=8, parent_span_id=0, sampled=True, start_ns=1, cold_start=False, proactive_init=True, trigger="sqs", attributes={"a": [1.5, float("nan"), {"b": None}], 3: "x"}, links=[tc.SpanContext(1, 2, False)], span_name="n", span_kind=4)
    with_c = encode_invocation_start(**fields, request_payload="{}")
    monkeypatch.setattr(framing, "_OWN_VALUES", None)
    assert encode_invocation_start(**fields, request_payload="{}") == with_c == encode_json(dict(_start_object(**fields), request_payload="{}"))


def _real_record() -> dict:
    wrapper, channel = tracer()
    wrapper.wrap(lambda e, c: {"statusCode": 200})(sample("apigw-rest"), CONTEXT)
    return channel.records[0]


REAL_RECORD = json.dumps(_real_record())  # made once: strategies must not draw on `random`
# (part, field): the fields of the record and of its start and end parts.
RECORD_FIELDS = [(None, k) for k in json.loads(REAL_RECORD)] + [(part, k) for part in ("start", "end") for k in json.loads(REAL_RECORD)[part]]


def real_record() -> dict:
    return json.loads(REAL_RECORD)


@st.composite
def records(draw) -> dict:
    """Real records with fields replaced by anything, or any JSON object."""
    if draw(st.booleans()):
        record = draw(st.dictionaries(st.sampled_from([k for part, k in RECORD_FIELDS if part is None] + ["spans"]), json_values, max_size=10))
        record.setdefault("type", draw(st.sampled_from(["invocation", "spans", "secrets.get", "other"])))
        return record
    record = real_record()
    for part, field in draw(st.lists(st.sampled_from(RECORD_FIELDS), max_size=4)):
        target = record if part is None or not isinstance(record.get(part), dict) else record[part]
        target[field] = draw(json_values | hex_ids)
    return record


def signals_sink():
    """The companion's real sink (OpenTelemetry SDK), exporting nowhere."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource

    from lambdawrap.companion.signals import Signals

    return Signals(Settings(buffer_max_spans=100), Resource({}), MeterProvider())


@FUZZ
@given(st.lists(records(), max_size=5), st.sampled_from(["never", "before", "after"]))
def test_any_record_is_handled_and_only_announced_invocations_become_spans(batch, announce):
    sink = signals_sink()
    correlator = Correlator(sink, lambda reason, what: sink.dropped(reason))
    announced: collections.Counter = collections.Counter()
    for record in batch:
        rid = record.get("start", {}).get("request_id") if isinstance(record.get("start"), dict) else None
        if announce == "before" and isinstance(rid, str):
            correlator.on_invoke({"requestId": rid, "invokedFunctionArn": "arn:x"})
            announced[rid] += 1
        correlator.on_record(record)
        if announce == "after" and isinstance(rid, str):
            correlator.on_invoke({"requestId": rid, "invokedFunctionArn": "arn:x"})
            announced[rid] += 1
        sink.user_spans(record.get("spans"))
    sink.user_spans([r.get("spans") for r in batch])
    correlator.finish_overdue(now=time.monotonic() + 3600)  # records whose outcome never came...
    correlator.finish_unreported("spindown")  # ... are finished too, at the latest at SHUTDOWN
    # Spans only for ids the platform announced (the INVOKE and the record may come in either
    # order), each at most once per announcement (an INVOKE of an id again, after its first
    # invocation, is an asynchronous invocation's retry: an invocation of its own).
    ids = collections.Counter(span.attributes.get("faas.invocation_id") for span in sink.spans.take(len(sink.spans)) if "faas.invocation_id" in span.attributes)
    assert all(count <= announced[rid] for rid, count in ids.items()), (ids, announced)


# ---------------------------------------------------------------------------------------------
# Telemetry batches.

TELEMETRY_TYPES = ["platform.initStart", "platform.initRuntimeDone", "platform.initReport", "platform.start", "platform.runtimeDone", "platform.report", "platform.extension", "platform.logsDropped", "function", "extension"]


def real_batch(rid: str) -> list:
    return [
        {"time": "2024-01-01T00:00:00.000Z", "type": "platform.initStart", "record": {"phase": "init", "initializationType": "on-demand"}},
        {"time": "2024-01-01T00:00:00.050Z", "type": "platform.initReport", "record": {"phase": "init", "metrics": {"durationMs": 50.0}}},
        {"time": "2024-01-01T00:00:00.100Z", "type": "platform.start", "record": {"requestId": rid}},
        {"time": "2024-01-01T00:00:00.101Z", "type": "function", "record": "[INFO] hello"},
        {"time": "2024-01-01T00:00:00.200Z", "type": "platform.runtimeDone", "record": {"requestId": rid, "status": "timeout", "metrics": {"durationMs": 100.0}}},
        {"time": "2024-01-01T00:00:00.300Z", "type": "platform.report", "record": {"requestId": rid, "status": "timeout", "metrics": {"durationMs": 100.0, "billedDurationMs": 100, "maxMemoryUsedMB": 40}}},
    ]


@st.composite
def telemetry_batches(draw) -> list:
    if draw(st.booleans()):
        return draw(st.lists(json_values | st.fixed_dictionaries({"type": st.sampled_from(TELEMETRY_TYPES), "time": json_values, "record": json_values}), max_size=6))
    batch = real_batch(draw(st.sampled_from(["rid-1", "rid-2"])))
    for _ in range(draw(st.integers(0, 5))):
        event = draw(st.sampled_from(batch))
        where = draw(st.sampled_from(["time", "type", "record", "requestId", "status", "metrics", "durationMs", "phase"]))
        if where in ("time", "type", "record"):
            event[where] = draw(json_values)
        elif isinstance(event.get("record"), dict):
            target = event["record"]
            if where == "durationMs" and isinstance(target.get("metrics"), dict):
                target = target["metrics"]
            target[where] = draw(json_values)
    return batch


@FUZZ
@given(st.lists(telemetry_batches(), min_size=1, max_size=3))
def test_any_telemetry_batch_is_handled(batches):
    sink = signals_sink()
    correlator = Correlator(sink, lambda reason, what: sink.dropped(reason))
    correlator.on_invoke({"requestId": "rid-1", "invokedFunctionArn": "arn:x"})
    for batch in batches:
        correlator.on_telemetry(batch)
    correlator.finish_unreported("spindown")
    # rid-1 was announced: whatever the telemetry said, it is accounted for exactly once.
    spans = sink.spans.take(len(sink.spans))
    accounted = sum(1 for span in spans if span.attributes.get("faas.invocation_id") == "rid-1") + sink.dropped_by_reason["record_missing"] + sink.dropped_by_reason["malformed_record"]
    assert accounted == 1
    assert not [s for s in spans if s.attributes.get("faas.invocation_id") == "rid-2"]  # never announced


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "1" + "0" * 400, "1e15", "-1e15"])
@pytest.mark.parametrize("field", ["initReport durationMs", "runtimeDone durationMs", "report durationMs", "report billedDurationMs", "report maxMemoryUsedMB"])
def test_a_number_no_span_can_hold_in_telemetry_loses_nothing_else(number, field):
    # GIVEN a telemetry batch, decoded as the listener decodes it, with one number that is not
    # finite or beyond any duration (JSON decoders take NaN, Infinity and 1e999; 1e15 ms ends a
    # span past what OTLP's timestamps hold)
    kind, name = field.split()
    batch = real_batch("rid-1")
    next(event["record"] for event in batch if event["type"] == f"platform.{kind}")["metrics"][name] = "bad"
    batch_text = json.dumps(batch).replace('"bad"', number)
    sink = signals_sink()
    correlator = Correlator(sink, lambda reason, what: sink.dropped(reason))
    correlator.on_invoke({"requestId": "rid-1", "invokedFunctionArn": "arn:x"})
    # WHEN it comes, then SHUTDOWN
    correlator.on_telemetry(decode_json(batch_text.encode()))
    correlator.finish_unreported("spindown")
    # THEN the invocation and the init are spans, each once, the value taken as missing (before:
    # the span building failed on it, the invocation was neither exported nor counted, and the
    # init span was lost, or SHUTDOWN failed with everything the environment had built)
    spans = sink.spans.take(len(sink.spans))
    assert [s.attributes.get("faas.invocation_id") for s in spans if s.attributes.get("faas.invocation_id")] == ["rid-1"], spans
    assert len([s for s in spans if s.name.endswith(" init")]) == 1, [s.name for s in spans]
    # ... each one OTLP can carry
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    assert encode_spans(spans).SerializeToString()
    assert sink.dropped_by_reason["record_missing"] + sink.dropped_by_reason["malformed_record"] == 0


@FUZZ
@given(st.lists(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)), min_size=1, max_size=40))
def test_telemetry_times_are_read_to_the_exact_millisecond_whatever_came_before(moments):
    # parse_time_ns keeps its last answers (a flood prints dozens of lines a millisecond): any
    # order and any repetition still gives each stamp its own instant.
    for moment in moments + moments[::-1] + moments:
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"  # as Lambda writes them
        expected = (calendar.timegm(moment.timetuple()) * 1000 + moment.microsecond // 1000) * 1_000_000
        assert parse_time_ns(stamp) == expected, stamp
    assert parse_time_ns("yesterday") is None and parse_time_ns(["2026-01-01T00:00:00.000Z"]) is None


# ---------------------------------------------------------------------------------------------
# Redaction, the secrets API, the extensions API client.

KEYS = redaction_keys(("password", "token"))
MARK = "SECRET-VALUE-3b1f"


@st.composite
def with_secrets(draw) -> object:
    """JSON values with the marker planted under redacted keys, at any depth."""
    value = draw(json_values)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(["password", "PassWord", "token", "Authorization", "cookie", "Set-Cookie"]))
        value = {key: MARK, "x": value} if draw(st.booleans()) else [value, {"nested": {key: [MARK, MARK]}}]
    return value


@FUZZ
@given(with_secrets(), st.integers(0, 3000))
def test_redaction_is_bounded_and_never_lets_a_marked_value_through(value, limit):
    text = payload_text(value, KEYS, limit=limit)
    assert isinstance(text, str) and len(text) <= limit + len(TRUNCATED)
    assert MARK not in text
    if not text.endswith(TRUNCATED):
        json.loads(text)  # complete output is valid JSON


@FUZZ
@given(json_values | st.binary(max_size=40) | st.builds(object), st.integers(0, 200))
def test_redaction_never_raises(value, limit):
    text = payload_text(value, KEYS, limit=limit)
    assert text is None or len(text) <= limit + len(TRUNCATED)
    if isinstance(value, dict) and text and not text.endswith(TRUNCATED):
        assert REDACTED in text or not any(str(k).lower() in KEYS for k in value)


class _NoStore:
    sources = [SecretSource("DB_PASSWORD", "secretsmanager", "prod/db", "password")]

    def answer(self, key):
        raise KeyError("secretId")


@pytest.fixture(scope="module", params=["required", "optional"])
def secrets_api(request):
    api = SecretsHttpApi(_NoStore(), "the-session-token", Settings(secrets_port=0, secrets_token=request.param, secrets_allow_undeclared=True))
    yield api
    api.stop()


request_paths = st.builds(
    lambda prefix, rest: prefix + rest,
    st.sampled_from(["/", "//", "/secretsmanager/get?", "/secretsmanager/get?secretId=", "/systemsmanager/parameters/get?name=", "/../", "http://[", "/secrets/", "/?name=", "/?name=%", "/secrets/%"]),
    st.text(max_size=60),
)


@FUZZ
@given(request_paths, st.text(max_size=30) | st.none())
def test_secrets_api_requests_never_raise_and_need_the_token(secrets_api, path, token):
    assume(token != "the-session-token")
    status, body = secrets_api.handle(path, token, "10.1.2.3")  # not loopback: the token is needed
    assert status == 401 and isinstance(body, dict)
    if token:  # a wrong token is refused whatever LAMBDAWRAP_SECRETS_TOKEN says
        assert secrets_api.handle(path, token)[0] == 401
    status, body = secrets_api.handle(path, "the-session-token")
    assert status in (200, 400, 404, 500) and isinstance(body, dict) and body.get("error") != "InternalError", body


@FUZZ
@given(st.binary(max_size=200) | st.builds(lambda status, body: b"HTTP/1.1 " + status + b"\r\nContent-Length: 5\r\n\r\n" + body, st.binary(max_size=6), st.binary(max_size=10)))
def test_extensions_api_responses_never_raise(raw):
    # Whatever the server sends before it closes: a response, or ConnectionClosed, nothing else.
    ours, server = socket.socketpair()
    with ours, server:
        server.sendall(raw)
        server.shutdown(socket.SHUT_WR)
        try:
            status, headers, body = read_response(ours)
        except ConnectionClosed:
            return
    assert isinstance(status, int) and isinstance(headers, dict) and isinstance(body, bytes)
    decode_body(body)
