#!/usr/bin/env python3
"""lambdawrap benchmark: the example function bare, with lambdawrap, and with the OpenTelemetry
Lambda layer's approach, side by side in one run, through the emulator and the real awslambdaric.

    python bench/run.py [--smoke] [--n N] [--cold N] [--out DIR]

See bench/README.md for what each figure means and how to read the output. Outputs go to
--out (default bench/out/): results.md, results.json, chart.png; a full run also updates
bench/RESULTS.md. Configurations alternate (A B C, B C A, ...) so machine drift hits all alike.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import math
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from lambdawrap.devtools.emulator import Emulator  # noqa: E402
from lambdawrap.devtools.otlp_receiver import OtlpReceiver  # noqa: E402

LAYER = ROOT / "layer"
EXAMPLE = ROOT / "examples" / "hello" / "app.py"
EVENT = ROOT / "examples" / "events" / "apigw-rest.json"
FUNCTIONS = BENCH / "functions"
OTEL_LAYER_SRC = BENCH / "otel_layer"
OTEL_LAYER = BENCH / ".otel-layer"
OTEL_PKGS = OTEL_LAYER / "python"
OTEL_REQUIREMENTS = BENCH / "otel-layer-requirements.txt"
RESULTS_MD = BENCH / "RESULTS.md"
CONFIGS = ("bare", "lambdawrap", "otel")
NOOP_EXT = "bare+noop-ext"  # diagnostic: bare plus an external extension that does nothing
LW_RUNTIME_ONLY = "lambdawrap: runtime side only"  # diagnostic (cold start): exec wrapper + boot, no companion
LW_COMPANION_ONLY = "lambdawrap: companion only"  # diagnostic (cold start): companion, no exec wrapper
COLD_DIAGNOSTICS = (LW_RUNTIME_ONLY, LW_COMPANION_ONLY)
NOOP_EXTENSION = """#!{python} -S
# A no-op external extension: registers for INVOKE and SHUTDOWN and calls /next at once.
# It measures what merely having an external extension costs on this platform (emulator).
import http.client, json, os
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port))
conn.request("POST", "/2020-01-01/extension/register", body=json.dumps({{"events": ["INVOKE", "SHUTDOWN"]}}), headers={{"Lambda-Extension-Name": "noop"}})
reply = conn.getresponse()
ident = reply.getheader("Lambda-Extension-Identifier")
reply.read()
while True:
    conn.request("GET", "/2020-01-01/extension/event/next", headers={{"Lambda-Extension-Identifier": ident}})
    if json.loads(conn.getresponse().read()).get("eventType") == "SHUTDOWN":
        break
"""
STRATEGIES = ("end", "periodic,1000", "adaptive")
SLOW_DELAY_S = 0.2
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


@dataclass
class Plan:
    """How much of everything to run. The defaults are the full run (~7 min on 2 cores)."""

    n: int = 2000  # warm invocations per configuration (figure 1)
    inproc: int = 2000  # in-process calls per configuration and handler (figure 1)
    n_slow: int = 200  # warm invocations against the 200 ms receiver (figure 2)
    cold: int = 40  # fresh environments per configuration and handler (figure 3)
    n_post: int = 300  # invocations per flush strategy (figure 4)
    n_sparse: int = 15  # adaptive with 1.1 s gaps between invocations (figure 4)
    rates: tuple = (1000, 2000, 3000, 4000, 6000, 8000, 12000, 16000)  # offered records/s (figure 6)
    rate_seconds: float = 3.0
    burst: int = 20000  # records sent as fast as the socket takes them (figure 6)
    shutdown_spans: int = 10000  # buffered spans flushed on SHUTDOWN (figure 6)
    shutdown_repeats: int = 3
    warmup: int = 20  # unmeasured warm invocations per environment
    chunk: int = 100  # in-process calls per turn before the next configuration's turn

    @classmethod
    def smoke(cls) -> "Plan":
        return cls(n=5, inproc=40, n_slow=2, cold=1, n_post=3, n_sparse=0, rates=(1000,), rate_seconds=0.2, burst=300, shutdown_spans=300, shutdown_repeats=1, warmup=2, chunk=20)


# -- small helpers ------------------------------------------------------------------------


def log(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def pct(values: list, q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no data."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def summary(values: list) -> dict:
    return {"n": len(values), "p50": pct(values, 50), "p99": pct(values, 99), "mean": statistics.fmean(values) if values else float("nan"), "min": min(values) if values else float("nan")}


def rotated(items: list, i: int) -> list:
    k = i % len(items) if items else 0
    return items[k:] + items[:k]


def proc_status(pid: int) -> dict:
    """VmHWM/VmRSS of a process in MB (empty if it is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def cpu_ns(pid: int) -> float:
    """CPU time a process's live threads have used so far, in nanoseconds (0 if it is gone)."""
    total = 0.0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += float(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            pass
    return total


def wait_cpu_quiet(pid: int, quiet_s: float = 0.3, timeout_s: float = 60.0) -> float:
    """Wait until the process has been (nearly) idle for quiet_s; returns when it was last busy
    (monotonic). Busy = more than 0.5 ms of CPU in a 10 ms poll."""
    last = cpu_ns(pid)
    last_busy = time.monotonic()
    deadline = last_busy + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.01)
        now_ns = cpu_ns(pid)
        now = time.monotonic()
        if now_ns - last > 0.5e6:
            last_busy = now
        last = now_ns
        if now - last_busy >= quiet_s:
            break
    return last_busy


def otel_available() -> tuple[bool, str]:
    if not (OTEL_PKGS / "bin" / "opentelemetry-instrument").exists() or not (OTEL_PKGS / "opentelemetry" / "instrumentation" / "aws_lambda").is_dir():
        return False, f"the OpenTelemetry layer packages are not installed in {OTEL_PKGS.relative_to(ROOT)} (run: python bench/run.py --install-otel)"
    return True, ""


def assemble_otel_layer() -> None:
    """Put our otel-instrument wrapper and otel_wrapper.py next to the installed packages."""
    shutil.copy2(OTEL_LAYER_SRC / "otel-instrument", OTEL_LAYER / "otel-instrument")
    os.chmod(OTEL_LAYER / "otel-instrument", 0o755)
    shutil.copy2(OTEL_LAYER_SRC / "otel_wrapper.py", OTEL_PKGS / "otel_wrapper.py")


def install_otel() -> int:
    OTEL_PKGS.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "install", "--upgrade", "--target", str(OTEL_PKGS), "-r", str(OTEL_REQUIREMENTS)]
    log("installing the OpenTelemetry layer packages: " + " ".join(cmd))
    return subprocess.call(cmd)


class Stack:
    """Scratch space, the task folder and a factory of emulators for each configuration."""

    def __init__(self, configs: list) -> None:
        self.configs = configs
        self.scratch = Path(tempfile.mkdtemp(prefix="lwbench-"))
        self.task = self.scratch / "task"
        self.task.mkdir()
        shutil.copy2(EXAMPLE, self.task / "app.py")
        for path in FUNCTIONS.glob("*.py"):
            shutil.copy2(path, self.task / path.name)
        self.event = json.loads(EVENT.read_text())
        self.event_file = str(EVENT)
        self._sockets = 0
        self.noop_layer = self.scratch / "noop-layer"
        (self.noop_layer / "extensions").mkdir(parents=True)
        script = self.noop_layer / "extensions" / "noop"
        script.write_text(NOOP_EXTENSION.format(python=sys.executable))
        script.chmod(0o755)
        self.layer_without_companion = self.scratch / "layer-no-companion"
        shutil.copytree(LAYER, self.layer_without_companion, symlinks=True, ignore=shutil.ignore_patterns("extensions", "__pycache__"))

    def socket_path(self) -> str:
        # Unix socket paths are capped at 108 bytes: a short folder of its own under /tmp.
        folder = tempfile.mkdtemp(prefix="lwb", dir="/tmp")
        self._sockets += 1
        return os.path.join(folder, "lw.sock")

    def emulator(self, config: str, handler: str, endpoint: str, extra_env: dict | None = None, timeout_s: float = 6.0) -> Emulator:
        env = {"NO_PROXY": "127.0.0.1,localhost"}
        layer = None
        if config in ("lambdawrap", LW_RUNTIME_ONLY, LW_COMPANION_ONLY):
            layer = str(self.layer_without_companion if config == LW_RUNTIME_ONLY else LAYER)
            env.update({"LAMBDAWRAP_SOCKET": self.socket_path(), "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
            if config != LW_COMPANION_ONLY:
                env["AWS_LAMBDA_EXEC_WRAPPER"] = "/opt/wrapper.sh"
        elif config == NOOP_EXT:
            layer = str(self.noop_layer)
        elif config == "otel":
            layer = str(OTEL_LAYER)
            env.update({"AWS_LAMBDA_EXEC_WRAPPER": "/opt/otel-instrument", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
        env.update(extra_env or {})
        return Emulator(str(self.task), handler, layer, env=env, invoke_port=None, timeout_s=timeout_s)

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def companion_of(emu: Emulator):
    return next((e for e in emu.sandbox._launched if e.name == "lambdawrap"), None)


def invoke_ok(emu: Emulator, event: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = emu.invoke(event)
    elapsed = (time.perf_counter() - started) * 1000
    if result.status != 200 or result.function_error:
        raise RuntimeError(f"invocation failed: {result.status} {result.body[:300]!r}\n" + "\n".join(emu.log_lines()[-30:]))
    if not emu.wait_idle(30):
        raise RuntimeError("the environment did not become idle within 30 s")
    return elapsed, result


def reports_by_id(emu: Emulator, record_type: str) -> dict:
    return {r["record"].get("requestId"): r["record"] for r in emu.records(record_type)}


def post_response_ms(report: dict) -> float | None:
    """What is billed after the response: runtimeDone -> the last extension's /next."""
    for span in report.get("spans") or []:
        if span.get("name") == "extensionOverhead":
            return float(span["durationMs"])
    return None


@contextlib.contextmanager
def environments(stack: Stack, specs: dict, handler: str, endpoint: str) -> Iterator[dict]:
    """Start one emulator per spec {label: (config, extra_env)}, initialised and warm."""
    emus: dict = {}
    try:
        for label, (config, extra) in specs.items():
            emus[label] = stack.emulator(config, handler, endpoint, extra).start()
        yield emus
    finally:
        for emu in emus.values():
            with contextlib.suppress(Exception):
                emu.stop()


# -- figure 1 (in-process) ----------------------------------------------------------------


class Worker:
    def __init__(self, stack: Stack, config: str, module: str, endpoint: str, socket_path: str) -> None:
        cmd = [sys.executable, str(BENCH / "_inprocess.py"), "worker", "--config", config, "--task", str(stack.task), "--module", module, "--event", stack.event_file, "--scratch", str(stack.scratch), "--socket", socket_path, "--endpoint", endpoint, "--otel-pkgs", str(OTEL_PKGS)]
        self.config = config
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LAMBDAWRAP_"))})
        ready = self.proc.stdout.readline()
        if not ready:
            raise RuntimeError(f"in-process worker {config} failed to start: {self.proc.stderr.read()[-2000:]}")

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"in-process worker {self.config} died: {self.proc.stderr.read()[-2000:]}")
        return json.loads(line)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def drain_server(path: str) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, str(BENCH / "_inprocess.py"), "drain", path], stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        yield proc
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def receiver_process() -> Iterator[str]:
    """The project's OTLP receiver in a process of its own, so it never takes the worker's GIL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "lambdawrap.devtools.otlp_receiver", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()


def phase_inprocess(stack: Stack, plan: Plan) -> dict:
    """Wrapper overhead in the handler's process: perf_counter around the wrapped call."""
    out: dict = {}
    with receiver_process() as endpoint:
        for module in ("app", "trivial"):
            sock = stack.socket_path()
            with drain_server(sock):
                workers = {c: Worker(stack, c, module, endpoint, sock) for c in stack.configs}
                try:
                    data = {c: {"total_ns": [], "inner_ns": []} for c in workers}
                    for w in workers.values():
                        w.ask(f"run {max(plan.chunk, 100)}")  # warm-up, not kept
                    rounds = max(1, plan.inproc // plan.chunk)
                    for i in range(rounds):
                        for c in rotated(list(workers), i):
                            answer = workers[c].ask(f"run {plan.chunk}")
                            data[c]["total_ns"] += answer["total_ns"]
                            data[c]["inner_ns"] += answer["inner_ns"]
                        if rounds >= 10 and (i + 1) % (rounds // 5) == 0:
                            log(f"  in-process {module}: {i + 1}/{rounds} rounds")
                    for c, w in workers.items():
                        data[c]["rss"] = w.ask("rss")
                finally:
                    for w in workers.values():
                        w.close()
            result = {}
            for c, d in data.items():
                total_us = [t / 1000 for t in d["total_ns"]]
                overhead_us = [(t - i) / 1000 for t, i in zip(d["total_ns"], d["inner_ns"])]
                result[c] = {"total_us": summary(total_us), "wrapper_us": summary(overhead_us), "rss": d["rss"], "samples_total_us": total_us}
            out[module] = result
            log(f"  in-process {module}: " + ", ".join(f"{c} wrapper p50 {r['wrapper_us']['p50']:.1f} µs" for c, r in result.items()))
    return out


# -- figures 1, 2, 5 (warm, through the emulator) -----------------------------------------


def phase_warm(stack: Stack, plan: Plan, rx: OtlpReceiver) -> dict:
    specs = {c: (c, None) for c in stack.configs + [NOOP_EXT]}
    out: dict = {"latency_ms": {}, "slow_latency_ms": {}, "runtime_done_ms": {}, "post_response_ms": {}, "memory_mb": {}}
    with environments(stack, specs, "app.handler", rx.endpoint) as emus:
        for label, emu in emus.items():
            for _ in range(plan.warmup):
                invoke_ok(emu, stack.event)
        lat = {c: [] for c in emus}
        ids = {c: [] for c in emus}
        cpu_before = {c: (cpu_ns(emu.sandbox._runtime.pid), cpu_ns(companion_of(emu).process.pid) if companion_of(emu) else 0.0) for c, emu in emus.items()}
        for i in range(plan.n):
            for c in rotated(list(emus), i):
                elapsed, result = invoke_ok(emus[c], stack.event)
                lat[c].append(elapsed)
                ids[c].append(result.request_id)
            if plan.n >= 100 and (i + 1) % (plan.n // 5) == 0:
                log(f"  warm: {i + 1}/{plan.n} rounds; p50 so far " + ", ".join(f"{c} {pct(v, 50):.2f} ms" for c, v in lat.items()))
        out["cpu_us_per_invoke"] = {}
        for c, emu in emus.items():
            ext = companion_of(emu)
            runtime_cpu = (cpu_ns(emu.sandbox._runtime.pid) - cpu_before[c][0]) / plan.n / 1000
            out["cpu_us_per_invoke"][c] = {"runtime": runtime_cpu}
            if ext is not None:
                out["cpu_us_per_invoke"][c]["extension"] = (cpu_ns(ext.process.pid) - cpu_before[c][1]) / plan.n / 1000
        for c, emu in emus.items():
            done = reports_by_id(emu, "platform.runtimeDone")
            reports = reports_by_id(emu, "platform.report")
            out["latency_ms"][c] = lat[c]
            out["runtime_done_ms"][c] = [done[r]["metrics"]["durationMs"] for r in ids[c] if r in done]
            out["post_response_ms"][c] = [v for v in (post_response_ms(reports.get(r, {})) for r in ids[c]) if v is not None]
            mem = {"runtime": proc_status(emu.sandbox._runtime.pid)}
            ext = companion_of(emu)
            if ext is not None:
                mem["companion"] = proc_status(ext.process.pid)
            out["memory_mb"][c] = mem
        scopes = collections.Counter(str(span.get("scope")) for span in rx.spans())
        out["spans_by_scope"] = dict(scopes)
        log("  warm: spans received by scope " + json.dumps(out["spans_by_scope"]))
        log("  warm: memory " + ", ".join(f"{c} runtime VmHWM {m['runtime'].get('VmHWM', float('nan')):.1f} MB" for c, m in out["memory_mb"].items()))
        # Figure 2: the collector answers after 200 ms.
        rx.set_behaviour(delay_s=SLOW_DELAY_S)
        try:
            slow = {c: [] for c in emus}
            for i in range(plan.n_slow):
                for c in rotated(list(emus), i):
                    slow[c].append(invoke_ok(emus[c], stack.event)[0])
                if plan.n_slow >= 50 and (i + 1) % (plan.n_slow // 4) == 0:
                    log(f"  slow receiver: {i + 1}/{plan.n_slow} rounds")
            out["slow_latency_ms"] = slow
        finally:
            rx.reset_behaviour()
    return out


# -- figure 4 (post-response time per flush strategy) -------------------------------------


def phase_post(stack: Stack, plan: Plan, rx: OtlpReceiver) -> dict:
    specs = {s: ("lambdawrap", {"LAMBDAWRAP_FLUSH": s}) for s in STRATEGIES}
    out: dict = {}
    with environments(stack, specs, "app.handler", rx.endpoint) as emus:
        for emu in emus.values():
            for _ in range(plan.warmup):
                invoke_ok(emu, stack.event)
        ids = {s: [] for s in emus}
        for i in range(plan.n_post):
            for s in rotated(list(emus), i):
                ids[s].append(invoke_ok(emus[s], stack.event)[1].request_id)
            if plan.n_post >= 50 and (i + 1) % (plan.n_post // 3) == 0:
                log(f"  post-response: {i + 1}/{plan.n_post} rounds")
        sparse = []
        emu = emus["adaptive"]
        for i in range(plan.n_sparse):
            time.sleep(1.1)  # an idle function: adaptive flushes at the end of each invocation
            sparse.append(invoke_ok(emu, stack.event)[1].request_id)
        for s, emu in emus.items():
            reports = reports_by_id(emu, "platform.report")
            out[s] = [v for v in (post_response_ms(reports.get(r, {})) for r in ids[s]) if v is not None]
        if sparse:
            reports = reports_by_id(emus["adaptive"], "platform.report")
            out["adaptive (idle, 1.1 s gaps)"] = [v for v in (post_response_ms(reports.get(r, {})) for r in sparse) if v is not None]
    return out


# -- figure 3 (cold start) ----------------------------------------------------------------


def mark_init(emu: Emulator) -> dict:
    """Timestamps of the init critical path, taken on the emulator's side of the APIs."""
    sb = emu.sandbox
    marks: dict = {}

    def first(name: str, fn: Callable) -> Callable:
        def wrapper(*a, **k):
            marks.setdefault(name, time.monotonic())
            return fn(*a, **k)

        return wrapper

    sb._init = first("init_start", sb._init)
    end_init = sb._end_init

    def on_end_init(*a, **k):
        # CPU each process has used by the end of init (schedstat: nanoseconds on a CPU).
        if sb._runtime is not None:
            marks["runtime_cpu_ms"] = cpu_ns(sb._runtime.pid) / 1e6
        for ext in sb._launched:
            if ext.process is not None:
                marks["extension_cpu_ms"] = marks.get("extension_cpu_ms", 0.0) + cpu_ns(ext.process.pid) / 1e6
        return end_init(*a, **k)

    sb._end_init = on_end_init
    sb.runtime_next = first("runtime_ready", sb.runtime_next)
    sb.extension_register = first("extension_registered", sb.extension_register)
    sb.extension_next = first("extension_ready", sb.extension_next)
    return marks


def phase_cold(stack: Stack, plan: Plan, rx: OtlpReceiver) -> dict:
    out: dict = {}
    for module in ("trivial", "with_boto3"):
        configs = stack.configs + ([] if plan.cold < 2 else list(COLD_DIAGNOSTICS))
        data = {c: {"init_ms": [], "first_invoke_ms": [], "runtime_ready_ms": [], "companion_ready_ms": [], "runtime_cpu_ms": [], "companion_cpu_ms": []} for c in configs}
        warm_up = 1 if plan.cold > 1 else 0  # a first, unmeasured round fills the page cache
        for i in range(plan.cold + warm_up):
            for c in rotated(configs, i):
                emu = stack.emulator(c, f"{module}.handler", rx.endpoint).start()
                try:
                    marks = mark_init(emu)
                    elapsed, _ = invoke_ok(emu, stack.event)
                    init = emu.records("platform.initReport")
                finally:
                    emu.stop()
                if i < warm_up:
                    continue
                d = data[c]
                d["init_ms"].append(float(init[-1]["record"]["metrics"]["durationMs"]))
                d["first_invoke_ms"].append(elapsed)
                if "runtime_ready" in marks:
                    d["runtime_ready_ms"].append((marks["runtime_ready"] - marks["init_start"]) * 1000)
                if "extension_ready" in marks:
                    d["companion_ready_ms"].append((marks["extension_ready"] - marks["init_start"]) * 1000)
                if "runtime_cpu_ms" in marks:
                    d["runtime_cpu_ms"].append(marks["runtime_cpu_ms"])
                if "extension_cpu_ms" in marks:
                    d["companion_cpu_ms"].append(marks["extension_cpu_ms"])
            if plan.cold >= 10 and (i + 1) % 10 == 0:
                log(f"  cold {module}: {i + 1 - warm_up}/{plan.cold} " + ", ".join(f"{c} init p50 {pct(d['init_ms'], 50):.0f} ms" for c, d in data.items()))
        out[module] = data
        log(f"  cold {module}: " + ", ".join(f"{c} init p50 {pct(d['init_ms'], 50):.1f} ms" for c, d in data.items()))
    return out


# -- figure 6 (companion throughput and SHUTDOWN flush) -----------------------------------


class _Capture:
    def __init__(self) -> None:
        self.records: list = []

    def send(self, record: dict) -> bool:
        self.records.append(dict(record))
        return True


def record_template(stack: Stack) -> dict:
    """A real channel record, made by lambdawrap's own OpenTelemetry bridge: one user span, as
    `_Span.end()` sends it. (Invocation records are no good here: the companion turns one into a
    span only for a request id the platform announced with INVOKE, and a single environment
    cannot be invoked thousands of times a second.)"""
    from lambdawrap.handler.otel_bridge import _TracerProvider

    capture = _Capture()
    tracer = _TracerProvider(capture).get_tracer("orders")  # type: ignore[arg-type]
    span = tracer.start_span("orders.lookup", attributes={"order.id": "42", "db.system": "dynamodb", "db.operation.name": "GetItem"})
    span.end()
    return capture.records[-1]


def make_record(template: dict, prefix: str, i: int) -> dict:
    now = time.time_ns()
    span = dict(template["spans"][0], span_id=f"{i + 1:016x}", start_ns=now - 1_000_000, end_ns=now)
    span["attributes"] = dict(span.get("attributes") or {}, **{"bench.id": f"{prefix}{i:08d}"})
    return dict(template, spans=[span])


def wait_delivered(sink, prefix: str, expected: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        got = sink.count(prefix)
        if got >= expected:
            return got
        if got != last:
            last, last_change = got, time.monotonic()
        elif time.monotonic() - last_change > 5:
            break
        time.sleep(0.05)
    return sink.count(prefix)


def phase_companion(stack: Stack, plan: Plan) -> dict:
    from _sink import CountingSink
    from lambdawrap.handler.channel import Channel
    from lambdawrap.shared.framing import encode

    template = record_template(stack)
    out: dict = {"record_bytes": len(encode(template)), "steps": [], "burst": {}, "shutdown": []}
    sink = CountingSink().start()
    try:
        env = {"LAMBDAWRAP_FLUSH": "end", "LAMBDAWRAP_BUFFER_MAX_SPANS": "1000000"}
        emu = stack.emulator("lambdawrap", "trivial.handler", sink.endpoint, env, timeout_s=30).start()
        try:
            invoke_ok(emu, stack.event)
            ext = companion_of(emu)
            pid = ext.process.pid
            sock_path = emu.config.env["LAMBDAWRAP_SOCKET"]
            # Paced: offered rate -> handler-side drops (socket full) and spans delivered.
            for rate in plan.rates:
                prefix = f"rate{rate}-"
                sink.watch(prefix)
                dropped_before = sum(sink.dropped.values())
                total = int(rate * plan.rate_seconds)
                records = [make_record(template, prefix, i) for i in range(total)]
                channel = Channel(sock_path)
                refused = 0
                started = time.perf_counter()
                sent = 0
                # At most 2 ms worth at once: if the sender itself was descheduled, it does not
                # catch up in one burst (that would overflow the socket whatever the companion
                # does); the achieved rate says whether it kept the pace.
                max_burst = max(1, int(rate * 0.002))
                while sent < total:
                    due = min(total, int((time.perf_counter() - started) * rate) + 1, sent + max_burst)
                    while sent < due:
                        if not channel.send(records[sent]):
                            refused += 1
                        sent += 1
                    time.sleep(0.0005)
                elapsed = time.perf_counter() - started
                wait_cpu_quiet(pid, 0.2)
                invoke_ok(emu, stack.event)  # the flush strategy "end" exports now
                delivered = wait_delivered(sink, prefix, total - refused, 60)
                invoke_ok(emu, stack.event)  # one more, so the dropped counter is exported too
                step = {"offered_per_s": rate, "achieved_per_s": total / elapsed, "sent": total, "refused_by_socket": refused, "delivered": delivered, "companion_dropped": sum(sink.dropped.values()) - dropped_before}
                step["lossless"] = refused == 0 and delivered == total and step["companion_dropped"] == 0 and step["achieved_per_s"] >= rate * 0.97
                out["steps"].append(step)
                log(f"  throughput {rate}/s: achieved {step['achieved_per_s']:.0f}/s, refused {refused}, delivered {delivered}/{total}, dropped {step['companion_dropped']}")
                if not step["lossless"] and refused > total * 0.1:
                    break
            # Burst: a blocking sender, so the companion's ingest speed is the only limit.
            prefix = "burst-"
            sink.watch(prefix)
            frames = b"".join(encode(make_record(template, prefix, i)) for i in range(plan.burst))
            cpu_before = cpu_ns(pid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(sock_path)
                started = time.monotonic()
                s.sendall(frames)
                sent_at = time.monotonic()
                done_at = wait_cpu_quiet(pid, 0.3)
            cpu_s = (cpu_ns(pid) - cpu_before) / 1e9
            invoke_ok(emu, stack.event)
            delivered = wait_delivered(sink, prefix, plan.burst, 120)
            out["burst"] = {"records": plan.burst, "send_s": sent_at - started, "ingest_wall_s": max(done_at - started, 1e-3), "ingest_per_s": plan.burst / max(done_at - started, 1e-3), "companion_cpu_s": cpu_s, "cpu_us_per_record": cpu_s / plan.burst * 1e6, "delivered": delivered}
            log(f"  burst: {plan.burst} records ingested in {out['burst']['ingest_wall_s']:.2f} s ({out['burst']['ingest_per_s']:.0f}/s), {out['burst']['cpu_us_per_record']:.0f} µs CPU/record, delivered {delivered}")
        finally:
            emu.stop()
        # SHUTDOWN with a full buffer.
        for k in range(plan.shutdown_repeats):
            out["shutdown"].append(shutdown_flush(stack, plan, sink, template, k))
            log(f"  shutdown flush #{k + 1}: " + json.dumps({key: round(v, 1) if isinstance(v, float) else v for key, v in out["shutdown"][-1].items()}))
    finally:
        sink.stop()
    return out


def shutdown_flush(stack: Stack, plan: Plan, sink, template: dict, k: int) -> dict:
    from lambdawrap.shared.framing import encode

    env = {"LAMBDAWRAP_FLUSH": "periodic,3600000", "LAMBDAWRAP_BUFFER_MAX_SPANS": str(max(20000, plan.shutdown_spans * 2))}
    emu = stack.emulator("lambdawrap", "trivial.handler", sink.endpoint, env).start()
    stopped = False
    try:
        invoke_ok(emu, stack.event)
        ext = companion_of(emu)
        pid = ext.process.pid
        prefix = f"shutdown{k}-"
        sink.watch(prefix)
        frames = b"".join(encode(make_record(template, prefix, i)) for i in range(plan.shutdown_spans))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(emu.config.env["LAMBDAWRAP_SOCKET"])
            s.sendall(frames)
            wait_cpu_quiet(pid, 0.3)
        buffered_before = sink.count(prefix)
        rss_before = proc_status(pid)
        marks: dict = {}

        def watch() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and ext.state != "ShutdownSent":
                time.sleep(0.0002)
            marks["shutdown"] = time.monotonic()
            while time.monotonic() < deadline and not ext.process.exited():
                time.sleep(0.001)
            marks["exit"] = time.monotonic()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        emu.stop()
        stopped = True
        watcher.join(15)
        delivered = sink.count(prefix)
        last = sink.last_arrival.get(prefix)
        return {
            "spans": plan.shutdown_spans,
            "exported_before_shutdown": buffered_before,
            "delivered": delivered,
            "flush_ms": (last - marks["shutdown"]) * 1000 if last else float("nan"),
            "exit_ms": (marks["exit"] - marks["shutdown"]) * 1000,
            "companion_rss_mb": rss_before.get("VmRSS", float("nan")),
        }
    finally:
        if not stopped:
            emu.stop()


# -- evidence: where the time goes --------------------------------------------------------

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
        emu = stack.emulator(c, "trivial.handler", rx.endpoint, {"PYTHONPROFILEIMPORTTIME": "1"}).start()
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


def evidence_pyspy(stack: Stack, plan: Plan) -> dict:
    """py-spy attached to the warm lambdawrap in-process worker (example handler, CPU samples only)."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(pyspy):
        return {"skipped": "py-spy is not installed (pip install -r bench/requirements.txt)"}
    raw = stack.scratch / "pyspy.txt"
    sock = stack.socket_path()
    seconds = 5
    with drain_server(sock):
        worker = Worker(stack, "lambdawrap", "app", "", sock)
        try:
            worker.ask("run 300")  # warm: imports and first calls stay out of the profile
            spy = subprocess.Popen([pyspy, "record", "--pid", str(worker.proc.pid), "--rate", "2000", "--duration", str(seconds), "--format", "raw", "--output", str(raw)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(0.5)
            calls = 0
            ends = time.monotonic() + seconds + 1
            while time.monotonic() < ends:
                worker.ask("run 200")
                calls += 200
            _, err = spy.communicate(timeout=60)
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
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(pyspy):
        return {"skipped": "py-spy is not installed (pip install -r bench/requirements.txt)"}
    raw = stack.scratch / "pyspy-companion.txt"
    seconds = 5
    emu = stack.emulator("lambdawrap", "app.handler", rx.endpoint).start()
    try:
        for _ in range(30):
            invoke_ok(emu, stack.event)
        pid = companion_of(emu).process.pid
        spy = subprocess.Popen([pyspy, "record", "--pid", str(pid), "--threads", "--gil", "--rate", "1000", "--duration", str(seconds), "--format", "raw", "--output", str(raw)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        invocations = 0
        ends = time.monotonic() + seconds + 0.5
        while time.monotonic() < ends:
            invoke_ok(emu, stack.event)
            invocations += 1
        _, err = spy.communicate(timeout=60)
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


def _raw_samples(raw: Path):
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


# -- evaluation, table, chart -------------------------------------------------------------


def fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def evaluate(results: dict) -> tuple[list, list]:
    """(figure rows, target rows) from the raw results."""
    rows: list = []
    targets: list = []
    configs = results["configs"]

    def row(figure: str, metric: str, values: dict, unit_ratio: bool = True) -> None:
        base = values.get("bare")
        r = {"figure": figure, "metric": metric, **{c: values.get(c) for c in CONFIGS + (NOOP_EXT,)}}
        for c in ("lambdawrap", "otel"):
            v = values.get(c)
            r[f"{c}/bare"] = (v / base) if unit_ratio and v is not None and base not in (None, 0) and not math.isnan(base) else None
        rows.append(r)

    def target(figure: str, text: str, measured: float | None, limit: float, ok: bool | None, note: str = "") -> None:
        targets.append({"figure": figure, "target": text, "measured": measured, "limit": limit, "met": ok, "note": note})

    ip = results.get("inprocess") or {}
    for module, label in (("app", "example"), ("trivial", "trivial")):
        data = ip.get(module)
        if not data:
            continue
        for stat in ("p50", "p99"):
            row("1", f"in-process wrapper overhead {stat}, {label} handler (µs)", {c: data[c]["wrapper_us"][stat] for c in data}, unit_ratio=False)
        for stat in ("p50", "p99"):
            row("1", f"in-process handler call {stat}, {label} handler (µs)", {c: data[c]["total_us"][stat] for c in data})
    warm = results.get("warm") or {}
    if warm.get("latency_ms"):
        lat = {c: summary(v) for c, v in warm["latency_ms"].items()}
        for stat in ("p50", "p99"):
            row("1", f"caller latency warm {stat} (ms), n={lat['bare']['n']}", {c: s[stat] for c, s in lat.items()})
        done = {c: summary(v) for c, v in warm["runtime_done_ms"].items()}
        row("1", "runtimeDone duration p50 (ms)", {c: s["p50"] for c, s in done.items()})
        scopes = warm.get("spans_by_scope") or {}
        if scopes:
            n_inv = len(warm["latency_ms"]["bare"]) + plan_warmup(results)
            row("1", f"sanity: invocation spans at the receiver after {n_inv} warm invocations each (lambdawrap scope 'lambdawrap', otel scope 'opentelemetry.instrumentation.aws_lambda'); user spans ('orders') {scopes.get('orders', 0)} in all; lambdawrap's adaptive flush may still hold the last second's", {"lambdawrap": scopes.get("lambdawrap", 0), "otel": scopes.get("opentelemetry.instrumentation.aws_lambda", 0) if "otel" in configs else None}, unit_ratio=False)
        cpu = warm.get("cpu_us_per_invoke") or {}
        if cpu:
            row("1", "CPU of the handler's process per warm invocation, mean (µs)", {c: v["runtime"] for c, v in cpu.items()})
            row("1", "CPU of the extension per warm invocation, mean (µs)", {c: v["extension"] for c, v in cpu.items() if "extension" in v}, unit_ratio=False)
        slow = {c: summary(v) for c, v in warm["slow_latency_ms"].items()}
        for stat in ("p50", "p99"):
            row("2", f"caller latency, receiver +200 ms, {stat} (ms), n={slow['bare']['n']}", {c: s[stat] for c, s in slow.items()})
        mem = warm["memory_mb"]
        row("5", "handler process peak RSS, VmHWM (MB)", {c: mem[c]["runtime"].get("VmHWM") for c in mem})
        if "lambdawrap" in mem and "companion" in mem["lambdawrap"]:
            row("5", "companion peak RSS, VmHWM (MB)", {"lambdawrap": mem["lambdawrap"]["companion"].get("VmHWM")}, unit_ratio=False)
        d_ours = lat["lambdawrap"]["p50"] - lat["bare"]["p50"]
        if NOOP_EXT in lat:
            d_noop = lat[NOOP_EXT]["p50"] - lat["bare"]["p50"]
            target("1", "caller p50: (bare + no-op extension) − bare, the platform's price of any extension (ms)", d_noop, float("nan"), None, "diagnostic")
            target("1", "caller p50: lambdawrap − (bare + no-op extension), our own part (ms)", lat["lambdawrap"]["p50"] - lat[NOOP_EXT]["p50"], float("nan"), None, "diagnostic")
        if "otel" in lat:
            d_otel = lat["otel"]["p50"] - lat["bare"]["p50"]
            target("1", "caller p50: (lambdawrap − bare) ≤ (otel − bare)/50 (ms)", d_ours, d_otel / 50, d_ours <= d_otel / 50)
        d_slow = slow["lambdawrap"]["p50"] - slow["bare"]["p50"]
        target("2", "receiver +200 ms: caller p50 lambdawrap − bare ≤ 1 ms", d_slow, 1.0, d_slow <= 1.0)
        if "otel" in slow:
            target("2", "receiver +200 ms: otel pays the delay (otel − bare, ms)", slow["otel"]["p50"] - slow["bare"]["p50"], SLOW_DELAY_S * 1000, None, "expected ≈ 200")
        d_mem = (mem["lambdawrap"]["runtime"].get("VmHWM") or 0) - (mem["bare"]["runtime"].get("VmHWM") or 0)
        target("5", "handler process VmHWM: lambdawrap − bare ≤ +5 MB", d_mem, 5.0, d_mem <= 5.0)
        comp = mem.get("lambdawrap", {}).get("companion", {}).get("VmHWM")
        if comp is not None:
            target("5", "companion VmHWM ≤ 60 MB", comp, 60.0, comp <= 60.0)
    if ip.get("app"):
        data = ip["app"]
        d_ours = data["lambdawrap"]["wrapper_us"]["p50"] - data["bare"]["wrapper_us"]["p50"]
        target("1", "in-process p50 (example handler): lambdawrap − bare ≤ 25 µs", d_ours, 25.0, d_ours <= 25.0)
        if "otel" in data:
            d_otel = data["otel"]["wrapper_us"]["p50"] - data["bare"]["wrapper_us"]["p50"]
            target("1", "in-process p50 (example handler): (lambdawrap − bare) ≤ (otel − bare)/50 (µs)", d_ours, d_otel / 50, d_ours <= d_otel / 50)
    if ip.get("trivial"):
        data = ip["trivial"]
        d_ours = data["lambdawrap"]["wrapper_us"]["p50"] - data["bare"]["wrapper_us"]["p50"]
        target("1", "in-process p50 (trivial handler): lambdawrap − bare ≤ 25 µs", d_ours, 25.0, d_ours <= 25.0)
    cold = results.get("cold") or {}
    for module, limit in (("trivial", 1.25), ("with_boto3", 1.05)):
        data = cold.get(module)
        if not data:
            continue
        init = {c: summary(d["init_ms"]) for c, d in data.items()}
        label = "trivial" if module == "trivial" else "boto3-importing"
        for stat in ("p50", "p99"):
            row("3", f"init duration {stat}, {label} handler (ms), n={init['bare']['n']}", {c: s[stat] for c, s in init.items()})
        row("3", f"first (cold) invoke caller latency p50, {label} (ms)", {c: pct(d["first_invoke_ms"], 50) for c, d in data.items()})
        row("3", f"init: runtime ready p50, {label} (ms)", {c: pct(d["runtime_ready_ms"], 50) for c, d in data.items()})
        row("3", f"init: CPU used by the runtime process during init p50, {label} (ms)", {c: pct(d["runtime_cpu_ms"], 50) for c, d in data.items()})
        if data.get("lambdawrap", {}).get("companion_cpu_ms"):
            row("3", f"init: CPU used by the companion during init p50, {label} (ms)", {"lambdawrap": pct(data["lambdawrap"]["companion_cpu_ms"], 50)}, unit_ratio=False)
        if data.get("lambdawrap", {}).get("companion_ready_ms"):
            row("3", f"init: companion ready (first /next) p50, {label} (ms)", {"lambdawrap": pct(data["lambdawrap"]["companion_ready_ms"], 50)}, unit_ratio=False)
        for diag in COLD_DIAGNOSTICS:
            if data.get(diag, {}).get("init_ms"):
                d = data[diag]
                ready = f"; runtime ready {pct(d['runtime_ready_ms'], 50):.1f} ms" + (f", companion ready {pct(d['companion_ready_ms'], 50):.1f} ms" if d["companion_ready_ms"] else "")
                row("3", f"diagnostic, {label}: init p50 with {diag}{ready}", {"lambdawrap": pct(d["init_ms"], 50), "bare": init["bare"]["p50"]})
        ratio = init["lambdawrap"]["p50"] / init["bare"]["p50"]
        target("3", f"init p50 lambdawrap/bare ≤ {limit}, {label}", ratio, limit, ratio <= limit)
        if "otel" in init:
            ours = init["lambdawrap"]["p50"] - init["bare"]["p50"]
            theirs = init["otel"]["p50"] - init["bare"]["p50"]
            target("3", f"init overhead lambdawrap ≤ otel's/10, {label} (ms)", ours, theirs / 10, ours <= theirs / 10)
    post = results.get("post") or {}
    base_post = (warm.get("post_response_ms") or {})
    if post or base_post:
        for c in ("bare", "otel"):
            if base_post.get(c):
                rows.append({"figure": "4", "metric": f"post-response p50 (ms): {c} (no extension)", c: pct(base_post[c], 50)})
        for s, values in post.items():
            rows.append({"figure": "4", "metric": f"post-response p50 / p99 (ms): LAMBDAWRAP_FLUSH={s}, n={len(values)}", "lambdawrap": pct(values, 50), "otel": None, "bare": None, "lambdawrap p99": pct(values, 99)})
    comp = results.get("companion") or {}
    if comp:
        lossless = [s["offered_per_s"] for s in comp["steps"] if s["lossless"]]
        sustained = max(lossless) if lossless else 0
        for s in comp["steps"]:
            rows.append({"figure": "6", "metric": f"offered {s['offered_per_s']}/s: achieved {s['achieved_per_s']:.0f}/s, refused by the socket {s['refused_by_socket']}, delivered {s['delivered']}/{s['sent']}, lambdawrap.dropped {s['companion_dropped']} (value: delivered share)", "lambdawrap": s["delivered"] / max(1, s["sent"])})
        b = comp.get("burst") or {}
        if b:
            rows.append({"figure": "6", "metric": f"burst of {b['records']} records: ingest rate (records/s)", "lambdawrap": b["ingest_per_s"]})
            rows.append({"figure": "6", "metric": "companion CPU per record (µs)", "lambdawrap": b["cpu_us_per_record"]})
        target("6", "records/s sustained without drops ≥ 2,000", float(sustained), 2000.0, sustained >= 2000, f"highest lossless offered rate tested (max tested {max(plan_rates(comp))}/s)")
        sd = comp.get("shutdown") or []
        if sd:
            flush = [x["flush_ms"] for x in sd]
            complete = all(x["delivered"] == x["spans"] for x in sd)
            rows.append({"figure": "6", "metric": f"SHUTDOWN flush of {sd[0]['spans']} buffered spans (ms), median of {len(sd)}; delivered {min(x['delivered'] for x in sd)}/{sd[0]['spans']}", "lambdawrap": statistics.median(flush)})
            rows.append({"figure": "6", "metric": "SHUTDOWN → companion exit (ms), median", "lambdawrap": statistics.median(x["exit_ms"] for x in sd)})
            worst = max(flush) if complete else float("inf")
            target("6", f"flush {sd[0]['spans']} buffered spans on SHUTDOWN ≤ 2,000 ms (worst of {len(sd)}, all delivered)", max(flush), 2000.0, complete and worst <= 2000)
    return rows, targets


def plan_warmup(results: dict) -> int:
    return int((results.get("plan") or {}).get("warmup", 0))


def plan_rates(comp: dict) -> list:
    return [s["offered_per_s"] for s in comp["steps"]] or [0]


def render_markdown(results: dict, rows: list, targets: list) -> str:
    lines = []
    meta = results["meta"]
    lines.append(f"Run: {meta['date']} · {meta['mode']} · {meta['machine']} · load average {meta['loadavg_start']:.2f} at start, {meta.get('loadavg_end', float('nan')):.2f} at end")
    lines.append("")
    lines.append(f"| # | metric | bare | {NOOP_EXT} | lambdawrap | otel | lambdawrap/bare | otel/bare |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        lw = fmt(r.get("lambdawrap"))
        if r.get("lambdawrap p99") is not None:
            lw += f" / {fmt(r['lambdawrap p99'])}"
        lines.append(f"| {r['figure']} | {r['metric']} | {fmt(r.get('bare'))} | {fmt(r.get(NOOP_EXT))} | {lw} | {fmt(r.get('otel'))} | {fmt(r.get('lambdawrap/bare'), 3)} | {fmt(r.get('otel/bare'), 3)} |")
    lines.append("")
    lines.append("| # | target | measured | limit | met |")
    lines.append("|---|---|---:|---:|:---:|")
    for t in targets:
        met = "–" if t["met"] is None else ("**yes**" if t["met"] else "**NO**")
        note = f" ({t['note']})" if t["note"] else ""
        lines.append(f"| {t['figure']} | {t['target']}{note} | {fmt(t['measured'], 3)} | {fmt(t['limit'], 3)} | {met} |")
    if results.get("skipped"):
        lines.append("")
        for what, why in results["skipped"].items():
            lines.append(f"- skipped {what}: {why}")
    return "\n".join(lines) + "\n"


def render_evidence(evidence: dict) -> str:
    if not evidence:
        return ""
    lines = ["### Where the time goes (generated evidence)", ""]
    imp = evidence.get("importtime") or {}
    for c, parts in imp.items():
        for proc, s in parts.items():
            lines.append(f"`-X importtime`, {c} {proc} process (one cold start; the profiler inflates times): {s['modules']} modules, {s['total_ms']:.0f} ms of imports.")
            extra = s.get("extra_vs_bare")
            if extra:
                twice = " (×2: imported in the opentelemetry-instrument process and again in the runtime it execs)" if extra["imports"] > extra["modules"] else ""
                lines.append(f"Modules bare's runtime does not import: {extra['modules']}{twice}, {extra['self_ms']:.1f} ms of self time. The biggest:")
                lines.append("")
                lines.append("| module (not imported by bare) | self ms |")
                lines.append("|---|---:|")
                for name, ms in extra["top_self"][:12]:
                    lines.append(f"| `{name}` | {ms:.1f} |")
            else:
                lines.append("Top-level imports by cumulative time:")
                lines.append("")
                lines.append("| module | cumulative ms |")
                lines.append("|---|---:|")
                for name, ms in s["top_level_cumulative"][:10]:
                    lines.append(f"| `{name}` | {ms:.1f} |")
            lines.append("")
    comp = evidence.get("components") or {}
    if comp and not comp.get("skipped"):
        lines.append(f"Steps of lambdawrap's per-invocation work in the handler's process (p50 of 1,000 timed calls each; record = {comp.get('record_bytes')} bytes). 'after idle' sleeps 2 ms before each call, as a function does between invocations: caches and branch predictors are cold again.")
        lines.append("")
        lines.append("| step | hot µs | after idle µs |")
        lines.append("|---|---:|---:|")
        for name, v in comp.items():
            if isinstance(v, dict):
                lines.append(f"| {name} | {v['hot_us']:.1f} | {v['after_idle_us']:.1f} |")
        lines.append("")
    spy = evidence.get("pyspy") or {}
    if spy.get("skipped"):
        lines.append(f"py-spy: skipped ({spy['skipped']})")
    elif spy:
        lines.append(f"py-spy record (2 kHz, CPU samples only, {spy['seconds']} s attached to the warm in-process worker running the example handler with lambdawrap, ~{spy['calls_during']} calls): {spy['samples']} samples, {spy['samples_in_lambdawrap_or_wrapt']} in lambdawrap/wrapt frames, {spy['samples_in_user_code']} under the user's handler. Inclusive samples per lambdawrap/wrapt frame:")
        lines.append("")
        lines.append("| frame | samples |")
        lines.append("|---|---:|")
        for name, n in spy["top_inclusive"]:
            lines.append(f"| `{name}` | {n} |")
        lines.append("")
        lines.append("Leaf frames outside the user's handler (where the CPU was):")
        lines.append("")
        lines.append("| frame | samples |")
        lines.append("|---|---:|")
        for name, n in spy["top_leaf"]:
            lines.append(f"| `{name}` | {n} |")
    cspy = evidence.get("companion_pyspy") or {}
    if cspy.get("skipped"):
        lines.append(f"py-spy of the companion: skipped ({cspy['skipped']})")
    elif cspy:
        lines.append("")
        lines.append(f"py-spy record of the companion (1 kHz, all threads, {cspy['seconds']} s, {cspy['invocations']} back-to-back invocations of the example function, default flush strategy): {cspy['busy_samples']} samples holding the GIL (`py-spy --gil`), i.e. ≈ {cspy['busy_samples'] / max(1, cspy['invocations']):.2f} ms of CPU per invocation. By thread:")
        lines.append("")
        lines.append("| thread | samples |")
        lines.append("|---|---:|")
        for name, n in cspy["threads"]:
            lines.append(f"| `{name}` | {n} |")
        lines.append("")
        lines.append("Inclusive samples per lambdawrap/opentelemetry frame:")
        lines.append("")
        lines.append("| frame | samples |")
        lines.append("|---|---:|")
        for name, n in cspy["top_inclusive"]:
            lines.append(f"| `{name}` | {n} |")
        lines.append("")
        lines.append("Leaf frames:")
        lines.append("")
        lines.append("| frame | samples |")
        lines.append("|---|---:|")
        for name, n in cspy["top_leaf"]:
            lines.append(f"| `{name}` | {n} |")
    return "\n".join(lines) + "\n"


def draw_chart(results: dict, path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -r bench/requirements.txt)"
    configs = results["configs"]
    colors = {"bare": "#9e9e9e", NOOP_EXT: "#d0d0d0", "lambdawrap": "#1f77b4", "otel": "#ff7f0e", "p50": "#1f77b4", "p99": "#aec7e8"}
    fig, axes = plt.subplots(2, 4, figsize=(20, 9))
    fig.suptitle(f"lambdawrap bench — {results['meta']['date']} — {results['meta']['mode']}")

    def bars(ax, title: str, groups: list, series: dict, ylabel: str, log_scale: bool = False) -> None:
        width = 0.8 / max(1, len(series))
        for k, (name, values) in enumerate(series.items()):
            xs = [g + k * width for g in range(len(groups))]
            ax.bar(xs, [v if v is not None and not math.isnan(v) else 0 for v in values], width, label=name, color=colors.get(name))
            for x, v in zip(xs, values):
                if v is not None and not math.isnan(v):
                    ax.text(x, v, fmt(v), ha="center", va="bottom", fontsize=7)
        ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))])
        ax.set_xticklabels(groups, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        if log_scale:
            ax.set_yscale("log")
        ax.legend(fontsize=7)

    warm = results.get("warm") or {}
    if warm.get("latency_ms"):
        lat = warm["latency_ms"]
        bars(axes[0][0], "1. caller latency, warm", ["p50", "p99"], {c: [pct(lat[c], 50), pct(lat[c], 99)] for c in lat}, "ms")
        slow = warm["slow_latency_ms"]
        bars(axes[0][2], "2. caller latency, receiver +200 ms", ["p50", "p99"], {c: [pct(slow[c], 50), pct(slow[c], 99)] for c in configs}, "ms", log_scale=True)
        mem = warm["memory_mb"]
        groups = ["handler process"] + (["companion"] if "companion" in mem.get("lambdawrap", {}) else [])
        bars(axes[1][2], "5. peak RSS (VmHWM)", groups, {c: [mem[c]["runtime"].get("VmHWM")] + ([mem[c].get("companion", {}).get("VmHWM", float("nan"))] if len(groups) > 1 else []) for c in configs}, "MB")
    ip = results.get("inprocess") or {}
    if ip:
        mods = [m for m in ("app", "trivial") if m in ip]
        bars(axes[0][1], "1. in-process wrapper overhead p50", ["example" if m == "app" else m for m in mods], {c: [max(ip[m][c]["wrapper_us"]["p50"], 0.01) for m in mods] for c in configs}, "µs", log_scale=True)
    cold = results.get("cold") or {}
    if cold:
        mods = [m for m in ("trivial", "with_boto3") if m in cold]
        bars(axes[0][3], "3. init duration p50 (cold start)", ["trivial" if m == "trivial" else "imports boto3" for m in mods], {c: [pct(cold[m][c]["init_ms"], 50) for m in mods] for c in configs}, "ms")
    post = results.get("post") or {}
    if post:
        ax = axes[1][0]
        names = list(post)
        p50 = [pct(post[s], 50) for s in names]
        p99 = [pct(post[s], 99) for s in names]
        bars(ax, "4. post-response time (lambdawrap)", [n.replace(" (idle, 1.1 s gaps)", "\n(idle)") for n in names], {"p50": p50, "p99": p99}, "ms")
    comp = results.get("companion") or {}
    if comp.get("steps"):
        ax = axes[1][1]
        offered = [s["offered_per_s"] for s in comp["steps"]]
        ax.plot(offered, offered, "--", color="#9e9e9e", label="offered")
        ax.plot(offered, [s["delivered"] / (s["sent"] / s["offered_per_s"]) / 1 for s in comp["steps"]], "o-", color=colors["lambdawrap"], label="delivered/s")
        ax.axvline(2000, color="red", lw=0.8, ls=":", label="target 2,000/s")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title("6. companion throughput", fontsize=10)
        ax.set_xlabel("records/s offered")
        ax.legend(fontsize=7)
    sd = comp.get("shutdown") or []
    ax = axes[1][3]
    if sd:
        ax.bar([str(k + 1) for k in range(len(sd))], [x["flush_ms"] for x in sd], color=colors["lambdawrap"])
        ax.axhline(2000, color="red", lw=0.8, ls=":", label="target 2,000 ms")
        ax.set_title(f"6. SHUTDOWN flush of {sd[0]['spans']} spans", fontsize=10)
        ax.set_ylabel("ms")
        ax.set_xlabel("repeat")
        ax.legend(fontsize=7)
    for row_axes in axes:
        for ax in row_axes:
            if not ax.has_data():
                ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


# -- metadata -----------------------------------------------------------------------------


def _dist_version(name: str, path: Path | None = None) -> str:
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
    cpu = "?"
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    git = "?"
    with contextlib.suppress(Exception):
        sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5).stdout.strip()
        git = sha + (" (+ uncommitted changes)" if dirty else "")
    return {
        "loadavg_start": os.getloadavg()[0],
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
            "otel layer: opentelemetry-instrumentation-aws-lambda": _dist_version("opentelemetry-instrumentation-aws-lambda", OTEL_PKGS),
            "otel layer: opentelemetry-distro": _dist_version("opentelemetry-distro", OTEL_PKGS),
            "otel layer: opentelemetry-sdk": _dist_version("opentelemetry-sdk", OTEL_PKGS),
            "otel layer: opentelemetry-exporter-otlp-proto-http": _dist_version("opentelemetry-exporter-otlp-proto-http", OTEL_PKGS),
        },
    }


def write_results_md(results: dict, table: str, evidence_md: str) -> None:
    meta = results["meta"]
    versions = "\n".join(f"- {k}: {v}" for k, v in meta["versions"].items())
    plan = results["plan"]
    block = "\n".join(
        [
            BEGIN,
            f"## Latest full run: {meta['date']}",
            "",
            f"- machine: {meta['machine']}; Python {meta['python']}; lambdawrap at {meta['git']}",
            f"- command: `{meta['command']}` ({meta['elapsed_min']:.1f} min)",
            f"- plan: {json.dumps(plan)}",
            versions,
            "",
            table,
            evidence_md,
            END,
        ]
    )
    if RESULTS_MD.exists():
        text = RESULTS_MD.read_text()
        if BEGIN in text and END in text:
            head, _, rest = text.partition(BEGIN)
            _, _, tail = rest.partition(END)
            RESULTS_MD.write_text(head + block + tail)
            return
    RESULTS_MD.write_text("# lambdawrap bench results\n\nGenerated by `python bench/run.py` (full run); the section between the markers is rewritten on each full run.\n\n" + block + "\n")


# -- main ---------------------------------------------------------------------------------

PHASES = ("inprocess", "warm", "post", "cold", "companion")


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few invocations per configuration (CI)")
    parser.add_argument("--n", type=int, help="warm invocations per configuration (default 2000)")
    parser.add_argument("--cold", type=int, help="fresh environments per configuration and handler (default 40)")
    parser.add_argument("--out", default=str(BENCH / "out"), help="output folder (default bench/out)")
    parser.add_argument("--only", default="", help=f"comma-separated phases to run: {','.join(PHASES)}")
    parser.add_argument("--no-otel", action="store_true", help="leave the otel configuration out")
    parser.add_argument("--no-evidence", action="store_true", help="skip the importtime/py-spy evidence of a full run")
    parser.add_argument("--evidence", action="store_true", help="collect the importtime/py-spy evidence on a partial run too")
    parser.add_argument("--install-otel", action="store_true", help="install the OpenTelemetry layer packages into bench/.otel-layer and exit")
    args = parser.parse_args(argv)
    if args.install_otel:
        return install_otel()

    plan = Plan.smoke() if args.smoke else Plan()
    if args.n:
        plan.n = args.n
        plan.inproc = args.n
    if args.cold:
        plan.cold = args.cold
    phases = [p.strip() for p in args.only.split(",") if p.strip()] or list(PHASES)
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    full = not args.smoke and not args.only and args.n in (None, Plan.n) and args.cold in (None, Plan.cold)

    configs = ["bare", "lambdawrap"]
    skipped: dict = {}
    ok, why = otel_available()
    if args.no_otel:
        skipped["otel configuration"] = "--no-otel"
    elif not ok:
        skipped["otel configuration"] = why
        log("otel configuration skipped: " + why)
    else:
        assemble_otel_layer()
        configs.append("otel")

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    meta = machine_info()
    meta.update(date=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), mode="smoke" if args.smoke else ("full" if full else "partial"), command="python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv))
    results: dict = {"meta": meta, "plan": asdict(plan), "configs": configs, "skipped": skipped}
    stack = Stack(configs)
    rx = OtlpReceiver().start()
    try:
        if "inprocess" in phases:
            log(f"figure 1, in-process: {plan.inproc} calls per configuration and handler, in turns of {plan.chunk}")
            results["inprocess"] = phase_inprocess(stack, plan)
        if "warm" in phases:
            log(f"figures 1, 2, 5: {plan.n} warm invocations per configuration, then {plan.n_slow} against a receiver answering after {SLOW_DELAY_S * 1000:.0f} ms")
            results["warm"] = phase_warm(stack, plan, rx)
            rx.clear()
        if "post" in phases:
            log(f"figure 4: post-response time, {plan.n_post} invocations per flush strategy (+{plan.n_sparse} idle ones for adaptive)")
            results["post"] = phase_post(stack, plan, rx)
            rx.clear()
        if "cold" in phases:
            log(f"figure 3: cold start, {plan.cold} fresh environments per configuration and handler")
            results["cold"] = phase_cold(stack, plan, rx)
            rx.clear()
        if "companion" in phases:
            log(f"figure 6: companion throughput at {list(plan.rates)} records/s, a burst of {plan.burst}, SHUTDOWN with {plan.shutdown_spans} spans buffered")
            results["companion"] = phase_companion(stack, plan)
        evidence: dict = {}
        if (full and not args.no_evidence) or args.evidence:
            log("evidence: -X importtime of a cold start per configuration, py-spy of the in-process wrapper")
            evidence["importtime"] = evidence_importtime(stack, rx)
            evidence["pyspy"] = evidence_pyspy(stack, plan)
            evidence["components"] = evidence_components(stack)
            evidence["companion_pyspy"] = evidence_companion_pyspy(stack, rx)
        results["evidence"] = evidence
    finally:
        rx.stop()
        stack.close()
    meta["elapsed_min"] = (time.monotonic() - started) / 60
    meta["loadavg_end"] = os.getloadavg()[0]
    meta["git_end"] = machine_info()["git"]
    if meta["git_end"] != meta["git"]:
        skipped["consistency"] = f"the lambdawrap sources changed during the run ({meta['git']} -> {meta['git_end']}): processes started at different times ran different code"
        log("WARNING: " + skipped["consistency"])
    rows, targets = evaluate(results)
    results["rows"], results["targets"] = rows, targets
    table = render_markdown(results, rows, targets)
    evidence_md = render_evidence(results.get("evidence") or {})
    chart_problem = draw_chart(results, out_dir / "chart.png")
    if chart_problem:
        skipped["chart"] = chart_problem
        table = render_markdown(results, rows, targets)
    (out_dir / "results.md").write_text("# lambdawrap bench\n\n" + table + ("\n" + evidence_md if evidence_md else ""))
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    if full:
        write_results_md(results, table, evidence_md)
    print(table)
    if evidence_md:
        print(evidence_md)
    log(f"done in {meta['elapsed_min']:.1f} min; wrote {out_dir / 'results.md'}, results.json" + ("" if chart_problem else ", chart.png") + (f" and {RESULTS_MD}" if full else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
