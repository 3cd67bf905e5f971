"""A stack that formats to the text Python prints, without the work on frames it never prints.

From Python 3.11 `StackSummary.format()` formats every frame (its carets parse each frame's
line of code) before it leaves out the repeats of one line past the third ("[Previous line
repeated 996 more times]"). A RecursionError's thousand frames cost tens of milliseconds so,
after every such invocation (before its response on an environment's first), for a text of a
few lines. The frames it leaves out are known from their file, line and name alone.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def cheap_to_format(stack: Any, cutoff: int) -> Any:
    """`stack` (a StackSummary), or one of the same class's that formats to the same text with
    only the frames it prints formatted, given traceback's rule: a run of the same line is
    printed `cutoff` times, then counted. As it is on Python 3.10, whose format() has no
    per-frame hook."""
    summary = type(stack)
    if not hasattr(summary, "format_frame_summary"):
        return stack
    unprinted = set()
    last = None
    count = 0
    for frame in stack:
        key = (frame.filename, frame.lineno, frame.name)
        if last is None or None in last or key != last:  # format() starts a new run here
            last, count = key, 0
        count += 1
        if count > cutoff:
            unprinted.add(id(frame))
    if not unprinted:
        return stack
    cheaper = _cheaper_class(summary)(stack)
    cheaper.unprinted = frozenset(unprinted)
    return cheaper


def _cheaper_class(summary: type) -> type:
    """A subclass of `summary` whose frames in `unprinted` format to nothing: format() counts
    them as repeats without printing them, as it would have."""
    cheaper = _CHEAPER.get(summary)
    if cheaper is None:

        class cheaper(summary):  # type: ignore[no-redef, valid-type, misc]
            unprinted: frozenset = frozenset()

            def format_frame_summary(self, frame_summary: Any, **kwargs: Any) -> Any:
                if id(frame_summary) in self.unprinted:
                    return ""
                return super().format_frame_summary(frame_summary, **kwargs)

        cheaper = _CHEAPER.setdefault(summary, cheaper)
    return cheaper


_CHEAPER: dict = {}  # a StackSummary class: its cheaper subclass
