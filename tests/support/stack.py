"""The real stack for end-to-end tests: OTLP receiver + emulator + the lambdawrap layer."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

from lambdawrap.emulator import Emulator
from lambdawrap.otlp_receiver import OtlpReceiver

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "layer"
EVENTS = ROOT / "examples" / "events"


def layer_env(receiver: OtlpReceiver | None, socket_dir: str, extra: Mapping[str, str] | None = None) -> dict:
    env = {
        "AWS_LAMBDA_EXEC_WRAPPER": "/opt/wrapper.sh",
        # A socket of its own per test, so tests never talk to each other's companion.
        "LAMBDAWRAP_SOCKET": f"{socket_dir}/lw.sock",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    if receiver is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
    env.update(extra or {})
    return env


@contextlib.contextmanager
def instrumented(task_dir: Path, handler: str = "app.handler", *, env: Mapping[str, str] | None = None, layer: Path = LAYER, receiver: OtlpReceiver | None = None, **emulator_args) -> Iterator[tuple]:
    """Yields (emulator, receiver) with the layer installed and exporting to the receiver."""
    socket_dir = tempfile.mkdtemp(prefix="lw")  # short: Unix socket paths are capped at 108 bytes
    own_receiver = receiver is None
    rx = receiver or OtlpReceiver().start()
    try:
        with Emulator(str(task_dir), handler, str(layer), env=layer_env(rx, socket_dir, env), **emulator_args) as emu:
            yield emu, rx
    finally:
        if own_receiver:
            rx.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


def metric_total(receiver: OtlpReceiver, name: str, attrs: Mapping[str, object] | None = None) -> float:
    """Sum of a delta counter's points (or a histogram's counts) across every export."""
    total = 0.0
    for point in receiver.metrics():
        if point["name"] != name or any(point["attributes"].get(k) != v for k, v in (attrs or {}).items()):
            continue
        total += point["count"] if point["type"] == "histogram" else point["value"]
    return total
