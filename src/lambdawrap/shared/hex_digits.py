"""Hexadecimal text as trace headers write ids: W3C traceparent (lowercase) and X-Ray (either case)."""

from __future__ import annotations

LOWER = "0123456789abcdef"
ANY_CASE = "0123456789abcdefABCDEF"


def is_hex(text: str, alphabet: str = LOWER) -> bool:
    """Whether `text` is non-empty and made of `alphabet`'s digits only."""
    # str.strip with a character set runs in C: the result is empty only if every character is
    # in the alphabet. int(text, 16) alone is too lenient (it accepts "+", "_", whitespace).
    return bool(text) and not text.strip(alphabet)
