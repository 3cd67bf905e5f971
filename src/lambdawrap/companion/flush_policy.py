"""When the companion exports: after every invocation, on a timer, or adaptively."""

from __future__ import annotations

import collections
import time

from lambdawrap.shared.settings import FlushStrategy

ADAPTIVE_INTERVAL_MS = 1000
ADAPTIVE_BUSY_GAP_S = 1.0


class FlushPolicy:
    """Decides, per invocation, whether to export now."""

    def __init__(self, strategy: FlushStrategy) -> None:
        self.strategy = strategy
        # The wall clock: the monotonic one may stand still while the environment is frozen
        # (spec §10), and a function invoked every five minutes would look busy, its spans held
        # back from export across freezes for an hour.
        self._gaps: collections.deque = collections.deque(maxlen=8)
        self._last_invoke: float | None = None
        self._last_flush = 0.0
        self._busy = False  # decided once per invocation: it is asked several times in each

    def on_invoke(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if self._last_invoke is not None:
            self._gaps.append(now - self._last_invoke)
            self._busy = _median(self._gaps) < ADAPTIVE_BUSY_GAP_S if len(self._gaps) >= 4 else False
        self._last_invoke = now

    def busy(self) -> bool:
        return self._busy

    def exports_at_each_end(self) -> bool:
        """Whether invocations are now exported each at its own end, so that the runtime's post
        of the verdict saves each a wait (response_posted); `end` waits for the platform's word
        anyway, for the invocation's log lines."""
        return self.strategy.mode == "adaptive" and not self.busy()

    def should_flush(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        mode = self.strategy.mode
        if mode == "adaptive":
            if not self.busy():
                return True
            interval_ms = ADAPTIVE_INTERVAL_MS
        elif mode == "periodic":
            interval_ms = self.strategy.interval_ms
        else:
            return True
        # A wall clock set back is no reason to wait for it to catch up.
        return now < self._last_flush or (now - self._last_flush) * 1000 >= interval_ms

    def flushed(self, now: float | None = None) -> None:
        self._last_flush = time.time() if now is None else now


def _median(values: collections.deque) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
