"""Figure 1, in-process: the wrapper's overhead in the handler's process, perf_counter around the
wrapped call, each configuration in its own worker, in turns."""

from __future__ import annotations

from harness.configurations import Stack
from harness.helper_processes import Worker, drain_server, receiver_process
from harness.measure import log, rotated, summary
from harness.plan import Plan

# The configurations _inprocess.py can load in a worker (the others are measured through the emulator only).
INPROCESS_CONFIGS = ("bare", "lambdawrap", "otel")


def phase_inprocess(stack: Stack, plan: Plan) -> dict:
    """Wrapper overhead in the handler's process: perf_counter around the wrapped call."""
    out: dict = {}
    with receiver_process() as endpoint:
        for module in ("app", "trivial"):
            sock = stack.socket_path()
            with drain_server(sock):
                workers = {c: Worker(stack, c, module, endpoint, sock) for c in stack.configs if c in INPROCESS_CONFIGS}
                try:
                    data = {c: {"total_ns": [], "inner_ns": []} for c in workers}
                    for w in workers.values():
                        w.ask(f"run {max(plan.chunk, 100)}")  # warm-up, not kept
                    rounds = max(1, plan.inproc // plan.chunk)
                    for i in range(rounds):
                        for c in rotated(list(workers), i):
                            answer = workers[c].ask(f"run {plan.chunk}")
                            data[c]["total_ns"] += answer["total_ns"]
                            data[c]["inner_ns"] += answer["inner_ns"]
                        if rounds >= 10 and (i + 1) % (rounds // 5) == 0:
                            log(f"  in-process {module}: {i + 1}/{rounds} rounds")
                    for c, w in workers.items():
                        data[c]["rss"] = w.ask("rss")
                finally:
                    for w in workers.values():
                        w.close()
            result = {}
            for c, d in data.items():
                total_us = [t / 1000 for t in d["total_ns"]]
                overhead_us = [(t - i) / 1000 for t, i in zip(d["total_ns"], d["inner_ns"])]
                result[c] = {"total_us": summary(total_us), "wrapper_us": summary(overhead_us), "rss": d["rss"], "samples_total_us": total_us}
            out[module] = result
            log(f"  in-process {module}: " + ", ".join(f"{c} wrapper p50 {r['wrapper_us']['p50']:.1f} µs" for c, r in result.items()))
    return out
