"""Lambda Managed Instances' log socket (spec §9): each runtime worker connects its stdout and
stderr to `_LAMBDA_TELEMETRY_LOG_FD_PROVIDER_SOCKET`, so that every worker's lines arrive whole,
on a stream of their own, however the workers interleave."""

from __future__ import annotations

import os
import socket
import threading

from lambdawrap.devtools.emulator.processes import LineSink, deliver_line

SOCKET_ENV = "_LAMBDA_TELEMETRY_LOG_FD_PROVIDER_SOCKET"


class WorkerLogSocket:
    """A Unix socket whose every connection is one worker's stream, delivered line by line."""

    def __init__(self, path: str, on_line: LineSink) -> None:
        self.path = path
        self._on_line = on_line
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(path)
        self._server.listen(64)
        threading.Thread(target=self._accept, name="worker-logs", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._read, args=(connection,), name="worker-log-stream", daemon=True).start()

    def _read(self, connection: socket.socket) -> None:
        pending = b""
        with connection:
            while True:
                try:
                    chunk = connection.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                for raw in lines:
                    deliver_line(self._on_line, "stdout", raw)
        if pending:
            deliver_line(self._on_line, "stdout", pending)

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
