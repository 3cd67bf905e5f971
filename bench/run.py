#!/usr/bin/env python3
"""lambdawrap benchmark: functions bare, with lambdawrap's built layer, with the OpenTelemetry
Lambda layer's approach, with ADOT's fast start and with Datadog's library, side by side in one
run at 128, 512 and 1,769 MB under Lambda's limits (CPU share, one memory limit, freezing),
through the emulator and the real awslambdaric.

    python bench/run.py [--smoke] [--n N] [--cold N] [--only PHASES] [--out DIR] [--python all]

See bench/README.md for what each figure means and how to read the output. Outputs go to
--out (default bench/out/): results.md, results.json, chart.png, chart-memory.png; a full run
also updates bench/RESULTS.md. Configurations alternate (A B C D E, then rotated) so machine
drift hits all alike.
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

from harness.built_layer import ensure_built_layer  # noqa: E402
from harness.chart import draw_chart, draw_memory_chart  # noqa: E402
from harness.configurations import COMPETITOR_CONFIGS, Stack  # noqa: E402
from harness.layers import COMPETITORS, install_competitors  # noqa: E402
from harness.evaluation import evaluate  # noqa: E402
from harness.evidence import evidence_companion_pyspy, evidence_components, evidence_importtime, evidence_pyspy  # noqa: E402
from harness.measure import log  # noqa: E402
from harness.phases.cold import phase_cold  # noqa: E402
from harness.phases.companion import phase_companion  # noqa: E402
from harness.phases.flood import phase_flood  # noqa: E402
from harness.phases.inprocess import phase_inprocess  # noqa: E402
from harness.phases.outgoing import phase_outgoing  # noqa: E402
from harness.phases.post import phase_post  # noqa: E402
from harness.phases.versions import phase_versions  # noqa: E402
from harness.phases.warm import SLOW_DELAY_S, phase_warm  # noqa: E402
from harness.plan import Plan  # noqa: E402
from harness.provenance import machine_info  # noqa: E402
from harness.report import RESULTS_MD, render_evidence, render_markdown, write_results_md  # noqa: E402
from harness.sinks import competitor_sinks  # noqa: E402

PHASES = ("inprocess", "warm", "post", "cold", "flood", "companion", "outgoing", "versions")


def main(argv: list | None = None) -> int:
    """Parse the command line, run the chosen phases interleaved, and write the outputs."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few invocations per configuration (CI)")
    parser.add_argument("--n", type=int, help=f"warm invocations per configuration and memory size (default {Plan.n})")
    parser.add_argument("--cold", type=int, help=f"fresh environments per configuration, handler and size with init unthrottled (default {Plan.cold}; a third of it, at least 1, with init throttled)")
    parser.add_argument("--sizes", help="comma-separated memory sizes in MB (default 128,512,1769)")
    parser.add_argument("--out", default=str(BENCH / "out"), help="output folder (default bench/out)")
    parser.add_argument("--only", default="", help=f"comma-separated phases to run: {','.join(PHASES)}")
    parser.add_argument("--without", default="", help=f"comma-separated competitors to leave out: {','.join(COMPETITOR_CONFIGS)}")
    parser.add_argument("--results-md", action="store_true", help="rewrite bench/RESULTS.md from this run although its counts are reduced (--n, --cold; every phase and size must run)")
    parser.add_argument("--no-evidence", action="store_true", help="skip the importtime/py-spy evidence of a full run")
    parser.add_argument("--evidence", action="store_true", help="collect the importtime/py-spy evidence on a partial run too")
    parser.add_argument("--install-competitors", action="store_true", help="install the competitors' layer packages (bench/.otel-layer, .adot-layer, .datadog-layer) and exit")
    parser.add_argument("--python", default="", metavar="X.Y,...", help=f"figure 8: cold start and in-process overhead of bare and lambdawrap on each of these Python versions ('all': {','.join(SUPPORTED_VERSIONS)})")
    args = parser.parse_args(argv)
    if args.install_competitors:
        return install_competitors()

    plan = Plan.smoke() if args.smoke else Plan()
    if args.n:
        plan.n = args.n
        plan.inproc = args.n
    if args.cold:
        plan.cold = args.cold
        plan.cold_as_invoke = max(1, args.cold // 3)
    if args.sizes:
        plan.sizes = tuple(int(x) for x in args.sizes.split(","))
    phases = [p.strip() for p in args.only.split(",") if p.strip()] or list(PHASES)
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    versions = list(SUPPORTED_VERSIONS) if args.python.strip() == "all" else [v.strip() for v in args.python.split(",") if v.strip()]
    if "versions" in phases and not versions:
        if args.only:
            parser.error("the versions phase needs --python X.Y,... (or all)")
        phases.remove("versions")
    full = not args.smoke and not args.only and args.n in (None, Plan.n) and args.cold in (None, Plan.cold) and not args.sizes and not args.without
    if args.results_md and (args.smoke or args.only or args.sizes):
        parser.error("--results-md needs every phase at every size (no --smoke, --only or --sizes)")
    # What bench/RESULTS.md records: a full run, or one with reduced counts that says so.
    recorded = full or args.results_md

    configs = ["bare", "lambdawrap"]
    skipped: dict = {}
    without = {w.strip() for w in args.without.split(",") if w.strip()}
    for name in COMPETITOR_CONFIGS:
        ok, why = COMPETITORS[name].available()
        if name in without:
            skipped[f"{name} configuration"] = "--without"
        elif not ok:
            skipped[f"{name} configuration"] = why
            log(f"{name} configuration skipped: {why}")
        else:
            COMPETITORS[name].assemble()
            configs.append(name)
    layer = ensure_built_layer()

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    meta = machine_info()
    meta.update(date=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), mode="smoke" if args.smoke else ("full" if full else ("reduced" if recorded else "partial")), command="python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv))
    results: dict = {"meta": meta, "plan": asdict(plan), "configs": configs, "skipped": skipped}
    with competitor_sinks() as sinks:
        stack = Stack(configs, layer, sinks)
        rx = OtlpReceiver().start()
        try:
            if "inprocess" in phases:
                log(f"figure 1, in-process: {plan.inproc} calls per configuration and handler, in turns of {plan.chunk}")
                results["inprocess"] = phase_inprocess(stack, plan)
            if "warm" in phases:
                log(f"figures 1, 2, 5: {plan.n} warm invocations per configuration at each of {list(plan.sizes)} MB, then {plan.n_slow} at {plan.full_core_size} MB against a receiver answering after {SLOW_DELAY_S * 1000:.0f} ms")
                results["warm"] = phase_warm(stack, plan, rx)
            if "post" in phases:
                log(f"figure 4: post-response time, {plan.n_post} invocations per flush strategy and size (+{plan.n_sparse} idle ones for adaptive)")
                results["post"] = phase_post(stack, plan, rx)
            if "cold" in phases:
                log(f"figure 3: cold start, {plan.cold} fresh environments per configuration, handler and size with init unthrottled ({plan.cold_later} invocations after the first at {plan.sizes[0]} MB), {plan.cold_as_invoke} with init throttled as an invocation")
                results["cold"] = phase_cold(stack, plan, rx)
                rx.clear()
            if "flood" in phases:
                log(f"figure 5: {plan.n_flood} invocations printing {plan.flood_mb} MB of logs each, bare and lambdawrap, at each size")
                results["flood"] = phase_flood(stack, plan, rx)
            if "companion" in phases:
                log(f"figure 6: companion throughput at {list(plan.rates)} records/s, a burst of {plan.burst}, SHUTDOWN with {plan.shutdown_spans} spans buffered")
                results["companion"] = phase_companion(stack, plan)
            if "outgoing" in phases:
                log(f"figure 7: outgoing calls, {plan.outgoing_rounds} rounds of {plan.outgoing_calls} calls per worker")
                results["outgoing"] = phase_outgoing(plan)
            if "versions" in phases:
                log(f"figure 8: bare and lambdawrap on Python {', '.join(versions)}")
                results["versions"] = phase_versions(versions, plan, rx, skipped)
                rx.clear()
            evidence: dict = {}
            if (recorded and not args.no_evidence) or args.evidence:
                log("evidence: -X importtime of a cold start per configuration, py-spy of the in-process wrapper")
                evidence["importtime"] = evidence_importtime(stack, rx)
                evidence["pyspy"] = evidence_pyspy(stack)
                evidence["components"] = evidence_components(stack)
                evidence["companion_pyspy"] = evidence_companion_pyspy(stack, rx)
            results["evidence"] = evidence
            results["sinks"] = {"adot_udp_datagrams": sinks["adot_udp"].datagrams, "adot_udp_spans": sinks["adot_udp"].spans, "datadog_statsd_datagrams": sinks["datadog_statsd"].datagrams}
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
    chart_problem = draw_chart(results, out_dir / "chart.png") or draw_memory_chart(results, out_dir / "chart-memory.png")
    if chart_problem:
        skipped["chart"] = chart_problem
        table = render_markdown(results, rows, targets)
    (out_dir / "results.md").write_text("# lambdawrap bench\n\n" + table + ("\n" + evidence_md if evidence_md else ""))
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    if recorded:
        write_results_md(results, table, evidence_md, [] if chart_problem else [out_dir / "chart-memory.png", out_dir / "chart.png"])
    print(table)
    if evidence_md:
        print(evidence_md)
    log(f"done in {meta['elapsed_min']:.1f} min; wrote {out_dir / 'results.md'}, results.json" + ("" if chart_problem else ", chart.png, chart-memory.png") + (f" and {RESULTS_MD}" if recorded else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
