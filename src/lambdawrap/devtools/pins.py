"""The versions pyproject.toml pins, read once for the tools that install them (the layer
build, the per-version runtime environments of the emulator)."""

from __future__ import annotations

import re
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[3]  # src/lambdawrap/devtools -> the repository
PYPROJECT = SOURCE_ROOT / "pyproject.toml"


class PinsError(Exception):
    """The pinned dependencies could not be found."""


def declared_dependencies() -> tuple[list[str], dict[str, list[str]]]:
    """(dependencies, {extra: requirements}) as pyproject.toml declares them, or as the
    installed distribution's metadata does outside a source checkout."""
    if PYPROJECT.is_file():
        try:
            import tomllib  # stdlib from 3.11; older interpreters use the installed metadata
        except ImportError:
            pass
        else:
            project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8")).get("project", {})
            return list(project.get("dependencies", [])), {k: list(v) for k, v in project.get("optional-dependencies", {}).items()}
    from importlib import metadata

    try:
        declared = metadata.requires("lambdawrap") or []
    except metadata.PackageNotFoundError as exc:
        raise PinsError("cannot find lambdawrap's pinned dependencies (no pyproject.toml, no installed metadata)") from exc
    dependencies: list[str] = []
    extras: dict[str, list[str]] = {}
    for requirement in declared:
        spec, _, marker = requirement.partition(";")
        found = re.search(r"""extra\s*==\s*["']([^"']+)["']""", marker)
        if found:
            extras.setdefault(found.group(1), []).append(spec.strip())
        else:
            dependencies.append(spec.strip())
    return dependencies, extras


def requirement_name(requirement: str) -> str:
    """The normalised project name of a requirement ("Foo_Bar==1" -> "foo-bar")."""
    found = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", found.group(1)).lower() if found else ""


def pinned(extra: str, names: set[str] | frozenset[str]) -> list[str]:
    """The requirements of `extra` whose names are in `names`; PinsError if one is missing."""
    requirements = [r for r in declared_dependencies()[1].get(extra, []) if requirement_name(r) in names]
    missing = names - {requirement_name(r) for r in requirements}
    if missing:
        raise PinsError(f"pyproject.toml's [{extra}] extra pins no {', '.join(sorted(missing))}")
    return requirements
