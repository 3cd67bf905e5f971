"""The bench's smoke mode, so bench/run.py never rots: a few invocations per configuration, at
one memory size under Lambda's limits.

bare and lambdawrap (its layer built by the project's build-layer, from the local package index)
need nothing beyond the project's dev dependencies; the competitors (otel, adot-fast-start,
datadog) run only when their layer packages are installed (python bench/run.py
--install-competitors), and the charts only when matplotlib is. The full run (bench/README.md)
is not part of CI.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "bench" / "run.py"

pytest.importorskip("awslambdaric", reason="the emulator runs the real awslambdaric (dev extra)")


def _sane(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    proc = subprocess.run([sys.executable, str(RUN), "--smoke", "--out", str(out)], capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, json.loads((out / "results.json").read_text()), proc


@pytest.mark.timeout(270)
def test_smoke_reports_every_configuration_that_could_run(smoke):
    out, results, proc = smoke
    configs = results["configs"]
    assert configs[:2] == ["bare", "lambdawrap"]
    for competitor in ("otel", "adot-fast-start", "datadog"):
        if competitor not in configs:
            assert f"{competitor} configuration" in results["skipped"]
    (size,) = results["plan"]["sizes"]
    rows = {r["metric"]: r for r in results["rows"]}

    def row(prefix: str) -> dict:
        matches = [r for name, r in rows.items() if name.startswith(prefix)]
        assert matches, f"no row starting with {prefix!r} in {sorted(rows)}"
        return matches[0]

    everyone = [f"{size} MB: warm caller latency p50", f"{size} MB: warm billed duration p50", f"{size} MB: caller latency, receiver +200 ms, p50", f"{size} MB: CPU per warm invocation, all processes", f"{size} MB: environment memory after the warm run"]
    for policy in ("unthrottled", "as-invoke"):
        for handler in ("trivial", "boto3-importing"):
            everyone += [f"{size} MB, init {policy}, {handler}: init duration p50", f"{size} MB, init {policy}, {handler}: first invoke, billed duration p50"]
    for prefix in everyone:
        r = row(prefix)
        for config in configs:
            assert _sane(r[config]), (prefix, config, r)
    for prefix in ("in-process handler call p50, example", f"{size} MB: log flood"):
        r = row(prefix)
        for config in ("bare", "lambdawrap"):
            assert _sane(r[config]), (prefix, config, r)
    assert _sane(row(f"{size} MB: companion peak RSS")["lambdawrap"])
    assert _sane(row(f"{size} MB: CPU per warm invocation, the companion")["lambdawrap"])
    for strategy in ("end", "periodic,1000", "adaptive"):
        value = row(f"{size} MB: post-response p50 (ms), LAMBDAWRAP_FLUSH={strategy},")["lambdawrap"]
        assert isinstance(value, float) and math.isfinite(value) and value >= 0
    assert _sane(row("outgoing call CPU in the function's process, boto3 DynamoDB.ListTables (moto), median")["lambdawrap"])
    # Every record sent to the companion is exported or counted as dropped with a reason
    # (accounting, not timing: how many the socket takes depends on the machine's load).
    for step in results["companion"]["steps"]:
        assert step["delivered"] + step["companion_dropped"] == step["sent"], step
    assert _sane(row("offered 1000/s")["lambdawrap"])
    assert _sane(row("SHUTDOWN flush of")["lambdawrap"])
    # Every target has a verdict or is explicitly informational.
    assert all(t["met"] in (True, False, None) for t in results["targets"])


def test_smoke_writes_the_table_and_chart(smoke):
    out, results, proc = smoke
    table = (out / "results.md").read_text()
    assert "MB: warm caller latency p50" in table
    assert "| target | measured | limit | met |" in table
    assert "warm billed duration p50" in proc.stdout  # the table is printed too
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "chart" in results["skipped"]
    else:
        assert (out / "chart.png").stat().st_size > 10_000
        assert (out / "chart-memory.png").stat().st_size > 10_000


@pytest.mark.timeout(600)
def test_smoke_reports_init_and_overhead_per_python_version(tmp_path):
    # GIVEN the newest Python other than the bench's own found here, and a version that is not
    from lambdawrap.devtools.interpreters import Interpreter, available, running_interpreter

    found = {v: i for v, i in available().items() if isinstance(i, Interpreter) and v != running_interpreter().version}
    if not found:
        pytest.skip(f"no Python but the bench's own ({running_interpreter().version}) among 3.10-3.13 on this machine")
    version = sorted(found, key=lambda v: int(v.split(".")[1]))[-1]
    # WHEN the bench runs figure 8 for both
    proc = subprocess.run([sys.executable, str(RUN), "--smoke", "--only", "versions", "--python", f"{version},3.99", "--out", str(tmp_path)], capture_output=True, text=True, timeout=540, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    # THEN that version's init (at the run's memory size) and in-process overhead are reported
    # for bare and lambdawrap (its layer built for that version)...
    (size,) = results["plan"]["sizes"]
    label = f"Python {found[version].full_version}: "
    init = f"{size} MB, init unthrottled: init duration p50, trivial handler (ms)"
    rows = {r["metric"][len(label) :]: r for r in results["rows"] if r["metric"].startswith(label)}
    for metric in (init, f"{size} MB, init unthrottled: init duration p50, boto3-importing handler (ms)", "in-process wrapper overhead p50, example handler, full core (µs)", "in-process handler call p50, trivial handler, full core (µs)"):
        assert _sane(rows[metric]["bare"]) and _sane(rows[metric]["lambdawrap"]), (metric, rows.get(metric))
    assert _sane(rows[init]["lambdawrap/bare"])
    # ...on that version's runtime, and the missing one is named as skipped, with the reason.
    assert results["versions"][version]["python"].endswith(f"python{version}")
    assert results["skipped"]["Python 3.99"].startswith("no Python 3.99 interpreter found")
    assert f"| 8 | {label}{init} |" in (tmp_path / "results.md").read_text()


def test_the_bench_counts_the_cpu_of_threads_that_have_exited():
    # GIVEN a process whose only busy thread burned 0.3 s of CPU and exited (as the companion's
    # per-flush export threads do)
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from harness.measure import cpu_ns
    finally:
        sys.path.remove(str(ROOT / "bench"))
    burner = (
        "import threading, time\n"
        "def burn():\n"
        "    began = time.thread_time()\n"
        "    while time.thread_time() - began < 0.3: pass\n"
        "worker = threading.Thread(target=burn); worker.start(); worker.join()\n"
        "print('burned', flush=True)\n"
        "import sys; sys.stdin.read()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", burner], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "burned"
        # THEN the bench's CPU count of it includes that thread's time
        assert cpu_ns(proc.pid) >= 0.3e9
    finally:
        proc.kill()
        proc.wait()
    # ... and a process that is gone counts nothing
    assert cpu_ns(proc.pid) == 0.0


@pytest.mark.timeout(300)
def test_the_importtime_evidence_profiles_the_companion_too():
    # GIVEN the bench's stack with the built layer (the launcher starts the companion with -E,
    # so PYTHONPROFILEIMPORTTIME alone reaches only the function's process)
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from harness.built_layer import ensure_built_layer
        from harness.configurations import Stack
        from harness.evidence import evidence_importtime
    finally:
        sys.path.remove(str(ROOT / "bench"))
    from lambdawrap.devtools.otlp_receiver import OtlpReceiver

    stack = Stack(["bare", "lambdawrap"], ensure_built_layer())
    rx = OtlpReceiver().start()
    try:
        # WHEN the evidence of a full run profiles one cold start of each
        evidence = evidence_importtime(stack, rx)
    finally:
        rx.stop()
        stack.close()
    # THEN the companion's imports are counted, its own package among them, beside the runtime's
    companion = evidence["lambdawrap"]["companion"]
    assert companion["modules"] > 50 and companion["total_ms"] > 0, companion
    assert any(name.startswith("lambdawrap.companion.") for name, _ in companion["top_level_cumulative"]), companion
    assert evidence["lambdawrap"]["runtime"]["modules"] > evidence["bare"]["runtime"]["modules"]
