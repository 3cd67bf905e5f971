"""Reset and shutdown (spec §1, §8): end the runtime, send SHUTDOWN to the extensions that
asked for it, wait for them until the deadline, and clear every registration."""

from __future__ import annotations

import time

from lambdawrap.devtools.emulator.sandbox_state import SandboxState

SHUTDOWN_BUDGET_S = 2.0  # overall reset/shutdown deadline with external extensions
RUNTIME_SHARE = 0.3  # the runtime's share of it before SIGKILL, as RIE does
TELEMETRY_FLUSH_S = 0.3


def reset_environment(state: SandboxState, reason: str) -> None:
    """SIGTERM/SIGKILL the runtime, SHUTDOWN the extensions, clear registrations."""
    started = time.monotonic()
    deadline = started + SHUTDOWN_BUDGET_S
    deadline_ms = int((time.time() + SHUTDOWN_BUDGET_S) * 1000)
    state.resets.append(reason)
    state.thaw()  # a frozen process can neither handle SIGTERM nor take SHUTDOWN
    with state.cv:
        runtime = state.runtime
        has_extensions = bool(state.extensions)
        state.initialized = False
    if runtime is not None:
        if has_extensions:
            runtime.stop(grace=SHUTDOWN_BUDGET_S * RUNTIME_SHARE)
        else:
            runtime.kill_group()
            runtime.wait(2)
    with state.cv:
        state.runtime_gen += 1
        state.pending_runtime = None
        state.cv.notify_all()
    # Subscribers get what happened (runtimeDone, report) before SHUTDOWN, as the
    # managed-instances platform flushes telemetry after the runtime stops.
    if state.bus.gate.flush_before_shutdown:
        state.bus.flush(TELEMETRY_FLUSH_S)
    with state.cv:
        subscribed = [e for e in state.launched if e.id and "SHUTDOWN" in e.events and e.process and not e.process.exited()]
        for ext in subscribed:
            ext.queue.append({"eventType": "SHUTDOWN", "shutdownReason": reason, "deadlineMs": deadline_ms})
        others = [e for e in state.launched if e not in subscribed and e.process is not None]
        state.cv.notify_all()
    for ext in others:
        ext.process.kill_group()
    for ext in subscribed:
        if not ext.process.wait(max(0.0, deadline - time.monotonic())):
            state.platform_line(f"EXTENSION\tName: {ext.name}\tkilled at the shutdown deadline")
            ext.state = "ShutdownFailed"
        elif ext.process.returncode != 0:
            ext.state = "ShutdownFailed"
        ext.process.kill_group()
    for ext in others:
        ext.process.wait(1)
    state.bus.close_all()
    state.limits.environment_ended()  # whatever escaped the process groups dies with the cgroup
    with state.cv:
        state.env_gen += 1
        state.extensions = {}
        state.launched = []
        state.current = None
        state.runtime = None
        state.runtime_ready = False
        state.registration_open = False
        state.subscriptions_open = False
        state.cv.notify_all()


def spin_down(state: SandboxState) -> None:
    """Shut the environment down as idle spindown does."""
    with state.invoke_lock:
        if state.initialized or state.runtime is not None or state.launched:
            reset_environment(state, "spindown")
