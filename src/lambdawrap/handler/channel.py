"""The function's end of the local channel to the companion: a Unix stream socket carrying
the records of `lambdawrap.shared.records`, framed by `lambdawrap.shared.framing`.

Sending never blocks an invocation: the socket is non-blocking, a record that does not fit in
the kernel's buffer is dropped and counted, and when the companion is absent the channel
drops, counts, warns once, and tries to reconnect at most once a second (for an invocation's
record, at once: the companion counts it itself while it lives). Until the process first
reaches the companion, `spans` records are held for it instead (bounded), each trying at once,
and kept beside the socket meanwhile: a process that ends first leaves them for the companion.
Only `request()` (used once at boot, for secrets) waits, and only up to its timeout.

Each drop is counted exactly once, by whoever can still count it. An invocation record that a
live companion could not take is its to count (it saw the INVOKE: `record_missing`), also when
this process could not reach it (its socket file removed, no descriptor left): only a refused
or closed connection says it is gone. Every
other drop is counted here and reported with the next record that goes through (`dropped`);
until then the count is also kept beside the socket (`shared.unreported_drops`).
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
from threading import get_ident

# The C socket module: `socket`'s Python layer (its enums, selectors) costs the function's
# cold start, and the channel needs none of it. Out of sys.modules (own_stdlib).
from lambdawrap.shared.own_stdlib import _socket

AF_UNIX, MSG_PEEK, SO_SNDBUF, SOCK_STREAM, SOL_SOCKET = _socket.AF_UNIX, _socket.MSG_PEEK, _socket.SO_SNDBUF, _socket.SOCK_STREAM, _socket.SOL_SOCKET
unix_socket = _socket.socket
# MSG_DONTWAIT: not on Linux, local tooling only, peeks block.
_PEEK_FLAGS = MSG_PEEK | getattr(_socket, "MSG_DONTWAIT", 0)
# A send to a companion that has died is an EPIPE error, never a SIGPIPE: a function may
# restore SIGPIPE's default action (as code written for pipes does), which the signal would
# turn into the end of its process, in the middle of an invocation. Linux's flag, per send (0
# elsewhere: local tooling only, on macOS).
_SEND_FLAGS = getattr(_socket, "MSG_NOSIGNAL", 0)

from lambdawrap.shared import records, unreported_drops
from lambdawrap.shared.framing import MAX_ANSWER_BYTES, MAX_RECORD_BYTES, FrameReader, encode, encode_json
from lambdawrap.shared.log import get_logger
from lambdawrap.shared.own_stdlib import standard

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Any, Callable

RECONNECT_INTERVAL_S = 1.0
CONNECT_POLL_S = 0.02  # connect_within: how often the socket's file is looked for
# What the connection's send buffer is asked to hold: a record at its largest, and room for
# another. By default a Unix socket takes ~208 KB at a time (wmem_default):
# of a record larger than that, the rest waited for this process's next send, the next
# invocation's, and the companion had counted the invocation as record_missing by then (its
# spans gone uncounted with it), or the process ended first and took the rest with it. The
# kernel doubles what is asked and caps it at twice net.core.wmem_max (~416 KB at its default).
SEND_BUFFER_BYTES = 2 * MAX_RECORD_BYTES
# Records sent from inside a send on its own thread (see Channel._holder) kept for after it.
MAX_REENTERED = 64
# Spans made before the companion first listened (the handler's module loading while the
# companion's Python starts: at 128 MB its socket is bound hundreds of milliseconds into the
# init), held for it rather than dropped: at most this many frames, of this many bytes in all,
# well within a send buffer (~208 KB by default): sent at once ahead of the first invocation's
# record, more could leave that record no room.
MAX_EARLY_FRAMES = 64
MAX_EARLY_BYTES = 64 * 1024
# A frame over this size is started only where the buffer has room for all of it (see
# Channel._room_for): one sent in part held the companion's reader until this process's next
# send, maybe the next invocation's, and an environment ending first took the frame and the
# spans in it uncounted. Under it, a frame goes as it always did (no system call more).
CHECKED_FRAME_BYTES = 32 * 1024
# Linux's SIOCOUTQ: what a Unix socket's send buffer holds, in the kernel's own reckoning of it
# (the space the queued data takes), which is what the buffer's size bounds.
_SIOCOUTQ = 0x5411


class Channel:
    """A lazily connected, fork-aware, never-blocking sender of records."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.dropped = 0
        self._lock = threading.Lock()
        # The thread sending now, while it holds the lock, and what that thread sent meanwhile:
        # code can run on it inside a send (the garbage collector, as a record is encoded,
        # finalizing a generator whose `with start_as_current_span` then ends its span), and a
        # send from there would wait for the lock its own thread holds, for ever.
        self._holder = 0
        self._reentered: list = []
        self._warning = ""  # to log once the lock is released
        self._sock: unix_socket | None = None
        self._pending = b""
        self._next_connect = 0.0
        self._warned: set = set()  # the kinds of failure already said (see _warn_once)
        self._kept = False
        self._identity: tuple = ()  # (device, inode) of the connected socket
        self._buffer_bytes = 0  # the connected socket's send buffer, as the kernel made it
        self._companion_down = False  # as the last connection or attempt told
        # Until this process first connects: spans frames held for the companion, each with its
        # weight (see _held_early), and their weight in all; None once connected.
        self._early: list | None = []
        self._early_bytes = 0
        self._early_weight = 0
        self._started: Any = False  # this process's start (unreported_drops.process_start), once read
        self._held_kept = False  # whether the file beside the socket holds every frame held
        if hasattr(os, "register_at_fork"):
            # A forked worker must not share the parent's connection: interleaved frames
            # from two processes would corrupt the stream.
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._holder = 0
        self._reentered = []
        self._warning = ""  # the parent's to log
        self._let_go_inherited()
        self._pending = b""
        self._next_connect = 0.0
        self.dropped = 0  # the parent reports its own drops; the child starts from none
        self._companion_down = False
        self._kept = False
        self._early, self._early_bytes, self._early_weight = [], 0, 0  # the parent's held frames are the parent's to send
        self._started = False
        self._held_kept = False

    def _let_go_inherited(self) -> None:
        """In a forked child: close its copy of the parent's connection, explicitly. Dropped,
        the socket object closed it in its finalizer with a ResourceWarning, which a function
        running with warnings on (PYTHONWARNINGS, -X dev) saw in its log, or as an
        "Exception ignored" traceback with warnings as errors. A descriptor that is no longer
        that socket (the function closed descriptors by number and reused them) is the
        function's, and stays open. One fstat in each child, none in the parent."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            fd = sock.detach()
            status = os.fstat(fd)
            if (status.st_dev, status.st_ino) == self._identity:
                os.close(fd)
        except OSError:
            pass

    def connect_ahead(self) -> None:
        """Connect now, if not connected yet: at an invocation's start, before its handler can
        remove the socket's file (a function that empties /tmp). A connection made stays
        whatever becomes of the file; without one, the record at the handler's end found no
        file, and on Managed Instances, with no INVOKE to make the companion listen again, the
        records of every worker not yet connected were lost until its next tick. Quiet: a
        connect that fails here is tried again, and told, at the record's send (not tried
        once the companion refused one: it is gone, and the send tries)."""
        if self._sock is None and not self._companion_down and self._holder != get_ident():
            try:
                self._holding_the_lock(self._connect_quietly)
            except Exception:  # noqa: BLE001 - an audit hook's own error: the send meets it, and is handled there
                pass

    def connect_within(self, wait_s: float) -> bool:
        """Connect, waiting up to `wait_s` for the companion to listen (its socket's file not
        there yet); True once connected. For a record the process cannot send later: a Managed
        Instances worker whose init failed, which exits next, maybe before the companion's
        Python, started after the runtime, listens. A refused connect (the companion gone)
        ends the wait."""
        deadline = time.monotonic() + wait_s
        while True:
            self.connect_ahead()
            if self._sock is not None or self._companion_down or time.monotonic() >= deadline:
                return self._sock is not None
            time.sleep(CONNECT_POLL_S)

    def _connect_quietly(self) -> bool:
        # Called with the lock held: another thread may have connected meanwhile.
        connected = self._sock is not None or self._connect(at_once=True, quiet=True) is not None
        if connected and self._early is not None:
            self._send_early()
        return connected

    def send_early_at_exit(self) -> None:
        """The process ends (an init that failed): what it held for the companion goes if the
        companion listens now; one attempt, no wait (the platform's re-init, which a caller may
        wait for, follows the exit). What cannot go stays beside the socket, for the companion
        to take once this process has ended."""
        if self._early and self._holder != get_ident():
            try:
                self._holding_the_lock(self._connect_quietly)
            except Exception:  # noqa: BLE001 - an audit hook's own error, at the process's exit
                pass

    def _held_early(self, record: dict) -> bool | None:
        """Hold a `spans` record made before this process first reached the companion (called
        with the lock held, the connect just failed), to go once it does: True. None where it
        is not held (the holding full, a record too large), to go the usual way. Kept beside the
        socket meanwhile (where it cannot be written there, counted there): a process that ends
        before the companion listens (an init that failed, timed out, ran out of memory) leaves
        it to the companion. Not in `dropped`, which the records that go report: those are the
        drops of records that went nowhere. Encoded now, without the drops reported so far (the
        record that goes first then reports them)."""
        early = self._early
        try:
            frame = encode(record)
        except Exception:  # noqa: BLE001 - the usual way counts it
            return None
        if early is None or len(early) >= MAX_EARLY_FRAMES or self._early_bytes + len(frame) > MAX_EARLY_BYTES or len(frame) > MAX_RECORD_BYTES:
            return None
        spans = record.get("spans")
        weight = len(spans) if isinstance(spans, list) and spans else 1
        early.append((frame, weight))
        self._early_bytes += len(frame)
        self._early_weight += weight
        self._keep_held()
        return True

    def _send_early(self) -> None:
        """Send the frames held for the companion, which listens now, ahead of anything else
        (called with the lock held, connected): no longer counted as dropped, unless one cannot
        go now either."""
        early, self._early, self._early_bytes = self._early or [], None, 0
        for frame, weight in early:
            self._early_weight -= weight
            self._send_frame(frame, records.SPANS, 0, weight)
        if self._held_kept:
            # Killed before this, the companion finds them twice: it delivers them once.
            self._held_kept = False
            unreported_drops.forget_held(self.path, os.getpid())
        self._keep_unreported()

    def _keep_held(self) -> None:
        """The frames held for the companion, kept beside the socket (called with the lock
        held, as one is held): where they cannot be written, they are counted instead."""
        if self._started is False:
            self._started = unreported_drops.process_start()
        frames = b"".join(frame for frame, _ in self._early or ())
        self._held_kept = unreported_drops.keep_held(self.path, os.getpid(), frames, self._started)
        if not self._held_kept:
            unreported_drops.forget_held(self.path, os.getpid())  # an earlier one, of fewer
        self._keep_unreported()

    def _keep_unreported(self) -> None:
        """What this process has not reported, kept beside the socket (called with the lock
        held): the drops its next record reports, and the frames it holds for the companion
        where they are not kept as frames."""
        unreported = self.dropped + (0 if self._held_kept else self._early_weight)
        if unreported:
            self._kept = unreported_drops.keep(self.path, os.getpid(), unreported) or self._kept
        elif self._kept:
            self._kept = False
            unreported_drops.forget(self.path, os.getpid())

    def _connect(self, at_once: bool = False, quiet: bool = False) -> unix_socket | None:
        """A new connection; None for now if one was refused within RECONNECT_INTERVAL_S, unless
        `at_once`: an invocation's record is worth a connect whatever the last one said (the
        companion of a new environment may bind the file a killed one left just after a span
        of the function's init was refused there, and counted as gone, it would count the
        invocation it also counts itself as missing)."""
        now = time.monotonic()
        if now < self._next_connect and not at_once:
            return None
        self._next_connect = now + RECONNECT_INTERVAL_S
        sock = None
        try:
            sock = unix_socket(AF_UNIX, SOCK_STREAM)  # may fail too: no descriptor left
            self._buffer_bytes = _grow_send_buffer(sock)
            # Non-blocking before the connect too: a blocking connect waits while the
            # companion's backlog is full (Managed Instances' workers all ending a first
            # invocation while it waits for CPU), and the invocation with it. A full backlog
            # is EAGAIN instead: the companion lives, and accounts for the invocation.
            sock.setblocking(False)
            sock.connect(self.path)
        except OSError as exc:
            if sock is not None:
                sock.close()
            # Refused: nothing listens there, the companion is gone. Otherwise (its socket file
            # removed, which it makes again at the next event; no descriptor left) it lives,
            # and accounts for this invocation itself.
            self._companion_down = exc.errno == errno.ECONNREFUSED
            if quiet or exc.errno in (errno.ENOENT, errno.EAGAIN):
                # Its file removed: the companion makes it again at its next event, maybe just
                # after this invocation's end; or its backlog full, for a moment; or a connect
                # ahead of the record, which the send that follows tries again, and tells. The
                # next send tries again (one failed connect).
                self._next_connect = now
            if quiet:
                return None
            self._warn_once("refused" if self._companion_down else "unreachable", f"companion not reachable at {self.path} ({exc.strerror or exc}); telemetry records are dropped and counted")
            return None
        self._companion_down = False
        status = os.fstat(sock.fileno())
        self._identity = (status.st_dev, status.st_ino)
        self._sock = sock
        return sock

    def _own_socket(self) -> unix_socket | None:
        """The connected socket, if its descriptor is still the one connected (one fstat,
        ~0.7 µs). A function may close every descriptor by number, as daemonising code does,
        and open its own, which take the same numbers: sending there would write into the
        function's file or connection, and closing it would close the function's. Such a
        socket is let go without a close, and a new connection made at once: the companion is
        alive. Called with the lock held."""
        sock = self._sock
        if sock is None:
            return None
        try:
            status = os.fstat(sock.fileno())
            if (status.st_dev, status.st_ino) == self._identity:
                return sock
        except OSError:
            pass
        sock.detach()
        self._sock = None
        self._pending = b""  # the rest of a frame on a connection that is gone
        self._next_connect = 0.0
        return None

    @property
    def companion_refused(self) -> bool:
        """Whether the companion refused or closed the last connection tried: it is gone."""
        return self._companion_down

    def companion_gone(self) -> bool:
        """Whether the companion has closed this connection (died): one non-blocking peek,
        since the companion never writes on it."""
        sock = self._sock
        if sock is None:
            return False  # not connected (yet): the next send tells
        try:
            # Read-only, so not worth a check that the descriptor is still ours (the send
            # makes one): a function's file there says "gone", and its record goes at once.
            # MSG_DONTWAIT: a socket of the function's that took the descriptor's number is
            # blocking, and a plain peek would wait for its peer to write, for ever.
            return sock.recv(1, _PEEK_FLAGS) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _warn_once(self, kind: str, message: str) -> None:
        # Called with the lock held: logged once it is released (_holding_the_lock). Logging
        # runs the function's handlers, which may wait on a lock of their own held by a thread
        # of the function's that is sending a span: logged here, neither would go on.
        # Once per kind: a span at import time, before the companion's socket is there, must
        # not use up the one line that says the companion died (refused) later.
        if kind not in self._warned:
            self._warned.add(kind)
            self._warning = message

    def send(self, record: dict) -> bool:
        """Queue one record for the companion without waiting; False if it was dropped."""
        if self._holder == get_ident():
            return self._reenter(record)
        return self._holding_the_lock(self._send_record, record)

    def _holding_the_lock(self, send: Callable[..., bool], *args: Any) -> bool:
        # `with`, not acquire() then try: a signal handler that raises (a timeout decorator's
        # SIGALRM) between the two would leave the lock held, and every later send waiting.
        thread = get_ident()
        with self._lock:
            try:
                self._holder = thread
                sent = send(*args)
            finally:
                self._holder = 0
        if self._warning:
            warning, self._warning = self._warning, ""
            get_logger().warning("lambdawrap: %s", warning)
        if self._reentered:
            self._send_reentered()
        return sent

    def _send_record(self, record: dict) -> bool:
        # Called with the lock held: a drop counted by another thread between reading the
        # count and clearing it would otherwise be lost.
        if self._early is not None and record.get("type") == records.SPANS and not self._connect_quietly():
            held = self._held_early(record)
            if held is not None:
                return held
        reported = self.dropped
        if reported:
            record["dropped"] = reported
        try:
            frame = encode(record)
            spans = record.get("spans")
            if len(frame) > MAX_RECORD_BYTES and record.get("type") == records.SPANS and isinstance(spans, list) and spans:
                # Spans too large by themselves for a record (one span sent alone: at import
                # time, on a thread of its own): the record goes without them, saying how many
                # (record_too_large, as for those an invocation's record could not hold).
                record["spans"], record["spans_too_large"] = [], len(spans)
                frame = encode(record)
        except Exception:  # noqa: BLE001 - an unencodable record is dropped, never raised
            record.pop("dropped", None)
            self._count_drop(record.get("type"), companion_alive=not self._companion_down)
            return False
        return self._send_frame(frame, record.get("type"), reported)

    def _reenter(self, record: dict) -> bool:
        # On the thread that holds the lock: sent once that thread's send is done.
        if len(self._reentered) >= MAX_REENTERED:
            self._count_drop(record.get("type"), companion_alive=not self._companion_down)
            return False
        self._reentered.append(record)
        return True

    def _send_reentered(self) -> None:
        with self._lock:
            queued, self._reentered = self._reentered, []
        for record in queued:
            self.send(record)

    def send_invocation(self, start_json: bytes, end: dict) -> bool:
        """Queue an invocation's record (its start part already encoded); False if it was
        dropped. A record over the size limit goes without the spans it carries (they are
        counted)."""
        return self._holding_the_lock(self._send_invocation, start_json, end)

    def _send_invocation(self, start_json: bytes, end: dict) -> bool:
        # Called with the lock held.
        reported = self.dropped
        following: list = []
        try:
            frame = records.encode_invocation(start_json, end, reported)
            if len(frame) > MAX_RECORD_BYTES and end.get("spans"):
                following, too_large = _span_frames(end.pop("spans"))
                if too_large:
                    end["spans_too_large"] = too_large
                frame = records.encode_invocation(start_json, end, reported)
            if len(frame) > MAX_RECORD_BYTES and end.pop("annotations", None) is not None:
                # What the function set on the invocation span, too much to go: the invocation
                # goes without it (its span made as if nothing had been set).
                frame = records.encode_invocation(start_json, end, reported)
        except Exception:  # noqa: BLE001 - an unencodable record is dropped, never raised
            frame = None
        if frame is None:
            self._count_drop(records.INVOCATION, companion_alive=not self._companion_down)
            sent = False
        else:
            sent = self._send_frame(frame, records.INVOCATION, reported)
        if not sent:
            # The companion counts the invocation itself (record_missing) when it lives, but
            # not what its record carried, which only this process knows of: the function's
            # spans, and those counted out of them (over the limit, too large). The counts
            # the invocation's caller keeps until a record goes (context_not_injected,
            # internal_errors) go with the next.
            carried = _spans_carried(end)
            if carried:
                self._count_drop(records.SPANS, companion_alive=not self._companion_down, weight=carried)
        # After the invocation's own record, which must not wait behind them for room in the
        # buffer: a spans frame that finds none is counted, a span each. Without the record
        # they would be orphans, of a span never made: counted.
        for spans_frame, count in following:
            if sent:
                self._send_frame(spans_frame, records.SPANS, 0, weight=count)
            else:
                self._count_drop(records.SPANS, companion_alive=not self._companion_down, weight=count)
        return sent

    def _send_frame(self, frame: bytes, kind: object, reported: int, weight: int = 1) -> bool:
        # Called with the lock held. `weight`: what a drop of this one counts (the spans a
        # spans frame holds).
        sock = self._own_socket() or self._connect(at_once=kind == records.INVOCATION)
        if sock is None:
            self._count_drop(kind, companion_alive=not self._companion_down, weight=weight)
            return False
        if self._early is not None:
            self._send_early()  # connected for the first time: what was held goes first
        if len(frame) > MAX_RECORD_BYTES:
            self._count_drop(kind, companion_alive=True, weight=weight)
            return False
        try:
            if self._pending:
                sent = sock.send(self._pending, _SEND_FLAGS)
                self._pending = self._pending[sent:]
                if self._pending:
                    self._count_drop(kind, companion_alive=True, weight=weight)
                    return False
            if len(frame) > CHECKED_FRAME_BYTES and not self._room_for(sock, len(frame)):
                self._count_drop(kind, companion_alive=True, weight=weight)
                return False
            sent = sock.send(frame, _SEND_FLAGS)
            # The rest of a half-sent frame must go first next time, or the stream breaks.
            self._pending = frame[sent:]
        except BlockingIOError:
            self._count_drop(kind, companion_alive=True, weight=weight)
            return False
        except OSError as exc:
            self._close()
            self._companion_down = True  # it closed the connection: it died
            self._count_drop(kind, companion_alive=False, weight=weight)
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                self._warn_once("send", f"sending to the companion failed: {exc}")
            return False
        if reported:
            self.dropped -= reported
            if not self.dropped and self._kept:
                self._keep_unreported()
        return True

    def _room_for(self, sock: unix_socket, size: int) -> bool:
        """Whether a frame of `size` bytes fits whole in the send buffer now (the kernel's
        reckoning counts the room its pieces take too: a sixteenth more, and a page). An empty
        buffer takes any frame, as it did; where the queue cannot be read, the send says."""
        try:
            # At the first large frame only (its import costs ~0.4 ms), and the standard one: the
            # function's folder, first on sys.path by then, may hold an `fcntl.py`.
            fcntl = standard("fcntl")
        except ImportError:  # not on Linux: local tooling only
            return True
        try:
            queued = int.from_bytes(fcntl.ioctl(sock.fileno(), _SIOCOUTQ, bytes(4)), sys.byteorder, signed=True)  # type: ignore[attr-defined]
        except OSError:
            return True
        return queued <= 0 or not self._buffer_bytes or queued + size + size // 16 + 4096 <= self._buffer_bytes

    def _count_drop(self, kind: object, companion_alive: bool, weight: int = 1) -> None:
        # Called with the lock held.
        if companion_alive and kind == records.INVOCATION:
            # The live companion saw this invocation's INVOKE and accounts for it itself
            # (record_missing); counting it here too would count it twice.
            return
        if kind == records.POSTED:
            return  # no telemetry in it: losing it only costs the companion a wait
        self.dropped += weight
        self._keep_unreported()

    def request(self, record: dict, timeout_s: float) -> Any:
        """Send a request on a connection of its own and wait up to timeout_s for the answer."""
        deadline = time.monotonic() + timeout_s
        sock = unix_socket(AF_UNIX, SOCK_STREAM)
        try:
            sock.settimeout(max(timeout_s, 0.001))
            sock.connect(self.path)
            sock.sendall(encode(record), _SEND_FLAGS)
            reader = FrameReader(max_bytes=MAX_ANSWER_BYTES)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no answer from the companion within {timeout_s * 1000:.0f} ms")
                sock.settimeout(left)
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("the companion closed the connection")
                answers = reader.feed(data)
                if answers:
                    return answers[0]
        finally:
            sock.close()

    def _close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._pending = b""


def _grow_send_buffer(sock: unix_socket) -> int:
    """The send buffer's size once grown (two system calls per connection, none per send:
    see SEND_BUFFER_BYTES); 0 where it cannot be read."""
    try:
        sock.setsockopt(SOL_SOCKET, SO_SNDBUF, SEND_BUFFER_BYTES)
    except OSError:
        pass  # a smaller buffer only costs the largest records
    try:
        return sock.getsockopt(SOL_SOCKET, SO_SNDBUF)
    except OSError:
        return 0


def _spans_carried(end: dict) -> int:
    """The spans an invocation record's `end` holds or counted out."""
    spans = end.get("spans")
    return (len(spans) if isinstance(spans, list) else 0) + records.count(end.get("spans_dropped")) + records.count(end.get("spans_too_large"))


def _span_frames(spans: list) -> tuple:
    """Spans too many for their invocation's record, as `spans` frames that each fit:
    ([(frame, spans in it)], spans that fit in none)."""
    frames: list = []
    too_large = 0
    chunk: list = []
    size = empty = len(encode(records.spans([])))
    for span in spans:
        span_bytes = len(encode_json(span)) + (1 if chunk else 0)  # and its comma
        if size + span_bytes > MAX_RECORD_BYTES and chunk:
            frames.append(chunk)
            chunk, size = [], empty
            span_bytes -= 1  # first in its frame: no comma
        if size + span_bytes > MAX_RECORD_BYTES:
            too_large += 1
            continue
        chunk.append(span)
        size += span_bytes
    if chunk:
        frames.append(chunk)
    return [(encode(records.spans(chunk)), len(chunk)) for chunk in frames], too_large
