"""The buffers' shared take: a deque of (item, size) entries, read from the front into a batch
bounded in count and, if asked, in size (at least one item, however large)."""

from __future__ import annotations

import collections

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable


def take_front(items: collections.deque, limit: int, max_size: int | None = None, stop: Callable[[Any], bool] | None = None) -> tuple:
    """(up to `limit` items from the front of `items`, removed, oldest first; their sizes
    added up). With `max_size`, no more than that in all, but at least one item; with `stop`,
    none from the first item it is true of. The caller holds the lock that guards `items`."""
    batch, taken = [], 0
    while items and len(batch) < limit:
        item, size = items[0]
        if max_size is not None and batch and taken + size > max_size:
            break
        if stop is not None and stop(item):
            break
        items.popleft()
        taken += size
        batch.append(item)
    return batch, taken
