"""Routes records from the local channel: secret requests are answered at once, from the
first millisecond; everything else waits for the companion's pipeline to be ready."""

from __future__ import annotations

import threading
import time

from lambdawrap.shared import records

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

MAX_EARLY_RECORDS = 1000
MAX_SECRETS_WAIT_S = 30.0


class RecordRouter:
    def __init__(self, on_drop: Callable[[str, int], None], learn: Callable[[dict], None] | None = None) -> None:
        self.store: Any = None  # set once the secret store exists (built off the init path)
        self._learn = learn  # told the values the function's process fetched itself
        self.store_ready = threading.Event()
        self._target: Callable[[dict], Any] | None = None
        self._early: list = []
        self._lock = threading.Lock()
        self._attaching = threading.Lock()  # a second attach returns once the first has replayed
        self._on_drop = on_drop

    def __call__(self, record: dict) -> Any:
        if record.get("type") == records.SECRETS_REQUEST:
            timeout_ms = record.get("timeout_ms")
            timeout_s = min(MAX_SECRETS_WAIT_S, timeout_ms / 1000) if isinstance(timeout_ms, (int, float)) and timeout_ms > 0 else 0.0
            started = time.monotonic()
            if not self.store_ready.wait(timeout_s) or self.store is None:
                return records.secrets_answer({}, {}, unavailable=True)
            return records.secrets_answer(**self.store.snapshot(max(0.0, timeout_s - (time.monotonic() - started))))
        if record.get("type") == records.SECRETS_FETCHED:
            values = record.get("values")
            if self._learn is not None and isinstance(values, dict):
                self._learn(values)
            return records.secrets_answer({}, {})  # kept: the function's module may load
        with self._lock:
            if self._target is None:
                if len(self._early) < MAX_EARLY_RECORDS:
                    self._early.append(record)
                    return None
                target = None
            else:
                target = self._target
        if target is None:
            # An invocation record lost here is counted by the correlator (record_missing); a
            # posted record only spares a wait, and its loss costs nothing but that.
            if record.get("type") not in (records.INVOCATION, records.POSTED):
                self._on_drop("startup_backlog", 1)
            carried = records.count(record.get("dropped"))
            if carried:
                self._on_drop("handler_channel", carried)  # the channel's own count, on this record
            return None
        return target(record)

    def attach(self, target: Callable[[dict], Any]) -> None:
        with self._attaching:
            with self._lock:
                early, self._early = self._early, []
                self._target = target
            for record in early:
                target(record)
