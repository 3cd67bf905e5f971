"""Real servers on loopback for the outgoing-call tests: an HTTP server that records what it was
sent and answers as the path asks, and a port nothing listens on."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

from lambdawrap.devtools.local.ports import free_port


class RecordingServer:
    """GET/POST /status/<code> answers <code>; /redirect answers 302 to /status/200, /loop 302
    to itself; /garbled answers 200 with a body its Content-Encoding (gzip) does not hold; /slow
    answers only when released (or after 30 s); every request's headers are kept (`lines`: each
    header line as sent, in order)."""

    def __init__(self) -> None:
        self.requests: list = []
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                server.requests.append({"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "lines": self.headers.items()})
                path = self.path.split("?")[0]
                if path == "/slow":
                    server.release.wait(30)
                if path in ("/redirect", "/loop"):
                    self.send_response(302)
                    self.send_header("Location", "/status/200" if path == "/redirect" else "/loop")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path == "/garbled":
                    self.send_response(200)
                    self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", "9")
                    self.end_headers()
                    self.wfile.write(b"not gzip!")
                    return
                code = int(path.rsplit("/", 1)[1]) if path.startswith("/status/") else 200
                body = json.dumps({"path": self.path}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="recording-server", daemon=True)

    def __enter__(self) -> "RecordingServer":
        self._thread.start()  # bound already: ready before anyone is told the URL
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)


def read_head(conn: socket.socket, pending: bytes = b"") -> tuple[bytes, bytes] | None:
    """(a request's head, what came after it) read from `conn`, after the bytes `pending`
    already read; None when the client closes first. For servers that speak HTTP by hand."""
    while b"\r\n\r\n" not in pending:
        data = conn.recv(65536)
        if not data:
            return None
        pending += data
    head, _, rest = pending.partition(b"\r\n\r\n")
    return head, rest


def read_body(conn: socket.socket, pending: bytes, length: int) -> tuple[bytes, bytes] | None:
    """(a request's body of `length` bytes, what came after it), read from `conn` after the bytes
    `pending` already read; None when the client closes first."""
    while len(pending) < length:
        more = conn.recv(65536)
        if not more:
            return None
        pending += more
    return pending[:length], pending[length:]


def content_length(head: bytes) -> int:
    """The Content-Length a request's head declares (0 without one)."""
    return next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused): one the kernel does not hand
    to a server started later, as a port of its ephemeral range, found free, would be."""
    return free_port()


@contextlib.contextmanager
def recording_server() -> Iterator[RecordingServer]:
    with RecordingServer() as server:
        yield server


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """The URL of a port that takes connections (the kernel's backlog) and never answers: a
    client's read times out."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/silent"
