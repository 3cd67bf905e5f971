"""A stack that formats to the text Python prints, without the work on frames it never prints.

From Python 3.11 `StackSummary.format()` formats every frame (its carets parse each frame's
line of code) before it leaves out the repeats of one line past the third ("[Previous line
repeated 996 more times]"). A RecursionError's thousand frames cost tens of milliseconds so,
after every such invocation (before its response on an environment's first), for a text of a
few lines. The frames it leaves out are known from their file, line and name alone.
"""

from __future__ import annotations

import traceback

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# traceback's own rule: a run of the same line is printed this many times, then counted.
_CUTOFF = getattr(traceback, "_RECURSIVE_CUTOFF", 3)


class _Stack(traceback.StackSummary):
    """A StackSummary whose frames in `unprinted` format to nothing: format() counts them as
    repeats without printing them, as it would have."""

    unprinted: frozenset = frozenset()

    def format_frame_summary(self, frame_summary: Any, **kwargs: Any) -> Any:
        if id(frame_summary) in self.unprinted:
            return ""
        return super().format_frame_summary(frame_summary, **kwargs)


def cheap_to_format(stack: Any) -> Any:
    """`stack` (a StackSummary), or one that formats to the same text with only the frames it
    prints formatted; as it is on Python 3.10, whose format() has no per-frame hook."""
    if not isinstance(stack, traceback.StackSummary) or not hasattr(traceback.StackSummary, "format_frame_summary"):
        return stack
    unprinted = set()
    last = None
    count = 0
    for frame in stack:
        key = (frame.filename, frame.lineno, frame.name)
        if last is None or None in last or key != last:  # format() starts a new run here
            last, count = key, 0
        count += 1
        if count > _CUTOFF:
            unprinted.add(id(frame))
    if not unprinted:
        return stack
    cheaper = _Stack(stack)
    cheaper.unprinted = frozenset(unprinted)
    return cheaper
