"""The figure rows and the target verdicts (issue 6's limits), computed from the raw results."""

from __future__ import annotations

import math
import statistics

from harness.configurations import COLD_DIAGNOSTICS, CONFIGS, NOOP_EXT
from harness.measure import pct, summary
from harness.phases.versions import version_rows
from harness.phases.warm import SLOW_DELAY_S


def evaluate(results: dict) -> tuple[list, list]:
    """(figure rows, target rows) from the raw results."""
    rows: list = []
    targets: list = []
    configs = results["configs"]

    def row(figure: str, metric: str, values: dict, unit_ratio: bool = True) -> None:
        base = values.get("bare")
        r = {"figure": figure, "metric": metric, **{c: values.get(c) for c in CONFIGS + (NOOP_EXT,)}}
        for c in ("lambdawrap", "otel"):
            v = values.get(c)
            r[f"{c}/bare"] = (v / base) if unit_ratio and v is not None and base not in (None, 0) and not math.isnan(base) else None
        rows.append(r)

    def target(figure: str, text: str, measured: float | None, limit: float, ok: bool | None, note: str = "") -> None:
        targets.append({"figure": figure, "target": text, "measured": measured, "limit": limit, "met": ok, "note": note})

    ip = results.get("inprocess") or {}
    for module, label in (("app", "example"), ("trivial", "trivial")):
        data = ip.get(module)
        if not data:
            continue
        for stat in ("p50", "p99"):
            row("1", f"in-process wrapper overhead {stat}, {label} handler (µs)", {c: data[c]["wrapper_us"][stat] for c in data}, unit_ratio=False)
        for stat in ("p50", "p99"):
            row("1", f"in-process handler call {stat}, {label} handler (µs)", {c: data[c]["total_us"][stat] for c in data})
    warm = results.get("warm") or {}
    if warm.get("latency_ms"):
        lat = {c: summary(v) for c, v in warm["latency_ms"].items()}
        for stat in ("p50", "p99"):
            row("1", f"caller latency warm {stat} (ms), n={lat['bare']['n']}", {c: s[stat] for c, s in lat.items()})
        done = {c: summary(v) for c, v in warm["runtime_done_ms"].items()}
        row("1", "runtimeDone duration p50 (ms)", {c: s["p50"] for c, s in done.items()})
        scopes = warm.get("spans_by_scope") or {}
        if scopes:
            n_inv = len(warm["latency_ms"]["bare"]) + plan_warmup(results)
            row("1", f"sanity: invocation spans at the receiver after {n_inv} warm invocations each (lambdawrap scope 'lambdawrap', otel scope 'opentelemetry.instrumentation.aws_lambda'); user spans ('orders') {scopes.get('orders', 0)} in all; lambdawrap's adaptive flush may still hold the last second's", {"lambdawrap": scopes.get("lambdawrap", 0), "otel": scopes.get("opentelemetry.instrumentation.aws_lambda", 0) if "otel" in configs else None}, unit_ratio=False)
        cpu = warm.get("cpu_us_per_invoke") or {}
        if cpu:
            row("1", "CPU of the handler's process per warm invocation, mean (µs)", {c: v["runtime"] for c, v in cpu.items()})
            row("1", "CPU of the extension per warm invocation, mean (µs)", {c: v["extension"] for c, v in cpu.items() if "extension" in v}, unit_ratio=False)
        slow = {c: summary(v) for c, v in warm["slow_latency_ms"].items()}
        for stat in ("p50", "p99"):
            row("2", f"caller latency, receiver +200 ms, {stat} (ms), n={slow['bare']['n']}", {c: s[stat] for c, s in slow.items()})
        mem = warm["memory_mb"]
        row("5", "handler process peak RSS, VmHWM (MB)", {c: mem[c]["runtime"].get("VmHWM") for c in mem})
        if "lambdawrap" in mem and "companion" in mem["lambdawrap"]:
            row("5", "companion peak RSS, VmHWM (MB)", {"lambdawrap": mem["lambdawrap"]["companion"].get("VmHWM")}, unit_ratio=False)
        d_ours = lat["lambdawrap"]["p50"] - lat["bare"]["p50"]
        if NOOP_EXT in lat:
            d_noop = lat[NOOP_EXT]["p50"] - lat["bare"]["p50"]
            target("1", "caller p50: (bare + no-op extension) − bare, the platform's price of any extension (ms)", d_noop, float("nan"), None, "diagnostic")
            target("1", "caller p50: lambdawrap − (bare + no-op extension), our own part (ms)", lat["lambdawrap"]["p50"] - lat[NOOP_EXT]["p50"], float("nan"), None, "diagnostic")
        if "otel" in lat:
            d_otel = lat["otel"]["p50"] - lat["bare"]["p50"]
            target("1", "caller p50: (lambdawrap − bare) ≤ (otel − bare)/50 (ms)", d_ours, d_otel / 50, d_ours <= d_otel / 50)
        d_slow = slow["lambdawrap"]["p50"] - slow["bare"]["p50"]
        target("2", "receiver +200 ms: caller p50 lambdawrap − bare ≤ 1 ms", d_slow, 1.0, d_slow <= 1.0)
        if "otel" in slow:
            target("2", "receiver +200 ms: otel pays the delay (otel − bare, ms)", slow["otel"]["p50"] - slow["bare"]["p50"], SLOW_DELAY_S * 1000, None, "expected ≈ 200")
        d_mem = (mem["lambdawrap"]["runtime"].get("VmHWM") or 0) - (mem["bare"]["runtime"].get("VmHWM") or 0)
        target("5", "handler process VmHWM: lambdawrap − bare ≤ +5 MB", d_mem, 5.0, d_mem <= 5.0)
        comp = mem.get("lambdawrap", {}).get("companion", {}).get("VmHWM")
        if comp is not None:
            target("5", "companion VmHWM ≤ 60 MB", comp, 60.0, comp <= 60.0)
    if ip.get("app"):
        data = ip["app"]
        d_ours = data["lambdawrap"]["wrapper_us"]["p50"] - data["bare"]["wrapper_us"]["p50"]
        target("1", "in-process p50 (example handler): lambdawrap − bare ≤ 25 µs", d_ours, 25.0, d_ours <= 25.0)
        if "otel" in data:
            d_otel = data["otel"]["wrapper_us"]["p50"] - data["bare"]["wrapper_us"]["p50"]
            target("1", "in-process p50 (example handler): (lambdawrap − bare) ≤ (otel − bare)/50 (µs)", d_ours, d_otel / 50, d_ours <= d_otel / 50)
    if ip.get("trivial"):
        data = ip["trivial"]
        d_ours = data["lambdawrap"]["wrapper_us"]["p50"] - data["bare"]["wrapper_us"]["p50"]
        target("1", "in-process p50 (trivial handler): lambdawrap − bare ≤ 25 µs", d_ours, 25.0, d_ours <= 25.0)
    cold = results.get("cold") or {}
    for module, limit in (("trivial", 1.25), ("with_boto3", 1.05)):
        data = cold.get(module)
        if not data:
            continue
        init = {c: summary(d["init_ms"]) for c, d in data.items()}
        label = "trivial" if module == "trivial" else "boto3-importing"
        for stat in ("p50", "p99"):
            row("3", f"init duration {stat}, {label} handler (ms), n={init['bare']['n']}", {c: s[stat] for c, s in init.items()})
        row("3", f"first (cold) invoke caller latency p50, {label} (ms)", {c: pct(d["first_invoke_ms"], 50) for c, d in data.items()})
        row("3", f"init: runtime ready p50, {label} (ms)", {c: pct(d["runtime_ready_ms"], 50) for c, d in data.items()})
        row("3", f"init: CPU used by the runtime process during init p50, {label} (ms)", {c: pct(d["runtime_cpu_ms"], 50) for c, d in data.items()})
        if data.get("lambdawrap", {}).get("companion_cpu_ms"):
            row("3", f"init: CPU used by the companion during init p50, {label} (ms)", {"lambdawrap": pct(data["lambdawrap"]["companion_cpu_ms"], 50)}, unit_ratio=False)
        if data.get("lambdawrap", {}).get("companion_ready_ms"):
            row("3", f"init: companion ready (first /next) p50, {label} (ms)", {"lambdawrap": pct(data["lambdawrap"]["companion_ready_ms"], 50)}, unit_ratio=False)
        for diag in COLD_DIAGNOSTICS:
            if data.get(diag, {}).get("init_ms"):
                d = data[diag]
                ready = f"; runtime ready {pct(d['runtime_ready_ms'], 50):.1f} ms" + (f", companion ready {pct(d['companion_ready_ms'], 50):.1f} ms" if d["companion_ready_ms"] else "")
                row("3", f"diagnostic, {label}: init p50 with {diag}{ready}", {"lambdawrap": pct(d["init_ms"], 50), "bare": init["bare"]["p50"]})
        ratio = init["lambdawrap"]["p50"] / init["bare"]["p50"]
        target("3", f"init p50 lambdawrap/bare ≤ {limit}, {label}", ratio, limit, ratio <= limit)
        if "otel" in init:
            ours = init["lambdawrap"]["p50"] - init["bare"]["p50"]
            theirs = init["otel"]["p50"] - init["bare"]["p50"]
            target("3", f"init overhead lambdawrap ≤ otel's/10, {label} (ms)", ours, theirs / 10, ours <= theirs / 10)
    post = results.get("post") or {}
    base_post = (warm.get("post_response_ms") or {})
    if post or base_post:
        for c in ("bare", "otel"):
            if base_post.get(c):
                rows.append({"figure": "4", "metric": f"post-response p50 (ms): {c} (no extension)", c: pct(base_post[c], 50)})
        for s, values in post.items():
            rows.append({"figure": "4", "metric": f"post-response p50 / p99 (ms): LAMBDAWRAP_FLUSH={s}, n={len(values)}", "lambdawrap": pct(values, 50), "otel": None, "bare": None, "lambdawrap p99": pct(values, 99)})
    comp = results.get("companion") or {}
    if comp:
        lossless = [s["offered_per_s"] for s in comp["steps"] if s["lossless"]]
        sustained = max(lossless) if lossless else 0
        for s in comp["steps"]:
            rows.append({"figure": "6", "metric": f"offered {s['offered_per_s']}/s: achieved {s['achieved_per_s']:.0f}/s, refused by the socket {s['refused_by_socket']}, delivered {s['delivered']}/{s['sent']}, lambdawrap.dropped {s['companion_dropped']} (value: delivered share)", "lambdawrap": s["delivered"] / max(1, s["sent"])})
        b = comp.get("burst") or {}
        if b:
            rows.append({"figure": "6", "metric": f"burst of {b['records']} records: ingest rate (records/s)", "lambdawrap": b["ingest_per_s"]})
            rows.append({"figure": "6", "metric": "companion CPU per record (µs)", "lambdawrap": b["cpu_us_per_record"]})
        target("6", "records/s sustained without drops ≥ 2,000", float(sustained), 2000.0, sustained >= 2000, f"highest lossless offered rate tested (max tested {max(plan_rates(comp))}/s)")
        sd = comp.get("shutdown") or []
        if sd:
            flush = [x["flush_ms"] for x in sd]
            complete = all(x["delivered"] == x["spans"] for x in sd)
            rows.append({"figure": "6", "metric": f"SHUTDOWN flush of {sd[0]['spans']} buffered spans (ms), median of {len(sd)}; delivered {min(x['delivered'] for x in sd)}/{sd[0]['spans']}", "lambdawrap": statistics.median(flush)})
            rows.append({"figure": "6", "metric": "SHUTDOWN → companion exit (ms), median", "lambdawrap": statistics.median(x["exit_ms"] for x in sd)})
            worst = max(flush) if complete else float("inf")
            target("6", f"flush {sd[0]['spans']} buffered spans on SHUTDOWN ≤ 2,000 ms (worst of {len(sd)}, all delivered)", max(flush), 2000.0, complete and worst <= 2000)
    rows += version_rows(results.get("versions") or {})
    return rows, targets


def plan_warmup(results: dict) -> int:
    """Unmeasured warm invocations per environment in this run."""
    return int((results.get("plan") or {}).get("warmup", 0))


def plan_rates(comp: dict) -> list:
    """The offered rates the companion phase got to (it stops early on heavy loss)."""
    return [s["offered_per_s"] for s in comp["steps"]] or [0]
