"""Fault injection and exactly-once accounting, shared by tests/test_faults.py and bench/soak.py.

- FAULT_APP: a handler that does what each event asks (succeed, raise, time out, exit, run out
  of memory, answer 6 MB or something JSON cannot encode...).
- Collector: an OTLP endpoint (real OtlpReceiver instances on one port) that can go down and
  come back, slow down, answer 500/429 or cut connections.
- Ledger / run_invocation: invoke one planned fault and check that the caller got exactly what
  the function (or the platform) produced, timing what the caller waited.
- account(): every request id is one invocation span at the collector, or counted in
  lambdawrap.dropped with a reason; nothing lost, nothing counted twice.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import socket
import statistics
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from lambdawrap.devtools.emulator import Emulator
from lambdawrap.devtools.otlp_receiver import OtlpReceiver
from lambdawrap.shared import records

EVENTS = Path(__file__).resolve().parents[2] / "examples" / "events"
SIX_MB = 6 * 1024 * 1024  # the platform's limit is 6 MiB + 100 B, request and response

FAULT_APP = r"""
import json, os, time

# An init failure on demand: while this file exists, the module cannot load.
if os.path.exists(os.environ.get("FAIL_INIT_MARKER", "/nonexistent")):
    raise RuntimeError("init failure injected")

def handler(event, context):
    if not isinstance(event, dict):
        return {"type": type(event).__name__}
    kind = event.get("kind", "ok")
    if kind == "raise":
        raise ValueError("boom " + context.aws_request_id)
    if kind == "timeout":
        time.sleep(60)
    if kind == "exit":
        os._exit(3)
    if kind == "memory_error":
        raise MemoryError()
    if kind == "out_of_memory":
        blocks = []
        for _ in range(64):
            blocks.append(bytearray(8 * 1024 * 1024))
            time.sleep(0.003)
    if kind == "big_response":
        return "r" * event["size"]
    if kind == "non_json":
        return {"when": object()}
    if kind == "big_event":
        return {"size": len(event.get("blob", ""))}
    if kind == "hold":
        # Until the test says so (a file appears), with time to spare before the timeout.
        print("holding", context.aws_request_id, flush=True)
        deadline = time.monotonic() + context.get_remaining_time_in_millis() / 1000 - 1
        while not os.path.exists(os.environ["HOLD_UNTIL"]) and time.monotonic() < deadline:
            time.sleep(0.01)
    if kind == "secret":
        return {"has_secret": bool(os.environ.get("DB_PASSWORD"))}
    if kind == "flood":
        line = "f" * 999
        for _ in range(event["lines"]):
            print(line)
    return {"ok": True, "rid": context.aws_request_id}
"""

# Faults whose invocation ends the execution environment (the next one starts cold).
RESETTING = frozenset({"timeout", "exit", "out_of_memory", "huge_response"})
# Everything a mixed run draws from, and how the caller sees each one.
KINDS = ("ok", "http", "bad_headers", "not_dict", "raise", "memory_error", "non_json", "big_event", "big_response", "timeout", "exit", "out_of_memory")


def _apigw(**changes: Any) -> dict:
    event = json.loads((EVENTS / "apigw-rest.json").read_text())
    event.update(changes)
    return event


_NOT_DICT = [b"[1, 2, 3]", b'"just a string"', b"42", b"null", b"not json at all", b"\xff\xfe\x00garbage"]
_BAD_HEADERS = [
    {"traceparent": "00-zzzz-garbage-01", "X-Amzn-Trace-Id": "Root=;;;Parent=", "Content-Type": ["a", "b"]},
    {"traceparent": "ff-" + "0" * 32 + "-" + "0" * 16 + "-01", "tracestate": "x" * 5000},
    {"User-Agent": "u" * 200_000, "Host": "h" * 5000},
    {"traceparent": None, "Host": 12, "Cookie": {"nested": True}},
]


def plan_event(kind: str, rng: random.Random) -> tuple[Any, bytes | None]:
    """(event, raw bytes or None) for one planned invocation."""
    if kind == "http":
        return _apigw(headers={**_apigw()["headers"], "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}), None
    if kind == "bad_headers":
        event = _apigw()
        event["headers"] = rng.choice(_BAD_HEADERS)
        event["multiValueHeaders"] = {"X": "not-a-list", 7: ["seven"]} if rng.random() < 0.5 else None
        return event, None
    if kind == "not_dict":
        return None, rng.choice(_NOT_DICT)
    if kind == "big_event":
        return {"kind": kind, "blob": "b" * (SIX_MB - 200)}, None
    if kind == "big_response":
        return {"kind": kind, "size": SIX_MB - 1000}, None
    if kind == "huge_response":
        return {"kind": "big_response", "size": SIX_MB + 1000}, None
    if kind == "flood":
        return {"kind": kind, "lines": 5000}, None
    return {"kind": kind}, None


@dataclass
class Outcome:
    kind: str
    request_id: str
    ok: bool  # the caller got what the function itself (or the platform, for a fault) produced
    detail: str
    caller_ms: float  # what the caller waited, from the request to the answer
    phase_ms: float  # the rest of the invoke phase (extensions, report), until the next invoke may start
    cold: bool  # the first invocation of an execution environment


def expected(kind: str, result: Any, raw: bytes | None) -> tuple[bool, str]:
    """Is this what the caller would get without the layer?"""
    try:
        body = result.json() if kind not in ("big_response",) else None
    except ValueError:
        body = None
    error = result.function_error
    error_type = body.get("errorType") if isinstance(body, dict) else None
    if kind in ("ok", "http", "bad_headers", "hold", "flood"):
        good = result.status == 200 and error is None and isinstance(body, dict) and body.get("ok") is True and body.get("rid") == result.request_id
    elif kind == "not_dict":
        if raw in (b"not json at all", b"\xff\xfe\x00garbage"):
            # awslambdaric cannot decode the event: its own error, with or without the layer.
            good = error == "Unhandled" and error_type == "Runtime.UnmarshalError"
        else:
            good = error is None and body == {"type": type(json.loads(raw)).__name__}
    elif kind == "raise":
        good = error == "Unhandled" and error_type == "ValueError" and body["errorMessage"] == "boom " + result.request_id
    elif kind == "memory_error":
        good = error == "Unhandled" and error_type == "MemoryError"
    elif kind == "non_json":
        good = error == "Unhandled" and error_type == "Runtime.MarshalError"
    elif kind == "big_event":
        good = error is None and body == {"size": SIX_MB - 200}
    elif kind == "big_response":
        good = error is None and len(result.body) == SIX_MB - 1000 + 2  # a JSON string: two quotes
    elif kind == "timeout":
        good = error_type == "Sandbox.Timedout"
    elif kind == "exit":
        good = error_type == "Runtime.ExitError" and "exit status 3" in body.get("errorMessage", "")
    elif kind == "out_of_memory":
        good = error_type == "Runtime.OutOfMemory"
    elif kind == "huge_response":
        good = error == "Unhandled" and error_type == "Function.ResponseSizeTooLarge"
    elif kind == "init_failure":
        good = error == "Unhandled" and error_type == "RuntimeError" and body.get("errorMessage") == "init failure injected"
    elif kind == "secret":
        good = error is None and body == {"has_secret": True}
    else:
        good = result.status == 200 and error is None
    return bool(good), f"{kind}: status {result.status}, error {error}, type {error_type}, body {result.body[:160]!r}"


class Ledger:
    """Every invocation made, what its caller saw, and the faults injected."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.faults: collections.Counter = collections.Counter()  # fault -> times injected
        self.conditions: dict = {}  # what the environment went through (collector phases...)
        self._next_cold = True

    def invoke(self, emu: Emulator, kind: str, rng: random.Random, fault_label: str | None = None) -> Outcome:
        event, raw = plan_event(kind, rng)
        # The previous invoke phase (extension work after the response) is timed on its own,
        # so that what the caller waits is measured from its own request.
        phase_started = time.perf_counter()
        emu.wait_idle(timeout=30)
        if self.outcomes:
            self.outcomes[-1].phase_ms = (time.perf_counter() - phase_started) * 1000
        result = emu.invoke(event, raw=raw)
        good, detail = expected(kind, result, raw)
        outcome = Outcome(kind, result.request_id, good, detail, result.duration_ms, 0.0, self._next_cold)
        self.outcomes.append(outcome)
        self._next_cold = kind in RESETTING
        if kind not in ("ok", "http", "hold", "secret"):
            self.faults[kind] += 1
        if fault_label:
            self.faults[fault_label] += 1
        return outcome

    def mark_reset(self) -> None:
        """The environment was reset from outside (e.g. the companion was killed)."""
        self._next_cold = True

    @property
    def request_ids(self) -> list[str]:
        """The invocations the function ran (an init failure's request never reached it: the
        failed init's span stands for it)."""
        return [o.request_id for o in self.outcomes if o.kind != "init_failure"]

    def failures(self) -> list[str]:
        return [o.detail for o in self.outcomes if not o.ok]

    def warm_caller_ms(self, kinds: Sequence[str] = ("ok",)) -> list[float]:
        return [o.caller_ms for o in self.outcomes if o.kind in kinds and not o.cold]


def mixed_plan(counts: Mapping[str, int], seed: int) -> list[str]:
    """The kinds to invoke, shuffled reproducibly."""
    plan = [kind for kind, n in counts.items() for _ in range(n)]
    random.Random(seed).shuffle(plan)
    return plan


class Collector:
    """An OTLP/HTTP collector on one loopback port that can go down and come back."""

    def __init__(self) -> None:
        self._receivers: list[OtlpReceiver] = []
        self._port = 0
        self.up_since = time.monotonic()

    def __enter__(self) -> "Collector":
        first = OtlpReceiver().start()
        self._port = first.port
        self._receivers.append(first)
        return self

    def __exit__(self, *exc: object) -> None:
        for receiver in self._receivers:
            receiver.stop()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def current(self) -> OtlpReceiver:
        return self._receivers[-1]

    def down(self) -> None:
        """Stop listening: exports get "connection refused" until up().

        Cleanly: requests that arrive from now on are cut unanswered and unstored, and those
        already being answered are let finish. (A collector that stores a request and then dies
        before answering leaves the client unable to know: that is at-least-once delivery,
        which exact accounting cannot settle, so these scenarios do not produce it.)"""
        receiver = self.current
        receiver.set_behaviour(close_connection=True)
        seen, quiet_since = len(receiver.requests()), time.monotonic()
        deadline = quiet_since + 3
        while time.monotonic() - quiet_since < 0.25 and time.monotonic() < deadline:
            time.sleep(0.02)
            count = len(receiver.requests())
            if count != seen:
                seen, quiet_since = count, time.monotonic()
        receiver.stop()

    def up(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                self._receivers.append(OtlpReceiver(port=self._port).start())
                self.up_since = time.monotonic()
                return
            except OSError:  # the old socket may linger for a moment
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def set_behaviour(self, **behaviour: Any) -> None:
        self.current.set_behaviour(**behaviour)

    def reset_behaviour(self) -> None:
        self.current.reset_behaviour()

    def spans(self) -> list:
        return [s for r in self._receivers for s in r.spans()]

    def metrics(self) -> list:
        return [m for r in self._receivers for m in r.metrics()]

    def logs(self) -> list:
        return [l for r in self._receivers for l in r.logs()]

    def requests(self) -> list:
        return [q for r in self._receivers for q in r.requests()]


# ------------------------------------------------------------------------------------------
# Reaching into the environment: the companion's process, its telemetry listener, its socket.


def environment_up(emu: Emulator) -> bool:
    """False after a reset, until the next invocation starts a new environment."""
    emu.wait_idle(30)
    return any(e.name == "lambdawrap" for e in emu.sandbox.state.launched)


def companion_process(emu: Emulator):
    """The running companion's process."""
    emu.wait_idle(30)
    return next(e for e in emu.sandbox.state.launched if e.name == "lambdawrap").process


def kill_companion(process) -> None:
    """SIGKILL the companion and wait until it is gone: a record sent to a process that is
    still dying would vanish with it, uncounted by anyone."""
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(5)


def _companions_subscription(emu: Emulator) -> Any:
    return next(s for s in emu.bus.subscribers() if s.extension_name == "lambdawrap")


def telemetry_port(emu: Emulator) -> int:
    return _companions_subscription(emu).subscription.port


def rewrite_telemetry(emu: Emulator, rewrite: Any) -> None:
    """The platform delivers `rewrite(event)` to the companion in place of each event."""
    sub = _companions_subscription(emu)
    deliver = sub.put
    sub.put = lambda event: deliver(rewrite(event))


def lose_telemetry(emu: Emulator, lost: Any) -> None:
    """The platform drops the companion's telemetry events for which `lost(event)` is true, as
    it drops those of a subscriber that lags (Managed Instances drop whole batches, platform
    events too): counted, and told in the next batch's platform.logsDropped."""
    sub = _companions_subscription(emu)
    deliver = sub.put

    def put(event: dict) -> None:
        if not lost(event):
            deliver(event)
            return
        with sub._cv:
            sub._dropped_records += 1
            sub._dropped_bytes += len(json.dumps(event))
        sub._on_drop(event.get("type"))

    sub.put = put


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


SOCKET_GARBAGE = [
    b"\xff\xff\xff\xff" + b"x" * 64,  # a frame longer than the limit
    b"\x00\x00\x00\x05{bad}",  # not JSON
    b"\x00\x00\x00\x07[1,2,3]",  # not an object
    _frame(b"[" * 100_000 + b"]" * 100_000),  # nested too deeply
    _frame(json.dumps({"version": records.VERSION, "type": "invocation", "request_id": "forged", "trace_id": "zz", "span_id": 5}).encode()),
    _frame(json.dumps({"version": records.VERSION, "type": "invocation", "start": {"request_id": "forged-well-formed", "trace_id": "1" * 32, "span_id": "2" * 16}, "end": {}}).encode()),
    _frame(json.dumps({"version": records.VERSION, "type": "spans", "spans": ["not a span", {"name": 3}, None]}).encode()),
    _frame(json.dumps({"version": 99, "type": "invocation"}).encode()),
    _frame(json.dumps({"version": records.VERSION, "type": "invocation", "dropped": "many"}).encode()),
    b"\x00\x00\x10\x00partial",  # a frame cut short by the connection closing
]

TELEMETRY_GARBAGE = [
    b"not json",
    b'{"an": "object"}',
    b"[" * 50_000 + b"]" * 50_000,
    json.dumps([1, "two", None, {"type": "platform.runtimeDone", "record": "not an object"}]).encode(),
    json.dumps([{"type": "platform.report", "record": {"requestId": "forged", "metrics": ["not", "a", "dict"]}}, {"type": "platform.initReport", "record": {"metrics": "x"}}]).encode(),
    json.dumps([{"type": "platform.runtimeDone", "time": "yesterday", "record": {"requestId": "forged", "status": "error", "metrics": {"durationMs": "slow"}}}]).encode(),
    json.dumps([{"type": "platform.start", "time": 12, "record": {"requestId": {"a": 1}}}, {"type": "function", "record": {"not": "a line"}}]).encode(),
]

# Requests no HTTP client sends: a negative length, and chunk sizes int() would take (a sign
# sent the listener back over what it had read, for ever: the companion stopped), a chunk
# without its CRLF.
_CHUNKED = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
RAW_TELEMETRY_GARBAGE = [
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n[]",
    _CHUNKED + b"-6\r\nhello\r\n0\r\n\r\n",
    _CHUNKED + b"+2\r\n[]\r\n0\r\n\r\n",
    _CHUNKED + b"0x2\r\n[]\r\n0\r\n\r\n",
    _CHUNKED + b"2\r\n[]XY0\r\n\r\n",
]


def send_socket_garbage(path: str) -> None:
    for garbage in SOCKET_GARBAGE:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(path)
            conn.sendall(garbage)


def post_telemetry_garbage(port: int) -> list:
    statuses = []
    for body in TELEMETRY_GARBAGE:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                statuses.append(response.status)
        except urllib.error.HTTPError as err:
            statuses.append(err.code)
    for raw in RAW_TELEMETRY_GARBAGE:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(raw)
            statuses.append(int(conn.recv(100).split()[1]))
    return statuses


# ------------------------------------------------------------------------------------------
# Accounting
# ------------------------------------------------------------------------------------------

# Reasons under which a whole invocation can be missing from the spans. (export_failed counts
# metric and log batches, never spans: span batches go back to the buffer instead.)
# These workloads make no user spans, so buffer_full, shutdown_deadline and sampled_out count
# invocation and init spans only, and malformed_span (user spans) never hides an invocation.
SPAN_REASONS = ("buffer_full", "shutdown_deadline", "sampled_out", "rejected_by_collector", "unanswered")
# (malformed_record and malformed_telemetry count input that was no invocation of ours: a
# record from our handler side is always well formed, and one that is lost is record_missing.)
RECORD_REASONS = ("record_missing", "handler_channel")


@dataclass
class Accounting:
    invocations: int
    spans: int  # invocation spans received, one per request id
    duplicates: int  # request ids with more than one span
    unknown: int  # spans for request ids nobody invoked
    init_spans: int
    inits: int  # execution environments started (each owes one init span)
    dropped: dict = field(default_factory=dict)
    faas_invocations: float = 0.0
    # inits that failed again inside an invocation: each stands for that invocation, which
    # faas.invocations counts (its request id is the caller's, not among the handler's)
    failed_in_invocation: int = 0
    high_water: float = 0.0
    capacity: float = 0.0

    @property
    def missing(self) -> int:
        return self.invocations - self.spans

    @property
    def lost(self) -> int:
        """Invocations neither exported nor counted (negative: counted more than once)."""
        span_drops = sum(self.dropped.get(r, 0) for r in SPAN_REASONS)
        init_dropped = self.inits - self.init_spans
        record_drops = sum(self.dropped.get(r, 0) for r in RECORD_REASONS)
        return int(self.missing - (span_drops - init_dropped) - record_drops)

    def problems(self) -> list[str]:
        """Everything that breaks exactly-once accounting, in words; empty when all is well."""
        out = []
        if self.lost:
            out.append(f"lost = {self.lost} (missing spans {self.missing}, drops {self.dropped}, init spans {self.init_spans}/{self.inits})")
        if self.duplicates:
            out.append(f"{self.duplicates} request ids have more than one span")
        if self.unknown:
            out.append(f"{self.unknown} spans name request ids that were never invoked")
        if self.init_spans > self.inits:
            out.append(f"{self.init_spans} init spans for {self.inits} inits")
        # faas.invocations counts every invocation whose span was built, exported or not, and
        # each whose init failed again inside it.
        built = self.invocations - sum(self.dropped.get(r, 0) for r in RECORD_REASONS) + self.failed_in_invocation
        if self.faas_invocations != built:
            out.append(f"faas.invocations = {self.faas_invocations:g}, expected {built}")
        if self.capacity and self.high_water > self.capacity:
            out.append(f"the span buffer held {self.high_water:g} spans, over its bound {self.capacity:g}")
        return out

    def figures(self) -> dict:
        return {
            "invocations": self.invocations,
            "spans": self.spans,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "dropped": dict(sorted(self.dropped.items())),
            "init_spans": f"{self.init_spans}/{self.inits}",
            "max_buffer": f"{self.high_water:g}/{self.capacity:g}",
        }


def metric_points(source: Any, name: str) -> list:
    return [p for p in source.metrics() if p["name"] == name]


def account(source: Any, request_ids: Sequence[str], inits: int) -> Accounting:
    """Exactly-once accounting of `request_ids` at `source` (a receiver or a Collector)."""
    invoked = set(request_ids)
    per_rid = collections.Counter()
    init_spans = failed_in_invocation = 0
    for span in source.spans():
        rid = span["attributes"].get("faas.invocation_id")
        if rid is not None:
            per_rid[rid] += 1
        elif span["name"].endswith(" init") and "lambdawrap.init.phase" in span["attributes"]:
            init_spans += 1
            failed_in_invocation += span["attributes"]["lambdawrap.init.phase"] == "invoke" and span["status_code"] == 2
    dropped: collections.Counter = collections.Counter()
    for point in metric_points(source, "lambdawrap.dropped"):
        dropped[point["attributes"].get("reason", "?")] += point["value"]
    invocations = sum(p["value"] for p in metric_points(source, "faas.invocations"))
    water = metric_points(source, "lambdawrap.buffer.high_water")
    return Accounting(
        invocations=len(invoked),
        spans=sum(1 for rid in per_rid if rid in invoked),
        duplicates=sum(1 for n in per_rid.values() if n > 1),
        unknown=sum(1 for rid in per_rid if rid not in invoked),
        init_spans=init_spans,
        inits=inits,
        dropped={k: int(v) for k, v in dropped.items()},
        faas_invocations=invocations,
        failed_in_invocation=failed_in_invocation,
        high_water=max((p["value"] for p in water), default=0.0),
        capacity=max((p["attributes"].get("lambdawrap.buffer.capacity", 0) for p in water), default=0.0),
    )


def inits(emu: Emulator) -> int:
    """Execution environments the emulator started (each reports platform.initReport once)."""
    return len(emu.records("platform.initReport"))


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_summary(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    return f"p50 {statistics.median(values):.1f} ms, p99 {percentile(values, 0.99):.1f} ms, max {max(values):.1f} ms (n={len(values)})"


def report_lines(title: str, acc: Accounting, ledger: Ledger, extra: Mapping[str, Any] | None = None) -> list[str]:
    lines = [f"== {title}"]
    lines.append(f"invocations {acc.invocations}, faults injected {sum(ledger.faults.values())} {dict(sorted(ledger.faults.items()))}")
    lines.append(f"spans {acc.spans}, lost {acc.lost}, duplicates {acc.duplicates}, drops by reason {dict(sorted(acc.dropped.items())) or '{}'}")
    lines.append(f"init spans {acc.init_spans}/{acc.inits}, max buffer {acc.high_water:g} of {acc.capacity:g} spans")
    for key, value in ledger.conditions.items():
        lines.append(f"{key}: {value}")
    lines.append(f"warm caller latency: {latency_summary(ledger.warm_caller_ms())}")
    for key, value in (extra or {}).items():
        lines.append(f"{key}: {value}")
    return lines


class FiguresReport:
    """A pytest plugin, registered on first use, that prints the suite's figures at the end of
    the run (in the terminal summary, so that they show with -q and captured output too)."""

    NAME = "lambdawrap-fault-figures"

    def __init__(self) -> None:
        self.sections: list[list[str]] = []

    def add(self, lines: Sequence[str]) -> None:
        self.sections.append(list(lines))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.sections:
            return
        terminalreporter.section("lambdawrap reliability figures")
        for lines in self.sections:
            for line in lines:
                terminalreporter.write_line(line)


def figures_report(config: Any) -> FiguresReport:
    plugin = config.pluginmanager.get_plugin(FiguresReport.NAME)
    if plugin is None:
        plugin = FiguresReport()
        config.pluginmanager.register(plugin, FiguresReport.NAME)
    return plugin
