"""The package's public surface, and the walls between the parts of the tree.

`lambdawrap/handler` runs in the function's process, `lambdawrap/companion` in the extension's,
`lambdawrap/shared` in both, `lambdawrap/devtools` only on a developer's machine. Each part may
import only what its process has: these tests read every import of the source tree.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

import lambdawrap

PACKAGE = Path(lambdawrap.__file__).resolve().parent
# What each part may import of lambdawrap (besides itself).
ALLOWED = {
    "handler": {"lambdawrap.shared"},
    "companion": {"lambdawrap.shared"},
    "shared": set(),
    "devtools": {"lambdawrap.shared", "lambdawrap.handler", "lambdawrap.companion"},
}
# The handler side runs in the function's process: the standard library and wrapt, and the
# OpenTelemetry API only where the user's own code brought it (the bridge).
HANDLER_THIRD_PARTY = {"wrapt", "opentelemetry"}


def test_public_surface():
    # GIVEN the package WHEN a user imports it THEN it names its version and nothing else, and
    # the secrets accessor is where the README says
    assert lambdawrap.__all__ == ["__version__"] and isinstance(lambdawrap.__version__, str)
    secrets = importlib.import_module("lambdawrap.secrets")
    assert secrets.__all__ == ["SecretsError", "get"]
    assert callable(secrets.get) and issubclass(secrets.SecretsError, Exception)
    assert secrets.get("NOT_DECLARED") is None and secrets.get("NOT_DECLARED", "fallback") == "fallback"


def test_importing_lambdawrap_is_cheap():
    # The top-level package and the accessor import nothing heavy into the function's process.
    code = "import sys, lambdawrap, lambdawrap.secrets; print(sorted(m for m in sys.modules if m.split('.')[0] in ('opentelemetry', 'boto3', 'botocore', 'google', 'wrapt', 'dataclasses', 'typing')))"
    import subprocess

    out = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path[:0] = {[str(PACKAGE.parent)]!r}; " + code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def _imports(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import (the tree uses absolute ones, to show where code lives)"
            found.append((node.module or "", node.lineno))
    return found


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_what_its_process_has(part):
    allowed = ALLOWED[part] | {f"lambdawrap.{part}"}
    for source in sorted((PACKAGE / part).rglob("*.py")):
        for module, line in _imports(source):
            if module == "lambdawrap" or not module.startswith("lambdawrap"):
                continue
            assert any(module == a or module.startswith(a + ".") for a in allowed), f"{source.relative_to(PACKAGE)}:{line} imports {module}"


@pytest.mark.parametrize("part", ["handler", "shared"])
def test_the_function_side_imports_only_the_standard_library_and_wrapt(part):
    stdlib = sys.stdlib_module_names
    for source in sorted((PACKAGE / part).rglob("*.py")):
        for module, line in _imports(source):
            top = module.split(".")[0]
            if top in ("lambdawrap", "__future__") or top in stdlib:
                continue
            # boto3 only in the fetch of declared secrets (the runtime provides it).
            ok = top in HANDLER_THIRD_PARTY or (source.name == "secret_sources.py" and top in ("boto3", "botocore"))
            assert ok, f"{source.relative_to(PACKAGE)}:{line} imports {module}"


def test_the_root_holds_only_the_public_modules_and_the_parts():
    assert sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__") == ["__init__.py", "companion", "devtools", "handler", "secrets.py", "shared"]


def test_the_boot_imports_nothing_heavy(tmp_path):
    # GIVEN a handler module WHEN lambdawrap boots, wraps it and runs an invocation THEN none of
    # the modules that cost a cold start was imported by us (wrapt's decorators pull inspect,
    # ast and dis; socket and random their Python layers; dataclasses and typing their own)
    import subprocess
    import textwrap

    import importlib.util

    (tmp_path / "fn.py").write_text("def handler(event, context):\n    return event\n")
    wrapt_home = str(Path(importlib.util.find_spec("wrapt").origin).parent.parent)  # where the layer's wrapt would be found
    code = textwrap.dedent(
        f"""
        import sys, types
        sys.path[:0] = [{str(PACKAGE.parent)!r}, {str(tmp_path)!r}, {wrapt_home!r}]
        before = set(sys.modules)
        from lambdawrap.handler import boot
        boot.initialize({{"_HANDLER": "fn.handler", "LAMBDAWRAP_SOCKET": {str(tmp_path / "s.sock")!r}}}, swallow_exceptions=False)
        from awslambdaric import bootstrap  # the runtime, started after the boot
        handler = bootstrap._get_handler("fn.handler")  # the handler as the runtime gets it
        handler({{"x": 1}}, types.SimpleNamespace(aws_request_id="r", invoked_function_arn="a"))
        assert hasattr(handler, "__wrapped__")
        print(sorted(set(sys.modules) - before))
        """
    )
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True)
    # What the runtime loads itself, without lambdawrap, is not ours
    runtime_code = f"import sys; sys.path[:0] = [{str(tmp_path)!r}, {wrapt_home!r}]; before = set(sys.modules); from awslambdaric import bootstrap; import fn; print(sorted(set(sys.modules) - before))"
    runtime = subprocess.run([sys.executable, "-S", "-c", runtime_code], capture_output=True, text=True, check=True)
    loaded = set(eval(out.stdout.strip())) - set(eval(runtime.stdout.strip()))  # noqa: S307 - our own subprocesses' lists of names
    heavy = {"inspect", "ast", "dis", "socket", "random", "dataclasses", "typing", "wrapt", "selectors"}
    assert not loaded & heavy, sorted(loaded & heavy)


def test_every_variable_the_settings_parse_has_its_row_in_the_readme():
    # GIVEN the names settings.py parses WHEN the README's configuration table is read THEN each
    # has its row, and each row names a variable that exists
    from lambdawrap.shared import settings

    readme = (PACKAGE.parent.parent / "README.md").read_text()
    rows = {line.split("`")[1] for line in readme.splitlines() if line.startswith("| `LAMBDAWRAP_")}
    names = {value for name, value in vars(settings).items() if name.isupper() and isinstance(value, str) and value.startswith("LAMBDAWRAP_")}
    assert names == rows, (sorted(names - rows), sorted(rows - names))
