#!/usr/bin/env python3
"""lambdawrap soak: the fault suite's long mode, run by hand.

    .venv/bin/python bench/soak.py --invocations 10000 [--seed 1] [--json out.json]

One environment at a time, as the platform runs it, through the emulator, the real awslambdaric,
the layer, a real OTLP receiver and moto. A shuffled mix of every fault the function can produce
(exceptions, timeouts, os._exit, out-of-memory kills, MemoryError, 6 MB events and responses,
responses over 6 MB and unencodable returns (failures after the handler returned), log floods
(5 MB an invocation), non-dict events, hostile headers), with, along the way: inits that fail
(the module raises while it loads, then is fixed), the collector down,
slow (2 s), answering 500, 429 with Retry-After, cutting connections, then recovering; the
companion SIGKILLed (between invocations and in the middle of one); garbage on the local
socket and at the telemetry listener. A secret is declared throughout.

At the end: every request id must be exactly one span at the collector, or counted in
lambdawrap.dropped with a reason (lost = 0); every caller must have got what the function (or
the platform) produced; the secret must appear nowhere. Prints the figures (those in
docs/reliability.md come from here) and exits 1 if any of that fails. Takes ~5 min for 10,000
invocations on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from lambdawrap.devtools.local.moto_server import MotoServer  # noqa: E402
from lambdawrap.devtools.local.ports import free_port  # noqa: E402
from support import faults  # noqa: E402
from support.faults import (  # noqa: E402
    FAULT_APP,
    Collector,
    Ledger,
    account,
    companion_process,
    environment_up,
    inits,
    kill_companion,
    latency_summary,
    percentile,
    post_telemetry_garbage,
    send_socket_garbage,
    telemetry_port,
)
from support.stack import instrumented  # noqa: E402

SECRET = "soak-DB-secret-value-0d93"
TIMEOUT_S = 2.0  # also bounds each new environment's init (after a reset, inside the next invoke)
BUFFER_MAX_SPANS = 500

# Share of each kind in the mix (the rest is "ok").
MIX = {
    "http": 0.10, "bad_headers": 0.05, "not_dict": 0.05, "raise": 0.08, "memory_error": 0.03, "non_json": 0.03,
    "big_event": 0.003, "big_response": 0.003, "timeout": 0.003, "exit": 0.005, "out_of_memory": 0.002,
    "huge_response": 0.002, "flood": 0.003,
}
# Collector faults: (starts at this fraction of the run, lasts this many invocations per 10,000, name, behaviour)
COLLECTOR_FAULTS = [
    (0.10, 800, "down (connection refused)", "down"),
    (0.25, 600, "slow (2 s per request)", {"delay_s": 2.0}),
    (0.40, 400, "answering 500", {"status": 500}),
    (0.50, 400, "answering 429 with Retry-After: 1", {"status": 429, "retry_after": 1}),
    (0.60, 400, "closing connections mid-request", {"close_connection": True}),
]
KILLS = (0.20, 0.55, 0.80)  # the companion is SIGKILLed between invocations here
KILL_MID = 0.70  # ... and in the middle of an invocation here
GARBAGE = (0.05, 0.45, 0.90)  # garbage on the socket and at the telemetry listener
INIT_FAILURES = (0.15, 0.35, 0.65)  # a bad deploy: the next environment's init fails, then it is fixed


def plan(n: int, seed: int) -> list:
    counts = {kind: max(1, round(share * n)) for kind, share in MIX.items()}
    counts["ok"] = n - sum(counts.values())
    return faults.mixed_plan(counts, seed)


def settle(emu, collector: Collector, ledger: Ledger, rng: random.Random, timeout: float = 30) -> None:
    """Before a SIGKILL: wait until the companion holds nothing (every invocation so far exported
    or counted). What a killed process holds in memory dies with it, uncounted by anyone; the
    scenario is about what the function's process does when the companion is gone. With the
    default (adaptive) flushing, a busy function flushes once a second, at an invocation."""
    deadline = time.monotonic() + timeout
    if not environment_up(emu):
        # A reset left no environment: start one with an invocation (its companion owes the
        # environment's init span, which it can only make once it has seen an invocation).
        ledger.invoke(emu, "ok", rng)
    while True:
        emu.wait_idle(30)
        if not account(collector, ledger.request_ids, inits(emu)).lost or time.monotonic() > deadline:
            return
        time.sleep(1.1)  # the next invocation is then due a flush
        ledger.invoke(emu, "ok", rng)


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invocations", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    n = args.invocations
    kinds = plan(n, args.seed)
    rng = random.Random(args.seed)
    task = Path(tempfile.mkdtemp(prefix="lw-soak-")) / "task"
    task.mkdir()
    marker = task.parent / "fail-init"
    (task / "app.py").write_text(FAULT_APP)

    at = {round(share * n): name for share, name in ((s, f"kill {i}") for i, s in enumerate(KILLS))}
    at[round(KILL_MID * n)] = "kill mid-invocation"
    for share in GARBAGE:
        at.setdefault(round(share * n), "garbage")
    for share in INIT_FAILURES:
        at.setdefault(round(share * n), "init failure")
    windows = []  # (first index, last index, name, behaviour)
    for start, length, name, behaviour in COLLECTOR_FAULTS:
        first = round(start * n)
        windows.append((first, first + max(1, length * n // 10_000), name, behaviour))

    # No environment ends (timeout, crash) while the collector is slow: a request in flight when
    # an environment ends, that a slow collector still processes after the companion is gone,
    # is delivered and counted as not delivered, both (at-least-once; docs/reliability.md).
    slow = [w for w in windows if isinstance(w[3], dict) and w[3].get("delay_s")]
    elsewhere = [i for i, kind in enumerate(kinds) if kind == "ok" and not any(w[0] - 20 <= i < w[1] + 20 for w in windows)]
    for first, last, _, _ in slow:
        for i in range(max(0, first - 20), min(n, last + 20)):
            if kinds[i] in faults.RESETTING and elsewhere:
                j = elsewhere.pop()
                kinds[i], kinds[j] = kinds[j], kinds[i]

    ledger = Ledger()
    garbage_statuses: list = []
    caller_by_condition: dict = {"healthy collector": []}
    started = time.monotonic()
    print(f"soak: {n} invocations, seed {args.seed}", flush=True)
    with MotoServer() as moto, Collector() as collector:
        moto.client("secretsmanager").create_secret(Name="soak/db", SecretString=json.dumps({"password": SECRET}))
        env = {
            "AWS_ENDPOINT_URL": moto.endpoint,
            "LAMBDAWRAP_SECRETS": "DB_PASSWORD=secretsmanager:soak/db#password",
            "LAMBDAWRAP_SECRETS_PORT": str(free_port()),
            "LAMBDAWRAP_BUFFER_MAX_SPANS": str(BUFFER_MAX_SPANS),
            # Above the slow collector's 2 s: each retry attempt has time for its answer.
            "OTEL_EXPORTER_OTLP_TIMEOUT": "30",
            "FAIL_INIT_MARKER": str(marker),
        }
        # 128 MB, so that the out-of-memory faults meet the limit; at full CPU, so that the soak
        # takes minutes (the CPU share is measured by bench/run.py).
        with instrumented(task, env=env, receiver=collector, timeout_s=TIMEOUT_S, memory_mb=128, cpu_limit=False) as (emu, _):
            active = None
            for index, kind in enumerate(kinds):
                window = next((w for w in windows if w[0] <= index < w[1]), None)
                if window is not active:
                    if active is not None:
                        collector.reset_behaviour() if active[3] != "down" else collector.up()
                    if window is not None:
                        collector.down() if window[3] == "down" else collector.set_behaviour(**window[3])
                        ledger.conditions[f"invocations while the collector was {window[2]}"] = window[1] - window[0]
                    active = window
                event = at.get(index)
                if event == "kill mid-invocation":
                    settle(emu, collector, ledger, rng)
                    threading.Timer(0.1, kill_companion, (companion_process(emu),)).start()
                    ledger.invoke(emu, "sleep", rng, fault_label="companion killed mid-invocation")
                    ledger.mark_reset()
                elif event and event.startswith("kill "):
                    settle(emu, collector, ledger, rng)
                    kill_companion(companion_process(emu))
                    ledger.faults["companion killed between invocations"] += 1
                    ledger.invoke(emu, "ok", rng)
                    ledger.mark_reset()
                elif event == "init failure":
                    # The environment ends (a crash), the next init fails, the fix lands.
                    marker.touch()
                    ledger.invoke(emu, "exit", rng)
                    ledger.invoke(emu, "init_failure", rng)
                    marker.unlink()
                    ledger.mark_reset()
                elif event == "garbage":
                    emu.wait_idle(30)
                    send_socket_garbage(emu.config.env["LAMBDAWRAP_SOCKET"])
                    garbage_statuses += post_telemetry_garbage(telemetry_port(emu))
                    ledger.faults["garbage frames on the local socket"] += len(faults.SOCKET_GARBAGE)
                    ledger.faults["malformed telemetry batches"] += len(faults.TELEMETRY_GARBAGE) + 1
                outcome = ledger.invoke(emu, kind, rng)
                if kind == "ok" and not outcome.cold:
                    caller_by_condition.setdefault(window[2] if window else "healthy collector", []).append(outcome.caller_ms)
                if (index + 1) % 1000 == 0:
                    print(f"  {index + 1} invocations, {time.monotonic() - started:.0f} s", flush=True)
            if active is not None:
                collector.reset_behaviour() if active[3] != "down" else collector.up()
            # The backlog is delivered by the regular flushes, before SHUTDOWN (flushes happen
            # at invocations: keep a slow trickle of them going).
            recovered = time.monotonic()
            while account(collector, ledger.request_ids, inits(emu)).lost and time.monotonic() - recovered < 120:
                ledger.invoke(emu, "ok", rng)
                time.sleep(0.5)
            before_shutdown = account(collector, ledger.request_ids, inits(emu))
            recovery_s = time.monotonic() - recovered
            environments = inits(emu)
        acc = account(collector, ledger.request_ids, environments)
        exported = {span["attributes"].get("faas.invocation_id") for span in collector.spans()}
        diagnostics = {
            "missing": [(i, o.kind, o.request_id) for i, o in enumerate(ledger.outcomes) if o.request_id not in exported],
            "extension_lines": emu.log_lines("extension"),
            "platform_lines": [line for line in emu.log_lines("platform") if not line.startswith(("START", "END", "REPORT"))],
        }
        captured = json.dumps([emu.records(), emu.log_lines(), collector.spans(), collector.metrics(), collector.logs()], default=str)
        answered = [r["status"] for r in collector.requests()]
    elapsed = time.monotonic() - started

    warm = ledger.warm_caller_ms()
    phases = [o.phase_ms for o in ledger.outcomes[:-1] if o.kind not in faults.RESETTING]
    figures = {
        "invocations": acc.invocations,
        "function faults injected": {k: v for k, v in sorted(ledger.faults.items()) if k in faults.KINDS},
        "environment faults injected": {k: v for k, v in sorted(ledger.faults.items()) if k not in faults.KINDS},
        "collector": dict(ledger.conditions),
        "collector answers": {str(k): answered.count(k) for k in sorted(set(answered), key=str)},
        "spans": acc.spans,
        "lost": acc.lost,
        "duplicates": acc.duplicates,
        "dropped by reason": dict(sorted(acc.dropped.items())),
        "environments (init spans)": f"{acc.init_spans}/{acc.inits}",
        "max span buffer": f"{acc.high_water:g} of {acc.capacity:g}",
        "lost before SHUTDOWN (backlog delivered by regular flushes)": before_shutdown.lost,
        "backlog delivered in": f"{recovery_s:.1f} s",
        "callers that got something else than the function's answer": len(ledger.failures()),
        "warm caller latency": latency_summary(warm),
        "warm caller latency by collector state": {k: latency_summary(v) for k, v in caller_by_condition.items() if v},
        "invoke phase after the response": latency_summary(phases),
        "telemetry garbage answers": {str(k): garbage_statuses.count(k) for k in sorted(set(garbage_statuses))},
        "secret found in captured output": SECRET in captured,
        "duration": f"{elapsed:.0f} s",
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    problems = acc.problems() + ledger.failures()[:20]
    if before_shutdown.lost:
        problems.append(f"lost before SHUTDOWN: {before_shutdown.lost}")
    if SECRET in captured:
        problems.append("the secret value appears in the captured output")
    if any(status not in (200, 400) for status in garbage_statuses):
        problems.append(f"the telemetry listener answered garbage with {sorted(set(garbage_statuses))}")
    if warm and (statistics.median(warm) > 20 or percentile(warm, 0.99) > 200):
        problems.append(f"warm callers waited: {latency_summary(warm)}")
    for problem in problems:
        print("PROBLEM:", problem)
    if problems:
        dump = Path(tempfile.mkdtemp(prefix="lw-soak-diagnostics-")) / "diagnostics.json"
        dump.write_text(json.dumps(diagnostics, indent=1))
        print("diagnostics (missing invocations, companion and platform log lines):", dump)
    print("soak:", "FAILED" if problems else "OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
