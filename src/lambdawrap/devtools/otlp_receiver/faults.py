"""Fault injection: how the receiver answers the next export requests (delays, error statuses,
dropped connections), to exercise exporters' retry paths."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Optional


@dataclass(frozen=True)
class Behaviour:
    """How to answer one export request; ``remaining`` limits it to that many requests."""

    delay_s: float = 0.0
    status: int = 200
    retry_after: Optional[str] = None
    close_connection: bool = False
    remaining: Optional[int] = None
    reject: Optional[str] = None  # a signal whose items are rejected in a 200's partial_success
    max_spans: Optional[int] = None  # a span request with more spans is answered 413, not stored


_NORMAL = Behaviour()


class FaultInjector:
    """The current behaviour, changed by tests and consumed by request handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._behaviour = _NORMAL

    def install(self, behaviour: Behaviour) -> None:
        """Answer export requests this way from the next request on."""
        with self._lock:
            self._behaviour = behaviour

    def reset(self) -> None:
        """Answer every request normally again."""
        with self._lock:
            self._behaviour = _NORMAL

    def take(self) -> Behaviour:
        """The behaviour for one export request, consuming one use of a limited behaviour."""
        with self._lock:
            current = self._behaviour
            if current.remaining is not None:
                left = current.remaining - 1
                self._behaviour = _NORMAL if left <= 0 else replace(current, remaining=left)
            return current
