"""The emulator's runtime environments: one virtual environment per Python version, prepared
on first use and kept.

Lambda runs the function and its extensions with the runtime's own interpreter, which has
awslambdaric (in /var/runtime) and boto3. To run a function on Python X.Y, the emulator needs
an X.Y interpreter with the same, and, in a source checkout, this checkout's lambdawrap
and its pinned dependencies: the development layer (`layer/`) holds only the exec wrapper,
the boot trampoline and the extension's launcher; the function's runtime imports
lambdawrap's handler side, and the companion (`python3 -E -s -m lambdawrap.companion`, the
first `python3` on the PATH the emulator gives, i.e. the environment's) its own side, from
the environment. A `.pth` file points at the checkout's `src/`, so an edit takes effect on
the next run without preparing again.

In a checkout the environments live in `build/pythons/X.Y/` (git-ignored, one set per
checkout, since each points at its own `src/`); otherwise in `~/.cache/lambdawrap/pythons/`;
LAMBDAWRAP_PYTHONS_DIR names another folder.
The versions come from pyproject.toml; a change of pins, interpreter or checkout prepares the
environment again.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from lambdawrap.devtools.interpreters import SUPPORTED_VERSIONS, Interpreter, find_interpreter
from lambdawrap.devtools.pins import SOURCE_ROOT, declared_dependencies, pinned

# What the managed runtime's interpreter has besides the standard library (pinned in the dev extra).
RUNTIME_PACKAGES = frozenset({"awslambdaric", "boto3"})
_MARKER = "lambdawrap-env.json"
_FORMAT = 1
_PIP_TIMEOUT_S = 900.0
Progress = Callable[[str], None]


class RuntimeEnvError(Exception):
    """A runtime environment could not be prepared; one line that names the interpreter."""


@dataclass(frozen=True)
class RuntimeEnv:
    """An interpreter ready to run the emulator's runtime and the development layer's companion."""

    interpreter: Interpreter  # the interpreter asked for
    python: str  # what the emulator runs: the environment's interpreter
    folder: Path | None  # None: the running interpreter's own environment
    prepared_s: float | None = None  # seconds spent preparing it now; None if it was ready


def checkout_src() -> Path | None:
    """This checkout's src/ folder, or None when lambdawrap is installed from a wheel."""
    src = SOURCE_ROOT / "src"
    return src if (src / "lambdawrap").is_dir() and (SOURCE_ROOT / "pyproject.toml").is_file() else None


def default_root() -> Path:
    """Where the environments live: LAMBDAWRAP_PYTHONS_DIR, else the checkout's build/
    folder, else the user's cache."""
    if os.environ.get("LAMBDAWRAP_PYTHONS_DIR"):
        return Path(os.environ["LAMBDAWRAP_PYTHONS_DIR"])
    if checkout_src() is not None:
        return SOURCE_ROOT / "build" / "pythons"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "lambdawrap" / "pythons"


def runtime_requirements() -> list[str]:
    """What an environment holds: lambdawrap's pinned dependencies, awslambdaric and boto3."""
    return declared_dependencies()[0] + pinned("dev", RUNTIME_PACKAGES)


def runtime_python(spec: str | None = None, *, progress: Progress | None = None, root: Path | None = None) -> RuntimeEnv:
    """The interpreter `spec` names (a path, a name such as python3.13, a version, or None for
    the running one), in an environment the emulator can run; prepared first if need be.
    Raises InterpreterNotFound or RuntimeEnvError, each with a one-line message."""
    interpreter = find_interpreter(spec)
    if interpreter.is_running_interpreter and importlib.util.find_spec("awslambdaric") is not None:
        return RuntimeEnv(interpreter, interpreter.path, None)  # this environment runs the emulator's runtime already
    return prepare(interpreter, progress=progress, root=root)


def prepare(interpreter: Interpreter, *, progress: Progress | None = None, root: Path | None = None) -> RuntimeEnv:
    """The environment for `interpreter`'s version, prepared unless it is ready for it."""
    say = progress or _to_stderr
    if interpreter.version not in SUPPORTED_VERSIONS:
        raise RuntimeEnvError(f"Python {interpreter.full_version} ({interpreter.path}) is not a runtime lambdawrap supports ({', '.join(SUPPORTED_VERSIONS)})")
    folder = (root or default_root()) / interpreter.version
    python = folder / "bin" / f"python{interpreter.version}"
    wanted = _wanted(interpreter)
    if _ready(folder, wanted):
        return RuntimeEnv(interpreter, str(python), folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.with_name(folder.name + ".lock")):
        if _ready(folder, wanted):  # another process prepared it while we waited
            return RuntimeEnv(interpreter, str(python), folder)
        started = time.monotonic()
        say(f"preparing the Python {interpreter.version} runtime environment in {folder} (first use, about a minute; kept for later runs)")
        try:
            _build(interpreter, folder, wanted, say)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # half an environment would pass for none
            raise
        elapsed = time.monotonic() - started
        say(f"Python {interpreter.full_version} runtime environment ready in {elapsed:.0f} s")
        return RuntimeEnv(interpreter, str(python), folder, elapsed)


def _wanted(interpreter: Interpreter) -> dict:
    """What a ready environment's marker must say: anything else is prepared again."""
    src = checkout_src()
    return {
        "format": _FORMAT,
        "interpreter": os.path.realpath(interpreter.path),
        "version": interpreter.full_version,
        "requirements": runtime_requirements(),
        "checkout_src": str(src) if src else None,
    }


def _ready(folder: Path, wanted: dict) -> bool:
    try:
        return json.loads((folder / _MARKER).read_text()) == wanted and (folder / "bin" / f"python{_short(wanted)}").exists()
    except (OSError, ValueError):
        return False


def _short(wanted: dict) -> str:
    return ".".join(wanted["version"].split(".")[:2])


def _build(interpreter: Interpreter, folder: Path, wanted: dict, say: Progress) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    fail = f"cannot prepare Python {interpreter.version} ({interpreter.path})"
    step = time.monotonic()
    _run([interpreter.path, "-m", "venv", str(folder)], f"{fail}: creating the virtual environment failed", timeout=300)
    say(f"  [1/3] virtual environment created ({time.monotonic() - step:.0f} s)")
    python = str(folder / "bin" / f"python{interpreter.version}")
    requirements = wanted["requirements"]
    say(f"  [2/3] pip install {' '.join(requirements)}")
    step = time.monotonic()
    command = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--progress-bar", "off", *requirements]
    _run(command, f"{fail}: pip install failed", timeout=_PIP_TIMEOUT_S, on_line=lambda line: say(f"        {line}") if line.startswith(("Collecting ", "Installing collected")) else None)
    say(f"  [3/3] packages installed ({time.monotonic() - step:.0f} s); checking that they import")
    site_packages = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], f"{fail}: the new environment does not run", timeout=60).strip()
    if wanted["checkout_src"]:
        # The checkout's sources, live: an edit needs no new preparation.
        Path(site_packages, "lambdawrap-checkout.pth").write_text(wanted["checkout_src"] + "\n")
        imports = "import awslambdaric, boto3, wrapt, opentelemetry.sdk, lambdawrap.handler.boot, lambdawrap.companion.lifecycle"
    else:
        imports = "import awslambdaric, boto3"
    _run([python, "-s", "-c", imports], f"{fail}: the environment's packages do not import", timeout=120)
    partial = folder / (_MARKER + ".partial")
    partial.write_text(json.dumps(wanted, indent=1))
    os.replace(partial, folder / _MARKER)


def _run(command: list[str], failure: str, *, timeout: float, on_line: Callable[[str], None] | None = None) -> str:
    """Run a command; its output, or RuntimeEnvError(failure + the line that says why)."""
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    except OSError as exc:
        raise RuntimeEnvError(f"{failure}: {exc}") from None
    # A hung download must not hang the caller: the timer ends the command at the deadline.
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(raw.rstrip())
            if on_line is not None:
                on_line(lines[-1])
        code = proc.wait()
    finally:
        timer.cancel()
    if code != 0:
        said = [line.strip() for line in lines if line.strip()]
        # pip says why on a line of its own; other commands on their last line.
        reason = next((line for line in reversed(said) if line.startswith("ERROR:")), said[-1] if said else "")
        raise RuntimeEnvError(f"{failure}: {reason or f'exit status {code}'}" + (f" (stopped after {timeout:.0f} s)" if code < 0 else ""))
    return "\n".join(lines)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path`: two runs (a test session and a CLI) never prepare the
    same environment at once."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _to_stderr(message: str) -> None:
    sys.stderr.write(f"lambdawrap: {message}\n")
    sys.stderr.flush()
