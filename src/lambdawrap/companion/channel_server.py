"""The companion's end of the local channel: a 0600 Unix stream socket under /tmp."""

from __future__ import annotations

import os
import socket
import struct
import threading
from typing import Any, Callable

from lambdawrap.companion.event_loop import EventLoop, receive
from lambdawrap.shared import records
from lambdawrap.shared.framing import FrameReader, encode
from lambdawrap.shared.log import get_logger
from lambdawrap.shared.settings import MAX_SOCKET_PATH_BYTES

Handler = Callable[[dict], Any]  # returns an answer for requests, None otherwise
Problem = Callable[[str, str], None]  # (reason, detail): counted as a drop, logged once
# Connections not yet accepted that the kernel keeps (capped by net.core.somaxconn, 4096 on
# Lambda's kernels): on Managed Instances each of up to 1,600 worker processes connects at its
# first invocation, maybe all at once while this process waits for CPU. A connection past the
# backlog is refused (EAGAIN) and its record lost: at 64 a burst of first invocations lost some.
BACKLOG = 4096


class SocketServer:
    """Accepts handler-side connections and decodes their records, in the companion's event
    loop (`attach`), or on a thread of its own (`start`). A request (secrets) may wait long
    for its answer: it is answered from a thread of its own, never from the loop."""

    def __init__(self, path: str, on_record: Handler, on_problem: Problem) -> None:
        self.path = path
        self.on_record = on_record
        self.on_problem = on_problem
        self._loop: EventLoop | None = None
        self._own_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._connections: set = set()
        # The process that sent the last bytes: the function's, whose records frame each
        # invocation (a forked child's connection has its own pid).
        self.peer_pid: int | None = None
        if os.path.exists(path):
            os.unlink(path)  # left by a previous environment that was killed
        self._listener, self._identity = self._listen()

    def _listen(self) -> tuple:
        # Made listening under a name of its own, then renamed onto the channel's: a handler
        # connecting in between bind and listen would be refused, which says the companion is
        # gone (its records held back a second). A path too long for the staging name is bound
        # where it is.
        staging = f"{self.path}.{os.getpid()}"
        if len(os.fsencode(staging)) > MAX_SOCKET_PATH_BYTES:
            staging = self.path
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket file is born 0600: no window with wider rights
        try:
            if staging != self.path and os.path.lexists(staging):
                os.unlink(staging)  # left by a killed companion of the same pid
            listener.bind(staging)
            os.chmod(staging, 0o600)
            listener.listen(BACKLOG)
            if staging != self.path:
                os.replace(staging, self.path)
        except OSError:
            listener.close()
            if staging != self.path:
                try:
                    os.unlink(staging)
                except OSError:
                    pass
            raise
        finally:
            os.umask(old_umask)
        listener.setblocking(False)
        status = os.stat(self.path)
        return listener, (status.st_dev, status.st_ino)

    def attach(self, loop: EventLoop) -> None:
        """Serve from `loop` (connections waiting meanwhile sit in the backlog)."""
        self._loop = loop
        loop.add_reader(self._listener, self._accept)

    def rebind_if_removed(self) -> bool:
        """Listen again if the socket file is gone (or another took its name): a function that
        empties /tmp at its cold start (a common idiom: /tmp outlives environments) removes it,
        and its records could no longer reach us. One stat; True if it listened again."""
        try:
            status = os.stat(self.path)
            if (status.st_dev, status.st_ino) == self._identity:
                return False
        except FileNotFoundError:
            pass
        except OSError:
            return False
        try:
            # Another's file under that name is replaced by the rename (a folder there is not).
            listener, self._identity = self._listen()
        except OSError:
            return False  # the folder is gone too, or full: tried again at the next event
        old, self._listener = self._listener, listener
        if self._loop is not None:
            self._loop.remove_reader(old)
            self._loop.add_reader(listener, self._accept)
            # Connections made to the old one and not accepted yet (a process connected at its
            # invocation's start, before its handler emptied /tmp) are taken: closed with it,
            # they would be reset, and their records taken for the companion's death.
            while self._accept(old):
                pass
        old.close()
        get_logger().info("lambdawrap: the channel's socket %s was removed; listening again", self.path)
        return True

    def start(self) -> None:
        """Serve from a loop on a thread of its own (the companion attaches to its own loop)."""
        loop = EventLoop()
        self.attach(loop)
        self._own_thread = threading.Thread(target=loop.run_forever, args=(self._stop.is_set, 0.2), name="lambdawrap-socket", daemon=True)
        self._own_thread.start()

    def stop(self, wait_s: float = 1.0, keep_file: bool = False) -> None:
        """Stop serving and remove the socket file; with `wait_s` 0, leave the connections to
        the process's end instead of closing them. `keep_file`: the file stays, refusing
        connections: the function's side then knows the companion gone (a missing file it takes
        for one the companion makes again) and counts what it could not send."""
        self._stop.set()
        if not keep_file:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        if wait_s <= 0:
            return
        if self._own_thread is not None:
            self._own_thread.join(timeout=wait_s)
        if self._loop is not None:
            self._loop.remove_reader(self._listener)
        self._listener.close()
        for conn in list(self._connections):
            self._drop(conn)

    def _accept(self, listener: socket.socket) -> bool:
        """Take one connection waiting on `listener`; False if none was."""
        conn = self._loop.accept(listener, self._accept)
        if conn is None:
            return False
        pid = _peer_pid(conn)
        conn.setblocking(False)
        reader = FrameReader()
        self._connections.add(conn)
        self._loop.add_reader(conn, lambda ready: self._read_safely(ready, reader, pid))
        return True

    def _drop(self, conn: socket.socket) -> None:
        self._connections.discard(conn)
        if self._loop is not None:
            self._loop.remove_reader(conn)
        conn.close()

    def _read_safely(self, conn: socket.socket, reader: FrameReader, pid: int | None) -> None:
        self.peer_pid = pid
        try:
            self._read(conn, reader)
        except Exception:  # noqa: BLE001 - one connection's bug must not end the channel
            get_logger().exception("lambdawrap: dropping a connection after an unexpected error")
            self.on_problem("channel_error", "a connection failed")
            self._drop(conn)

    def _read(self, conn: socket.socket, reader: FrameReader) -> None:
        data = receive(conn)
        if data is None:
            return
        if not data:
            self._drop(conn)
            return
        try:
            decoded = reader.feed(data)
        except ValueError as exc:
            self.on_problem("malformed_record", f"a connection sent a malformed frame ({exc}); it is closed")
            self._drop(conn)
            return
        for record in decoded:
            if not isinstance(record, dict):
                self.on_problem("malformed_record", "a record that is not an object")
            elif isinstance(record.get("type"), str) and record["type"] in records.REQUESTS:  # a list is no key
                threading.Thread(target=self._answer, args=(conn, record), name="lambdawrap-request", daemon=True).start()
            else:
                self._handle(record)

    def _handle(self, record: dict) -> Any:
        try:
            return self.on_record(record)
        except Exception:  # noqa: BLE001 - one bad record must not stop the channel
            get_logger().exception("lambdawrap: handling a %s record failed", record.get("type"))
            self.on_problem("channel_error", "handling a record failed")
            return None

    def _answer(self, conn: socket.socket, request: dict) -> None:
        answer = self._handle(request)
        if answer is not None:
            self._loop.call_soon_threadsafe(lambda: self._send(conn, encode(answer)))

    def _send(self, conn: socket.socket, frame: bytes) -> None:
        if conn not in self._connections:
            return  # the function's end went away meanwhile
        try:
            conn.settimeout(1.0)
            conn.sendall(frame)
            conn.setblocking(False)
        except OSError:
            self._drop(conn)


def _peer_pid(conn: socket.socket) -> int | None:
    try:
        return struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0] or None
    except (AttributeError, OSError, struct.error):
        return None
