"""The invocation a process has under way, where the companion can read it after the process
is gone (timeout, crash, out of memory): what the span needs that the platform does not say
(the trace and parent, the trigger, the cold start).

Each process of the function writes into a file of its own beside the socket
(`<socket>.inflight.<pid>`), mapped into its memory: holding and clearing the slot is a copy
into memory, not a system call, on the invocation's path. A slot is a 4-byte big-endian
length and then the invocation's start record (JSON); length 0 means nothing is under way. The
length is cleared before the body changes and set after, so a reader sees a whole record or
none. The slot's last 4 bytes count the spans the invocation has ended so far, which travel with
its record: lost with the process if it never sends it, they are counted from there.

After the slot, CALLS places of CALL_BYTES each hold the outgoing calls under way (a 4-byte
length and the client span as it started, a `records.span`; length 0: free), so that a call the
platform cut short (the one a handler waits on when it times out) still has its span, ended
where the process was; then 4 bytes count the calls under way that no place took, for the
companion to count as lost with the process. The file's FILE_SIZE bytes are allocated when it is made (a full /tmp
then only costs the slot) and every write stays within them. A file removed under the process
(a function that empties /tmp) is made again, found within a second.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from _thread import allocate_lock as Lock

from lambdawrap.shared.own_stdlib import mmap
from lambdawrap.shared.process_id import own_pid

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Callable

SUFFIX = ".inflight."
SIZE = 64 * 1024
HEADER_BYTES = 4
HELD_BYTES = 4  # at the slot's end: the spans the invocation under way holds for its record
HELD_SPANS = "held_spans"  # the key read() adds to a start record whose process is gone
OPEN_CALLS = "open_calls"  # likewise: the client spans of the calls its process had under way
CALLS = 8  # calls under way at once, from any of the function's threads, beyond which none is kept
CALL_BYTES = 4096  # a span's URL is capped at 2,048 characters (recorder.MAX_ATTRIBUTE_CHARS)
UNKEPT_AT = SIZE + CALLS * CALL_BYTES  # 4 bytes: calls under way beyond the places (or too big)
UNKEPT_CALLS = "unkept_calls"  # the key read() gives their count under
FILE_SIZE = UNKEPT_AT + HELD_BYTES
# How often the writing side looks whether its file is still there: a function that empties /tmp
# in its handler removes it, and the companion, which reads the slot by its name, would find none
# for a later invocation that timed out or crashed. One stat (~2 us) a second, not one an invocation.
CHECK_INTERVAL_NS = 1_000_000_000
_FOR_A_MOMENT = (errno.EMFILE, errno.ENFILE)
MAX_KEPT_MAPS = 8  # old maps kept open, their descriptor's number the function's since (see _open)
# From 3.13 a map need not keep a descriptor of the file (trackfd=False).
_NO_FD_KEPT = {"trackfd": False} if sys.version_info >= (3, 13) else {}


class InflightSlot:
    """The writing side (the function's process). Never raises: a slot that cannot be made
    only costs the companion what the platform alone can tell it."""

    def __init__(self, socket_path: str) -> None:
        self._socket_path = socket_path
        self._map = None
        self._pid = 0
        self._broken = False
        self._retry_ns = 0  # a slot not made for a moment (no descriptor left) is tried again from then
        self._path = ""
        self._identity: tuple = ()  # (device, inode) of the file mapped
        self._replaced: list = []  # maps made before the current one, not closed (see _open)
        self._checked_ns = 0
        self._places: _CallPlaces | None = None  # the invocation under way's (see call_started)
        self._generation = 0  # of the places: a token of earlier ones frees nothing
        # A thread of the module marking the slot for the init (hold_if) as the first
        # invocation's start is held: one after the other, the start last.
        self._holding = Lock()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._holding = Lock()  # a parent's thread may have held it as the process forked

    def _open(self) -> object:
        # The map this one replaces (the removed file's, or the parent's in a forked child).
        # Before 3.13 a map keeps a descriptor of its own, whose number the function may have
        # closed and opened a file at since (closing every descriptor by number, as daemonising
        # code does): closing the map would close that file. Closed only while a descriptor of
        # this process is still the mapped file; else kept, open (a few at most: past them the
        # slot is given up).
        close_old = self._map is not None and (bool(_NO_FD_KEPT) or _still_open(self._identity))
        if self._map is not None and not close_old and len(self._replaced) >= MAX_KEPT_MAPS:
            raise OSError("the in-flight slot's old maps cannot be closed")
        pid = own_pid()
        path = f"{self._socket_path}{SUFFIX}{pid}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # The slot's blocks are reserved now, where a full /tmp is an OSError: a sparse file
            # would need them at the first write into the map, where a full /tmp is a SIGBUS
            # that kills the function.
            _reserve(fd, FILE_SIZE)
            made = mmap.mmap(fd, FILE_SIZE, **_NO_FD_KEPT)
            status = os.fstat(fd)
        except BaseException:
            _unlink(path)  # nothing half-made for the companion to find
            raise
        finally:
            os.close(fd)
        if close_old:
            self._map.close()
        elif self._map is not None:
            self._replaced.append(self._map)
        self._map, self._pid, self._path = made, pid, path
        self._identity = (status.st_dev, status.st_ino)
        self._places = None  # the new file's places hold nothing: hold() makes them
        return made

    def _removed(self, now_ns: int) -> bool:
        """Whether the file mapped is no longer under its name; looked at once a second at most."""
        if 0 <= now_ns - self._checked_ns < CHECK_INTERVAL_NS:
            return False
        self._checked_ns = now_ns
        try:
            status = os.stat(self._path)
        except OSError:
            return True
        return (status.st_dev, status.st_ino) != self._identity

    def hold(self, start_json: bytes, now_ns: int = 0) -> bool:
        """Publish the start of an invocation (at `now_ns`, time.time_ns()), its call places
        empty; False if there is no slot (or it is too big). Every write lands inside the
        FILE_SIZE bytes reserved at open: a map never grows its file."""
        with self._holding:
            return self._hold(start_json, now_ns)

    def hold_if(self, start_json: bytes, now_ns: int, still: Callable[[], bool]) -> bool:
        """hold(), where still() says so when the slot is the caller's to hold (checked and
        held with no other hold between)."""
        with self._holding:
            return still() and self._hold(start_json, now_ns)

    def _hold(self, start_json: bytes, now_ns: int) -> bool:
        if self._broken or (self._retry_ns and (now_ns or time.time_ns()) < self._retry_ns):
            return False
        if len(start_json) > SIZE - HEADER_BYTES - HELD_BYTES:
            self.clear()  # what the slot held (an earlier attempt's start) is not this one's
            return False
        try:
            slot = self._map if self._pid == own_pid() and not self._removed(now_ns) else self._open()
            slot[:HEADER_BYTES] = b"\0\0\0\0"
            slot[SIZE - HELD_BYTES : SIZE] = b"\0\0\0\0"
            slot[HEADER_BYTES : HEADER_BYTES + len(start_json)] = start_json
            slot[:HEADER_BYTES] = len(start_json).to_bytes(HEADER_BYTES, "big")
            places = self._places
            if places is None or places.map is not slot or places.used:
                self._new_places(slot, places)
            return True
        except OSError as exc:
            try:
                self.clear()  # what the slot held (an earlier invocation's start) is not this one's
            except ValueError:  # its map closed
                pass
            if exc.errno in _FOR_A_MOMENT:
                # No descriptor left (the function's own files, for a moment): tried again a
                # second on, not given up for the process's life, every timeout and crash after
                # it without its trace.
                self._retry_ns = (now_ns or time.time_ns()) + CHECK_INTERVAL_NS
            else:
                self._broken = True  # e.g. /tmp full: not tried again on every invocation
            return False
        except ValueError:
            self._broken = True
            return False

    def clear(self) -> None:
        if self._map is not None and self._pid == own_pid():
            self._map[:HEADER_BYTES] = b"\0\0\0\0"

    def _new_places(self, made: object, old: _CallPlaces | None) -> None:
        """Empty places for the invocation starting: a call an earlier one left (a thread of
        its still waiting, or one that never ended: a request dropped unanswered) is no call of
        this one's. Swapped whole, under the old places' lock: a thread ending an earlier call
        then finds them gone, and frees nothing of the new."""
        self._generation += 1
        fresh = _CallPlaces(made, self._generation)
        if old is None or old.map is not made:
            self._places = fresh  # a file just made: its places are zeros
            return
        with old.lock:
            for at in range(SIZE, UNKEPT_AT + 1, CALL_BYTES):  # each place's length, then the count
                made[at : at + HEADER_BYTES] = b"\0\0\0\0"  # type: ignore[index]
            self._places = fresh

    def call_started(self, key: object, span_json: bytes) -> tuple | None:
        """Publish an outgoing call of the invocation under way (its client span as it
        started), `key` telling it apart (its span's id); the token `call_ended` takes (plain
        numbers: a call's span may be copied with the request that holds it), or None where
        there is no slot (not made yet, another process's map). One no place takes (all taken,
        or too big) is counted instead. A copy into memory; safe from any thread."""
        places = self._places
        if places is None or self._pid != own_pid():
            return None
        try:
            with places.lock:
                if self._places is not places:
                    return None  # an invocation started meanwhile: this call is an earlier one's
                places.used = True
                if len(span_json) > CALL_BYTES - HEADER_BYTES or not places.free:
                    places.unkept.add(key)
                    places.write_unkept()
                    return places.generation, -1
                place = places.free.pop()
                places.holders[place] = key
                at = SIZE + place * CALL_BYTES
                places.map[at + HEADER_BYTES : at + HEADER_BYTES + len(span_json)] = span_json
                places.map[at : at + HEADER_BYTES] = len(span_json).to_bytes(HEADER_BYTES, "big")
                return places.generation, place
        except ValueError:  # a map closed under us
            return None

    def call_ended(self, key: object, token: tuple) -> None:
        """The call `call_started` published under `key` has ended (its span goes with the
        record). Once only: a copy of the call's span ending too frees nothing."""
        generation, place = token
        places = self._places
        if places is None or places.generation != generation or self._pid != own_pid():
            return  # places made since (an invocation's start, the file made again, a fork)
        try:
            with places.lock:
                if self._places is not places:
                    return
                if place < 0:
                    if key in places.unkept:
                        places.unkept.discard(key)
                        places.write_unkept()
                    return
                if places.holders[place] != key:
                    return
                places.holders[place] = None
                at = SIZE + place * CALL_BYTES
                places.map[at : at + HEADER_BYTES] = b"\0\0\0\0"
                places.free.append(place)
        except ValueError:  # a map closed under us
            return

    def held(self, spans: int) -> None:
        """The invocation under way holds `spans` for its record (a copy into memory)."""
        if self._map is not None and self._pid == own_pid():
            try:
                self._map[SIZE - HELD_BYTES : SIZE] = min(spans, 0xFFFFFFFF).to_bytes(HELD_BYTES, "big")
            except ValueError:  # a map closed under us: nothing to tell
                pass


class _CallPlaces:
    """The call places of one invocation in one map: replaced whole, so that every thread
    reads one consistent set of them."""

    __slots__ = ("map", "generation", "free", "holders", "unkept", "used", "lock")

    def __init__(self, made: object, generation: int) -> None:
        self.map = made
        self.generation = generation
        self.free = list(range(CALLS - 1, -1, -1))
        self.holders: list = [None] * CALLS  # each place's call (its key), None when free
        self.unkept: set = set()  # the keys of the calls under way no place took
        self.used = False  # whether a call was published: unused places need no emptying
        self.lock = Lock()

    def write_unkept(self) -> None:
        self.map[UNKEPT_AT : UNKEPT_AT + HELD_BYTES] = min(len(self.unkept), 0xFFFFFFFF).to_bytes(HELD_BYTES, "big")  # type: ignore[index]


def _still_open(identity: tuple) -> bool:
    """Whether a descriptor of this process is the file of `identity` (device, inode): the one
    a map made before 3.13 keeps, unless the function closed its number."""
    try:
        numbers = os.listdir("/proc/self/fd")
    except OSError:
        return False
    for number in numbers:
        try:
            status = os.fstat(int(number))
        except (OSError, ValueError):
            continue
        if (status.st_dev, status.st_ino) == identity:
            return True
    return False


def _reserve(fd: int, size: int) -> None:
    """Allocate `size` bytes of the file's blocks (ENOSPC as an OSError)."""
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is not None:
        allocate(fd, 0, size)
        return
    zeros = bytes(size)  # no posix_fallocate (macOS): writing the blocks reserves them too
    written = 0
    while written < size:
        count = os.pwrite(fd, zeros[written:], written)
        if count <= 0:
            raise OSError(28, "No space left on device")  # errno.ENOSPC, without importing errno
        written += count


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _slots(socket_path: str):
    """(pid, path, start record or None) of each in-flight slot beside the socket."""
    folder, name = os.path.split(socket_path)
    prefix = name + SUFFIX
    try:
        entries = os.listdir(folder or ".")
    except OSError:
        return
    for entry in entries:
        pid = entry[len(prefix) :]
        if entry.startswith(prefix) and pid.isascii() and pid.isdigit():
            path = os.path.join(folder, entry)
            yield int(pid), path, _read_slot(path)[0]


def held(socket_path: str) -> list:
    """(pid, path, start record) of each slot beside the socket that holds an invocation, read
    once (companion side); the slots of processes gone that held nothing are removed. For
    `read` to look many invocations up in: each read alone reads every slot."""
    found = []
    for pid, path, start in _slots(socket_path):
        if start is not None:
            found.append((pid, path, start))
        elif ended(pid):
            _unlink(path)
    return found


def read(socket_path: str, request_id: str, span_id: str | None = None, slots: list | None = None) -> dict | None:
    """The start record of `request_id` if a process of this environment holds it (companion
    side): of its attempt whose span is `span_id` if given, else of its latest (on Managed
    Instances a timed-out worker runs on, holding the attempt its retry replaced). Once that
    process is gone, with the spans it held for the record it never sent (HELD_SPANS), and its
    slot removed; the slot of a process that is gone and held nothing is removed too.
    `slots`: what `held` read, looked up instead of reading every slot again."""
    found, found_at = None, None
    for pid, path, start in held(socket_path) if slots is None else slots:
        if start.get("request_id") == request_id and (span_id is None or start.get("span_id") == span_id):
            if found is None or _start_ns(start) > _start_ns(found):
                found, found_at = start, (pid, path)
    if found is None:
        return None
    found = dict(found)  # `slots` may be looked up again
    for key in (HELD_SPANS, OPEN_CALLS, UNKEPT_CALLS):
        found.pop(key, None)  # only the slot's own places say them
    pid, path = found_at
    if ended(pid):
        # Read again now that the process is known gone: read before, its slot may have been
        # cleared since, its record sent with the spans it held.
        again, held_spans = _read_slot(path)
        if again is not None and again.get("span_id") == found.get("span_id"):
            found[HELD_SPANS] = held_spans
            found[OPEN_CALLS], found[UNKEPT_CALLS] = _read_calls(path)
        _unlink(path)
    return found


def init_calls(socket_path: str) -> list:
    """(the init mark, the calls under way, the count no place took) of each slot beside the
    socket that holds a handler's module's init mark (records.init_mark) and whose process has
    ended (companion side): its init failed, or the environment ended, before an invocation's
    start replaced the mark. Those slots are removed."""
    found = []
    for pid, path, start in _slots(socket_path):
        if start is not None and "init_span" in start and "request_id" not in start and ended(pid):
            calls, unkept = _read_calls(path)
            _unlink(path)
            found.append((start, calls, unkept))
    return found


def _start_ns(start: dict) -> int:
    started = start.get("start_ns")
    return started if type(started) is int else 0


def holder(socket_path: str, request_id: str) -> int | None:
    """The process whose slot holds `request_id` (companion side), if one does; no slot is
    removed (the span still needs what it holds)."""
    for pid, _, start in _slots(socket_path):
        if start is not None and start.get("request_id") == request_id:
            return pid
    return None


def ended(pid: int) -> bool:
    """Whether process `pid` has ended (exited, crashed, killed), one its parent has not yet
    reaped (a zombie) included."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return True
    except OSError:
        return not _alive(pid)
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]  # the field after the name
    return state in (b"Z", b"X")


def _read_slot(path: str) -> tuple:
    """(start record or None, spans held) of the slot at `path`."""
    try:
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(HEADER_BYTES), "big")
            if not 0 < length <= SIZE - HEADER_BYTES - HELD_BYTES:
                return None, 0
            body = f.read(length)
            f.seek(SIZE - HELD_BYTES)
            held = int.from_bytes(f.read(HELD_BYTES), "big")
        start = json.loads(body)
    except (OSError, ValueError, RecursionError):
        return None, 0
    return (start, held) if isinstance(start, dict) else (None, 0)


def _read_calls(path: str) -> tuple:
    """(the client spans of the calls under way in the slot at `path`, each a `records.span`
    as it started, which the reader checks as any span of the function's; the count of those
    no place took)."""
    calls: list = []
    try:
        with open(path, "rb") as f:
            f.seek(SIZE)
            places = f.read(CALLS * CALL_BYTES)
            unkept = int.from_bytes(f.read(HELD_BYTES), "big")
    except OSError:
        return calls, 0
    for at in range(0, len(places) - HEADER_BYTES + 1, CALL_BYTES):
        length = int.from_bytes(places[at : at + HEADER_BYTES], "big")
        if 0 < length <= CALL_BYTES - HEADER_BYTES:
            try:
                calls.append(json.loads(places[at + HEADER_BYTES : at + HEADER_BYTES + length]))
            except (ValueError, RecursionError):
                calls.append(None)  # counted as a malformed span by the reader
    return calls, unkept


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, but not ours to signal
    return True
