"""Figure 4: what is billed after the response, per LAMBDAWRAP_FLUSH strategy, at every memory
size (back to back, and adaptive with idle gaps: against the local receiver; against one
answering 20 ms later, as a collector outside the environment would; and against an https one
20 ms away that closes connections idle for 1 s, as collectors and load balancers do after a
minute or so, so that every idle invocation reconnects: the example handler, and one making a
50 ms call, during which the connections are made)."""

from __future__ import annotations

import contextlib
import time

from lambdawrap.devtools.emulator import Emulator
from lambdawrap.devtools.otlp_receiver import OtlpReceiver

from harness.configurations import Stack
from harness.environments import at_every_size, environments, invoke_ok, post_response_ms, reports_by_id
from harness.phases.warm import paced_rounds
from harness.plan import Plan

STRATEGIES = ("end", "periodic,1000", "adaptive")
IDLE = "adaptive (idle, 1.1 s gaps)"
REMOTE_DELAY_S = 0.02
IDLE_REMOTE = f"adaptive (idle, 1.1 s gaps, collector answering {REMOTE_DELAY_S * 1000:.0f} ms later)"
HTTPS = f"https collector {REMOTE_DELAY_S * 1000:.0f} ms away closing connections idle 1 s"
IDLE_HTTPS = f"adaptive (idle, 1.1 s gaps, {HTTPS})"
IDLE_HTTPS_CALL = f"adaptive (idle, 1.1 s gaps, {HTTPS}, handler making a 50 ms call)"
HTTPS_IDLE_TIMEOUT_S = 1.0


def post_at(stack: Stack, plan: Plan, rx: OtlpReceiver, size: int) -> dict:
    """Post-response times (ms) per flush strategy at one size, plus adaptive after idle gaps,
    against the local receiver and a remote-like one."""
    specs = {s: ("lambdawrap", {"LAMBDAWRAP_FLUSH": s}) for s in STRATEGIES}
    out: dict = {}
    with contextlib.ExitStack() as exits:
        emus = exits.enter_context(environments(stack, specs, "app.handler", rx.endpoint, memory_mb=size))
        idle = {IDLE: emus["adaptive"]}
        if plan.n_sparse:
            remote = exits.enter_context(OtlpReceiver())
            remote.set_behaviour(delay_s=REMOTE_DELAY_S)
            idle[IDLE_REMOTE] = exits.enter_context(environments(stack, {"remote": ("lambdawrap", {})}, "app.handler", remote.endpoint, memory_mb=size))["remote"]
            pki = stack.test_pki()
            # A new connection waits two round trips (TCP, then TLS) before its first answer.
            https = exits.enter_context(OtlpReceiver(tls=(pki["server.pem"], pki["server.key"]), idle_timeout_s=HTTPS_IDLE_TIMEOUT_S, connect_delay_s=2 * REMOTE_DELAY_S))
            https.set_behaviour(delay_s=REMOTE_DELAY_S)
            trusted = ("lambdawrap", {"OTEL_EXPORTER_OTLP_CERTIFICATE": pki["ca.pem"]})
            for label, handler in ((IDLE_HTTPS, "app.handler"), (IDLE_HTTPS_CALL, "calls_api.handler")):
                idle[label] = exits.enter_context(environments(stack, {"https": trusted}, handler, https.endpoint, memory_mb=size))["https"]
        for emu in [*emus.values(), *(e for e in idle.values() if e not in emus.values())]:
            for _ in range(plan.warmup):
                invoke_ok(emu, stack.event)
        ids = {s: [] for s in emus}
        paced_rounds(emus, plan.n_post, lambda s: ids[s].append(invoke_ok(emus[s], stack.event)[1].request_id), plan.min_round_ms / 1000, f"post-response {size} MB")
        sparse: dict = {label: [] for label in idle}
        for _ in range(plan.n_sparse):
            time.sleep(1.1)  # an idle function: adaptive flushes at the end of each invocation
            for label, emu in idle.items():
                sparse[label].append(invoke_ok(emu, stack.event)[1].request_id)
        for s, emu in emus.items():
            out[s] = _post_response_times(emu, ids[s])
        for label, emu in idle.items():
            if sparse[label]:
                out[label] = _post_response_times(emu, sparse[label])
    return out


def _post_response_times(emu: Emulator, request_ids: list) -> list:
    """The post-response times (ms) the platform reported for these invocations."""
    reports = reports_by_id(emu, "platform.report")
    return [v for v in (post_response_ms(reports.get(r, {})) for r in request_ids) if v is not None]


def phase_post(stack: Stack, plan: Plan, rx: OtlpReceiver) -> dict:
    """{size: {strategy: [post-response ms]}} for every memory size of the plan."""
    return at_every_size(plan.sizes, rx, lambda size: post_at(stack, plan, rx, size))
