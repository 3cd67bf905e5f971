"""The chunked transfer coding as the companion reads it (the Telemetry API listener's requests,
the collector's answers): a body once whole, None while it is not, refused when it cannot be."""

from __future__ import annotations

import pytest

from lambdawrap.companion.chunked_body import MAX_SIZE_LINE_BYTES, MAX_TRAILER_BYTES, MalformedChunks, take_chunked


@pytest.mark.parametrize(
    "raw, body",
    [
        (b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n", b"Wikipedia"),
        (b"3\r\nabc\r\n0\r\nX-Trailer: yes\r\n\r\n", b"abc"),
        (b"A \r\n0123456789\r\n0\r\n\r\n", b"0123456789"),  # blanks before an extension's ";"
    ],
)
def test_a_whole_body_is_read_and_its_end_found(raw, body):
    buffer = bytearray(raw + b"POST next")
    assert take_chunked(buffer, 0) == (body, len(raw))


@pytest.mark.parametrize("raw", [b"4\r\nWi", b"4\r\nWiki\r\n0\r\n", b"4\r\nWiki\r\n0\r\nX-Trailer: y", b"4"])
def test_a_body_still_on_its_way_is_none(raw):
    assert take_chunked(bytearray(raw), 0) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"-6\r\nhello\r\n0\r\n\r\n",  # int() takes a sign: the reader went back, for ever
        b"+2\r\n[]\r\n0\r\n\r\n",
        b"0x2\r\n[]\r\n0\r\n\r\n",
        b"2_0\r\n[]\r\n0\r\n\r\n",
        b" 2\r\n[]\r\n0\r\n\r\n",
        b"\r\n[]\r\n0\r\n\r\n",
        b"2\r\n[]XY0\r\n\r\n",  # no CRLF after the chunk's data
        b"1" * MAX_SIZE_LINE_BYTES,  # a size line that never ends
        b"0\r\n" + b"X-Trailer: y\r\n" * (MAX_TRAILER_BYTES // 14 + 1),  # trailers that never end
    ],
)
def test_what_is_no_chunked_body_is_refused(raw):
    with pytest.raises(MalformedChunks):
        take_chunked(bytearray(raw), 0)


def test_a_body_over_the_bound_is_refused_before_it_is_read():
    with pytest.raises(MalformedChunks, match="too large"):
        take_chunked(bytearray(b"ffff\r\n"), 0, max_bytes=1000)


def _post_to_listener(transfer_encoding: str, body: bytes) -> tuple:
    """(the listener's answer's status line, batches it handed on, problems it reported) for one
    chunked POST with `transfer_encoding`, to a real listener on loopback."""
    import queue
    import socket

    from lambdawrap.companion.telemetry_listener import TelemetryListener

    batches, problems = queue.Queue(), queue.Queue()
    listener = TelemetryListener(batches.put, lambda kind, message: problems.put(kind), host="127.0.0.1")
    listener.start()
    try:
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:5], body[5:])) + b"0\r\n\r\n"
        request = b"POST / HTTP/1.1\r\nHost: sandbox\r\nTransfer-Encoding: %s\r\n\r\n%s" % (transfer_encoding.encode(), chunks)
        with socket.create_connection(listener.address, timeout=30) as conn:
            conn.sendall(request)
            answer = conn.recv(4096)
        return answer.split(b"\r\n", 1)[0], batches, problems
    finally:
        listener.stop()


@pytest.mark.parametrize("transfer_encoding", ["chunked", "identity, chunked", "Chunked"])
def test_the_telemetry_listener_reads_a_body_whose_last_coding_is_chunked(transfer_encoding):
    # WHEN the listener gets a batch chunked under each spelling HTTP allows
    status, batches, problems = _post_to_listener(transfer_encoding, b'[{"type": "platform.start"}]')
    # THEN the batch is read whole (before: "identity, chunked" was read as an empty body, and
    # its chunks as the next request)
    assert status == b"HTTP/1.1 200 OK"
    assert batches.get(timeout=30) == [{"type": "platform.start"}]
    assert problems.empty()


def test_the_telemetry_listener_refuses_a_coding_it_cannot_undo():
    status, batches, problems = _post_to_listener("gzip, chunked", b'[{"type": "platform.start"}]')
    assert status == b"HTTP/1.1 400 Bad Request"
    assert problems.get(timeout=30) == "malformed_telemetry"
    assert batches.empty()
