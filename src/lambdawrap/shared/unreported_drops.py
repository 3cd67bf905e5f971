"""Drops the function's process could not report, kept beside the socket for a companion.

A record the channel dropped is reported with the next record that goes through. Until then
its count also sits in a small file under /tmp (`<socket>.dropped.<pid>`), because a companion
that died takes the environment with it and only the next environment's companion (/tmp
outlives a reset) can report it.
"""

from __future__ import annotations

import os

from lambdawrap.shared import inflight

SUFFIX = ".dropped."


def path_for(socket_path: str, pid: int) -> str:
    return f"{socket_path}{SUFFIX}{pid}"


def keep(socket_path: str, pid: int, count: int) -> bool:
    """Write this process's unreported count (one small write, never raised); True if kept."""
    try:
        fd = os.open(path_for(socket_path, pid), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, str(count).encode())
        finally:
            os.close(fd)
        return True
    except OSError:
        return False


def forget(socket_path: str, pid: int) -> None:
    try:
        os.unlink(path_for(socket_path, pid))
    except OSError:
        pass


def collect(socket_path: str) -> int:
    """The sum of the counts left beside the socket by processes that have ended (companion
    side); their files are removed. A process still running (this environment's runtime, whose
    record went before the companion listened) reports its drops with its next record: its file
    is not counted here too."""
    folder, name = os.path.split(socket_path)
    prefix = name + SUFFIX
    total = 0
    try:
        entries = os.listdir(folder or ".")
    except OSError:
        return 0
    for entry in entries:
        pid = entry[len(prefix) :]
        if not entry.startswith(prefix) or not pid.isascii() or not pid.isdigit() or _running(int(pid)):
            continue
        path = os.path.join(folder, entry)
        try:
            with open(path, "rb") as f:
                text = f.read(32).strip()
            os.unlink(path)
        except OSError:
            continue
        if text.isdigit():
            total += int(text)
    return total


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's (or no pid at all): not one of this sandbox's ended ones
    # Signal 0 still finds one that has ended and waits for its parent to reap it (a zombie):
    # a Managed Instances worker that died in init, whose parent joins its workers in order and
    # may reap it only at the environment's end.
    return not inflight.ended(pid)
