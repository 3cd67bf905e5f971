"""The HTTP listener that receives Telemetry API batches.

The platform POSTs a JSON array per batch, several per invocation. http.server parses each
request's headers with the email package (hundreds of microseconds of the environment's small
CPU share, every time, and ~20 ms to import); this listener reads exactly what the Telemetry
API sends: a request line, headers, and a body of Content-Length bytes (or chunked), on
keep-alive connections, in the companion's event loop. The socket is bound at once (the
subscription needs its port during init); batches that arrive before the companion's loop
serves it wait in the socket's backlog.
"""

from __future__ import annotations

import socket
import threading

from lambdawrap.companion.chunked_body import MalformedChunks, take_chunked
from lambdawrap.companion.event_loop import EventLoop, receive
from lambdawrap.shared.framing import decode_json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024  # the platform sends at most about 2 x maxBytes (1 MB)
_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_FAILED = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"


def listen_address(hosts_file: str = "/etc/hosts") -> str:
    """`sandbox.localdomain` from /etc/hosts when the platform maps it, else loopback.
    (No DNS lookup: off the platform it would only fail, maybe slowly.)"""
    try:
        with open(hosts_file) as f:
            for line in f:
                fields = line.split("#", 1)[0].split()
                if len(fields) > 1 and ("sandbox.localdomain" in fields[1:] or "sandbox" in fields[1:]):
                    return fields[0]
    except OSError:
        pass
    return "127.0.0.1"


class _BadRequest(Exception):
    pass


class TelemetryListener:
    """Receives batches (JSON arrays) and hands them to `on_batch`, one call per POST; served
    from the companion's event loop (`attach`), or on a thread of its own (`start`)."""

    def __init__(self, on_batch: Callable[[list], None], on_problem: Callable[[str, str], None], host: str | None = None) -> None:
        self.on_batch = on_batch
        self.on_problem = on_problem
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host or listen_address(), 0))
        except OSError:
            self._socket.close()
            raise
        self._socket.listen(64)
        self._socket.setblocking(False)
        self._loop: EventLoop | None = None
        self._stopped = threading.Event()

    @property
    def address(self) -> tuple:
        return self._socket.getsockname()

    def attach(self, loop: EventLoop) -> None:
        """Serve from `loop` (batches that arrive before wait in the socket's backlog)."""
        self._loop = loop
        loop.add_reader(self._socket, self._accept)

    def start(self) -> None:
        """Serve from a loop on a thread of its own (the companion attaches to its own loop)."""
        loop = EventLoop()
        self.attach(loop)
        threading.Thread(target=loop.run_forever, args=(self._stopped.is_set,), name="lambdawrap-telemetry", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        if self._loop is not None:
            self._loop.remove_reader(self._socket)
        self._socket.close()

    def _accept(self, listener: socket.socket) -> None:
        conn = self._loop.accept(listener, self._accept)
        if conn is None:
            return
        conn.setblocking(False)
        buffer = bytearray()
        self._loop.add_reader(conn, lambda ready: self._read(ready, buffer))

    def _close(self, conn: socket.socket) -> None:
        self._loop.remove_reader(conn)
        conn.close()

    def _read(self, conn: socket.socket, buffer: bytearray) -> None:
        data = receive(conn)
        if data is None:
            return
        if not data:
            self._close(conn)
            return
        buffer += data
        while buffer:
            try:
                request = _take_request(buffer)
            except _BadRequest as exc:
                self.on_problem("malformed_telemetry", f"a malformed telemetry request was refused: {exc}")
                self._answer(conn, _BAD)
                self._close(conn)
                return
            if request is None:
                return  # the rest is still on its way
            self._answer(conn, self._handle(request))

    def _handle(self, body: bytes) -> bytes:
        try:
            try:
                batch = decode_json(body or b"[]")
            except (ValueError, RecursionError):
                raise _BadRequest("a telemetry batch that is not JSON") from None
            if not isinstance(batch, list):
                raise _BadRequest("a telemetry batch must be a JSON array")
        except _BadRequest as exc:
            self.on_problem("malformed_telemetry", f"a malformed telemetry batch was ignored: {exc}")
            return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
        try:
            self.on_batch(batch)
        except Exception:  # noqa: BLE001 - one bad batch must not stop the listener
            self.on_problem("listener_error", "handling a telemetry batch failed")
            return _FAILED
        return _OK

    @staticmethod
    def _answer(conn: socket.socket, response: bytes) -> None:
        try:
            # A few dozen bytes into an idle connection's empty send buffer: one call, no wait.
            try:
                sent = conn.send(response)
            except BlockingIOError:
                sent = 0
            if sent < len(response):
                conn.settimeout(1.0)
                conn.sendall(response[sent:])
                conn.setblocking(False)
        except OSError:
            pass


def _take_request(buffer: bytearray) -> bytes | None:
    """The body of the first complete request in `buffer` (removed from it), or None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEADER_BYTES:
            raise _BadRequest("headers too long")
        return None
    head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    if len(head[0].split()) != 3:
        raise _BadRequest("a malformed request line")
    headers = {}
    for line in head[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    start = end + 4
    if "transfer-encoding" in headers:
        # Chunked must be the last coding (RFC 9112 §6.3); "identity" is none, and any other
        # (gzip) this listener cannot undo. A body read by its Content-Length instead would
        # be lost and its chunks read as the next request.
        codings = [c for c in (c.strip() for c in headers["transfer-encoding"].lower().split(",")) if c not in ("", "identity")]
        if codings == ["chunked"]:
            return _take_chunked(buffer, start)
        if codings:
            raise _BadRequest(f"Transfer-Encoding {headers['transfer-encoding']!r}")
    length_text = headers.get("content-length", "0")
    if not length_text.isascii() or not length_text.isdigit():
        raise _BadRequest(f"Content-Length {length_text!r}")
    length = int(length_text)
    if length > MAX_BODY_BYTES:
        raise _BadRequest(f"a body of {length} bytes")
    if len(buffer) < start + length:
        return None
    body = bytes(buffer[start : start + length])
    del buffer[: start + length]
    return body


def _take_chunked(buffer: bytearray, start: int) -> bytes | None:
    try:
        found = take_chunked(buffer, start, MAX_BODY_BYTES)
    except MalformedChunks as e:
        raise _BadRequest(str(e)) from None
    if found is None:
        return None
    del buffer[: found[1]]
    return found[0]
