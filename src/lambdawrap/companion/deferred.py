"""A sink that remembers calls until the real one exists, then replays them in order.

The companion calls /next (ending its part of init) before the OpenTelemetry SDK is even
imported; whatever the correlator finishes meanwhile waits here. The function's log lines wait
within the log buffer's bounds, as they would in it: a flood while the SDK imports (or after a
re-init, which does not wait for it) must not grow the companion, whose memory is the
function's, by the flood's size. The other calls are bounded by their size too (an invocation's
record carries up to 256 KB: its exception's stack, the function's spans), measured as the
carry-over file measures them."""

from __future__ import annotations

import collections
import json
import threading
from typing import Any

from lambdawrap.companion import carryover
from lambdawrap.companion.correlator import InitFacts, Invocation, call_lost
from lambdawrap.companion.log_buffer import MAX_BYTES, MAX_LINE_CHARS, MAX_LINES, utf8_size
from lambdawrap.shared.log import get_logger

# The calls kept until the pipeline is loaded, besides the log lines (bounded as the log buffer
# bounds them) and the calls that carry counts (always kept); the others are counted
# (`startup_backlog`). In bytes, as the carry-over file measures them (JSON): once replayed they
# become spans in the span buffer, which holds 16 Mi characters of span text
# (span_building.MAX_BUFFER_CHARS, not imported here: it imports the SDK); beyond that they would
# be dropped there, having first held the memory the function shares (100,000 records of up to
# 256 KB each, bounded by their count alone).
MAX_DEFERRED_CALLS = 100_000
MAX_DEFERRED_BYTES = 16 * 1024 * 1024
# Once no pipeline will come, the calls kept for the next environment: what its carry-over file
# holds (4 MB). The pipeline's import ends the first wait in seconds; this one lasts the
# environment's life, invocation after invocation, in the memory the function shares (a count
# alone let 1,000 records of 256 KB hold +566 MB).
MAX_ABANDONED_CALLS = 1_000
MAX_ABANDONED_BYTES = carryover.MAX_BYTES
# The function's log lines, asked for, that no pipeline will export: those waiting when it
# failed to start and those that come after.
LINES_ABANDONED = "log_pipeline_failed"
# The size of a call JSON cannot measure (the carry-over file could not hold it either): the
# most one record carries.
_UNMEASURED_BYTES = 256 * 1024
# Calls that only add to a counter (label, count): added up while they wait, one per label,
# whatever their number (a drop counted at every invocation of a long-lived environment).
_COUNTERS = frozenset({"dropped", "internal_errors"})
# Calls that carry counts otherwise: always kept (one per carry-over), or they go uncounted.
_COUNTING = frozenset({"restore_counts"})


class DeferredSink:
    def __init__(self, logs_exported: bool = True) -> None:
        """`logs_exported`: whether the function's log lines are exported at all; if not, they
        are dropped at once, and not counted (nobody asked for them), as the log buffer does."""
        self._lock = threading.Lock()
        self._calls: list = []
        self._target: Any = None
        self._logs_exported = logs_exported
        self.overflow = 0
        self.failed = 0
        self._abandoned = False
        self._lines = 0  # log lines waiting, and their UTF-8 bytes
        self._bytes = 0
        self._lines_over = 0  # log lines dropped past the log buffer's bounds
        self._max_calls = MAX_DEFERRED_CALLS
        self._max_bytes = MAX_DEFERRED_BYTES
        self._kept = 0  # calls within those bounds, and their bytes
        self._kept_bytes = 0
        # Set once a call did not fit: the first calls are kept, the rest counted, without each
        # being measured for the environment's life once no pipeline will come.
        self._full = False
        self._counted: collections.Counter = collections.Counter()  # (call, label) -> count

    def attach(self, target: Any) -> None:
        """Replay the remembered calls into `target`, then pass calls straight on. What was
        lost meanwhile is reported to it: calls past their bounds (`startup_backlog`), log lines past
        the log buffer's bounds (`log_buffer_full`) and replayed calls that failed (internal
        errors)."""
        with self._lock:
            for name, args, kwargs in self._drained():
                try:
                    getattr(target, name)(*args, **kwargs)
                except Exception:  # noqa: BLE001 - one bad call must not keep the sink detached
                    self.failed += 1
                    get_logger().warning("lambdawrap: a deferred %s call failed", name, exc_info=True)
            self._target = target
            if self.failed:
                target.internal_errors("companion", self.failed)

    def abandon(self) -> None:
        """No target will come (the pipeline failed to start): the log lines waiting are let go,
        and those to come are dropped at once, all counted (`log_pipeline_failed`, where logs
        are exported). The rest still waits for SHUTDOWN to carry it to the next environment of
        the sandbox, which exports it: up to MAX_ABANDONED_CALLS and MAX_ABANDONED_BYTES, the
        others counted (`startup_backlog`)."""
        with self._lock:
            if self._target is not None:
                return
            self._abandoned = True
            if self._lines:
                self._counted[("dropped", LINES_ABANDONED)] += self._lines
            self._lines = self._bytes = 0
            self._max_calls, self._max_bytes = MAX_ABANDONED_CALLS, MAX_ABANDONED_BYTES
            self._kept = self._kept_bytes = 0
            self._full = False
            kept = []
            for call in self._calls:
                if call[0] == "log_line":
                    continue
                if call[0] in _COUNTING or self._fits_call(*call):
                    kept.append(call)
                else:
                    self._overflowed(call[0], call[1])
            self._calls = kept

    def take_calls(self) -> list:
        """The calls still waiting for a target, as (name, args, kwargs), with what was dropped
        meanwhile as `dropped` calls; they are forgotten."""
        with self._lock:
            return self._drained()

    def _drained(self) -> list:
        calls, self._calls = self._calls, []
        calls.extend((name, (label, count), {}) for (name, label), count in self._counted.items())
        self._counted.clear()
        for reason, count in (("startup_backlog", self.overflow), ("log_buffer_full", self._lines_over)):
            if count:
                calls.append(("dropped", (reason, count), {}))
        self.overflow = self._lines = self._bytes = self._lines_over = self._kept = self._kept_bytes = 0
        self._full = False
        return calls

    def dropped_log_line(self, chars: int) -> bool:
        """Whether a line of `chars` characters would be dropped now; if so it is counted."""
        with self._lock:
            target = self._target
            if target is None:
                if not self._logs_exported:
                    return True
                if self._abandoned:
                    self._counted[("dropped", LINES_ABANDONED)] += 1
                    return True
                # At least as many bytes as characters: what this drops log_line() would drop.
                if self._fits_line(min(chars, MAX_LINE_CHARS)):
                    return False
                self._lines_over += 1
                return True
        return target.dropped_log_line(chars)

    def log_line(self, line: str, time_ns: int, ids: tuple | list | None, request_id: str | None) -> None:
        with self._lock:
            target = self._target
            if target is None:
                if not self._logs_exported:
                    return  # dropped, uncounted: nobody asked for it
                if self._abandoned:
                    self._counted[("dropped", LINES_ABANDONED)] += 1
                    return
                size = utf8_size(line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS])
                if not self._fits_line(size):
                    self._lines_over += 1
                else:
                    self._calls.append(("log_line", (line, time_ns, ids, request_id), {}))
                    self._lines += 1
                    self._bytes += size
                return
        target.log_line(line, time_ns, ids, request_id)

    def _fits_line(self, size: int) -> bool:
        """Whether a line of `size` bytes (as the log buffer cuts and measures it) fits."""
        return self._lines < MAX_LINES and self._bytes + size <= MAX_BYTES

    def _fits_call(self, name: str, args: tuple, kwargs: dict) -> bool:
        """Whether a call fits the calls' bounds; if so its size is counted with them, if not they
        take no more."""
        if not self._full and self._kept < self._max_calls:
            size = _encoded_size(name, args, kwargs)
            if self._kept_bytes + size <= self._max_bytes:
                self._kept += 1
                self._kept_bytes += size
                return True
        self._full = True
        return False

    def _overflowed(self, name: str, args: tuple) -> None:
        """Count a call that does not fit (`startup_backlog`) by what it held (correlator.call_lost).
        An invocation's log lines are not lost with it: the correlator hands them over next, as
        lines, which are bounded and counted as lines."""
        held_lines = "startup_backlog" if self._logs_exported and name != "invocation" else None
        for reason, count in call_lost(name, args[0] if args else None, "startup_backlog", held_lines):
            if reason == "startup_backlog":
                self.overflow += count
            else:
                self._counted[("dropped", reason)] += count

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                if self._target is None:
                    counted = _counted(name, args, kwargs)
                    if counted is not None:
                        self._counted[counted[0]] += counted[1]
                    elif (len(self._calls) < MAX_DEFERRED_CALLS) if name in _COUNTING else self._fits_call(name, args, kwargs):
                        self._calls.append((name, args, kwargs))
                    else:
                        self._overflowed(name, args)
                        # Counted, never to be made: the correlator need not keep what the
                        # record said for it (an invocation's: up to 256 KB, 2,048 kept).
                        return True
                    return None
                target = self._target
            return getattr(target, name)(*args, **kwargs)

        return call


def _counted(name: str, args: tuple, kwargs: dict) -> tuple | None:
    """((call, label), count) of a call that only adds to a counter, else None."""
    if name not in _COUNTERS or not args or len(args) > 2 or not isinstance(args[0], str) or set(kwargs) - {"count"}:
        return None
    count = args[1] if len(args) == 2 else kwargs.get("count", 1)
    return ((name, args[0]), count) if type(count) is int else None


def _encoded_size(name: str, args: tuple, kwargs: dict) -> int:
    """About the bytes a call takes in the carry-over file, which holds it as JSON (an
    invocation or an init as its to_dict()): tens of µs for a typical invocation's record, a
    millisecond for one of 256 KB."""
    # Without the log lines an invocation still holds as it is finished: the correlator hands
    # them over right after, and they are bounded (and counted) as lines. An init's go with it.
    encoded = [_without_logs(arg.to_dict()) if isinstance(arg, Invocation) else arg.to_dict() if isinstance(arg, InitFacts) else arg for arg in args]
    try:
        return len(json.dumps([name, encoded, kwargs], separators=(",", ":"), default=repr))
    except (TypeError, ValueError, RecursionError):  # keys JSON cannot hold, a cycle, a nesting too deep
        return _UNMEASURED_BYTES


def _without_logs(fields: dict) -> dict:
    fields.pop("logs", None)
    return fields
