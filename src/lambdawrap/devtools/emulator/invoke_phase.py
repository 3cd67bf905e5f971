"""The invoke phase (spec §1, §8): hand the event to the runtime and the extensions, answer the
caller as soon as the runtime responds, fails or times out, then finish the phase (extensions'
/next, platform.report, any reset) on a thread of its own while the invoke lock stays held."""

from __future__ import annotations

import logging
import secrets
import threading
import time
import uuid

from lambdawrap.devtools.emulator.init_phase import InitFailure, InitPhase
from lambdawrap.devtools.emulator.platform_reports import claim_runtime_done, emit_report, emit_runtime_done, response_status
from lambdawrap.devtools.emulator.processes import ManagedProcess
from lambdawrap.devtools.emulator.reset import reset_environment
from lambdawrap.devtools.emulator.sandbox_state import SandboxState
from lambdawrap.devtools.emulator.state import MAX_PAYLOAD_BYTES, Invocation, InvokeResult, error_body

logger = logging.getLogger(__name__)

MEMORY_SAMPLE_S = 0.01


class InvokePhase:
    """Runs invocations, one at a time, initializing the environment first when it is not."""

    def __init__(self, state: SandboxState, init: InitPhase) -> None:
        self._state = state
        self._init = init

    def invoke(self, payload: bytes, *, trace_header: str | None = None, client_context: str | None = None, tenant_id: str | None = None, request_id: str | None = None) -> InvokeResult:
        """Run one invocation; returns as soon as the caller would have its answer. A
        `request_id` given is an asynchronous invocation's retry, which keeps its id."""
        state = self._state
        started = time.monotonic()
        request_id = request_id or str(uuid.uuid4())
        too_large = oversized_request(payload)
        if too_large is not None:
            return self._result(request_id, started, 413, too_large, function_error=False)
        state.invoke_lock.acquire()
        handed_over = False
        try:
            if state.initialized and state.runtime_dead():
                reset_environment(state, "failure")  # the runtime died between invocations
            if not state.initialized:
                try:
                    self._init.run(request_id)
                except InitFailure as failure:
                    reset_environment(state, "failure")
                    return self._result(request_id, started, 200, failure.body)
            inv = self._dispatch(request_id, payload, trace_header, client_context, tenant_id)
            if not state.limits.enforced:
                threading.Thread(target=self._enforce_memory, args=(inv, state.runtime), name="memory-limit", daemon=True).start()
            with state.cv:
                state.wait(lambda: inv.response is not None or state.runtime_dead() or state.fatal is not None or state.out_of_memory == request_id, inv.deadline)
            state.limits.out_of_memory()  # a kill the watcher has not reported yet
            if state.out_of_memory == request_id:
                # The kernel killed a process of the environment (an extension counts too): the
                # invocation fails and the environment is reset.
                detail = state.runtime.exit_description() if state.runtime_dead() else "signal: killed"
                result = self._result(request_id, started, 200, error_body("Runtime.OutOfMemory", f"RequestId: {request_id} Error: Runtime exited with error: {detail}"))
                mode = "crash"
            elif inv.response is not None:
                outcome = inv.response
                result = self._result(request_id, started, 200, outcome.body, function_error=outcome.function_error, content_type=outcome.content_type)
                mode = "respond"
            elif state.runtime_dead():
                message = f"RequestId: {request_id} Error: Runtime exited with error: {state.runtime.exit_description()}"
                if state.runtime.returncode == 0:
                    message = f"RequestId: {request_id} Error: Runtime exited without providing a reason"
                result = self._result(request_id, started, 200, error_body("Runtime.ExitError", message))
                mode = "crash"
            elif state.fatal is not None:
                result = self._result(request_id, started, 200, error_body(state.fatal, f"RequestId: {request_id} Error: {state.fatal}"))
                mode = "crash"
            else:
                message = f"RequestId: {request_id} Error: Task timed out after {state.config.timeout_s:.2f} seconds"
                result = self._result(request_id, started, 200, error_body("Sandbox.Timedout", message))
                mode = "timeout"
            # The caller has its answer; the rest of the phase (extensions, report, reset)
            # runs on, holding the invoke lock so that the next invocation waits for it.
            threading.Thread(target=self._finish, args=(inv, mode), name="invoke-finisher", daemon=True).start()
            handed_over = True
            return result
        finally:
            if not handed_over:
                state.invoke_lock.release()

    def _result(self, request_id: str, started: float, status: int, body: bytes, *, function_error: bool = True, content_type: str = "application/json") -> InvokeResult:
        return caller_result(self._state.config.function_version, request_id, started, status, body, function_error=function_error, content_type=content_type)

    def _dispatch(self, request_id: str, payload: bytes, trace_header: str | None, client_context: str | None, tenant_id: str | None) -> Invocation:
        """Make the invocation current and queue its INVOKE for the runtime and the extensions."""
        state = self._state
        state.thaw()
        inv = new_invocation(state, request_id, payload, trace_header, client_context, tenant_id)
        event = {"eventType": "INVOKE", "deadlineMs": inv.deadline_ms, "requestId": request_id, "invokedFunctionArn": state.config.function_arn, "tracing": inv.tracing()}
        with state.cv:
            state.current = inv
            start = {"requestId": request_id, "version": state.config.function_version, "tracing": inv.tracing()}
            state.bus.platform("start", start)
            state.platform_line(f"START RequestId: {request_id} Version: {state.config.function_version}")
            for ext in state.extensions.values():
                if "INVOKE" in ext.events:
                    inv.ext_pending.add(ext.id)
                    ext.queue.append(dict(event))
            state.pending_runtime = inv
            state.cv.notify_all()
        return inv

    def _finish(self, inv: Invocation, mode: str) -> None:
        """After the caller has its answer: wait for runtimeDone and the extensions, report, reset
        if the phase failed; always releases the invoke lock."""
        state = self._state
        try:
            if mode == "respond":
                with state.cv:
                    completed = state.wait(
                        lambda: (inv.runtime_done_at is not None and not inv.ext_pending)
                        or state.runtime_dead()
                        or state.fatal is not None
                        or self._pending_ext_died(inv)
                        or state.out_of_memory == inv.request_id,
                        inv.deadline,
                    )
                    runtime_done = inv.runtime_done_at is not None
                out_of_memory = state.limits.out_of_memory() or state.out_of_memory == inv.request_id
                if completed and runtime_done and not inv.ext_pending and state.fatal is None and not out_of_memory:
                    emit_report(state, inv, *response_status(inv))
                    with state.cv:
                        state.current = None
                    state.freeze()  # the runtime and every extension are done: nothing runs until the next event
                    return
                if out_of_memory:
                    status, error_type, reason = "error", "Runtime.OutOfMemory", "failure"
                elif not completed:
                    status, error_type, reason = "timeout", "Sandbox.Timedout", "timeout"
                elif state.runtime_dead() and not runtime_done:
                    status, error_type, reason = "error", "Runtime.ExitError", "failure"
                else:
                    status, error_type, reason = "error", state.fatal or "Extension.Crash", "failure"
                self._fail(inv, status, error_type, reason)
            elif mode == "timeout":
                self._fail(inv, "timeout", "Sandbox.Timedout", "timeout")
            else:
                error_type = state.fatal or ("Runtime.OutOfMemory" if state.out_of_memory == inv.request_id else "Runtime.ExitError")
                self._fail(inv, "error", error_type, "failure")
        except Exception:  # noqa: BLE001 - the lock must be released whatever happened
            logger.exception("emulator: finishing invocation %s failed", inv.request_id)
        finally:
            state.invoke_lock.release()

    def _fail(self, inv: Invocation, status: str, error_type: str, reason: str) -> None:
        """A phase that failed: its runtimeDone (unless the runtime's /next sent one, before or
        while the failure was found), its report, the reset."""
        state = self._state
        with state.cv:
            owes_runtime_done = claim_runtime_done(inv)
        if owes_runtime_done:
            emit_runtime_done(state, inv, status, error_type)
        emit_report(state, inv, status, error_type)
        reset_environment(state, reason)

    def _enforce_memory(self, inv: Invocation, runtime: ManagedProcess | None) -> None:
        """SIGKILL the runtime when its process tree outgrows the memory size, as the platform
        does; the invocation then fails with Runtime.OutOfMemory."""
        state = self._state
        limit_kb = state.config.memory_mb * 1024
        while runtime is not None and not runtime.exited():
            with state.cv:
                if state.current is not inv or inv.response is not None:
                    return
            if runtime.sample_peak_rss_kb() > limit_kb:
                with state.cv:
                    state.out_of_memory = inv.request_id
                runtime.kill_group()
                return
            time.sleep(MEMORY_SAMPLE_S)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the current invoke phase (extensions, report, any reset) has ended."""
        lock = self._state.invoke_lock
        if lock.acquire(timeout=timeout):
            lock.release()
            return True
        return False

    def _pending_ext_died(self, inv: Invocation) -> bool:
        return any(e.process is not None and e.process.exited() for e in self._state.extensions.values() if e.id in inv.ext_pending)


def oversized_request(payload: bytes) -> bytes | None:
    """The 413 body for a request over the payload limit (never handed to the runtime)."""
    if len(payload) <= MAX_PAYLOAD_BYTES:
        return None
    return error_body("RequestEntityTooLarge", request_too_large(len(payload)))


def request_too_large(size: int) -> str:
    return f"Request payload size ({size} bytes) exceeded maximum allowed payload size ({MAX_PAYLOAD_BYTES} bytes)."


def caller_result(function_version: str, request_id: str, started: float, status: int, body: bytes, *, function_error: bool = True, content_type: str = "application/json") -> InvokeResult:
    """What the caller gets: the body, with the invoke endpoint's headers."""
    headers = {"Content-Type": content_type, "X-Amzn-RequestId": request_id, "X-Amz-Executed-Version": function_version}
    if function_error and status == 200:
        headers["X-Amz-Function-Error"] = "Unhandled"
    return InvokeResult(request_id, status, body, headers, (time.monotonic() - started) * 1000)


def new_invocation(state: SandboxState, request_id: str, payload: bytes, trace_header: str | None, client_context: str | None, tenant_id: str | None) -> Invocation:
    """An invocation starting now, its deadline the function timeout away; it carries the
    duration of the init that preceded it, if any."""
    now = time.time()
    inv = Invocation(
        request_id=request_id,
        payload=payload,
        deadline_ms=int((now + state.config.timeout_s) * 1000),
        deadline=time.monotonic() + state.config.timeout_s,
        trace_header=trace_header or _new_xray_header(now),
        client_context=client_context,
        tenant_id=tenant_id,
        init_duration_ms=state.pending_init_duration,
    )
    state.pending_init_duration = None
    return inv


def _new_xray_header(now: float) -> str:
    # The platform hands every invocation a trace header, Sampled=0 when tracing is off.
    root = f"1-{int(now):08x}-{secrets.token_hex(12)}"
    return f"Root={root};Parent={secrets.token_hex(8)};Sampled=0"
