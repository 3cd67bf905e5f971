"""What produced a run's numbers: the machine, whether Lambda's limits were enforced, Python, the
git revision and the package versions (the project's and every competitor layer's)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path

from harness.configurations import ROOT
from harness.layers import ADOT, DATADOG, OTEL


def _dist_version(name: str, path: Path | None = None) -> str:
    """Installed version of a distribution, in the venv or in a --target folder; "–" if absent."""
    from importlib import metadata

    try:
        if path is None:
            return metadata.version(name)
        dists = list(metadata.distributions(path=[str(path)]))
        norm = name.replace("-", "_").lower()
        return next((d.version for d in dists if d.metadata["Name"].replace("-", "_").lower() == norm), "–")
    except Exception:  # noqa: BLE001
        return "–"


def machine_info() -> dict:
    """Machine, Python, git revision, load average and package versions, for the report."""
    cpu = "?"
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    git = "?"
    with contextlib.suppress(Exception):
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5).stdout.strip()
        git = sha + (" (+ uncommitted changes)" if dirty else "")
    from lambdawrap.devtools.emulator.limits import machine_support

    unsupported, _ = machine_support()
    return {
        "loadavg_start": os.getloadavg()[0],
        "limits": "CPU share, memory limit and freezing enforced (cgroups)" if unsupported is None else f"NOT enforced ({unsupported}): every figure is at the machine's full speed",
        "machine": f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores, {mem_gb:.0f} GiB",
        "python": platform.python_version(),
        "git": git,
        "versions": {
            "lambdawrap": _dist_version("lambdawrap"),
            "awslambdaric": _dist_version("awslambdaric"),
            "wrapt": _dist_version("wrapt"),
            "boto3": _dist_version("boto3"),
            "opentelemetry-sdk (companion)": _dist_version("opentelemetry-sdk"),
            "opentelemetry-exporter-otlp-proto-http (companion)": _dist_version("opentelemetry-exporter-otlp-proto-http"),
            "otel layer: opentelemetry-instrumentation-aws-lambda": _dist_version("opentelemetry-instrumentation-aws-lambda", OTEL.site),
            "otel layer: opentelemetry-distro": _dist_version("opentelemetry-distro", OTEL.site),
            "otel layer: opentelemetry-sdk": _dist_version("opentelemetry-sdk", OTEL.site),
            "otel layer: opentelemetry-exporter-otlp-proto-http": _dist_version("opentelemetry-exporter-otlp-proto-http", OTEL.site),
            "adot-fast-start layer: aws-opentelemetry-distro": _dist_version("aws-opentelemetry-distro", ADOT.site),
            "adot-fast-start layer: opentelemetry-instrumentation-aws-lambda": _dist_version("opentelemetry-instrumentation-aws-lambda", ADOT.site),
            "adot-fast-start layer: opentelemetry-api": _dist_version("opentelemetry-api", ADOT.site),
            "datadog layer: datadog-lambda": _dist_version("datadog-lambda", DATADOG.site),
            "datadog layer: ddtrace": _dist_version("ddtrace", DATADOG.site),
            "datadog layer: datadog": _dist_version("datadog", DATADOG.site),
        },
    }
