"""lambdawrap as users get it: the layer built by `lambdawrap build-layer` (the project's layer
build: private dependency folders, the companion's own sys.path, whatever bytecode the build
ships) for this machine's architecture and a Python version (the bench's own unless asked),
rebuilt only when its inputs changed."""

from __future__ import annotations

import hashlib
import platform
import sys
from pathlib import Path

from harness.measure import log

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
# What the build reads: the package, the layer's own files and the pinned dependencies.
_INPUTS = (ROOT / "src" / "lambdawrap", ROOT / "layer", ROOT / "pyproject.toml")
_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


def _inputs_digest() -> str:
    digest = hashlib.sha256()
    for top in _INPUTS:
        paths = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for path in paths:
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def ensure_built_layer(python_version: str | None = None) -> Path:
    """The folder of the layer built for `python_version` (X.Y; None: the bench's own Python),
    built now if the sources changed since the last build. The layer ships a compiled extension
    (wrapt's) and bytecode for one version, so each version has its own folder. Raises
    LayerBuildError when it cannot be built (e.g. no interpreter of that version)."""
    from lambdawrap.devtools.layer_build import build_layer

    own = "%d.%d" % sys.version_info[:2]
    version = python_version or own
    name = ".lambdawrap-layer" if version == own else f".lambdawrap-layer-{version}"
    folder, stamp = BENCH / name, BENCH / f"{name}.stamp"
    digest = _inputs_digest() + version
    if (folder / "wrapper.sh").exists() and stamp.exists() and stamp.read_text() == digest:
        return folder
    arch = _ARCH.get(platform.machine().lower(), "x86_64")
    log(f"building the lambdawrap layer (build-layer --python-version {version} --arch {arch}) into {folder.relative_to(ROOT)}")
    build = build_layer(folder, arch=arch, python_version=version, zip_path=BENCH / f"{name}.zip")
    log(f"  built: {build.zipped_bytes / 2**20:.2f} MB zipped, {build.unzipped_bytes / 2**20:.2f} MB unzipped")
    stamp.write_text(digest)
    return folder
