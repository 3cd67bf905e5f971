"""Counter values carried from one execution environment to the next in the same sandbox.

An environment that ends (timeout, crash, spindown) while the collector is unreachable cannot
export its last metrics, drop counts among them. /tmp outlives a reset, so the companion leaves
the counters' unexported values in a small file beside its socket, and the next environment's
companion adds them to its own. (Histograms are not carried: only counts.)
"""

from __future__ import annotations

import json
import os

SUFFIX = ".carryover.json"
MAX_BYTES = 1024 * 1024


def _path(socket_path: str) -> str:
    return socket_path + SUFFIX


def save_counts(socket_path: str, counts: list) -> None:
    """Add `counts` ([{"name", "attributes", "value"}]) to what the file already holds."""
    merged = take_counts(socket_path) + list(counts)
    data = json.dumps(merged, separators=(",", ":")).encode()
    if len(data) > MAX_BYTES:
        return
    fd = os.open(_path(socket_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def take_counts(socket_path: str) -> list:
    """The counts left by earlier environments (the file is removed); [] if none or unreadable."""
    path = _path(socket_path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
        os.unlink(path)
    except OSError:
        return []
    try:
        counts = json.loads(data)
    except (ValueError, RecursionError):
        return []
    return [c for c in counts if isinstance(c, dict)] if isinstance(counts, list) else []
