"""The markdown report: the figures and targets table, the evidence section, and the generated
part of bench/RESULTS.md (between the bench:begin/end markers)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, Iterable

from harness.configurations import BENCH, CONFIGS, NOOP_EXT
from harness.evaluation import RATIO_CONFIGS

RESULTS_MD = BENCH / "RESULTS.md"
RESULTS_CHARTS = BENCH / "results"  # the charts of the run RESULTS.md shows
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: "–" for no value, thousands separators, fewer digits for large values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def render_markdown(results: dict, rows: list, targets: list) -> str:
    """The run line, the figures table, the targets table and what was skipped."""
    lines = []
    meta = results["meta"]
    lines.append(f"Run: {meta['date']} · {meta['mode']} · {meta['machine']} · load average {meta['loadavg_start']:.2f} at start, {meta.get('loadavg_end', float('nan')):.2f} at end · limits: {meta.get('limits', '?')}")
    lines.append("")
    columns = list(CONFIGS) + [NOOP_EXT]
    ratios = [f"{c}/bare" for c in RATIO_CONFIGS]
    lines.append("| # | metric | " + " | ".join(columns + ratios) + " |")
    lines.append("|---|---|" + "---:|" * (len(columns) + len(ratios)))
    for r in rows:
        values = [fmt(r.get(c)) for c in columns] + [fmt(r.get(k), 3) for k in ratios]
        lines.append(f"| {r['figure']} | {r['metric']} | " + " | ".join(values) + " |")
    lines.append("")
    lines.append("| # | target | measured | limit | met |")
    lines.append("|---|---|---:|---:|:---:|")
    for t in targets:
        met = "–" if t["met"] is None else ("**yes**" if t["met"] else "**NO**")
        note = f" ({t['note']})" if t["note"] else ""
        lines.append(f"| {t['figure']} | {t['target']}{note} | {fmt(t['measured'], 3)} | {fmt(t['limit'], 3)} | {met} |")
    if results.get("skipped"):
        lines.append("")
        for what, why in results["skipped"].items():
            lines.append(f"- skipped {what}: {why}")
    return "\n".join(lines) + "\n"


def render_evidence(evidence: dict) -> str:
    """The "Where the time goes" section; empty without evidence."""
    if not evidence:
        return ""
    lines = ["### Where the time goes (generated evidence)", ""]
    imp = evidence.get("importtime") or {}
    for c, parts in imp.items():
        for proc, s in parts.items():
            lines.append(f"`-X importtime`, {c} {proc} process (one cold start; the profiler inflates times): {s['modules']} modules, {s['total_ms']:.0f} ms of imports.")
            extra = s.get("extra_vs_bare")
            if extra:
                twice = " (×2: imported in the opentelemetry-instrument process and again in the runtime it execs)" if extra["imports"] > extra["modules"] else ""
                lines.append(f"Modules bare's runtime does not import: {extra['modules']}{twice}, {extra['self_ms']:.1f} ms of self time. The biggest:")
                lines += _name_table("module (not imported by bare)", "self ms", extra["top_self"][:12], "{:.1f}")
            else:
                lines.append("Top-level imports by cumulative time:")
                lines += _name_table("module", "cumulative ms", s["top_level_cumulative"][:10], "{:.1f}")
            lines.append("")
    comp = evidence.get("components") or {}
    if comp and not comp.get("skipped"):
        lines.append(f"Steps of lambdawrap's per-invocation work in the handler's process (p50 of 1,000 timed calls each; record = {comp.get('record_bytes')} bytes). 'after idle' sleeps 2 ms before each call, as a function does between invocations: caches and branch predictors are cold again.")
        lines.append("")
        lines.append("| step | hot µs | after idle µs |")
        lines.append("|---|---:|---:|")
        for name, v in comp.items():
            if isinstance(v, dict):
                lines.append(f"| {name} | {v['hot_us']:.1f} | {v['after_idle_us']:.1f} |")
        lines.append("")
    spy = evidence.get("pyspy") or {}
    if spy.get("skipped"):
        lines.append(f"py-spy: skipped ({spy['skipped']})")
    elif spy:
        lines.append(f"py-spy record (2 kHz, CPU samples only, {spy['seconds']} s attached to the warm in-process worker running the example handler with lambdawrap, ~{spy['calls_during']} calls): {spy['samples']} samples, {spy['samples_in_lambdawrap_or_wrapt']} in lambdawrap/wrapt frames, {spy['samples_in_user_code']} under the user's handler. Inclusive samples per lambdawrap/wrapt frame:")
        lines += _name_table("frame", "samples", spy["top_inclusive"])
        lines.append("")
        lines.append("Leaf frames outside the user's handler (where the CPU was):")
        lines += _name_table("frame", "samples", spy["top_leaf"])
    cspy = evidence.get("companion_pyspy") or {}
    if cspy.get("skipped"):
        lines.append(f"py-spy of the companion: skipped ({cspy['skipped']})")
    elif cspy:
        lines.append("")
        lines.append(f"py-spy record of the companion (1 kHz, all threads, {cspy['seconds']} s, {cspy['invocations']} back-to-back invocations of the example function, default flush strategy): {cspy['busy_samples']} samples holding the GIL (`py-spy --gil`), i.e. ≈ {cspy['busy_samples'] / max(1, cspy['invocations']):.2f} ms of CPU per invocation. By thread:")
        lines += _name_table("thread", "samples", cspy["threads"])
        lines.append("")
        lines.append("Inclusive samples per lambdawrap/opentelemetry frame:")
        lines += _name_table("frame", "samples", cspy["top_inclusive"])
        lines.append("")
        lines.append("Leaf frames:")
        lines += _name_table("frame", "samples", cspy["top_leaf"])
    return "\n".join(lines) + "\n"


def _name_table(name_heading: str, value_heading: str, pairs: Iterable[tuple[str, Any]], value_format: str = "{}") -> list[str]:
    """A blank line, then a markdown table of (name, value) pairs: names in backticks, values right-aligned."""
    return ["", f"| {name_heading} | {value_heading} |", "|---|---:|", *(f"| `{name}` | {value_format.format(value)} |" for name, value in pairs)]


def write_results_md(results: dict, table: str, evidence_md: str, charts: Iterable[Path] = ()) -> None:
    """Rewrite the generated part of bench/RESULTS.md, keeping what is outside the markers;
    the charts are copied to bench/results/ (committed with it) and shown there."""
    meta = results["meta"]
    versions = "\n".join(f"- {k}: {v}" for k, v in meta["versions"].items())
    plan = results["plan"]
    images = []
    for chart in charts:
        RESULTS_CHARTS.mkdir(exist_ok=True)
        shutil.copy2(chart, RESULTS_CHARTS / chart.name)
        images.append(f"![{chart.stem}]({RESULTS_CHARTS.name}/{chart.name})")
    block = "\n".join(
        [
            BEGIN,
            f"## Latest {'full run' if meta['mode'] == 'full' else 'run, with reduced counts (see the plan)'}: {meta['date']}",
            "",
            f"- machine: {meta['machine']}; Python {meta['python']}; lambdawrap at {meta['git']}",
            f"- command: `{meta['command']}` ({meta['elapsed_min']:.1f} min)",
            f"- plan: {json.dumps(plan)}",
            versions,
            "",
            *[line for image in images for line in (image, "")],
            table,
            evidence_md,
            END,
        ]
    )
    if RESULTS_MD.exists():
        text = RESULTS_MD.read_text()
        if BEGIN in text and END in text:
            head, _, rest = text.partition(BEGIN)
            _, _, tail = rest.partition(END)
            RESULTS_MD.write_text(head + block + tail)
            return
    RESULTS_MD.write_text("# lambdawrap bench results\n\nGenerated by `python bench/run.py` (full run); the section between the markers is rewritten on each full run.\n\n" + block + "\n")
