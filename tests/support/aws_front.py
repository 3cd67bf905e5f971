"""A loopback front to the moto server that answers AWS's way when it is busy: each JSON call's
target (`X-Amz-Target`) takes the next of its scripted turns ("throttle": a 400
ThrottlingException; a number: that many seconds' wait, then moto's answer), then moto answers
as it is. What each call was, and who made it, is kept."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

THROTTLED = b'{"__type":"ThrottlingException","message":"Rate exceeded"}'


class AwsFront:
    def __init__(self, moto_endpoint: str, script: dict) -> None:
        self.calls: list = []  # (target, user agent, what was done)
        self._script = {target: list(turns) for target, turns in script.items()}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        moto = urlsplit(moto_endpoint)
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = self.headers.get("X-Amz-Target", "")
                with front._lock:
                    turns = front._script.get(target) or []
                    turn = turns.pop(0) if turns else "pass"
                    front.calls.append((target, self.headers.get("User-Agent", ""), turn))
                if turn == "throttle":
                    self._send(400, THROTTLED, "application/x-amz-json-1.1")
                    return
                if isinstance(turn, (int, float)) and front._stop.wait(turn):
                    return
                conn = http.client.HTTPConnection(moto.hostname, moto.port, timeout=30)
                try:
                    conn.request("POST", self.path, body=body, headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                    answer = conn.getresponse()
                    self._send(answer.status, answer.read(), answer.getheader("Content-Type") or "application/x-amz-json-1.1")
                finally:
                    conn.close()

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "AwsFront":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def made(self, target: str) -> list:
        """(user agent, what was done) of each call to `target`, in order."""
        with self._lock:
            return [(agent, turn) for t, agent, turn in self.calls if t == target]

