"""What the function's process could not report, kept beside the socket for a companion.

A record the channel dropped is reported with the next record that goes through. Until then
its count also sits in a small file under /tmp (`<socket>.dropped.<pid>`), because a companion
that died takes the environment with it and only the next environment's companion (/tmp
outlives a reset) can report it.

The spans the process holds for a companion that did not listen yet sit in another file
(`<socket>.held.<pid>`), as the frames they would have gone in, after a line with the process's
start (clock ticks since boot, `-` where unknown): a process that ends first (an init that
failed, timed out, ran out of memory) leaves them for the companion to export. It is written
whole under a temporary name and renamed, so that a process killed as it writes leaves the last
one whole; written as a span is held, not as a drop is counted, which rewrites the small count
alone.
"""

from __future__ import annotations

import os
import stat

from lambdawrap.shared import inflight

SUFFIX = ".dropped."
HELD_SUFFIX = ".held."
WRITING = ".writing"  # the temporary name's ending: not a pid, so never taken as it is written
# What is read of one file: the channel holds 64 KiB of frames at most; more is not its writing.
MAX_FILE_BYTES = 256 * 1024


class Left:
    """What one ended process left: its drops, and the frames it held, with its start (see
    process_start). Not a namedtuple: `collections` is not the function's process's to import."""

    __slots__ = ("count", "frames", "started")

    def __init__(self, count: int = 0, frames: bytes = b"", started: int | None = None) -> None:
        self.count, self.frames, self.started = count, frames, started

    def __repr__(self) -> str:
        return f"Left({self.count}, {len(self.frames)} bytes of frames, started={self.started})"


def path_for(socket_path: str, pid: int) -> str:
    return f"{socket_path}{SUFFIX}{pid}"


def held_path_for(socket_path: str, pid: int) -> str:
    return f"{socket_path}{HELD_SUFFIX}{pid}"


def keep(socket_path: str, pid: int, count: int) -> bool:
    """Write this process's unreported count (one small write, never raised); True if kept."""
    return _write(path_for(socket_path, pid), str(count).encode())


def keep_held(socket_path: str, pid: int, frames: bytes, started: int | None) -> bool:
    """Write the frames this process holds for the companion, whole or not at all (never
    raised); True if kept. started: see process_start."""
    path = held_path_for(socket_path, pid)
    writing = path + WRITING
    if _write(writing, (b"-" if started is None else str(started).encode()) + b"\n" + frames):
        try:
            os.replace(writing, path)
            return True
        except OSError:
            pass
    _unlink(writing)
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
            status = f.read()
        return int(status[status.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def forget(socket_path: str, pid: int) -> None:
    _unlink(path_for(socket_path, pid))


def forget_held(socket_path: str, pid: int) -> None:
    _unlink(held_path_for(socket_path, pid))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def collect(socket_path: str) -> list:
    """What processes that have ended left beside the socket (companion side), one `Left` each;
    their files are removed. A process still running (this environment's runtime, whose record
    went before the companion listened) reports its drops and sends what it holds itself: its
    files are not taken here too (nor those of an ended one whose pid a process took since,
    until that one ends: pids come round again only after tens of thousands of processes). A
    file that does not read as one the channel writes, or a held one a process was killed
    writing, counts as one drop; one removed as it is read (its process sent what it held,
    and ended) counts nothing."""
    folder, name = os.path.split(socket_path)
    by_pid: dict = {}
    try:
        entries = os.listdir(folder or ".")
    except OSError:
        return []
    for entry in entries:
        for suffix in (SUFFIX, HELD_SUFFIX):
            if entry.startswith(name + suffix):
                pid = entry[len(name) + len(suffix) :]
                writing = suffix == HELD_SUFFIX and pid.endswith(WRITING)
                pid = pid[: -len(WRITING)] if writing else pid
                if pid.isascii() and pid.isdigit():
                    by_pid.setdefault(int(pid), []).append((suffix, writing, os.path.join(folder, entry)))
    left = []
    for pid, files in by_pid.items():
        taken = _take(pid, files)
        if taken is not None:
            left.append(taken)
    return left


def _take(pid: int, files: list) -> Left | None:
    if _running(pid):
        return None
    held = [path for suffix, writing, path in files if suffix == HELD_SUFFIX and not writing]
    data = _read(held[0]) if held else GONE
    started = _started(data) if isinstance(data, bytes) else None
    taken = Left()
    for suffix, writing, path in files:
        if writing:
            taken.count += 1  # killed as it wrote: the span it held last is lost
        elif suffix == SUFFIX:
            taken.count += _count(_read(path))
        elif data is GONE:
            pass
        elif not data or (data.partition(b"\n")[0] != b"-" and started is None):
            taken.count += 1
        else:
            taken.frames, taken.started = data.partition(b"\n")[2], started
        _unlink(path)
    return taken


GONE = object()  # what _read gives for a file removed before it was read


def _read(path: str) -> object:
    """A regular file's bytes, up to one more than MAX_FILE_BYTES; GONE where it was removed;
    None where it is no such file (a FIFO named as ours would block, a link point elsewhere)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        return GONE
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, size = [], 0
        while size <= MAX_FILE_BYTES:
            chunk = os.read(fd, MAX_FILE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
        return None if size > MAX_FILE_BYTES else data
    except OSError:
        return None
    finally:
        os.close(fd)


def _started(data: bytes) -> int | None:
    head = data.partition(b"\n")[0]
    return int(head) if head.isdigit() else None


def _count(data: object) -> int:
    if data is GONE:
        return 0
    text = data.strip() if isinstance(data, bytes) else b""
    return int(text) if text.isdigit() and len(text) <= 18 else 1


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
