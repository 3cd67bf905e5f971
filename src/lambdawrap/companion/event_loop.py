"""The companion's one thread of socket work.

The Extensions API's answer, the function's records and the Telemetry API's batches are all
served here, by the main thread, from one selector. With a thread per source, each invocation
woke four threads that handed the GIL and a condition variable back and forth, and at 128 MB
the whole environment has 7 % of a core: every wake-up is paid for in the function's billed
time. Only what blocks for long (exports, imports, secret fetches) runs on threads of its own;
they wake the loop with `call_soon_threadsafe`.

It waits on epoll directly (Lambda is Linux): `selectors` wraps each wait in a few Python calls
per ready socket, and the loop waits two or three times in every invocation.
"""

from __future__ import annotations

import collections
import errno
import heapq
import math
import select
import socket
import time

from lambdawrap.shared.log import get_logger

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

# Below the C library's mmap threshold (128 KiB): a bigger recv buffer is mapped and unmapped
# on every call, three system calls and page faults per read.
READ_SIZE = 65536
# How long a listener goes unwatched when no connection can be taken (no descriptor left).
ACCEPT_PAUSE_S = 0.1
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def receive(conn: socket.socket) -> bytes | None:
    """What a readable non-blocking socket holds: b"" when the peer has closed or the connection
    failed, None when nothing is waiting after all (a wake-up for another reader's data)."""
    try:
        return conn.recv(READ_SIZE)
    except BlockingIOError:
        return None
    except OSError:
        return b""


class EventLoop:
    def __init__(self, on_error: Callable[[str], None] | None = None) -> None:
        self._epoll = select.epoll()
        self._readers: dict = {}  # fd -> (socket, callback)
        self._on_error = on_error or (lambda what: None)
        self._logged: set = set()
        self._pending: collections.deque = collections.deque()
        self._timers: list = []  # heap of (monotonic time, sequence, callback)
        self._sequence = 0
        self._interrupt: BaseException | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._watch(self._wake_r, self._drain_wakeups)

    def add_reader(self, sock: socket.socket, callback: Callable[[socket.socket], Any]) -> None:
        """Call `callback(sock)` whenever `sock` is readable (or closed). A socket already
        watched raises KeyError, a closed one ValueError (as selectors does)."""
        self._watch(sock, callback)

    def _watch(self, sock: socket.socket, callback: Callable[[socket.socket], Any]) -> None:
        fd = sock.fileno()
        if fd < 0:
            if self._closed_but_watched(sock) >= 0:
                raise KeyError(f"{sock!r} is already registered")
            raise ValueError(f"invalid file descriptor {fd}")
        if fd in self._readers:
            raise KeyError(f"{sock!r} (fd {fd}) is already registered")
        self._epoll.register(fd, select.EPOLLIN)
        self._readers[fd] = (sock, callback)

    def remove_reader(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd < 0:
            fd = self._closed_but_watched(sock)
        if self._readers.pop(fd, None) is None:
            return
        try:
            self._epoll.unregister(fd)
        except (ValueError, OSError):
            pass

    def _closed_but_watched(self, sock: socket.socket) -> int:
        """The number a socket closed before its removal was watched under (its fileno() is now
        -1, and the kernel has dropped it already), found by identity; -1 if none."""
        return next((fd for fd, (watched, _) in self._readers.items() if watched is sock), -1)

    def call_soon_threadsafe(self, callback: Callable[[], Any] | None = None) -> None:
        """From another thread: run `callback` on the loop's thread (or, with none, only make
        the loop look at its checks again)."""
        if callback is not None:
            self._pending.append(callback)
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the loop is awake already

    def interrupt(self, exc: BaseException | None) -> None:
        """From a signal handler on the loop's thread: each wait not yet over raises `exc`, now
        and until interrupt(None). A wait whose check is met returns as usual, so what it
        waited for (an event read whole) is not lost."""
        self._interrupt = exc
        self.call_soon_threadsafe()

    def accept(self, listener: socket.socket, callback: Callable[[socket.socket], Any]) -> socket.socket | None:
        """From the loop's thread: a connection waiting on `listener` (watched with `callback`),
        or None. Where none can be taken now (no descriptor left: Managed Instances' workers
        each hold one), the listener goes unwatched for ACCEPT_PAUSE_S: the wait is
        level-triggered, and the connection still waiting would wake the loop at once, for
        ever, a core spinning on the CPU the companion shares with the function."""
        try:
            return listener.accept()[0]
        except OSError as exc:
            if exc.errno in _OUT_OF_DESCRIPTORS and listener.fileno() >= 0:
                self.remove_reader(listener)
                self.call_at(time.monotonic() + ACCEPT_PAUSE_S, lambda: listener.fileno() >= 0 and self.add_reader(listener, callback))
            return None

    def call_at(self, when: float, callback: Callable[[], Any]) -> None:
        """From the loop's thread: run `callback` once the monotonic clock reaches `when`
        (while the loop runs)."""
        self._sequence += 1
        heapq.heappush(self._timers, (when, self._sequence, callback))

    def run_until(self, check: Callable[[], bool | float | None], deadline: float | None = None) -> bool:
        """Serve the sockets until `check()` is True (then True) or `deadline` (monotonic)
        passes (then False). Short of True, `check()` may return the monotonic time by which it
        wants to be asked again (a timer of its own), or None: when something happens."""
        while True:
            verdict = check()
            if verdict is True:
                return True
            if self._interrupt is not None:
                raise self._interrupt
            now = time.monotonic()
            wake_at = math.inf if deadline is None else deadline
            if deadline is not None and now >= deadline:
                return False
            if isinstance(verdict, float):
                wake_at = min(wake_at, verdict)
            if self._timers:
                wake_at = min(wake_at, self._timers[0][0])
            self.run_once(None if wake_at == math.inf else max(0.0, wake_at - now))

    def run_forever(self, stopped: Callable[[], bool], poll_s: float = 0.5) -> None:
        """Serve until `stopped()` (asked at least every `poll_s`)."""
        while not stopped():
            self.run_once(poll_s)

    def drain(self, deadline: float) -> None:
        """Serve what is already waiting, without waiting for more, until `deadline` at most."""
        while self.run_once(0.0) and time.monotonic() < deadline:
            pass

    def run_once(self, timeout: float | None) -> int:
        """One round: wait up to `timeout` for a socket, serve what is ready; how many were."""
        try:
            # epoll waits forever on any negative timeout; a timeout already past waits not at all.
            events = self._epoll.poll(-1 if timeout is None else max(0.0, timeout))
        except (OSError, ValueError):  # a socket closed under us: its owner unregisters it
            events = []
        readers = self._readers
        # Taken before any callback runs: one may remove another's socket in the same round.
        ready = [readers[fd] for fd, _ in events if fd in readers]
        for sock, callback in ready:
            self._guarded(callback, sock)
        handled = len(ready)
        while self._pending:
            self._guarded(self._pending.popleft())
            handled += 1
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            self._guarded(heapq.heappop(self._timers)[2])
            handled += 1
        return handled

    def _guarded(self, callback: Callable, *args: Any) -> None:
        try:
            callback(*args)
        except Exception:  # noqa: BLE001 - one source's bug must not stop the others
            what = getattr(callback, "__qualname__", repr(callback))
            self._on_error(what)
            if what not in self._logged:
                self._logged.add(what)
                get_logger().exception("lambdawrap: internal error in %s (logged once); the function is unaffected", what)

    def _drain_wakeups(self, sock: socket.socket) -> None:
        try:
            while sock.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        """Stop watching; the sockets registered by others stay theirs to close."""
        self._readers.clear()
        self._epoll.close()
        self._wake_r.close()
        self._wake_w.close()
