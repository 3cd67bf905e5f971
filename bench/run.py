#!/usr/bin/env python3
"""lambdawrap benchmark: the example function bare, with lambdawrap, and with the OpenTelemetry
Lambda layer's approach, side by side in one run, through the emulator and the real awslambdaric.

    python bench/run.py [--smoke] [--n N] [--cold N] [--out DIR] [--python all]

See bench/README.md for what each figure means and how to read the output. Outputs go to
--out (default bench/out/): results.md, results.json, chart.png; a full run also updates
bench/RESULTS.md. Configurations alternate (A B C, B C A, ...) so machine drift hits all alike.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# harness/ and _sink.py live in bench/, which is on sys.path by itself only when this file runs as a script.
sys.path.insert(0, str(BENCH))

from lambdawrap.devtools.interpreters import SUPPORTED_VERSIONS  # noqa: E402
from lambdawrap.devtools.otlp_receiver import OtlpReceiver  # noqa: E402

from harness.chart import draw_chart  # noqa: E402
from harness.configurations import Stack, assemble_otel_layer, install_otel, otel_available  # noqa: E402
from harness.evaluation import evaluate  # noqa: E402
from harness.evidence import evidence_companion_pyspy, evidence_components, evidence_importtime, evidence_pyspy  # noqa: E402
from harness.measure import log  # noqa: E402
from harness.phases.cold import phase_cold  # noqa: E402
from harness.phases.companion import phase_companion  # noqa: E402
from harness.phases.inprocess import phase_inprocess  # noqa: E402
from harness.phases.post import phase_post  # noqa: E402
from harness.phases.versions import phase_versions  # noqa: E402
from harness.phases.warm import SLOW_DELAY_S, phase_warm  # noqa: E402
from harness.plan import Plan  # noqa: E402
from harness.provenance import machine_info  # noqa: E402
from harness.report import RESULTS_MD, render_evidence, render_markdown, write_results_md  # noqa: E402

PHASES = ("inprocess", "warm", "post", "cold", "companion", "versions")


def main(argv: list | None = None) -> int:
    """Parse the command line, run the chosen phases interleaved, and write the outputs."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few invocations per configuration (CI)")
    parser.add_argument("--n", type=int, help="warm invocations per configuration (default 2000)")
    parser.add_argument("--cold", type=int, help="fresh environments per configuration and handler (default 40)")
    parser.add_argument("--out", default=str(BENCH / "out"), help="output folder (default bench/out)")
    parser.add_argument("--only", default="", help=f"comma-separated phases to run: {','.join(PHASES)}")
    parser.add_argument("--no-otel", action="store_true", help="leave the otel configuration out")
    parser.add_argument("--no-evidence", action="store_true", help="skip the importtime/py-spy evidence of a full run")
    parser.add_argument("--evidence", action="store_true", help="collect the importtime/py-spy evidence on a partial run too")
    parser.add_argument("--install-otel", action="store_true", help="install the OpenTelemetry layer packages into bench/.otel-layer and exit")
    parser.add_argument("--python", default="", metavar="X.Y,...", help=f"figure 7: cold start and in-process overhead of bare and lambdawrap on each of these Python versions ('all': {','.join(SUPPORTED_VERSIONS)})")
    args = parser.parse_args(argv)
    if args.install_otel:
        return install_otel()

    plan = Plan.smoke() if args.smoke else Plan()
    if args.n:
        plan.n = args.n
        plan.inproc = args.n
    if args.cold:
        plan.cold = args.cold
    phases = [p.strip() for p in args.only.split(",") if p.strip()] or list(PHASES)
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    versions = list(SUPPORTED_VERSIONS) if args.python.strip() == "all" else [v.strip() for v in args.python.split(",") if v.strip()]
    if "versions" in phases and not versions:
        if args.only:
            parser.error("the versions phase needs --python X.Y,... (or all)")
        phases.remove("versions")
    full = not args.smoke and not args.only and args.n in (None, Plan.n) and args.cold in (None, Plan.cold)

    configs = ["bare", "lambdawrap"]
    skipped: dict = {}
    ok, why = otel_available()
    if args.no_otel:
        skipped["otel configuration"] = "--no-otel"
    elif not ok:
        skipped["otel configuration"] = why
        log("otel configuration skipped: " + why)
    else:
        assemble_otel_layer()
        configs.append("otel")

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    meta = machine_info()
    meta.update(date=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), mode="smoke" if args.smoke else ("full" if full else "partial"), command="python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv))
    results: dict = {"meta": meta, "plan": asdict(plan), "configs": configs, "skipped": skipped}
    stack = Stack(configs)
    rx = OtlpReceiver().start()
    try:
        if "inprocess" in phases:
            log(f"figure 1, in-process: {plan.inproc} calls per configuration and handler, in turns of {plan.chunk}")
            results["inprocess"] = phase_inprocess(stack, plan)
        if "warm" in phases:
            log(f"figures 1, 2, 5: {plan.n} warm invocations per configuration, then {plan.n_slow} against a receiver answering after {SLOW_DELAY_S * 1000:.0f} ms")
            results["warm"] = phase_warm(stack, plan, rx)
            rx.clear()
        if "post" in phases:
            log(f"figure 4: post-response time, {plan.n_post} invocations per flush strategy (+{plan.n_sparse} idle ones for adaptive)")
            results["post"] = phase_post(stack, plan, rx)
            rx.clear()
        if "cold" in phases:
            log(f"figure 3: cold start, {plan.cold} fresh environments per configuration and handler")
            results["cold"] = phase_cold(stack, plan, rx)
            rx.clear()
        if "companion" in phases:
            log(f"figure 6: companion throughput at {list(plan.rates)} records/s, a burst of {plan.burst}, SHUTDOWN with {plan.shutdown_spans} spans buffered")
            results["companion"] = phase_companion(stack, plan)
        if "versions" in phases:
            log(f"figure 7: bare and lambdawrap on Python {', '.join(versions)}")
            results["versions"] = phase_versions(versions, plan, rx, skipped)
            rx.clear()
        evidence: dict = {}
        if (full and not args.no_evidence) or args.evidence:
            log("evidence: -X importtime of a cold start per configuration, py-spy of the in-process wrapper")
            evidence["importtime"] = evidence_importtime(stack, rx)
            evidence["pyspy"] = evidence_pyspy(stack)
            evidence["components"] = evidence_components(stack)
            evidence["companion_pyspy"] = evidence_companion_pyspy(stack, rx)
        results["evidence"] = evidence
    finally:
        rx.stop()
        stack.close()
    meta["elapsed_min"] = (time.monotonic() - started) / 60
    meta["loadavg_end"] = os.getloadavg()[0]
    meta["git_end"] = machine_info()["git"]
    if meta["git_end"] != meta["git"]:
        skipped["consistency"] = f"the lambdawrap sources changed during the run ({meta['git']} -> {meta['git_end']}): processes started at different times ran different code"
        log("WARNING: " + skipped["consistency"])
    rows, targets = evaluate(results)
    results["rows"], results["targets"] = rows, targets
    table = render_markdown(results, rows, targets)
    evidence_md = render_evidence(results.get("evidence") or {})
    chart_problem = draw_chart(results, out_dir / "chart.png")
    if chart_problem:
        skipped["chart"] = chart_problem
        table = render_markdown(results, rows, targets)
    (out_dir / "results.md").write_text("# lambdawrap bench\n\n" + table + ("\n" + evidence_md if evidence_md else ""))
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    if full:
        write_results_md(results, table, evidence_md)
    print(table)
    if evidence_md:
        print(evidence_md)
    log(f"done in {meta['elapsed_min']:.1f} min; wrote {out_dir / 'results.md'}, results.json" + ("" if chart_problem else ", chart.png") + (f" and {RESULTS_MD}" if full else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
