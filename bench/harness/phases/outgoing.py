"""Figure 7, outgoing calls: the CPU an outgoing call adds in the function's process, bare vs
lambdawrap's hooks vs OpenTelemetry's instrumentations (contrib), one worker process each
(bench/_outgoing.py), against a local moto server and a local HTTP server.

The workers alternate round by round (A B C, B C A, ...); a round is one invocation of N calls,
timed in process CPU time (background threads included, waiting excluded). Per call: the median
and the minimum over rounds of (CPU of the round / N), less bare's."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

from harness.configurations import BENCH, ROOT
from harness.measure import log, rotated
from harness.plan import Plan

CONFIGS = ("bare", "lambdawrap", "contrib")
KINDS = ("aws", "http", "aws-answered-in-process", "http-answered-in-process")
LABELS = {
    "aws": "boto3 DynamoDB.ListTables (moto)",
    "http": "requests.get (local server)",
    "aws-answered-in-process": "boto3 DynamoDB.ListTables, answered in process",
    "http-answered-in-process": "requests.get, answered in process",
}


def phase_outgoing(plan: Plan) -> dict:
    """{kind: {"median"|"min": {bare_us, lambdawrap_added_us, contrib_added_us, ratio}}}."""
    # The moto server and the recording HTTP server are the test suite's own loopback servers.
    sys.path[:0] = [str(ROOT / "tests")]
    from lambdawrap.devtools.local.moto_server import MotoServer
    from support.local_servers import recording_server

    samples: dict = {(c, k): [] for c in CONFIGS for k in KINDS}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LAMBDAWRAP_"))}
    env.update(PYTHONPATH=str(ROOT / "src"), NO_PROXY="127.0.0.1")
    with MotoServer() as moto, recording_server() as http:
        workers = {c: subprocess.Popen([sys.executable, str(BENCH / "_outgoing.py"), c, moto.endpoint, http.url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env) for c in CONFIGS}
        try:
            for i in range(plan.outgoing_rounds):
                for kind in KINDS:
                    for config in rotated(list(CONFIGS), i):
                        proc = workers[config]
                        proc.stdin.write(f"{kind} {plan.outgoing_calls}\n")
                        proc.stdin.flush()
                        answer = json.loads(proc.stdout.readline())
                        if "cpu_ns" in answer:
                            samples[(config, kind)].append(answer["cpu_ns"] / plan.outgoing_calls)
                        else:
                            log(f"  outgoing {config} {kind}: round not counted ({answer['error']})")
        finally:
            for proc in workers.values():
                proc.stdin.close()
                proc.wait(30)
    out: dict = {}
    for kind in KINDS:
        row = {}
        for name, estimate in (("median", statistics.median), ("min", min)):
            if not all(samples[(c, kind)] for c in CONFIGS):
                continue
            bare = estimate(samples[("bare", kind)])
            ours = estimate(samples[("lambdawrap", kind)]) - bare
            theirs = estimate(samples[("contrib", kind)]) - bare
            row[name] = {"bare_us": bare / 1000, "lambdawrap_added_us": ours / 1000, "contrib_added_us": theirs / 1000, "ratio": ours / theirs if theirs > 0 else None}
        out[kind] = row
    log("  outgoing: added µs per call (median) " + ", ".join(f"{k}: lambdawrap {v['median']['lambdawrap_added_us']:.1f}, contrib {v['median']['contrib_added_us']:.1f}" for k, v in out.items() if "median" in v))
    return out
