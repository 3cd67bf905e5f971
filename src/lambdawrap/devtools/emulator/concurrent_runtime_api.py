"""The Runtime API on Lambda Managed Instances (spec §9): every `/next` parks a worker until an
invoke picks it, and responses are routed by the request id in their path alone."""

from __future__ import annotations

from lambdawrap.devtools.emulator.api_calls import record_response
from lambdawrap.devtools.emulator.api_server import ApiError
from lambdawrap.devtools.emulator.sandbox_state import SandboxState
from lambdawrap.devtools.emulator.state import Invocation, Outcome


class ConcurrentRuntimeCalls:
    """`invocation/next`, `/response` and `/error` for N workers at once."""

    def __init__(self, state: SandboxState) -> None:
        self._state = state

    def runtime_next(self, connected_at: float = float("inf")) -> Invocation:
        """A worker is idle: the first one ends init; blocks until an invoke takes this worker
        (a reset ends the wait with an error, as it does for a worker of a runtime started
        before the current one: see ApiCalls.runtime_next)."""
        state = self._state
        with state.cv:
            gen = state.runtime_gen
            if state.runtime_replaced(gen, connected_at):
                raise ApiError(500, "Runtime.Reset", "the execution environment was reset")
            if not state.runtime_ready and state.runtime is not None and not state.initialized:
                # Init is done once the extensions are ready and at least one worker asks.
                state.runtime_ready = True
                state.registration_open = False
            slot = state.pool.park()
            if slot is None:
                raise ApiError(400, "Runtime.TooManyIdleRuntimes", "too many idle runtime workers")
            state.cv.notify_all()
            while slot.invocation is None:
                if state.runtime_replaced(gen, connected_at):
                    state.pool.leave(slot)
                    raise ApiError(500, "Runtime.Reset", "the execution environment was reset")
                state.cv.wait()
            return slot.invocation

    def runtime_respond(self, request_id: str, outcome: Outcome) -> None:
        """A worker's response or error, for whichever invocation its path names."""
        state = self._state
        with state.cv:
            inv = state.pool.in_flight.get(request_id)
            if inv is None:
                if state.pool.consume_timed_out(request_id):
                    raise ApiError(410, "InvokeTimeout", "Invoke timeout")
                raise ApiError(400, "InvalidRequestID", f"Invalid request ID: {request_id}")
            record_response(state, inv, outcome)
