"""Figures 1, 2 and 5 through the emulator, at every memory size under Lambda's limits: warm caller
latency, billed duration, runtimeDone, the CPU every process of the environment used per
invocation, and memory (the platform's maxMemoryUsedMB and each process's peak); then, at the
full-core size, the same against a receiver that answers slowly."""

from __future__ import annotations

import collections
import json
import time

from lambdawrap.devtools.otlp_receiver import OtlpReceiver

from harness.configurations import FULL_CORE_MB, NOOP_EXT, Stack
from harness.environments import at_every_size, companion_of, environment_cpu_ns, environment_peak_rss_mb, environments, invoke_ok, report_metrics, reports_by_id
from harness.measure import cpu_ns, log, pct, proc_status, rotated
from harness.plan import Plan

SLOW_DELAY_S = 0.2


def _cpu(emu) -> tuple[float, float, float]:
    """(runtime, companion, whole environment) CPU ns so far."""
    ext = companion_of(emu)
    return cpu_ns(emu.sandbox.state.runtime.pid), cpu_ns(ext.process.pid) if ext else 0.0, environment_cpu_ns(emu)


def paced_rounds(emus: dict, n: int, invoke, min_round_s: float, label: str) -> None:
    """n rounds, each invoking every environment once in rotated order; a round lasts at least
    min_round_s, so that below a full core an environment's CPU quota period has mostly renewed
    before its next invocation (an invocation is not billed for the previous one's CPU)."""
    names = list(emus)
    for i in range(n):
        started = time.monotonic()
        for c in rotated(names, i):
            invoke(c)
        left = min_round_s - (time.monotonic() - started)
        if left > 0:
            time.sleep(left)
        if n >= 100 and (i + 1) % (n // 4) == 0:
            log(f"  {label}: {i + 1}/{n} rounds")


def warm_at(stack: Stack, plan: Plan, rx: OtlpReceiver, size: int) -> dict:
    """Warm invocations of the example function, every configuration at one memory size."""
    specs = {c: (c, None) for c in stack.configs + [NOOP_EXT]}
    out: dict = {"latency_ms": {}, "runtime_done_ms": {}, "billed_ms": {}, "duration_ms": {}, "post_response_ms": {}, "max_memory_mb": {}, "memory_mb": {}, "cpu_us_per_invoke": {}}
    min_round_s = plan.min_round_ms / 1000 if size < FULL_CORE_MB else 0.0
    with environments(stack, specs, "app.handler", rx.endpoint, memory_mb=size) as emus:
        for emu in emus.values():
            for _ in range(plan.warmup):
                invoke_ok(emu, stack.event)
        lat = {c: [] for c in emus}
        ids = {c: [] for c in emus}
        before = {c: _cpu(emu) for c, emu in emus.items()}

        def invoke(c: str) -> None:
            elapsed, result = invoke_ok(emus[c], stack.event)
            lat[c].append(elapsed)
            ids[c].append(result.request_id)

        paced_rounds(emus, plan.n, invoke, min_round_s, f"warm {size} MB")
        for c, emu in emus.items():
            after = _cpu(emu)
            cpu = {"runtime": (after[0] - before[c][0]) / plan.n / 1000, "environment": (after[2] - before[c][2]) / plan.n / 1000}
            if companion_of(emu) is not None:
                cpu["companion"] = (after[1] - before[c][1]) / plan.n / 1000
            out["cpu_us_per_invoke"][c] = cpu
            done = reports_by_id(emu, "platform.runtimeDone")
            reports = reports_by_id(emu, "platform.report")
            figures = [report_metrics(reports[r]) for r in ids[c] if r in reports]
            out["latency_ms"][c] = lat[c]
            out["runtime_done_ms"][c] = [done[r]["metrics"]["durationMs"] for r in ids[c] if r in done]
            for key in ("billed_ms", "duration_ms", "post_response_ms"):
                out[key][c] = [f[key] for f in figures if f[key] is not None]
            out["max_memory_mb"][c] = max((f["max_memory_mb"] or 0) for f in figures) if figures else None
            mem = {"runtime": proc_status(emu.sandbox.state.runtime.pid), "environment_vmhwm_sum": environment_peak_rss_mb(emu)}
            ext = companion_of(emu)
            if ext is not None:
                mem["companion"] = proc_status(ext.process.pid)
            out["memory_mb"][c] = mem
        log(f"  warm {size} MB: billed p50 " + ", ".join(f"{c} {pct(v, 50):.0f} ms" for c, v in out["billed_ms"].items()) + "; maxMemoryUsedMB " + ", ".join(f"{c} {v}" for c, v in out["max_memory_mb"].items()))
        log(f"  warm {size} MB: CPU per invocation " + ", ".join(f"{c} {v['environment']:.0f} µs" for c, v in out["cpu_us_per_invoke"].items()))
        if size == plan.full_core_size:
            scopes = collections.Counter(str(span.get("scope")) for span in rx.spans())
            out["spans_by_scope"] = dict(scopes)
            out["adot_udp_spans"] = stack.sinks["adot_udp"].spans if "adot_udp" in stack.sinks else None
            log("  warm: spans received by scope " + json.dumps(out["spans_by_scope"]) + f"; ADOT spans over UDP {out['adot_udp_spans']}")
            # Figure 2: the collector answers after 200 ms.
            rx.set_behaviour(delay_s=SLOW_DELAY_S)
            try:
                slow = {c: [] for c in emus}
                paced_rounds(emus, plan.n_slow, lambda c: slow[c].append(invoke_ok(emus[c], stack.event)[0]), 0.0, "slow receiver")
                out["slow_latency_ms"] = slow
            finally:
                rx.reset_behaviour()
    return out


def phase_warm(stack: Stack, plan: Plan, rx: OtlpReceiver) -> dict:
    """{size: figures} for every memory size of the plan."""
    return at_every_size(plan.sizes, rx, lambda size: warm_at(stack, plan, rx, size))
