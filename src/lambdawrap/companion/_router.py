"""Routes records from the local channel: secret requests are answered at once, from the
first millisecond; everything else waits for the companion's pipeline to be ready."""

from __future__ import annotations

import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

MAX_EARLY_RECORDS = 1000
MAX_SECRETS_WAIT_S = 30.0


class RecordRouter:
    def __init__(self) -> None:
        self.store: Any = None  # set once the secret store exists (built off the init path)
        self.store_ready = threading.Event()
        self._target: Callable[[dict], Any] | None = None
        self._early: list = []
        self._lock = threading.Lock()
        self.early_dropped = 0

    def __call__(self, record: dict) -> Any:
        if record.get("type") == "secrets.get":
            timeout_ms = record.get("timeout_ms")
            timeout_s = min(MAX_SECRETS_WAIT_S, timeout_ms / 1000) if isinstance(timeout_ms, (int, float)) and timeout_ms > 0 else 0.0
            started = time.monotonic()
            if not self.store_ready.wait(timeout_s) or self.store is None:
                return {"v": 1, "type": "secrets", "values": {}, "errors": {}, "unavailable": True}
            return {"v": 1, "type": "secrets", **self.store.snapshot(max(0.0, timeout_s - (time.monotonic() - started)))}
        with self._lock:
            if self._target is None:
                if len(self._early) < MAX_EARLY_RECORDS:
                    self._early.append(record)
                else:
                    self.early_dropped += 1
                return None
            target = self._target
        return target(record)

    def attach(self, target: Callable[[dict], Any]) -> None:
        with self._lock:
            early, self._early = self._early, []
            self._target = target
        for record in early:
            target(record)
