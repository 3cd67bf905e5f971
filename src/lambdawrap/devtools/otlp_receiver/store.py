"""What the receiver was sent: flat items, decoded messages and request summaries, in arrival
order, with queries that return copies and waits that block until enough items match."""

from __future__ import annotations

import copy
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

from google.protobuf.message import Message

from lambdawrap.devtools.otlp_receiver.decoding import Item
from lambdawrap.devtools.otlp_receiver.routes import SIGNAL_ALIASES, Route

Predicate = Callable[[Item], bool]


class ReceivedStore:
    """Everything received, keyed by signal ("traces", "metrics", "logs"); thread-safe."""

    def __init__(self) -> None:
        # One re-entrant lock guards all stored data; predicates run under it and may call
        # back into the receiver.
        self._cond = threading.Condition(threading.RLock())
        self._items: Dict[str, List[Item]] = {"traces": [], "metrics": [], "logs": []}
        self._raw: Dict[str, List[Message]] = {"traces": [], "metrics": [], "logs": []}
        self._requests: List[Item] = []

    def add(self, summary: Item, route: Optional[Route], message: Optional[Message], items: Sequence[Item]) -> None:
        """Keep one request's summary and, for a decoded export, its message and items."""
        with self._cond:
            self._requests.append(summary)
            if route is not None and message is not None:
                self._raw[route.signal].append(message)
                self._items[route.signal].extend(items)
            self._cond.notify_all()

    def items(self, kind: str) -> List[Item]:
        """A copy of every item of one signal received so far."""
        with self._cond:
            return copy.deepcopy(self._items[kind])

    def requests(self) -> List[Item]:
        """A summary of every HTTP request answered (or dropped), in arrival order."""
        with self._cond:
            return copy.deepcopy(self._requests)

    def raw(self, signal: str) -> List[Message]:
        """The decoded Export*ServiceRequest messages for "traces", "metrics" or "logs"."""
        key = SIGNAL_ALIASES.get(signal)
        if key is None:
            raise ValueError(f"unknown signal {signal!r}; expected traces, metrics or logs")
        with self._cond:
            copies = []
            for message in self._raw[key]:
                clone = type(message)()
                clone.CopyFrom(message)
                copies.append(clone)
            return copies

    def clear(self) -> None:
        """Forget everything received so far."""
        with self._cond:
            for kind in self._items:
                self._items[kind].clear()
                self._raw[kind].clear()
            self._requests.clear()

    def wait(self, kind: str, predicate: Optional[Predicate], count: int, timeout: float) -> List[Item]:
        """Block until ``count`` items of one signal match ``predicate``; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matched = [item for item in self._items[kind] if predicate is None or predicate(item)]
                if len(matched) >= count:
                    return copy.deepcopy(matched)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(self._timeout_message(kind, predicate, count, timeout, len(matched)))
                self._cond.wait(remaining)

    def _timeout_message(
        self, kind: str, predicate: Optional[Predicate], count: int, timeout: float, matched: int
    ) -> str:
        items = self._items[kind]
        noun = {"traces": "span", "metrics": "metric data point", "logs": "log record"}[kind]
        what = "matching the predicate" if predicate is not None else "in total"
        lines = [
            f"timed out after {timeout:g}s waiting for {count} {noun}(s) {what}: "
            f"{matched} matched, {len(items)} received"
        ]
        for item in items[:50]:
            lines.append("  " + describe(kind, item))
        if len(items) > 50:
            lines.append(f"  ... and {len(items) - 50} more")
        statuses = [r["status"] for r in self._requests]
        lines.append(f"HTTP requests received: {len(statuses)}, statuses: {statuses[-20:]}")
        return "\n".join(lines)


def describe(kind: str, item: Item) -> str:
    """A one-line human summary of a stored item (timeout messages and the CLI)."""
    if kind in ("traces", "span"):
        return (
            f"span {item['name']!r} trace_id={item['trace_id']} span_id={item['span_id']} "
            f"parent={item['parent_span_id'] or '-'} kind={item['kind']} status={item['status_code']} "
            f"attributes={item['attributes']!r}"
        )
    if kind in ("metrics", "metric"):
        if item["type"] in ("sum", "gauge"):
            value = f"value={item['value']!r}"
        else:
            value = f"count={item['count']!r} sum={item['sum']!r}"
        return (
            f"metric {item['name']!r} type={item['type']} temporality={item['temporality']} "
            f"{value} attributes={item['attributes']!r}"
        )
    return (
        f"log severity={item['severity_text'] or item['severity_number']} body={item['body']!r} "
        f"trace_id={item['trace_id'] or '-'} span_id={item['span_id'] or '-'} "
        f"attributes={item['attributes']!r}"
    )
