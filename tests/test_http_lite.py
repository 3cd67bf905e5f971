"""The companion's HTTP client for the Extensions API: one kept-alive connection, a request
resent only when the server had closed that connection before answering any of it."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from lambdawrap.companion.event_loop import EventLoop
from lambdawrap.companion.extension_api import ExtensionClient
from lambdawrap.companion.http_lite import ConnectionClosed, HttpConnection
from support.scripted_server import RESET, ScriptedServer

EVENT = b'{"eventType": "INVOKE", "requestId": "r-1"}'


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


@pytest.mark.parametrize("in_the_loop", [False, True], ids=["alone", "in the loop"])
def test_a_kept_alive_connection_the_server_reset_is_replaced_and_the_request_sent_again(server_factory, in_the_loop):
    # The first connection answers once, then is reset before the next answer (before: the
    # reset ended the companion, and its environment with it)
    server = server_factory([[reply(EVENT), RESET], [reply(EVENT)]])
    connection = HttpConnection("127.0.0.1", server.port)
    loop = EventLoop() if in_the_loop else None
    try:
        assert connection.request("GET", "/next", loop=loop)[2] == {"eventType": "INVOKE", "requestId": "r-1"}
        assert connection.request("GET", "/next", loop=loop)[2] == {"eventType": "INVOKE", "requestId": "r-1"}
    finally:
        connection.close()
        if loop is not None:
            loop.close()
    assert server.connections == 2


def test_a_connection_reset_after_part_of_its_answer_came_is_an_error_not_a_resend(server_factory):
    # The request was handled (part of its answer came): sent again, it would be handled twice
    server = server_factory([[reply(EVENT), (b"HTTP/1.1 202 Accepted\r\nContent-Len", RESET)], [reply(EVENT)]])
    connection = HttpConnection("127.0.0.1", server.port)
    try:
        connection.request("GET", "/next")
        with pytest.raises(ConnectionResetError):
            connection.request("POST", "/init/error", body={})
    finally:
        connection.close()
    assert server.requests == [b"GET /next HTTP/1.1", b"POST /init/error HTTP/1.1"]


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


class CountingLoop(EventLoop):
    """The companion's loop, counting the sockets it is asked to watch and to stop watching."""

    def __init__(self) -> None:
        super().__init__()
        self.added = 0
        self.removed = 0

    def add_reader(self, sock, callback) -> None:
        self.added += 1
        super().add_reader(sock, callback)

    def remove_reader(self, sock) -> None:
        self.removed += 1
        super().remove_reader(sock)


def test_in_the_loop_the_connection_stays_watched_and_blocking_from_one_call_to_the_next(server_factory):
    # Registering and unregistering the socket, and switching it to non-blocking and back,
    # were five system calls on every /next.
    server = server_factory([[reply(EVENT)] * 5])
    loop = CountingLoop()
    connection = HttpConnection("127.0.0.1", server.port)
    try:
        for _ in range(5):
            assert connection.request("GET", "/next", timeout=None, loop=loop)[2] == {"eventType": "INVOKE", "requestId": "r-1"}
            assert connection._sock.gettimeout() is None
        assert (loop.added, loop.removed, server.connections) == (1, 0, 1)
    finally:
        connection.close()
        loop.close()


def test_in_the_loop_a_connection_the_server_closed_while_idle_is_let_go_at_once(server_factory):
    # The server answers once and closes: the loop, serving whatever else, notices and lets
    # the socket go; the next request goes, once, on a new connection.
    server = server_factory([[reply(EVENT)], [reply(EVENT)]])
    loop = CountingLoop()
    connection = HttpConnection("127.0.0.1", server.port)
    try:
        connection.request("GET", "/next", timeout=None, loop=loop)
        assert loop.run_until(lambda: loop.removed == 1, time.monotonic() + 10)
        assert connection.request("GET", "/next", timeout=None, loop=loop)[2] == {"eventType": "INVOKE", "requestId": "r-1"}
        assert (loop.added, server.connections, len(server.requests)) == (2, 2, 2)
    finally:
        connection.close()
        loop.close()


def test_a_call_without_the_loop_still_has_its_timeout_after_calls_in_it(server_factory):
    # The second answer stops short: only the timeout ends the wait for the rest.
    server = server_factory([[reply(EVENT), reply(EVENT)[:-5], reply(EVENT)]])
    loop = CountingLoop()
    connection = HttpConnection("127.0.0.1", server.port)
    try:
        connection.request("GET", "/next", timeout=None, loop=loop)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            connection.request("GET", "/next", timeout=0.5)
        assert 0.4 < time.monotonic() - started < 5
    finally:
        connection.close()
        loop.close()


def test_in_the_loop_a_timeout_given_never_holds_the_loop_up():
    # The answer's last bytes come 1 s after the rest: the loop's other work (here a timer)
    # goes on meanwhile, and the answer is awaited however long it takes.
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(reply(EVENT)[:-5])
            time.sleep(1.0)
            conn.sendall(reply(EVENT)[-5:])
            conn.recv(1)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    loop = CountingLoop()
    connection = HttpConnection("127.0.0.1", listener.getsockname()[1])
    fired: list = []
    started = time.monotonic()
    loop.call_at(started + 0.05, lambda: fired.append(time.monotonic() - started))
    try:
        assert connection.request("GET", "/next", timeout=0.3, loop=loop)[2] == {"eventType": "INVOKE", "requestId": "r-1"}
        assert fired and fired[0] < 0.5
    finally:
        connection.close()
        loop.close()
        listener.close()
        server.join(5)


# Responses as servers write them, read by ours and by http.client: the same status, reason,
# body and keep-alive decision, whatever the pieces they arrive in.
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: yes\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 400 Bad Request\r\nVary: a\r\nVary: b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",  # the same length twice
    b"HTTP/1.1 200 OK\r\nConnection: close, TE\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 2\n\n{}",  # bare LF line ends
]


def read_in_pieces(raw: bytes, size: int) -> tuple:
    from lambdawrap.companion.http_lite import ResponseReader

    reader = ResponseReader()
    for start in range(0, len(raw), size):
        whole = reader.feed(raw[start : start + size])
        if whole is not None:
            return whole[0], reader.reason, whole[2], reader.keep_alive, whole[1]
    whole = reader.feed(b"")  # the server closed: a body without a length ends here
    return whole[0], reader.reason, whole[2], reader.keep_alive, whole[1]


def read_with_http_client(raw: bytes) -> tuple:
    import http.client
    import io

    class Source:
        def makefile(self, mode: str) -> io.BytesIO:
            return io.BytesIO(raw)

    response = http.client.HTTPResponse(Source(), method="POST")  # type: ignore[arg-type]
    response.begin()
    return response.status, response.reason, response.read(), not response.will_close, response.headers


@pytest.mark.parametrize("raw", RESPONSES)
@pytest.mark.parametrize("piece", [1, 7, 65536])
def test_responses_read_as_http_client_reads_them(raw, piece):
    status, reason, body, keep_alive, headers = read_in_pieces(raw, piece)
    theirs = read_with_http_client(raw)
    assert (status, reason, body, keep_alive) == theirs[:4]
    for name in theirs[4]:
        assert headers[name.lower()] == ", ".join(theirs[4].get_all(name))


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWi",  # cut inside a chunk
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nWiki\r\n0\r\n\r\n",  # not a size
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nabcde",  # two lengths
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY0\r\n\r\n",  # no CRLF after a chunk
        b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",
        b"junk\r\n\r\n",
    ],
)
def test_a_broken_response_is_a_closed_connection(raw):
    with pytest.raises(ConnectionClosed):
        read_in_pieces(raw, 3)


def test_stray_line_ends_before_a_response_are_passed_over():
    # Left on a kept-alive connection by a server that ended its previous answer with an extra
    # CRLF: the next answer is still read for what it is.
    assert read_in_pieces(b"\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 1)[:4] == (200, "OK", b"{}", True)


def test_a_chunked_body_trickled_in_is_not_read_again_at_each_piece(monkeypatch):
    from lambdawrap.companion import http_lite

    # GIVEN a chunked answer of 8,000 one-byte chunks, arriving a chunk at a time (a collector
    # or proxy flushing each byte)
    read = []

    class CountingChunks(http_lite.ChunkedBody):
        def take(self, buffer):
            before = len(self._pieces)
            try:
                return super().take(buffer)
            finally:
                read.append(len(self._pieces) - before)

    monkeypatch.setattr(http_lite, "ChunkedBody", CountingChunks)
    chunk = b"1\r\nx\r\n"
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 8000 + b"0\r\n\r\n"
    # WHEN it is read, piece by piece
    status, _, body, keep_alive, _ = read_in_pieces(raw, len(chunk))
    # THEN it is the body, read as http.client reads it, and each chunk was gone through once
    # (before: all of them again at every piece, 8,000 times over a growing buffer: 0.3 GB
    # scanned, seconds of CPU the function's share pays)
    theirs = read_with_http_client(raw)
    assert (status, body, keep_alive) == (theirs[0], theirs[2], theirs[3]) == (200, b"x" * 8000, True)
    assert sum(read) == 8000, sum(read)


def test_a_malformed_chunk_is_found_as_it_comes_not_when_the_connection_ends():
    from lambdawrap.companion.http_lite import ResponseReader

    # GIVEN a chunked answer whose second chunk's size is no hex number, the connection kept open
    reader = ResponseReader()
    assert reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n") is None
    # WHEN that size line comes THEN the answer is refused at once (not at the request's timeout)
    with pytest.raises(ConnectionClosed):
        reader.feed(b"zz\r\npedia\r\n")


def test_a_chunked_body_over_the_limit_keeps_its_first_chunks_data():
    from lambdawrap.companion.http_lite import ResponseReader

    # GIVEN a reader keeping 8 bytes of a body, and a chunked answer of 3 chunks of 6, the first
    # two and part of the third in one read
    reader = ResponseReader(max_body=8)
    found = None
    for piece in (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"6\r\nabcdef\r\n6\r\nghijkl\r\n6\r\nmn", b"opqr\r\n0\r\n\r\n"):
        found = found or reader.feed(piece)
    # THEN its answer is the data of the chunks that came whole, cut at the limit, and the
    # connection is not kept (the rest would be read as the next answer)
    assert found[0] == 200 and found[2] == b"abcdefgh" and reader.keep_alive is False


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\nHTTP/1.1",
        b"HTTP/1.1 204 No Content\r\n\r\nextra",
    ],
)
def test_a_connection_with_bytes_beyond_the_response_is_not_kept(raw):
    # They would be read as the start of the next request's answer.
    status, _, body, keep_alive, _ = read_in_pieces(raw, 65536)
    assert status in (200, 204) and keep_alive is False
