"""What calls to the Runtime, Extensions and Telemetry APIs do to the environment (spec §2–§4):
the state transitions behind each endpoint, and the API errors for calls out of turn."""

from __future__ import annotations

import time
import uuid

from lambdawrap.devtools.emulator.api_server import ApiError
from lambdawrap.devtools.emulator.platform_reports import claim_runtime_done, emit_runtime_done, response_status
from lambdawrap.devtools.emulator.sandbox_state import SandboxState
from lambdawrap.devtools.emulator.state import MAX_EXTENSIONS, MAX_PAYLOAD_BYTES, Extension, Invocation, Outcome, error_body, sanitize_error_type
from lambdawrap.devtools.emulator.telemetry import MANAGED_INSTANCES_SCHEMA_VERSIONS, SCHEMA_VERSIONS, Subscription


def record_response(state: SandboxState, inv: Invocation, outcome: Outcome) -> None:
    """Record what the runtime posted for `inv` (under `state.cv`): a second post is refused, and
    a response over the payload limit becomes the caller's error while the runtime gets 413."""
    if inv.response is not None:
        raise ApiError(403, "InvalidStateTransition", "State transition from ResponseSent to ResponseSent failed")
    inv.response_at = time.monotonic()
    size = len(outcome.body) if outcome.size is None else outcome.size
    if size > MAX_PAYLOAD_BYTES:
        inv.response = Outcome(
            error_body("Function.ResponseSizeTooLarge", f"Response payload size ({size} bytes) exceeded maximum allowed payload size ({MAX_PAYLOAD_BYTES} bytes)."),
            function_error=True,
            error_type="Function.ResponseSizeTooLarge",
        )
        state.cv.notify_all()
        raise ApiError(413, "RequestEntityTooLarge", f"Exceeded maximum allowed payload size ({MAX_PAYLOAD_BYTES} bytes).")
    inv.response = outcome
    state.cv.notify_all()


class ApiCalls:
    """The environment's side of every API call; `/next` calls block until there is an event."""

    def __init__(self, state: SandboxState) -> None:
        self._state = state

    def runtime_next(self, connected_at: float = float("inf")) -> Invocation:
        """Runtime API invocation/next: marks init or the previous invocation done, then blocks
        until the next invocation is dispatched (a reset ends the wait with an error).

        A /next on a connection made before the current runtime process started is a dead
        runtime's, sent before a reset killed it and read after: it must neither end anything
        nor take the new runtime's invocation."""
        state = self._state
        with state.cv:  # held by init until the runtime it started is recorded
            runtime, current = state.runtime, state.current
            ending_init = runtime is not None and not state.runtime_ready and not state.initialized
        if runtime is not None and (ending_init or (current is not None and current.response is not None and current.runtime_done_at is None)):
            # Lines the function printed before its response come before runtimeDone, as on
            # the platform, and those printed as its module loaded before initRuntimeDone (a
            # subscriber tells the init's lines from the first invocation's by that order):
            # let the pipe readers catch up first.
            runtime.drain_output()
        with state.cv:
            gen = state.runtime_gen
            if state.runtime_replaced(gen, connected_at):
                raise ApiError(500, "Runtime.Reset", "the execution environment was reset")
            inv = state.current
            if not state.runtime_ready and state.runtime is not None and not state.initialized:
                state.runtime_ready = True
                state.registration_open = False
                state.cv.notify_all()
            elif inv is not None and inv.response is not None and claim_runtime_done(inv):
                inv.runtime_done_at = time.monotonic()
                emit_runtime_done(state, inv, *response_status(inv))
                state.cv.notify_all()
            elif inv is not None and inv.response is None and state.pending_runtime is None:
                raise ApiError(403, "InvalidStateTransition", "State transition from Running to Ready failed: no response was sent")
            while state.pending_runtime is None:
                state.cv.wait()
                if state.runtime_replaced(gen, connected_at):
                    raise ApiError(500, "Runtime.Reset", "the execution environment was reset")
            inv, state.pending_runtime = state.pending_runtime, None
            return inv

    def runtime_respond(self, request_id: str, outcome: Outcome) -> None:
        """Runtime API invocation/{id}/response or /error: the invocation's outcome."""
        state = self._state
        with state.cv:
            inv = state.current
            if inv is None or inv.request_id != request_id:
                raise ApiError(400, "InvalidRequestID", f"Invalid request ID: {request_id}")
            record_response(state, inv, outcome)

    def runtime_init_error(self, error_type: str | None, body: bytes) -> None:
        """Runtime API init/error: the runtime's init failed; the body is what the caller gets."""
        state = self._state
        with state.cv:
            if state.initialized or state.runtime_ready or state.runtime is None:
                raise ApiError(403, "InvalidStateTransition", "init/error is only valid during init")
            state.init_error = (sanitize_error_type(error_type), body)

    def extension_register(self, name: str, events: list, account_id_feature: bool) -> tuple[str, dict]:
        """Extensions API register: returns the new identifier and the function's details."""
        state = self._state
        if state.config.managed_instances and "INVOKE" in events:
            # Managed Instances send no INVOKE events: extensions may subscribe to SHUTDOWN only.
            raise ApiError(403, "Extension.InvalidEventType", "INVOKE: ErrorInvalidEventType")
        with state.cv:
            if not state.registration_open:
                raise ApiError(403, "Extension.RegistrationClosed", "Extension registration closed already")
            ext = next((e for e in state.launched if e.name == name), None)
            if ext is None:
                # A name matching no launched file is an internal extension (spec §3).
                if any(e.name == name for e in state.extensions.values()):
                    raise ApiError(403, "Extension.InvalidExtensionState", f"extension {name} is already registered")
                if "SHUTDOWN" in events:
                    raise ApiError(403, "Extension.InvalidEventType", "internal extensions cannot subscribe to SHUTDOWN")
                ext = Extension(name=name, external=False)
            elif ext.id is not None:
                raise ApiError(403, "Extension.InvalidExtensionState", f"extension {name} is already registered")
            if len(state.extensions) >= MAX_EXTENSIONS:
                raise ApiError(403, "Extension.TooManyExtensions", f"at most {MAX_EXTENSIONS} extensions can register")
            ext.id = str(uuid.uuid4())
            ext.events = frozenset(events)
            ext.state = "Registered"
            state.extensions[ext.id] = ext
            state.cv.notify_all()
            body = {"functionName": state.config.function_name, "functionVersion": state.config.function_version, "handler": state.config.handler}
            if account_id_feature:
                body["accountId"] = state.config.account_id
            return ext.id, body

    def extension(self, identifier: str | None) -> Extension:
        """The registered extension behind an identifier header, or the API's 403."""
        if not identifier:
            raise ApiError(403, "Extension.MissingExtensionIdentifier", "Missing Lambda-Extension-Identifier header")
        try:
            uuid.UUID(identifier)
        except ValueError:
            raise ApiError(403, "Extension.InvalidExtensionIdentifier", "Invalid Lambda-Extension-Identifier") from None
        with self._state.cv:
            ext = self._state.extensions.get(identifier)
        if ext is None:
            raise ApiError(403, "Extension.UnknownExtensionIdentifier", "Unknown extension " + identifier)
        return ext

    def extension_next(self, identifier: str | None) -> dict:
        """Extensions API event/next: the extension is ready; blocks until its next event
        (a reset ends the wait with an error)."""
        state = self._state
        ext = self.extension(identifier)
        with state.cv:
            gen = state.env_gen
            if ext.state == "ShutdownSent":
                raise ApiError(403, "Extension.InvalidExtensionState", "no events after SHUTDOWN")
            ext.called_next = True
            ext.state = "Ready"
            inv = state.current
            if inv is not None and ext.id in inv.ext_pending and ext.last_invoke_id == inv.request_id:
                inv.ext_pending.discard(ext.id)
            state.cv.notify_all()
            while not ext.queue:
                if state.env_gen != gen:
                    raise ApiError(500, "Extension.Reset", "the execution environment was reset")
                state.cv.wait()
            event = ext.queue.popleft()
            if event["eventType"] == "INVOKE":
                ext.last_invoke_id = event["requestId"]
                ext.state = "Running"
            else:
                ext.state = "ShutdownSent"
            return event

    def extension_error(self, identifier: str | None, kind: str, error_type: str | None) -> None:
        """init/error (kind 'Init') or exit/error (kind 'Exit') from an extension."""
        ext = self.extension(identifier)
        if not error_type:
            raise ApiError(403, "Extension.MissingHeader", "Missing Lambda-Extension-Function-Error-Type header")
        with self._state.cv:
            if ext.fatal_reported:
                raise ApiError(403, "Extension.InvalidExtensionState", "an error was already reported")
            if kind == "Init" and ext.called_next:
                raise ApiError(403, "Extension.InvalidExtensionState", "init/error is only valid before the first /next")
            ext.fatal_reported = True
            ext.error_type = error_type
            self._state.fatal = f"Extension.{kind}Error"
            self._state.cv.notify_all()

    def telemetry_subscribe(self, identifier: str | None, body: object) -> None:
        """Telemetry API subscribe, open during init only."""
        state = self._state
        ext = self.extension(identifier)
        with state.cv:
            if not state.subscriptions_open:
                raise ApiError(403, "Telemetry.SubscriptionClosed", "subscriptions are closed after init")
        subscription = Subscription.parse(body, MANAGED_INSTANCES_SCHEMA_VERSIONS if state.config.managed_instances else SCHEMA_VERSIONS)
        state.bus.subscribe(ext.name, subscription)
        state.bus.platform("telemetrySubscription", {"name": ext.name, "state": "Subscribed", "types": list(subscription.types)})
