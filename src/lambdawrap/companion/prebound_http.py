"""An HTTP server whose port is bound at once and whose `http.server` machinery (~20 ms of
imports) is loaded and started later, off the cold-start path. Requests that arrive in
between wait in the socket's backlog."""

from __future__ import annotations

import socket
import sys

from lambdawrap.shared.log import Failures

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable


_FAILURES = Failures()
# Connections not yet accepted that the kernel keeps (capped by net.core.somaxconn, 4096 on
# Lambda's kernels), as the channel's: on Managed Instances each worker process may ask for its
# secrets while it loads, all at once. A handshake past the backlog is dropped, and its client
# tries again a second later, then three.
BACKLOG = 4096


class PreboundHttpServer:
    def __init__(self, host: str, port: int = 0) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError:
            self._socket.close()
            raise
        self._socket.listen(BACKLOG)
        self._server: Any = None

    @property
    def listening_socket(self) -> socket.socket:
        """The listening socket, for a selector to watch until the first client."""
        return self._socket

    @property
    def address(self) -> tuple:
        return self._socket.getsockname()

    def wait_for_client(self) -> bool:
        """Sleep until a client is waiting to be accepted; False if the server was stopped."""
        import select

        try:
            poller = select.poll()  # not select(): no limit on the descriptor's number
            poller.register(self._socket, select.POLLIN)
            events = poller.poll()
        except (OSError, ValueError):  # stopped (the socket closed) before waiting
            return False
        return self._socket.fileno() != -1 and not any(mask & select.POLLNVAL for _, mask in events)

    def serve_forever(self, make_handler: Callable[[], type]) -> None:
        """Build the server around the bound socket and serve (blocks; run it on a thread).
        `make_handler` returns the BaseHTTPRequestHandler subclass, built after the import."""
        from http.server import ThreadingHTTPServer

        try:
            address = self.address
        except OSError:  # stopped before it served: nothing to serve
            return
        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                if isinstance(sys.exc_info()[1], ConnectionError):
                    return  # the client hung up before its answer: nothing to say
                _FAILURES.record("serving a local HTTP request")

        server = Server(address, make_handler(), bind_and_activate=False)
        server.socket.close()
        server.socket = self._socket
        server.daemon_threads = True
        self._server = server
        server.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        self._socket.close()
