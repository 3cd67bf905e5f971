"""Tests for lambdawrap.devtools.otlp_receiver, driven by the real OpenTelemetry SDK and OTLP/HTTP exporters."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from lambdawrap.devtools.otlp_receiver import OtlpReceiver

RESOURCE = Resource.create({"service.name": "otlp-receiver-test", "deployment.environment": "test"})

# OTLP proto enum values, as the receiver reports them.
PROTO_KIND_SERVER = 2
PROTO_KIND_CLIENT = 3
PROTO_STATUS_ERROR = 2

LINK_TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
LINK_SPAN_ID = 0xB7AD6B7169203331


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests and urllib honour *_PROXY; a proxy configured in the environment must not
    # swallow loopback traffic.
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost,::1")


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rec:
        yield rec


@pytest.fixture
def tracer_provider(receiver: OtlpReceiver) -> Iterator[TracerProvider]:
    """A provider exporting each span synchronously at its end, so exports are deterministic."""
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(span_exporter(receiver)))
    yield provider
    provider.shutdown()


def span_exporter(receiver: OtlpReceiver, **kwargs: Any) -> OTLPSpanExporter:
    return OTLPSpanExporter(endpoint=receiver.endpoint + "/v1/traces", timeout=5, **kwargs)


def finished_spans(*names: str) -> List[ReadableSpan]:
    """Real SDK spans, captured in memory, to hand to an exporter's export() directly."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test.direct")
    for name in names:
        with tracer.start_as_current_span(name):
            pass
    spans = list(memory.get_finished_spans())
    provider.shutdown()
    return spans


def encoded_traces(*names: str) -> bytes:
    """An ExportTraceServiceRequest as the SDK would serialize it."""
    return encode_spans(finished_spans(*names)).SerializeToString()


def post(
    url: str,
    body: Optional[bytes],
    content_type: str = "application/x-protobuf",
    headers: Optional[Dict[str, str]] = None,
    method: str = "POST",
) -> Tuple[int, Dict[str, str], bytes]:
    """A raw urllib request; HTTP errors are returned, not raised."""
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": content_type})
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


# --------------------------------------------------------------------------------------------
# Traces, metrics, logs through the real SDK exporters
# --------------------------------------------------------------------------------------------


def test_spans_from_sdk_exporter_decode_with_ids_kinds_status_events_links(
    receiver: OtlpReceiver, tracer_provider: TracerProvider
) -> None:
    tracer = tracer_provider.get_tracer("test.scope")
    link_context = SpanContext(LINK_TRACE_ID, LINK_SPAN_ID, is_remote=True, trace_flags=TraceFlags(1))
    attributes = {"s": "text", "b": True, "i": 42, "f": 1.5, "ls": ["a", "b"], "li": [1, 2, 3]}
    with tracer.start_as_current_span("parent", kind=SpanKind.SERVER, attributes=attributes) as parent:
        with tracer.start_as_current_span(
            "child", kind=SpanKind.CLIENT, links=[Link(link_context, {"link.attr": "x"})]
        ) as child:
            child.add_event("something happened", {"event.count": 3})
            child.set_status(Status(StatusCode.ERROR, "boom"))

    spans = {span["name"]: span for span in receiver.wait_for_spans(count=2)}
    parent_ctx, child_ctx = parent.get_span_context(), child.get_span_context()
    trace_id = format(parent_ctx.trace_id, "032x")

    p, c = spans["parent"], spans["child"]
    assert p["trace_id"] == trace_id and c["trace_id"] == trace_id
    assert p["span_id"] == format(parent_ctx.span_id, "016x")
    assert c["span_id"] == format(child_ctx.span_id, "016x")
    assert p["parent_span_id"] == ""
    assert c["parent_span_id"] == p["span_id"]
    assert p["kind"] == PROTO_KIND_SERVER and c["kind"] == PROTO_KIND_CLIENT
    assert p["attributes"] == attributes
    assert c["status_code"] == PROTO_STATUS_ERROR and c["status_message"] == "boom"
    assert p["status_code"] == 0
    assert [(e["name"], e["attributes"]) for e in c["events"]] == [("something happened", {"event.count": 3})]
    assert c["events"][0]["time_unix_nano"] >= c["start_time_unix_nano"]
    assert c["links"] == [
        {
            "trace_id": format(LINK_TRACE_ID, "032x"),
            "span_id": format(LINK_SPAN_ID, "016x"),
            "attributes": {"link.attr": "x"},
            "flags": 0x300,  # the SDK's: the flags say whether the linked span is remote, and it is
        }
    ]
    assert (p["flags"], c["flags"]) == (0x100, 0x100)  # no parent, a local one
    assert 0 < p["start_time_unix_nano"] <= c["start_time_unix_nano"] <= c["end_time_unix_nano"]
    assert c["end_time_unix_nano"] <= p["end_time_unix_nano"]
    assert p["resource"]["service.name"] == "otlp-receiver-test"
    assert p["resource"]["deployment.environment"] == "test"
    assert p["scope"] == "test.scope"

    requests = receiver.requests()
    assert [r["status"] for r in requests] == [200, 200]
    assert all(r["path"] == "/v1/traces" and r["content_type"] == "application/x-protobuf" for r in requests)
    assert requests[0]["headers"]["user-agent"].startswith("OTel-OTLP-Exporter-Python/")
    raw = receiver.raw("traces")
    assert len(raw) == 2 and all(isinstance(m, trace_service_pb2.ExportTraceServiceRequest) for m in raw)


def test_metrics_counter_and_histogram_with_delta_temporality(receiver: OtlpReceiver) -> None:
    delta = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}
    exporter = OTLPMetricExporter(
        endpoint=receiver.endpoint + "/v1/metrics", timeout=5, preferred_temporality=delta
    )
    # A huge interval: exports happen only on force_flush, deterministically.
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    try:
        meter = provider.get_meter("test.meter")
        counter = meter.create_counter("requests", unit="1", description="requests served")
        histogram = meter.create_histogram(
            "latency", unit="ms", description="latency", explicit_bucket_boundaries_advisory=[1.0, 10.0, 100.0]
        )
        counter.add(3, {"route": "/a"})
        counter.add(4, {"route": "/a"})
        counter.add(1, {"route": "/b"})
        for value in (0.5, 5, 50, 500):
            histogram.record(value, {"route": "/a"})
        assert provider.force_flush(timeout_millis=10_000)

        points = receiver.wait_for_metrics(lambda m: m["name"] in ("requests", "latency"), count=3)
        sums = {p["attributes"]["route"]: p for p in points if p["name"] == "requests"}
        assert {route: p["value"] for route, p in sums.items()} == {"/a": 7, "/b": 1}
        for point in sums.values():
            assert point["type"] == "sum"
            assert point["is_monotonic"] is True
            assert point["temporality"] == "delta"
            assert point["unit"] == "1" and point["description"] == "requests served"
            assert 0 < point["start_time_unix_nano"] <= point["time_unix_nano"]
            assert point["resource"]["service.name"] == "otlp-receiver-test"

        (hist,) = [p for p in points if p["name"] == "latency"]
        assert hist["type"] == "histogram"
        assert hist["temporality"] == "delta"
        assert hist["count"] == 4
        assert hist["sum"] == pytest.approx(555.5)
        assert hist["explicit_bounds"] == [1.0, 10.0, 100.0]
        assert hist["bucket_counts"] == [1, 1, 1, 1]
        assert hist["min"] == 0.5 and hist["max"] == 500
        assert hist["value"] is None

        # Delta: the next collection carries only what was added since the previous one.
        receiver.clear()
        counter.add(2, {"route": "/a"})
        assert provider.force_flush(timeout_millis=10_000)
        (again,) = receiver.wait_for_metrics(lambda m: m["name"] == "requests")
        assert again["value"] == 2
    finally:
        provider.shutdown()


def test_logs_with_trace_context(receiver: OtlpReceiver) -> None:
    logger_provider = LoggerProvider(resource=RESOURCE)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=receiver.endpoint + "/v1/logs", timeout=5))
    )
    tracer_provider = TracerProvider(resource=RESOURCE)  # only to set an active span context
    try:
        otel_logger = logger_provider.get_logger("test.logger")
        with tracer_provider.get_tracer("t").start_as_current_span("logging-span") as span:
            otel_logger.emit(
                body="hello from a span",
                severity_number=SeverityNumber.WARN,
                severity_text="WARN",
                attributes={"k": "v", "n": 7},
            )
        otel_logger.emit(body={"structured": True, "items": [1, "x"]}, severity_number=SeverityNumber.INFO)
        assert logger_provider.force_flush(timeout_millis=10_000)

        records = receiver.wait_for_logs(count=2)
        first, second = sorted(records, key=lambda r: r["severity_number"], reverse=True)
        ctx = span.get_span_context()
        assert first["body"] == "hello from a span"
        assert first["severity_text"] == "WARN"
        assert first["severity_number"] == SeverityNumber.WARN.value
        assert first["trace_id"] == format(ctx.trace_id, "032x")
        assert first["span_id"] == format(ctx.span_id, "016x")
        assert first["attributes"] == {"k": "v", "n": 7}
        assert first["observed_time_unix_nano"] > 0
        assert first["resource"]["service.name"] == "otlp-receiver-test"
        assert first["scope"] == "test.logger"
        # Outside any span: no trace context; a map body decodes to a dict.
        assert second["body"] == {"structured": True, "items": [1, "x"]}
        assert second["trace_id"] == "" and second["span_id"] == ""
        assert isinstance(receiver.raw("logs")[0], logs_service_pb2.ExportLogsServiceRequest)
    finally:
        logger_provider.shutdown()
        tracer_provider.shutdown()


@pytest.mark.parametrize("compression", [Compression.Gzip, Compression.Deflate], ids=["gzip", "deflate"])
def test_compressed_export_decodes(receiver: OtlpReceiver, compression: Compression) -> None:
    exporter = span_exporter(receiver, compression=compression)
    try:
        assert exporter.export(finished_spans("compressed")) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    (span,) = receiver.wait_for_spans(lambda s: s["name"] == "compressed")
    assert span["resource"]["service.name"] == "otlp-receiver-test"
    (request,) = receiver.requests()
    assert request["content_encoding"] == compression.value
    assert request["headers"]["content-encoding"] == compression.value


def test_otlp_json_with_hex_ids(receiver: OtlpReceiver) -> None:
    trace_id, span_id, parent_id = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "eee19b7ec3c1b173"
    link_trace, link_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "json-scope"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "parentSpanId": parent_id,
                                "name": "json-span",
                                "kind": 2,
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": "1544712661000000000",
                                "attributes": [
                                    {"key": "str", "value": {"stringValue": "v"}},
                                    {"key": "int", "value": {"intValue": "42"}},
                                    {"key": "dbl", "value": {"doubleValue": 2.5}},
                                    {"key": "bool", "value": {"boolValue": True}},
                                    {
                                        "key": "arr",
                                        "value": {"arrayValue": {"values": [{"intValue": 1}, {"stringValue": "two"}]}},
                                    },
                                    {
                                        "key": "kv",
                                        "value": {
                                            "kvlistValue": {"values": [{"key": "nested", "value": {"boolValue": False}}]}
                                        },
                                    },
                                    {"key": "raw", "value": {"bytesValue": base64.b64encode(b"\x00\x01").decode()}},
                                ],
                                "events": [{"timeUnixNano": "1544712660500000000", "name": "ev"}],
                                "links": [{"traceId": link_trace, "spanId": link_span}],
                                "status": {"code": 2, "message": "bad"},
                                "someFutureField": {"ignored": True},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    status, headers, body = post(
        receiver.endpoint + "/v1/traces", json.dumps(document).encode(), content_type="application/json"
    )
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {}

    (span,) = receiver.wait_for_spans()
    assert (span["trace_id"], span["span_id"], span["parent_span_id"]) == (trace_id, span_id, parent_id)
    assert span["name"] == "json-span" and span["kind"] == PROTO_KIND_SERVER
    assert span["start_time_unix_nano"] == 1544712660000000000
    assert span["attributes"] == {
        "str": "v",
        "int": 42,
        "dbl": 2.5,
        "bool": True,
        "arr": [1, "two"],
        "kv": {"nested": False},
        "raw": b"\x00\x01",
    }
    assert span["events"] == [{"name": "ev", "attributes": {}, "dropped_attributes_count": 0, "time_unix_nano": 1544712660500000000}]
    assert span["links"] == [{"trace_id": link_trace, "span_id": link_span, "attributes": {}, "flags": 0}]
    assert (span["status_code"], span["status_message"]) == (PROTO_STATUS_ERROR, "bad")
    assert span["resource"] == {"service.name": "json-svc"} and span["scope"] == "json-scope"


def test_gzipped_otlp_json_logs(receiver: OtlpReceiver) -> None:
    document = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": "1700000000000000000",
                                "severityNumber": 17,
                                "severityText": "ERROR",
                                "body": {"stringValue": "json log"},
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                            }
                        ]
                    }
                ]
            }
        ]
    }
    body = gzip.compress(json.dumps(document).encode())
    status, _, _ = post(
        receiver.endpoint + "/v1/logs", body, content_type="application/json; charset=utf-8",
        headers={"Content-Encoding": "gzip"},
    )
    assert status == 200
    (record,) = receiver.wait_for_logs()
    assert record["body"] == "json log" and record["severity_text"] == "ERROR"
    assert record["severity_number"] == 17 and record["time_unix_nano"] == 1700000000000000000
    assert (record["trace_id"], record["span_id"]) == ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174")


# --------------------------------------------------------------------------------------------
# Error answers and HTTP behaviour
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, expected",
    [
        ("POST", "/v1/unknown", 404),
        ("GET", "/", 404),
        ("GET", "/v1/traces", 405),
        ("PUT", "/v1/metrics", 405),
        ("DELETE", "/v1/logs", 405),
        ("PATCH", "/v1/traces", 405),
    ],
)
def test_unknown_path_and_wrong_method(receiver: OtlpReceiver, method: str, path: str, expected: int) -> None:
    status, headers, body = post(receiver.endpoint + path, b"x" if method != "GET" else None, method=method)
    assert status == expected
    assert b"Traceback" not in body
    if expected == 405:
        assert headers["Allow"] == "POST"
    assert receiver.spans() == [] and receiver.metrics() == [] and receiver.logs() == []


@pytest.mark.parametrize(
    "content_type, encoding, body, expected",
    [
        ("application/x-protobuf", None, b"definitely not protobuf", 400),
        ("application/json", None, b"{not json", 400),
        ("application/json", None, b"[1, 2]", 400),
        ("application/json", None, b'{"resourceSpans": "not a list"}', 400),
        ("application/x-protobuf", "gzip", b"not gzip at all", 400),
        ("application/x-protobuf", "deflate", b"not deflate either", 400),
        ("application/x-protobuf", "br", b"", 415),
        ("text/plain", None, b"hello", 415),
    ],
)
def test_undecodable_bodies_get_short_4xx_without_traceback(
    receiver: OtlpReceiver, content_type: str, encoding: Optional[str], body: bytes, expected: int
) -> None:
    headers = {"Content-Encoding": encoding} if encoding else {}
    status, _, answer = post(receiver.endpoint + "/v1/traces", body, content_type=content_type, headers=headers)
    assert status == expected
    assert b"Traceback" not in answer and 0 < len(answer) < 400
    assert receiver.spans() == []
    assert receiver.requests()[-1]["status"] == expected


def test_keep_alive_connection_survives_errors(receiver: OtlpReceiver) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=5)
    try:
        statuses = []
        sockets = set()
        for method, path, body in [
            ("POST", "/v1/traces", encoded_traces("ka-1")),
            ("POST", "/nope", b"abc"),
            ("GET", "/v1/traces", None),
            ("POST", "/v1/traces", b"\xff\xff\xff"),
            ("POST", "/v1/traces", encoded_traces("ka-2")),
        ]:
            conn.request(method, path, body=body, headers={"Content-Type": "application/x-protobuf"})
            response = conn.getresponse()
            response.read()
            assert response.getheader("Content-Length") is not None
            statuses.append(response.status)
            sockets.add(id(conn.sock))
        assert statuses == [200, 404, 405, 400, 200]
        assert len(sockets) == 1  # one connection served every request
    finally:
        conn.close()
    assert [s["name"] for s in receiver.wait_for_spans(count=2)] == ["ka-1", "ka-2"]


def test_protobuf_response_is_export_response(receiver: OtlpReceiver) -> None:
    status, headers, body = post(receiver.endpoint + "/v1/traces", encoded_traces("resp"))
    assert status == 200 and headers["Content-Type"] == "application/x-protobuf"
    response = trace_service_pb2.ExportTraceServiceResponse()
    response.ParseFromString(body)
    assert not response.HasField("partial_success")


def test_rejecting_a_signal_answers_a_partial_success_and_stores_none(receiver: OtlpReceiver) -> None:
    receiver.set_behaviour(reject="traces", remaining=1)
    status, _, body = post(receiver.endpoint + "/v1/traces", encoded_traces("refused"))
    response = trace_service_pb2.ExportTraceServiceResponse()
    response.ParseFromString(body)
    assert status == 200 and response.partial_success.rejected_spans == 1
    assert "rejected" in response.partial_success.error_message
    assert post(receiver.endpoint + "/v1/traces", encoded_traces("taken"))[0] == 200
    assert [s["name"] for s in receiver.spans()] == ["taken"]
    with pytest.raises(ValueError):
        receiver.set_behaviour(reject="profiles")


def test_concurrent_clients(receiver: OtlpReceiver) -> None:
    spans_to_send = finished_spans(*(f"t{t}-r{r}" for t in range(8) for r in range(5)))
    payloads = [encode_spans([span]).SerializeToString() for span in spans_to_send]
    errors: List[BaseException] = []

    def send(chunk: List[bytes]) -> None:
        try:
            for payload in chunk:
                assert post(receiver.endpoint + "/v1/traces", payload)[0] == 200
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(payloads[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    spans = receiver.wait_for_spans(count=40)
    assert len({s["name"] for s in spans}) == 40
    assert len(receiver.requests()) == 40


# --------------------------------------------------------------------------------------------
# Waiting helpers, clear()
# --------------------------------------------------------------------------------------------


def test_wait_times_out_with_a_listing_of_what_arrived(receiver: OtlpReceiver) -> None:
    with pytest.raises(TimeoutError, match="0 received"):
        receiver.wait_for_logs(timeout=0.05)
    assert post(receiver.endpoint + "/v1/traces", encoded_traces("only-this-one"))[0] == 200
    with pytest.raises(TimeoutError) as excinfo:
        receiver.wait_for_spans(lambda s: s["name"] == "something-else", timeout=0.05)
    message = str(excinfo.value)
    assert "0 matched, 1 received" in message and "only-this-one" in message


def test_wait_wakes_up_when_data_arrives_later(receiver: OtlpReceiver) -> None:
    payload = encoded_traces("late")
    result: "queue.Queue[List[Dict[str, Any]]]" = queue.Queue()
    waiter = threading.Thread(target=lambda: result.put(receiver.wait_for_spans(timeout=10)))
    waiter.start()
    assert post(receiver.endpoint + "/v1/traces", payload)[0] == 200
    waiter.join(timeout=10)
    assert [s["name"] for s in result.get(timeout=1)] == ["late"]


def test_clear_empties_everything(receiver: OtlpReceiver) -> None:
    assert post(receiver.endpoint + "/v1/traces", encoded_traces("gone"))[0] == 200
    receiver.wait_for_spans()
    receiver.clear()
    assert receiver.spans() == [] and receiver.requests() == [] and receiver.raw("traces") == []


def test_returned_items_are_copies(receiver: OtlpReceiver) -> None:
    assert post(receiver.endpoint + "/v1/traces", encoded_traces("copy"))[0] == 200
    receiver.wait_for_spans()[0]["attributes"]["mutated"] = True
    assert "mutated" not in receiver.spans()[0]["attributes"]


# --------------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------------


def test_status_500_is_not_retried_by_the_exporter_and_the_receiver_recovers(receiver: OtlpReceiver) -> None:
    receiver.set_behaviour(status=500, remaining=1)
    exporter = span_exporter(receiver)
    try:
        # The 1.45.2 exporter retries 429/502/503/504 only: a 500 fails the batch at once.
        assert exporter.export(finished_spans("lost")) is SpanExportResult.FAILURE
        assert [r["status"] for r in receiver.requests()] == [500]
        assert receiver.spans() == []
        # remaining=1 used up: the next export is accepted.
        assert exporter.export(finished_spans("kept")) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert [s["name"] for s in receiver.wait_for_spans()] == ["kept"]
    assert [r["status"] for r in receiver.requests()] == [500, 200]


def test_status_503_is_retried_and_the_span_arrives_once(receiver: OtlpReceiver) -> None:
    # Retry-After: 0 makes the exporter retry at once instead of after its ~1 s backoff.
    receiver.set_behaviour(status=503, retry_after=0, remaining=1)
    exporter = span_exporter(receiver)
    try:
        assert exporter.export(finished_spans("retried")) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert [s["name"] for s in receiver.wait_for_spans()] == ["retried"]
    assert len(receiver.spans()) == 1
    requests = receiver.requests()
    assert [r["status"] for r in requests] == [503, 200]
    assert requests[0]["bytes"] == requests[1]["bytes"] > 0


def test_429_with_retry_after_visible_to_raw_client(receiver: OtlpReceiver) -> None:
    receiver.set_behaviour(status=429, retry_after=7)
    for _ in range(2):  # no `remaining`: it sticks until reset
        status, headers, body = post(receiver.endpoint + "/v1/traces", encoded_traces("throttled"))
        assert status == 429 and headers["Retry-After"] == "7"
        assert b"Traceback" not in body
    receiver.reset_behaviour()
    assert post(receiver.endpoint + "/v1/traces", encoded_traces("accepted"))[0] == 200
    assert [s["name"] for s in receiver.spans()] == ["accepted"]
    assert [r["status"] for r in receiver.requests()] == [429, 429, 200]


def test_delay(receiver: OtlpReceiver) -> None:
    receiver.set_behaviour(delay_s=0.3, remaining=1)
    payload = encoded_traces("slow")
    started = time.monotonic()
    status, _, _ = post(receiver.endpoint + "/v1/traces", payload)
    elapsed = time.monotonic() - started
    assert status == 200
    assert elapsed >= 0.3
    assert [s["name"] for s in receiver.spans()] == ["slow"]


def test_delay_combined_with_error_status(receiver: OtlpReceiver) -> None:
    receiver.set_behaviour(delay_s=0.2, status=503, remaining=1)
    started = time.monotonic()
    status, _, _ = post(receiver.endpoint + "/v1/traces", encoded_traces("slow-fail"))
    assert status == 503 and time.monotonic() - started >= 0.2
    assert receiver.spans() == []


def test_close_connection_fails_a_raw_client(receiver: OtlpReceiver) -> None:
    receiver.set_behaviour(close_connection=True, remaining=1)
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=5)
    try:
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            conn.request("POST", "/v1/traces", body=encoded_traces("dropped"),
                         headers={"Content-Type": "application/x-protobuf"})
            conn.getresponse()
    finally:
        conn.close()
    assert receiver.spans() == []
    assert [r["status"] for r in receiver.requests()] == [None]
    # Back to normal afterwards.
    assert post(receiver.endpoint + "/v1/traces", encoded_traces("after"))[0] == 200


def test_close_connection_is_retried_immediately_by_the_exporter(receiver: OtlpReceiver) -> None:
    receiver.set_behaviour(close_connection=True, remaining=1)
    exporter = span_exporter(receiver)
    try:
        assert exporter.export(finished_spans("reconnected")) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert [s["name"] for s in receiver.wait_for_spans()] == ["reconnected"]
    assert [r["status"] for r in receiver.requests()] == [None, 200]


def test_set_behaviour_validates() -> None:
    rec = OtlpReceiver()
    with pytest.raises(ValueError):
        rec.set_behaviour(status=42)
    with pytest.raises(ValueError):
        rec.set_behaviour(delay_s=-1)
    with pytest.raises(ValueError):
        rec.set_behaviour(remaining=0)


# --------------------------------------------------------------------------------------------
# JSONL, lifecycle, binding
# --------------------------------------------------------------------------------------------


def test_jsonl_file(tmp_path: Any) -> None:
    path = tmp_path / "received.jsonl"
    with OtlpReceiver(jsonl_path=str(path)) as rec:
        attrs = [{"key": "blob", "value": {"bytesValue": base64.b64encode(b"\xca\xfe").decode()}}]
        doc = {"resourceSpans": [{"scopeSpans": [{"spans": [
            {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "j1",
             "attributes": attrs},
            {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b175", "name": "j2"},
        ]}]}]}
        assert post(rec.endpoint + "/v1/traces", json.dumps(doc).encode(), "application/json")[0] == 200
        logs_doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "l1"}}]}]}]}
        assert post(rec.endpoint + "/v1/logs", json.dumps(logs_doc).encode(), "application/json")[0] == 200
        metrics_doc = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [
            {"name": "g", "gauge": {"dataPoints": [{"asDouble": 0.25, "timeUnixNano": "1"}]}},
        ]}]}]}
        assert post(rec.endpoint + "/v1/metrics", json.dumps(metrics_doc).encode(), "application/json")[0] == 200
        # Refused requests are not written.
        rec.set_behaviour(status=503, remaining=1)
        assert post(rec.endpoint + "/v1/traces", json.dumps(doc).encode(), "application/json")[0] == 503

    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(line["signal"], line.get("name") or line.get("body")) for line in lines] == [
        ("span", "j1"),
        ("span", "j2"),
        ("log", "l1"),
        ("metric", "g"),
    ]
    assert lines[0]["attributes"] == {"blob": "cafe"}  # bytes rendered as hex
    assert lines[0]["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert lines[3]["type"] == "gauge" and lines[3]["value"] == 0.25 and lines[3]["temporality"] is None


def test_binds_loopback_only_and_rejects_other_hosts() -> None:
    with OtlpReceiver() as rec:
        host, port = rec.server_address
        assert host == "127.0.0.1" and port == rec.port > 0
        assert rec.endpoint == f"http://127.0.0.1:{port}"
    for host in ("0.0.0.0", "10.1.2.3", "example.com", ""):
        with pytest.raises(ValueError):
            OtlpReceiver(host=host)


def test_stop_frees_the_port_cuts_keepalive_connections_and_is_idempotent() -> None:
    rec = OtlpReceiver().start()
    port = rec.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", "/v1/traces", body=encoded_traces("before-stop"),
                     headers={"Content-Type": "application/x-protobuf"})
        assert conn.getresponse().read() is not None
        rec.stop()
        rec.stop()  # idempotent
        # The idle keep-alive connection was cut, not left serving after stop().
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            conn.request("POST", "/v1/traces", body=encoded_traces("after-stop"),
                         headers={"Content-Type": "application/x-protobuf"})
            conn.getresponse()
    finally:
        conn.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with OtlpReceiver(port=port) as again:  # the port can be bound again
        assert again.port == port
    with pytest.raises(RuntimeError):
        rec.start()


def test_stop_does_not_wait_for_a_delayed_answer() -> None:
    rec = OtlpReceiver().start()
    rec.set_behaviour(delay_s=30)
    conn = http.client.HTTPConnection("127.0.0.1", rec.port, timeout=10)
    try:
        conn.request("POST", "/v1/traces", body=encoded_traces("never"),
                     headers={"Content-Type": "application/x-protobuf"})
        started = time.monotonic()
        rec.stop()
        assert time.monotonic() - started < 5  # the 30 s delay was cut short
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            conn.getresponse()
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_prints_received_span_and_exits_cleanly(tmp_path: Any, sig: int) -> None:
    jsonl = tmp_path / "cli.jsonl"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lambdawrap.devtools.otlp_receiver", "--port", "0", "--jsonl", str(jsonl)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        banner = _next_line(lines, lambda l: "listening on" in l)
        endpoint = banner.rsplit(" ", 1)[-1]
        assert endpoint.startswith("http://127.0.0.1:")

        exporter = OTLPSpanExporter(endpoint=endpoint + "/v1/traces", timeout=5)
        try:
            assert exporter.export(finished_spans("cli-span")) is SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        line = _next_line(lines, lambda l: l.startswith("span "))
        assert "'cli-span'" in line and "trace_id=" in line

        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.stderr is not None and proc.stdout is not None
    stderr = proc.stderr.read()
    proc.stderr.close()
    reader.join(timeout=5)  # the process is gone, so its stdout has reached EOF
    proc.stdout.close()
    assert "Traceback" not in stderr
    (record,) = [json.loads(l) for l in jsonl.read_text(encoding="utf-8").splitlines()]
    assert record["signal"] == "span" and record["name"] == "cli-span"


def _next_line(lines: "queue.Queue[Optional[str]]", want: Any, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no matching line from the CLI; got {seen!r}")
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            raise AssertionError(f"CLI stdout closed; got {seen!r}")
        seen.append(line)
        if want(line):
            return line


def test_cli_reports_a_port_in_use() -> None:
    with OtlpReceiver() as rec:
        proc = subprocess.run(
            [sys.executable, "-m", "lambdawrap.devtools.otlp_receiver", "--port", str(rec.port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 2
    assert "cannot listen" in proc.stderr and "Traceback" not in proc.stderr
