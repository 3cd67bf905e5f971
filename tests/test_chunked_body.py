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
