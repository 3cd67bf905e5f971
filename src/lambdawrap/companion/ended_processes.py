"""What the function's processes that have ended left beside the socket
(`shared.unreported_drops`): the drops they could not report, counted, and the spans they held
for a companion that did not listen yet, delivered as if they had come on the channel."""

from __future__ import annotations

from lambdawrap.shared import unreported_drops
from lambdawrap.shared.framing import MAX_RECORD_BYTES, FrameReader

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable


def take(socket_path: str, environment_start: int | None, deliver: Callable[[dict], Any], dropped: Callable[[str, int], None]) -> None:
    """Count and deliver what ended processes left. environment_start: when this environment
    began (its companion's process start, see unreported_drops.process_start). A process started
    before it was an earlier environment's, whose init span this environment's is not: its spans
    go without the init span's ids, which would make this init the root of that one's calls."""
    count = 0
    for left in unreported_drops.collect(socket_path):
        count += left.count
        if not left.frames:
            continue
        reader = FrameReader(MAX_RECORD_BYTES)
        try:
            held = reader.feed(left.frames)
        except ValueError:
            held = None
        if held is None or reader.pending():
            count += 1  # not as the channel writes: what it held is lost, and said so once
            held = held or []
        earlier = left.started is not None and environment_start is not None and left.started < environment_start
        for record in held:
            if isinstance(record, dict):
                if earlier:
                    record.pop("init_span", None)
                deliver(record)
    if count:
        dropped("handler_channel", count)
