"""A real OTLP/HTTP receiver for tests and local runs.

It accepts ``POST /v1/traces``, ``/v1/metrics`` and ``/v1/logs`` in OTLP/protobuf and
OTLP/JSON (optionally gzip- or deflate-compressed), keeps what it received in memory as flat,
easy-to-assert dicts, can append them to a JSONL file, and can inject faults (delays, error
statuses, dropped connections) to exercise exporters' retry paths.

This module is not part of the handler side of the Lambda layer, so it imports protobuf and
opentelemetry-proto at module level.

Run it by hand with ``python -m lambdawrap.otlp_receiver --port 4318 [--jsonl FILE]``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import ipaddress
import json
import logging
import signal
import socket
import socketserver
import sys
import threading
import time
import zlib
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

logger = logging.getLogger(__name__)

__all__ = ["OtlpReceiver", "main"]

Item = Dict[str, Any]
Predicate = Callable[[Item], bool]
ItemListener = Callable[[str, Item], None]

# Raw (on-the-wire) and decompressed bodies above this are refused with 413: a test receiver
# must not be talked into buffering unbounded data or inflating a compression bomb.
MAX_BODY_BYTES = 64 * 1024 * 1024

# Idle keep-alive connections are dropped after this long so a vanished client cannot pin a
# handler thread forever; exporters reconnect transparently.
IDLE_CONNECTION_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class _Route:
    signal: str  # "traces" / "metrics" / "logs"
    item_kind: str  # "span" / "metric" / "log": the JSONL "signal" field and CLI line prefix
    request_type: type
    response_type: type


_ROUTES: Dict[str, _Route] = {
    "/v1/traces": _Route(
        "traces",
        "span",
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "/v1/metrics": _Route(
        "metrics",
        "metric",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "/v1/logs": _Route(
        "logs",
        "log",
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}

_SIGNAL_ALIASES = {
    "traces": "traces",
    "trace": "traces",
    "spans": "traces",
    "span": "traces",
    "metrics": "metrics",
    "metric": "metrics",
    "logs": "logs",
    "log": "logs",
}

_PROTOBUF_TYPES = frozenset({"application/x-protobuf", "application/protobuf"})
_JSON_TYPES = frozenset({"application/json"})

# OTLP/JSON deviates from the proto3 JSON mapping for these bytes fields: they are hex, not base64.
_HEX_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})

_TEMPORALITY = {1: "delta", 2: "cumulative"}


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


class _BadRequest(Exception):
    """A request the receiver refuses; ``status`` and a short message go back to the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _decompress(body: bytes, encoding: str) -> bytes:
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
        raise _BadRequest(415, f"unsupported Content-Encoding: {encoding}")
    last_error: Optional[Exception] = None
    for wbits in wbits_options:
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(body, MAX_BODY_BYTES)
            if inflater.unconsumed_tail:
                raise _BadRequest(413, "decompressed body too large")
            out += inflater.flush()
        except zlib.error as exc:
            last_error = exc
            continue
        if not inflater.eof:
            last_error = zlib.error("truncated compressed body")
            continue
        return out
    raise _BadRequest(400, f"cannot decode {encoding} body: {last_error}")


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


def _parse_body(route: _Route, body: bytes, is_json: bool) -> Message:
    message = route.request_type()
    if is_json:
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise _BadRequest(400, f"invalid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise _BadRequest(400, "invalid OTLP/JSON: top level is not an object")
        _convert_hex_ids(document)
        try:
            json_format.ParseDict(document, message, ignore_unknown_fields=True)
        except Exception as exc:  # ParseError, TypeError, RecursionError...: all the client's fault
            raise _BadRequest(400, f"invalid OTLP/JSON: {_shorten(str(exc))}") from None
    else:
        try:
            message.ParseFromString(body)
        except Exception as exc:  # DecodeError and friends
            raise _BadRequest(400, f"invalid OTLP/protobuf: {_shorten(str(exc))}") from None
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
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    {
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": int(span.kind),
                        "start_time_unix_nano": span.start_time_unix_nano,
                        "end_time_unix_nano": span.end_time_unix_nano,
                        "attributes": _attributes(span.attributes),
                        "status_code": int(span.status.code),
                        "status_message": span.status.message,
                        "events": [
                            {
                                "name": event.name,
                                "attributes": _attributes(event.attributes),
                                "time_unix_nano": event.time_unix_nano,
                            }
                            for event in span.events
                        ],
                        "links": [
                            {
                                "trace_id": link.trace_id.hex(),
                                "span_id": link.span_id.hex(),
                                "attributes": _attributes(link.attributes),
                            }
                            for link in span.links
                        ],
                        "trace_state": span.trace_state,
                        "resource": resource,
                        "scope": scope_spans.scope.name,
                    }
                )
    return spans


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


def _flatten_metrics(request: metrics_service_pb2.ExportMetricsServiceRequest) -> List[Item]:
    points: List[Item] = []
    for resource_metrics in request.resource_metrics:
        resource = _attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
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
                    "scope": scope_metrics.scope.name,
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
    for resource_logs in request.resource_logs:
        resource = _attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                records.append(
                    {
                        "body": _any_value(record.body) if record.HasField("body") else None,
                        "severity_text": record.severity_text,
                        "severity_number": int(record.severity_number),
                        "trace_id": record.trace_id.hex(),
                        "span_id": record.span_id.hex(),
                        "attributes": _attributes(record.attributes),
                        "event_name": record.event_name,
                        "time_unix_nano": record.time_unix_nano,
                        "observed_time_unix_nano": record.observed_time_unix_nano,
                        "resource": resource,
                        "scope": scope_logs.scope.name,
                    }
                )
    return records


_FLATTENERS: Dict[str, Callable[[Any], List[Item]]] = {
    "traces": _flatten_traces,
    "metrics": _flatten_metrics,
    "logs": _flatten_logs,
}


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return repr(value)


# --------------------------------------------------------------------------------------------
# Fault injection
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Behaviour:
    delay_s: float = 0.0
    status: int = 200
    retry_after: Optional[str] = None
    close_connection: bool = False
    remaining: Optional[int] = None


_NORMAL = _Behaviour()


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_CONNECTION_TIMEOUT_S
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # The stdlib writes one line per request to stderr; tests and the CLI want silence.
        logger.debug("%s - %s", self.address_string(), format % args)

    def setup(self) -> None:
        super().setup()
        self.server.track_connection(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack_connection(self.connection)

    def __getattr__(self, name: str) -> Any:
        # The stdlib answers 501 for a method without a do_<METHOD>; the receiver promises 405
        # (or 404 for an unknown path) for every method but POST.
        if name.startswith("do_") and name != "do_POST":
            return self._method_not_allowed
        raise AttributeError(name)

    # -- request handling ------------------------------------------------------------------

    def _method_not_allowed(self) -> None:
        path = urlsplit(self.path).path
        status = 405 if path in _ROUTES else 404
        body = self._drain_body()
        if body is None:
            return
        headers = {"Allow": "POST"} if status == 405 else {}
        text = "method not allowed\n" if status == 405 else "not found\n"
        self._record(path, status, len(body))
        self._reply(status, text.encode(), "text/plain; charset=utf-8", headers)

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        path = urlsplit(self.path).path
        route = _ROUTES.get(path)
        body = self._drain_body()
        if body is None:
            return
        if route is None:
            self._record(path, 404, len(body))
            self._reply(404, b"not found\n", "text/plain; charset=utf-8")
            return
        try:
            self._handle_export(path, route, body)
        except OSError:
            raise  # the client went away mid-answer: nothing to tell it (handle_error logs)
        except Exception:  # never a traceback to the client; keep it in our log instead
            logger.exception("OTLP receiver failed to handle %s", path)
            self.close_connection = True
            self._record(path, 500, len(body))
            try:
                self._reply(500, b"internal error\n", "text/plain; charset=utf-8")
            except OSError:
                pass

    def _handle_export(self, path: str, route: _Route, body: bytes) -> None:
        receiver = self.server.receiver
        behaviour = receiver._take_behaviour()
        if behaviour.delay_s > 0:
            # An Event wait rather than sleep so that stop() is never held up by a delay.
            receiver._stopping.wait(behaviour.delay_s)
        if behaviour.close_connection or receiver._stopping.is_set():
            # Dropped on purpose, or the receiver stopped during the delay: no answer at all.
            self._record(path, None, len(body))
            self.close_connection = True
            # Shut down now rather than let finish() flush: the client must see the
            # connection end with no status line at all.
            _shutdown_quietly(self.connection)
            return
        if behaviour.status != 200:
            headers = {}
            if behaviour.retry_after is not None:
                headers["Retry-After"] = behaviour.retry_after
            text = f"injected fault: status {behaviour.status}\n".encode()
            self._record(path, behaviour.status, len(body))
            self._reply(behaviour.status, text, "text/plain; charset=utf-8", headers)
            return

        media_type = self._media_type()
        is_json = media_type in _JSON_TYPES
        try:
            if not is_json and media_type not in _PROTOBUF_TYPES:
                raise _BadRequest(415, f"unsupported Content-Type: {media_type or '(none)'}")
            payload = _decompress(body, self.headers.get("Content-Encoding", ""))
            message = _parse_body(route, payload, is_json)
            items = _FLATTENERS[route.signal](message)
        except _BadRequest as exc:
            self._record(path, exc.status, len(body))
            self._reply(exc.status, (exc.message + "\n").encode(), "text/plain; charset=utf-8")
            return

        response = route.response_type()
        if is_json:
            answer = json_format.MessageToJson(response).encode()
            content_type = "application/json"
        else:
            answer = response.SerializeToString()
            content_type = "application/x-protobuf"
        # Record before answering (here and above) so that a client holding the answer can
        # query requests()/spans() at once, without waiting.
        self._record(path, 200, len(body), route=route, message=message, items=items)
        self._reply(200, answer, content_type)

    # -- helpers ---------------------------------------------------------------------------

    def _media_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()

    def _drain_body(self) -> Optional[bytes]:
        """Read the whole request body, or answer an error and return None."""
        try:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                return self._read_chunked()
            raw_length = self.headers.get("Content-Length")
            length = int(raw_length) if raw_length is not None else 0
            if length < 0:
                raise ValueError(raw_length)
        except _BadRequest as exc:
            self._refuse_unread(exc.status, exc.message)
            return None
        except ValueError:
            self._refuse_unread(400, "invalid Content-Length")
            return None
        if length > MAX_BODY_BYTES:
            self._refuse_unread(413, "body too large")
            return None
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            self.close_connection = True  # client went away mid-body; nobody to answer
            return None
        return body

    def _refuse_unread(self, status: int, message: str) -> None:
        # The body is (partly) unread, so the connection cannot be reused: close it.
        self.close_connection = True
        self._record(urlsplit(self.path).path, status, 0)
        self._reply(status, (message + "\n").encode(), "text/plain; charset=utf-8")

    def _read_chunked(self) -> bytes:
        chunks: List[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest(400, "invalid chunked encoding") from None
            if size == 0:
                # Skip trailers up to the blank line that ends the message.
                while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise _BadRequest(413, "body too large")
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                raise _BadRequest(400, "truncated chunked body")
            chunks.append(chunk)
            self.rfile.readline(8)  # CRLF after each chunk

    def _reply(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Optional[Dict[str, str]] = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _record(
        self,
        path: str,
        status: Optional[int],
        size: int,
        route: Optional[_Route] = None,
        message: Optional[Message] = None,
        items: Sequence[Item] = (),
    ) -> None:
        summary: Item = {
            "method": self.command,
            "path": path,
            "content_type": self.headers.get("Content-Type", ""),
            "content_encoding": self.headers.get("Content-Encoding", ""),
            "headers": {name.lower(): value for name, value in self.headers.items()},
            "status": status,
            "bytes": size,
            "received_at": time.time(),
        }
        self.server.receiver._store(summary, route, message, items)


def _shutdown_quietly(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the peer or by us


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Do not keep finished handler threads around: connections are tracked explicitly.
    block_on_close = False
    # socketserver's default backlog of 5 drops SYNs under a burst of parallel exporters,
    # which then stall for a 1 s TCP retransmit.
    request_queue_size = 128

    def __init__(self, address: Tuple[Any, ...], receiver: OtlpReceiver, family: int) -> None:
        self.address_family = family
        self.receiver = receiver
        self._connections: Dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        self._closing = False
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr, e.g. when a client hangs up mid-answer.
        logger.debug("OTLP receiver connection error from %s", client_address, exc_info=True)

    def track_connection(self, conn: socket.socket) -> None:
        with self._connections_lock:
            if self._closing:
                # Accepted just before stop(): cut it rather than serve after stop() returned.
                _shutdown_quietly(conn)
                return
            self._connections[conn] = threading.current_thread()

    def untrack_connection(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.pop(conn, None)

    def close_connections(self, join_timeout: float) -> None:
        """Cut every open connection (idle keep-alives included) and wait for their threads."""
        with self._connections_lock:
            self._closing = True
            connections = list(self._connections.items())
        for conn, _ in connections:
            _shutdown_quietly(conn)
        deadline = time.monotonic() + join_timeout
        for _, thread in connections:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


class OtlpReceiver:
    """An in-process OTLP/HTTP receiver bound to loopback, with queryable, waitable storage.

    Use as a context manager (``with OtlpReceiver() as receiver: ...``) or call ``start()`` and
    ``stop()``. Point exporters at ``receiver.endpoint + "/v1/traces"`` (etc.).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        jsonl_path: Optional[str] = None,
        *,
        on_item: Optional[ItemListener] = None,
    ) -> None:
        """Configure the receiver; nothing is bound until ``start()``.

        ``host`` must be a loopback address ("127.0.0.1", "::1" or "localhost"); ``port`` 0
        picks a free port. ``on_item(kind, item)`` is called for every span/metric point/log
        stored, with kind "span", "metric" or "log".
        """
        if host == "localhost":
            host = "127.0.0.1"
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"host must be a loopback IP address, got {host!r}") from None
        if not address.is_loopback:
            raise ValueError(f"the OTLP receiver only binds loopback addresses, got {host!r}")
        if not 0 <= port <= 65535:
            raise ValueError(f"invalid port {port}")
        self._host = host
        self._family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        self._requested_port = port
        self._jsonl_path = jsonl_path
        self._on_item = on_item

        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._lifecycle_lock = threading.Lock()
        self._stopped = False
        self._stopping = threading.Event()

        # One re-entrant lock guards all stored data; predicates run under it and may call
        # back into the receiver.
        self._cond = threading.Condition(threading.RLock())
        self._items: Dict[str, List[Item]] = {"traces": [], "metrics": [], "logs": []}
        self._raw: Dict[str, List[Message]] = {"traces": [], "metrics": [], "logs": []}
        self._requests: List[Item] = []

        self._behaviour_lock = threading.Lock()
        self._behaviour = _NORMAL
        self._jsonl_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        """Bind and start serving; returns once the socket listens and the loop runs."""
        with self._lifecycle_lock:
            if self._stopped:
                raise RuntimeError("a stopped OtlpReceiver cannot be restarted; create a new one")
            if self._server is not None:
                return self
            server = _Server((self._host, self._requested_port), self, self._family)
            serving = threading.Event()

            def serve() -> None:
                serving.set()
                server.serve_forever(poll_interval=0.05)

            thread = threading.Thread(target=serve, name=f"otlp-receiver-{server.server_port}", daemon=True)
            thread.start()
            # The socket already listens (connections queue in the backlog); also wait for the
            # accept loop so that start() really means "serving".
            serving.wait()
            self._server = server
            self._thread = thread
        logger.debug("OTLP receiver listening on %s", self.endpoint)
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections and close the socket; safe to call repeatedly."""
        with self._lifecycle_lock:
            self._stopped = True
            server, thread = self._server, self._thread
            self._server = None
            self._thread = None
            if server is None:
                return
            self._stopping.set()
            server.shutdown()
            server.server_close()
            server.close_connections(join_timeout=5.0)
            if thread is not None:
                thread.join(timeout=5.0)
        logger.debug("OTLP receiver on port %s stopped", server.server_port)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (raises RuntimeError before ``start()``)."""
        server = self._server
        if server is None:
            raise RuntimeError("OtlpReceiver is not running")
        return int(server.server_address[1])

    @property
    def server_address(self) -> Tuple[str, int]:
        """The (host, port) the listening socket is bound to."""
        server = self._server
        if server is None:
            raise RuntimeError("OtlpReceiver is not running")
        return (str(server.server_address[0]), int(server.server_address[1]))

    @property
    def endpoint(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:4318``; append ``/v1/traces`` etc. for exporters."""
        host = f"[{self._host}]" if self._family == socket.AF_INET6 else self._host
        return f"http://{host}:{self.port}"

    # -- queries ---------------------------------------------------------------------------

    def spans(self) -> List[Item]:
        """Every span received so far, one flat dict each, in arrival order."""
        return self._snapshot("traces")

    def metrics(self) -> List[Item]:
        """Every metric data point received so far, one flat dict each."""
        return self._snapshot("metrics")

    def logs(self) -> List[Item]:
        """Every log record received so far, one flat dict each."""
        return self._snapshot("logs")

    def requests(self) -> List[Item]:
        """A summary of every HTTP request answered (or dropped), in arrival order."""
        with self._cond:
            return copy.deepcopy(self._requests)

    def raw(self, signal: str) -> List[Message]:
        """The decoded Export*ServiceRequest messages for "traces", "metrics" or "logs"."""
        key = _SIGNAL_ALIASES.get(signal)
        if key is None:
            raise ValueError(f"unknown signal {signal!r}; expected traces, metrics or logs")
        with self._cond:
            copies = []
            for message in self._raw[key]:
                clone = type(message)()
                clone.CopyFrom(message)
                copies.append(clone)
            return copies

    def clear(self) -> None:
        """Forget everything received so far (behaviour is left as is)."""
        with self._cond:
            for kind in self._items:
                self._items[kind].clear()
                self._raw[kind].clear()
            self._requests.clear()

    def wait_for_spans(
        self, predicate: Optional[Predicate] = None, count: int = 1, timeout: float = 10.0
    ) -> List[Item]:
        """Block until at least ``count`` spans match ``predicate``; return the matches.

        Raises TimeoutError, listing what was received, when ``timeout`` seconds pass first.
        """
        return self._wait("traces", predicate, count, timeout)

    def wait_for_metrics(
        self, predicate: Optional[Predicate] = None, count: int = 1, timeout: float = 10.0
    ) -> List[Item]:
        """Block until at least ``count`` metric data points match ``predicate``."""
        return self._wait("metrics", predicate, count, timeout)

    def wait_for_logs(
        self, predicate: Optional[Predicate] = None, count: int = 1, timeout: float = 10.0
    ) -> List[Item]:
        """Block until at least ``count`` log records match ``predicate``."""
        return self._wait("logs", predicate, count, timeout)

    # -- fault injection -------------------------------------------------------------------

    def set_behaviour(
        self,
        delay_s: float = 0.0,
        status: int = 200,
        retry_after: Optional[Union[float, str]] = None,
        close_connection: bool = False,
        remaining: Optional[int] = None,
    ) -> None:
        """Change how export requests are answered, from the next request on.

        ``delay_s`` delays every answer; ``status`` != 200 answers that status without storing
        the data (``retry_after`` adds a ``Retry-After`` header); ``close_connection`` drops the
        connection without answering; ``remaining=N`` limits this to the next N export
        requests, after which the receiver behaves normally again.
        """
        if delay_s < 0:
            raise ValueError("delay_s must be >= 0")
        if not 100 <= status <= 599:
            raise ValueError(f"invalid HTTP status {status}")
        if remaining is not None and remaining < 1:
            raise ValueError("remaining must be None or >= 1")
        if retry_after is None:
            header = None
        elif isinstance(retry_after, float) and retry_after.is_integer():
            header = str(int(retry_after))
        else:
            header = str(retry_after)
        with self._behaviour_lock:
            self._behaviour = _Behaviour(float(delay_s), int(status), header, bool(close_connection), remaining)

    def reset_behaviour(self) -> None:
        """Answer every request normally again."""
        with self._behaviour_lock:
            self._behaviour = _NORMAL

    # -- internals -------------------------------------------------------------------------

    def _take_behaviour(self) -> _Behaviour:
        """The behaviour for one export request, consuming one use of a limited behaviour."""
        with self._behaviour_lock:
            current = self._behaviour
            if current.remaining is not None:
                left = current.remaining - 1
                self._behaviour = _NORMAL if left <= 0 else replace(current, remaining=left)
            return current

    def _snapshot(self, kind: str) -> List[Item]:
        with self._cond:
            return copy.deepcopy(self._items[kind])

    def _store(
        self,
        summary: Item,
        route: Optional[_Route],
        message: Optional[Message],
        items: Sequence[Item],
    ) -> None:
        with self._cond:
            self._requests.append(summary)
            if route is not None and message is not None:
                self._raw[route.signal].append(message)
                self._items[route.signal].extend(items)
            self._cond.notify_all()
        if route is None or not items:
            return
        if self._jsonl_path is not None:
            self._write_jsonl(route.item_kind, items)
        if self._on_item is not None:
            for item in items:
                try:
                    self._on_item(route.item_kind, copy.deepcopy(item))
                except Exception:  # a listener bug must not break the receiver
                    logger.exception("OTLP receiver on_item listener failed")

    def _write_jsonl(self, kind: str, items: Sequence[Item]) -> None:
        lines = "".join(
            json.dumps({"signal": kind, **item}, default=_json_default, sort_keys=False) + "\n" for item in items
        )
        with self._jsonl_lock:
            try:
                with open(self._jsonl_path, "a", encoding="utf-8") as handle:  # type: ignore[arg-type]
                    handle.write(lines)
                    handle.flush()
            except OSError:
                logger.exception("OTLP receiver cannot append to %s", self._jsonl_path)

    def _wait(self, kind: str, predicate: Optional[Predicate], count: int, timeout: float) -> List[Item]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matched = [item for item in self._items[kind] if predicate is None or predicate(item)]
                if len(matched) >= count:
                    return copy.deepcopy(matched)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(self._timeout_message(kind, predicate, count, timeout, len(matched)))
                self._cond.wait(remaining)

    def _timeout_message(
        self, kind: str, predicate: Optional[Predicate], count: int, timeout: float, matched: int
    ) -> str:
        items = self._items[kind]
        noun = {"traces": "span", "metrics": "metric data point", "logs": "log record"}[kind]
        what = "matching the predicate" if predicate is not None else "in total"
        lines = [
            f"timed out after {timeout:g}s waiting for {count} {noun}(s) {what}: "
            f"{matched} matched, {len(items)} received"
        ]
        for item in items[:50]:
            lines.append("  " + _describe(kind, item))
        if len(items) > 50:
            lines.append(f"  ... and {len(items) - 50} more")
        statuses = [r["status"] for r in self._requests]
        lines.append(f"HTTP requests received: {len(statuses)}, statuses: {statuses[-20:]}")
        return "\n".join(lines)


def _describe(kind: str, item: Item) -> str:
    """A one-line human summary of a stored item (timeout messages and the CLI)."""
    if kind in ("traces", "span"):
        return (
            f"span {item['name']!r} trace_id={item['trace_id']} span_id={item['span_id']} "
            f"parent={item['parent_span_id'] or '-'} kind={item['kind']} status={item['status_code']} "
            f"attributes={item['attributes']!r}"
        )
    if kind in ("metrics", "metric"):
        if item["type"] in ("sum", "gauge"):
            value = f"value={item['value']!r}"
        else:
            value = f"count={item['count']!r} sum={item['sum']!r}"
        return (
            f"metric {item['name']!r} type={item['type']} temporality={item['temporality']} "
            f"{value} attributes={item['attributes']!r}"
        )
    return (
        f"log severity={item['severity_text'] or item['severity_number']} body={item['body']!r} "
        f"trace_id={item['trace_id'] or '-'} span_id={item['span_id'] or '-'} "
        f"attributes={item['attributes']!r}"
    )


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run a receiver until SIGINT/SIGTERM, printing one line per span/metric/log received."""
    parser = argparse.ArgumentParser(
        prog="python -m lambdawrap.otlp_receiver",
        description="Local OTLP/HTTP receiver: prints what it receives.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=4318, help="port to listen on, 0 for any (default 4318)")
    parser.add_argument("--jsonl", metavar="FILE", default=None, help="also append every item to FILE as JSONL")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    # Installed before binding so that an early Ctrl-C still exits quietly.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    print_lock = threading.Lock()

    def on_item(kind: str, item: Item) -> None:
        with print_lock:
            print(_describe(kind, item), flush=True)

    try:
        receiver = OtlpReceiver(args.host, args.port, args.jsonl, on_item=on_item)
        receiver.start()
    except (OSError, ValueError) as exc:
        print(f"otlp_receiver: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    try:
        with print_lock:
            print(f"OTLP receiver listening on {receiver.endpoint}", flush=True)
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not stop.wait(0.5):
            pass
    finally:
        receiver.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
