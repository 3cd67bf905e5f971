"""The competitors' layer folders (the OpenTelemetry layer, ADOT's, Datadog's): each assembled as
its project's layer build does it, from packages pinned in a requirements file and installed with
`pip --target` into a folder of the layer's own (never into the project venv), plus the wrapper
files the bench wrote after reading that project's layer sources."""

from __future__ import annotations

import compileall
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.measure import log

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
PYTHON_TAG = "python%d.%d" % sys.version_info[:2]


@dataclass(frozen=True)
class CompetitorLayer:
    """One competitor's layer: where it is installed, from what, and how to tell it is there."""

    config: str  # the configuration that uses it
    folder: Path  # the layer folder, /opt when the function runs
    site: Path  # where pip puts its packages inside the folder
    requirements: Path
    marker: str  # a path under `site` that exists once the packages are installed
    sources: Path | None = None  # the bench's wrapper files: `*.py` go to `site`, the rest to the folder
    finish: Callable[[Path], None] | None = None  # the layer build's last steps (compile, prune)
    pins_everything: bool = True  # the file pins every package (pip --no-deps); else pip resolves the rest

    def available(self) -> tuple[bool, str]:
        """Whether the packages are installed, and if not, what to run."""
        if (self.site / self.marker).exists():
            return True, ""
        return False, f"its layer packages are not installed in {self.folder.relative_to(ROOT)} (run: python bench/run.py --install-competitors)"

    def assemble(self) -> None:
        """Put the bench's wrapper files into the installed layer (they may have changed since)."""
        if self.sources is None:
            return
        for path in self.sources.iterdir():
            target = self.site if path.suffix == ".py" else self.folder
            shutil.copy2(path, target / path.name)
            if path.suffix != ".py":
                os.chmod(target / path.name, 0o755)

    def install(self) -> int:
        """pip-install the pinned packages into a fresh folder; pip's exit code."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.site.mkdir(parents=True)
        cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *(["--no-deps"] if self.pins_everything else []), "--target", str(self.site), "-r", str(self.requirements)]
        log(f"installing the {self.config} layer: " + " ".join(cmd))
        code = subprocess.call(cmd)
        if code == 0 and self.finish is not None:
            self.finish(self.site)
        return code


def _datadog_finish(site: Path) -> None:
    """What Datadog's layer Dockerfile does after pip: drop the CLI and the dist-info files other
    than METADATA and entry points, compile every module with -OO (no debug ranges) into legacy
    .pyc files beside the sources, then remove the sources and the __pycache__ folders."""
    shutil.rmtree(site / "bin", ignore_errors=True)
    shutil.rmtree(site / "datadog" / "dogshell", ignore_errors=True)
    for info in site.glob("*.dist-info"):
        for path in info.rglob("*"):
            if path.is_file() and path.name not in ("METADATA", "entry_points.txt"):
                path.unlink()
    env = dict(os.environ, PYTHONNODEBUGRANGES="1")
    subprocess.check_call([sys.executable, "-OO", "-m", "compileall", "-q", "-b", str(site)], env=env, stdout=subprocess.DEVNULL)
    for path in list(site.rglob("*.py")):
        path.unlink()
    for cache in list(site.rglob("__pycache__")):
        shutil.rmtree(cache, ignore_errors=True)


def _adot_finish(site: Path) -> None:
    # ADOT's layer build runs compileall over the layer (pip has already compiled what it
    # installed; this catches the rest).
    compileall.compile_dir(str(site), quiet=1)


OTEL = CompetitorLayer(
    config="otel",
    folder=BENCH / ".otel-layer",
    site=BENCH / ".otel-layer" / "python",
    requirements=BENCH / "otel-layer-requirements.txt",
    marker="opentelemetry/instrumentation/aws_lambda",
    sources=BENCH / "otel_layer",
    pins_everything=False,
)
ADOT = CompetitorLayer(
    config="adot-fast-start",
    folder=BENCH / ".adot-layer",
    site=BENCH / ".adot-layer" / "python",
    requirements=BENCH / "adot-layer-requirements.txt",
    marker="amazon/opentelemetry/distro/opentelemetry_lite_sdk.py",
    sources=BENCH / "adot_layer",
    finish=_adot_finish,
)
DATADOG = CompetitorLayer(
    config="datadog",
    folder=BENCH / ".datadog-layer",
    site=BENCH / ".datadog-layer" / "python" / "lib" / PYTHON_TAG / "site-packages",
    requirements=BENCH / "datadog-layer-requirements.txt",
    marker="datadog_lambda/handler.pyc",
    finish=_datadog_finish,
)
COMPETITORS = {layer.config: layer for layer in (OTEL, ADOT, DATADOG)}


def install_competitors(names: list[str] | None = None) -> int:
    """Install the named competitors' layers (all by default); the first non-zero pip exit code."""
    worst = 0
    for name in names or list(COMPETITORS):
        code = COMPETITORS[name].install()
        if code and not worst:
            worst = code
    return worst
