"""Packages the tests need beside the project's pins, installed once per venv into a folder of
their own (`pip install --no-deps --target`), from a requirements file in tests/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent


def installed(requirements: str, folder: str) -> str:
    """The folder under the venv holding `requirements`, (re)installed when the file changed."""
    wanted = (TESTS / requirements).read_text()
    target = Path(sys.prefix) / folder
    marker = target / ".installed"
    if not marker.exists() or marker.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target", str(target), "-r", str(TESTS / requirements)], check=True, timeout=300)
        marker.write_text(wanted)
    return str(target)
