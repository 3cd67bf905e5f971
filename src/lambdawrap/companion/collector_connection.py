"""One kept-alive HTTP/1.1 connection to a collector, plain or TLS, for the exporters' POSTs.

http.client spent ~120 µs of CPU on each export building and parsing headers through the email
package, a third of a small export, and its import brings ssl and the email parser (~7 ms on a
full core) even where the collector speaks plain HTTP; at 128 MB an export after a sparse
invocation is billed at 14 times its CPU. Collectors reached through a proxy keep http.client
(its CONNECT tunnel); the direct ones, nearly every Lambda function's, use this."""

from __future__ import annotations

import select
import socket
import time

from lambdawrap.companion.http_lite import ResponseReader, nothing_waiting, read_response

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl

# Up to this size the request goes out in one send (head and body together); above it the body
# is sent as it is, not copied.
_ONE_SEND_BYTES = 64 * 1024
_FORBIDDEN_IN_NAME = frozenset("\r\n: \t")
# An OTLP answer is a few bytes (an error page a few KB): a body beyond this is not read. A
# wrong endpoint (a proxy, a download) would otherwise fill the memory the companion shares
# with the function.
MAX_ANSWER_BYTES = 64 * 1024


class CollectorConnection:
    """A connection to one collector; one request at a time (the transport lends it out)."""

    def __init__(self, host: str, port: int | None, tls: ssl.SSLContext | None, timeout: float | None) -> None:
        default_port = 443 if tls is not None else 80
        sock = socket.create_connection((_lookup_name(host), port or default_port), timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        self.sock: socket.socket | None = sock
        self.keep_alive = True
        self.sent_whole = False  # whether the last request went whole (its answer may not have come)
        self._host = host_header(host, port, default_port)

    def request(self, method: str, path: str, headers: dict, body: bytes, timeout: float | None) -> tuple:
        """(status, reason, headers with lowercased names, body). Raises OSError for anything
        that went wrong on the connection (then unusable) and ValueError for a header that
        cannot be sent (CR or LF in it, as http.client refuses too)."""
        sock = self.sock
        if sock is None:
            raise ConnectionResetError("connection closed")
        fields = {"host": "Host: " + self._host, "accept-encoding": "Accept-Encoding: identity"}
        for name, value in headers.items():
            value = str(value)
            if not name or not _FORBIDDEN_IN_NAME.isdisjoint(name) or "\r" in value or "\n" in value:
                raise ValueError(f"invalid HTTP header {name!r}")
            fields[name.lower()] = f"{name}: {value}"
        fields["content-length"] = f"Content-Length: {len(body)}"
        head = ("\r\n".join((f"{method} {path} HTTP/1.1", *fields.values())) + "\r\n\r\n").encode("latin-1")
        # The timeout is the request's, not each read's (sendall already counts it so).
        deadline = None if timeout is None else time.monotonic() + timeout
        sock.settimeout(timeout)
        self.sent_whole = False
        try:
            if len(body) <= _ONE_SEND_BYTES:
                sock.sendall(head + body)
            else:
                sock.sendall(head)
                sock.sendall(body)
            self.sent_whole = True
        except (BrokenPipeError, ConnectionResetError) as error:
            # A collector may answer before it has read the whole request and close: a 413 for
            # a body over its limit (the OpenTelemetry Collector's, Go's net/http, nginx).
            # Its answer is read, as urllib3 (requests) reads it: taken for a broken
            # connection, the batch would be sent again whole at every flush, never in the
            # smaller requests a 413 asks for, holding back all that follows.
            answered = self._early_answer(deadline)
            if answered is None:
                raise error from None
            return answered
        return self._answer(deadline)

    def _early_answer(self, deadline: float | None) -> tuple | None:
        """(status, reason, headers, body) of an answer the collector sent before the request
        was, if one came; the connection is not kept either way."""
        try:
            return self._answer(deadline)
        except OSError:
            return None
        finally:
            self.keep_alive = False

    def _answer(self, deadline: float | None) -> tuple:
        """(status, reason, lowercased headers, body) of the answer on the connection. One whose
        status came whole but whose body did not (cut, or too slow) is its status, its body
        empty and the connection not kept: the status says what became of the request (a 2xx
        taken for a failure would be sent again, and stored twice, at every retry). Raises
        OSError when no status came."""
        reader = ResponseReader(MAX_ANSWER_BYTES)
        try:
            status, response_headers, payload = read_response(self.sock, reader, deadline)
        except OSError:
            if reader.head is None:
                raise
            self.keep_alive = False
            status, response_headers = reader.head
            return status, reader.reason, response_headers, b""
        self.keep_alive = reader.keep_alive
        return status, reader.reason, response_headers, payload

    def dropped(self) -> bool:
        """Whether the collector closed this idle connection (or sent what it should not have):
        collectors and load balancers close connections idle for a minute or so, and a function
        invoked less often finds its connection closed at every invocation. Readable while idle
        means closed, except for TLS 1.3's session tickets, which a read takes in and answers
        with no data."""
        sock = self.sock
        if sock is None:
            return True
        if not self.readable():
            return False
        sock.settimeout(0)
        try:
            sock.recv(1)  # b"" (closed) or data nobody asked for (out of step): unusable either way
        except OSError as error:
            # Only TLS records without data were waiting (a TLS 1.3 session ticket).
            return not nothing_waiting(error)
        return True

    def readable(self) -> bool:
        """Whether anything came on this connection since its last answer (one system call):
        if not, it is open; if so, `dropped` tells."""
        if self.sock is None:
            return True
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None


def _lookup_name(host: str) -> str | bytes:
    """An ASCII name as bytes, checked as the IDNA codec checks one: getaddrinfo runs every str
    through that codec, whose import (encodings.idna, stringprep, unicodedata) costs ~1 ms of
    CPU in init; a malformed name still fails at once (UnicodeError), not as an unreachable
    host retried until the export's timeout."""
    if not host.isascii():
        return host
    labels = host.split(".")
    if any(not 0 < len(label) < 64 for label in labels[:-1]) or len(labels[-1]) >= 64:
        raise UnicodeError("label empty or too long")
    return host.encode("ascii")


def host_header(host: str, port: int | None, default_port: int) -> str:
    """The Host header as http.client writes it: an international name in its IDNA form,
    an IPv6 address in brackets, the port only when it is not the scheme's own."""
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        host = host.encode("idna").decode("ascii")
    name = f"[{host}]" if ":" in host else host
    return name if port in (None, default_port) else f"{name}:{port}"
