"""Figure 4: what is billed after the response, per LAMBDAWRAP_FLUSH strategy, at every memory
size (back to back, and adaptive with idle gaps)."""

from __future__ import annotations

import time

from lambdawrap.devtools.otlp_receiver import OtlpReceiver

from harness.configurations import Stack
from harness.environments import at_every_size, environments, invoke_ok, post_response_ms, reports_by_id
from harness.phases.warm import paced_rounds
from harness.plan import Plan

STRATEGIES = ("end", "periodic,1000", "adaptive")
IDLE = "adaptive (idle, 1.1 s gaps)"


def post_at(stack: Stack, plan: Plan, rx: OtlpReceiver, size: int) -> dict:
    """Post-response times (ms) per flush strategy at one size, plus adaptive after idle gaps."""
    specs = {s: ("lambdawrap", {"LAMBDAWRAP_FLUSH": s}) for s in STRATEGIES}
    out: dict = {}
    with environments(stack, specs, "app.handler", rx.endpoint, memory_mb=size) as emus:
        for emu in emus.values():
            for _ in range(plan.warmup):
                invoke_ok(emu, stack.event)
        ids = {s: [] for s in emus}
        paced_rounds(emus, plan.n_post, lambda s: ids[s].append(invoke_ok(emus[s], stack.event)[1].request_id), plan.min_round_ms / 1000, f"post-response {size} MB")
        sparse = []
        for _ in range(plan.n_sparse):
            time.sleep(1.1)  # an idle function: adaptive flushes at the end of each invocation
            sparse.append(invoke_ok(emus["adaptive"], stack.event)[1].request_id)
        for s, emu in emus.items():
            reports = reports_by_id(emu, "platform.report")
            out[s] = [v for v in (post_response_ms(reports.get(r, {})) for r in ids[s]) if v is not None]
        if sparse:
            reports = reports_by_id(emus["adaptive"], "platform.report")
            out[IDLE] = [v for v in (post_response_ms(reports.get(r, {})) for r in sparse) if v is not None]
    return out


def phase_post(stack: Stack, plan: Plan, rx: OtlpReceiver) -> dict:
    """{size: {strategy: [post-response ms]}} for every memory size of the plan."""
    return at_every_size(plan.sizes, rx, lambda size: post_at(stack, plan, rx, size))
