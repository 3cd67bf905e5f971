"""A sink that remembers calls until the real one exists, then replays them in order.

The companion calls /next (ending its part of init) before the OpenTelemetry SDK is even
imported; whatever the correlator finishes meanwhile waits here."""

from __future__ import annotations

import threading
from typing import Any

from lambdawrap.shared.log import get_logger

MAX_DEFERRED_CALLS = 100_000


class DeferredSink:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list = []
        self._target: Any = None
        self.overflow = 0
        self.failed = 0

    def attach(self, target: Any) -> None:
        """Replay the remembered calls into `target`, then pass calls straight on. What was
        lost meanwhile is reported to it: calls past the cap (`startup_backlog`) and replayed
        calls that failed (internal errors)."""
        with self._lock:
            for name, args, kwargs in self._calls:
                try:
                    getattr(target, name)(*args, **kwargs)
                except Exception:  # noqa: BLE001 - one bad call must not keep the sink detached
                    self.failed += 1
                    get_logger().warning("lambdawrap: a deferred %s call failed", name, exc_info=True)
            self._calls = []
            self._target = target
            if self.overflow:
                target.dropped("startup_backlog", self.overflow)
            if self.failed:
                target.internal_errors("companion", self.failed)

    def take_calls(self) -> list:
        """The calls still waiting for a target, as (name, args, kwargs); they are forgotten."""
        with self._lock:
            calls, self._calls = self._calls, []
            return calls

    def dropped_log_line(self, chars: int) -> bool:
        """Asked, not remembered: without a target the line takes the whole way (log_line)."""
        with self._lock:
            target = self._target
        return target is not None and target.dropped_log_line(chars)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                if self._target is None:
                    if len(self._calls) < MAX_DEFERRED_CALLS:
                        self._calls.append((name, args, kwargs))
                    else:
                        self.overflow += 1
                    return None
                target = self._target
            return getattr(target, name)(*args, **kwargs)

        return call
