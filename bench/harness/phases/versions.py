"""Figure 8, per Python version: the cold start (figure 3) and the in-process wrapper overhead
(figure 1) of bare and lambdawrap, with the function's runtime and the companion on each Python
version asked for (`run.py --python`), in the emulator's runtime environment of that version,
lambdawrap's layer built for that version."""

from __future__ import annotations

import dataclasses

from lambdawrap.devtools.interpreters import InterpreterNotFound
from lambdawrap.devtools.layer_build import LayerBuildError
from lambdawrap.devtools.otlp_receiver import OtlpReceiver
from lambdawrap.devtools.runtime_envs import RuntimeEnvError, runtime_python

from harness.built_layer import ensure_built_layer
from harness.configurations import Stack
from harness.measure import log
from harness.phases.cold import phase_cold
from harness.phases.inprocess import phase_inprocess
from harness.plan import Plan

CONFIGS = ["bare", "lambdawrap"]
POLICY = "unthrottled"  # init as measured on Lambda; one policy keeps the phase short


def phase_versions(versions: list, plan: Plan, rx: OtlpReceiver, skipped: dict) -> dict:
    """Each version's cold-start and in-process samples; a version that cannot run goes to
    `skipped` with the reason. The cold starts run at the run's smallest memory size, init
    unthrottled: {version: {"python", "full_version", "memory_mb", "cold": {module: {config:
    {field: [samples]}}}, "inprocess": ...}}."""
    size = plan.sizes[0]
    # One size and one init policy: the per-version figures compare versions, not sizes.
    version_plan = dataclasses.replace(plan, sizes=(size,), cold_as_invoke=0)
    out: dict = {}
    for version in versions:
        try:
            env = runtime_python(version, progress=lambda message: log("  " + message))
            layer = ensure_built_layer(version)
        except (InterpreterNotFound, RuntimeEnvError, LayerBuildError) as exc:
            skipped[f"Python {version}"] = str(exc)
            log(f"figure 8: Python {version} skipped: {exc}")
            continue
        log(f"figure 8: Python {env.interpreter.full_version} ({env.python}): cold start x{plan.cold} at {size} MB, in-process x{plan.inproc}")
        stack = Stack(list(CONFIGS), layer, python=env.python)
        try:
            out[version] = {
                "python": env.python,
                "full_version": env.interpreter.full_version,
                "memory_mb": size,
                # With cold >= 2 this includes the diagnostics that split lambdawrap's init
                # (runtime side only, companion only): where a version's difference lies.
                "cold": phase_cold(stack, version_plan, rx)[str(size)][POLICY],
                "inprocess": phase_inprocess(stack, plan),
            }
        finally:
            stack.close()
    return out
