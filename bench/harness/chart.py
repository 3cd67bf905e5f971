"""The chart (chart.png): one panel per figure, drawn with matplotlib when it is installed."""

from __future__ import annotations

import math
from pathlib import Path

from harness.configurations import NOOP_EXT
from harness.measure import pct
from harness.report import fmt


def draw_chart(results: dict, path: Path) -> str | None:
    """Draw chart.png; returns why it was not drawn (matplotlib missing), None when it was."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -r bench/requirements.txt)"
    configs = results["configs"]
    colors = {"bare": "#9e9e9e", NOOP_EXT: "#d0d0d0", "lambdawrap": "#1f77b4", "otel": "#ff7f0e", "p50": "#1f77b4", "p99": "#aec7e8"}
    fig, axes = plt.subplots(2, 4, figsize=(20, 9))
    fig.suptitle(f"lambdawrap bench — {results['meta']['date']} — {results['meta']['mode']}")

    def bars(ax, title: str, groups: list, series: dict, ylabel: str, log_scale: bool = False) -> None:
        width = 0.8 / max(1, len(series))
        for k, (name, values) in enumerate(series.items()):
            xs = [g + k * width for g in range(len(groups))]
            ax.bar(xs, [v if v is not None and not math.isnan(v) else 0 for v in values], width, label=name, color=colors.get(name))
            for x, v in zip(xs, values):
                if v is not None and not math.isnan(v):
                    ax.text(x, v, fmt(v), ha="center", va="bottom", fontsize=7)
        ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))])
        ax.set_xticklabels(groups, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        if log_scale:
            ax.set_yscale("log")
        ax.legend(fontsize=7)

    warm = results.get("warm") or {}
    if warm.get("latency_ms"):
        lat = warm["latency_ms"]
        bars(axes[0][0], "1. caller latency, warm", ["p50", "p99"], {c: [pct(lat[c], 50), pct(lat[c], 99)] for c in lat}, "ms")
        slow = warm["slow_latency_ms"]
        bars(axes[0][2], "2. caller latency, receiver +200 ms", ["p50", "p99"], {c: [pct(slow[c], 50), pct(slow[c], 99)] for c in configs}, "ms", log_scale=True)
        mem = warm["memory_mb"]
        groups = ["handler process"] + (["companion"] if "companion" in mem.get("lambdawrap", {}) else [])
        bars(axes[1][2], "5. peak RSS (VmHWM)", groups, {c: [mem[c]["runtime"].get("VmHWM")] + ([mem[c].get("companion", {}).get("VmHWM", float("nan"))] if len(groups) > 1 else []) for c in configs}, "MB")
    ip = results.get("inprocess") or {}
    if ip:
        mods = [m for m in ("app", "trivial") if m in ip]
        bars(axes[0][1], "1. in-process wrapper overhead p50", ["example" if m == "app" else m for m in mods], {c: [max(ip[m][c]["wrapper_us"]["p50"], 0.01) for m in mods] for c in configs}, "µs", log_scale=True)
    cold = results.get("cold") or {}
    if cold:
        mods = [m for m in ("trivial", "with_boto3") if m in cold]
        bars(axes[0][3], "3. init duration p50 (cold start)", ["trivial" if m == "trivial" else "imports boto3" for m in mods], {c: [pct(cold[m][c]["init_ms"], 50) for m in mods] for c in configs}, "ms")
    post = results.get("post") or {}
    if post:
        ax = axes[1][0]
        names = list(post)
        p50 = [pct(post[s], 50) for s in names]
        p99 = [pct(post[s], 99) for s in names]
        bars(ax, "4. post-response time (lambdawrap)", [n.replace(" (idle, 1.1 s gaps)", "\n(idle)") for n in names], {"p50": p50, "p99": p99}, "ms")
    comp = results.get("companion") or {}
    if comp.get("steps"):
        ax = axes[1][1]
        offered = [s["offered_per_s"] for s in comp["steps"]]
        ax.plot(offered, offered, "--", color="#9e9e9e", label="offered")
        ax.plot(offered, [s["delivered"] / (s["sent"] / s["offered_per_s"]) / 1 for s in comp["steps"]], "o-", color=colors["lambdawrap"], label="delivered/s")
        ax.axvline(2000, color="red", lw=0.8, ls=":", label="target 2,000/s")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title("6. companion throughput", fontsize=10)
        ax.set_xlabel("records/s offered")
        ax.legend(fontsize=7)
    sd = comp.get("shutdown") or []
    ax = axes[1][3]
    if sd:
        ax.bar([str(k + 1) for k in range(len(sd))], [x["flush_ms"] for x in sd], color=colors["lambdawrap"])
        ax.axhline(2000, color="red", lw=0.8, ls=":", label="target 2,000 ms")
        ax.set_title(f"6. SHUTDOWN flush of {sd[0]['spans']} spans", fontsize=10)
        ax.set_ylabel("ms")
        ax.set_xlabel("repeat")
        ax.legend(fontsize=7)
    for row_axes in axes:
        for ax in row_axes:
            if not ax.has_data():
                ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
