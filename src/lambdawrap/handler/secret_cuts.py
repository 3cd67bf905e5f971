"""Long texts cut without leaving part of a secret behind.

The function's side bounds what it records (an exception's message, a stack, a URL); the
companion then replaces each secret's value it finds by [REDACTED] (companion/secret_scrub.py).
A cut that falls inside a value would leave its first or last characters, which no search finds:
the cut moves to the value's edge instead, dropping the value whole. The values are the declared
secrets the function's process holds and the execution role's credentials, in the forms the
companion searches for (shared/secret_forms); they are looked at only when a text is cut, which
is rare, so an invocation that cuts nothing pays nothing, and a cold start imports nothing more.
"""

from __future__ import annotations

import os
import sys


def slack() -> int:
    """How much a text sliced ahead of a cut must keep beyond it for a secret the cut would
    split to be there whole, and moved clear of: the longest value, in any form (0: none held)."""
    return max(map(len, _values()), default=0)


def head(text: str, limit: int) -> str:
    """`text[:limit]`, ended before a secret's value the cut would split."""
    if len(text) <= limit:
        return text
    end = limit
    for value in _values():
        # Only an occurrence that straddles the cut fits within these bounds.
        at = text.find(value, max(0, limit - len(value) + 1), limit + len(value) - 1)
        if at != -1:
            end = min(end, at)
    return text[:end]


def tail(text: str, limit: int) -> str:
    """`text[-limit:]`, started after a secret's value the cut would split."""
    if len(text) <= limit:
        return text
    start = cut = len(text) - limit
    for value in _values():
        at = text.find(value, max(0, cut - len(value) + 1), cut + len(value) - 1)
        if at != -1:
            start = max(start, at + len(value))
    return text[start:]


# The values last looked at, and their forms: a function cutting in a loop (long URLs) escapes
# them once, not at every cut.
_last: list = [(), []]


def _values() -> list:
    try:
        from lambdawrap.shared.secret_forms import role_credentials, searched_forms

        # Imported by the boot only when secrets are declared: otherwise there are none held.
        cache = sys.modules.get("lambdawrap.handler.secret_cache")
        held = cache.held_values() if cache is not None else []
        values = tuple(held + role_credentials(os.environ))
        last = _last
        if values != last[0]:
            last = _last[:] = [values, searched_forms(values)]
        return last[1]
    except Exception:  # noqa: BLE001 - a cut must never fail: without the values, as it was
        return []
