"""The charts, drawn with matplotlib when it is installed: chart-memory.png (init and billed
duration, first and warm, against memory size, one line per configuration) and chart.png (the
other figures)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.configurations import CONFIGS, NOOP_EXT
from harness.measure import pct
from harness.report import fmt

COLORS = {"bare": "#7f7f7f", NOOP_EXT: "#c7c7c7", "lambdawrap": "#1f77b4", "otel": "#ff7f0e", "adot-fast-start": "#2ca02c", "datadog": "#9467bd", "p50": "#1f77b4", "p99": "#aec7e8"}
MISSING = "matplotlib is not installed (pip install -r bench/requirements.txt)"


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _figure(results: dict, title: str, height: float) -> tuple | None:
    """(pyplot, figure, its 2×4 axes, the configurations that ran); None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(2, 4, figsize=(22, height))
    fig.suptitle(f"{title} — {results['meta']['date']} — {results['meta']['mode']}")
    return plt, fig, axes, [c for c in CONFIGS if c in results["configs"]]


def _finish(fig: Any, axes: Any, path: Path, plt: Any) -> None:
    for ax in axes.flat:
        if not ax.has_data():
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _lines(ax: Any, title: str, per_config: dict, ylabel: str) -> None:
    """One line per configuration: {config: {size: value}}, sizes on a log x axis."""
    for c, by_size in per_config.items():
        sizes = sorted(int(s) for s in by_size)
        values = [by_size[str(s)] for s in sizes]
        if not any(v is not None and not math.isnan(v) for v in values):
            continue
        ax.plot(sizes, values, "o-", label=c, color=COLORS.get(c))
        for x, v in zip(sizes, values):
            if v is not None and not math.isnan(v):
                ax.annotate(fmt(v), (x, v), fontsize=6, textcoords="offset points", xytext=(3, 3))
    ax.set_xscale("log")
    ax.set_yscale("log")
    sizes = sorted({int(s) for by_size in per_config.values() for s in by_size})
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes])
    ax.set_xlabel("memory (MB)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def draw_memory_chart(results: dict, path: Path) -> str | None:
    """Init and billed duration (first and warm) against memory size; why not, or None."""
    drawing = _figure(results, "lambdawrap bench against memory size (under Lambda's limits)", 10)
    if drawing is None:
        return MISSING
    plt, fig, axes, configs = drawing
    cold = results.get("cold") or {}

    def cold_p50(policy: str, module: str, field: str) -> dict:
        return {c: {s: pct(cold[s].get(policy, {}).get(module, {}).get(c, {}).get(field, []), 50) for s in cold} for c in configs}

    panels = [
        ("init p50, trivial handler, init unthrottled", "unthrottled", "trivial", "init_ms"),
        ("init p50, trivial handler, init throttled as invoke", "as-invoke", "trivial", "init_ms"),
        ("init p50, boto3-importing handler, init unthrottled", "unthrottled", "with_boto3", "init_ms"),
        ("init p50, boto3-importing handler, init throttled as invoke", "as-invoke", "with_boto3", "init_ms"),
        ("first invoke billed p50, trivial handler (init unthrottled)", "unthrottled", "trivial", "first_billed_ms"),
        ("first invoke billed p50, boto3-importing handler (init unthrottled)", "unthrottled", "with_boto3", "first_billed_ms"),
    ]
    for ax, (title, policy, module, field) in zip(list(axes.flat)[:6], panels):
        if cold:
            _lines(ax, title, cold_p50(policy, module, field), "ms")
    warm = results.get("warm") or {}
    if warm:
        _lines(axes[1][2], "warm billed duration p50, example function", {c: {s: pct(warm[s]["billed_ms"].get(c, []), 50) for s in warm} for c in configs}, "ms")
        _lines(axes[1][3], "environment memory after the warm run (maxMemoryUsedMB)", {c: {s: warm[s]["max_memory_mb"].get(c) for s in warm} for c in configs}, "MB")
    _finish(fig, axes, path, plt)
    return None


def _bars(ax: Any, title: str, groups: list, series: dict, ylabel: str, log_scale: bool = False) -> None:
    width = 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        xs = [g + k * width for g in range(len(groups))]
        ax.bar(xs, [v if v is not None and not math.isnan(v) else 0 for v in values], width, label=name, color=COLORS.get(name))
        for x, v in zip(xs, values):
            if v is not None and not math.isnan(v):
                ax.text(x, v, fmt(v), ha="center", va="bottom", fontsize=6)
    ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))])
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel)
    if log_scale:
        ax.set_yscale("log")
    ax.legend(fontsize=7)


def draw_chart(results: dict, path: Path) -> str | None:
    """The other figures, one panel each; why not drawn, or None."""
    drawing = _figure(results, "lambdawrap bench", 9)
    if drawing is None:
        return MISSING
    plt, fig, axes, configs = drawing
    warm = results.get("warm") or {}
    sizes = list(warm)
    if warm:
        _bars(axes[0][0], "1. warm caller latency p50", [f"{s} MB" for s in sizes], {c: [pct(warm[s]["latency_ms"].get(c, []), 50) for s in sizes] for c in configs}, "ms", log_scale=True)
        _bars(axes[0][2], "1. CPU per warm invocation (environment)", [f"{s} MB" for s in sizes], {c: [warm[s]["cpu_us_per_invoke"].get(c, {}).get("environment") for s in sizes] for c in configs}, "µs")
        full = warm[sizes[-1]]
        if full.get("slow_latency_ms"):
            slow = full["slow_latency_ms"]
            _bars(axes[0][3], f"2. caller latency, receiver +200 ms ({sizes[-1]} MB)", ["p50", "p99"], {c: [pct(slow[c], 50), pct(slow[c], 99)] for c in configs if c in slow}, "ms", log_scale=True)
    ip = results.get("inprocess") or {}
    if ip:
        mods = [m for m in ("app", "trivial") if m in ip]
        _bars(axes[0][1], "1. in-process wrapper overhead p50 (full core)", ["example" if m == "app" else m for m in mods], {c: [max(ip[m][c]["wrapper_us"]["p50"], 0.01) for m in mods] for c in configs if c in ip[mods[0]]}, "µs", log_scale=True)
    post = results.get("post") or {}
    if post:
        strategies = list(next(iter(post.values())))
        _bars(axes[1][0], "4. post-response p50 (lambdawrap)", [s.replace(" (idle, 1.1 s gaps)", "\n(idle)").replace(" (idle, 1.1 s gaps, ", "\n(idle, ") for s in strategies], {f"{s} MB": [pct(post[s].get(k, []), 50) for k in strategies] for s in post}, "ms", log_scale=True)
    comp = results.get("companion") or {}
    if comp.get("steps"):
        ax = axes[1][1]
        offered = [s["offered_per_s"] for s in comp["steps"]]
        ax.plot(offered, offered, "--", color="#9e9e9e", label="offered")
        ax.plot(offered, [s["delivered"] / (s["sent"] / s["offered_per_s"]) for s in comp["steps"]], "o-", color=COLORS["lambdawrap"], label="delivered/s")
        ax.axvline(2000, color="red", lw=0.8, ls=":", label="target 2,000/s")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title("6. companion throughput", fontsize=9)
        ax.set_xlabel("records/s offered")
        ax.legend(fontsize=7)
    flood = results.get("flood") or {}
    if flood:
        fsizes = list(flood)
        _bars(axes[1][2], "5. environment memory under a log flood (maxMemoryUsedMB)", [f"{s} MB" for s in fsizes], {c: [flood[s].get(c, {}).get("max_memory_mb") for s in fsizes] for c in ("bare", "lambdawrap")}, "MB")
    sd = comp.get("shutdown") or []
    if sd:
        ax = axes[1][3]
        ax.bar([str(k + 1) for k in range(len(sd))], [x["flush_ms"] for x in sd], color=COLORS["lambdawrap"])
        ax.axhline(2000, color="red", lw=0.8, ls=":", label="target 2,000 ms")
        ax.set_title(f"6. SHUTDOWN flush of {sd[0]['spans']} spans", fontsize=9)
        ax.set_ylabel("ms")
        ax.set_xlabel("repeat")
        ax.legend(fontsize=7)
    _finish(fig, axes, path, plt)
    return None
