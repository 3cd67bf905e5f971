"""Figure 3, cold start, at every memory size and under both init CPU policies: a new environment
per sample, its init duration and the two halves of its critical path (runtime ready, companion
ready) with the CPU each process used, and its first invocation (caller latency, billed duration
with the time after the response, the environment's memory)."""

from __future__ import annotations

import statistics
import time
from typing import Callable

from lambdawrap.devtools.emulator import Emulator
from lambdawrap.devtools.otlp_receiver import OtlpReceiver

from harness.configurations import COLD_DIAGNOSTICS, LW_COMPANION_ONLY, LW_RUNTIME_ONLY, Stack
from harness.environments import invoke_ok, report_metrics, reports_by_id
from harness.measure import cpu_ns, log, pct, rotated
from harness.plan import Plan


def mark_init(emu: Emulator) -> dict:
    """Timestamps of the init critical path, taken on the emulator's side of the APIs."""
    sb = emu.sandbox
    marks: dict = {}

    def first(name: str, fn: Callable) -> Callable:
        def wrapper(*a, **k):
            marks.setdefault(name, time.monotonic())
            return fn(*a, **k)

        return wrapper

    init = sb.init_phase
    init._attempt = first("init_start", init._attempt)
    end_init = init._end

    def on_end_init(*a, **k):
        # CPU each process has used by the end of init (schedstat: nanoseconds on a CPU; an
        # extension's threads that have exited by then are counted to the clock tick).
        if sb.state.runtime is not None:
            marks["runtime_cpu_ms"] = cpu_ns(sb.state.runtime.pid) / 1e6
        for ext in sb.state.launched:
            if ext.process is not None:
                marks["extension_cpu_ms"] = marks.get("extension_cpu_ms", 0.0) + cpu_ns(ext.process.pid) / 1e6
        return end_init(*a, **k)

    init._end = on_end_init
    sb.runtime_next = first("runtime_ready", sb.runtime_next)
    sb.extension_register = first("extension_registered", sb.extension_register)
    sb.extension_next = first("extension_ready", sb.extension_next)
    return marks


FIELDS = ("init_ms", "first_caller_ms", "first_billed_ms", "first_duration_ms", "first_post_response_ms", "first_max_memory_mb", "runtime_ready_ms", "companion_ready_ms", "runtime_cpu_ms", "companion_cpu_ms", "later_billed_ms", "later_billed_max_ms")
MODULES = ("trivial", "with_boto3")


def cold_start(stack: Stack, config: str, module: str, endpoint: str, memory_mb: int, policy: str, later: int = 0) -> dict:
    """One fresh environment, initialised and invoked once: the figures of its init and of its
    first invocation (caller latency, and the platform.report of that invocation); with
    `later`, that many invocations more, back to back: the median and the largest of their
    billed durations (what a companion still loading after init bills the next invocations)."""
    emu = stack.emulator(config, f"{module}.handler", endpoint, memory_mb=memory_mb, init_cpu=policy, timeout_s=60)
    emu.start()
    try:
        marks = mark_init(emu)
        elapsed, result = invoke_ok(emu, stack.event)
        later_ids = [invoke_ok(emu, stack.event)[1].request_id for _ in range(later)]
        init = emu.records("platform.initReport")
        reports = reports_by_id(emu, "platform.report")
        report = reports.get(result.request_id, {})
    finally:
        emu.stop()
    first = report_metrics(report)
    later_billed = [report_metrics(reports.get(rid, {}))["billed_ms"] for rid in later_ids]
    later_billed = [b for b in later_billed if b is not None]
    sample = {
        "init_ms": float(init[-1]["record"]["metrics"]["durationMs"]),
        "first_caller_ms": elapsed,
        "first_billed_ms": first["billed_ms"],
        "first_duration_ms": first["duration_ms"],
        "first_post_response_ms": first["post_response_ms"],
        "first_max_memory_mb": first["max_memory_mb"],
        "runtime_cpu_ms": marks.get("runtime_cpu_ms"),
        "companion_cpu_ms": marks.get("extension_cpu_ms"),
        "later_billed_ms": statistics.median(later_billed) if later_billed else None,
        "later_billed_max_ms": max(later_billed) if later_billed else None,
    }
    if "runtime_ready" in marks:
        sample["runtime_ready_ms"] = (marks["runtime_ready"] - marks["init_start"]) * 1000
    if "extension_ready" in marks:
        sample["companion_ready_ms"] = (marks["extension_ready"] - marks["init_start"]) * 1000
    return sample


def phase_cold(stack: Stack, plan: Plan, rx: OtlpReceiver) -> dict:
    """Fresh environments of every configuration at every memory size, under both init CPU
    policies, for the trivial and the boto3-importing handler. Rounds are outermost and the
    configurations rotate within each, so machine drift hits every cell alike. Returns
    {size: {policy: {module: {config: {field: [samples]}}}}}."""
    counts = {"unthrottled": plan.cold, "as-invoke": plan.cold_as_invoke}
    out: dict = {}

    def cell(size: int, policy: str, module: str, config: str) -> dict:
        return out.setdefault(str(size), {}).setdefault(policy, {}).setdefault(module, {}).setdefault(config, {f: [] for f in FIELDS})

    if plan.cold > 1:
        # One unmeasured round first: it fills the page cache with every layer's files.
        for module in MODULES:
            for c in stack.configs:
                cold_start(stack, c, module, rx.endpoint, plan.sizes[-1], "unthrottled")
    started = time.monotonic()
    for i in range(max(counts.values())):
        for size in plan.sizes:
            for policy, count in counts.items():
                if i >= count:
                    continue
                smallest = size == plan.sizes[0] and policy == "unthrottled"
                diagnostics = list(COLD_DIAGNOSTICS) if plan.cold >= 2 and smallest else []
                for module in MODULES:
                    for c in rotated(stack.configs + diagnostics, i):
                        d = cell(size, policy, module, c)
                        # The later invocations: at the smallest size, init unthrottled, where the
                        # startup wait's trade-off lies (the other diagnostics have no use for them).
                        later = plan.cold_later if smallest and c not in (LW_RUNTIME_ONLY, LW_COMPANION_ONLY) else 0
                        try:
                            sample = cold_start(stack, c, module, rx.endpoint, size, policy, later)
                        except RuntimeError as exc:  # a failed cold start is counted, and the run goes on
                            d.setdefault("failures", []).append(str(exc)[:300])
                            log(f"  cold start failed: {c} {module} {size} MB {policy}: {str(exc)[:200]}")
                            continue
                        for field, value in sample.items():
                            if value is not None:
                                d[field].append(value)
        small = out[str(plan.sizes[0])]["unthrottled"]["trivial"]
        log(f"  cold round {i + 1}/{max(counts.values())} ({(time.monotonic() - started) / 60:.1f} min): {plan.sizes[0]} MB unthrottled trivial init p50 " + ", ".join(f"{c} {pct(small[c]['init_ms'], 50):.0f} ms" for c in stack.configs))
    return out
