"""The figure rows (every configuration, its ratio to bare) and the target verdicts (issue 15's,
and issue 6's that still apply), computed from the raw results."""

from __future__ import annotations

import math
import statistics

from harness.configurations import COLD_DIAGNOSTICS, CONFIGS, FULL_CORE_MB, NOOP_EXT
from harness.measure import pct, summary
from harness.phases.cold import FIELDS
from harness.phases.warm import SLOW_DELAY_S

RATIO_CONFIGS = CONFIGS[1:]
SMALL_MB = 128  # "at 128 MB unless said"
MODULE_LABELS = {"trivial": "trivial", "with_boto3": "boto3-importing"}


def _finite(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


class Table:
    """Rows and targets as they are added."""

    def __init__(self) -> None:
        self.rows: list = []
        self.targets: list = []

    def row(self, figure: str, metric: str, values: dict, ratios: bool = True) -> None:
        """One figure row: a value per configuration, and its ratio to bare's."""
        base = values.get("bare")
        r = {"figure": figure, "metric": metric, **{c: values.get(c) for c in CONFIGS + (NOOP_EXT,)}}
        for c in RATIO_CONFIGS:
            v = values.get(c)
            r[f"{c}/bare"] = v / base if ratios and _finite(v) and _finite(base) and base != 0 else None
        self.rows.append(r)

    def target(self, figure: str, text: str, measured: float | None, limit: float, ok: bool | None, note: str = "") -> None:
        """One target: what was measured, the limit, and whether it was met (None: informational)."""
        if ok is not None and not _finite(measured):
            ok, note = False, (note + "; " if note else "") + "not measured"
        self.targets.append({"figure": figure, "target": text, "measured": measured, "limit": limit, "met": ok, "note": note})

    def at_most(self, figure: str, text: str, measured: float | None, limit: float, note: str = "") -> None:
        """A target met when measured ≤ limit."""
        self.target(figure, text, measured, limit, _finite(measured) and _finite(limit) and measured <= limit, note)


def evaluate(results: dict) -> tuple[list, list]:
    """(figure rows, target rows) from the raw results."""
    t = Table()
    for part in (_inprocess, _warm, _cold, _post, _memory, _companion, _outgoing, _versions):
        part(results, t)
    return t.rows, t.targets


def _inprocess(results: dict, t: Table) -> None:
    ip = results.get("inprocess") or {}
    for module, label in (("app", "example"), ("trivial", "trivial")):
        data = ip.get(module)
        if not data:
            continue
        for stat in ("p50", "p99"):
            t.row("1", f"in-process wrapper overhead {stat}, {label} handler, full core (µs)", {c: data[c]["wrapper_us"][stat] for c in data}, ratios=False)
        for stat in ("p50", "p99"):
            t.row("1", f"in-process handler call {stat}, {label} handler, full core (µs)", {c: data[c]["total_us"][stat] for c in data})
        d_ours = data["lambdawrap"]["wrapper_us"]["p50"] - data["bare"]["wrapper_us"]["p50"]
        t.at_most("1", f"in-process overhead p50 ({label} handler): lambdawrap − bare ≤ 25 µs", d_ours, 25.0)
        if module == "app" and "otel" in data:
            d_otel = data["otel"]["wrapper_us"]["p50"] - data["bare"]["wrapper_us"]["p50"]
            t.at_most("1", "in-process p50 (example handler): (lambdawrap − bare) ≤ (otel − bare)/50 (µs, issue 6)", d_ours, d_otel / 50)


def _warm(results: dict, t: Table) -> None:
    warm = results.get("warm") or {}
    for size, w in warm.items():
        at = f"{size} MB"
        lat = {c: summary(v) for c, v in w["latency_ms"].items()}
        n = lat["bare"]["n"]
        for stat in ("p50", "p99"):
            t.row("1", f"{at}: warm caller latency {stat} (ms), n={n}", {c: s[stat] for c, s in lat.items()})
        t.row("1", f"{at}: warm billed duration p50 (ms)", {c: pct(v, 50) for c, v in w["billed_ms"].items()})
        t.row("1", f"{at}: warm duration p50, invoke → last extension's /next (ms)", {c: pct(v, 50) for c, v in w["duration_ms"].items()})
        t.row("1", f"{at}: warm runtimeDone duration p50 (ms)", {c: pct(v, 50) for c, v in w["runtime_done_ms"].items()})
        t.row("1", f"{at}: warm post-response (extensionOverhead) p50 (ms)", {c: pct(v, 50) for c, v in w["post_response_ms"].items()}, ratios=False)
        cpu = w.get("cpu_us_per_invoke") or {}
        t.row("1", f"{at}: CPU per warm invocation, all processes of the environment, mean (µs)", {c: v["environment"] for c, v in cpu.items()})
        t.row("1", f"{at}: CPU per warm invocation, the function's process, mean (µs)", {c: v["runtime"] for c, v in cpu.items()})
        t.row("1", f"{at}: CPU per warm invocation, the companion, mean (µs)", {c: v["companion"] for c, v in cpu.items() if "companion" in v}, ratios=False)
        billed = {c: pct(v, 50) for c, v in w["billed_ms"].items()}
        if int(size) == SMALL_MB:
            t.at_most("1", f"{at}: warm billed duration p50, lambdawrap − bare ≤ 1 ms", billed["lambdawrap"] - billed["bare"], 1.0)
        if int(size) == FULL_CORE_MB and cpu:
            comp = cpu["lambdawrap"].get("companion")
            t.at_most("1", f"{at} (a full core): companion CPU per warm invocation ≤ 300 µs", comp, 300.0)
            t.at_most("1", f"{at} (a full core): CPU per warm invocation, function + companion, lambdawrap − bare ≤ 300 µs", cpu["lambdawrap"]["environment"] - cpu["bare"]["environment"], 300.0, f"bare {cpu['bare']['environment']:.0f} µs")
            for c in ("adot-fast-start", "datadog", "otel"):
                if c in cpu:
                    t.target("1", f"{at}: CPU per warm invocation, {c} − bare (µs, for comparison)", cpu[c]["environment"] - cpu["bare"]["environment"], float("nan"), None)
            d_ours = lat["lambdawrap"]["p50"] - lat["bare"]["p50"]
            if NOOP_EXT in lat:
                t.target("1", f"{at}: caller p50, (bare + no-op extension) − bare: the emulator's price of any extension (ms)", lat[NOOP_EXT]["p50"] - lat["bare"]["p50"], float("nan"), None, "diagnostic")
            if "otel" in lat:
                t.at_most("1", f"{at}: caller p50, (lambdawrap − bare) ≤ (otel − bare)/50 (ms, issue 6)", d_ours, (lat["otel"]["p50"] - lat["bare"]["p50"]) / 50)
        scopes = w.get("spans_by_scope")
        if scopes is not None:
            t.row("1", f"{at}: sanity, spans at the receivers after the warm invocations (lambdawrap: scope 'lambdawrap'; otel: its aws_lambda scope; adot-fast-start: spans over UDP); user spans ('orders') {scopes.get('orders', 0)} in all", {"lambdawrap": scopes.get("lambdawrap", 0), "otel": scopes.get("opentelemetry.instrumentation.aws_lambda") if "otel" in lat else None, "adot-fast-start": w.get("adot_udp_spans") if "adot-fast-start" in lat else None}, ratios=False)
        slow = w.get("slow_latency_ms")
        if slow:
            s = {c: summary(v) for c, v in slow.items()}
            for stat in ("p50", "p99"):
                t.row("2", f"{at}: caller latency, receiver +200 ms, {stat} (ms), n={s['bare']['n']}", {c: x[stat] for c, x in s.items()})
            t.at_most("2", f"{at}: receiver +200 ms, caller p50 lambdawrap − bare ≤ 1 ms (issue 6)", s["lambdawrap"]["p50"] - s["bare"]["p50"], 1.0)
            if "otel" in s:
                t.target("2", f"{at}: receiver +200 ms, otel pays the delay (otel − bare, ms)", s["otel"]["p50"] - s["bare"]["p50"], SLOW_DELAY_S * 1000, None, "expected ≈ 200")


def _cold(results: dict, t: Table) -> None:
    cold = results.get("cold") or {}
    for size, by_policy in cold.items():
        for policy, by_module in by_policy.items():
            for module, data in by_module.items():
                label = f"{size} MB, init {policy}, {MODULE_LABELS[module]}"
                configs = [c for c in data if c not in COLD_DIAGNOSTICS]
                p50 = {field: {c: pct(data[c][field], 50) for c in configs} for field in FIELDS}
                n = len(data["bare"]["init_ms"])
                failed = {c: len(data[c]["failures"]) for c in configs if data[c].get("failures")}
                t.row("3", f"{label}: init duration p50 (ms), n={n}" + (f"; failed cold starts {failed}" if failed else ""), p50["init_ms"])
                t.row("3", f"{label}: init duration p99 (ms)", {c: pct(data[c]["init_ms"], 99) for c in configs})
                t.row("3", f"{label}: first invoke, caller latency p50 (ms)", p50["first_caller_ms"])
                t.row("3", f"{label}: first invoke, billed duration p50 (ms)", p50["first_billed_ms"])
                t.row("3", f"{label}: first invoke, post-response p50 (ms)", p50["first_post_response_ms"], ratios=False)
                t.row("3", f"{label}: first invoke, maxMemoryUsedMB p50", p50["first_max_memory_mb"])
                t.row("3", f"{label}: init, runtime ready p50 (ms)", p50["runtime_ready_ms"])
                t.row("3", f"{label}: init, CPU of the runtime process p50 (ms)", p50["runtime_cpu_ms"])
                t.row("3", f"{label}: init, CPU of the companion p50 (ms); companion ready (first /next) p50 {p50['companion_ready_ms'].get('lambdawrap', float('nan')):.1f} ms", {"lambdawrap": p50["companion_cpu_ms"].get("lambdawrap")}, ratios=False)
                later = (results.get("plan") or {}).get("cold_later") or 0
                if data["bare"].get("later_billed_ms"):
                    which = f"invocations 2–{1 + later}, back to back"
                    t.row("3", f"{label}: later {which}: billed duration, p50 over environments of each one's median (ms)", p50["later_billed_ms"])
                    t.row("3", f"{label}: later {which}: billed duration, p50 over environments of each one's largest (ms)", p50["later_billed_max_ms"])
                for diag in COLD_DIAGNOSTICS:
                    d = data.get(diag)
                    if d and d["init_ms"]:
                        ready = f"; runtime ready {pct(d['runtime_ready_ms'], 50):.1f} ms" + (f", companion ready {pct(d['companion_ready_ms'], 50):.1f} ms" if d["companion_ready_ms"] else "")
                        t.row("3", f"{label}: diagnostic, init p50 with {diag}{ready}", {"lambdawrap": pct(d["init_ms"], 50), "bare": p50["init_ms"]["bare"]})
                        if d.get("later_billed_ms"):
                            # The startup wait's trade-off: what init saves, the invocations after it may bill.
                            t.row("3", f"{label}: diagnostic, first invoke billed duration p50 with {diag}", {"lambdawrap": pct(d["first_billed_ms"], 50), "bare": p50["first_billed_ms"]["bare"]})
                            t.row("3", f"{label}: diagnostic, later invocations' billed duration p50 (of medians) with {diag}", {"lambdawrap": pct(d["later_billed_ms"], 50), "bare": p50["later_billed_ms"]["bare"]})
                            t.row("3", f"{label}: diagnostic, later invocations' billed duration p50 (of largest) with {diag}", {"lambdawrap": pct(d["later_billed_max_ms"], 50), "bare": p50["later_billed_max_ms"]["bare"]})
                if int(size) != SMALL_MB:
                    continue
                init = p50["init_ms"]
                limit = 1.25 if module == "trivial" else 1.05
                t.at_most("3", f"{label}: init p50 built layer / bare ≤ {limit}", init["lambdawrap"] / init["bare"], limit)
                ours = init["lambdawrap"] - init["bare"]
                if "otel" in init:
                    t.at_most("3", f"{label}: init overhead (lambdawrap − bare) ≤ (otel − bare)/10 (ms)", ours, (init["otel"] - init["bare"]) / 10)
                if "adot-fast-start" in init:
                    theirs = init["adot-fast-start"] - init["bare"]
                    t.target("3", f"{label}: init overhead lambdawrap < ADOT fast start's (ms)", ours, theirs, ours < theirs)
                billed = p50["first_billed_ms"]
                t.at_most("3", f"{label}: first invoke billed duration p50, lambdawrap − bare ≤ 100 ms", billed["lambdawrap"] - billed["bare"], 100.0)


def _post(results: dict, t: Table) -> None:
    post = results.get("post") or {}
    for size, by_strategy in post.items():
        for s, values in by_strategy.items():
            t.row("4", f"{size} MB: post-response p50 (ms), LAMBDAWRAP_FLUSH={s}, n={len(values)}; p99 {pct(values, 99):.2f} ms", {"lambdawrap": pct(values, 50)}, ratios=False)


def _memory(results: dict, t: Table) -> None:
    warm = results.get("warm") or {}
    flood = results.get("flood") or {}
    for size, w in warm.items():
        at = f"{size} MB"
        mem = w["memory_mb"]
        t.row("5", f"{at}: environment memory after the warm run, maxMemoryUsedMB (runtime + extensions)", w["max_memory_mb"])
        t.row("5", f"{at}: environment memory, sum of the processes' peak RSS (VmHWM) (MB)", {c: m["environment_vmhwm_sum"] for c, m in mem.items()})
        t.row("5", f"{at}: the function's process peak RSS, VmHWM (MB)", {c: m["runtime"].get("VmHWM") for c, m in mem.items()})
        companion = mem.get("lambdawrap", {}).get("companion") or {}
        t.row("5", f"{at}: companion peak RSS, VmHWM (MB); VmRSS at the end {companion.get('VmRSS', float('nan')):.1f} MB", {"lambdawrap": companion.get("VmHWM")}, ratios=False)
        steady = (w["max_memory_mb"].get("lambdawrap") or 0) - (w["max_memory_mb"].get("bare") or 0)
        t.at_most("5", f"{at}: environment memory (maxMemoryUsedMB), lambdawrap − bare ≤ 45 MB, steady", steady, 45.0)
        t.at_most("5", f"{at}: companion RSS ≤ 40 MB, steady (VmHWM over the warm run)", companion.get("VmHWM"), 40.0)
        if int(size) == FULL_CORE_MB:
            d = (mem["lambdawrap"]["runtime"].get("VmHWM") or 0) - (mem["bare"]["runtime"].get("VmHWM") or 0)
            t.at_most("5", f"{at}: the function's process VmHWM, lambdawrap − bare ≤ +5 MB (issue 6)", d, 5.0)
    for size, f in flood.items():
        at = f"{size} MB"
        plan = results.get("plan") or {}
        errors = {c: len(v.get("errors") or []) for c, v in f.items() if v.get("errors")}
        t.row("5", f"{at}: log flood ({plan.get('flood_mb')} MB of logs per invocation, {plan.get('n_flood')} invocations): maxMemoryUsedMB" + (f"; failed invocations {errors}" if errors else ""), {c: v["max_memory_mb"] for c, v in f.items()})
        t.row("5", f"{at}: log flood: billed duration p50 (ms)", {c: pct(v["billed_ms"], 50) for c, v in f.items()})
        comp = (f.get("lambdawrap") or {}).get("companion") or {}
        t.row("5", f"{at}: log flood: companion peak RSS, VmHWM (MB)", {"lambdawrap": comp.get("VmHWM")}, ratios=False)
        if "lambdawrap" in f and "bare" in f:
            t.at_most("5", f"{at}: environment memory under a log flood, lambdawrap − bare ≤ 65 MB", (f["lambdawrap"]["max_memory_mb"] or 0) - (f["bare"]["max_memory_mb"] or 0), 65.0)
            t.at_most("5", f"{at}: companion RSS under a log flood ≤ 60 MB (VmHWM)", comp.get("VmHWM"), 60.0)


def _companion(results: dict, t: Table) -> None:
    comp = results.get("companion") or {}
    if not comp:
        return
    lossless = [s["offered_per_s"] for s in comp["steps"] if s["lossless"]]
    sustained = max(lossless) if lossless else 0
    for s in comp["steps"]:
        reasons = ", ".join(f"{r} {n}" for r, n in sorted((s.get("dropped_reasons") or {}).items()))
        t.row("6", f"offered {s['offered_per_s']}/s: achieved {s['achieved_per_s']:.0f}/s, refused by the socket {s['refused_by_socket']}, delivered {s['delivered']}/{s['sent']}, lambdawrap.dropped {s['companion_dropped']}" + (f" ({reasons})" if reasons else "") + f", unaccounted {s['unaccounted']} (value: delivered share)", {"lambdawrap": s["delivered"] / max(1, s["sent"])}, ratios=False)
    unaccounted = sum(s["unaccounted"] for s in comp["steps"])
    t.target("6", "every record sent is exported or counted in lambdawrap.dropped with a reason: sent − delivered − dropped, all rates", float(unaccounted), 0.0, unaccounted == 0)
    b = comp.get("burst") or {}
    if b:
        t.row("6", f"burst of {b['records']} records: ingest rate (records/s)", {"lambdawrap": b["ingest_per_s"]}, ratios=False)
        t.row("6", "companion CPU per record (µs)", {"lambdawrap": b["cpu_us_per_record"]}, ratios=False)
    tested = max([s["offered_per_s"] for s in comp["steps"]] or [0])
    t.target("6", "records/s sustained without drops ≥ 2,000 (issue 6)", float(sustained), 2000.0, sustained >= 2000, f"highest lossless offered rate tested (max tested {tested}/s)")
    sd = comp.get("shutdown") or []
    if sd:
        flush = [x["flush_ms"] for x in sd]
        complete = all(x["delivered"] == x["spans"] for x in sd)
        t.row("6", f"SHUTDOWN flush of {sd[0]['spans']} buffered spans (ms), median of {len(sd)}; delivered {min(x['delivered'] for x in sd)}/{sd[0]['spans']}", {"lambdawrap": statistics.median(flush)}, ratios=False)
        t.row("6", "SHUTDOWN → companion exit (ms), median", {"lambdawrap": statistics.median(x["exit_ms"] for x in sd)}, ratios=False)
        t.target("6", f"flush {sd[0]['spans']} buffered spans on SHUTDOWN ≤ 2,000 ms (worst of {len(sd)}, all delivered; issue 6)", max(flush), 2000.0, complete and max(flush) <= 2000)


def _outgoing(results: dict, t: Table) -> None:
    from harness.phases.outgoing import LABELS

    out = results.get("outgoing") or {}
    for kind, row in out.items():
        for estimate in ("median", "min"):
            r = row.get(estimate)
            if r:
                t.row("7", f"outgoing call CPU in the function's process, {LABELS[kind]}, {estimate} over rounds (µs; the otel column is OpenTelemetry's instrumentation)", {"bare": r["bare_us"], "lambdawrap": r["bare_us"] + r["lambdawrap_added_us"], "otel": r["bare_us"] + r["contrib_added_us"]})



def _versions(results: dict, t: Table) -> None:
    """Figure 8: per Python version, init and in-process overhead of bare and lambdawrap."""
    for data in (results.get("versions") or {}).values():
        label = f"Python {data['full_version']}"
        at = f"{data['memory_mb']} MB, init unthrottled"
        for module, name in MODULE_LABELS.items():
            cold = data["cold"][module]
            configs = [c for c in ("bare", "lambdawrap") if c in cold]
            t.row("8", f"{label}: {at}: init duration p50, {name} handler (ms)", {c: pct(cold[c]["init_ms"], 50) for c in configs})
            t.row("8", f"{label}: {at}: runtime ready p50, {name} handler (ms)", {c: pct(cold[c]["runtime_ready_ms"], 50) for c in configs})
            t.row("8", f"{label}: {at}: companion ready p50, {name} handler (ms)", {"lambdawrap": pct(cold["lambdawrap"]["companion_ready_ms"], 50)}, ratios=False)
            for diag in COLD_DIAGNOSTICS:
                d = cold.get(diag)
                if d and d["init_ms"]:
                    t.row("8", f"{label}: {at}: diagnostic, init p50 with {diag}, {name} handler (ms)", {"bare": pct(cold["bare"]["init_ms"], 50), "lambdawrap": pct(d["init_ms"], 50)})
        for module, name in (("app", "example"), ("trivial", "trivial")):
            ip = data["inprocess"][module]
            t.row("8", f"{label}: in-process wrapper overhead p50, {name} handler, full core (µs)", {c: ip[c]["wrapper_us"]["p50"] for c in ip}, ratios=False)
            t.row("8", f"{label}: in-process handler call p50, {name} handler, full core (µs)", {c: ip[c]["total_us"]["p50"] for c in ip})
