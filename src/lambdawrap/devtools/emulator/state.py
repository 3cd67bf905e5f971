"""Plain records of the emulator's state: extensions, invocations, outcomes, results."""

from __future__ import annotations

import collections
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from lambdawrap.devtools.emulator.processes import ManagedProcess

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024 + 100  # 6 MiB + 100 B, as the platform counts it
MAX_EXTENSIONS = 10
_ERROR_TYPE = re.compile(r"(Runtime|Function)\.[A-Z][a-zA-Z]+")


def sanitize_error_type(value: str | None) -> str:
    """The platform keeps only `(Runtime|Function).Xxx` error types from the runtime."""
    if value and _ERROR_TYPE.fullmatch(value):
        return value
    if value and value.startswith("Function."):
        return "Function.Unknown"
    return "Runtime.Unknown"


@dataclass
class Extension:
    name: str
    external: bool
    path: str | None = None
    process: ManagedProcess | None = None
    id: str | None = None
    events: frozenset = frozenset()
    state: str = "Launched"
    error_type: str | None = None
    called_next: bool = False
    fatal_reported: bool = False
    queue: collections.deque = field(default_factory=collections.deque)
    last_invoke_id: str | None = None

    def record(self) -> dict:
        record = {"name": self.name, "state": self.state, "events": sorted(self.events)}
        if self.error_type:
            record["errorType"] = self.error_type
        return record


@dataclass
class Outcome:
    """What the runtime posted for an invocation (or what the platform decided instead)."""

    body: bytes
    content_type: str = "application/json"
    function_error: bool = False
    error_type: str | None = None
    size: int | None = None  # the body's bytes when there were too many to keep (body is then empty)


@dataclass
class Invocation:
    request_id: str
    payload: bytes
    deadline_ms: int
    deadline: float  # monotonic
    trace_header: str | None
    client_context: str | None
    cognito_identity: str | None = None
    tenant_id: str | None = None
    started: float = field(default_factory=time.monotonic)
    started_epoch: float = field(default_factory=time.time)
    response: Outcome | None = None
    response_at: float | None = None
    runtime_done_at: float | None = None
    # Set by whoever emits the invocation's one runtimeDone: the runtime's /next after its
    # response, or the end of a phase that failed (under the sandbox's lock).
    runtime_done_claimed: bool = False
    ext_pending: set = field(default_factory=set)
    init_duration_ms: float | None = None

    def tracing(self) -> dict | None:
        return {"type": "X-Amzn-Trace-Id", "value": self.trace_header} if self.trace_header else None


@dataclass
class InvokeResult:
    """What the caller of the invoke endpoint gets."""

    request_id: str
    status: int
    body: bytes
    headers: dict
    duration_ms: float

    @property
    def function_error(self) -> str | None:
        return self.headers.get("X-Amz-Function-Error")

    def json(self) -> Any:
        return json.loads(self.body)


def error_body(error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()
