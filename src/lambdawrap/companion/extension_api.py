"""A small client of the Extensions and Telemetry APIs, cheap to import and to call."""

from __future__ import annotations

import json

from lambdawrap.companion.http_lite import HttpConnection
from lambdawrap.shared.settings import MANAGED_INSTANCES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Mapping

    from lambdawrap.companion.event_loop import EventLoop

CALL_TIMEOUT_S = 5.0
# Set by the bash launcher when it already registered (see layer/extensions/lambdawrap).
PRE_REGISTERED_ID = "LAMBDAWRAP_EXTENSION_ID"
PRE_REGISTERED_BODY = "LAMBDAWRAP_REGISTER_BODY"
INIT_FAILED_BY_LAUNCHER = "LAMBDAWRAP_INIT_ERROR"  # why the launcher failed the init (init/error)


class ExtensionApiError(Exception):
    """The platform answered an Extensions/Telemetry API call with an error."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class SubscriptionClosed(ExtensionApiError):
    """Telemetry subscriptions are closed: init ended before the companion subscribed, which
    (as every extension's /next ends a healthy init) means that it failed."""


class ExtensionClient:
    """Used from the companion's main thread only: one kept-alive connection serves all calls."""

    def __init__(self, runtime_api: str) -> None:
        host, _, port = runtime_api.rpartition(":")
        self._connection = HttpConnection(host or "127.0.0.1", int(port))
        self.identifier = ""
        self.info: dict = {}

    def _call(self, method: str, path: str, body: Any = None, headers: dict | None = None, timeout: float | None = CALL_TIMEOUT_S, loop: EventLoop | None = None) -> tuple:
        all_headers = dict(headers or {})
        if self.identifier:
            all_headers.setdefault("Lambda-Extension-Identifier", self.identifier)
        return self._connection.request(method, path, headers=all_headers, body=body, timeout=timeout, loop=loop)

    def adopt_registration(self, environ: dict) -> bool:
        """Take over a registration the launcher already made; True if there was one."""
        identifier = environ.pop(PRE_REGISTERED_ID, "")
        body = environ.pop(PRE_REGISTERED_BODY, "")
        if not identifier:
            return False
        self.identifier = identifier
        try:
            info = json.loads(body) if body else {}
        except ValueError:
            info = {}
        self.info = info if isinstance(info, dict) else {}
        return True

    def register(self, name: str, events: list) -> dict:
        status, headers, body = self._call("POST", "/2020-01-01/extension/register", {"events": events}, {"Lambda-Extension-Name": name, "Lambda-Extension-Accept-Feature": "accountId"})
        if status != 200:
            raise ExtensionApiError(f"register failed with {status}: {body}", status)
        self.identifier = headers.get("lambda-extension-identifier", "")
        self.info = body if isinstance(body, dict) else {}
        return self.info

    def next_event(self, loop: EventLoop | None = None) -> dict:
        """The next event; the only call without a timeout: it waits until the platform has
        one (with `loop`, serving the loop's other sockets meanwhile)."""
        status, _, body = self._call("GET", "/2020-01-01/extension/event/next", timeout=None, loop=loop)
        if status != 200 or not isinstance(body, dict):
            raise ExtensionApiError(f"event/next failed with {status}: {body}", status)
        return body

    def subscribe_telemetry(self, port: int, types: list, timeout_ms: int = 25, managed_instances: bool = False) -> None:
        body = {
            # Managed Instances accept only their own schema (per-request start and report,
            # no runtimeDone); elsewhere the one every Lambda region has served longest.
            "schemaVersion": "2025-01-29" if managed_instances else "2022-12-13",
            "types": types,
            "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": timeout_ms},
            "destination": {"protocol": "HTTP", "URI": f"http://sandbox.localdomain:{port}/"},
        }
        status, _, answer = self._call("PUT", "/2022-07-01/telemetry", body)
        if status >= 500:
            # The platform's own failure, maybe of a moment: asked once more before the
            # environment goes without telemetry (and so without export) for its life.
            status, _, answer = self._call("PUT", "/2022-07-01/telemetry", body)
        if status != 200:
            if status == 403:
                raise SubscriptionClosed(f"telemetry subscription refused with {status}: {answer}", status)
            raise ExtensionApiError(f"telemetry subscription failed with {status}: {answer}", status)


def registration_events(environ: Mapping[str, str]) -> list:
    """What the companion registers for: INVOKE and SHUTDOWN; SHUTDOWN only on Lambda Managed
    Instances, which refuse INVOKE (403) and run requests concurrently (layer/extensions/lambdawrap
    chooses the same)."""
    if environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == MANAGED_INSTANCES:
        return ["SHUTDOWN"]
    return ["INVOKE", "SHUTDOWN"]
