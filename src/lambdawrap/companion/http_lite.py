"""HTTP/1.1 over a plain socket, for the Extensions and Telemetry APIs (and the response
reading of the exporters' connections to the collector, companion/collector_connection.py).

http.client costs ~20 ms of imports (the email package); the companion's calls before its
first /next sit on the function's cold-start path, so they use this instead. The connection is
kept alive: a new TCP connection (and its name lookup) for every /next cost more CPU than the
rest of an invocation's bookkeeping, and at 128 MB the environment has 7 % of a core."""

from __future__ import annotations

import json
import socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from lambdawrap.companion.event_loop import EventLoop

MAX_HEAD_BYTES = 64 * 1024


class ConnectionClosed(OSError):
    """The server closed the connection before a whole response came."""


class HttpConnection:
    """One kept-alive connection to one server; calls come one at a time (the caller's thread)."""

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._sock: socket.socket | None = None

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def request(self, method: str, path: str, *, headers: dict | None = None, body: Any = None, timeout: float | None = 5.0, loop: EventLoop | None = None) -> tuple:
        """(status, lowercased headers, decoded JSON body or text). With `loop`, the loop serves
        its other sockets while the answer is awaited, however long that is (for /next)."""
        payload = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._address[0]}:{self._address[1]}", f"Content-Length: {len(payload)}"]
        if body is not None:
            lines.append("Content-Type: application/json")
        lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
        message = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
        reused = self._sock is not None
        try:
            return self._exchange(message, timeout, loop)
        except ConnectionClosed as exc:
            self.close()
            if not reused or exc.args[0]:
                raise
        except OSError:
            self.close()
            raise
        # A kept-alive connection the server had closed while idle (nothing of an answer came):
        # the request was never handled, and goes once more on a new connection.
        try:
            return self._exchange(message, timeout, loop)
        except OSError:
            self.close()
            raise

    def _exchange(self, message: bytes, timeout: float | None, loop: EventLoop | None) -> tuple:
        if self._sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(timeout)
                # A numeric host (the platform's 127.0.0.1) connects without a name lookup.
                sock.connect(self._address)
            except OSError:
                sock.close()
                raise
            self._sock = sock
        sock = self._sock
        sock.settimeout(timeout)
        sock.sendall(message)
        status, headers, payload = read_response(sock) if loop is None else _read_in_loop(sock, loop)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, decode_body(payload)


class ResponseReader:
    """A response arriving in pieces: bytes in, (status, headers, body) out once it is whole.
    Bodies come with a Content-Length, chunked, or up to the end of the connection; 1xx answers
    are passed over, and 204/304 have no body."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._head: tuple | None = None
        self.received = 0
        self.reason = ""
        self.keep_alive = True

    def feed(self, data: bytes) -> tuple | None:
        """The whole response, or None while more is to come; raises ConnectionClosed when the
        server closed (`data` empty) before it was whole."""
        self.received += len(data)
        self._buffer += data
        closed = not data
        while self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    raise ConnectionClosed(self.received, "response headers too long")
                if closed:
                    raise ConnectionClosed(self.received, "closed before the response headers")
                return None
            head = bytes(self._buffer[:end])
            del self._buffer[: end + 4]
            status, headers = parse_head(head)
            if 100 <= status < 200 and status != 101:
                continue  # an interim answer (100 Continue): the real one follows
            self._head = status, headers
            version, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            self.reason = rest.partition(" ")[2].strip()
            connection = headers.get("connection", "").lower()
            self.keep_alive = connection != "close" and (version != "HTTP/1.0" or connection == "keep-alive")
        status, headers = self._head
        if status in (204, 304):
            return status, headers, b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = _dechunked(self._buffer, self.received)
            if body is None and closed:
                raise ConnectionClosed(self.received, "closed before the last chunk")
            return None if body is None else (status, headers, body)
        length = headers.get("content-length")
        if length is not None and length.isascii() and length.isdigit():
            wanted = int(length)
            if len(self._buffer) >= wanted:
                return status, headers, bytes(self._buffer[:wanted])
            if closed:
                raise ConnectionClosed(self.received, "closed before the response body")
            return None
        # No length: the body runs to the end of the connection, which cannot be kept.
        self.keep_alive = False
        headers["connection"] = "close"
        return (status, headers, bytes(self._buffer)) if closed else None


def _dechunked(buffer: bytearray, received: int) -> bytes | None:
    """The body of a chunked response once its last chunk (and trailers) arrived, else None."""
    body = bytearray()
    position = 0
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size_text = bytes(buffer[position:line_end]).partition(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ConnectionClosed(received, "malformed chunk size") from None
        if size == 0:
            # Trailers, if any, end with an empty line; without them the empty line follows.
            return bytes(body) if buffer.find(b"\r\n\r\n", line_end) >= 0 else None
        start = line_end + 2
        if len(buffer) < start + size + 2:
            return None
        body += buffer[start : start + size]
        position = start + size + 2


def read_response(sock: socket.socket) -> tuple:
    """(status, lowercased headers, body bytes) of the next response on `sock`; raises
    ConnectionClosed when the server closes before it is whole."""
    response = ResponseReader()
    while True:
        whole = response.feed(sock.recv(65536))
        if whole is not None:
            return whole


def _read_in_loop(sock: socket.socket, loop: EventLoop) -> tuple:
    response = ResponseReader()
    outcome: list = []

    def on_readable(ready: socket.socket) -> None:
        while not outcome:
            try:
                data = ready.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                outcome.append(exc)
                return
            try:
                whole = response.feed(data)
            except ConnectionClosed as exc:
                outcome.append(exc)
                return
            if whole is not None:
                outcome.append(whole)

    sock.setblocking(False)
    loop.add_reader(sock, on_readable)
    try:
        loop.run_until(lambda: bool(outcome))
    finally:
        loop.remove_reader(sock)
        sock.setblocking(True)
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


def parse_head(head: bytes) -> tuple:
    """(status, lowercased headers) of a response's status line and headers."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split() if lines else []
    # isascii(): str.isdigit() also accepts digits int() refuses ("²", from a latin-1 byte).
    status = int(parts[1]) if len(parts) > 1 and parts[1].isascii() and parts[1].isdigit() else 0
    headers = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            name, value = key.strip().lower(), value.strip()
            # Repeated fields combine into one, comma-separated, as HTTP defines.
            headers[name] = headers[name] + ", " + value if name in headers else value
    return status, headers


def decode_body(payload: bytes) -> Any:
    try:
        return json.loads(payload) if payload else None
    except (ValueError, RecursionError):
        return payload.decode("utf-8", "replace")
