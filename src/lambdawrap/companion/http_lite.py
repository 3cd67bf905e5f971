"""HTTP/1.1 over a plain socket, for the Extensions and Telemetry APIs (and the response
reading of the exporters' connections to the collector, companion/collector_connection.py).

http.client costs ~20 ms of imports (the email package); the companion's calls before its
first /next sit on the function's cold-start path, so they use this instead. The connection is
kept alive: a new TCP connection (and its name lookup) for every /next cost more CPU than the
rest of an invocation's bookkeeping, and at 128 MB the environment has 7 % of a core."""

from __future__ import annotations

import json
import socket
import sys
import time

from lambdawrap.companion.chunked_body import ChunkedBody, MalformedChunks
from lambdawrap.companion.event_loop import READ_SIZE
from lambdawrap.shared.framing import decode_json

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
        # The loop the socket stays registered with between requests, and what a request in
        # that loop is waiting for (a ResponseReader and the list its outcome goes into).
        self._loop: EventLoop | None = None
        self._awaited: tuple | None = None

    def close(self) -> None:
        if self._loop is not None and self._sock is not None:
            self._loop.remove_reader(self._sock)
        self._loop = None
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def request(self, method: str, path: str, *, headers: dict | None = None, body: Any = None, timeout: float | None = 5.0, loop: EventLoop | None = None) -> tuple:
        """(status, lowercased headers, decoded JSON body or text). With `loop`, the loop serves
        its other sockets while the answer is awaited, however long that is (for /next; the
        timeout then does not apply)."""
        if loop is not None:
            # The loop waits as long as it takes; a socket timeout would also make each read of
            # a part of the answer block the loop (CPython waits out a timeout before recv).
            timeout = None
        payload = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._address[0]}:{self._address[1]}", f"Content-Length: {len(payload)}"]
        if body is not None:
            lines.append("Content-Type: application/json")
        lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
        message = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
        reused = self._sock is not None
        reader = ResponseReader()
        try:
            return self._exchange(message, timeout, loop, reader)
        except ConnectionClosed as exc:
            self.close()
            if not reused or exc.args[0]:
                raise
        except (ConnectionResetError, BrokenPipeError):
            # The same, told by a reset, where nothing of an answer came: the connection, not the
            # request, failed. The companion that gave up here would end, and its environment
            # with it. Part of an answer came: the request was handled, and is not sent again.
            self.close()
            if not reused or reader.received:
                raise
        except OSError:
            self.close()
            raise
        # A kept-alive connection the server had closed while idle (nothing of an answer came):
        # the request was never handled, and goes once more on a new connection.
        try:
            return self._exchange(message, timeout, loop, ResponseReader())
        except OSError:
            self.close()
            raise

    def _exchange(self, message: bytes, timeout: float | None, loop: EventLoop | None, reader: ResponseReader) -> tuple:
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
        if sock.gettimeout() != timeout:
            sock.settimeout(timeout)  # a system call: not on every /next, which keeps None
        sock.sendall(message)
        status, headers, payload = read_response(sock, reader) if loop is None else self._read_in_loop(sock, loop, reader)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, decode_body(payload)

    def _read_in_loop(self, sock: socket.socket, loop: EventLoop, reader: ResponseReader) -> tuple:
        # The socket stays blocking and registered with the loop from one request to the next,
        # and is read with MSG_DONTWAIT: switching it to non-blocking and back, and registering
        # and unregistering it, were five system calls on every /next.
        outcome: list = []
        self._awaited = (reader, outcome)
        if self._loop is not loop:
            if self._loop is not None:
                self._loop.remove_reader(sock)
            loop.add_reader(sock, self._on_readable)
            self._loop = loop
        try:
            loop.run_until(lambda: bool(outcome))
        finally:
            self._awaited = None
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    def _on_readable(self, sock: socket.socket) -> None:
        if self._awaited is None:
            # Readable with no request out: the server closed the idle connection (or sent
            # what nobody asked for). Either way it cannot carry the next request.
            self.close()
            return
        response, outcome = self._awaited
        while not outcome:
            try:
                data = sock.recv(READ_SIZE, socket.MSG_DONTWAIT)
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


class ResponseReader:
    """A response arriving in pieces: bytes in, (status, headers, body) out once it is whole.
    Bodies come with a Content-Length, chunked, or up to the end of the connection; 1xx answers
    are passed over, and 204/304 have no body. `keep_alive` says whether the connection can
    carry the next request: not when the server said close, and not when it sent more than the
    response (whatever follows would be read as the next answer). With `max_body`, a body
    that grows beyond it is cut: the response is whole at once, its body its first `max_body`
    bytes (of a chunked one, of the data that came, the chunk under way's too), and the connection not kept (what is left of the body would come
    as the next answer)."""

    def __init__(self, max_body: int | None = None) -> None:
        self._buffer = bytearray()
        self._head: tuple | None = None
        self._max_body = max_body
        self._chunks: ChunkedBody | None = None  # a chunked body's reading, resumed at each piece
        self.received = 0
        self.reason = ""
        self.keep_alive = True

    @property
    def head(self) -> tuple | None:
        """(status, lowercased headers) once the final status line and headers came, else None."""
        return self._head

    def feed(self, data: bytes) -> tuple | None:
        """The whole response, or None while more is to come; raises ConnectionClosed when the
        server closed (`data` empty) before it was whole, or sent what is not HTTP."""
        self.received += len(data)
        self._buffer += data
        closed = not data
        while self._head is None:
            while self._buffer[:1] in (b"\r", b"\n"):
                del self._buffer[:1]  # stray line ends before a status line are passed over
            end, separator = _head_end(self._buffer)
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    raise ConnectionClosed(self.received, "response headers too long")
                if closed:
                    raise ConnectionClosed(self.received, "closed before the response headers")
                return None
            head = bytes(self._buffer[:end])
            del self._buffer[: end + separator]
            version, status, reason, headers = parse_head(head)
            if not version.startswith("HTTP/") or status == 0:
                raise ConnectionClosed(self.received, "not an HTTP response")
            if 100 <= status < 200 and status != 101:
                continue  # an interim answer (100 Continue): the real one follows
            self._head = status, headers
            self.reason = reason
            connection = headers.get("connection")
            tokens = {token.strip() for token in connection.lower().split(",")} if connection else ()
            self.keep_alive = "close" not in tokens and (version != "HTTP/1.0" or "keep-alive" in tokens)
        status, headers = self._head
        if status in (204, 304):
            return self._whole(status, headers, b"", 0)
        if self._chunks is None and "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunks = ChunkedBody()
        if self._max_body is not None and len(self._buffer) > self._max_body:
            # Its first bytes are kept: a long partial success still counts what it rejected.
            cut = bytes(self._buffer[: self._max_body]) if self._chunks is None else self._chunks_so_far()
            self._buffer.clear()
            self.keep_alive = False
            headers["connection"] = "close"
            return status, headers, cut
        if self._chunks is not None:
            found = self._dechunked()
            if found is None:
                if closed:
                    raise ConnectionClosed(self.received, "closed before the last chunk")
                return None
            return self._whole(status, headers, found[0], found[1])
        wanted = _content_length(headers.get("content-length"), self.received)
        if wanted is not None:
            if len(self._buffer) >= wanted:
                return self._whole(status, headers, bytes(self._buffer[:wanted]), wanted)
            if closed:
                raise ConnectionClosed(self.received, "closed before the response body")
            return None
        # No length: the body runs to the end of the connection, which cannot be kept.
        self.keep_alive = False
        headers["connection"] = "close"
        return (status, headers, bytes(self._buffer)) if closed else None

    def _dechunked(self) -> tuple | None:
        """(body, bytes of the buffer it used) of a chunked response once its last chunk (and
        trailers) arrived, else None."""
        try:
            return self._chunks.take(self._buffer)
        except MalformedChunks as e:
            raise ConnectionClosed(self.received, str(e)) from None

    def _chunks_so_far(self) -> bytes:
        """The data that came, the chunk under way's too, up to max_body."""
        try:
            self._chunks.take(self._buffer)
        except MalformedChunks:
            pass
        return self._chunks.begun(self._buffer)[: self._max_body]

    def _whole(self, status: int, headers: dict, body: bytes, used: int) -> tuple:
        if len(self._buffer) > used:
            self.keep_alive = False
            headers["connection"] = "close"
        return status, headers, body


def _head_end(buffer: bytearray) -> tuple:
    """(where the status line and headers end, the length of the blank line that ends them);
    lines may end in a bare LF, as http.client also accepts."""
    end = buffer.find(b"\r\n\r\n")
    bare = buffer.find(b"\n\n")
    if bare >= 0 and (end < 0 or bare < end):
        return bare, 2
    return end, 4


def _content_length(value: str | None, received: int) -> int | None:
    """The body's length; None when there is none to go by (the body then ends with the
    connection, as http.client reads it). The same length repeated is one length; different
    ones are an error, as HTTP says."""
    if value is None:
        return None
    if value.isdigit() and value.isascii():
        return int(value)  # the usual case: one length
    lengths = {part.strip() for part in value.split(",")}
    if not all(length.isascii() and length.isdigit() for length in lengths):
        return None
    if len(lengths) > 1:
        raise ConnectionClosed(received, "conflicting Content-Length")
    return int(lengths.pop())




def read_response(sock: socket.socket, response: ResponseReader | None = None, deadline: float | None = None) -> tuple:
    """(status, lowercased headers, body bytes) of the next response on `sock`, read with
    `response` (whose reason and keep_alive the caller may want); raises ConnectionClosed when
    the server closes before it is whole. With `deadline` (monotonic), TimeoutError once it
    passed: the socket's timeout bounds each read, and a server sending a byte at a time
    would otherwise hold the reader for as long as it likes."""
    response = response or ResponseReader()
    while True:
        if deadline is not None:
            left = deadline - time.monotonic()
            # Past it, what already came is still read (a send that took the whole timeout,
            # its answer waiting): a request taken for failed would be sent again.
            sock.settimeout(max(left, 0.0))
            try:
                data = sock.recv(READ_SIZE)
            except OSError as exc:
                if left <= 0 and nothing_waiting(exc):
                    raise TimeoutError("the answer did not come whole within the timeout") from None
                raise
        else:
            data = sock.recv(READ_SIZE)
        whole = response.feed(data)
        if whole is not None:
            return whole


def nothing_waiting(exc: OSError) -> bool:
    """Whether a read that must not wait failed only for having nothing to read (a TLS socket's
    says so in an ssl error of its own; ssl is loaded for every TLS connection)."""
    tls = sys.modules.get("ssl")
    return isinstance(exc, (BlockingIOError, TimeoutError)) or (tls is not None and isinstance(exc, tls.SSLWantReadError))


def parse_head(head: bytes) -> tuple:
    """(version, status, reason, lowercased headers) of a response's status line and headers;
    status 0 when the status line has no three-digit code."""
    lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    # isascii(): str.isdigit() also accepts digits int() refuses ("²", from a latin-1 byte).
    status = int(code) if len(code) == 3 and code.isascii() and code.isdigit() else 0
    headers: dict = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            name, value = key.strip().lower(), value.strip()
            # Repeated fields combine into one, comma-separated, as HTTP defines.
            headers[name] = headers[name] + ", " + value if name in headers else value
    return version, status, reason.strip(), headers


def decode_body(payload: bytes) -> Any:
    try:
        return decode_json(payload) if payload else None
    except (ValueError, RecursionError):
        return payload.decode("utf-8", "replace")
