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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

MAX_LINES = 5000
MAX_BYTES = 4 * 1024 * 1024
# The platform caps a log record at 256 KiB of UTF-8, so a line it delivers whole has at most
# as many characters and is never cut here; a longer one (a platform that delivers more) is cut
# to this, its record marked (log_records.TRUNCATED). Sizes here are in characters.
MAX_LINE_CHARS = 256 * 1024


class LogBuffer:
    """(line, time_ns, ids, request_id) entries, oldest first; a line cut to MAX_LINE_CHARS has
    a fifth item, True."""

    def __init__(self, on_drop: Callable[[str, int], None], max_lines: int = MAX_LINES, max_bytes: int = MAX_BYTES) -> None:
        self._items: collections.deque = collections.deque()
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
        with self._lock:
            if len(self._items) < self._max_lines and self.bytes + len(line) <= self._max_bytes:
                self._items.append(entry)
                self.bytes += len(line)
            else:
                self._unreported += 1

    def drop_if_full(self, chars: int) -> bool:
        """Count a line of `chars` characters as add() would drop it, if it would now; True if
        so. A flood's lines are counted this way without being read further."""
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

    def take(self, limit: int) -> list:
        with self._lock:
            batch = []
            while self._items and len(batch) < limit:
                entry = self._items.popleft()
                self.bytes -= len(entry[0])
                batch.append(entry)
            return batch

    def give_back(self, batch: list) -> None:
        """Put an unexported batch back at the front; what no longer fits is dropped."""
        lost = 0
        with self._lock:
            for entry in reversed(batch):
                if len(self._items) >= self._max_lines or self.bytes + len(entry[0]) > self._max_bytes:
                    lost += 1
                    continue
                self._items.appendleft(entry)
                self.bytes += len(entry[0])
        if lost:
            self._on_drop("log_buffer_full", lost)

    def __len__(self) -> int:
        return len(self._items)
