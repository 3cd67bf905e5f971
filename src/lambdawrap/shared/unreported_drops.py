"""What the function's process could not report, kept beside the socket for a companion.

A record the channel dropped is reported with the next record that goes through. Until then
its count also sits in a small file under /tmp (`<socket>.dropped.<pid>`), because a companion
that died takes the environment with it and only the next environment's companion (/tmp
outlives a reset) can report it. The spans the process holds for a companion that did not
listen yet sit there too, as the frames they would have gone in: a process that ends first (an
init that failed, timed out, ran out of memory) leaves them for the companion to export.

The file holds either the count alone (`12`), or the count, the process's start in clock ticks
since boot (`-` where unknown) and the frames (`12 4711\n` then the frames), written whole
under a temporary name and renamed, so that a process killed as it writes leaves the last file
whole and the companion reads each frame once.
"""

from __future__ import annotations

import os

from lambdawrap.shared import inflight

SUFFIX = ".dropped."
WRITING = ".writing"  # the temporary name's ending: not a pid, so never collected as it is written
# What is read of one file: the channel holds 64 KiB of frames at most; more is not its writing.
MAX_FILE_BYTES = 256 * 1024


class Left:
    """What one ended process left: its drops, and the frames it held, with its start (see
    process_start). Not a namedtuple: `collections` is not the function's process's to import."""

    __slots__ = ("count", "frames", "started")

    def __init__(self, count: int, frames: bytes = b"", started: int | None = None) -> None:
        self.count, self.frames, self.started = count, frames, started

    def __repr__(self) -> str:
        return f"Left({self.count}, {len(self.frames)} bytes of frames, started={self.started})"


def path_for(socket_path: str, pid: int) -> str:
    return f"{socket_path}{SUFFIX}{pid}"


def keep(socket_path: str, pid: int, count: int, frames: bytes = b"", started: int | None = None) -> bool:
    """Write this process's unreported count (one small write), or the count and the frames it
    holds (started: see process_start), never raised; True if kept."""
    path = path_for(socket_path, pid)
    if not frames:
        return _write(path, str(count).encode())
    writing = path + WRITING
    if _write(writing, b"%d %s\n" % (count, b"-" if started is None else str(started).encode()) + frames):
        try:
            os.replace(writing, path)
            return True
        except OSError:
            pass
    forget_path(writing)
    return False


def _write(path: str, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        return True
    except OSError:
        return False


def process_start(pid: int | str = "self") -> int | None:
    """When a process started, in clock ticks since boot (Linux's /proc), or None: what tells
    a process of this environment (started after its companion, as the platform starts the
    runtime once every extension has registered) from one of an earlier environment."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def forget(socket_path: str, pid: int) -> None:
    forget_path(path_for(socket_path, pid))


def forget_path(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def collect(socket_path: str) -> list:
    """What processes that have ended left beside the socket (companion side), one `Left` each;
    their files are removed. A process still running (this environment's runtime, whose record
    went before the companion listened) reports its drops and sends what it holds itself: its
    file is not taken here too. A file that does not read as one the channel writes counts as
    one drop."""
    folder, name = os.path.split(socket_path)
    prefix = name + SUFFIX
    left = []
    try:
        entries = os.listdir(folder or ".")
    except OSError:
        return left
    for entry in entries:
        pid = entry[len(prefix) :]
        writing = pid.endswith(WRITING)
        if writing:
            pid = pid[: -len(WRITING)]
        if not entry.startswith(prefix) or not pid.isascii() or not pid.isdigit() or _running(int(pid)):
            continue
        path = os.path.join(folder, entry)
        if writing:  # killed as it wrote: the file it renamed last (if any) holds what it had
            forget_path(path)
            continue
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
            os.unlink(path)
        except OSError:
            continue
        left.append(parse(data))
    return left


def parse(data: bytes) -> Left:
    """One file's content as `Left` (a file not as `keep` writes them: one drop)."""
    head, newline, frames = data.partition(b"\n")
    count, _, started = head.partition(b" ")
    count = count.strip()
    if not count.isdigit() or len(data) > MAX_FILE_BYTES or (newline and not (started == b"-" or started.isdigit())):
        return Left(1, b"", None)
    return Left(int(count), frames, int(started) if started.isdigit() else None)


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
