"""Stand-in runtimes for the exec wrapper's tests.

The wrapper instruments only a runtime whose interpreter is Python's, as the managed Python
runtimes hand it first (`/var/lang/bin/python3.12`): a stand-in carries such a name.
"""

from __future__ import annotations

from pathlib import Path

# The name the managed runtimes give their interpreter.
PYTHON_NAME = "python3"


def env_named_python(folder: Path) -> str:
    """/usr/bin/env under the interpreter's name, in `folder`: a runtime that prints the
    environment it was started with."""
    link = folder / PYTHON_NAME
    if not link.is_symlink():
        link.symlink_to("/usr/bin/env")
    return str(link)


def script_named_python(folder: Path, text: str) -> Path:
    """A runtime that runs `text` (a shell script), under the interpreter's name, in `folder`."""
    runtime = folder / PYTHON_NAME
    runtime.write_text(text)
    runtime.chmod(0o755)
    return runtime
