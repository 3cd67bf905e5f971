"""Figures 1, 2 and 5 through the emulator: warm caller latency, runtimeDone, CPU per invocation
and peak memory of every configuration, then the same against a receiver that answers slowly."""

from __future__ import annotations

import collections
import json

from lambdawrap.devtools.otlp_receiver import OtlpReceiver

from harness.configurations import NOOP_EXT, Stack
from harness.environments import companion_of, environments, invoke_ok, post_response_ms, reports_by_id
from harness.measure import cpu_ns, log, pct, proc_status, rotated
from harness.plan import Plan

SLOW_DELAY_S = 0.2


def phase_warm(stack: Stack, plan: Plan, rx: OtlpReceiver) -> dict:
    """Warm invocations of every configuration, interleaved, then against a receiver answering after SLOW_DELAY_S."""
    specs = {c: (c, None) for c in stack.configs + [NOOP_EXT]}
    out: dict = {"latency_ms": {}, "slow_latency_ms": {}, "runtime_done_ms": {}, "post_response_ms": {}, "memory_mb": {}}
    with environments(stack, specs, "app.handler", rx.endpoint) as emus:
        for label, emu in emus.items():
            for _ in range(plan.warmup):
                invoke_ok(emu, stack.event)
        lat = {c: [] for c in emus}
        ids = {c: [] for c in emus}
        cpu_before = {c: (cpu_ns(emu.sandbox.state.runtime.pid), cpu_ns(companion_of(emu).process.pid) if companion_of(emu) else 0.0) for c, emu in emus.items()}
        for i in range(plan.n):
            for c in rotated(list(emus), i):
                elapsed, result = invoke_ok(emus[c], stack.event)
                lat[c].append(elapsed)
                ids[c].append(result.request_id)
            if plan.n >= 100 and (i + 1) % (plan.n // 5) == 0:
                log(f"  warm: {i + 1}/{plan.n} rounds; p50 so far " + ", ".join(f"{c} {pct(v, 50):.2f} ms" for c, v in lat.items()))
        out["cpu_us_per_invoke"] = {}
        for c, emu in emus.items():
            ext = companion_of(emu)
            runtime_cpu = (cpu_ns(emu.sandbox.state.runtime.pid) - cpu_before[c][0]) / plan.n / 1000
            out["cpu_us_per_invoke"][c] = {"runtime": runtime_cpu}
            if ext is not None:
                out["cpu_us_per_invoke"][c]["extension"] = (cpu_ns(ext.process.pid) - cpu_before[c][1]) / plan.n / 1000
        for c, emu in emus.items():
            done = reports_by_id(emu, "platform.runtimeDone")
            reports = reports_by_id(emu, "platform.report")
            out["latency_ms"][c] = lat[c]
            out["runtime_done_ms"][c] = [done[r]["metrics"]["durationMs"] for r in ids[c] if r in done]
            out["post_response_ms"][c] = [v for v in (post_response_ms(reports.get(r, {})) for r in ids[c]) if v is not None]
            mem = {"runtime": proc_status(emu.sandbox.state.runtime.pid)}
            ext = companion_of(emu)
            if ext is not None:
                mem["companion"] = proc_status(ext.process.pid)
            out["memory_mb"][c] = mem
        scopes = collections.Counter(str(span.get("scope")) for span in rx.spans())
        out["spans_by_scope"] = dict(scopes)
        log("  warm: spans received by scope " + json.dumps(out["spans_by_scope"]))
        log("  warm: memory " + ", ".join(f"{c} runtime VmHWM {m['runtime'].get('VmHWM', float('nan')):.1f} MB" for c, m in out["memory_mb"].items()))
        # Figure 2: the collector answers after 200 ms.
        rx.set_behaviour(delay_s=SLOW_DELAY_S)
        try:
            slow = {c: [] for c in emus}
            for i in range(plan.n_slow):
                for c in rotated(list(emus), i):
                    slow[c].append(invoke_ok(emus[c], stack.event)[0])
                if plan.n_slow >= 50 and (i + 1) % (plan.n_slow // 4) == 0:
                    log(f"  slow receiver: {i + 1}/{plan.n_slow} rounds")
            out["slow_latency_ms"] = slow
        finally:
            rx.reset_behaviour()
    return out
