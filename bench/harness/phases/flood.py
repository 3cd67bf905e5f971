"""Figure 5, memory under a log flood: bare and lambdawrap at every memory size, each invocation
printing plan.flood_mb of log lines (which the companion receives through the Telemetry API).
The environment's high-water mark (maxMemoryUsedMB: runtime + extensions) and the companion's
peak RSS, with what the flood invocations were billed."""

from __future__ import annotations

from lambdawrap.devtools.otlp_receiver import OtlpReceiver

from harness.configurations import Stack
from harness.environments import at_every_size, companion_of, environment_peak_rss_mb, environments, invoke_ok, report_metrics, reports_by_id
from harness.measure import log, proc_status, rotated
from harness.plan import Plan

FLOOD_CONFIGS = ("bare", "lambdawrap")  # the targets compare these two; the others run no extension


def flood_at(stack: Stack, plan: Plan, rx: OtlpReceiver, size: int) -> dict:
    """plan.n_flood flood invocations per configuration at one size, interleaved."""
    specs = {c: (c, None) for c in FLOOD_CONFIGS if c in stack.configs}
    out: dict = {}
    with environments(stack, specs, "flood.handler", rx.endpoint, memory_mb=size, timeout_s=300) as emus:
        ids = {c: [] for c in emus}
        errors: dict = {c: [] for c in emus}
        for c, emu in emus.items():
            invoke_ok(emu, {"megabytes": 0})  # init, outside the figures
        for i in range(plan.n_flood):
            for c in rotated(list(emus), i):
                # A flood may end the environment (out of memory): that is a finding, not a crash.
                result = emus[c].invoke({"megabytes": plan.flood_mb})
                emus[c].wait_idle(300)
                ids[c].append(result.request_id)
                if result.status != 200 or result.function_error:
                    errors[c].append(result.body[:200].decode(errors="replace"))
        for c, emu in emus.items():
            reports = reports_by_id(emu, "platform.report")
            figures = [report_metrics(reports[r]) for r in ids[c] if r in reports]
            ext = companion_of(emu)
            out[c] = {
                "max_memory_mb": max((f["max_memory_mb"] or 0) for f in figures) if figures else None,
                "billed_ms": [f["billed_ms"] for f in figures],
                "post_response_ms": [f["post_response_ms"] for f in figures if f["post_response_ms"] is not None],
                "environment_vmhwm_sum": environment_peak_rss_mb(emu),
                "companion": proc_status(ext.process.pid) if ext is not None else None,
                "errors": errors[c],
            }
    log(f"  flood {size} MB ({plan.flood_mb} MB of logs per invocation): " + ", ".join(f"{c} maxMemoryUsedMB {v['max_memory_mb']}" + (f", companion VmHWM {v['companion'].get('VmHWM', 0):.0f} MB" if v["companion"] else "") for c, v in out.items()))
    return out


def phase_flood(stack: Stack, plan: Plan, rx: OtlpReceiver) -> dict:
    """{size: {config: figures}} for every memory size of the plan."""
    return at_every_size(plan.sizes, rx, lambda size: flood_at(stack, plan, rx, size))
