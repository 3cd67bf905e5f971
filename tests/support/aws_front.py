"""A loopback front to the moto server that answers AWS's way where moto does not: each JSON
call's target (`X-Amz-Target`) takes the next of its scripted turns ("throttle": a 400
ThrottlingException; a number: that many seconds' wait, then moto's answer), then moto answers
as it is. With `sqs_message_limit`, an SQS SendMessage larger than that, counted as SQS counts
it (its body and its attributes' names, types and values; moto counts the body only), is
refused as SQS refuses it. What each call was, and who made it, is kept."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

THROTTLED = b'{"__type":"ThrottlingException","message":"Rate exceeded"}'
SEND_MESSAGE = "AmazonSQS.SendMessage"


def sqs_message_bytes(request_body: bytes) -> int:
    """A SendMessage's message size as SQS counts it."""
    request = json.loads(request_body)
    size = len(request.get("MessageBody", "").encode())
    for name, value in (request.get("MessageAttributes") or {}).items():
        size += len(name.encode()) + len(value.get("DataType", "").encode()) + len(value.get("StringValue", "").encode())
    return size


class AwsFront:
    def __init__(self, moto_endpoint: str, script: dict, sqs_message_limit: int = 0) -> None:
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
                    if turn == "pass" and target == SEND_MESSAGE and sqs_message_limit and sqs_message_bytes(body) > sqs_message_limit:
                        turn = "too long"
                    front.calls.append((target, self.headers.get("User-Agent", ""), turn))
                if turn == "throttle":
                    self._send(400, THROTTLED, "application/x-amz-json-1.1")
                    return
                if turn == "too long":
                    reason = f"One or more parameters are invalid. Reason: Message must be shorter than {sqs_message_limit} bytes."
                    self._send(400, json.dumps({"__type": "com.amazonaws.sqs#InvalidParameterValue", "message": reason}).encode(), "application/x-amz-json-1.0", {"x-amzn-query-error": "InvalidParameterValue;Sender"})
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

            def _send(self, status: int, body: bytes, content_type: str, headers: "dict | None" = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
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

