"""The function's log lines waiting for export, bounded in lines and in bytes.

A function can print far more than a small environment's memory can hold (50 MB an invocation
is not rare); the companion's memory counts against the function's. Lines beyond the bounds are
dropped and counted (`log_buffer_full`), never queued without end, and the export of what is
kept stays inside the flush budget like everything else. A flood drops tens of thousands of
lines an invocation: they are tallied here and reported in one count (`report_drops`, called
before every use of the counts), where one count per line was a quarter of the companion's CPU
for them.
"""

from __future__ import annotations

import collections
import threading
import time

from lambdawrap.companion.sized_items import take_front

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

MAX_LINES = 5000
# In UTF-8 bytes, not characters: a CJK line takes 3 bytes a character in the request (upb keeps
# a UTF-8 copy of each string it encodes), and counted in characters a flood of them made this
# "4 MB" buffer hold 8 to 16 MB of the memory the companion shares with the function.
MAX_BYTES = 4 * 1024 * 1024
# The platform caps a log record at 256 KiB of UTF-8, so a line it delivers whole has at most
# as many characters and is never cut here; a longer one (a platform that delivers more) is cut
# to this, its record marked (log_records.TRUNCATED). This cut is in characters.
MAX_LINE_CHARS = 256 * 1024


# How long lines wait for a span's ids (AwaitedIds) from the first of them buffered: the span
# may never be made (its init report lost), and every line after them waits with them.
MAX_AWAIT_S = 30.0


class AwaitedIds(list):
    """The ids of lines that wait for a span still to be made (the init's, for its lines past
    those the correlator holds): filled when it is made, and `known` from then on, even empty
    (no span came of it). Exported before, such a line would go without its trace; they wait
    until MAX_AWAIT_S after the first was buffered, or until the buffer is half full, and then
    go as they are."""

    __slots__ = ("known", "until")

    def __init__(self) -> None:
        super().__init__()
        self.known = False
        self.until: float | None = None  # wall-clock seconds: frozen time counts too

    def fill(self, ids: tuple | list | None) -> None:
        self[:] = ids or ()
        self.known = True


def _awaiting(entry: tuple) -> bool:
    ids = entry[2]
    return type(ids) is AwaitedIds and not ids.known and (ids.until is None or time.time() < ids.until)


def utf8_size(line: str) -> int:
    """The bytes of `line` in UTF-8 as it is exported: a lone surrogate counts the 3 bytes of the
    U+FFFD it becomes (encodable_text), a surrogate pair 6 where it becomes 4 (an upper bound).
    An ASCII line costs only that check, as counting its characters did."""
    return len(line) if line.isascii() else len(line.encode("utf-8", "surrogatepass"))


class LogBuffer:
    """(line, time_ns, ids, request_id) entries, oldest first; a line cut to MAX_LINE_CHARS has
    a fifth item, True."""

    def __init__(self, on_drop: Callable[[str, int], None], max_lines: int = MAX_LINES, max_bytes: int = MAX_BYTES) -> None:
        self._items: collections.deque = collections.deque()  # (entry, its line's UTF-8 bytes)
        self._lock = threading.Lock()
        self._on_drop = on_drop
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self.bytes = 0
        self._unreported = 0  # lines dropped by add() since the last report_drops()
        # Held across the tally's swap and its report, so that a reader of the counts (which
        # reports first) waits for a report under way instead of seeing the count nowhere.
        self._reporting = threading.Lock()

    def add(self, line: str, time_ns: int, ids: tuple | list | None, request_id: str | None) -> None:
        entry: tuple = (line, time_ns, ids, request_id)
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS]
            entry = (line, time_ns, ids, request_id, True)
        size = utf8_size(line)
        if type(ids) is AwaitedIds and ids.until is None:
            ids.until = time.time() + MAX_AWAIT_S
        with self._lock:
            if len(self._items) < self._max_lines and self.bytes + size <= self._max_bytes:
                self._items.append((entry, size))
                self.bytes += size
            else:
                self._unreported += 1

    def drop_if_full(self, chars: int) -> bool:
        """Count a line of `chars` characters as add() would drop it, if it would now; True if
        so. A flood's lines are counted this way without being read further. A line has at least
        as many bytes as characters, so what this drops add() would drop too; a line it lets by
        (a non-ASCII one may) add() measures in bytes, and drops and counts if need be."""
        if chars > MAX_LINE_CHARS:
            chars = MAX_LINE_CHARS
        with self._lock:
            if len(self._items) < self._max_lines and self.bytes + chars <= self._max_bytes:
                return False
            self._unreported += 1
            return True

    def report_drops(self) -> None:
        """Count the lines add() dropped since the last call, in one on_drop."""
        with self._reporting:
            with self._lock:
                count, self._unreported = self._unreported, 0
            if count:
                self._on_drop("log_buffer_full", count)

    def take(self, limit: int, max_bytes: int | None = None, ready: bool = False) -> list:
        """Up to `limit` entries, oldest first, and with `max_bytes` no more UTF-8 than that in
        their lines (but at least one entry): one request must not carry the whole buffer, past
        the collectors' limits (the OpenTelemetry Collector's gRPC 4 MiB). With `ready`, none
        from the first line still awaiting its ids (AwaitedIds): the lines keep their order."""
        with self._lock:
            batch, taken = take_front(self._items, limit, max_bytes, _awaiting if ready and not self._half_full() else None)
            self.bytes -= taken
            return batch

    def ready(self) -> bool:
        """Whether a line can be exported now: there is one, and it awaits no ids (or no
        longer may: the buffer is half full)."""
        with self._lock:
            return bool(self._items) and (self._half_full() or not _awaiting(self._items[0][0]))

    def _half_full(self) -> bool:
        # Lock held. Past it, lines awaiting ids hold the others back no more: waiting on, the
        # buffer would fill, and the function's own lines be dropped.
        return 2 * len(self._items) >= self._max_lines or 2 * self.bytes >= self._max_bytes

    def give_back(self, batch: list) -> None:
        """Put an unexported batch back at the front; what no longer fits is dropped."""
        lost = 0
        # Measured again, not kept with the batch: a refused export is rare, and the entries
        # stay the tuples the exporter reads.
        sized = [(entry, utf8_size(entry[0])) for entry in batch]
        with self._lock:
            for entry, size in reversed(sized):
                if len(self._items) >= self._max_lines or self.bytes + size > self._max_bytes:
                    lost += 1
                    continue
                self._items.appendleft((entry, size))
                self.bytes += size
        if lost:
            self._on_drop("log_buffer_full", lost)

    def __len__(self) -> int:
        return len(self._items)
