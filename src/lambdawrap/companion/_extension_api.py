"""A small client of the Extensions and Telemetry APIs (stdlib only, so registration is fast)."""

from __future__ import annotations

import http.client
import json
from typing import Any

REGISTER_TIMEOUT_S = 5.0


class ExtensionApiError(Exception):
    """The platform answered an Extensions/Telemetry API call with an error."""


class ExtensionClient:
    def __init__(self, runtime_api: str) -> None:
        host, _, port = runtime_api.rpartition(":")
        self._host = host or "127.0.0.1"
        self._port = int(port)
        self.identifier = ""
        self.info: dict = {}

    def _call(self, method: str, path: str, body: Any = None, headers: dict | None = None, timeout: float | None = REGISTER_TIMEOUT_S) -> tuple[int, dict, Any]:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        try:
            all_headers = {"Content-Type": "application/json", **(headers or {})}
            if self.identifier:
                all_headers.setdefault("Lambda-Extension-Identifier", self.identifier)
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=all_headers)
            response = conn.getresponse()
            data = response.read()
            try:
                decoded = json.loads(data) if data else None
            except ValueError:
                decoded = data.decode("utf-8", "replace")
            return response.status, {k.lower(): v for k, v in response.getheaders()}, decoded
        finally:
            conn.close()

    def register(self, name: str, events: list) -> dict:
        status, headers, body = self._call("POST", "/2020-01-01/extension/register", {"events": events}, {"Lambda-Extension-Name": name, "Lambda-Extension-Accept-Feature": "accountId"})
        if status != 200:
            raise ExtensionApiError(f"register failed with {status}: {body}")
        self.identifier = headers.get("lambda-extension-identifier", "")
        self.info = body if isinstance(body, dict) else {}
        return self.info

    def next_event(self) -> dict:
        # The only call without a timeout: it blocks until the platform has an event.
        status, _, body = self._call("GET", "/2020-01-01/extension/event/next", timeout=None)
        if status != 200 or not isinstance(body, dict):
            raise ExtensionApiError(f"event/next failed with {status}: {body}")
        return body

    def subscribe_telemetry(self, port: int, types: list, timeout_ms: int = 25) -> None:
        body = {
            "schemaVersion": "2022-12-13",
            "types": types,
            "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": timeout_ms},
            "destination": {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{port}/"},
        }
        status, _, answer = self._call("PUT", "/2022-07-01/telemetry", body)
        if status != 200:
            raise ExtensionApiError(f"telemetry subscription failed with {status}: {answer}")

    def report_error(self, kind: str, error_type: str, message: str) -> None:
        """init/error or exit/error: tells the platform this extension cannot go on."""
        self._call("POST", f"/2020-01-01/extension/{kind}/error", {"errorMessage": message, "errorType": error_type}, {"Lambda-Extension-Function-Error-Type": error_type})
