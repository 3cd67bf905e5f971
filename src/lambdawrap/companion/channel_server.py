"""The companion's end of the local channel: a 0600 Unix stream socket under /tmp."""

from __future__ import annotations

import os
import selectors
import socket
import threading
from typing import Any, Callable

from lambdawrap.shared.framing import FrameReader, encode
from lambdawrap.shared.log import get_logger

Handler = Callable[[dict], Any]  # returns an answer for requests, None otherwise
Problem = Callable[[str, str], None]  # (reason, detail): counted as a drop, logged once


class SocketServer:
    """Accepts handler-side connections and decodes their records on one thread."""

    def __init__(self, path: str, on_record: Handler, on_problem: Problem) -> None:
        self.path = path
        self.on_record = on_record
        self.on_problem = on_problem
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        if os.path.exists(path):
            os.unlink(path)  # left by a previous environment that was killed
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket file is born 0600: no window with wider rights
        try:
            self._listener.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        self._listener.listen(64)
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="lambdawrap-socket", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, wait_s: float = 1.0) -> None:
        """Stop serving and remove the socket file; with `wait_s` 0, leave the (daemon) thread
        to the process's end instead of waiting for it."""
        self._stop.set()
        try:
            os.unlink(self.path)
        except OSError:
            pass
        if wait_s <= 0:
            return
        self._thread.join(timeout=wait_s)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()
        self._selector.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                if key.data is None:
                    self._accept()
                    continue
                try:
                    self._read(key.fileobj, key.data)
                except Exception:  # noqa: BLE001 - one connection's bug must not end the channel
                    get_logger().exception("lambdawrap: dropping a connection after an unexpected error")
                    self.on_problem("channel_error", "a connection failed")
                    try:
                        self._drop(key.fileobj)
                    except (KeyError, ValueError, OSError):
                        pass

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        conn.setblocking(False)
        self._selector.register(conn, selectors.EVENT_READ, FrameReader())

    def _drop(self, conn: socket.socket) -> None:
        self._selector.unregister(conn)
        conn.close()

    def _read(self, conn: socket.socket, reader: FrameReader) -> None:
        try:
            data = conn.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        try:
            records = reader.feed(data)
        except ValueError as exc:
            self.on_problem("malformed_record", f"a connection sent a malformed frame ({exc}); it is closed")
            self._drop(conn)
            return
        for record in records:
            if not isinstance(record, dict):
                self.on_problem("malformed_record", "a record that is not an object")
                continue
            try:
                answer = self.on_record(record)
            except Exception:  # noqa: BLE001 - one bad record must not stop the channel
                get_logger().exception("lambdawrap: handling a %s record failed", record.get("type"))
                self.on_problem("channel_error", "handling a record failed")
                continue
            if answer is not None:
                try:
                    conn.setblocking(True)
                    conn.settimeout(1.0)
                    conn.sendall(encode(answer))
                    conn.setblocking(False)
                except OSError:
                    self._drop(conn)
                    return
