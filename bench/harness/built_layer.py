"""lambdawrap as users get it: the layer built by `lambdawrap build-layer` (the project's layer
build: private dependency folders, the companion's own sys.path, whatever bytecode the build
ships) for this machine's architecture and Python, rebuilt only when its inputs changed."""

from __future__ import annotations

import hashlib
import platform
import sys
from pathlib import Path

from harness.measure import log

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
BUILT_LAYER = BENCH / ".lambdawrap-layer"
_STAMP = BENCH / ".lambdawrap-layer.stamp"
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


def ensure_built_layer() -> Path:
    """The built layer's folder, built now if the sources changed since the last build."""
    from lambdawrap.devtools.layer_build import build_layer

    digest = _inputs_digest()
    if (BUILT_LAYER / "wrapper.sh").exists() and _STAMP.exists() and _STAMP.read_text() == digest:
        return BUILT_LAYER
    version = "%d.%d" % sys.version_info[:2]
    arch = _ARCH.get(platform.machine().lower(), "x86_64")
    log(f"building the lambdawrap layer (build-layer --python-version {version} --arch {arch}) into {BUILT_LAYER.relative_to(ROOT)}")
    build = build_layer(BUILT_LAYER, arch=arch, python_version=version, zip_path=BENCH / ".lambdawrap-layer.zip")
    log(f"  built: {build.zipped_bytes / 2**20:.2f} MB zipped, {build.unzipped_bytes / 2**20:.2f} MB unzipped")
    _STAMP.write_text(digest)
    return BUILT_LAYER
