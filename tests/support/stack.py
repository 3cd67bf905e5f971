"""The real stack for end-to-end tests: OTLP receiver + emulator + the lambdawrap layer."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Mapping

from lambdawrap.devtools.emulator.environment import DEFAULT_MEMORY_MB
from lambdawrap.devtools.local.stack import EXAMPLES, SOURCE_LAYER, RunConfig, local_stack
from lambdawrap.devtools.otlp_receiver import OtlpReceiver

LAYER = SOURCE_LAYER
EVENTS = EXAMPLES / "events"
# What a test may set besides the timeout and the memory size (see Emulator).
LIMIT_ARGS = ("cpu_limit", "init_cpu", "max_concurrency", "telemetry_log_fd", "init_timeout_s")


@contextlib.contextmanager
def instrumented(task_dir: Path, handler: str = "app.handler", *, env: Mapping[str, str] | None = None, layer: Path = LAYER, receiver: OtlpReceiver | None = None, **emulator_args) -> Iterator[tuple]:
    """Yields (emulator, receiver) with the layer installed and exporting to the receiver."""
    config = RunConfig(
        function_dir=Path(task_dir),
        handler=handler,
        env=dict(env or {}),
        layer_dir=Path(layer),
        otlp_endpoint=receiver.endpoint if receiver is not None else None,
        timeout_s=emulator_args.pop("timeout_s", 3.0),
        memory_mb=emulator_args.pop("memory_mb", DEFAULT_MEMORY_MB),
        # Not frozen unless a test asks: these tests read the collector while the environment
        # lives, and the companion may still be exporting after its /next, which freezing
        # would hold until the next event (tests/test_limits.py covers freezing).
        freeze=emulator_args.pop("freeze", False),
        invoke_port=emulator_args.pop("invoke_port", None),
        **{name: emulator_args.pop(name) for name in LIMIT_ARGS if name in emulator_args},
        python=emulator_args.pop("python", None),
    )
    assert not emulator_args, f"unsupported emulator arguments: {emulator_args}"
    with local_stack(config) as (emu, own_receiver, _moto):
        yield emu, receiver or own_receiver


def metric_total(receiver: OtlpReceiver, name: str, attrs: Mapping[str, object] | None = None) -> float:
    """Sum of a delta counter's points (or a histogram's counts) across every export."""
    total = 0.0
    for point in receiver.metrics():
        if point["name"] != name or any(point["attributes"].get(k) != v for k, v in (attrs or {}).items()):
            continue
        total += point["count"] if point["type"] == "histogram" else point["value"]
    return total
