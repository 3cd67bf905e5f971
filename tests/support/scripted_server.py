"""A loopback server that answers HTTP requests from a script, byte for byte."""

from __future__ import annotations

import socket
import struct
import threading

from support.local_servers import content_length, read_head


RESET = "reset"  # a reply that resets the connection instead of answering


class ScriptedServer:
    """A loopback server that answers each accepted connection with a script: a list of
    replies (bytes to send after reading one request; None = close without answering; RESET =
    reset the connection without answering; (bytes, RESET) = send part of an answer, then
    reset)."""

    def __init__(self, scripts: list) -> None:
        self._scripts = list(scripts)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        self.requests: list = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while self._scripts:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            script = self._scripts.pop(0)
            with conn:
                for reply in script:
                    request = self._read_request(conn)
                    if request is None:
                        break
                    self.requests.append(request)
                    if reply is None:
                        break
                    if isinstance(reply, tuple):  # (part of an answer, RESET)
                        conn.sendall(reply[0])
                        reply = reply[1]
                    if reply is RESET:
                        # Closed with a reset (RST), not an orderly close (FIN)
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        break
                    conn.sendall(reply)

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes | None:
        request = read_head(conn)
        if request is None:
            return None
        head, body = request
        length = content_length(head)
        while len(body) < length:
            body += conn.recv(65536)
        return head.split(b"\r\n")[0]

    def stop(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() the thread is in
        except OSError:
            pass
        self._listener.close()
        self._thread.join(10)
