"""Running a configuration's environments in the emulator: start them warm, invoke and check,
read the platform's reports, find the companion extension."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

from lambdawrap.devtools.emulator import Emulator

from harness.configurations import Stack
from harness.measure import cpu_ns, proc_status

if TYPE_CHECKING:
    from lambdawrap.devtools.emulator.state import Extension


def companion_of(emu: Emulator) -> Extension | None:
    """The lambdawrap companion extension of an environment; None in configurations without it."""
    return next((e for e in emu.sandbox.state.launched if e.name == "lambdawrap"), None)


def invoke_ok(emu: Emulator, event: Any) -> tuple[float, Any]:
    """Invoke and wait until the environment is idle: (caller latency in ms, result); raises unless the call succeeded."""
    started = time.perf_counter()
    result = emu.invoke(event)
    elapsed = (time.perf_counter() - started) * 1000
    if result.status != 200 or result.function_error:
        raise RuntimeError(f"invocation failed: {result.status} {result.body[:300]!r}\n" + "\n".join(emu.log_lines()[-30:]))
    if not emu.wait_idle(30):
        raise RuntimeError("the environment did not become idle within 30 s")
    return elapsed, result


def reports_by_id(emu: Emulator, record_type: str) -> dict:
    """The platform's telemetry records of one type, by request id."""
    return {r["record"].get("requestId"): r["record"] for r in emu.records(record_type)}


def environment_pids(emu: Emulator) -> set[int]:
    """The processes of the environment: its cgroup's members where the limits are enforced,
    else the runtime and the extensions the platform started."""
    members = emu.sandbox.state.limits.members()
    if members:
        return members
    pids = {emu.sandbox.state.runtime.pid} if emu.sandbox.state.runtime is not None else set()
    return pids | {e.process.pid for e in emu.sandbox.state.launched if e.process is not None}


def environment_cpu_ns(emu: Emulator) -> float:
    """CPU time used so far by every process of the environment (runtime and extensions)."""
    return sum(cpu_ns(pid) for pid in environment_pids(emu))


def environment_peak_rss_mb(emu: Emulator) -> float:
    """The sum of the environment's processes' peak RSS (VmHWM), in MB."""
    return sum(proc_status(pid).get("VmHWM", 0.0) for pid in environment_pids(emu))


def report_metrics(report: dict) -> dict:
    """What a platform.report says of one invocation: duration, billed duration, the environment's
    memory high-water mark (runtime + extensions) and the time after the response."""
    metrics = report.get("metrics") or {}
    return {"duration_ms": metrics.get("durationMs"), "billed_ms": metrics.get("billedDurationMs"), "max_memory_mb": metrics.get("maxMemoryUsedMB"), "post_response_ms": post_response_ms(report)}


def post_response_ms(report: dict) -> float | None:
    """What is billed after the response: runtimeDone -> the last extension's /next."""
    for span in report.get("spans") or []:
        if span.get("name") == "extensionOverhead":
            return float(span["durationMs"])
    return None


@contextlib.contextmanager
def environments(stack: Stack, specs: dict, handler: str, endpoint: str, memory_mb: int, timeout_s: float = 6.0) -> Iterator[dict]:
    """Start one emulator per spec {label: (config, extra_env)} at memory_mb; stopped on exit."""
    emus: dict = {}
    try:
        for label, (config, extra) in specs.items():
            emus[label] = stack.emulator(config, handler, endpoint, extra, memory_mb=memory_mb, timeout_s=timeout_s).start()
        yield emus
    finally:
        for emu in emus.values():
            with contextlib.suppress(Exception):
                emu.stop()


def at_every_size(sizes: tuple, receiver: Any, measure: Callable[[int], dict]) -> dict:
    """{size: measure(size)} for every memory size, the receiver cleared after each."""
    out = {}
    for size in sizes:
        out[str(size)] = measure(size)
        receiver.clear()
    return out
