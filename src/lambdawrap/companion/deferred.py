"""A sink that remembers calls until the real one exists, then replays them in order.

The companion calls /next (ending its part of init) before the OpenTelemetry SDK is even
imported; whatever the correlator finishes meanwhile waits here. The function's log lines wait
within the log buffer's bounds, as they would in it: a flood while the SDK imports (or after a
re-init, which does not wait for it) must not grow the companion, whose memory is the
function's, by the flood's size."""

from __future__ import annotations

import collections
import threading
from typing import Any

from lambdawrap.companion.log_buffer import MAX_BYTES, MAX_LINE_CHARS, MAX_LINES
from lambdawrap.shared.log import get_logger

MAX_DEFERRED_CALLS = 100_000
# Once no pipeline will come, the calls kept for the next environment: about what its carry-over
# file holds (4 MB). The pipeline's import ends the first wait in seconds; this one lasts the
# environment's life, invocation after invocation, in the memory the function shares.
MAX_ABANDONED_CALLS = 1_000
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
        self._lines = 0  # log lines waiting, and their characters
        self._chars = 0
        self._lines_over = 0  # log lines dropped past the log buffer's bounds
        self._max_calls = MAX_DEFERRED_CALLS
        self._counted: collections.Counter = collections.Counter()  # (call, label) -> count

    def attach(self, target: Any) -> None:
        """Replay the remembered calls into `target`, then pass calls straight on. What was
        lost meanwhile is reported to it: calls past the cap (`startup_backlog`), log lines past
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
        """No target will come (the pipeline failed to start): the log lines waiting are
        forgotten, and those to come are dropped at once. The rest still waits for SHUTDOWN to
        carry it to the next environment of the sandbox, which exports it: up to
        MAX_ABANDONED_CALLS, the others counted (`startup_backlog`)."""
        with self._lock:
            if self._target is not None:
                return
            self._max_calls = MAX_ABANDONED_CALLS
            if self._logs_exported:
                self._logs_exported = False
                self._calls = [call for call in self._calls if call[0] != "log_line"]
                self._lines = self._chars = 0
            kept, room = [], MAX_ABANDONED_CALLS
            for call in self._calls:
                if call[0] in _COUNTING or room > 0:
                    kept.append(call)
                    room -= call[0] not in _COUNTING
                else:
                    self.overflow += 1
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
        self.overflow = self._lines = self._chars = self._lines_over = 0
        return calls

    def dropped_log_line(self, chars: int) -> bool:
        """Whether a line of `chars` characters would be dropped now; if so it is counted."""
        with self._lock:
            target = self._target
            if target is None:
                if not self._logs_exported:
                    return True
                if self._fits(chars):
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
                chars = min(len(line), MAX_LINE_CHARS)
                if not self._fits(chars):
                    self._lines_over += 1
                elif len(self._calls) >= self._max_calls:
                    self.overflow += 1
                else:
                    self._calls.append(("log_line", (line, time_ns, ids, request_id), {}))
                    self._lines += 1
                    self._chars += chars
                return
        target.log_line(line, time_ns, ids, request_id)

    def _fits(self, chars: int) -> bool:
        return self._lines < MAX_LINES and self._chars + min(chars, MAX_LINE_CHARS) <= MAX_BYTES

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                if self._target is None:
                    counted = _counted(name, args, kwargs)
                    if counted is not None:
                        self._counted[counted[0]] += counted[1]
                    elif len(self._calls) < (MAX_DEFERRED_CALLS if name in _COUNTING else self._max_calls):
                        self._calls.append((name, args, kwargs))
                    else:
                        self.overflow += 1
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
