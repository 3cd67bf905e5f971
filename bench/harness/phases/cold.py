"""Figure 3, cold start: a new environment per sample, init duration and the two halves of its
critical path (runtime ready, companion ready) with the CPU each process used."""

from __future__ import annotations

import time
from typing import Callable

from lambdawrap.devtools.emulator import Emulator
from lambdawrap.devtools.otlp_receiver import OtlpReceiver

from harness.configurations import COLD_DIAGNOSTICS, Stack
from harness.environments import invoke_ok
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
        # CPU each process has used by the end of init (schedstat: nanoseconds on a CPU).
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


def phase_cold(stack: Stack, plan: Plan, rx: OtlpReceiver) -> dict:
    """plan.cold fresh environments per configuration and handler (trivial, boto3-importing), one invocation each."""
    out: dict = {}
    for module in ("trivial", "with_boto3"):
        configs = stack.configs + ([] if plan.cold < 2 else list(COLD_DIAGNOSTICS))
        data = {c: {"init_ms": [], "first_invoke_ms": [], "runtime_ready_ms": [], "companion_ready_ms": [], "runtime_cpu_ms": [], "companion_cpu_ms": []} for c in configs}
        warm_up = 1 if plan.cold > 1 else 0  # a first, unmeasured round fills the page cache
        for i in range(plan.cold + warm_up):
            for c in rotated(configs, i):
                emu = stack.emulator(c, f"{module}.handler", rx.endpoint).start()
                try:
                    marks = mark_init(emu)
                    elapsed, _ = invoke_ok(emu, stack.event)
                    init = emu.records("platform.initReport")
                finally:
                    emu.stop()
                if i < warm_up:
                    continue
                d = data[c]
                d["init_ms"].append(float(init[-1]["record"]["metrics"]["durationMs"]))
                d["first_invoke_ms"].append(elapsed)
                if "runtime_ready" in marks:
                    d["runtime_ready_ms"].append((marks["runtime_ready"] - marks["init_start"]) * 1000)
                if "extension_ready" in marks:
                    d["companion_ready_ms"].append((marks["extension_ready"] - marks["init_start"]) * 1000)
                if "runtime_cpu_ms" in marks:
                    d["runtime_cpu_ms"].append(marks["runtime_cpu_ms"])
                if "extension_cpu_ms" in marks:
                    d["companion_cpu_ms"].append(marks["extension_cpu_ms"])
            if plan.cold >= 10 and (i + 1) % 10 == 0:
                log(f"  cold {module}: {i + 1 - warm_up}/{plan.cold} " + ", ".join(f"{c} init p50 {pct(d['init_ms'], 50):.0f} ms" for c, d in data.items()))
        out[module] = data
        log(f"  cold {module}: " + ", ".join(f"{c} init p50 {pct(d['init_ms'], 50):.1f} ms" for c, d in data.items()))
    return out
