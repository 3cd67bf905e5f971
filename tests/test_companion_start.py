"""The companion's start against a scripted Extensions API on loopback (the real process, `python
-m lambdawrap.companion`): what it does when the platform refuses part of its start."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import wait_for
from lambdawrap.handler.channel import Channel
from support.local_servers import closed_port

SHUTDOWN = {"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": 0}


class ScriptedExtensionsApi:
    """Registers the extension; answers each telemetry subscription with the next status of
    `subscriptions` (then 200); holds each /next until an event is given (`send`)."""

    def __init__(self, subscriptions: list) -> None:
        self.subscriptions = list(subscriptions)
        self.answered: list = []
        self.next_calls = 0
        self.events: queue.Queue = queue.Queue()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, body: object, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - register
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer(200, {"functionName": "orders", "functionVersion": "$LATEST", "handler": "app.handler"}, {"Lambda-Extension-Identifier": "6e7f0a4c-0000-4000-8000-000000000001"})

            def do_PUT(self) -> None:  # noqa: N802 - the telemetry subscription
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = api.subscriptions.pop(0) if api.subscriptions else 200
                api.answered.append(status)
                self._answer(status, "OK" if status == 200 else {"errorType": "Internal", "errorMessage": "try later"})

            def do_GET(self) -> None:  # noqa: N802 - /next
                api.next_calls += 1
                self._answer(200, api.events.get(timeout=60))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def started(tmp_path):
    made = []

    def start(subscriptions: list) -> tuple:
        api = ScriptedExtensionsApi(subscriptions)
        socket_path = str(tmp_path / "lw.sock")
        env = dict(os.environ, AWS_LAMBDA_RUNTIME_API=api.address, LAMBDAWRAP_SOCKET=socket_path, LAMBDAWRAP_SECRETS_PORT=str(closed_port()), AWS_LAMBDA_FUNCTION_NAME="orders", AWS_REGION="eu-west-1", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
        process = subprocess.Popen([sys.executable, "-m", "lambdawrap.companion", "lambdawrap"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        made.append((api, process))
        return api, process, socket_path

    yield start
    for api, process in made:
        api.events.put(SHUTDOWN)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        api.close()


def test_a_telemetry_subscription_the_platform_fails_twice_leaves_nothing_listening_for_the_function(started):
    # GIVEN a platform that answers the telemetry subscription 500, twice
    api, process, socket_path = started([500, 500])
    wait_for(lambda: api.next_calls >= 1, timeout=60, what="the companion to wait for the next event")
    # THEN it asked twice, then went idle with nothing listening on the channel (before: the
    # channel stayed open, took the function's records and did nothing with them: neither
    # exported nor counted) ...
    assert api.answered == [500, 500]
    # ... so the function's records, its invocations' too, are counted as dropped on its side,
    # for the next environment to report (the channel's file refuses: the companion is gone)
    channel = Channel(socket_path)
    assert channel.send({"version": 2, "type": "invocation"}) is False and channel.dropped == 1
    # ... and it still ends at SHUTDOWN
    api.events.put(SHUTDOWN)
    assert process.wait(30) == 0, process.stdout.read()


def test_a_telemetry_subscription_the_platform_fails_once_is_asked_again(started):
    # GIVEN a platform that answers the telemetry subscription 500 once (a moment's failure)
    api, process, socket_path = started([500])
    wait_for(lambda: api.next_calls >= 1, timeout=60, what="the companion to wait for the next event")
    # THEN it asked again and runs (before: one 500 turned telemetry off for the environment)
    assert api.answered == [500, 200]
    assert Channel(socket_path).send({"version": 2, "type": "invocation"}) is True
