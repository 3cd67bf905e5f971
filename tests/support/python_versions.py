"""The version matrix: tests marked `every_python` run once per Python runtime the layer
supports (3.10-3.13), on that version's interpreter.

The suite itself runs on the project venv's interpreter; a marked test gets a
`python_version` parameter, and asks either for `runtime_python` (that version's
interpreter in the emulator's runtime environment, prepared on first use, see
lambdawrap.devtools.runtime_envs) or for `interpreter` (the bare interpreter). A version with
no interpreter on this machine is skipped with the reason, never passed; an environment
that cannot be prepared fails. The terminal summary prints the matrix.
"""

from __future__ import annotations

import sys

import pytest

from lambdawrap.devtools.interpreters import SUPPORTED_VERSIONS, Interpreter, InterpreterNotFound, find_interpreter
from lambdawrap.devtools.runtime_envs import RuntimeEnvError, runtime_python as prepare_runtime

OWN_VERSION = "%d.%d" % sys.version_info[:2]
_interpreters: dict = {}  # version -> Interpreter, or the reason there is none
_environments: dict = {}  # version -> (python path, seconds spent preparing it or None), or the error
_outcomes: dict = {}  # version -> {nodeid: outcome}

every_python = pytest.mark.every_python


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "every_python: run once per supported Python version (3.10-3.13), on that version's interpreter")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("every_python") is not None:
        metafunc.parametrize("python_version", SUPPORTED_VERSIONS, ids=[f"py{v}" for v in SUPPORTED_VERSIONS])


def _find(version: str) -> Interpreter | str:
    if version not in _interpreters:
        try:
            _interpreters[version] = find_interpreter(version)
        except InterpreterNotFound as exc:
            _interpreters[version] = str(exc)
    return _interpreters[version]


@pytest.fixture
def interpreter(request: pytest.FixtureRequest, python_version: str) -> Interpreter:
    """The bare interpreter of the test's Python version; the test is skipped without one."""
    request.node.user_properties.append(("python_version", python_version))
    found = _find(python_version)
    if isinstance(found, str):
        pytest.skip(f"Python {python_version}: {found}")
    return found


@pytest.fixture
def runtime_python(interpreter: Interpreter, python_version: str) -> str:
    """The interpreter the emulator runs for the test's Python version: the suite's own for
    its version, else that version's runtime environment (prepared once, then kept)."""
    if python_version not in _environments:
        try:
            env = prepare_runtime(interpreter.path, progress=lambda message: sys.stderr.write(f"lambdawrap: {message}\n"))
        except RuntimeEnvError as exc:
            _environments[python_version] = str(exc)
        else:
            _environments[python_version] = (env.python, env.prepared_s)
    prepared = _environments[python_version]
    if isinstance(prepared, str):
        pytest.fail(prepared, pytrace=False)
    return prepared[0]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    version = dict(report.user_properties).get("python_version")
    if version is None:
        return
    outcomes = _outcomes.setdefault(version, {})
    outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
    # A test's outcome is its first failure or skip, else its call's.
    if outcome != "passed" or report.when == "call":
        if outcomes.get(report.nodeid) in (None, "passed"):
            outcomes[report.nodeid] = outcome


def pytest_terminal_summary(terminalreporter) -> None:
    if not _outcomes:
        return
    terminalreporter.section("Python versions (tests marked every_python)")
    for version in SUPPORTED_VERSIONS:
        outcomes = _outcomes.get(version)
        if not outcomes:
            terminalreporter.write_line(f"Python {version}: no test of the matrix was selected")
            continue
        counts = {name: list(outcomes.values()).count(name) for name in ("passed", "failed", "xfailed", "skipped")}
        tally = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
        found = _interpreters.get(version)
        if isinstance(found, Interpreter):
            where = f"{found.path} ({found.full_version}{', the suite' + chr(39) + 's own' if found.is_running_interpreter else ''})"
            prepared = _environments.get(version)
            if isinstance(prepared, tuple) and prepared[0] != found.path:
                how = "already prepared" if prepared[1] is None else f"prepared in {prepared[1]:.0f} s"
                where += f", runtime environment {prepared[0]} ({how})"
        else:
            where = f"not run: {found}"
        terminalreporter.write_line(f"Python {version}: {tally} - {where}")
