"""A real moto server (moto[server]) on loopback, with its request recorder on: local runs
use it for declared secrets, and tests assert on what it was asked."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from lambdawrap.devtools.local.ports import free_port


class MotoServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._recording = Path(tempfile.mkdtemp(prefix="moto")) / "recording.jsonl"
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "MotoServer":
        try:
            import moto.server  # noqa: F401 - only to give a clear error when it is missing
        except ImportError:
            raise RuntimeError("moto[server] is not installed: pip install 'lambdawrap[dev]'") from None
        env = dict(os.environ, MOTO_ENABLE_RECORDING="True", MOTO_RECORDER_FILEPATH=str(self._recording))
        # The server logs a line per request to stderr: to a file, never to a pipe nobody reads
        # (once the pipe's buffer is full, ~600 requests, the server blocks on its next line).
        with open(self._recording.with_name("server.log"), "wb") as log:
            self._proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)], env=env, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).read()
                return self
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"moto server did not start (its log: {self._recording.with_name('server.log')})")
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def client(self, service: str):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")

    def reset_recording(self) -> None:
        """Forget the requests made so far (e.g. the test's own setup)."""
        urllib.request.urlopen(urllib.request.Request(self.endpoint + "/moto-api/recorder/reset-recording", method="POST"), timeout=5).read()

    def requests(self) -> list:
        """Every AWS request moto served: target action, user agent, X-Ray header and decoded body."""
        if not self._recording.exists():
            return []
        out = []
        for line in self._recording.read_text().splitlines():
            entry = json.loads(line)
            headers = {k.lower(): v for k, v in entry["headers"].items()}
            body = entry.get("body") or ""
            if entry.get("body_encoded"):
                body = base64.b64decode(body).decode("utf-8", "replace")
            if not headers.get("x-amz-target"):
                continue  # not an AWS API call (e.g. the readiness probe)
            out.append({"target": headers.get("x-amz-target", ""), "user_agent": headers.get("user-agent", ""), "xray": headers.get("x-amzn-trace-id"), "body": body})
        return out
