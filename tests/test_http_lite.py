"""The companion's HTTP client for the Extensions API: one kept-alive connection, a request
resent only when the server had closed that connection before answering any of it."""

from __future__ import annotations

import socket
import threading

import pytest

from lambdawrap.companion.extension_api import ExtensionClient
from lambdawrap.companion.http_lite import ConnectionClosed, HttpConnection

EVENT = b'{"eventType": "INVOKE", "requestId": "r-1"}'


class ScriptedServer:
    """A loopback server that answers each accepted connection with a script: a list of
    replies (bytes to send after reading one request; None = close without answering)."""

    def __init__(self, scripts: list) -> None:
        self._scripts = list(scripts)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        self.requests: list = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._scripts:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            script = self._scripts.pop(0)
            with conn:
                for reply in script:
                    request = self._read_request(conn)
                    if request is None:
                        break
                    self.requests.append(request)
                    if reply is None:
                        break
                    conn.sendall(reply)

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            body += conn.recv(65536)
        return head.split(b"\r\n")[0]

    def stop(self) -> None:
        self._listener.close()
        self._thread.join(10)


def reply(body: bytes, *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + b"".join(h + b"\r\n" for h in extra) + b"\r\n" + body


@pytest.fixture
def server_factory():
    servers = []

    def make(scripts: list) -> ScriptedServer:
        server = ScriptedServer(scripts)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def test_one_connection_serves_every_call(server_factory):
    server = server_factory([[reply(b"{}", b"Lambda-Extension-Identifier: ext-1")] + [reply(EVENT)] * 5])
    client = ExtensionClient(f"127.0.0.1:{server.port}")
    client.register("lambdawrap", ["INVOKE", "SHUTDOWN"])
    for _ in range(5):
        assert client.next_event() == {"eventType": "INVOKE", "requestId": "r-1"}
    assert server.connections == 1
    assert server.requests == [b"POST /2020-01-01/extension/register HTTP/1.1"] + [b"GET /2020-01-01/extension/event/next HTTP/1.1"] * 5


def test_a_connection_the_server_closed_while_idle_is_replaced_and_the_request_sent_again(server_factory):
    # The first connection answers once, then is closed by the server before the next answer.
    server = server_factory([[reply(EVENT), None], [reply(EVENT)]])
    connection = HttpConnection("127.0.0.1", server.port)
    assert connection.request("GET", "/next")[2] == {"eventType": "INVOKE", "requestId": "r-1"}
    assert connection.request("GET", "/next")[2] == {"eventType": "INVOKE", "requestId": "r-1"}
    assert server.connections == 2


def test_connection_close_from_the_server_is_honoured(server_factory):
    server = server_factory([[reply(EVENT, b"Connection: close")], [reply(EVENT)]])
    connection = HttpConnection("127.0.0.1", server.port)
    connection.request("GET", "/next")
    connection.request("GET", "/next")
    assert server.connections == 2


def test_a_response_cut_short_is_an_error_not_a_resend(server_factory):
    # Part of an answer means the request was handled: sending it again could consume an event.
    server = server_factory([[reply(EVENT), reply(EVENT)[:-5]], [reply(EVENT)]])
    connection = HttpConnection("127.0.0.1", server.port)
    connection.request("GET", "/next")
    with pytest.raises(ConnectionClosed):
        connection.request("GET", "/next")
    assert server.connections == 1 and len(server.requests) == 2


def test_a_new_connection_closed_without_an_answer_is_an_error(server_factory):
    server = server_factory([[None], [reply(EVENT)]])
    with pytest.raises(ConnectionClosed):
        HttpConnection("127.0.0.1", server.port).request("GET", "/next")
    assert server.connections == 1 and len(server.requests) == 1
