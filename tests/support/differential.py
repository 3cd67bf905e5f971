"""The differential harness: a scenario group runs through the emulator twice, without and with
the layer, and everything the caller and the function can observe is compared; then the
layered run's telemetry is held to the ledger (every invocation and every init accounted for
exactly once, with the right status and trace).

A group is one function folder, one handler and one environment's settings; its scenarios are
invocations (an event each) run in order in one execution environment per run, so that a
group costs two cold starts, not two per scenario.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from lambdawrap.companion import carryover
from lambdawrap.devtools.emulator import Emulator
from lambdawrap.devtools.otlp_receiver import OtlpReceiver
from support import faults
from support.stack import LAYER

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"
OUR_LINE = re.compile(r"^lambdawrap: ")
_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d([.,]\d+)?(Z|[+-]\d{4})?")
_XRAY = re.compile(r"(Root=)?1-[0-9a-f]{8}-[0-9a-f]{24}[^\s\"']*")
_ADDRESS = re.compile(r"0x[0-9a-f]{6,}")
ERROR = 2  # OTLP's STATUS_CODE_ERROR
_EMF_TIMESTAMP = re.compile(r'"Timestamp": ?\d{13}')
_EPOCH_MS = re.compile(r"\[\d{13}\]")  # awslambdaric's C client stamps its own error lines
# The wrapper is one frame deeper than the handler: a RecursionError comes one call sooner, two
# on 3.10 and 3.11 (docs/reliability.md, known differences).
_REPEATED = re.compile(r"\[Previous line repeated \d+ more times\]")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Python 3.10 re-raises the traceback it caught, the wrapper's entry included (3.11+ drops
# it). awslambdaric leaves that entry (labelled bootstrap.py) out of every error payload, but
# a traceback the interpreter or awslambdaric prints raw shows it: a KeyboardInterrupt that
# ends the runtime, an exception whose __str__ raises (docs/reliability.md, known differences).
_WRAPPER_FRAME_ON_310 = re.compile(r'^\s*File "[^"]*/lambdawrap/handler/importlib\._bootstrap/bootstrap\.py", line \d+, in _call$')


@dataclass
class Scenario:
    """One invocation: an event (or raw bytes), and what the ledger should find for it."""

    name: str
    event: Any = None
    raw: bytes | None = None
    trace_header: str | None = None
    # The invocation span's parent, when the event carries one ("trace_id-span_id" in hex).
    parent: str | None = None
    # Attributes the invocation span must carry.
    attributes: dict = field(default_factory=dict)
    # A drop that may stand in for the span (e.g. sampled_out), instead of a span.
    dropped_as: str | None = None
    # The span's status is ERROR: by default exactly when the caller got an error.
    error: bool | None = None
    # Client spans the invocation span must have as children, in order: (name, error.type or None;
    # "*" for any error.type).
    calls: tuple = ()


@dataclass
class Group:
    name: str
    function: str  # a folder under tests/functions
    handler: str = "app.handler"
    env: dict = field(default_factory=dict)  # settings, the same in both runs
    scenarios: list = field(default_factory=list)
    timeout_s: float = 10.0
    memory_mb: int = 1024
    # Variables a bad value is expected for: one warning each in the layered run's logs.
    warned: tuple = ()
    # Where the layered run exports: None = a healthy receiver; else a function of a Collector.
    collector: Callable[[Any], None] | None = None
    # The function's own spans the collector must have, by name (API users).
    user_spans: tuple = ()
    # What the collector must hold: "full" (the ledger), "silent" (lambdawrap is off: nothing),
    # or "none" (a collector fault: the fault suite keeps that ledger, tests/test_faults.py).
    ledger: str = "full"
    # The managed runtimes' log channel (_LAMBDA_TELEMETRY_LOG_FD): `logging` output and the
    # runtime's error reports as framed records, in both runs. Off by default here, unlike the
    # emulator's: the groups keep the stdout path (a runtime without the channel) tested.
    telemetry_log_fd: bool = False


@dataclass
class Run:
    results: list
    log_lines: list
    extension_lines: list
    inits: int
    failed_inits: int
    dispatched: set  # request ids the function's runtime got (not those its init failed for)
    opt_dir: str
    runtime_dirs: list
    carried_inits: int = 0  # failed inits left for a next environment to export
    carried_rids: set = field(default_factory=set)  # invocations left for it
    runtime_version: str = ""  # the platform's runtimeVersion, e.g. "python:3.12"


@dataclass
class Report:
    bare: Run
    layered: Run
    receiver: Any
    differences: list
    ledger: list

    def problems(self) -> list:
        return self.differences + self.ledger


def run_group(group: Group, python: str | None = None) -> Report:
    with _collector(group) as receiver, tempfile.TemporaryDirectory(prefix="lw") as socket_dir, tempfile.TemporaryDirectory(prefix="lwopt") as empty_opt:
        (Path(empty_opt) / "python").mkdir()  # the folders the layer has, none of its files
        env = {
            **group.env,
            "LAMBDAWRAP_SOCKET": f"{socket_dir}/lw.sock",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "NO_PROXY": "127.0.0.1,localhost",
        }
        bare = _run(group, env, empty_opt, python)
        layered = _run(group, {**env, "AWS_LAMBDA_EXEC_WRAPPER": "/opt/wrapper.sh"}, str(LAYER), python)
        # A failed init whose environment ended before its span could be exported is kept for
        # the next environment (companion/carryover.py): counted here as what it is.
        carried = carryover.take(env["LAMBDAWRAP_SOCKET"])
        layered.carried_inits, layered.carried_rids = carried.failed_inits, carried.request_ids
        differences = compare(group, bare, layered)
        checks = {"full": check_ledger, "silent": check_silence, "none": lambda *args: []}
        ledger = checks[group.ledger](group, bare, layered, receiver)
        return Report(bare, layered, receiver, differences, ledger)


@contextlib.contextmanager
def _collector(group: Group) -> Iterator[Any]:
    if group.collector is None:
        with OtlpReceiver() as receiver:
            yield receiver
        return
    with faults.Collector() as collector:
        group.collector(collector)
        yield collector


def _run(group: Group, env: dict, opt_dir: str, python: str | None) -> Run:
    # CPU unlimited: the groups are about behaviour, and a small size (crashes: 256 MB, for its
    # out-of-memory scenario) would leave the companion too little CPU for its shutdown deadline.
    emu = Emulator(str(FUNCTIONS / group.function), group.handler, opt_dir, env=env, timeout_s=group.timeout_s, memory_mb=group.memory_mb, invoke_port=None, python=python, cpu_limit=False, telemetry_log_fd=group.telemetry_log_fd)
    results = []
    runtime_dirs = []
    with emu:
        runtime_dirs.append(emu._runtime_dir)
        for scenario in group.scenarios:
            raw = scenario.raw if scenario.raw is not None else json.dumps(scenario.event).encode()
            results.append(emu.sandbox.invoke(raw, trace_header=scenario.trace_header))
            emu.wait_idle(group.timeout_s + 30)
    failed = [r for r in emu.records("platform.initRuntimeDone") if r["record"].get("status") != "success"]
    dispatched = {r["record"]["requestId"] for r in emu.records("platform.start")}
    runtime_version = next((r["record"].get("runtimeVersion", "") for r in emu.records("platform.initStart")), "")
    return Run(results, emu.log_lines("function"), emu.log_lines("extension"), len(emu.records("platform.initReport")), len(failed), dispatched, opt_dir, runtime_dirs, runtime_version=runtime_version)


def normalise(text: str, run: Run) -> str:
    for result in run.results:
        text = text.replace(result.request_id, "<request id>")
    for folder in run.runtime_dirs:
        if folder:
            text = text.replace(folder, "<runtime>")
    text = text.replace(run.opt_dir, "<opt>")
    text = _XRAY.sub("<xray>", text)
    text = _TIME.sub("<time>", text)
    text = _UUID.sub("<uuid>", text)
    text = _EMF_TIMESTAMP.sub('"Timestamp": <ms>', text)
    text = _EPOCH_MS.sub("[<ms>]", text)
    text = _REPEATED.sub("[Previous line repeated <n> more times]", text)
    return _ADDRESS.sub("<address>", text)


def compare(group: Group, bare: Run, layered: Run) -> list:
    """What the caller or the function saw differently with the layer, in words."""
    out = []
    for scenario, b, l in zip(group.scenarios, bare.results, layered.results):
        seen_bare = (b.status, b.function_error, b.headers.get("Content-Type"), normalise(b.body.decode("utf-8", "replace"), bare))
        seen_layered = (l.status, l.function_error, l.headers.get("Content-Type"), normalise(l.body.decode("utf-8", "replace"), layered))
        if seen_bare != seen_layered:
            out.append(f"{group.name}/{scenario.name}: the caller saw {seen_bare[:3]} without the layer, {seen_layered[:3]} with it; the bodies differ at {_where(seen_bare[3], seen_layered[3])}")
    ours = [line for line in layered.log_lines + layered.extension_lines if OUR_LINE.match(line)]
    bare_lines = sorted(normalise(line, bare) for line in bare.log_lines)
    layered_lines = sorted(normalise(line, layered) for line in layered.log_lines if not OUR_LINE.match(line) and not _known_difference(line, layered))
    if bare_lines != layered_lines:
        missing = [line for line in bare_lines if line not in layered_lines][:10]
        extra = [line for line in layered_lines if line not in bare_lines][:10]
        out.append(f"{group.name}: the function's output differs: missing {missing}, extra {extra}")
    for name in group.warned:
        said = [line for line in ours if re.search(rf"\b{name}(?![A-Z_])", line)]
        if len(said) != 1:
            out.append(f"{group.name}: expected one warning about {name}, got {said}")
    # In the function's own log stream, nothing of ours but the warnings expected (the
    # companion's lines are the extension's stream: collector trouble is reported there).
    unexpected = [line for line in layered.log_lines if OUR_LINE.match(line) and not any(re.search(rf"\b{name}(?![A-Z_])", line) for name in group.warned)]
    if unexpected:
        out.append(f"{group.name}: lambdawrap wrote to the function's log: {unexpected[:5]}")
    if (bare.inits, bare.failed_inits) != (layered.inits, layered.failed_inits):
        out.append(f"{group.name}: inits (all, failed) {bare.inits, bare.failed_inits} without the layer, {layered.inits, layered.failed_inits} with it")
    return out


def _known_difference(line: str, run: Run) -> bool:
    return run.runtime_version == "python:3.10" and bool(_WRAPPER_FRAME_ON_310.match(line))


def _where(a: str, b: str) -> list:
    """The places where two bodies differ: JSON paths when both are JSON, else the text."""
    try:
        left, right = json.loads(a), json.loads(b)
    except ValueError:
        return [f"{a[:300]!r} != {b[:300]!r}"]
    found: list = []

    def walk(x: Any, y: Any, path: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y), key=str):
                walk(x.get(key, "<absent>"), y.get(key, "<absent>"), f"{path}.{key}")
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for index, (i, j) in enumerate(zip(x, y)):
                walk(i, j, f"{path}[{index}]")
        elif x != y:
            found.append(f"{path}: {str(x)[:200]!r} != {str(y)[:200]!r}")

    walk(left, right, "")
    return found[:20]


def check_ledger(group: Group, bare: Run, layered: Run, receiver: Any) -> list:
    """Every invocation one span (or one counted drop), with the caller's outcome as its status
    and the event's parent; every init one init span, a failed one with status ERROR."""
    out = []
    # An invocation whose init failed never reached the function: its failed init's span
    # stands for it (checked below), as does the platform's 413 for an event over the limit.
    # One that the last environment kept for the next (it ended before its pipeline loaded)
    # is not lost either.
    rids = [r.request_id for r in layered.results if r.request_id in layered.dispatched and r.request_id not in layered.carried_rids]
    acc = faults.account(receiver, rids, layered.inits - layered.carried_inits)
    out += [f"{group.name}: {problem}" for problem in acc.problems()]
    spans = {}
    for span in receiver.spans():
        rid = span["attributes"].get("faas.invocation_id")
        if rid is not None:
            spans[rid] = span
    for scenario, result in zip(group.scenarios, layered.results):
        if result.request_id not in layered.dispatched or result.request_id in layered.carried_rids:
            continue
        span = spans.get(result.request_id)
        if span is None:
            if scenario.dropped_as is None or not acc.dropped.get(scenario.dropped_as):
                out.append(f"{group.name}/{scenario.name}: no span and no drop for {result.request_id}")
            continue
        expected_error = scenario.error if scenario.error is not None else result.function_error is not None
        if expected_error != (span["status_code"] == ERROR):
            out.append(f"{group.name}/{scenario.name}: expected {'an error' if expected_error else 'no error'}, the span says {span['status_code']} {span['status_message']!r}")
        if scenario.parent is not None:
            trace_id, _, parent_id = scenario.parent.partition("-")
            if (span["trace_id"], span.get("parent_span_id")) != (trace_id, parent_id):
                out.append(f"{group.name}/{scenario.name}: trace {span['trace_id']} parent {span.get('parent_span_id')}, expected {scenario.parent}")
        for key, value in scenario.attributes.items():
            if span["attributes"].get(key) != value:
                out.append(f"{group.name}/{scenario.name}: attribute {key}={span['attributes'].get(key)!r}, expected {value!r}")
        out += [f"{group.name}/{scenario.name}: {problem}" for problem in _client_span_problems(receiver, span, scenario.calls)]
    init_spans = [s for s in receiver.spans() if "lambdawrap.init.phase" in s["attributes"]]
    failed_init_spans = [s for s in init_spans if s["status_code"] == ERROR]
    if len(failed_init_spans) + layered.carried_inits != layered.failed_inits:
        out.append(f"{group.name}: {layered.failed_inits} failed inits, {len(failed_init_spans)} init spans with status ERROR, {layered.carried_inits} kept for the next environment")
    for name in group.user_spans:
        if not [s for s in receiver.spans() if s["name"] == name]:
            out.append(f"{group.name}: the function's own span {name!r} was not exported")
    return out


CLIENT = 3  # OTLP's SPAN_KIND_CLIENT (4, PRODUCER: an SQS or SNS send)


def _client_span_problems(receiver: Any, invocation: dict, expected: tuple) -> list:
    """The invocation's client spans against (name, error.type or None) expected, in start order;
    a failed call has status ERROR, a successful one has none."""
    children = sorted((s for s in receiver.spans() if s.get("parent_span_id") == invocation["span_id"] and s["kind"] in (CLIENT, 4)), key=lambda s: s["start_time_unix_nano"])
    found = [(s["name"], s["attributes"].get("error.type")) for s in children]
    # "*": any error.type (the exception's class varies with the library's version).
    matches = len(found) == len(expected) and all(f[0] == e[0] and (f[1] == e[1] or e[1] == "*" and f[1]) for f, e in zip(found, expected))
    problems = [] if matches else [f"client spans {found}, expected {list(expected)}"]
    for span in children:
        if (span["status_code"] == ERROR) != ("error.type" in span["attributes"]) or span["trace_id"] != invocation["trace_id"]:
            problems.append(f"client span {span['name']}: status {span['status_code']} with error.type {span['attributes'].get('error.type')!r}, trace {span['trace_id']}")
    return problems


def check_silence(group: Group, bare: Run, layered: Run, receiver: Any) -> list:
    """lambdawrap switched off: nothing at all reaches the collector."""
    received = receiver.spans() + receiver.metrics() + receiver.logs()
    return [f"lambdawrap is off, yet the collector got {len(received)} items"] if received else []


