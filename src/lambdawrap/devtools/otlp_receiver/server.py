"""HTTP handling: a threading HTTP/1.1 server on loopback that answers OTLP export requests.

It reads bodies (Content-Length or chunked, bounded), applies the injected fault, decodes, hands
a summary of every request to the receiver, and tracks open connections so that stopping cuts
idle keep-alives too.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from google.protobuf import json_format
from google.protobuf.message import Message

from lambdawrap.devtools.otlp_receiver.decoding import (
    FLATTENERS,
    JSON_TYPES,
    MAX_BODY_BYTES,
    PROTOBUF_TYPES,
    BadRequest,
    Item,
    decompress,
    parse_body,
)
from lambdawrap.devtools.otlp_receiver.faults import FaultInjector
from lambdawrap.devtools.otlp_receiver.routes import ROUTES, Route

logger = logging.getLogger(__name__)

# Receives every request's summary and, for a decoded export, its route, message and items.
RequestSink = Callable[[Item, Optional[Route], Optional[Message], Sequence[Item]], None]

# Idle keep-alive connections are dropped after this long (unless the receiver is given
# another idle timeout) so a vanished client cannot pin a handler thread forever; exporters
# reconnect transparently.
IDLE_CONNECTION_TIMEOUT_S = 120.0


class ExportRequestHandler(BaseHTTPRequestHandler):
    """Answers one connection's requests: POST to an export path, 404 or 405 otherwise."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_CONNECTION_TIMEOUT_S
    # The status line and headers go out before the body, in a segment of their own: with
    # Nagle's algorithm the body would wait for the client's delayed ACK (up to 40 ms), which
    # real collectors (Go's net/http sets TCP_NODELAY) never make their clients wait.
    disable_nagle_algorithm = True
    server: ReceiverHttpServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # The stdlib writes one line per request to stderr; tests and the CLI want silence.
        logger.debug("%s - %s", self.address_string(), format % args)

    def setup(self) -> None:
        server = self.server
        self.timeout = server.idle_timeout_s
        if server.connect_delay_s > 0:
            # The round trips of a distant collector's TCP and TLS set-up: the client waits
            # this long, from its connect, for the first answer on a new connection.
            server.stopping.wait(server.connect_delay_s)
        if server.stopping.is_set():
            raise ConnectionAbortedError("the receiver is stopping")
        if server.tls is not None:
            self.request.settimeout(self.timeout)
            self.request = server.tls.wrap_socket(self.request, server_side=True)
        super().setup()
        server.track_connection(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack_connection(self.connection)
            if self.server.tls is not None:
                # socketserver closes the socket it accepted, which wrapping detached.
                self.connection.close()

    def __getattr__(self, name: str) -> Any:
        # The stdlib answers 501 for a method without a do_<METHOD>; the receiver promises 405
        # (or 404 for an unknown path) for every method but POST.
        if name.startswith("do_") and name != "do_POST":
            return self._method_not_allowed
        raise AttributeError(name)

    # -- request handling ------------------------------------------------------------------

    def _method_not_allowed(self) -> None:
        path = urlsplit(self.path).path
        status = 405 if path in ROUTES else 404
        body = self._drain_body()
        if body is None:
            return
        headers = {"Allow": "POST"} if status == 405 else {}
        text = "method not allowed\n" if status == 405 else "not found\n"
        self._record(path, status, len(body))
        self._reply(status, text.encode(), "text/plain; charset=utf-8", headers)

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        path = urlsplit(self.path).path
        route = ROUTES.get(path)
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

    def _handle_export(self, path: str, route: Route, body: bytes) -> None:
        server = self.server
        behaviour = server.faults.take()
        if behaviour.delay_s > 0:
            # An Event wait rather than sleep so that stop() is never held up by a delay.
            server.stopping.wait(behaviour.delay_s)
        if behaviour.close_connection or server.stopping.is_set():
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
        is_json = media_type in JSON_TYPES
        try:
            if not is_json and media_type not in PROTOBUF_TYPES:
                raise BadRequest(415, f"unsupported Content-Type: {media_type or '(none)'}")
            payload = decompress(body, self.headers.get("Content-Encoding", ""))
            message = parse_body(route, payload, is_json)
            items = FLATTENERS[route.signal](message)
        except BadRequest as exc:
            self._record(path, exc.status, len(body))
            self._reply(exc.status, (exc.message + "\n").encode(), "text/plain; charset=utf-8")
            return

        if behaviour.max_spans is not None and route.signal == "traces" and len(items) > behaviour.max_spans:
            self._record(path, 413, len(body))
            self._reply(413, f"injected fault: more than {behaviour.max_spans} spans\n".encode(), "text/plain; charset=utf-8")
            return
        response = route.response_type()
        rejected = behaviour.reject == route.signal
        if rejected:
            # Every item refused, as a collector may (over a quota, invalid data): a 200 all the
            # same, whose partial_success says how many.
            field = {"traces": "rejected_spans", "metrics": "rejected_data_points", "logs": "rejected_log_records"}[route.signal]
            setattr(response.partial_success, field, len(items))
            response.partial_success.error_message = "injected fault: every item rejected"
        if is_json:
            answer = json_format.MessageToJson(response).encode()
            content_type = "application/json"
        else:
            answer = response.SerializeToString()
            content_type = "application/x-protobuf"
        # Record before answering (here and above) so that a client holding the answer can
        # query requests()/spans() at once, without waiting.
        if rejected:
            self._record(path, 200, len(body))
        else:
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
        except BadRequest as exc:
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
                raise BadRequest(400, "invalid chunked encoding") from None
            if size == 0:
                # Skip trailers up to the blank line that ends the message.
                while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise BadRequest(413, "body too large")
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                raise BadRequest(400, "truncated chunked body")
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
        route: Optional[Route] = None,
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
            "items": len(items),  # stored from this request
            "received_at": time.time(),
        }
        self.server.on_request(summary, route, message, items)


def _shutdown_quietly(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the peer or by us


class ReceiverHttpServer(ThreadingHTTPServer):
    """The listening socket and its handler threads; open connections are tracked."""

    daemon_threads = True
    # Do not keep finished handler threads around: connections are tracked explicitly.
    block_on_close = False
    # socketserver's default backlog of 5 drops SYNs under a burst of parallel exporters,
    # which then stall for a 1 s TCP retransmit.
    request_queue_size = 128

    def __init__(
        self,
        address: Tuple[Any, ...],
        family: int,
        faults: FaultInjector,
        stopping: threading.Event,
        on_request: RequestSink,
        tls: Optional[ssl.SSLContext] = None,
        idle_timeout_s: float = IDLE_CONNECTION_TIMEOUT_S,
        connect_delay_s: float = 0.0,
    ) -> None:
        self.address_family = family
        self.faults = faults
        self.stopping = stopping
        self.on_request = on_request
        self.tls = tls
        self.idle_timeout_s = idle_timeout_s
        self.connect_delay_s = connect_delay_s
        self.connections_accepted = 0
        self._connections_ended = 0
        self._connections: Dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        self._closing = False
        super().__init__(address, ExportRequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr, e.g. when a client hangs up mid-answer.
        logger.debug("OTLP receiver connection error from %s", client_address, exc_info=True)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # Counted from accept to close, the TLS handshake and the connect delay included.
        with self._connections_lock:
            self.connections_accepted += 1
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections_ended += 1

    def track_connection(self, conn: socket.socket) -> None:
        with self._connections_lock:
            if self._closing:
                # Accepted just before stop(): cut it rather than serve after stop() returned.
                _shutdown_quietly(conn)
                return
            self._connections[conn] = threading.current_thread()

    def open_connections(self) -> int:
        with self._connections_lock:
            return self.connections_accepted - self._connections_ended

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

