"""Invocations on Lambda Managed Instances (spec §9): many at once, each on an idle worker.

There is no invoke phase to wait for: no INVOKE to extensions, no runtimeDone, and the report
goes out with the response. A timeout fails that request only (its worker is not stopped); a
dead runtime, an extension that died or reported an error make the environment unhealthy, and
it is replaced. Init and resets still run one at a time, under the invoke lock.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Callable

from lambdawrap.devtools.emulator.init_phase import InitFailure, InitPhase
from lambdawrap.devtools.emulator.invoke_phase import caller_result, new_invocation, oversized_request
from lambdawrap.devtools.emulator.platform_reports import emit_concurrent_report, response_status
from lambdawrap.devtools.emulator.processes import live_children, still_forking
from lambdawrap.devtools.emulator.reset import reset_environment
from lambdawrap.devtools.emulator.sandbox_state import SandboxState
from lambdawrap.devtools.emulator.state import InvokeResult, error_body

logger = logging.getLogger(__name__)
# How often wait_idle looks again for workers that died (it is told of nothing else).
WORKER_DEATH_POLL_S = 0.1
# Where the kernel does not say what the runtime's main process waits on: once no more worker has
# come for this long, the fewer it has are all there will be (one died before it was seen).
FORKS_SETTLE_S = 2.0


class ConcurrentInvokePhase:
    """Runs invocations side by side, initializing the environment first when it is not."""

    def __init__(self, state: SandboxState, init: InitPhase, drain_worker_logs: Callable[[], bool] = lambda: True) -> None:
        self._state, self._init = state, init
        self._drain_worker_logs = drain_worker_logs
        # (runtime, the most of its workers seen alive at once, when that last grew)
        self._forks: tuple = (None, 0, 0.0)

    def invoke(self, payload: bytes, *, trace_header: str | None = None, client_context: str | None = None, tenant_id: str | None = None, request_id: str | None = None) -> InvokeResult:
        """Run one invocation on an idle worker; returns when the caller would have its answer."""
        state, started, request_id = self._state, time.monotonic(), request_id or str(uuid.uuid4())

        def result(status: int, body: bytes, **kwargs) -> InvokeResult:
            return caller_result(state.config.function_version, request_id, started, status, body, **kwargs)

        too_large = oversized_request(payload)
        if too_large is not None:
            return result(413, too_large, function_error=False)
        with state.invoke_lock:
            if state.initialized and state.runtime_dead():
                reset_environment(state, "failure")  # every worker is gone
            if not state.initialized:
                try:
                    self._init.run(request_id)
                except InitFailure as failure:
                    reset_environment(state, "failure")
                    return result(200, failure.body)
            env_gen = state.env_gen
        inv = new_invocation(state, request_id, payload, trace_header, client_context, tenant_id)
        with state.cv:
            if not state.pool.assign(inv):
                # Back-pressure: with no idle worker the invoke is refused, not queued (RIE's
                # Managed Instances mode answers this client error with 400).
                return result(400, error_body("Runtime.Unavailable", f"RequestId: {request_id} Error: no idle runtime worker"), function_error=False)
            start = {"requestId": request_id, "version": state.config.function_version, "functionArn": state.config.function_arn, "tracing": inv.tracing()}
            state.bus.platform("start", start)
            state.platform_line(f"START RequestId: {request_id} Version: {state.config.function_version}")
            state.cv.notify_all()
            state.wait(lambda: inv.response is not None or self._unhealthy(env_gen), inv.deadline)
            unhealthy = inv.response is None and self._unhealthy(env_gen)
            state.pool.finish(inv, timed_out=inv.response is None and not unhealthy)
        if inv.response is not None:
            outcome = inv.response
            self._drain_output()
            emit_concurrent_report(state, inv, *response_status(inv))
            return result(200, outcome.body, function_error=outcome.function_error, content_type=outcome.content_type)
        if not unhealthy:
            emit_concurrent_report(state, inv, "timeout", "Sandbox.Timedout")
            return result(200, error_body("Sandbox.Timedout", f"RequestId: {request_id} Error: Task timed out after {state.config.timeout_s:.2f} seconds"))
        error_type, message = self._failure(request_id)
        emit_concurrent_report(state, inv, "error", error_type)
        threading.Thread(target=self._replace_environment, args=(env_gen,), name="environment-replacer", daemon=True).start()
        return result(200, error_body(error_type, message))

    def _drain_output(self) -> None:
        # Lines the worker printed before its response (the runtime's error line, which names
        # the error the caller got) come before the report: let the readers catch up first.
        runtime = self._state.runtime
        if runtime is not None:
            runtime.drain_output()
        self._drain_worker_logs()

    def _unhealthy(self, env_gen: int) -> bool:
        """Whether the environment the invocation started in can no longer answer (under cv)."""
        state = self._state
        return state.env_gen != env_gen or state.runtime_dead() or state.fatal is not None or self._extension_died()

    def _extension_died(self) -> bool:
        return any(e.process is not None and e.process.exited() for e in self._state.launched)

    def _failure(self, request_id: str) -> tuple[str, str]:
        """The error type and message of an invocation the environment failed."""
        state = self._state
        runtime = state.runtime
        if state.fatal is not None:
            return state.fatal, f"RequestId: {request_id} Error: {state.fatal}"
        if runtime is not None and runtime.exited() and runtime.returncode != 0:
            return "Runtime.ExitError", f"RequestId: {request_id} Error: Runtime exited with error: {runtime.exit_description()}"
        if runtime is not None and runtime.exited():
            return "Runtime.ExitError", f"RequestId: {request_id} Error: Runtime exited without providing a reason"
        if self._extension_died():
            return "Extension.Crash", f"RequestId: {request_id} Error: an extension exited"
        return "Runtime.ExitError", f"RequestId: {request_id} Error: the execution environment was reset"

    def _replace_environment(self, env_gen: int) -> None:
        """Reset an unhealthy environment (once, whichever invocation noticed first); the next
        invoke initializes a new one."""
        state = self._state
        try:
            with state.invoke_lock:
                if state.env_gen == env_gen and (state.initialized or state.runtime is not None or state.launched):
                    reset_environment(state, "failure")
        except Exception:  # noqa: BLE001 - a background reset must not die silently
            logger.exception("emulator: replacing the environment failed")

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no invocation is in flight and, once initialized, every worker still alive
        is idle."""
        state = self._state
        deadline = time.monotonic() + timeout
        if not state.invoke_lock.acquire(timeout=timeout):
            return False
        state.invoke_lock.release()
        with state.cv:
            while not (not state.pool.in_flight and (not state.initialized or len(state.pool.idle) >= self._live_workers())):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                # A worker's death notifies nobody: looked for again at this pace.
                state.cv.wait(min(left, WORKER_DEATH_POLL_S))
            return True

    def _live_workers(self) -> int:
        """The workers that can still be idle: awslambdaric never replaces one that died (spec
        §9), and the environment serves on with the others."""
        state = self._state
        workers = state.config.max_concurrency or 1
        runtime = state.runtime
        if runtime is None or runtime.exited():
            return workers
        live, now = live_children(runtime.pid), time.monotonic()
        seen, most, grown_at = self._forks
        if seen is not runtime:
            most, grown_at = 0, now
        if live > most:
            most, grown_at = live, now
        self._forks = (runtime, most, grown_at)
        if most < workers:
            # Init ends at the first worker's /next, which a busy machine can let come before
            # the runtime has forked the others: those are still to come, not dead, until the
            # runtime waits on its workers (it has forked them all: one died before it was
            # seen), or where that cannot be read, until none more has come for a while.
            forking = still_forking(runtime.pid)
            if forking or (forking is None and now - grown_at < FORKS_SETTLE_S):
                return workers
        return min(workers, live)
