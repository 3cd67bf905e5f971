"""Finding a Python interpreter of a given version on this machine.

A name on PATH is not proof: a pyenv shim for a version that is not pyenv's global exists on
PATH and fails when run ("pyenv: python3.12: command not found"), and a `python3.12` may
turn out to be something else. So every candidate is run and must report the version asked
for; the name on PATH comes first, then the places installers put interpreters (pyenv, uv,
the system's and a CI image's folders). Another version is never taken instead.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Iterable, Sequence

SUPPORTED_VERSIONS = ("3.10", "3.11", "3.12", "3.13")
_VERSION_NAME = re.compile(r"^(?:python)?(3\.\d{1,2})$")
# What a candidate prints: "X.Y X.Y.Z".
_PROBE = "import sys; print('%d.%d' % sys.version_info[:2], sys.version.split()[0])"
_PROBE_TIMEOUT_S = 20.0


class InterpreterNotFound(Exception):
    """No interpreter fits the request; the message says what was tried, in one line."""


@dataclass(frozen=True)
class Interpreter:
    """A Python interpreter that ran and said which version it is."""

    path: str  # as found (a venv's bin/python keeps its venv)
    version: str  # "3.12"
    full_version: str  # "3.12.1"

    @property
    def is_running_interpreter(self) -> bool:
        """Whether this is the interpreter running this code (same executable, same environment)."""
        return os.path.abspath(self.path) == os.path.abspath(sys.executable)


def running_interpreter() -> Interpreter:
    """The interpreter running this code."""
    return Interpreter(sys.executable, "%d.%d" % sys.version_info[:2], sys.version.split()[0])


def expected_version(spec: str) -> str | None:
    """The X.Y a spec names ("3.12", "python3.12", ".../python3.12"), or None ("python3")."""
    found = _VERSION_NAME.match(os.path.basename(spec.strip()))
    return found.group(1) if found else None


def location_patterns(version: str, home: str | None = None) -> list[str]:
    """The places installers put a Python X.Y, as glob patterns."""
    home = home if home is not None else os.path.expanduser("~")
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.join(home, ".pyenv")
    name = f"python{version}"
    return [
        os.path.join(pyenv_root, "versions", f"{version}*", "bin", name),
        os.path.join(home, ".local", "share", "uv", "python", f"cpython-{version}*", "bin", name),
        os.path.join("/opt", "hostedtoolcache", "Python", f"{version}*", "*", "bin", name),  # CI images
        os.path.join("/usr", "local", "bin", name),
        os.path.join("/usr", "bin", name),
    ]


def well_known_locations(version: str, home: str | None = None) -> list[str]:
    """The interpreters found at those places, newest patch release first within each."""
    found: list[str] = []
    for pattern in location_patterns(version, home):
        found += sorted(glob.glob(pattern), key=_natural_key, reverse=True)
    return found


def find_interpreter(spec: str | None = None, *, path_env: str | None = None, locations: Sequence[str] | None = None) -> Interpreter:
    """The interpreter `spec` names: None for the running one, a path, a name on PATH
    ("python3.13"), or a version ("3.13"). A spec that names a version only ever gives that
    version. `path_env` and `locations` replace PATH and the well-known places (tests)."""
    if spec is None or not spec.strip():
        return running_interpreter()
    spec = spec.strip()
    wanted = expected_version(spec)
    tried: list[str] = []
    if os.sep in spec:
        found = _probe(spec, wanted, tried, report_missing=True)
        if found is None:
            raise InterpreterNotFound(f"{spec} is not a usable Python{' ' + wanted if wanted else ''}: {'; '.join(tried)}")
        return found
    if wanted is not None and wanted == running_interpreter().version:
        # The interpreter running this is a Python of that version, with its environment.
        return running_interpreter()
    name = spec if not spec[0].isdigit() else f"python{spec}"
    on_path = shutil.which(name, path=path_env if path_env is not None else os.environ.get("PATH", os.defpath))
    if on_path:
        found = _probe(on_path, wanted, tried, report_missing=True)
        if found is not None:
            return found
    else:
        tried.append(f"no {name} on PATH")
    if wanted is not None:
        for candidate in locations if locations is not None else well_known_locations(wanted):
            if candidate != on_path:
                found = _probe(candidate, wanted, tried, report_missing=False)
                if found is not None:
                    return found
    what = f"Python {wanted}" if wanted else name
    places = (locations or ["no other place"]) if locations is not None else location_patterns(wanted or "")
    elsewhere = f" (also looked in {', '.join(places)})" if wanted else ""
    raise InterpreterNotFound(f"no {what} interpreter found: {'; '.join(tried)}{elsewhere}")


def _probe(candidate: str, wanted: str | None, tried: list[str], *, report_missing: bool) -> Interpreter | None:
    """The candidate as an Interpreter if it runs and is the version wanted; else None, with
    the reason added to `tried` (a missing well-known place is not worth a word)."""
    if not os.path.isfile(candidate):
        if report_missing:
            tried.append(f"{candidate} does not exist")
        return None
    try:
        result = subprocess.run([candidate, "-c", _PROBE], capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        tried.append(f"{candidate} does not run ({exc.__class__.__name__}: {exc})")
        return None
    if result.returncode != 0:
        lines = (result.stderr.strip() or result.stdout.strip() or f"exit status {result.returncode}").splitlines()
        tried.append(f"{candidate} does not run ({lines[0]})")
        return None
    reported = result.stdout.split()
    if len(reported) != 2:
        tried.append(f"{candidate} did not say its version (printed {result.stdout.strip()[:80]!r})")
        return None
    version, full_version = reported
    if wanted is not None and version != wanted:
        tried.append(f"{candidate} is Python {full_version}, not {wanted}")
        return None
    return Interpreter(candidate, version, full_version)


def available(versions: Iterable[str] = SUPPORTED_VERSIONS) -> dict[str, Interpreter | str]:
    """Each version's interpreter, or the one-line reason none was found."""
    out: dict[str, Interpreter | str] = {}
    for version in versions:
        try:
            out[version] = find_interpreter(version)
        except InterpreterNotFound as exc:
            out[version] = str(exc)
    return out


def _natural_key(path: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]
