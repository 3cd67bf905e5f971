"""Calls run at once, as concurrent callers of a function would make them."""

from __future__ import annotations

import threading
from typing import Callable


def concurrently(calls: list[Callable[[], object]]) -> list:
    """Run the calls on threads of their own, all at once; their results in order."""
    results: list = [None] * len(calls)

    def run(index: int, call: Callable[[], object]) -> None:
        results[index] = call()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results
