"""Lambda Managed Instances' log socket (spec §9): each runtime worker connects its stdout and
stderr to `_LAMBDA_TELEMETRY_LOG_FD_PROVIDER_SOCKET`, so that every worker's lines arrive whole,
on a stream of their own, however the workers interleave."""

from __future__ import annotations

import os
import select
import socket
import threading
import time

from lambdawrap.devtools.emulator.processes import DRAIN_TIMEOUT_S, LineSink, busy_chunks, deliver_line, wait_drained

SOCKET_ENV = "_LAMBDA_TELEMETRY_LOG_FD_PROVIDER_SOCKET"


class WorkerLogSocket:
    """A Unix socket whose every connection is one worker's stream, delivered line by line."""

    def __init__(self, path: str, on_line: LineSink) -> None:
        self.path = path
        self._on_line = on_line
        # For drain(): each open stream's reader, and whether it waits with every line handed on.
        self._io_lock = threading.Lock()
        self._waiting: dict = {}
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(path)
        self._server.listen(64)
        threading.Thread(target=self._accept, name="worker-logs", daemon=True).start()

    def _accept(self) -> None:
        # A worker may connect only when it first writes: busy, as the readers, from the moment
        # a connection waits until its reader is counted (drain).
        ready = select.poll()
        ready.register(self._server.fileno(), select.POLLIN)
        while True:
            self._mark(self._server, True)
            try:
                ready.poll()
            except OSError:
                pass
            self._mark(self._server, False)
            try:
                connection, _ = self._server.accept()
            except OSError:
                self._mark(self._server, True)
                return  # closed
            self._mark(connection, False)
            threading.Thread(target=self._read, args=(connection,), name="worker-log-stream", daemon=True).start()

    def _read(self, connection: socket.socket) -> None:
        # As processes.ManagedProcess._pump: busy before it takes anything from the socket, so
        # that what a worker wrote is either still there or with a busy reader (drain).
        pending = b""
        with connection:
            for chunk in busy_chunks(connection.fileno(), lambda: connection.recv(65536), lambda idle: self._mark(connection, idle)):
                *lines, pending = (pending + chunk).split(b"\n")
                for raw in lines:
                    deliver_line(self._on_line, "stdout", raw)
            if pending:
                deliver_line(self._on_line, "stdout", pending)
            with self._io_lock:
                del self._waiting[connection]

    def drain(self, timeout: float = DRAIN_TIMEOUT_S) -> bool:
        """Wait until every line the workers have written so far has been handed on: the
        platform's report goes out with the response, and must not overtake the lines printed
        before it (the runtime's error line names what the caller got)."""

        def drained() -> bool:
            with self._io_lock:
                streams = list(self._waiting.items())
            poller = select.poll()
            for connection, _ in streams:
                try:
                    poller.register(connection.fileno(), select.POLLIN)
                except (OSError, ValueError):
                    pass  # closed meanwhile: its reader is done
            readable = [fd for fd, mask in poller.poll(0) if mask & (select.POLLIN | select.POLLHUP)]
            return all(waiting for _, waiting in streams) and not readable

        return wait_drained(drained, time.monotonic() + timeout)

    def _mark(self, source: object, idle: bool) -> None:
        with self._io_lock:
            self._waiting[source] = idle

    def close(self) -> None:
        try:
            self._server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._server.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
