"""Shared fixtures: functions and layers written into temp folders, clean environments."""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import pytest

# The version matrix: the every_python marker, its fixtures and its summary.
pytest_plugins = ("support.python_versions",)

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = Path(__file__).resolve().parent / "support"


def write_function(folder: Path, code: str, module: str = "app") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(textwrap.dedent(code))
    return folder


def install_extension(layer: Path, name: str, source: Path) -> Path:
    """Copy a Python script into <layer>/extensions/<name>, runnable with this interpreter."""
    ext_dir = layer / "extensions"
    ext_dir.mkdir(parents=True, exist_ok=True)
    target = ext_dir / name
    target.write_text(f"#!{sys.executable}\n" + source.read_text())
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return target


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, what: str | Callable[[], str] = "condition"):
    """Poll until predicate() is truthy; returns its value or fails the test at the deadline
    (`what` names the condition, or is called then to say what stood at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


@pytest.fixture
def probe_layer(tmp_path: Path):
    """A layer whose only extension is the probe; returns (layer dir, probe output file)."""
    layer = tmp_path / "layer"
    install_extension(layer, "probe", SUPPORT / "probe_extension.py")
    return layer, tmp_path / "probe.jsonl"


@pytest.fixture(autouse=True)
def _no_init_left_loading():
    # A test that makes a tracer in this process begins an init no module load ends: calls and
    # spans a later test makes outside an invocation would be taken for that init's.
    yield
    from lambdawrap.handler import init_trace

    init_trace.end()
    init_trace._chosen.clear()


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch):
    # Tests never inherit lambdawrap or OTEL settings from the developer's shell.
    for key in list(os.environ):
        if key.startswith(("LAMBDAWRAP_", "OTEL_", "AWS_LAMBDA_")):
            monkeypatch.delenv(key, raising=False)
