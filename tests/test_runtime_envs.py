"""Choosing the runtime's Python: finding an interpreter of a version (and never another), and
the one-line errors of `--python` when none fits or its environment cannot be prepared.

The interpreters here are small shell scripts that answer the version probe as a real one
would (or as a pyenv shim fails), so each case runs whatever Pythons the machine has.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lambdawrap.devtools.interpreters import InterpreterNotFound, find_interpreter, running_interpreter
from lambdawrap.devtools.runtime_envs import RuntimeEnvError, prepare

ROOT = Path(__file__).resolve().parent.parent


def fake_python(path: Path, says: str = "", fails_with: str = "") -> Path:
    """An executable that answers `-c <probe>` with `says` ("3.12 3.12.9"), or fails like a
    shim for a version that is not installed; anything else it is asked fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    answer = f'echo "{fails_with}" >&2; exit 127' if fails_with else f'echo "{says}"; exit 0'
    path.write_text(f'#!/bin/sh\nif [ "$1" = "-c" ]; then {answer}; fi\necho "No module named venv" >&2\nexit 1\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def lambdawrap(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lambdawrap.devtools.cli", *args], capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, **(env or {})})


def test_a_name_on_path_that_does_not_run_falls_back_to_the_well_known_places(tmp_path):
    # GIVEN a python3.97 on PATH that is a shim for a version pyenv does not have, and one
    # at a well-known place WHEN python3.97 is asked for THEN the one that runs is found
    fake_python(tmp_path / "shims" / "python3.97", fails_with="pyenv: python3.97: command not found")
    real = fake_python(tmp_path / "versions" / "3.97.1" / "bin" / "python3.97", says="3.97 3.97.1")
    found = find_interpreter("python3.97", path_env=str(tmp_path / "shims"), locations=[str(real)])
    assert (found.path, found.version, found.full_version) == (str(real), "3.97", "3.97.1")


def test_another_version_is_never_taken_instead(tmp_path):
    # GIVEN a python3.97 on PATH that is really a 3.96, and nothing else
    fake_python(tmp_path / "bin" / "python3.97", says="3.96 3.96.0")
    shim = fake_python(tmp_path / "shims" / "python3.97", fails_with="pyenv: python3.97: command not found")
    # WHEN 3.97 is asked for THEN it is not found, and the one line says what was tried and why
    with pytest.raises(InterpreterNotFound) as caught:
        find_interpreter("3.97", path_env=str(tmp_path / "bin"), locations=[str(shim), str(tmp_path / "nowhere" / "python3.97")])
    message = str(caught.value)
    assert "\n" not in message and message.startswith("no Python 3.97 interpreter found")
    assert f"{tmp_path}/bin/python3.97 is Python 3.96.0, not 3.97" in message
    assert f"{shim} does not run (pyenv: python3.97: command not found)" in message
    # ...and a path whose name says 3.97 is held to it as well.
    with pytest.raises(InterpreterNotFound, match="is Python 3.96.0, not 3.97"):
        find_interpreter(str(tmp_path / "bin" / "python3.97"))


def test_the_default_is_the_running_interpreter():
    assert find_interpreter(None) == running_interpreter()
    assert running_interpreter().path == sys.executable and running_interpreter().is_running_interpreter


def test_an_environment_that_cannot_be_prepared_is_one_error_naming_the_interpreter(tmp_path):
    # GIVEN an interpreter that says it is 3.12 but cannot make a virtual environment
    broken = fake_python(tmp_path / "broken" / "python3.12", says="3.12 3.12.99")
    # WHEN it is prepared THEN one line names it and says what failed; nothing half-made is left
    with pytest.raises(RuntimeEnvError) as caught:
        prepare(find_interpreter(str(broken)), root=tmp_path / "envs", progress=lambda message: None)
    assert str(caught.value) == f"cannot prepare Python 3.12 ({broken}): creating the virtual environment failed: No module named venv"
    assert not (tmp_path / "envs" / "3.12").exists()
    # ...and so it is from the command line, after saying it was preparing.
    out = lambdawrap("local", "invoke", "--example", "hello", "--python", str(broken), env={"LAMBDAWRAP_PYTHONS_DIR": str(tmp_path / "envs")})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "preparing the Python 3.12 runtime environment" in out.stderr
    assert out.stderr.strip().splitlines()[-1] == f"error: cannot prepare Python 3.12 ({broken}): creating the virtual environment failed: No module named venv"


@pytest.mark.parametrize(
    "python, message",
    [
        ("python3.97", "error: no Python 3.97 interpreter found: no python3.97 on PATH (also looked in "),
        ("/nowhere/python3.12", "error: /nowhere/python3.12 is not a usable Python 3.12: /nowhere/python3.12 does not exist"),
    ],
)
def test_a_python_that_is_not_there_is_one_clear_line(python, message):
    out = lambdawrap("local", "invoke", "--example", "hello", "--python", python)
    assert out.returncode == 2 and out.stderr.startswith(message) and out.stderr.strip().count("\n") == 0


def test_an_unsupported_version_is_refused_before_anything_is_installed(tmp_path):
    old = fake_python(tmp_path / "old" / "python3.9", says="3.9 3.9.18")
    with pytest.raises(RuntimeEnvError, match=r"^Python 3\.9\.18 \(.*python3\.9\) is not a runtime lambdawrap supports \(3\.10, 3\.11, 3\.12, 3\.13\)$"):
        prepare(find_interpreter(str(old)), root=tmp_path / "envs")
    assert not (tmp_path / "envs").exists()


def test_a_built_layer_runs_only_on_its_own_version(tmp_path):
    # GIVEN a layer folder built for another version than this interpreter's (its wrapt
    # extension's tag says which) WHEN it is run here THEN the command says so and how to fix it
    other = "3.10" if running_interpreter().version != "3.10" else "3.12"
    layer = tmp_path / "layer"
    (layer / "lambdawrap" / "handler-lib" / "wrapt").mkdir(parents=True)
    (layer / "lambdawrap" / "handler-lib" / "wrapt" / f"_wrappers.cpython-{other.replace('.', '')}-x86_64-linux-gnu.so").write_bytes(b"")
    (layer / "wrapper.sh").write_text("#!/bin/sh\nexec \"$@\"\n")
    out = lambdawrap("local", "invoke", "--example", "hello", "--layer", str(layer))
    here = running_interpreter().version
    assert out.returncode == 2 and out.stderr.strip() == (
        f"error: the layer at {layer} is built for Python {other}, the runtime is Python {here}: "
        f"pass --python {other}, or build one with `lambdawrap build-layer --python-version {here}`"
    )
