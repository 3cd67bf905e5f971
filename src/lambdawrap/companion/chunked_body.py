"""The chunked transfer coding (RFC 9112 §7.1), read from a buffer as it fills: the Telemetry
API's requests to the listener and the collector's answers both may come this way."""

from __future__ import annotations

_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
# A chunk's size line (its extensions included) and the trailers: what waits for their end is
# bounded, as a body is, or a sender that never ends them would grow the buffer without end.
MAX_SIZE_LINE_BYTES = 4096
MAX_TRAILER_BYTES = 64 * 1024


class MalformedChunks(ValueError):
    """What the buffer holds from `start` is no chunked body; the message says why."""


def take_chunked(buffer: bytearray, start: int, max_bytes: int = 0) -> tuple | None:
    """(body, where the message ends in `buffer`) once the last chunk and its trailers are in,
    else None. A chunk size is hex digits only: int() would also take a sign ("-6" sends the
    reader back over what it read, for ever), "0x", "_" and blanks. `max_bytes` (0: none)
    bounds the body."""
    return ChunkedBody(start, max_bytes).take(buffer)


class ChunkedBody:
    """A chunked body read from a buffer that only grows, resumed where the last read stopped:
    a body trickled in (a chunk a read) is gone through once, not again at each read (the
    number of reads times the body's size), and a malformed part is found as it comes."""

    def __init__(self, start: int = 0, max_bytes: int = 0) -> None:
        # The data's places, copied out only once the body is whole (or asked for as it is).
        self._pieces: list = []
        self._size_sum = 0
        self._position = start  # where the next chunk's size line begins
        self._max_bytes = max_bytes

    def take(self, buffer: bytearray) -> tuple | None:
        """(body, where the message ends in `buffer`) once the last chunk and its trailers are
        in, else None; raises MalformedChunks."""
        while True:
            found = _size_line(buffer, self._position)
            if found is None:
                return None
            size, line_end = found
            if self._max_bytes and self._size_sum + size > self._max_bytes:
                raise MalformedChunks("a chunked body too large")
            if size == 0:
                # Trailers, if any, end with an empty line; without them the empty line follows.
                trailers_end = buffer.find(b"\r\n\r\n", line_end, line_end + MAX_TRAILER_BYTES)
                if trailers_end < 0:
                    if len(buffer) - line_end >= MAX_TRAILER_BYTES:
                        raise MalformedChunks("trailers too long")
                    return None
                return self.so_far(buffer), trailers_end + 4
            chunk_start = line_end + 2
            if len(buffer) < chunk_start + size + 2:
                return None
            if buffer[chunk_start + size : chunk_start + size + 2] != b"\r\n":
                raise MalformedChunks("a chunk without its CRLF")
            self._pieces.append((chunk_start, chunk_start + size))
            self._size_sum += size
            self._position = chunk_start + size + 2

    def so_far(self, buffer: bytearray) -> bytes:
        """The data of the chunks read whole so far."""
        return b"".join(buffer[a:b] for a, b in self._pieces)

    def begun(self, buffer: bytearray) -> bytes:
        """The data that came so far, that of the chunk under way too: a server may send a whole
        body as one chunk (Go's net/http does, for one large write), and a cut body's first
        bytes are its only ones then."""
        data = self.so_far(buffer)
        try:
            found = _size_line(buffer, self._position)
        except MalformedChunks:
            return data
        if found is None:
            return data
        size, line_end = found
        return data + bytes(buffer[line_end + 2 : line_end + 2 + size])


def _size_line(buffer: bytearray, position: int) -> tuple | None:
    """(the chunk's size, where its size line ends) of the size line at `position`, None while it
    has not come whole; raises MalformedChunks."""
    line_end = buffer.find(b"\r\n", position, position + MAX_SIZE_LINE_BYTES)
    if line_end < 0:
        if len(buffer) - position >= MAX_SIZE_LINE_BYTES:
            raise MalformedChunks("a chunk size line too long")
        return None
    size_text = bytes(buffer[position:line_end]).partition(b";")[0].rstrip(b" \t")
    if not size_text or not _HEX_DIGITS.issuperset(size_text):
        raise MalformedChunks("a malformed chunk size")
    return int(size_text, 16), line_end
