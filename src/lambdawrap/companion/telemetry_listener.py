"""The HTTP listener that receives Telemetry API batches.

The socket is bound at once (the subscription needs its port during init); the HTTP server
around it, whose imports are slow, starts on a background thread. Batches that arrive in
between wait in the socket's backlog."""

from __future__ import annotations

import json
import threading

from lambdawrap.shared.log import get_logger
from lambdawrap.companion.prebound_http import PreboundHttpServer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable



def listen_address(hosts_file: str = "/etc/hosts") -> str:
    """`sandbox.localdomain` from /etc/hosts when the platform maps it, else loopback.
    (No DNS lookup: off the platform it would only fail, maybe slowly.)"""
    try:
        with open(hosts_file) as f:
            for line in f:
                fields = line.split("#", 1)[0].split()
                if len(fields) > 1 and ("sandbox.localdomain" in fields[1:] or "sandbox" in fields[1:]):
                    return fields[0]
    except OSError:
        pass
    return "127.0.0.1"


class TelemetryListener:
    """Receives batches (JSON arrays) and hands them to `on_batch`, one call per POST."""

    def __init__(self, on_batch: Callable[[list], None], on_problem: Callable[[str, str], None], host: str | None = None) -> None:
        self.on_batch = on_batch
        self.on_problem = on_problem
        self._http = PreboundHttpServer(host or listen_address())

    @property
    def address(self) -> tuple:
        return self._http.address

    def start(self) -> None:
        threading.Thread(target=self._http.serve_forever, args=(self._handler,), name="lambdawrap-telemetry", daemon=True).start()

    def stop(self) -> None:
        self._http.stop()

    def _handler(self) -> type:
        from http.server import BaseHTTPRequestHandler

        listener = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    if length < 0:
                        self.close_connection = True
                        raise ValueError("negative Content-Length")
                    try:
                        batch = json.loads(self.rfile.read(length) or b"[]")
                    except RecursionError:
                        raise ValueError("a telemetry batch nested too deeply") from None
                    if not isinstance(batch, list):
                        raise ValueError("a telemetry batch must be a JSON array")
                    listener.on_batch(batch)
                    status = 200
                except ValueError as exc:
                    listener.on_problem("malformed_telemetry", f"a telemetry batch was ignored: {exc}")
                    status = 400
                except Exception:  # noqa: BLE001 - one bad batch must not stop the listener
                    get_logger().exception("lambdawrap: telemetry batch handling failed")
                    status = 500
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        return Handler
