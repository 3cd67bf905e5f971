"""HTTP plumbing shared by the emulator's servers: body reading, JSON replies, API errors."""

from __future__ import annotations

import email.parser
import io
import json
import logging
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator, Mapping

logger = logging.getLogger(__name__)

# Bodies above this are refused before they are read whole; it sits above the 6 MiB payload
# limit so that the limit itself can still answer with its documented 413.
MAX_READ_BYTES = 16 * 1024 * 1024
# A larger body is read through, unkept, up to this (a response's size is the platform's to
# judge); beyond it, it is judged by its Content-Length unread, or refused with 413 (chunked),
# and the connection closes.
MAX_DRAIN_BYTES = 1024 * 1024 * 1024
READ_PIECE_BYTES = 1024 * 1024

# The Runtime API is Go's net/http: 1 MiB of request headers, plus the 4 KiB it allows over.
# awslambdaric sends a failed invocation's X-Ray cause as one header of up to 1 MiB (a deep
# traceback passes 64 KiB), where the stdlib's server would answer 431 and crash the runtime.
MAX_HEADER_BYTES = 1024 * 1024 + 4096


class ApiError(Exception):
    """An error answered as the Lambda APIs do: `{"errorType", "errorMessage"}` with a status."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


class Reply:
    """What a route answers: status, headers and a body (bytes or a JSON-able value)."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int = 200, body: Any = b"", headers: Mapping[str, str] | None = None):
        self.status = status
        self.headers = dict(headers or {})
        if isinstance(body, (bytes, bytearray)):
            self.body = bytes(body)
        else:
            self.body = json.dumps(body).encode()
            self.headers.setdefault("Content-Type", "application/json")


def parse_json_body(body: bytes, error_type: str = "InvalidRequestFormat", status: int = 400) -> Any:
    """Decode a JSON request body or raise the API's error for a malformed one."""
    try:
        return json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(status, error_type, f"malformed JSON body: {exc}") from None


Route = Callable[["RequestContext"], Reply]


class RequestContext:
    """One request as the routes see it."""

    __slots__ = ("method", "path", "query", "headers", "body", "connected_at", "oversize")

    def __init__(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes, connected_at: float = 0.0, oversize: int = 0):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.connected_at = connected_at  # time.monotonic() when its connection was accepted
        self.oversize = oversize  # the size of a body over MAX_READ_BYTES, read but not kept

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK
    # would add ~40 ms to every answer.
    disable_nagle_algorithm = True
    server: "ApiServer"

    def setup(self) -> None:
        self.connected_at = time.monotonic()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the emulator reports what matters itself; per-request lines are noise

    def parse_request(self) -> bool:
        # The stdlib reads the request line; the headers are read here, to the Runtime API's size.
        stream, self.rfile = self.rfile, io.BytesIO(b"\r\n")
        try:
            parsed = super().parse_request()
        finally:
            self.rfile = stream
        if not parsed or self.request_version == "HTTP/0.9":
            return parsed
        head = self._read_head(MAX_HEADER_BYTES - len(self.raw_requestline))
        if head is None:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Request headers too large")
            return False
        self.headers = email.parser.Parser(_class=self.MessageClass).parsestr(head.decode("iso-8859-1"))
        connection = self.headers.get("Connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        if self.headers.get("Expect", "").lower() == "100-continue" and self.request_version >= "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def _read_head(self, limit: int) -> bytes | None:
        """The header lines up to the blank one, or None when they pass `limit` bytes. Too large
        a head is still read to its end (up to MAX_READ_BYTES): closing on unread bytes resets
        the connection, and the client would lose the 431 it is owed."""
        pieces: list[bytes] = []
        size = 0
        line_start = True
        while size <= MAX_READ_BYTES:
            piece = self.rfile.readline(65536)
            size += len(piece)
            if not piece or (line_start and piece in (b"\r\n", b"\n")):
                return b"".join(pieces) if size <= limit else None
            if size <= limit:
                pieces.append(piece)
            line_start = piece.endswith(b"\n")
        return None

    def _read_body(self) -> tuple[bytes, int]:
        """(body, size): a body over MAX_READ_BYTES is read through but not kept (body b""),
        so that the platform can still judge its size, as Lambda does a response's; one whose
        Content-Length passes MAX_DRAIN_BYTES is judged by that, unread (the connection then
        closes). A body that ends before its length is an error (OSError), as in Go."""
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        if not chunked:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_DRAIN_BYTES:
                self.close_connection = True
                return b"", length
        kept: list[bytes] = []
        total = 0
        for piece in self._chunks() if chunked else self._read_exactly(length):
            total += len(piece)
            if total > MAX_DRAIN_BYTES:
                raise ApiError(413, "RequestEntityTooLarge", "request body too large")
            if total <= MAX_READ_BYTES:
                kept.append(piece)
            else:
                kept.clear()
        return (b"".join(kept) if total <= MAX_READ_BYTES else b""), total

    def _chunks(self) -> Iterator[bytes]:
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return
            yield from self._read_exactly(size)
            self.rfile.readline()

    def _read_exactly(self, length: int) -> Iterator[bytes]:
        while length > 0:
            piece = self.rfile.read(min(length, READ_PIECE_BYTES))
            if not piece:
                raise ConnectionError(f"the request body ended {length} bytes short of its length")
            length -= len(piece)
            yield piece

    def _dispatch(self) -> None:
        path, _, query = self.path.partition("?")
        try:
            body, size = self._read_body()
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = self.server.route(RequestContext(self.command, path, query, headers, body, self.connected_at, size if size > MAX_READ_BYTES else 0))
        except ApiError as err:
            reply = Reply(err.status, {"errorType": err.error_type, "errorMessage": err.message})
            if err.status == 413:
                self.close_connection = True
        except (ValueError, OSError) as exc:
            reply = Reply(400, {"errorType": "InvalidRequest", "errorMessage": str(exc)})
            self.close_connection = True
        except Exception:  # noqa: BLE001 - a bug in a route must answer 500, not kill the server
            logger.exception("emulator: unexpected error serving %s %s", self.command, path)
            reply = Reply(500, {"errorType": "ServiceException", "errorMessage": "internal error"})
        if reply is None:  # the route took over the connection (e.g. to drop it)
            self.close_connection = True
            return
        try:
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply.body)))
            if self.close_connection:
                self.send_header("Connection", "close")  # the client must not send another on it
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True  # the client went away; nothing to tell it

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch


class ApiServer(ThreadingHTTPServer):
    """A threaded loopback HTTP server that hands every request to one `route` callable."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, route: Route, host: str = "127.0.0.1", port: int = 0) -> None:
        self.route = route
        super().__init__((host, port), _Handler)
        self._thread: threading.Thread | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client killed mid-connection (a runtime worker at a reset) is not a server error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self, name: str) -> None:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port (used to give a clear 'port busy' error)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
