"""The HTTP listener that receives Telemetry API batches."""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

logger = logging.getLogger("lambdawrap.companion")


def listen_address() -> str:
    """Where the platform can reach us: `sandbox.localdomain` when it resolves, else loopback."""
    try:
        address = socket.gethostbyname("sandbox.localdomain")
    except OSError:
        return "127.0.0.1"
    return address


class TelemetryListener:
    """Receives batches (JSON arrays) and hands them to `on_batch`, one call per POST."""

    def __init__(self, on_batch: Callable[[list], None], host: str | None = None) -> None:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    batch = json.loads(self.rfile.read(length) or b"[]")
                    if not isinstance(batch, list):
                        raise ValueError("a telemetry batch must be a JSON array")
                    listener.on_batch(batch)
                    status = 200
                except ValueError as exc:
                    listener.malformed += 1
                    if listener.malformed == 1:
                        logger.warning("lambdawrap: malformed telemetry batch ignored: %s", exc)
                    status = 400
                except Exception:  # noqa: BLE001 - one bad batch must not stop the listener
                    logger.exception("lambdawrap: telemetry batch handling failed")
                    status = 500
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.on_batch = on_batch
        self.malformed = 0
        self._server = ThreadingHTTPServer((host or listen_address(), 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="lambdawrap-telemetry", daemon=True)

    @property
    def address(self) -> tuple:
        return self._server.server_address

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
