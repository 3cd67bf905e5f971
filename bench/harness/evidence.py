"""Evidence of where the time goes (full runs, or --evidence): `-X importtime` of a cold start per
configuration, py-spy attached to the in-process lambdawrap worker and to the companion, and a
step-by-step timing of lambdawrap's per-invocation work."""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from lambdawrap.devtools.otlp_receiver import OtlpReceiver

from harness.configurations import BENCH, Stack
from harness.environments import companion_of, invoke_ok
from harness.helper_processes import Worker, drain_server

_IMPORT_LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")


def importtime_entries(lines: list) -> list:
    """(self µs, cumulative µs, depth, module) for each `-X importtime` line."""
    entries = []
    for line in lines:
        m = _IMPORT_LINE.search(line)
        if m:
            entries.append((int(m.group(1)), int(m.group(2)), (len(m.group(3)) - 1) // 2, m.group(4)))
    return entries


def importtime_summary(entries: list, baseline: list | None = None, top: int = 12) -> dict:
    """Module count, import time and the top-level imports; with a baseline, also what it does not import."""
    top_level = sorted((e for e in entries if e[2] == 0), key=lambda e: -e[1])
    out = {
        "modules": len(entries),
        "total_ms": sum(e[0] for e in entries) / 1000,
        "top_level_cumulative": [(name, cum / 1000) for _, cum, _, name in top_level[:top]],
    }
    if baseline is not None:
        known = {e[3] for e in baseline}
        extra = [e for e in entries if e[3] not in known]
        per_module: collections.Counter = collections.Counter()
        times: collections.Counter = collections.Counter()
        for self_us, _, _, name in extra:
            per_module[name] += self_us
            times[name] += 1
        out["extra_vs_bare"] = {
            "modules": len(per_module),
            "imports": len(extra),  # > modules when a module is imported by two processes (exec)
            "self_ms": sum(e[0] for e in extra) / 1000,
            "top_self": [(name + (f" (×{times[name]})" if times[name] > 1 else ""), us / 1000) for name, us in per_module.most_common(top)],
        }
    return out


def evidence_importtime(stack: Stack, rx: OtlpReceiver) -> dict:
    """One cold start per configuration with PYTHONPROFILEIMPORTTIME=1: what each process imports."""
    raw: dict = {}
    for c in stack.configs:
        layer = stack.importtime_layer() if c == "lambdawrap" else None
        emu = stack.emulator(c, "trivial.handler", rx.endpoint, {"PYTHONPROFILEIMPORTTIME": "1"}, layer_folder=layer).start()
        try:
            invoke_ok(emu, stack.event)
            deadline = time.monotonic() + 3
            while c == "lambdawrap" and not importtime_entries(emu.log_lines("extension")) and time.monotonic() < deadline:
                time.sleep(0.05)  # the companion's stderr is pumped by a thread of its own
            raw[c] = {"runtime": importtime_entries(emu.log_lines("function"))}
            if c == "lambdawrap":
                raw[c]["companion"] = importtime_entries(emu.log_lines("extension"))
        finally:
            emu.stop()
    base = raw.get("bare", {}).get("runtime")
    return {c: {proc: importtime_summary(entries, base if proc == "runtime" and c != "bare" else None) for proc, entries in parts.items()} for c, parts in raw.items()}


def evidence_pyspy(stack: Stack) -> dict:
    """py-spy attached to the warm lambdawrap in-process worker (example handler, CPU samples only)."""
    pyspy = _pyspy()
    if pyspy is None:
        return {"skipped": _PYSPY_MISSING}
    raw = stack.scratch / "pyspy.txt"
    sock = stack.socket_path()
    seconds = 5
    with drain_server(sock):
        worker = Worker(stack, "lambdawrap", "app", "", sock)
        try:
            worker.ask("run 300")  # warm: imports and first calls stay out of the profile

            def run_200() -> int:
                worker.ask("run 200")
                return 200

            calls, err = _record_under_load(pyspy, worker.proc.pid, 2000, seconds, raw, (), run_200, 1)
        finally:
            worker.close()
    if not raw.exists():
        return {"skipped": f"py-spy failed: {err[-500:]}"}
    inclusive: collections.Counter = collections.Counter()
    leaf: collections.Counter = collections.Counter()
    in_wrapper = total = in_user = 0
    for frames, n in _raw_samples(raw):
        total += n
        ours = [f for f in frames if "lambdawrap" in f or "wrapt" in f]
        if ours:
            in_wrapper += n
        if any("(app.py" in f for f in frames):
            in_user += n
        for f in set(ours):
            inclusive[_frame(f)] += n
        if not any("(app.py" in f for f in frames):
            leaf[_frame(frames[-1])] += n
    return {
        "seconds": seconds,
        "calls_during": calls,
        "samples": total,
        "samples_in_lambdawrap_or_wrapt": in_wrapper,
        "samples_in_user_code": in_user,
        "top_inclusive": inclusive.most_common(16),
        "top_leaf": leaf.most_common(12),
    }


_BLOCKING = ("select (selectors.py", "wait (threading.py", "accept (socket.py", "readinto (socket.py", "recv_into", "_recv", "serve_forever", "next_event (", "request (")


def evidence_companion_pyspy(stack: Stack, rx: OtlpReceiver) -> dict:
    """py-spy attached to the companion while the example function is invoked back to back:
    where its ~1 ms of CPU per invocation goes (stacks blocked in select/wait are left out)."""
    pyspy = _pyspy()
    if pyspy is None:
        return {"skipped": _PYSPY_MISSING}
    raw = stack.scratch / "pyspy-companion.txt"
    seconds = 5
    emu = stack.emulator("lambdawrap", "app.handler", rx.endpoint).start()
    try:
        for _ in range(30):
            invoke_ok(emu, stack.event)
        pid = companion_of(emu).process.pid

        def invoke_once() -> int:
            invoke_ok(emu, stack.event)
            return 1

        invocations, err = _record_under_load(pyspy, pid, 1000, seconds, raw, ("--threads", "--gil"), invoke_once, 0.5)
    finally:
        emu.stop()
    if not raw.exists():
        return {"skipped": f"py-spy failed: {err[-500:]}"}
    inclusive: collections.Counter = collections.Counter()
    leaf: collections.Counter = collections.Counter()
    threads: collections.Counter = collections.Counter()
    busy = 0
    for frames, n in _raw_samples(raw):
        if any(b in frames[-1] for b in _BLOCKING):
            continue
        busy += n
        threads[frames[0]] += n
        for f in set(frames[1:]):
            if "lambdawrap" in f or "opentelemetry" in f:
                inclusive[_frame(f)] += n
        leaf[_frame(frames[-1])] += n
    return {"seconds": seconds, "invocations": invocations, "busy_samples": busy, "threads": threads.most_common(8), "top_inclusive": inclusive.most_common(16), "top_leaf": leaf.most_common(12)}


def evidence_components(stack: Stack) -> dict:
    """p50 of each step of lambdawrap's per-invocation work, hot and after 2 ms idle."""
    sock = stack.socket_path()
    with drain_server(sock):
        proc = subprocess.run([sys.executable, str(BENCH / "_inprocess.py"), "components", "--socket", sock, "--event", stack.event_file], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        return {"skipped": proc.stderr[-500:]}
    return json.loads(proc.stdout.splitlines()[-1])


_PYSPY_MISSING = "py-spy is not installed (pip install -r bench/requirements.txt)"


def _pyspy() -> str | None:
    """The py-spy executable, on PATH or next to this Python; None when it is not installed."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return pyspy if os.path.exists(pyspy) else None


def _record_under_load(pyspy: str, pid: int, rate: int, seconds: int, raw: Path, options: tuple[str, ...], load: Callable[[], int], margin_s: float) -> tuple[int, str]:
    """`py-spy record` of pid for `seconds` at `rate` Hz into a raw-format file, while load() is
    called again and again, from 0.5 s after py-spy starts until margin_s after it stops.
    Returns (the sum of what load() returned, py-spy's stderr)."""
    spy = subprocess.Popen([pyspy, "record", "--pid", str(pid), *options, "--rate", str(rate), "--duration", str(seconds), "--format", "raw", "--output", str(raw)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    done = 0
    ends = time.monotonic() + seconds + margin_s
    while time.monotonic() < ends:
        done += load()
    _, err = spy.communicate(timeout=60)
    return done, err


def _raw_samples(raw: Path) -> Iterator[tuple[list[str], int]]:
    """(frames, sample count) per line of a py-spy `--format raw` file."""
    for line in raw.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        if count.isdigit():
            yield stack_text.split(";"), int(count)


def _frame(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py:123)"
    m = re.match(r"(.*) \((.*?)(:\d+)?\)$", frame)
    if not m:
        return frame
    return f"{m.group(1)} ({os.path.basename(m.group(2))}{m.group(3) or ''})"

