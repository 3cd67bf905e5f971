"""What one execution environment could not export, carried to the next in the same sandbox.

An environment that ends (timeout, crash, spindown) while the collector is unreachable cannot
export its last metrics, drop counts among them; an environment whose init failed may end
before the export pipeline is even loaded (the platform gives it 2 s). /tmp outlives a reset, so
the companion leaves what it could not send in a small file beside its socket: the counters'
unexported values and the failed inits. The next environment's companion adds the counts to
its own and exports the inits' spans. (Histograms are not carried: only counts.)
"""

from __future__ import annotations

import json
import os

SUFFIX = ".carryover.json"
MAX_BYTES = 1024 * 1024
MAX_FAILED_INITS = 100


def _path(socket_path: str) -> str:
    return socket_path + SUFFIX


def save(socket_path: str, counts: list = (), failed_inits: list = ()) -> None:
    """Add `counts` ([{"name", "attributes", "value"}]) and `failed_inits` (dicts) to what the
    file already holds."""
    held_counts, held_inits = take(socket_path)
    data = json.dumps({"counts": held_counts + list(counts), "failed_inits": (held_inits + list(failed_inits))[-MAX_FAILED_INITS:]}, separators=(",", ":")).encode()
    if len(data) > MAX_BYTES:
        return
    fd = os.open(_path(socket_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def pending_failed_inits(socket_path: str) -> bool:
    """Whether an earlier environment left a failed init to export (the file is kept)."""
    try:
        with open(_path(socket_path), "rb") as f:
            return b'"failed_inits":[{' in f.read(MAX_BYTES + 1)
    except OSError:
        return False


def take(socket_path: str) -> tuple:
    """(counts, failed inits) left by earlier environments (the file is removed)."""
    path = _path(socket_path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
        os.unlink(path)
    except OSError:
        return [], []
    try:
        held = json.loads(data)
    except (ValueError, RecursionError):
        return [], []
    if not isinstance(held, dict):
        return [], []
    counts, inits = held.get("counts"), held.get("failed_inits")
    return [c for c in counts if isinstance(c, dict)] if isinstance(counts, list) else [], [i for i in inits if isinstance(i, dict)] if isinstance(inits, list) else []
