"""The AWS X-Ray trace header (``Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=1``), read
the same way by both processes: the function's takes a sampled one for the invocation span's
parent, and the companion, for an invocation that ended before the function's process could
say which trace it joined, takes the one the platform's INVOKE carried (the same header the
runtime gave the function in `_X_AMZN_TRACE_ID`).

Standard library only and cheap to import (the function's process reads it at every
invocation); nothing here raises on any input.
"""

from __future__ import annotations

from lambdawrap.shared.hex_digits import ANY_CASE, is_hex

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Tuple

# A header longer than this is not read.
MAX_CHARS = 4096
_OWS = " \t"


def parse(value: object) -> Optional[Tuple[int, int, bool]]:
    """(trace id, parent span id, sampled) of a header with a well-formed Root and Parent; None
    otherwise. Fields may come in any order with whitespace around them; unknown ones
    (``Lineage``, ``Self``, ...) are ignored. ``Sampled=1`` means sampled; ``0``, ``?`` or a
    missing field means not sampled."""
    try:
        if not isinstance(value, str) or len(value) > MAX_CHARS:
            return None
        root, parent, sampled = _fields(value)
        if parent is None or len(parent) != 16 or not is_hex(parent, ANY_CASE):
            return None
        trace_id = _root_trace_id(root)
        span_id = int(parent, 16)
        if trace_id is None or span_id == 0:
            return None
        return trace_id, span_id, sampled == "1"
    except Exception:  # noqa: BLE001 - never let tracing break the handler
        return None


def root_trace_id(value: object) -> Optional[int]:
    """The trace id a header's Root names, with or without a Parent (a header a function sets
    may be a bare Root); None when it names none, or none well-formed."""
    try:
        if not isinstance(value, str) or len(value) > MAX_CHARS:
            return None
        return _root_trace_id(_fields(value)[0])
    except Exception:  # noqa: BLE001 - never let tracing break the handler
        return None


def _fields(value: str) -> Tuple[Optional[str], Optional[str], Optional[str]]:
    """Root, Parent and Sampled, None when absent. The first occurrence of each wins, so a later
    duplicate cannot override it."""
    root = parent = sampled = None
    for part in value.split(";"):
        key, sep, val = part.partition("=")
        if not sep:
            continue
        key = key.strip(_OWS).lower()
        val = val.strip(_OWS)
        if key == "root":
            if root is None:
                root = val
        elif key == "parent":
            if parent is None:
                parent = val
        elif key == "sampled":
            if sampled is None:
                sampled = val
    return root, parent, sampled


def _root_trace_id(root: Optional[str]) -> Optional[int]:
    # Root is "1-" + 8 hex digits of epoch seconds + "-" + 24 hex digits of randomness: together
    # the 32 digits of a W3C trace id.
    if root is None or len(root) != 35 or root[:2] != "1-" or root[10] != "-":
        return None
    epoch_hex = root[2:10]
    unique_hex = root[11:]
    if not (is_hex(epoch_hex, ANY_CASE) and is_hex(unique_hex, ANY_CASE)):
        return None
    return int(epoch_hex + unique_hex, 16) or None

