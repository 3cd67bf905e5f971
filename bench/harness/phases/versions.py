"""Figure 7, per Python version: the cold start (figure 3) and the in-process wrapper overhead
(figure 1) of bare and lambdawrap, with the function's runtime on each Python version asked
for (`run.py --python`), in the emulator's runtime environment of that version."""

from __future__ import annotations

import math

from lambdawrap.devtools.interpreters import InterpreterNotFound
from lambdawrap.devtools.otlp_receiver import OtlpReceiver
from lambdawrap.devtools.runtime_envs import RuntimeEnvError, runtime_python

from harness.configurations import Stack
from harness.measure import log, pct
from harness.phases.cold import phase_cold
from harness.phases.inprocess import phase_inprocess
from harness.plan import Plan

CONFIGS = ["bare", "lambdawrap"]


def phase_versions(versions: list, plan: Plan, rx: OtlpReceiver, skipped: dict) -> dict:
    """Each version's cold-start and in-process samples; a version that cannot run goes to
    `skipped` with the reason."""
    out: dict = {}
    for version in versions:
        try:
            env = runtime_python(version, progress=lambda message: log("  " + message))
        except (InterpreterNotFound, RuntimeEnvError) as exc:
            skipped[f"Python {version}"] = str(exc)
            log(f"figure 7: Python {version} skipped: {exc}")
            continue
        log(f"figure 7: Python {env.interpreter.full_version} ({env.python}): cold start x{plan.cold}, in-process x{plan.inproc}")
        stack = Stack(list(CONFIGS), python=env.python)
        try:
            out[version] = {
                "python": env.python,
                "full_version": env.interpreter.full_version,
                # With cold >= 2 this includes the diagnostics that split lambdawrap's init
                # (runtime side only, companion only): where a version's difference lies.
                "cold": phase_cold(stack, plan, rx),
                "inprocess": phase_inprocess(stack, plan),
            }
        finally:
            stack.close()
    return out


def version_rows(versions: dict) -> list:
    """Figure 7's rows: per version, init and in-process overhead of bare and lambdawrap."""
    rows = []
    for version, data in versions.items():
        label = f"Python {data['full_version']}"
        for module, name in (("trivial", "trivial"), ("with_boto3", "boto3-importing")):
            cold = data["cold"][module]
            rows.append(_row(f"{label}: init duration p50, {name} handler (ms)", {c: pct(cold[c]["init_ms"], 50) for c in CONFIGS}))
            ready = {c: pct(cold[c]["runtime_ready_ms"], 50) for c in CONFIGS}
            rows.append(_row(f"{label}: runtime ready p50, {name} handler (ms)", ready))
            rows.append(_row(f"{label}: companion ready p50, {name} handler (ms)", {"lambdawrap": pct(cold["lambdawrap"]["companion_ready_ms"], 50)}, ratio=False))
        for module, name in (("app", "example"), ("trivial", "trivial")):
            data_ip = data["inprocess"][module]
            rows.append(_row(f"{label}: in-process wrapper overhead p50, {name} handler (µs)", {c: data_ip[c]["wrapper_us"]["p50"] for c in CONFIGS}, ratio=False))
            rows.append(_row(f"{label}: in-process handler call p50, {name} handler (µs)", {c: data_ip[c]["total_us"]["p50"] for c in CONFIGS}))
    return rows


def _row(metric: str, values: dict, ratio: bool = True) -> dict:
    base, ours = values.get("bare"), values.get("lambdawrap")
    useful = ratio and base is not None and ours is not None and not math.isnan(base) and base > 0
    return {"figure": "7", "metric": metric, "bare": base, "lambdawrap": ours, "lambdawrap/bare": ours / base if useful else None}
