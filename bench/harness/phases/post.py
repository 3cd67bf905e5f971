"""Figure 4: what is billed after the response, per LAMBDAWRAP_FLUSH strategy (back to back, and
adaptive with idle gaps)."""

from __future__ import annotations

import time

from lambdawrap.devtools.otlp_receiver import OtlpReceiver

from harness.configurations import Stack
from harness.environments import environments, invoke_ok, post_response_ms, reports_by_id
from harness.measure import log, rotated
from harness.plan import Plan

STRATEGIES = ("end", "periodic,1000", "adaptive")


def phase_post(stack: Stack, plan: Plan, rx: OtlpReceiver) -> dict:
    """Post-response times (ms) per flush strategy, plus adaptive after idle gaps."""
    specs = {s: ("lambdawrap", {"LAMBDAWRAP_FLUSH": s}) for s in STRATEGIES}
    out: dict = {}
    with environments(stack, specs, "app.handler", rx.endpoint) as emus:
        for emu in emus.values():
            for _ in range(plan.warmup):
                invoke_ok(emu, stack.event)
        ids = {s: [] for s in emus}
        for i in range(plan.n_post):
            for s in rotated(list(emus), i):
                ids[s].append(invoke_ok(emus[s], stack.event)[1].request_id)
            if plan.n_post >= 50 and (i + 1) % (plan.n_post // 3) == 0:
                log(f"  post-response: {i + 1}/{plan.n_post} rounds")
        sparse = []
        emu = emus["adaptive"]
        for i in range(plan.n_sparse):
            time.sleep(1.1)  # an idle function: adaptive flushes at the end of each invocation
            sparse.append(invoke_ok(emu, stack.event)[1].request_id)
        for s, emu in emus.items():
            reports = reports_by_id(emu, "platform.report")
            out[s] = [v for v in (post_response_ms(reports.get(r, {})) for r in ids[s]) if v is not None]
        if sparse:
            reports = reports_by_id(emus["adaptive"], "platform.report")
            out["adaptive (idle, 1.1 s gaps)"] = [v for v in (post_response_ms(reports.get(r, {})) for r in sparse) if v is not None]
    return out
