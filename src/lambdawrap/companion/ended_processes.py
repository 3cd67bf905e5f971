"""What the function's processes that have ended left beside the socket
(`shared.unreported_drops`): the drops they could not report, counted, and the spans they held
for a companion that did not listen yet, delivered as if they had come on the channel."""

from __future__ import annotations

import threading

from lambdawrap.shared import records, unreported_drops
from lambdawrap.shared.framing import MAX_RECORD_BYTES, FrameReader

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

MAX_SEEN = 4096  # span ids remembered: a process holds 64 KiB of spans at most


class SpansSeen:
    """The ids of the spans the channel brought alone (not with an invocation), the latest
    MAX_SEEN: a process killed after it sent what it held and before it removed the file it
    kept them in leaves them twice, and they are delivered once."""

    def __init__(self) -> None:
        self._ids: dict = {}
        self._lock = threading.Lock()  # the channel's thread notes, a taking thread looks

    def note(self, spans: object) -> None:
        if not isinstance(spans, list):
            return
        with self._lock:
            for span in spans:
                key = _ids(span)
                if key is not None:
                    self._ids[key] = None
            while len(self._ids) > MAX_SEEN:
                del self._ids[next(iter(self._ids))]

    def unseen(self, spans: list) -> list:
        with self._lock:
            return [span for span in spans if _ids(span) not in self._ids]


def _ids(span: object) -> tuple | None:
    """A span's (trace_id, span_id), or None for one without them (the sink counts it as
    malformed; it hides no other)."""
    if not isinstance(span, dict):
        return None
    trace_id, span_id = span.get("trace_id"), span.get("span_id")
    return (trace_id, span_id) if isinstance(trace_id, str) and isinstance(span_id, str) else None


def take(socket_path: str, environment_start: int | None, deliver: Callable[[dict], Any], dropped: Callable[[str, int], None], seen: SpansSeen) -> None:
    """Count and deliver what ended processes left. environment_start: when this environment
    began (its companion's process start, see unreported_drops.process_start). Only a process
    known to have started since was this environment's: the spans of another (an earlier
    environment's, whose companion died before it took them) go without the init span's ids,
    which would make this init the root of that one's calls."""
    left = unreported_drops.collect(socket_path)
    count = sum(item.count for item in left)
    if count:
        dropped("handler_channel", count)  # first: a delivery that fails loses no count
    for item in left:
        if item.frames:
            ours = item.started is not None and environment_start is not None and item.started >= environment_start
            _deliver(item.frames, ours, deliver, dropped, seen)


def _deliver(frames: bytes, ours: bool, deliver: Callable[[dict], Any], dropped: Callable[[str, int], None], seen: SpansSeen) -> None:
    reader = FrameReader(MAX_RECORD_BYTES)
    try:
        held = reader.feed(frames)
    except ValueError:
        held = []
    lost = 1 if reader.pending() or not held else 0  # not as the channel writes: said once
    for record in held:
        spans = record.get("spans") if isinstance(record, dict) and record.get("type") == records.SPANS else None
        if not isinstance(spans, list):
            lost += 1
            continue
        record["spans"] = seen.unseen(spans)
        if not record["spans"]:
            continue
        if not ours:
            record.pop("init_span", None)
        try:
            deliver(record)
        except Exception:  # noqa: BLE001 - the others still go; this one's spans are counted
            lost += len(record["spans"])
    if lost:
        dropped("handler_channel", lost)
