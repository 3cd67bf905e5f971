"""A fake Bedrock Runtime on loopback for the parity test (moto does not implement `Converse`):
POST /model/{modelId}/converse answers as the real API does, a JSON body with the assistant's
message, `stopReason`, `usage` and `metrics`. A model id holding `missing` is answered 400
`ValidationException`, as Bedrock answers an unknown model. Requests are kept (`requests`)."""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USAGE = {"inputTokens": 12, "outputTokens": 7, "totalTokens": 25, "cacheReadInputTokens": 4, "cacheWriteInputTokens": 2}


class FakeBedrockRuntime:
    def __init__(self) -> None:
        self.requests: list = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                parts = self.path.split("?")[0].strip("/").split("/")
                model = urllib.parse.unquote(parts[1]) if len(parts) == 3 and parts[0] == "model" else ""
                server.requests.append({"path": self.path, "model": model, "body": body})
                if len(parts) != 3 or parts[2] != "converse":
                    self._send(404, {"message": f"no route for {self.path}"}, "UnknownOperationException")
                elif "missing" in model:
                    self._send(400, {"message": "The provided model identifier is invalid."}, "ValidationException")
                else:
                    self._send(200, {
                        "output": {"message": {"role": "assistant", "content": [{"text": "Hello from the fake model."}]}},
                        "stopReason": "end_turn",
                        "usage": USAGE,
                        "metrics": {"latencyMs": 42},
                    })

            def _send(self, status: int, answer: dict, error_type: str = "") -> None:
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("x-amzn-RequestId", f"fake-{len(server.requests)}")
                if error_type:
                    self.send_header("x-amzn-ErrorType", error_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-bedrock-runtime", daemon=True)

    def __enter__(self) -> "FakeBedrockRuntime":
        self._thread.start()  # bound already: ready before anyone is told the URL
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)
