"""A scripted Lambda Extensions API on loopback, for the launcher and the companion's start."""

from __future__ import annotations

import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ExtensionsApi:
    """Registers extensions (`registered`: (name, body) each); answers each telemetry
    subscription with the next status of `subscriptions` (then 200; `answered` lists them); and
    /next with the next of `events` (put there by the test; an int: that status, no event) where
    `hold_next`, else with 500: nothing more will come, the extension may go."""

    def __init__(self, subscriptions: list = (), hold_next: bool = False) -> None:
        self.registered: list = []
        self.subscriptions = list(subscriptions)
        self.answered: list = []
        self.next_calls = 0
        self.next_called = threading.Event()
        self.events: queue.Queue = queue.Queue()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(self, status: int, body: object = None, headers: dict | None = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - register
                api.registered.append((self.headers.get("Lambda-Extension-Name"), json.loads(self._body() or b"{}")))
                self._answer(200, {"functionName": "orders", "functionVersion": "$LATEST", "handler": "app.handler"}, {"Lambda-Extension-Identifier": "6e7f0a4c-0000-4000-8000-000000000001"})

            def do_PUT(self) -> None:  # noqa: N802 - the telemetry subscription
                self._body()
                status = api.subscriptions.pop(0) if api.subscriptions else 200
                api.answered.append(status)
                self._answer(status, "OK" if status == 200 else {"errorType": "Internal", "errorMessage": "try later"})

            def do_GET(self) -> None:  # noqa: N802 - /next
                api.next_calls += 1
                api.next_called.set()
                if api.hold_next:
                    event = api.events.get(timeout=60)
                    # A status queued in place of an event: the platform failing /next with it.
                    self._answer(event) if isinstance(event, int) else self._answer(200, event)
                else:
                    self._answer(500)

        self.hold_next = hold_next
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
