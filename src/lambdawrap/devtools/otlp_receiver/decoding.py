"""Decoding of OTLP export bodies: Content-Encoding, OTLP/protobuf or OTLP/JSON, then flat dicts.

Each span, metric data point and log record becomes one plain dict (an ``Item``) that carries
its resource and scope, so tests can assert on it without walking the protobuf tree.
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from lambdawrap.devtools.otlp_receiver.routes import Route

Item = Dict[str, Any]

# Raw (on-the-wire) and decompressed bodies above this are refused with 413: a test receiver
# must not be talked into buffering unbounded data or inflating a compression bomb.
MAX_BODY_BYTES = 64 * 1024 * 1024

PROTOBUF_TYPES = frozenset({"application/x-protobuf", "application/protobuf"})
JSON_TYPES = frozenset({"application/json"})

# OTLP/JSON deviates from the proto3 JSON mapping for these bytes fields: they are hex, not base64.
_HEX_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})

_TEMPORALITY = {1: "delta", 2: "cumulative"}


class BadRequest(Exception):
    """A request the receiver refuses; ``status`` and a short message go back to the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def decompress(body: bytes, encoding: str) -> bytes:
    """Undo ``Content-Encoding`` (identity, gzip, deflate), bounded by MAX_BODY_BYTES."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        wbits_options: Tuple[int, ...] = (16 + zlib.MAX_WBITS,)
    elif encoding == "deflate":
        # "deflate" is zlib-wrapped per RFC 9110, but some clients send raw deflate: try both.
        wbits_options = (zlib.MAX_WBITS, -zlib.MAX_WBITS)
    else:
        raise BadRequest(415, f"unsupported Content-Encoding: {encoding}")
    last_error: Optional[Exception] = None
    for wbits in wbits_options:
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(body, MAX_BODY_BYTES)
            if inflater.unconsumed_tail:
                raise BadRequest(413, "decompressed body too large")
            out += inflater.flush()
        except zlib.error as exc:
            last_error = exc
            continue
        if not inflater.eof:
            last_error = zlib.error("truncated compressed body")
            continue
        return out
    raise BadRequest(400, f"cannot decode {encoding} body: {last_error}")


def _hex_to_base64(value: str) -> str:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        # Not hex: leave it for json_format, which accepts base64 (non-conformant clients).
        return value
    return base64.b64encode(raw).decode("ascii")


def _convert_hex_ids(node: Any) -> None:
    """Rewrite OTLP/JSON hex ids in place to the base64 json_format expects."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _HEX_ID_KEYS and isinstance(value, str):
                node[key] = _hex_to_base64(value)
            else:
                _convert_hex_ids(value)
    elif isinstance(node, list):
        for value in node:
            _convert_hex_ids(value)


def parse_body(route: Route, body: bytes, is_json: bool) -> Message:
    """Parse a (decompressed) body into the route's Export*ServiceRequest message."""
    message = route.request_type()
    if is_json:
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest(400, f"invalid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise BadRequest(400, "invalid OTLP/JSON: top level is not an object")
        _convert_hex_ids(document)
        try:
            json_format.ParseDict(document, message, ignore_unknown_fields=True)
        except Exception as exc:  # ParseError, TypeError, RecursionError...: all the client's fault
            raise BadRequest(400, f"invalid OTLP/JSON: {_shorten(str(exc))}") from None
    else:
        try:
            message.ParseFromString(body)
        except Exception as exc:  # DecodeError and friends
            raise BadRequest(400, f"invalid OTLP/protobuf: {_shorten(str(exc))}") from None
    return message


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _any_value(value: common_pb2.AnyValue) -> Any:
    """Decode an OTLP AnyValue into the matching Python value (None when unset)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    # string/bool/int/double/bytes map directly; string_value_strindex stays an index.
    return getattr(value, which)


def _attributes(pairs: Iterable[common_pb2.KeyValue]) -> Dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in pairs}


def _optional(message: Message, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


def _flatten_traces(request: trace_service_pb2.ExportTraceServiceRequest) -> List[Item]:
    spans: List[Item] = []
    for resource_entry in request.resource_spans:
        for scope_entry in resource_entry.scope_spans:
            scope_attributes = _attributes(scope_entry.scope.attributes)
            for span in scope_entry.spans:
                spans.append(_flat_span(_attributes(resource_entry.resource.attributes), scope_entry, scope_attributes, span, resource_entry.schema_url))
    return spans


def _flat_span(resource: Item, scope_entry: Any, scope_attributes: Item, span: Any, resource_schema_url: str = "") -> Item:
    scope, schema_url, version = scope_entry.scope.name, scope_entry.schema_url, scope_entry.scope.version
    return {
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex(),
        "flags": span.flags,
        "name": span.name,
        "kind": int(span.kind),
        "start_time_unix_nano": span.start_time_unix_nano,
        "end_time_unix_nano": span.end_time_unix_nano,
        "attributes": _attributes(span.attributes),
        "dropped_attributes_count": span.dropped_attributes_count,
        "dropped_events_count": span.dropped_events_count,
        "status_code": int(span.status.code),
        "status_message": span.status.message,
        "events": [
            {
                "name": event.name,
                "attributes": _attributes(event.attributes),
                "dropped_attributes_count": event.dropped_attributes_count,
                "time_unix_nano": event.time_unix_nano,
            }
            for event in span.events
        ],
        "links": [
            {
                "trace_id": link.trace_id.hex(),
                "span_id": link.span_id.hex(),
                "attributes": _attributes(link.attributes),
                "flags": link.flags,
            }
            for link in span.links
        ],
        "trace_state": span.trace_state,
        "resource": resource,
        "resource_schema_url": resource_schema_url,
        "scope": scope,
        "scope_version": version,
        "schema_url": schema_url,
        "scope_attributes": scope_attributes,
    }


def _metric_point(base: Item, point: Message, **fields: Any) -> Item:
    item = dict(base)
    item.update(
        {
            "attributes": _attributes(point.attributes),
            "value": None,
            "count": None,
            "sum": None,
            "bucket_counts": None,
            "explicit_bounds": None,
            "min": None,
            "max": None,
            "start_time_unix_nano": point.start_time_unix_nano,
            "time_unix_nano": point.time_unix_nano,
        }
    )
    item.update(fields)
    return item


def _scoped(resources: Any, scopes_field: str, items_field: str) -> Iterator[tuple]:
    """(resource attributes, scope name, scope schema URL, item, scope version) for every item
    of a request's resources."""
    for resource_entry in resources:
        resource = _attributes(resource_entry.resource.attributes)
        for scope_entry in getattr(resource_entry, scopes_field):
            for item in getattr(scope_entry, items_field):
                yield resource, scope_entry.scope.name, scope_entry.schema_url, item, scope_entry.scope.version


def _flatten_metrics(request: metrics_service_pb2.ExportMetricsServiceRequest) -> List[Item]:
    points: List[Item] = []
    for resource, scope, schema_url, metric, _version in _scoped(request.resource_metrics, "scope_metrics", "metrics"):
        kind = metric.WhichOneof("data")
        if kind is None:
            continue
        data = getattr(metric, kind)
        base: Item = {
            "name": metric.name,
            "description": metric.description,
            "unit": metric.unit,
            "type": kind,
            "is_monotonic": data.is_monotonic if kind == "sum" else None,
            "temporality": _TEMPORALITY.get(getattr(data, "aggregation_temporality", 0)),
            "resource": resource,
            "scope": scope,
            "schema_url": schema_url,
        }
        for point in data.data_points:
            if kind in ("sum", "gauge"):
                which = point.WhichOneof("value")
                value = getattr(point, which) if which else None
                points.append(_metric_point(base, point, value=value))
            elif kind == "histogram":
                points.append(
                    _metric_point(
                        base,
                        point,
                        count=point.count,
                        sum=_optional(point, "sum"),
                        bucket_counts=list(point.bucket_counts),
                        explicit_bounds=list(point.explicit_bounds),
                        min=_optional(point, "min"),
                        max=_optional(point, "max"),
                    )
                )
            elif kind == "exponential_histogram":
                points.append(
                    _metric_point(
                        base,
                        point,
                        count=point.count,
                        sum=_optional(point, "sum"),
                        min=_optional(point, "min"),
                        max=_optional(point, "max"),
                        scale=point.scale,
                        zero_count=point.zero_count,
                        positive={
                            "offset": point.positive.offset,
                            "bucket_counts": list(point.positive.bucket_counts),
                        },
                        negative={
                            "offset": point.negative.offset,
                            "bucket_counts": list(point.negative.bucket_counts),
                        },
                    )
                )
            else:  # summary
                points.append(
                    _metric_point(
                        base,
                        point,
                        count=point.count,
                        sum=point.sum,
                        quantile_values=[(q.quantile, q.value) for q in point.quantile_values],
                    )
                )
    return points


def _flatten_logs(request: logs_service_pb2.ExportLogsServiceRequest) -> List[Item]:
    records: List[Item] = []
    for resource, scope, schema_url, record, _version in _scoped(request.resource_logs, "scope_logs", "log_records"):
        records.append(
            {
                "body": _any_value(record.body) if record.HasField("body") else None,
                "severity_text": record.severity_text,
                "severity_number": int(record.severity_number),
                "trace_id": record.trace_id.hex(),
                "span_id": record.span_id.hex(),
                "flags": record.flags,
                "attributes": _attributes(record.attributes),
                "dropped_attributes_count": record.dropped_attributes_count,
                "event_name": record.event_name,
                "time_unix_nano": record.time_unix_nano,
                "observed_time_unix_nano": record.observed_time_unix_nano,
                "resource": resource,
                "scope": scope,
                "schema_url": schema_url,
            }
        )
    return records


FLATTENERS: Dict[str, Callable[[Any], List[Item]]] = {
    "traces": _flatten_traces,
    "metrics": _flatten_metrics,
    "logs": _flatten_logs,
}
