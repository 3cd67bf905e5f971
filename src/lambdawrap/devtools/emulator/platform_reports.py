"""The platform's account of one invocation: the platform.runtimeDone and platform.report
records, and the END and REPORT log lines."""

from __future__ import annotations

import math
import time

from lambdawrap.devtools.emulator.sandbox_state import SandboxState
from lambdawrap.devtools.emulator.state import Invocation
from lambdawrap.devtools.emulator.telemetry import utc_timestamp


def to_ms(seconds: float) -> float:
    """A duration in milliseconds, rounded as the platform's records give it."""
    return round(seconds * 1000, 3)


def _stamp(epoch_s: float) -> str:
    return utc_timestamp(epoch_s)


def response_status(inv: Invocation) -> tuple[str, str | None]:
    """The status and error type of the invocation's runtimeDone and report, from what the runtime posted."""
    outcome = inv.response
    if outcome is None or not outcome.function_error:
        return "success", None
    return "error", outcome.error_type or "Runtime.Unknown"


def claim_runtime_done(inv: Invocation) -> bool:
    """True the first time only (the caller holds the sandbox's lock): an invocation has one
    runtimeDone, even when its runtime's /next and the failure of its phase (an extension that
    died) come together."""
    if inv.runtime_done_claimed:
        return False
    inv.runtime_done_claimed = True
    return True


def emit_runtime_done(state: SandboxState, inv: Invocation, status: str, error_type: str | None) -> None:
    """Emit platform.runtimeDone: the runtime is done with the invocation."""
    now = time.monotonic()
    done_at = inv.runtime_done_at or now
    response_at = inv.response_at or done_at
    record = {
        "requestId": inv.request_id,
        "status": status,
        "metrics": {"durationMs": to_ms(done_at - inv.started), "producedBytes": len(inv.response.body) if inv.response else 0},
        "spans": _response_spans(inv, response_at),
        "tracing": inv.tracing(),
    }
    if error_type:
        record["errorType"] = error_type
    state.bus.platform("runtimeDone", record)


def _response_spans(inv: Invocation, response_at: float) -> list[dict]:
    return [
        {"name": "responseLatency", "start": _stamp(inv.started_epoch), "durationMs": to_ms(response_at - inv.started)},
        {"name": "responseDuration", "start": _stamp(inv.started_epoch + (response_at - inv.started)), "durationMs": 0.0},
    ]


def emit_concurrent_report(state: SandboxState, inv: Invocation, status: str, error_type: str | None) -> None:
    """Managed Instances: platform.report as soon as the response is out, with no runtimeDone
    before it, no extension overhead, and neither billing nor memory metrics (spec §9)."""
    end = time.monotonic()
    duration = to_ms(end - inv.started)
    record = {"requestId": inv.request_id, "status": status, "metrics": {"durationMs": duration}, "spans": _response_spans(inv, inv.response_at or end), "tracing": inv.tracing()}
    if error_type:
        record["errorType"] = error_type
    state.bus.platform("report", record)
    state.platform_line(f"END RequestId: {inv.request_id}")
    line = f"REPORT RequestId: {inv.request_id}\tDuration: {duration:.2f} ms"
    if status != "success":
        line += f"\tStatus: {status}" + (f"\tError Type: {error_type}" if error_type else "")
    state.platform_line(line)


def emit_report(state: SandboxState, inv: Invocation, status: str, error_type: str | None) -> None:
    """Emit platform.report and log END and REPORT: the invocation's phase is over."""
    end = time.monotonic()
    duration = to_ms(end - inv.started)
    metrics = {
        "durationMs": duration,
        "billedDurationMs": max(1, math.ceil(duration)),
        "memorySizeMB": state.config.memory_mb,
        "maxMemoryUsedMB": state.memory_used_mb(),
    }
    if inv.init_duration_ms is not None:
        metrics["initDurationMs"] = inv.init_duration_ms
    record = {"requestId": inv.request_id, "status": status, "metrics": metrics, "tracing": inv.tracing()}
    if inv.runtime_done_at is not None:
        overhead = to_ms(end - inv.runtime_done_at)
        record["spans"] = [{"name": "extensionOverhead", "start": _stamp(inv.started_epoch + (inv.runtime_done_at - inv.started)), "durationMs": overhead}]
    if error_type:
        record["errorType"] = error_type
    state.bus.platform("report", record)
    state.platform_line(f"END RequestId: {inv.request_id}")
    line = f"REPORT RequestId: {inv.request_id}\tDuration: {duration:.2f} ms\tBilled Duration: {metrics['billedDurationMs']} ms\tMemory Size: {state.config.memory_mb} MB\tMax Memory Used: {metrics['maxMemoryUsedMB']} MB"
    if inv.init_duration_ms is not None:
        line += f"\tInit Duration: {inv.init_duration_ms:.2f} ms"
    if status != "success":
        line += f"\tStatus: {status}" + (f"\tError Type: {error_type}" if error_type else "")
    state.platform_line(line)
