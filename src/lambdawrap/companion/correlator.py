"""Joins what the companion learns about each invocation from its three sources: the INVOKE
event, the handler's record (local socket) and the Telemetry API (platform events, log lines).

Pure bookkeeping, no OpenTelemetry: it decides *when* an invocation is complete and hands
finished facts to the sink (spans, metrics, logs) exactly once.
"""

from __future__ import annotations

import collections
import threading
import time
from datetime import datetime

from lambdawrap.shared import records
from lambdawrap.shared.ids import new_span_id, new_trace_id

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing and dataclasses are slow imports on the init path
    from typing import Any, Callable, Protocol
else:
    Protocol = object

KEEP_FINISHED = 2048  # request ids remembered after export, to tag late log lines
# The handler sends its record before its response goes out, and the platform reports
# runtimeDone only after that; a record still missing this long after runtimeDone was lost.
RECORD_GRACE_S = 0.2
MAX_OPEN = 1024  # open invocations kept; only ids never announced by an INVOKE are evicted


class Sink(Protocol):
    def invocation(self, inv: "Invocation") -> None: ...
    def init_span(self, init: "InitFacts", parent: "Invocation") -> None: ...
    def report(self, record: dict) -> None: ...
    def log_line(self, line: str, time_ns: int, ids: tuple | None, request_id: str | None) -> None: ...
    def dropped(self, reason: str, count: int = 1) -> None: ...
    def internal_errors(self, process: str, count: int = 1) -> None: ...


class Invocation:
    """What is known about one request id so far."""

    __slots__ = ("request_id", "invoke_event", "record", "runtime_done", "runtime_done_at", "invoked_at_ns", "finished", "pending_logs", "synthetic_ids")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.invoke_event: dict | None = None
        self.record: dict | None = None
        self.runtime_done: dict | None = None
        self.runtime_done_at: float | None = None  # monotonic, when runtimeDone arrived
        self.invoked_at_ns = time.time_ns()
        self.finished = False
        self.pending_logs: list = []
        self.synthetic_ids: tuple | None = None  # made here when the handler never reported

    @property
    def ids(self) -> tuple | None:
        if self.record:
            return self.record.get("trace_id"), self.record.get("span_id")
        return self.synthetic_ids


class InitFacts:
    """The environment's init, from platform.initStart / initRuntimeDone / initReport."""

    def __init__(self, start_ns: int | None = None, phase: str = "init") -> None:
        self.start_ns = start_ns
        self.duration_ms: float | None = None
        self.status = "success"
        self.error_type: str | None = None
        self.phase = phase
        self.logs: list = []
        self.reported = False
        self.emitted = False


def parse_time_ns(stamp: Any) -> int | None:
    """Telemetry API times ("2022-10-12T00:00:15.064Z") as epoch nanoseconds."""
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(moment.timestamp() * 1_000_000) * 1000


class Correlator:
    """Thread-safe: the socket thread, the telemetry thread and the main loop all feed it."""

    def __init__(self, sink: Sink, on_problem: Callable[[str, str], None]) -> None:
        self.sink = sink
        self._on_problem = on_problem  # (reason, what): counted as a drop, logged once
        self.cv = threading.Condition()
        self._open: dict[str, Invocation] = {}
        self._finished: collections.OrderedDict[str, Invocation] = collections.OrderedDict()
        self._current_rid: str | None = None  # between platform.start and runtimeDone
        self.function_arn = ""
        self.init = InitFacts()
        self._in_init = False
        self._first: Invocation | None = None  # first finished invocation of this environment
        self.records_seen = 0

    # sources -------------------------------------------------------------------

    def _lookup(self, rid: str) -> Invocation:
        """The invocation with this id, finished or open; a new open one if unknown.
        The three sources race, so any of them may be the first to mention an id."""
        inv = self._finished.get(rid)
        if inv is None:
            inv = self._open.get(rid)
            if inv is None:
                if len(self._open) >= MAX_OPEN:
                    self._forget_unannounced()
                inv = self._open[rid] = Invocation(rid)
        return inv

    def _forget_unannounced(self) -> None:
        # Ids the platform never sent an INVOKE for (forged records or telemetry): bounded.
        for rid in [rid for rid, inv in self._open.items() if inv.invoke_event is None][: MAX_OPEN // 2]:
            del self._open[rid]

    def on_invoke(self, event: dict) -> Invocation:
        rid = str(event.get("requestId", ""))
        with self.cv:
            inv = self._lookup(rid)
            inv.invoke_event = event
            # The record (or a failed runtimeDone) may have come first: the sources race.
            if not inv.finished and (inv.record is not None or self._failed_on_platform(inv)):
                self._finish(inv)
            self.cv.notify_all()
            return inv

    @staticmethod
    def _failed_on_platform(inv: Invocation) -> bool:
        return inv.record is None and inv.runtime_done is not None and inv.runtime_done.get("status") not in (None, "success")

    def on_record(self, record: dict) -> None:
        """An invocation record from the function's process (see shared.records)."""
        dropped = records.count(record.get("dropped"))
        if dropped:
            self.sink.dropped("handler_channel", dropped)
        internal_errors = records.count(record.get("internal_errors"))
        if internal_errors:
            self.sink.internal_errors("function", internal_errors)
        if record.get("type") == records.INVOCATION:
            problem = records.invocation_problem(record)
            if problem is not None:
                # Not from our handler side (which only sends well-formed records): it must
                # not finish, or spoil, the real invocation of the same id.
                self._malformed("malformed_record", f"an invocation record with {problem}")
                return
            rid = record["request_id"]
            with self.cv:
                self.records_seen += 1
                inv = self._lookup(rid)
                if inv.finished or inv.record is not None:
                    return  # a duplicate: each invocation is accounted for once
                inv.record = record
                if inv.invoke_event is not None:
                    # Only ids the platform announced become spans (a record for any other
                    # id waits for its INVOKE, which a forged one never gets).
                    self._finish(inv)
                self.cv.notify_all()

    def on_telemetry(self, batch: list) -> None:
        with self.cv:
            for event in batch:
                if not isinstance(event, dict):
                    self._malformed("malformed_telemetry", "a telemetry event that is not an object")
                    continue
                try:
                    self._on_event(event)
                except Exception:  # noqa: BLE001 - one bad event must not cost the rest of the batch
                    self._malformed("malformed_telemetry", "a telemetry event with invalid fields")
            self.cv.notify_all()

    def _malformed(self, reason: str, what: str) -> None:
        """Input that made no sense: counted as a drop, logged once per reason."""
        self._on_problem(reason, f"ignoring {what}")

    def _on_event(self, event: dict) -> None:
        kind = event.get("type")
        record = event.get("record")
        time_ns = parse_time_ns(event.get("time")) or time.time_ns()
        if kind == "function":
            self._log(record if isinstance(record, str) else str(record), time_ns)
            return
        if not isinstance(record, dict):
            return
        rid = record.get("requestId")
        if kind == "platform.initStart":
            self.init = InitFacts(start_ns=time_ns, phase=str(record.get("phase", "init")))
            self._in_init = True
        elif kind == "platform.initRuntimeDone":
            self.init.status = str(record.get("status", "success"))
            self.init.error_type = record.get("errorType")
        elif kind == "platform.initReport":
            metrics = record.get("metrics") or {}
            self.init.duration_ms = _number(metrics.get("durationMs"))
            self.init.reported = True
            self._maybe_init_span()
        elif kind == "platform.start" and rid:
            self._in_init = False
            self._current_rid = str(rid)
            self._lookup(str(rid))
        elif kind == "platform.runtimeDone" and rid:
            rid = str(rid)
            if self._current_rid == rid:
                self._current_rid = None
            inv = self._lookup(rid)
            inv.runtime_done = record
            inv.runtime_done_at = time.monotonic()
            if inv.invoke_event is not None and self._failed_on_platform(inv):
                self._finish(inv)  # timeout or crash: the handler could not report
        elif kind == "platform.report":
            self.sink.report(record)

    def _log(self, line: str, time_ns: int) -> None:
        rid = self._current_rid
        if rid is None:
            if self._in_init and not self.init.emitted:
                self.init.logs.append((line, time_ns))  # printed while the module loaded
                return
            self.sink.log_line(line, time_ns, None, None)
            return
        if rid in self._finished:
            self.sink.log_line(line, time_ns, self._finished[rid].ids, rid)
            return
        self._lookup(rid).pending_logs.append((line, time_ns))

    # completion ----------------------------------------------------------------

    def _finish(self, inv: Invocation) -> None:
        if inv.finished:
            return
        inv.finished = True
        self._open.pop(inv.request_id, None)
        if inv.record is None:
            # The handler never reported (timeout, crash): this invocation's span gets fresh
            # ids here, so its log lines can carry them too.
            inv.synthetic_ids = (f"{new_trace_id():032x}", f"{new_span_id():016x}")
        if not inv.invoke_event and self.function_arn:
            inv.invoke_event = {"invokedFunctionArn": self.function_arn}
        self.sink.invocation(inv)
        ids = inv.ids
        self._finished[inv.request_id] = inv
        while len(self._finished) > KEEP_FINISHED:
            self._finished.popitem(last=False)
        if self._first is None and ids:
            self._first = inv
        self._maybe_init_span()
        for line, time_ns in inv.pending_logs:
            self.sink.log_line(line, time_ns, ids, inv.request_id)
        inv.pending_logs.clear()

    def _maybe_init_span(self) -> None:
        # The init span joins the trace of the first invocation after init, once both the
        # init facts (initReport) and that invocation's ids are known, whichever comes last.
        if self.init.emitted or not self.init.reported or self._first is None:
            return
        self.init.emitted = True
        self.sink.init_span(self.init, self._first)

    def wait_for(self, rid: str, deadline: float, need_runtime_done: bool, record_grace_s: float | None = None) -> bool:
        """Wait until the invocation is finished (and, if asked, its runtimeDone came).

        With `record_grace_s`, an invocation whose runtimeDone came but whose handler record is
        still missing that long after is accounted for as `record_missing` at once (True): the
        invoke phase is not held open until the deadline for a record that was lost."""
        with self.cv:
            while True:
                inv = self._finished.get(rid)
                if inv is not None and (not need_runtime_done or inv.runtime_done is not None):
                    return True
                now = time.monotonic()
                left = deadline - now
                if record_grace_s is not None and inv is None:
                    pending = self._open.get(rid)
                    if pending is not None and pending.runtime_done_at is not None and pending.record is None:
                        grace_left = pending.runtime_done_at + record_grace_s - now
                        if grace_left <= 0:
                            self._account_missing(pending)
                            return True
                        left = min(left, grace_left)
                if left <= 0:
                    return False
                self.cv.wait(left)

    def _account_missing(self, inv: Invocation) -> None:
        """An invocation that ended well but whose record never came: counted, once."""
        inv.finished = True
        self._open.pop(inv.request_id, None)
        self._finished[inv.request_id] = inv  # a late record is then a duplicate, ignored
        while len(self._finished) > KEEP_FINISHED:
            self._finished.popitem(last=False)
        self.sink.dropped("record_missing")
        for line, time_ns in inv.pending_logs:
            self.sink.log_line(line, time_ns, None, inv.request_id)
        inv.pending_logs.clear()

    def finish_unreported(self, reason: str) -> int:
        """At SHUTDOWN: each invocation the handler never reported is accounted for now, as
        an error span (it timed out or crashed) or, if it ended well, as a dropped record."""
        with self.cv:
            open_ = [inv for inv in self._open.values() if inv.invoke_event is not None and not inv.finished]
            for inv in open_:
                if inv.runtime_done is not None and inv.runtime_done.get("status") == "success":
                    self._account_missing(inv)
                    continue
                if inv.runtime_done is None:
                    inv.runtime_done = {"requestId": inv.request_id, "status": "timeout" if reason == "timeout" else "failure", "errorType": _reason_error(reason)}
                self._finish(inv)
            return len(open_)


def _reason_error(reason: str) -> str:
    return {"timeout": "Sandbox.Timedout", "failure": "Runtime.ExitError"}.get(reason, "Runtime.Unknown")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
