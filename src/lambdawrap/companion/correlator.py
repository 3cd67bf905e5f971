"""Joins what the companion learns about each invocation from its sources: the INVOKE event,
the function's record (local socket), its in-flight slot (when it never reported), and the
Telemetry API (platform events, log lines).

Pure bookkeeping, no OpenTelemetry: it decides *when* an invocation is complete and hands
finished facts to the sink (spans, metrics, logs) exactly once. An invocation is complete when
the platform announced it (INVOKE) and told how it ended (runtimeDone or report), and either
the function's record came or the platform says the function could not send one (timeout,
crash): the span's status follows the platform, so a failure after the handler returned (a
response too large, a result that cannot be serialized) is an error too. The runtime's post
of the response (a `posted` record), made before the deadline, tells the same sooner when it
agrees with the record; the span is then made at once and says what the caller received,
whatever the platform says later (a runtime that dies after posting: logged once).
"""

from __future__ import annotations

import collections
import functools
import json
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

from lambdawrap.companion.log_buffer import AwaitedIds
from lambdawrap.companion.runtime_errors import runtime_error
from lambdawrap.shared import inflight, records, xray_header
from lambdawrap.shared.ids import new_span_id, new_trace_id, reseed as reseed_ids
from lambdawrap.shared.settings import MANAGED_INSTANCES

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing and dataclasses are slow imports on the init path
    from typing import Any, Callable, Protocol
else:
    Protocol = object

KEEP_FINISHED = 2048  # request ids remembered after export, to tag late log lines
# On Managed Instances, the ids of requests forgotten past KEEP_FINISHED, kept this many more (ids,
# end times and span ids only, ~5 MB): the platform's word on one may come that late on a busy
# instance, and a timed-out handler's record later still.
KEEP_FORGOTTEN_IDS = 16384
# Lambda retries an asynchronous invocation that failed a minute later at the soonest: word of a
# forgotten id sooner than this after its end is late word of it.
RETRY_AFTER_S = 30.0
# The function sends its record before its runtime asks for the next event (right after the
# runtime's post of the response, or before it), and the platform reports runtimeDone only
# after that ask; a record still missing this long after runtimeDone was lost.
RECORD_GRACE_S = 0.2
# A record whose handler started this long before a retry of its request was announced is the
# replaced attempt's: the platform retries an asynchronous invocation a minute or more after it
# ended, and a retry's own handler starts before the companion reads its INVOKE by far less.
RETRY_STARTED_NS = int(RETRY_AFTER_S * 1e9)
_CRASH_ERRORS = ("Runtime.ExitError", "Runtime.OutOfMemory")
# A function that sent no record in its environment through this many invocations that ended
# well never will (its handler was not wrapped: a module that puts another object in its place
# in sys.modules, ...): from then on the invoke phase is not held open RECORD_GRACE_S for one.
UNREPORTING_AFTER = 2
# A record whose platform outcome has not come this long after is finished on its own (the
# telemetry stream may be broken): better a span without the platform's word than none.
OUTCOME_WAIT_S = 2.0
# On Managed Instances the record goes when the handler returns, before the runtime serializes
# and posts the response, which may still fail or time out: the platform's word is awaited
# until the invocation's deadline (its record says how far off), past that by OUTCOME_WAIT_S.
LONGEST_TIMEOUT_S = 900.0  # when a record does not say (Lambda's longest timeout)
# The longest duration the platform's telemetry is believed for (an invocation lasts up to
# 900 s, a Managed Instances init up to 15 minutes): a day.
MAX_DURATION_MS = 86_400_000.0
MAX_OPEN = 1024  # open invocations kept; only ids never announced by an INVOKE are evicted
MAX_WORKERS = 1600  # Managed Instances' most workers in an environment (AWS_LAMBDA_MAX_CONCURRENCY)
MAX_PENDING_LOGS = 1000  # log lines kept per invocation until its span's ids are known
# ... and their characters: a line may be 256 KiB, and 1,000 of them held whole were 256 MB of
# the memory the companion shares with the function (the log buffer keeps 4 Mi characters).
MAX_PENDING_CHARS = 1024 * 1024
# ... and those of every invocation under way together: on Managed Instances up to 1,600 requests
# run at once, each holding its own until its record comes.
MAX_HELD_CHARS = 4 * MAX_PENDING_CHARS
SNAP_START = "snap-start"  # platform.initStart's initializationType for a SnapStart function
UNSEEN_INIT_ERROR = "_OTHER"  # the conventions' error.type for a cause that is not known


class Sink(Protocol):
    def invocation(self, inv: "Invocation") -> bool | None: ...  # True: done with inv
    def init_span(self, init: "InitFacts", parent: "Invocation | None") -> None: ...
    def report(self, record: dict, trigger: str = "other") -> None: ...
    def log_line(self, line: str, time_ns: int, ids: tuple | list | None, request_id: str | None) -> None: ...
    def dropped_log_line(self, chars: int) -> bool: ...
    def user_spans(self, spans: list) -> None: ...
    def dropped(self, reason: str, count: int = 1) -> None: ...
    def internal_errors(self, process: str, count: int = 1) -> None: ...


def _start_ids(start: dict) -> tuple:
    """The ids a start record gives its span, with its trace's sampling decision: a log line
    printed in an unsampled span carries its ids but not the sampled flag, as the SDK's do."""
    return start.get("trace_id"), start.get("span_id"), start.get("sampled", True) is not False


def trigger_of(inv: "Invocation | None") -> str:
    """The invocation's faas.trigger, as its span names it ("other" when nothing of the
    function's came): the FaaS metrics of the platform's numbers are labelled with it too. A
    timed-out invocation waiting for its record has its slot's (its report comes meanwhile)."""
    attributes = (inv.start or inv.slot_start or {}).get("attributes") if inv is not None else None
    return str(attributes.get("faas.trigger") or "other") if isinstance(attributes, dict) else "other"


def _settled(end: dict | None) -> dict | None:
    """What a record's end part is still asked once its span is made: whether it came, and
    whether it reported an error (Invocation.verdict_known)."""
    if end is None:
        return None
    return {"error": {}} if end.get("error") is not None else {}


class Invocation:
    """What is known about one request id so far."""

    __slots__ = ("request_id", "invoke_event", "start", "end", "outcome", "outcome_at", "posted", "refused_bytes", "record_at", "invoked_at_ns", "finished", "finished_at_ns", "logs", "held_chars", "error_line", "synthetic", "streamed_ids", "slot_start", "reported", "late_record", "first_invoke", "environment_cold", "init_in_invoke", "unheard")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.invoke_event: dict | None = None
        self.start: dict | None = None  # the record's start part, or the in-flight slot's
        self.end: dict | None = None  # the record's end part: the function reported
        self.outcome: dict | None = None  # platform.runtimeDone (or report, without runtimeDone)
        self.outcome_at: float | None = None  # monotonic
        self.posted: str | None = None  # what the runtime posted: "result", "error" or "too_large" (response_posted)
        self.refused_bytes: int | None = None  # the size of a response the platform refused
        self.record_at: float | None = None  # monotonic
        self.invoked_at_ns = time.time_ns()
        self.finished = False
        self.finished_at_ns: int | None = None  # when it was accounted for (the span's end if nothing says better)
        self.logs: list = []  # (line, time_ns) until the span's ids are known
        self.held_chars = 0  # the characters of those lines (MAX_PENDING_CHARS)
        self.error_line: dict | None = None  # the runtime's own error line, if it logged one
        self.synthetic: tuple | None = None  # ids made here when nothing of the function's survived, and the sampler's word
        # A flood of lines: the span's ids, known before its end, with which the lines go on
        # as they come rather than held (see Correlator._log); False when none could be known.
        self.streamed_ids: tuple | bool | None = None
        self.slot_start: dict | None = None  # the in-flight slot those ids were read from
        self.reported = False  # platform.report, the platform's last word on it, came
        self.late_record = False  # its record came after it was accounted for without it
        # Whether its INVOKE was the environment's first (None on Managed Instances, where each
        # worker has its own first), and, once it is finished, whether that made it the
        # environment's cold start as the companion can tell (see Correlator._environment_cold).
        self.first_invoke: bool | None = None
        self.environment_cold: bool | None = None
        # The environment's first, after an init in the invoke phase (a re-init after a reset):
        # its caller waited for that init, whatever the function's process takes it for.
        self.init_in_invoke = False
        # Managed Instances: announced by its record alone, its start and report taken for lost
        # (see _announce_unheard); if they were only late, they are this request's, no retry's.
        self.unheard = False

    @property
    def ids(self) -> tuple | None:
        """(trace id, span id, sampled) of the span, as the function's process made them; ids
        made here have no third item (their span's sampling is decided when it is built)."""
        if self.start is not None:
            return _start_ids(self.start)
        return self.synthetic

    @property
    def verdict_known(self) -> bool:
        """Whether the function's own reports already say how the invocation ended: its record,
        and the runtime having posted what that record announces (a response for a handler that
        returned, an error for one that raised). A response posted as an error after the handler
        returned (it could not be serialized) is the platform's to tell; a response refused for
        its size is told by the failed post alone (the platform says only that the runtime exited)."""
        if self.end is None or self.posted is None:
            return False
        if self.posted == "too_large":
            return True
        return self.posted == ("error" if self.end.get("error") is not None else "result")

    @property
    def failed_on_platform(self) -> bool:
        return self.outcome is not None and self.outcome.get("status") not in (None, "success")

    @property
    def process_ended(self) -> bool:
        """Whether the platform says the function's process ended with the invocation (a
        timeout, a crash): its record will not come. An error the runtime answered (the
        handler's exception) leaves it running, its record on its way."""
        return self.failed_on_platform and platform_failure(self.outcome)[1] != "runtime_error"

    def to_dict(self) -> dict:
        """What a later environment needs to export this invocation (see carryover)."""
        return {name: getattr(self, name) for name in _CARRIED_FIELDS}

    @classmethod
    def from_dict(cls, data: dict) -> "Invocation":
        inv = cls(str(data["request_id"]))
        inv.invoke_event, inv.start, inv.end, inv.outcome, inv.error_line = (_object(data.get(name)) for name in ("invoke_event", "start", "end", "outcome", "error_line"))
        for name in ("invoked_at_ns", "finished_at_ns", "refused_bytes"):
            if type(data.get(name)) is int:
                setattr(inv, name, data[name])
        inv.posted = data["posted"] if data.get("posted") in _POSTED else None
        inv.finished = data.get("finished") is True
        inv.logs = _log_entries(data.get("logs"))
        synthetic = data.get("synthetic")
        inv.synthetic = tuple(synthetic) if isinstance(synthetic, list) and _synthetic_ids(synthetic) else None
        inv.environment_cold = data.get("environment_cold") if isinstance(data.get("environment_cold"), bool) else None
        inv.init_in_invoke = data.get("init_in_invoke") is True
        return inv


PlatformParent = collections.namedtuple("PlatformParent", "trace_id span_id sampled")


def platform_parent(invoke_event: dict | None) -> PlatformParent | None:
    """The sampled X-Ray context the platform announced the invocation with (INVOKE's, or on
    Managed Instances platform.start's `tracing`): the same header the runtime hands the
    function, whose process takes a sampled one for the parent when the event carries none."""
    tracing = (invoke_event or {}).get("tracing")
    parsed = xray_header.parse(tracing.get("value")) if isinstance(tracing, dict) else None
    return PlatformParent(*parsed) if parsed is not None and parsed[2] else None


def _synthetic_ids(value: list) -> bool:
    # (trace id, span id), and from this version whether the sampler keeps that trace
    return len(value) in (2, 3) and all(isinstance(x, str) for x in value[:2]) and all(isinstance(x, bool) for x in value[2:])


_CARRIED_FIELDS = ("request_id", "invoke_event", "start", "end", "outcome", "posted", "refused_bytes", "invoked_at_ns", "finished", "finished_at_ns", "logs", "error_line", "synthetic", "environment_cold", "init_in_invoke")
_POSTED = ("result", "error", "too_large")


class InitFacts:
    """The environment's init, from platform.initStart / initRuntimeDone / initReport."""

    def __init__(self, start_ns: int | None = None, phase: str = "init") -> None:
        self.start_ns = start_ns
        self.duration_ms: float | None = None
        self.status = "success"
        self.error_type: str | None = None
        self.error: dict | None = None  # the runtime's error line, when init failed
        self.phase = phase
        self.initialization_type = ""  # platform.initStart's: on-demand, provisioned-concurrency...
        self.logs: list = []  # (line, time_ns) until the init span's ids are known
        self.held_chars = 0
        # The ids of the init's lines that did not fit among those held (MAX_PENDING_LOGS or
        # _CHARS): they go to the sink's bounded buffer with this list, which the sink fills
        # when it makes the init span (Sink.init_span); their export waits for it.
        self.late_ids = AwaitedIds()
        self.error_line: dict | None = None  # the runtime's last error line among all the init's
        self.reported = False
        self.emitted = False
        self.runtime_done = False  # initRuntimeDone came: the platform had started the runtime
        self.extension_error: str | None = None  # the first errorType of a platform.extension record
        self.span_id: str | None = None  # the init span's, chosen when it is made (its late lines carry it)
        # (trace, span) where the function's process chose them, for the calls its module made
        # as it loaded: the init span is then the root of that trace, not in the first
        # invocation's.
        self.own_trace: tuple | None = None
        # A Managed Instances worker's own failed init, told by its process: not the
        # environment's, whose duration the platform measures.
        self.worker = False
        # Whether a caller waited for this init, where its span stands alone though an invocation
        # followed it (one that lost its record): as that invocation would have said.
        self.cold: bool | None = None

    @property
    def failed(self) -> bool:
        return self.status != "success"

    def to_dict(self) -> dict:
        """What a later environment needs to export this init's span (see carryover)."""
        return {"start_ns": self.start_ns, "duration_ms": self.duration_ms, "status": self.status, "error_type": self.error_type, "error": self.error, "phase": self.phase, "initialization_type": self.initialization_type, "cold": self.cold, "worker": self.worker, "logs": self.logs[-MAX_PENDING_LOGS:], "own_trace": self.own_trace}

    @classmethod
    def from_dict(cls, data: dict) -> "InitFacts":
        facts = cls(start_ns=data.get("start_ns") if type(data.get("start_ns")) is int else None, phase=str(data.get("phase") or "init"))
        facts.duration_ms = platform_duration_ms(data.get("duration_ms"))
        facts.status = str(data.get("status") or "failure")
        facts.error_type = data.get("error_type") if isinstance(data.get("error_type"), str) else None
        facts.error = data.get("error") if isinstance(data.get("error"), dict) else None
        facts.initialization_type = str(data.get("initialization_type") or "")
        facts.cold = data.get("cold") if isinstance(data.get("cold"), bool) else None
        facts.worker = data.get("worker") is True
        facts.logs = _log_entries(data.get("logs"))
        own_trace = data.get("own_trace")
        if isinstance(own_trace, list) and len(own_trace) == 2 and records.hex_id(own_trace[0], 32) and records.hex_id(own_trace[1], 16):
            facts.own_trace = (own_trace[0], own_trace[1])
            facts.span_id = own_trace[1]
        facts.reported = facts.emitted = True
        return facts


def _object(value: Any) -> dict | None:
    return value if isinstance(value, dict) else None


def _log_entries(value: Any) -> list:
    """(line, time_ns) pairs as a file kept them (JSON lists); anything else is no entry."""
    if not isinstance(value, list):
        return []
    return [(entry[0], entry[1]) for entry in value if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and type(entry[1]) is int]


# Powertools' Logger, the structured logger most Lambda functions use, writes its own JSON lines
# through its own handler, not awslambdaric's formatter: they name their request as
# `function_request_id` (set by inject_lambda_context), never as `requestId`. Without it, on
# Managed Instances every such line went without its invocation.
_POWERTOOLS_REQUEST = "function_request_id"


def _may_tell_an_error(line: str) -> bool:
    """Whether a line may be the runtime's report of an error, always read: awslambdaric's
    `[ERROR] Type: message`, or its JSON record, which names `errorType`. Told from the text:
    in the JSON log format every line starts with "{", and parsing each (4 us for 1 KB) made a
    flood's lines cost the companion 8 times a Text flood's."""
    return line.startswith("[ERROR] ") or (line.startswith("{") and '"errorType"' in line)


def _least_chars(record: Any) -> int | None:
    """The fewest characters a function record's line has (a JSON-format object's: its message,
    less than the line it is written back as), for a flood's drop; None for one that may be
    the runtime's report of an error, always read."""
    if type(record) is str:
        return None if _may_tell_an_error(record) else len(record)
    if type(record) is dict and "errorType" not in record:
        message = record.get("message")
        return len(message) if type(message) is str else 0
    return None


def _json_request_field(line: str) -> Any:
    """The request a JSON log line names (see _request_named); None when it names none."""
    if not line.startswith("{") or ('"requestId"' not in line and f'"{_POWERTOOLS_REQUEST}"' not in line):
        return None
    try:
        return _request_named(json.loads(line))
    except (ValueError, RecursionError):
        return None


def _request_named(record: Any) -> Any:
    """Powertools' `function_request_id` of a JSON log record when it is a request id (it names
    the Lambda request only: a line holding both may name an upstream API's `requestId`), else
    its `requestId` (awslambdaric's formatter writes it: "" for what is logged while the module
    loads); None when it has neither."""
    if not isinstance(record, dict):
        return None
    named = record.get(_POWERTOOLS_REQUEST)
    if isinstance(named, str) and named:
        return named
    return record.get("requestId")


def _text_format_request(line: str) -> str | None:
    """The request a line of awslambdaric's Text log format names (`[LEVEL]\t<time>\t<request
    id>\t<message>`); None for another line."""
    if not line.startswith("["):
        return None
    fields = line[:_TEXT_FORMAT_HEAD].split("\t", 3)
    return fields[2] or None if len(fields) == 4 and fields[0].endswith("]") else None


_TEXT_FORMAT_HEAD = 128  # a level, a time and a request id fit with room to spare


def _named_request(rid: Any) -> str | None:
    # awslambdaric writes `"requestId": ""` for what is logged while the module loads: no request.
    return rid if isinstance(rid, str) and rid else None


_AS_AWSLAMBDARIC_WRITES = json.JSONEncoder(ensure_ascii=False, default=str)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def parse_time_ns(stamp: Any) -> int | None:
    """Telemetry API times ("2022-10-12T00:00:15.064Z") as epoch nanoseconds."""
    if not isinstance(stamp, str):
        return None
    return _parse_stamp(stamp)


def _event_time_ns(event: dict) -> int:
    """A telemetry event's time, or now when it has none that can be read."""
    return parse_time_ns(event.get("time")) or time.time_ns()


@functools.lru_cache(maxsize=8)
def _parse_stamp(stamp: str) -> int | None:
    # Cached: the times have millisecond precision, and a function that logs much prints
    # dozens of lines in each millisecond.
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)  # Lambda's clock is UTC
    # In whole microseconds: timestamp() is a float, a microsecond off for some instants.
    time_ns = (moment - _EPOCH) // _MICROSECOND * 1000
    # OTLP's times are unsigned 64-bit: one outside them could not be encoded, nor its batch.
    return time_ns if 0 <= time_ns < 1 << 64 else None


def _warn_unreporting() -> None:
    """Once: the function's process reports nothing, and each invocation is only a drop count.
    Most often the layer was added without the variable that boots it in that process."""
    import os

    from lambdawrap.shared.log import get_logger

    wrapper = os.environ.get("AWS_LAMBDA_EXEC_WRAPPER", "").strip()
    if wrapper:
        why = f"AWS_LAMBDA_EXEC_WRAPPER={wrapper} did not start lambdawrap in it, the handler could not be wrapped, or its records could not reach this process (its log says so if lambdawrap started there)"
    else:
        why = "AWS_LAMBDA_EXEC_WRAPPER is not set; set it to the layer's wrapper.sh (/opt/wrapper.sh in Lambda)"
    get_logger().warning("lambdawrap: the function's process reported none of its first %d invocations (each counted as record_missing, none exported): %s", UNREPORTING_AFTER, why)


class Correlator:
    """Fed by the companion's event loop (records, telemetry, INVOKE events); the lock keeps it
    consistent when a test or another thread calls it."""

    def __init__(self, sink: Sink, on_problem: Callable[[str, str], None], socket_path: str = "", on_init_failed: Callable[[], None] | None = None, on_finished: Callable[[str], None] | None = None, managed_instances: bool = False, sampled: Callable[[int, Any], bool] | None = None, proactive_init_ms: int = 10000, scrub: Callable[[Any], Any] | None = None, platform_parents: bool = True) -> None:
        self.sink = sink
        # When this environment began (its companion's process start, clock ticks since boot;
        # set by the companion): a process started before it was an earlier environment's.
        self.environment_start: int | None = None
        # Whether an invocation the function's process told nothing of joins the platform's
        # sampled X-Ray trace, as that process would have (not with OTEL_PROPAGATORS=none).
        self._platform_parents = platform_parents
        # The declared secrets' scrubber (see secret_scrub), for what is read here and not
        # handed in: the in-flight slots. Telemetry and records come scrubbed.
        self._scrub = scrub or (lambda value: value)
        self._proactive_init_ms = proactive_init_ms
        # The sampler's decision (shared.sampling) for ids made here, for an invocation the
        # function's process told nothing of: its lines' flags say it, and its span follows it.
        self._sampled = sampled or (lambda trace_id, parent: True)
        # Lambda Managed Instances: no INVOKE events (platform.start announces each request),
        # no runtimeDone (platform.report tells the outcome), and requests run concurrently, so
        # a log line belongs to the request its JSON names, never to "the current one".
        self._managed_instances = managed_instances
        self._on_problem = on_problem  # (reason, what): counted as a drop, logged once
        self._socket_path = socket_path  # where the function's in-flight slots are
        self._on_init_failed = on_init_failed or (lambda: None)
        self._on_finished = on_finished or (lambda request_id: None)
        self._lock = threading.RLock()
        self._open: dict[str, Invocation] = {}
        self._held_chars = 0  # of the lines held for every invocation in _open
        self._finished: collections.OrderedDict[str, Invocation] = collections.OrderedDict()
        # Lambda retries an asynchronous invocation that failed under the same request id, maybe
        # in the same environment: each attempt is an invocation of its own. An attempt a retry
        # replaced, while the platform's word on it (runtimeDone, report) and the log lines
        # before that word are still to come: they are the old attempt's, as they come first.
        self._superseded: dict[str, Invocation] = {}
        # A record of an id already accounted for, with other span ids: a retry's, come before
        # its INVOKE (or one no INVOKE follows); it is the retry's once the INVOKE comes.
        self._early_attempts: dict[str, Invocation] = {}
        # From platform.start to the next request's (or the next init): a line printed after
        # the handler returned (a background thread's, a logging queue's) belongs to the request
        # it was printed in, as awslambdaric's own JSON requestId says.
        self._current_rid: str | None = None
        self.function_arn = ""
        self.init = InitFacts()
        self._created_ns = time.time_ns()  # the companion starts early in its environment's init
        self._in_init = False
        self._first: Invocation | None = None  # this environment's first invocation, once finished
        # The environment's first invocation was accounted for without its record (no ids to
        # join): the init span is a trace of its own, not a child of the next one.
        self._first_missing = False
        self._first_invoked: Invocation | None = None  # on demand: the INVOKE that came first
        # The init span's (trace, span) the function's process chose for what its handler's
        # module did as it loaded (handler.init_trace): the calls it made, their spans its
        # children. Kept here, not on self.init: its spans may come before platform.initStart.
        self._init_ids: tuple | None = None
        self._finished_any = False  # an invocation of this environment is accounted for
        self._init_report_failed = False  # the initReport's own status is not a success
        self.handed_over = 0  # invocations and held lines handed to the sink: what a timed export is for
        self._invoked = False  # an INVOKE came: the next is not the environment's first
        # The request the platform handed over last (on demand): the one under way when a reset
        # comes, which a timeout or a crash ends (any earlier one had its runtime ask for more).
        self._last_invoked: str | None = None
        self._forgotten: collections.OrderedDict = collections.OrderedDict()  # see KEEP_FORGOTTEN_IDS
        self._retried_span_ids: collections.OrderedDict = collections.OrderedDict()  # a forgotten request's, once retried
        self._held_unread: collections.OrderedDict = collections.OrderedDict()  # made from a slot whose process lived on (_count_held)
        self._ran_on: collections.OrderedDict = collections.OrderedDict()  # (request id, span id) of those on Managed Instances: None
        self.records_seen = 0
        self._missing_before_any_record = 0
        self._contradiction_logged = False
        self._telemetry_lost = False  # the platform told of events it dropped (platform.logsDropped)
        self._start_may_be_lost = False  # ... since the last platform.start (on demand)
        self._last_line_ns = 0  # the time given to the last log line (see _line_time_ns)
        # Managed Instances: workers whose init failed, told by their processes, until the
        # environment's own init is known to have succeeded (see _settle_workers_failed).
        self._workers_failed: list[InitFacts] = []

    # sources -------------------------------------------------------------------

    def _lookup(self, rid: str) -> Invocation:
        """The invocation with this id, finished or open; a new open one if unknown.
        The sources race, so any of them may be the first to mention an id."""
        inv = self._finished.get(rid)
        if inv is None:
            inv = self._open.get(rid)
            if inv is None:
                if len(self._open) >= MAX_OPEN:
                    self._forget_unannounced()
                inv = self._open[rid] = Invocation(rid)
        return inv

    def _forget_unannounced(self) -> None:
        # Ids the platform never sent an INVOKE for (forged records or telemetry): bounded. The
        # lines they held go out as they are, without a span's ids (or are counted if they cannot).
        # Those holding the function's record go last, and only past half the bound: on Managed
        # Instances a request's record often comes before its platform.start. What such a record
        # carries goes too, as a record after its grace does: the invocation itself is the
        # platform's word's to account for (record_missing), if it ever comes.
        unannounced = [rid for rid, inv in self._open.items() if inv.invoke_event is None]
        reported = [rid for rid in unannounced if self._open[rid].end is not None]
        doomed = [rid for rid in unannounced if self._open[rid].end is None] + reported[: max(0, len(reported) - MAX_OPEN // 2)]
        for rid in doomed[: MAX_OPEN // 2]:
            inv = self._open.pop(rid)
            if inv.end is not None:
                record_extras(self.sink, inv.end)
            self._hand_over(inv, None)

    def _retried(self, rid: str) -> Invocation:
        """A new attempt of an id already accounted for: open, the earlier one kept aside while
        the platform's word on it is still to come (see _superseded)."""
        old = self._finished.pop(rid)
        if not old.reported:
            self._set_aside(old)
        elif old.end is None and old.start is not None and old.start.get("span_id") is not None:
            # Its record may still come (on Managed Instances a timed-out handler runs on):
            # known by its span, it is not the retry's, which would take its verdict.
            self._retried_span_ids[rid] = old.start["span_id"]
            while len(self._retried_span_ids) > KEEP_FINISHED:
                self._retried_span_ids.popitem(last=False)
        inv = self._open[rid] = self._early_attempts.pop(rid, None) or Invocation(rid)
        return inv

    def _retried_unfinished(self, rid: str) -> Invocation:
        """A new attempt of an id whose earlier attempt is announced but not finished: its
        platform word held back by the freeze that followed it (an asynchronous invocation
        retried into the same environment a minute later). The earlier one waits aside for that
        word, which comes first, and ends as it says."""
        self._set_aside(self._open.pop(rid))
        inv = self._open[rid] = self._early_attempts.pop(rid, None) or Invocation(rid)
        return inv

    def _set_aside(self, inv: Invocation) -> None:
        """Keep `inv`, an attempt a retry replaced, aside for the platform's word still to come.
        An attempt set aside before it (this is a third) had that word come in the attempt
        between, or never (lost in a flood's logsDropped): it is accounted for now, as at the
        end, not replaced uncounted; so is one past the bound."""
        earlier = self._superseded.get(inv.request_id)
        if earlier is not None and not earlier.finished:
            self._end_aside(earlier)
        self._superseded.pop(inv.request_id, None)
        self._superseded[inv.request_id] = inv
        while len(self._superseded) > KEEP_FINISHED:  # words that never came: bounded
            oldest = next(iter(self._superseded.values()))
            if not oldest.finished:
                self._end_aside(oldest)
            del self._superseded[oldest.request_id]

    def _end_aside(self, inv: Invocation) -> None:
        """An attempt set aside whose word will not come: from its record, else counted, how
        it ended unknown."""
        if inv.end is not None:
            self._finish_without_word(inv)
        else:
            self._account_missing(inv)

    def on_invoke(self, event: dict) -> Invocation:
        rid = str(event.get("requestId", ""))
        with self._lock:
            # Only an announced invocation is ever finished: announced again, it is a retry.
            if rid in self._finished:
                inv = self._retried(rid)
            elif rid in self._open and self._open[rid].invoke_event is not None:
                inv = self._retried_unfinished(rid)
            else:
                inv = self._lookup(rid)
            inv.invoke_event = event
            if not self._managed_instances:
                if not self._invoked and self.init.initialization_type == SNAP_START:
                    # This process is a copy restored from the snapshot, maybe one of many at
                    # once: each would otherwise make the same ids from the state it holds, and
                    # export under the same instance id (a resource built in the snapshot).
                    reseed_ids()
                    resource = sys.modules.get("lambdawrap.companion.resource")
                    if resource is not None:
                        resource.renew_instance_ids()
                inv.first_invoke, self._invoked = not self._invoked, True
                if inv.first_invoke:
                    self._first_invoked = inv
                self._last_invoked = rid
                if self._start_may_be_lost:
                    self._catch_up()
            self._maybe_finish(inv)  # the record and the outcome may have come first
            return inv

    def on_record(self, record: dict) -> None:
        """A record from the function's process (see shared.records)."""
        dropped = records.count(record.get("dropped"))
        if dropped:
            # Counted whatever record carries it: the channel reports its drops with the next
            # record that goes through, user spans ended outside an invocation included.
            self.sink.dropped("handler_channel", dropped)
        if record.get("type") == records.SPANS:
            if self._init_ids is None and not self._managed_instances:
                self._init_ids = records.init_span_ids(record)
            self.sink.user_spans(record.get("spans") or [])
            too_large = records.count(record.get("spans_too_large"))
            if too_large:
                self.sink.dropped("record_too_large", too_large)
            return
        if record.get("type") == records.POSTED:
            self._on_posted(record)
            return
        if record.get("type") == records.INIT_FAILED:
            self._on_worker_init_failed(record)
            return
        if record.get("type") != records.INVOCATION:
            return
        problem = records.invocation_problem(record)
        if problem is not None:
            # Not from our handler side (which only sends well-formed records): it must not
            # finish, or spoil, the real invocation of the same id.
            self._malformed("malformed_record", f"an invocation record with {problem}")
            return
        if self._init_ids is None and not self._managed_instances:
            # The first invocation's: also where no span of the init came before it (a call
            # of the init that is still under way, or whose span is held for later).
            self._init_ids = records.init_span_ids(record["start"])
        end = record["end"]
        internal_errors = records.count(end.get("internal_errors"))
        if internal_errors:
            self.sink.internal_errors("function", internal_errors)
        self._on_invocation(record, end)

    def _on_invocation(self, record: dict, end: dict) -> None:
        with self._lock:
            self.records_seen += 1
            replaced = self._superseded.get(record["start"]["request_id"])
            if replaced is not None and self._replaced_attempt_s(replaced, record["start"]):
                # The record of an attempt a retry replaced: its first, late, is its own (made
                # without it, from its slot, what only the record carries still counts); else
                # a duplicate.
                if replaced.end is None and not replaced.late_record:
                    if replaced.finished:
                        replaced.late_record = True
                        record_extras(self.sink, end)
                    else:
                        replaced.start, replaced.end, replaced.record_at = record["start"], end, time.monotonic()
                        self._take_posted(replaced, end)
                        self._maybe_finish(replaced)
                return
            rid, span_id = record["start"]["request_id"], record["start"].get("span_id")
            if span_id is not None and (rid, span_id) in self._ran_on:
                # The record of a request made from its slot at its timeout, whose handler ran
                # on: what only the record carries counts, however many requests came between
                # (counted by request, it was forgotten past 2,048 and made a second span).
                del self._ran_on[(rid, span_id)]
                self._held_unread.pop((rid, span_id), None)  # its spans came: none to count as held
                known = self._finished.get(rid)
                if known is not None and (known.start or {}).get("span_id") != span_id:
                    known = None  # a later attempt's, under the same id
                if known is None or not (known.late_record or known.end is not None):
                    if known is not None:
                        known.late_record = True
                    record_extras(self.sink, end)
                return
            if self._late_for_forgotten(rid, span_id):
                # The record of a request accounted for and forgotten since (a timed-out
                # handler that ran on past 2,048 later requests): taken for a new request's, it
                # made a second span once announced. What only the record carries still counts.
                record_extras(self.sink, end)
                return
            inv = self._lookup(record["start"]["request_id"])
            if (inv.finished or inv.end is not None) and inv.start is not None and record["start"].get("span_id") != inv.start.get("span_id"):
                # A retry's record, before its INVOKE: the attempt before it, finished or still
                # waiting for the platform's word (held by the freeze), stays as it is (its late
                # words and lines are its own) until the INVOKE comes.
                early = self._early_attempts.setdefault(inv.request_id, Invocation(inv.request_id))
                while len(self._early_attempts) > KEEP_FINISHED:  # an INVOKE that never comes
                    del self._early_attempts[next(iter(self._early_attempts))]
                if early.end is None:
                    early.start, early.end, early.record_at = record["start"], end, time.monotonic()
                    self._take_posted(early, end)
                return
            if inv.finished and inv.end is None and not inv.late_record:
                # Made without its record (on Managed Instances a timed-out handler runs on and
                # reports later), or counted as record_missing (its grace ended first): the span,
                # or the count, stands; what only the record carries still counts.
                # Its end is left as it was: while the export pipeline loads, the span is still
                # to be made from this invocation (an end put here made it a span of no
                # duration, its exception "None").
                inv.late_record = True
                record_extras(self.sink, end)
                return
            if inv.finished or inv.end is not None:
                return  # a duplicate: each invocation is accounted for once
            inv.start, inv.end, inv.record_at = record["start"], end, time.monotonic()
            self._take_posted(inv, end)
            self._maybe_finish(inv)

    def _replaced_attempt_s(self, replaced: Invocation, start: dict) -> bool:
        """Whether a record whose start is `start` is the attempt's a retry replaced: by its span
        where that attempt's start is known (its record, or its slot), else by its time. Its
        handler started before the retry was announced (RETRY_STARTED_NS), a retry's within
        moments of it."""
        if replaced.start is not None:
            return replaced.start.get("span_id") == start.get("span_id")
        retry = self._open.get(replaced.request_id) or self._finished.get(replaced.request_id)
        started = start.get("start_ns")
        return retry is not None and type(started) is int and started < retry.invoked_at_ns - RETRY_STARTED_NS

    def _take_posted(self, inv: Invocation, end: dict) -> None:
        """The runtime's post, which the record of this attempt waited for (`end.posted`, its
        form checked with the record's): as a `posted` record would tell it."""
        if "posted" in end and not self._managed_instances:
            self._posted(inv, end["posted"], end.get("posted_size"))

    def _posted(self, inv: Invocation, outcome: str, size: object) -> None:
        """Called for an unfinished invocation only."""
        if _past_deadline(inv.invoke_event):
            # Posted once the caller had its timeout (a handler that answered at the
            # platform's SIGTERM): not what the caller got; the platform's word is.
            return
        inv.posted = outcome
        inv.refused_bytes = size if outcome == "too_large" else None

    def _on_posted(self, record: dict) -> None:
        if self._managed_instances:
            return  # that runtime's client carries on after a failed post: a post proves nothing
        problem = records.posted_problem(record)
        if problem is not None:
            self._malformed("malformed_record", f"a posted record with {problem}")
            return
        with self._lock:
            inv = self._lookup(record["request_id"])
            if not inv.finished:
                self._posted(inv, record["outcome"], record.get("size"))
                self._maybe_finish(inv)

    def on_telemetry(self, batch: list) -> None:
        with self._lock:
            flooded = self._flooded()
            sink_tells = True
            for event in batch:
                if not isinstance(event, dict):
                    self._malformed("malformed_telemetry", "a telemetry event that is not an object")
                    continue
                if flooded and event.get("type") == "function":
                    try:
                        # A flood: the line could only be dropped, and is counted as add() would
                        # count it, without the rest of the way (half the CPU per line).
                        chars = self._droppable_chars(event.get("record"))
                        if chars is not None and self.sink.dropped_log_line(chars):
                            continue
                    except Exception:  # noqa: BLE001 - a sink that cannot tell: the whole way, as before
                        flooded = sink_tells = False
                try:
                    self._on_event(event)
                except Exception:  # noqa: BLE001 - one bad event must not cost the rest of the batch
                    self._malformed("malformed_telemetry", "a telemetry event with invalid fields")
                    flooded = sink_tells = False
                # A plain line changes nothing of the flood; any other event may end it (a JSON
                # record names its request, which may evict the current one, see _lookup): read
                # again, a dict lookup, as a JSON flood's every line is one.
                if not (flooded and event.get("type") == "function" and type(event.get("record")) is str):
                    flooded = sink_tells and self._flooded()

    def _droppable_chars(self, record: Any) -> int | None:
        """_least_chars of a line in a flood, or None where it goes the whole way: a JSON
        record naming another request still open, whose lines are held for it, is kept there."""
        chars = _least_chars(record)
        if chars is not None and type(record) is dict:
            named = _named_request(_request_named(record))
            if named is not None and named != self._current_rid and named in self._open:
                return None
        return chars

    def _flooded(self) -> bool:
        """Whether the current invocation's log lines now go to the sink's buffer (its own
        pending lines are all taken), where a full buffer drops them: a flood in one invocation."""
        if self._managed_instances or self._current_rid is None:
            return False
        inv = self._open.get(self._current_rid)
        return inv is not None and inv.streamed_ids is not None

    def _malformed(self, reason: str, what: str) -> None:
        """Input that made no sense: counted as a drop, logged once per reason."""
        self._on_problem(reason, f"ignoring {what}")

    def _on_event(self, event: dict) -> None:
        kind = event.get("type")
        record = event.get("record")
        if kind == "function":
            time_ns = self._line_time_ns(event)
            if isinstance(record, str):
                if self._managed_instances:
                    named = _json_request_field(record)
                    self._log(record, time_ns, _named_request(named), named == "")
                else:
                    # A logging line of awslambdaric's Text format names its request: it goes
                    # there where a lost platform.start left the current request behind.
                    self._log(record, time_ns, self._line_request(_text_format_request(record)))
            else:  # the JSON log format, delivered as an object
                # Written back as awslambdaric's formatter writes it (its separators, text
                # left unescaped): the closest there is to the line the function printed.
                line = _AS_AWSLAMBDARIC_WRITES.encode(record)
                named = _request_named(record)
                self._log(line, time_ns, self._line_request(_named_request(named)), self._managed_instances and named == "")
            return
        if kind == "platform.logsDropped":
            self._telemetry_lost = self._start_may_be_lost = True
            if not self._managed_instances:
                self._catch_up()
            if isinstance(record, dict):
                self.sink.dropped("platform_logs_dropped", records.count(record.get("droppedRecords")) or 1)
            return
        if not isinstance(record, dict):
            return
        rid = record.get("requestId")
        if kind == "platform.initStart":
            if self.init.emitted:
                return  # this environment's one init, told late: its span went without it
            # With initReport's where this was lost, the only platform event whose time is read:
            # a span's times come from records.
            self.init = InitFacts(start_ns=_event_time_ns(event), phase=str(record.get("phase", "init")))
            self.init.initialization_type = str(record.get("initializationType") or "")
            self._in_init = True
            self._current_rid = None
        elif kind == "platform.initRuntimeDone":
            self._learn_init_phase(record)
            self.init.runtime_done = True
            self.init.status = str(record.get("status", "success"))
            self.init.error_type = record.get("errorType") if isinstance(record.get("errorType"), str) else None
            if self.init.failed:
                self._on_init_failed()
        elif kind == "platform.initReport":
            self._learn_init_phase(record)
            self.init.duration_ms = platform_duration_ms((record.get("metrics") or {}).get("durationMs"))
            self.init.reported = True
            self._init_report_failed = record.get("status") not in (None, "success")
            if self._init_report_failed and not self.init.failed and not self.init.emitted:
                # Managed Instances' report names a failure of its own (an init that ran out of
                # time, an extension's) where the runtime's was told done, or was not told.
                self.init.status = str(record["status"])
                error_type = record.get("errorType")
                self.init.error_type = error_type if isinstance(error_type, str) and error_type else self.init.extension_error
                self._on_init_failed()
            if self.init.start_ns is None:
                # Its start lost (with a batch the platform told it dropped): the span goes from
                # the report's time less its duration, else from the companion's own start,
                # early in that init, rather than not at all.
                reported_ns = parse_time_ns(event.get("time"))
                duration_ms = self.init.duration_ms
                self.init.start_ns = reported_ns - int(duration_ms * 1e6) if reported_ns is not None and duration_ms is not None else self._created_ns
            self._maybe_init_span()
        elif kind == "platform.extension" and self._in_init:
            error_type = record.get("errorType")
            if isinstance(error_type, str) and error_type and self.init.extension_error is None:
                self.init.extension_error = error_type
        elif kind == "platform.start" and rid:
            self._in_init = False
            if self._late_for_forgotten(str(rid)):
                return  # late, of a request accounted for: its report is ignored too
            waiting = self._open.get(str(rid)) if self._managed_instances else None
            if waiting is not None and waiting.end is None and waiting.failed_on_platform and waiting.invoke_event is not None:
                # A retry of a request that failed and whose record was still awaited (a timeout,
                # _record_may_follow): that attempt is made now from what is known, and the
                # retry is its own.
                self._record_overdue(waiting)
            if self._managed_instances and str(rid) in self._finished and self._finished[str(rid)].unheard and str(rid) not in self._early_attempts:
                # Late, not lost: the request it stands for was made without it.
                self._finished[str(rid)].unheard = False
                return
            if self._managed_instances and str(rid) in self._finished:
                # There the announcement: only an invocation announced is ever finished.
                inv = self._retried(str(rid))
            else:
                inv = self._lookup(str(rid))
            if not self._managed_instances:
                self._current_rid = str(rid)
                self._start_may_be_lost = False
            elif inv.invoke_event is None:
                # The announcement there is: what INVOKE carries elsewhere.
                self.function_arn = str(record.get("functionArn") or self.function_arn)
                self._announce(inv, record)
                # It began at the start's time, not when the companion read it (a batch comes
                # later, seconds under load): a span made without the function's start (a crash,
                # a timeout with its slot empty) starts there.
                started_ns = parse_time_ns(event.get("time"))
                if started_ns is not None and started_ns < inv.invoked_at_ns:
                    inv.invoked_at_ns = started_ns
                self._maybe_finish(inv)
        elif kind in ("platform.runtimeDone", "platform.report") and rid:
            rid = str(rid)
            if rid in self._forgotten:
                # The late word on a request accounted for and forgotten since (2,048 requests
                # finished after it, a second or two of a busy instance): taken for a new
                # request's, it made a second span, or a span and a record_missing.
                return
            inv = self._superseded.get(rid)
            if inv is None or (kind == "platform.runtimeDone" and inv.outcome is not None):
                inv = self._lookup(rid)
            if kind == "platform.report":
                measured = inv.reported
                inv.reported = True
                inv.unheard = False  # a start, late or lost, comes before its report
                if self._managed_instances and inv.invoke_event is None:
                    # Its start was lost with its batch (a platform that drops what a lagging
                    # subscriber has not taken): the report announces it as well, and tells
                    # when it began: its time (the response's, on Managed Instances) less its
                    # duration, not when the companion read it.
                    self._announce(inv, record)
                    reported_ns, metrics = parse_time_ns(event.get("time")), record.get("metrics")
                    duration_ms = platform_duration_ms(metrics.get("durationMs")) if isinstance(metrics, dict) else None
                    if reported_ns is not None and duration_ms is not None:
                        inv.invoked_at_ns = reported_ns - int(duration_ms * 1e6)
                # Billed duration and memory are the platform's, once per invocation it
                # announced: not a delivery it retried, nor a report for an id never invoked.
                if not measured and inv.invoke_event is not None:
                    self.sink.report(record, trigger_of(inv))
            if inv.finished and inv.outcome is None and inv.verdict_known:
                self._after_posted_verdict(inv, kind, record)
            elif inv.outcome is None or kind == "platform.runtimeDone":
                inv.outcome, inv.outcome_at = record, time.monotonic()
                self._maybe_finish(inv)
                if not inv.finished and inv.end is None and self._superseded.get(rid) is inv:
                    # An attempt a retry replaced: its record, if it sent one, came before the
                    # retry began; it will not come now.
                    self._record_overdue(inv)
            if kind == "platform.report" and inv.finished and self._superseded.get(rid) is inv:
                del self._superseded[rid]  # its last word: the retry's report is the retry's

    def _line_time_ns(self, event: dict) -> int:
        """A log line's time: the platform's, in whole milliseconds, where the lines of one
        millisecond (a multi-line print, an indented JSON dump, a traceback printed whole) would
        all have the same, and a backend that orders records by time shows them in any order.
        Each such line takes a nanosecond more than the one before it, in the order the platform
        delivered them, never leaving its millisecond."""
        time_ns = _event_time_ns(event)
        if time_ns <= self._last_line_ns < time_ns + 999_999:
            time_ns = self._last_line_ns + 1
        self._last_line_ns = time_ns
        return time_ns

    def _announce(self, inv: Invocation, record: dict | None = None) -> None:
        """Managed Instances: the platform's telemetry tells of the request (INVOKE elsewhere),
        with its trace header where `record` (platform.start, report) has one."""
        inv.invoke_event = {"requestId": inv.request_id, "invokedFunctionArn": self.function_arn}
        if record is not None and isinstance(record.get("tracing"), dict):
            inv.invoke_event["tracing"] = record["tracing"]

    def _after_posted_verdict(self, inv: Invocation, kind: str, record: dict) -> None:
        """The platform's first word on an invocation already made from the runtime's post: the
        span stands as made (a sink that builds it later must see what the live one saw); the
        word only tells that the invocation's log lines have all come, as they precede it."""
        inv.outcome, inv.outcome_at = record, time.monotonic()  # later words are not news
        status = record.get("status")
        succeeded = status in (None, "success")
        if succeeded != (inv.posted == "result") and not self._contradiction_logged:
            self._contradiction_logged = True
            from lambdawrap.shared.log import get_logger

            get_logger().warning("lambdawrap: the platform reported %s for an invocation whose response the runtime had posted; its span says what the post said (logged once)", status)
        self._on_finished(inv.request_id)  # a flush that waits for the log lines may go now

    def _on_worker_init_failed(self, record: dict) -> None:
        problem = records.init_failed_problem(record)
        if problem is not None:
            self._malformed("malformed_record", f"an init.failed record with {problem}")
            return
        if not self._managed_instances:
            return  # on demand, a failed init ends the environment and the platform tells it
        error = record["error"]
        facts = InitFacts(start_ns=record["start_ns"])
        facts.duration_ms = (record["end_ns"] - record["start_ns"]) / 1e6
        facts.status = "error"
        facts.error_type = error["type"]
        facts.error = {"type": error["type"], "message": error.get("message", ""), "stack": error.get("stack", "")}
        facts.initialization_type = MANAGED_INSTANCES
        facts.cold = False  # no caller waits for a worker: the environment's init has ended, or fails
        facts.worker = facts.reported = True
        with self._lock:
            if len(self._workers_failed) >= MAX_WORKERS:
                self._malformed("malformed_record", "init.failed records past the most workers an environment has")
                return
            self._workers_failed.append(facts)
            self._settle_workers_failed()

    def _settle_workers_failed(self, ending: bool = False) -> None:
        """The workers' failed inits, each its span and its init error, once the environment's
        init is known to have succeeded: its report came (the last word, which on Managed
        Instances may name a failure of its own), it served an invocation, or it ends without
        saying it failed. Where the environment's init failed, that was the first worker's
        failure, which the runtime reported, or one all the workers shared: its span tells it,
        once."""
        if not self._workers_failed or not (self.init.failed or self.init.reported or self._served() or ending):
            return
        failed, self._workers_failed = self._workers_failed, []
        if self.init.failed:
            return
        for facts in failed:
            facts.emitted = True
            self.sink.init_span(facts, None)

    def _learn_init_phase(self, record: dict) -> None:
        # Told by initRuntimeDone and initReport too: an initStart lost (a flood's logsDropped)
        # must not leave the run again inside an invocation taken for the init phase's.
        phase = record.get("phase")
        if isinstance(phase, str) and phase and not self.init.emitted:
            self.init.phase = phase

    def init_failed_unseen(self, start_ns: int, error: dict | None = None) -> None:
        """Init failed before the companion could subscribe to the Telemetry API: its facts
        will never come, but it is accounted for, as a failed init of unknown cause (or of the
        `error` known here)."""
        with self._lock:
            # The phase known so far: "invoke" where an init ran before in this sandbox (this
            # one is its run again inside the first invocation, whose failure is the caller's).
            self.init = InitFacts(start_ns=start_ns, phase=self.init.phase)
            self.init.status = "failure"
            self.init.error = error or {"type": UNSEEN_INIT_ERROR, "message": "init failed before lambdawrap could subscribe to the Telemetry API; the runtime's error is in the function's log", "stack": ""}
            self.init.error_type = error["type"] if error else None
            self.init.reported = True
        self._on_init_failed()

    def _catch_up(self) -> None:
        """On demand, events lost (platform.logsDropped) since the last platform.start: the
        request announced last may have lost its own, and its printed lines would go to the one
        before it. It becomes the current one once that one's runtimeDone came: none of that
        one's lines but those printed after its response are still to come."""
        rid, current_rid = self._last_invoked, self._current_rid
        if rid is None or current_rid is None or rid == current_rid:
            return
        current = self._open.get(current_rid)
        if current is None or current.outcome is not None:
            self._current_rid = rid
            self._start_may_be_lost = False

    def _line_request(self, named: str | None) -> str | None:
        """The request a JSON log line belongs to: the one it names (a background thread's
        line names the request it was logged in), where that is a request of this function.
        A user's own JSON may name an upstream `requestId`: on demand the line then belongs to
        the request under way; on Managed Instances, where there is none, it is held under the
        id it names until the platform announces that request, and goes without one if it
        never does (release_unannounced)."""
        if self._managed_instances:
            return named
        if named is not None and (named in self._finished or named in self._open):
            return named
        return self._current_rid

    def _log(self, line: str, time_ns: int, rid: str | None, loading: bool = False) -> None:
        """`loading`: a worker's line of Managed Instances logged while its module loaded (the
        JSON format's `"requestId": ""`). Each worker loads it, and init ends when the first
        asks for work: another's lines may come after the first invocation, or the init span."""
        if rid is None:
            if (self._in_init or loading) and not self.init.emitted:
                # Read as it comes, as an invocation's: the runtime's report of a failed init
                # comes last, maybe past the lines held.
                if _may_tell_an_error(line):
                    self.init.error_line = runtime_error([line]) or self.init.error_line
                if len(self.init.logs) < MAX_PENDING_LOGS and self.init.held_chars + len(line) <= MAX_PENDING_CHARS:
                    self.init.logs.append((line, time_ns))  # printed while the module loaded
                    self.init.held_chars += len(line)
                    return
                self.sink.log_line(line, time_ns, self.init.late_ids, None)
                return
            self.sink.log_line(line, time_ns, self._init_line_ids() if loading else None, None)
            return
        inv = self._finished.get(rid)
        old = self._superseded.get(rid)
        if old is not None and old.outcome is None:
            inv = old  # a line of the attempt a retry replaced: they come before its runtimeDone
        if inv is not None:
            self.sink.log_line(line, time_ns, inv.ids, rid)
            return
        inv = self._lookup(rid)
        if _may_tell_an_error(line):
            inv.error_line = runtime_error([line]) or inv.error_line
        if inv.streamed_ids is None and len(inv.logs) < MAX_PENDING_LOGS and inv.held_chars + len(line) <= MAX_PENDING_CHARS and self._held_chars + len(line) <= MAX_HELD_CHARS:
            inv.logs.append((line, time_ns))
            inv.held_chars += len(line)
            self._held_chars += len(line)
            return
        if inv.streamed_ids is None or (inv.streamed_ids is False and inv.start is not None):
            # Asked again once its record has come: its ids are known from then on.
            inv.streamed_ids = self._ids_before_the_end(inv) or False
            if inv.streamed_ids:
                self._hand_over(inv, inv.streamed_ids)  # the held lines first, in the order they came
        # Without ids only when none can be known before the end (no record, no in-flight slot).
        self.sink.log_line(line, time_ns, inv.streamed_ids or None, rid)

    def _hand_over(self, inv: Invocation, ids: tuple | None) -> None:
        """The lines held for `inv` go to the sink, with `ids` (None: without a span's)."""
        self.handed_over += 1
        for line, time_ns in inv.logs:
            self.sink.log_line(line, time_ns, ids, inv.request_id)
        inv.logs.clear()
        self._held_chars -= inv.held_chars
        inv.held_chars = 0

    def _init_line_ids(self) -> list | None:
        """The ids of an init line that comes once the init span has gone: those Sink.init_span
        gave the lines held for it (the init span's, or the first invocation's where there is no
        init span), which it fills in as it makes the span, maybe later (the export pipeline not
        ready yet). The init span may be a trace of its own (the first invocation's record
        lost), and the first invocation known later another's."""
        return None if not self.init.emitted or self.init.failed else self.init.late_ids

    def _ids_before_the_end(self, inv: Invocation) -> tuple | None:
        """The span's ids while the invocation is still under way: its record's, or those its
        in-flight slot holds (the same: the slot holds the record's start part)."""
        if inv.start is not None:
            return inv.ids
        # Kept where the slot is empty now: read at the timeout, and cleared since by a handler
        # that returned at the reset's SIGTERM, its lines still coming.
        inv.slot_start = self._inflight_start(inv.request_id) or inv.slot_start
        if inv.slot_start is None:
            return None
        return _start_ids(inv.slot_start)

    # completion ----------------------------------------------------------------

    def _maybe_finish(self, inv: Invocation) -> None:
        if inv.finished or inv.invoke_event is None:
            return  # only ids the platform announced become spans (forged ones never are)
        if inv.end is not None and (inv.outcome is not None or inv.verdict_known):
            self._finish(inv)
        elif inv.end is None and inv.failed_on_platform and (inv.process_ended or not self.expects_records()):
            # Timed out or crashed: the function could not report. What it knew before the
            # call is in its in-flight slot, if its process got that far.
            if self._answered_at_sigterm(inv):
                # Its slot read now, as it would have been (and at the deadline, see
                # read_slot_at_deadline): a handler that returns at the SIGTERM clears it, and
                # its record may yet be lost.
                self._keep_slot(inv)
                return  # its record, or the reset's SHUTDOWN (finish_unreported), makes it
            start = self._last_start(inv)
            if start is None and self._record_may_follow(inv):
                return  # finish_overdue makes it once the grace is over, if no record came
            inv.start = start
            self._finish(inv)

    def read_slot_at_deadline(self, rid: str) -> None:
        """Keep what the in-flight slot of `rid`, still under way at its deadline, holds: the
        reset's SIGTERM comes next, and a handler that returns at it clears its slot, maybe
        before the platform's word on the timeout is read here, and its record may be lost."""
        with self._lock:
            inv = self._open.get(rid)
            if inv is not None and not inv.finished and inv.end is None:
                self._keep_slot(inv)

    def _keep_slot(self, inv: Invocation) -> None:
        if self._superseded.get(inv.request_id) is not inv:  # the id's slot is the retry's
            inv.slot_start = self._inflight_start(inv.request_id) or inv.slot_start

    def _answered_at_sigterm(self, inv: Invocation) -> bool:
        """Whether a timed-out invocation's record may still come outside Managed Instances: the
        reset's SIGTERM reaches a Python 3.12+ handler, which may return or raise at it, its
        record sent after the platform's word was (a telemetry batch read before the socket).
        The reset's SHUTDOWN comes only once the runtime is stopped, and what the function sent
        before it is read first: made then, the span has what the handler said, and is exported
        as soon as it would have been (a reset leaves no invoke phase to export in before it)."""
        return not self._managed_instances and self.expects_records() and platform_failure(inv.outcome)[1] == "timeout"

    def _record_may_follow(self, inv: Invocation) -> bool:
        """Whether a timed-out request's record may still come, its slot empty: on Managed
        Instances a timeout leaves the worker running, and a handler that returned as its
        deadline came cleared its slot and sent its record, maybe not read yet (a worker's first
        record comes on a new connection). Within the grace only: made from the platform's
        word then, its ids made up, the record would only add its spans."""
        return (
            self._managed_instances
            and self.expects_records()
            and platform_failure(inv.outcome)[1] == "timeout"
            and inv.outcome_at is not None
            and time.monotonic() - inv.outcome_at <= RECORD_GRACE_S
        )

    def _last_start(self, inv: Invocation) -> dict | None:
        """What the function's process knew before the call, its record never having come: its
        in-flight slot, or the slot read earlier for the ids of a flood of lines (since gone)."""
        if self._superseded.get(inv.request_id) is inv:
            return inv.slot_start  # the id's slot holds the retry's start now
        return self._inflight_start(inv.request_id) or inv.slot_start

    def _inflight_start(self, rid: str) -> dict | None:
        start = inflight.read(self._socket_path, rid) if self._socket_path else None
        if start is not None:
            start = self._scrub(start)
        if start is not None and records.start_problem(start) is not None:
            self._malformed("malformed_record", "an in-flight slot that is not a start record")
            return None
        return start

    def _finish(self, inv: Invocation) -> None:
        if inv.finished:
            return
        inv.finished = True
        inv.finished_at_ns = time.time_ns()
        # An attempt a retry replaced is no longer the open one of its id, nor becomes the
        # finished one: the retry is (see _retried_unfinished).
        aside = self._superseded.get(inv.request_id) is inv
        if not aside:
            self._open.pop(inv.request_id, None)
        if inv.end is None and inv.start is not None:
            self._count_held(inv)
        if inv.start is None:
            # Ended before the function's process could say which trace it joined (before the
            # handler was called): the platform's sampled X-Ray context, which that process
            # would have joined for an event carrying no context of its own.
            parent = platform_parent(inv.invoke_event) if self._platform_parents else None
            trace_id = parent.trace_id if parent is not None else new_trace_id()
            inv.synthetic = (f"{trace_id:032x}", f"{new_span_id():016x}", self._sampled(trace_id, parent))
        if not inv.invoke_event and self.function_arn:
            inv.invoke_event = {"invokedFunctionArn": self.function_arn}
        if inv.first_invoke is not None:
            inv.environment_cold = inv.first_invoke and self._environment_cold(inv)
            inv.init_in_invoke = inv.first_invoke and self.init.phase == "invoke"
        if self.sink.invocation(inv) is True:
            # Its span is made: what the record said beyond how it ended goes (an exception's
            # message and stack, the function's spans: up to 256 KB), or the 2,048 kept for late
            # lines would hold hundreds of MB of the memory the function shares. Not while the
            # span waits for the export pipeline (the sink says None): it is made from this.
            inv.end = _settled(inv.end)
            inv.error_line = None
        if not aside:
            self._remember(inv)
        self._finished_any = True
        if self._first is None and not self._first_missing:
            if inv.first_invoke is not False:
                # The first invoked, not the first to finish (that one may wait for its word):
                # on Managed Instances, where no INVOKE says which is first, the first to finish.
                self._first = inv
            elif self._first_invoked is None or (self._first_invoked.end is None and self._first_invoked.outcome is None):
                # The first invoked has told nothing (its record and the platform's word lost):
                # the init span stands alone, as for one counted without its record, rather
                # than wait for the environment's end.
                self._first_missing = True
                self.init.cold = self._environment_cold(self._first_invoked or inv)
        self._maybe_init_span()
        self._hand_over(inv, inv.ids)
        self._on_finished(inv.request_id)

    def _count_held(self, inv: Invocation) -> None:
        """Made from its in-flight slot (a timeout, a crash): the spans its process held for the
        record it never sent are lost with that process. Read once the process is gone; until
        then (the platform's word came before its end) its record may still come, with them."""
        if inflight.HELD_SPANS not in inv.start:
            self._held_unread[(inv.request_id, inv.start.get("span_id"))] = inv
            while len(self._held_unread) > KEEP_FINISHED:
                self._held_unread.popitem(last=False)
            if self._managed_instances:
                # Its worker runs on (Managed Instances do not stop a timed-out handler), and its
                # record may come after more requests than are remembered: known by its span.
                # By attempt: a retry under the same id may time out and run on too.
                self._ran_on[(inv.request_id, inv.start.get("span_id"))] = None
                while len(self._ran_on) > KEEP_FORGOTTEN_IDS:
                    self._ran_on.popitem(last=False)
            return
        self._drop_held(inv, inv.start)

    def _drop_held(self, inv: Invocation, gone: dict) -> None:
        """What a process gone without its record had, as inflight.read() gave it with its start
        (`gone`, scrubbed), taken out of it: the spans it held for the record and those of the
        calls under way its slot had no place for, counted, and the calls it had under way,
        whose spans end with it."""
        count = records.count(gone.pop(inflight.HELD_SPANS)) + records.count(gone.pop(inflight.UNKEPT_CALLS, None))
        if count:
            self.sink.dropped("process_ended", count)
        cut = cut_short(inv, gone.pop(inflight.OPEN_CALLS, None))
        if cut:
            self.sink.user_spans(cut)

    def _count_held_of_the_gone(self) -> None:
        """The spans held by processes that have ended since their invocation was made from
        their slot, unless their record came meanwhile, or their slot is gone or holds another."""
        slots = None  # every slot read once, not once for each invocation (workers²)
        for key, inv in list(self._held_unread.items()):
            rid, span_id = key
            if inv.late_record or not self._socket_path or not isinstance(span_id, str):
                start = None
            else:
                if slots is None:
                    slots = inflight.held(self._socket_path)
                start = inflight.read(self._socket_path, rid, span_id, slots)
            if start is None:
                del self._held_unread[key]
            elif inflight.HELD_SPANS in start:
                # Its process ended holding its slot: its record will never come.
                del self._held_unread[key]
                self._ran_on.pop(key, None)
                self._drop_held(inv, self._scrub(start))

    def _environment_cold(self, inv: Invocation) -> bool:
        """Whether the environment's first invocation was its cold start, as the platform's
        words tell: not after an init of provisioned concurrency, nor when it came more than
        proactive_init_ms after init ended. The function's process tells it better from its
        first call of the handler (span_building.cold_start), but an invocation that never
        reached the handler (an event the runtime could not decode, a handler that is not
        callable) is the cold start all the same, and the handler's first call then is not.
        An init in the invoke phase (after a reset, or one that failed in its own phase) is one
        the caller waited for, whatever the environment's kind."""
        if self.init.phase == "invoke":
            return True
        if self.init.initialization_type == "provisioned-concurrency":
            return False
        if self.init.initialization_type == SNAP_START:
            return True  # init ran when the version was published: a restore is this cold start
        if self.init.start_ns is None or self.init.duration_ms is None:
            return True
        init_end_ns = self.init.start_ns + int(self.init.duration_ms * 1_000_000)
        return inv.invoked_at_ns - init_end_ns <= self._proactive_init_ms * 1_000_000

    def _finish_without_word(self, inv: Invocation) -> None:
        """Finish from the record when the platform's word will not come in time. A response
        the runtime posted as an error after the handler returned (it could not be serialized)
        failed all the same, of a cause only the platform names."""
        if inv.outcome is None and inv.posted == "error" and inv.end is not None and inv.end.get("error") is None:
            inv.outcome = {"requestId": inv.request_id, "status": "error", "errorType": "Runtime.Unknown"}
        self._finish(inv)

    def _late_for_forgotten(self, rid: str, span_id: object = None) -> bool:
        """Whether word of `rid` is late word of a request accounted for and forgotten since:
        a record (`span_id`: its span's) of that request's span, or, where that span is not
        known, any word within RETRY_AFTER_S of its end. Otherwise it is an asynchronous retry
        under the same id (Lambda waits a minute at least), its own: forgotten no more."""
        if span_id is not None and self._retried_span_ids.get(rid) == span_id:
            return True  # the first attempt's, after its retry began
        forgotten = self._forgotten.get(rid)
        if forgotten is None:
            return False
        finished_ns, own_span_id = forgotten
        if span_id is not None and own_span_id is not None:
            late = span_id == own_span_id
        else:
            late = time.time_ns() - finished_ns < RETRY_AFTER_S * 1e9
        if not late:
            del self._forgotten[rid]
            if own_span_id is not None:
                # The first attempt's record may still come (a timed-out handler that ran on,
                # the very reason for the retry): known by its span, it is not the retry's.
                self._retried_span_ids[rid] = own_span_id
                while len(self._retried_span_ids) > KEEP_FINISHED:
                    self._retried_span_ids.popitem(last=False)
        return late

    def _remember(self, inv: Invocation) -> None:
        self._finished[inv.request_id] = inv  # a late record is then a duplicate, ignored
        while len(self._finished) > KEEP_FINISHED:
            forgotten, finished = self._finished.popitem(last=False)
            if self._managed_instances:
                ids = finished.start and _start_ids(finished.start)
                self._forgotten[forgotten] = (finished.finished_at_ns or time.time_ns(), ids[1] if ids else None)
                if len(self._forgotten) > KEEP_FORGOTTEN_IDS:
                    self._forgotten.popitem(last=False)

    def _maybe_init_span(self, ending: bool = False) -> None:
        # The init span joins the trace of the first invocation after init, once both the
        # init facts (initReport) and that invocation are known, whichever comes last. A
        # failed init has no invocation: it is a trace of its own, made when the environment
        # ends (a failed init always ends it), when the runtime's error line has surely come. So
        # is a successful init no invocation followed (provisioned concurrency, a proactive init,
        # spun down unused), at the end: else neither it nor its lines were accounted for.
        if not ending:
            self._settle_workers_failed()
        if self.init.emitted or not self.init.reported:
            return
        if ending and not self._served() and not self.init.runtime_done and not self.init.failed:
            self._failed_before_the_runtime()
        if self.init.failed:
            if not ending:
                return
            if self.init.status != "timeout":
                # Not for an init that ran out of time: an error line it printed before it hung
                # (one it logged and went on from) is not why it failed.
                self.init.error = self.init.error_line or runtime_error([line for line, _ in self.init.logs]) or self.init.error
        elif not ending and not self._served():
            return
        self.init.emitted = True
        self.init.own_trace = self._init_ids
        self.init.span_id = self._init_ids[1] if self._init_ids is not None else f"{new_span_id():016x}"
        self.sink.init_span(self.init, None if self.init.failed else self._first)

    def _init_calls_cut_short(self) -> None:
        """The calls the handler's module had under way when its process ended before any
        invocation (an init that timed out while it waited on one), from the process's
        in-flight slot: ended where the init was, failed with its error, the init span's
        children. Where the init did not fail (an environment spun down unused), counted."""
        if self._managed_instances or not self._socket_path:
            return
        for mark, calls, unkept in inflight.init_calls(self._socket_path):
            started = mark.get("process_start")
            # An earlier environment's (its companion died before it took them): not this init's.
            ours = self.init.failed and not (type(started) is int and type(self.environment_start) is int and started < self.environment_start)
            lost = unkept + (0 if ours else len(calls))
            if lost:
                self.sink.dropped("process_ended", lost)
            if not calls or not ours:
                continue
            if self._init_ids is None:
                self._init_ids = records.init_span_ids(mark)
            self.sink.user_spans(init_cut_short(self.init, calls))

    def _served(self) -> bool:
        """Whether an invocation of this environment has finished (its record lost or not)."""
        return self._first is not None or self._first_missing

    def _init_unreported(self) -> None:
        # A reset ended this environment before its init was reported, and before any
        # invocation: the init failed (a healthy one reports before its first invocation, and
        # only a spindown ends an environment that served none). Its report did not come in
        # time (a platform that does not flush before SHUTDOWN): the span goes without its
        # duration, with what is known of the cause.
        if not self.init.failed:
            self.init.status = "failure"
            self.init.error = {"type": UNSEEN_INIT_ERROR, "message": "init failed and its report did not reach lambdawrap before the environment ended; the runtime's error is in the function's log", "stack": ""}
        if self.init.start_ns is None:
            self.init.start_ns = time.time_ns()
        self.init.reported = True
        self._on_init_failed()

    def _init_served_unreported(self) -> None:
        # This environment served an invocation, or spun down, so its init succeeded; its report
        # (and maybe its start, or its initRuntimeDone) did not come before the environment
        # ended (a platform that does not flush before SHUTDOWN, a flood's logsDropped). The
        # span goes without its duration, from its start if it came, else from the companion's
        # own start, early in that init.
        if self.init.start_ns is None:
            self.init.start_ns = self._created_ns
        self.init.runtime_done = True
        self.init.reported = True

    def _failed_before_the_runtime(self) -> None:
        # The platform sends initRuntimeDone only once it has started the runtime: an init
        # reported without it, and never followed by an invocation, failed before (an extension
        # that crashed, could not be launched or never registered).
        self.init.status = "failure"
        self.init.error_type = self.init.extension_error
        message = "init failed before the runtime started (an extension failed); the platform's log names it"
        self.init.error = {"type": self.init.extension_error or UNSEEN_INIT_ERROR, "message": message, "stack": ""}
        self._on_init_failed()

    def settled(self, rid: str, record_grace_s: float | None = None, finished: bool = False) -> bool | float | None:
        """For EventLoop.run_until: True once the function's record for `rid` came or the
        invocation is accounted for (with `finished`: once it is accounted for).

        With `record_grace_s`, an invocation whose platform outcome came (success) but whose
        record is still missing that long after is accounted for as `record_missing` at once:
        the invoke phase is not held open until the deadline for a record that was lost. Until
        then the answer is the time (monotonic) at which to ask again."""
        with self._lock:
            inv = self._finished.get(rid) or self._open.get(rid)
            if inv is not None and (inv.finished or (inv.end is not None and not finished)):
                return True
            if record_grace_s is not None and inv is not None and inv.end is None and inv.outcome_at is not None:
                if inv.failed_on_platform and self._answered_at_sigterm(inv):
                    return None  # timed out: its record may follow the SIGTERM (_maybe_finish)
                grace_ends = inv.outcome_at + record_grace_s
                if time.monotonic() >= grace_ends:
                    self._record_overdue(inv)
                    return True
                return grace_ends
            return None

    def expects_records(self) -> bool:
        """Whether an invocation's end should wait for the function's record (see
        UNREPORTING_AFTER); its accounting is the same either way."""
        return self.records_seen > 0 or self._missing_before_any_record < UNREPORTING_AFTER

    def awaiting_platform_words(self) -> bool:
        """Whether an invocation still lacks the platform's word (and the log lines, which
        precede it), made from the runtime's post or still open, or the last one its report:
        SHUTDOWN waits for them, briefly (a timed-out handler's last lines come before its
        word)."""
        with self._lock:
            if any(inv.outcome is None and inv.verdict_known for inv in (*self._finished.values(), *self._superseded.values())):
                return True
            if not self.init.reported and not self._served() and not any(inv.outcome is not None and inv.invoke_event is not None for inv in self._open.values()):
                # An init that ended in a reset: its report is on its way, as may be its error
                # line. Not where an invocation ran (a timed-out one waits open for SHUTDOWN).
                return True
            # Managed Instances: a record sent before the response was posted is no verdict.
            # Elsewhere an invocation announced without a word yet: its word (a response that
            # could not be serialized, an out-of-memory end) was held by the freeze, and the
            # thaw for SHUTDOWN may deliver it now; Lambda does not promise it came before.
            if any(inv.outcome is None and inv.invoke_event is not None and (inv.end is not None or not self._managed_instances) for inv in self._open.values()):
                return True
            # The last invocation's report: emitted once every extension had asked for its next
            # event (the environment frozen then), it comes at the thaw for SHUTDOWN at best,
            # and its billed time and memory are in no other word. Not an earlier one's: its
            # report lost, every SHUTDOWN would wait for it.
            last = (self._finished.get(self._last_invoked) or self._open.get(self._last_invoked)) if self._last_invoked is not None else None
            return last is not None and not last.reported

    def init_unreported(self) -> bool:
        """Whether this environment's init has not been reported yet (no initReport, no span):
        its span joins the first invocation's trace once it is."""
        with self._lock:
            return not (self.init.reported or self.init.emitted)

    def serving_first(self) -> bool:
        """Whether no invocation has finished in this environment yet."""
        with self._lock:
            return not (self._served() or self._finished_any)

    def platform_reported(self, rid: str) -> bool:
        """Whether the platform's word on `rid` came (runtimeDone, or the report without it), or
        the invocation was accounted for without one; its log lines come before that word."""
        with self._lock:
            inv = self._finished.get(rid) or self._open.get(rid)
            return inv is not None and (inv.outcome_at is not None or (inv.finished and inv.end is None))

    def _account_missing(self, inv: Invocation) -> None:
        """An invocation that ended well but whose record never came: counted, once."""
        if self.records_seen == 0:
            self._missing_before_any_record += 1
            if self._missing_before_any_record == UNREPORTING_AFTER:
                _warn_unreporting()
        inv.finished = True
        self._finished_any = True
        if self._superseded.get(inv.request_id) is not inv:
            self._open.pop(inv.request_id, None)
            self._remember(inv)
        self.sink.dropped("record_missing")
        self._hand_over(inv, None)
        if inv.first_invoke is not False and self._first is None and not self._first_missing:
            # The first to finish (on Managed Instances too, where no INVOKE says which is first)
            self._first_missing = True
            self.init.cold = self._environment_cold(inv)
            self._maybe_init_span()

    def paused(self, seconds: float) -> None:
        """The environment waited `seconds` for its next event (frozen, on Lambda): the platform's
        word on an invocation whose record came is delivered only once it runs again, so its
        wait counts the time it ran, not the pause."""
        with self._lock:
            for inv in self._open.values():
                if inv.record_at is not None and inv.outcome is None:
                    inv.record_at += seconds

    def finish_overdue(self, now: float | None = None) -> None:
        """Invocations whose record came long ago but whose platform outcome never did, and
        (where no INVOKE loop waits for them: Managed Instances, a function that does not
        report) those whose record is still missing after the grace: counted if they ended
        well, made from the platform's word if not (a Managed Instances timeout included)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            def word_overdue(inv: Invocation) -> bool:  # its record came long ago, the platform's word not
                return inv.end is not None and inv.record_at is not None and now - inv.record_at > self._outcome_wait_s(inv.end)

            self._announce_unheard(word_overdue)
            for inv in [i for i in (*self._open.values(), *self._superseded.values()) if i.invoke_event is not None and not i.finished and word_overdue(i)]:
                self._finish_without_word(inv)
            self._release_unannounced(held_since_ns=time.time_ns() - int(OUTCOME_WAIT_S * 1e9))
            for inv in [i for i in self._open.values() if i.invoke_event is not None and i.end is None and i.outcome_at is not None and (not i.process_ended or self._managed_instances) and now - i.outcome_at > RECORD_GRACE_S]:
                self._record_overdue(inv)
            self._count_held_of_the_gone()

    def _record_overdue(self, inv: Invocation) -> None:
        """Its record still missing after the grace: an invocation that ended well is counted;
        one the runtime answered with an error is made from what the platform and the in-flight
        slot tell (the runtime may have answered before calling the handler: an event it could
        not decode)."""
        if inv.failed_on_platform:
            inv.start = self._last_start(inv)
            self._finish(inv)
        else:
            self._account_missing(inv)

    def _announce_unheard(self, overdue: Callable[[Invocation], bool]) -> None:
        """Managed Instances: a request the function reported of whose start and report the
        platform told nothing, `overdue` (both would have come by then), where the platform told
        of events it dropped: both were lost with their batches (counted as the platform told,
        platform_logs_dropped). Elsewhere the INVOKE, which nothing drops, announces each
        request; there the record is all that is left, and its span goes without the platform's
        word rather than not at all. Without a word of loss, a record never announced is no
        request's (a call of the handler outside any invocation), and stays no span."""
        if self._managed_instances and self._telemetry_lost:
            for inv in [i for i in self._open.values() if i.invoke_event is None and i.end is not None and overdue(i)]:
                self._announce(inv)
                inv.unheard = True

    def _outcome_wait_s(self, end: dict) -> float:
        if not self._managed_instances:
            return OUTCOME_WAIT_S
        remaining_ms = platform_number(end.get("remaining_ms"))
        return (LONGEST_TIMEOUT_S if remaining_ms is None else max(0.0, remaining_ms) / 1000) + OUTCOME_WAIT_S

    def _release_unannounced(self, held_since_ns: int | None = None) -> None:
        """Lines held under a request id the platform has not announced go on without a span's
        ids (those held since `held_since_ns` or earlier; all without it): a user's JSON naming
        a request of its own (an upstream `requestId`)."""
        for inv in [i for i in self._open.values() if i.invoke_event is None and i.end is None and i.logs and (held_since_ns is None or i.invoked_at_ns <= held_since_ns)]:
            self._hand_over(inv, None)
            if inv.start is None and inv.outcome is None:
                self._open.pop(inv.request_id, None)

    def finish_unreported(self, reason: str) -> int:
        """At SHUTDOWN: each announced invocation is accounted for now: from its record, as an
        error span (it timed out or crashed), or, if it ended well, as a dropped record."""
        with self._lock:
            self._announce_unheard(lambda inv: True)  # nothing more will come
            # An attempt a retry replaced ended before the retry began: from its record, else
            # counted, how it ended unknown.
            replaced = [inv for inv in self._superseded.values() if not inv.finished]
            for inv in replaced:
                self._end_aside(inv)
            open_ = [inv for inv in self._open.values() if inv.invoke_event is not None and not inv.finished]
            for inv in open_:
                if inv.end is not None:
                    if inv.outcome is None and inv.posted is None and reason in ("timeout", "failure") and inv.request_id == self._last_invoked:
                        # Under way when its environment timed out or failed, nothing posted for
                        # it that this process heard of: its caller got the platform's error, as
                        # the platform's word, late, would say (a handler that ended the runtime,
                        # an exit or a timeout while its response was serialized). Its record
                        # tells only how the handler ended.
                        inv.outcome = _unreported_outcome(inv, reason)
                    self._finish_without_word(inv)
                elif (inv.outcome is not None and not inv.failed_on_platform) or (inv.outcome is None and (reason == "spindown" or self._ended_before_the_reset(inv))):
                    # A spindown follows an invocation that ended (a failure resets the
                    # environment instead), and so did one before the invocation the reset
                    # ended: without its record or the platform's word, how it ended is
                    # unknown, and no crash or timeout is made up for it; but an error the
                    # runtime posted for it.
                    if inv.outcome is None and inv.posted == "error":
                        inv.start = self._last_start(inv)
                        inv.outcome = {"requestId": inv.request_id, "status": "error", "errorType": "Runtime.Unknown"}
                        self._finish(inv)
                    else:
                        self._account_missing(inv)
                else:
                    inv.start = self._last_start(inv)
                    if inv.outcome is None:
                        inv.outcome = _unreported_outcome(inv, reason)
                    self._finish(inv)
            self._release_unannounced()
            self._count_held_of_the_gone()  # the runtime is stopped before SHUTDOWN comes
            if not self.init.reported and not self._served() and reason != "spindown":
                self._init_unreported()
            elif not self.init.reported and (self._served() or self.init.start_ns is not None):
                # Served, or spun down unused (a proactive init, provisioned concurrency): a
                # spindown ends a healthy environment only, so the init succeeded.
                self._init_served_unreported()
            elif reason == "spindown" and self._telemetry_lost and not (self.init.failed or self._init_report_failed or self.init.extension_error):
                # A spindown ends a healthy environment only: its runtime started, and the word
                # that said so (initRuntimeDone) was lost with the events the platform dropped.
                self.init.runtime_done = True
            self._init_calls_cut_short()
            self._maybe_init_span(ending=True)
            self._settle_workers_failed(ending=True)
            return len(replaced) + len(open_)

    def _ended_before_the_reset(self, inv: Invocation) -> bool:
        """Whether `inv` came before the invocation a reset (a timeout, a failure) ended: on
        demand one runs at a time, so it had ended (its words lost in a flood's logsDropped).
        On Managed Instances several run at once, and the reset ends them all."""
        return not self._managed_instances and self._last_invoked is not None and inv.request_id != self._last_invoked


def platform_failure(outcome: dict) -> tuple:
    """(error type, failure reason) of a failed invocation, in the platform's words."""
    status_text = str(outcome.get("status") or "failure")
    error_type = str(outcome.get("errorType") or ("Sandbox.Timedout" if status_text == "timeout" else "Runtime.ExitError"))
    reason = {"timeout": "timeout", "error": "crash", "failure": "crash"}.get(status_text, status_text)
    if error_type == "Runtime.OutOfMemory":
        reason = "out_of_memory"
    elif status_text == "error" and error_type not in _CRASH_ERRORS and not error_type.startswith("Extension."):
        # The runtime answered an error itself, before or around the handler (e.g. an event
        # it could not decode, or the handler's exception it posted): the process did not die.
        reason = "runtime_error"
    return error_type, reason


def platform_end_ns(inv: Invocation, reason: str) -> int:
    """Where the platform ended the invocation: its start and the platform's duration, else
    when it was made; for a timeout, its deadline if that came first."""
    duration_ms = platform_duration_ms(((inv.outcome or {}).get("metrics") or {}).get("durationMs"))
    start_ns = int((inv.start or {}).get("start_ns") or inv.invoked_at_ns)
    if duration_ms is not None:
        end_ns = start_ns + int(duration_ms * 1_000_000)
    else:
        end_ns = inv.finished_at_ns or time.time_ns()
    deadline_ms = platform_number((inv.invoke_event or {}).get("deadlineMs"))
    if reason == "timeout" and deadline_ms is not None:
        # The platform's duration counts from its start, before the handler's (late where the
        # event took long to decode), and the span was made after the kill, at the reset's
        # SHUTDOWN: the caller had its timeout at the deadline. Never before the span's start
        # (a malformed deadline).
        end_ns = max(start_ns, min(end_ns, round(deadline_ms * 1000) * 1000))
    return end_ns


def cut_short(inv: Invocation, calls: object) -> list:
    """The client spans of the outgoing calls `inv`'s process had under way when the platform
    ended it (its in-flight slot's, as they started), ended where the invocation was, failed
    with the platform's error. Not a span of them is checked here: the sink counts a malformed
    one as it counts any of the function's."""
    if not isinstance(calls, list):
        return []
    error_type, reason = platform_failure(inv.outcome or {})
    end_ns = platform_end_ns(inv, reason)
    ended = []
    for raw in calls:
        if isinstance(raw, dict) and isinstance(raw.get("attributes"), dict):
            started = raw.get("start_ns")
            # One started after the invocation's end ran on until its process was found gone (a
            # Managed Instances worker runs on past its timeout): ended then, not before it began.
            end = end_ns if type(started) is not int or started <= end_ns else max(started, time.time_ns())
            raw = dict(raw, end_ns=end, status=[2, f"under way when the platform ended the process ({error_type})"])
            raw["attributes"] = dict(raw["attributes"], **{"error.type": error_type, "lambdawrap.failure_reason": reason})
        ended.append(raw)
    return ended


def init_cut_short(init: InitFacts, calls: list) -> list:
    """The client spans of the calls a failed init's module had under way as its process ended
    (its in-flight slot's, as they started), ended where the init did, failed with its error."""
    error_type, reason = platform_failure({"status": init.status, "errorType": init.error_type})
    end_ns = init.start_ns + int((init.duration_ms or 0) * 1_000_000) if init.start_ns is not None else time.time_ns()  # the init span's end
    ended = []
    for raw in calls:
        if isinstance(raw, dict) and isinstance(raw.get("attributes"), dict):
            started = raw.get("start_ns")
            end = end_ns if type(started) is not int or started <= end_ns else started
            raw = dict(raw, end_ns=end, status=[2, f"under way when the platform ended the process ({error_type})"])
            raw["attributes"] = dict(raw["attributes"], **{"error.type": error_type, "lambdawrap.failure_reason": reason})
        ended.append(raw)
    return ended


def record_extras(sink: Sink, end: dict) -> None:
    """What an invocation's record carries besides its facts, to `sink`: the spans made during
    it, and what could not go with them."""
    sink.user_spans(end.get("spans") or [])
    for reason, count in _record_counts(end):
        sink.dropped(reason, count)


def _record_counts(end: dict) -> list:
    # Spans past the limits or the record's size, and outgoing calls whose trace context could
    # not travel (the consumer starts a trace).
    found = []
    for reason, field in (("span_limit", "spans_dropped"), ("record_too_large", "spans_too_large"), ("context_not_injected", "context_not_injected")):
        count = records.count(end.get(field))
        if count:
            found.append((reason, count))
    return found


def record_lost(end: Any, reason: str) -> list:
    """(reason, count) of what an invocation's record `end` carries that is lost with it when
    the invocation is dropped under `reason` before its span is made: the function's spans, lost
    for the same reason, and the counts the record carried, which count still."""
    if not isinstance(end, dict):
        return []
    spans = end.get("spans")
    return ([(reason, len(spans))] if isinstance(spans, list) and spans else []) + _record_counts(end)


def call_lost(name: str, first: Any, reason: str, held_lines: str | None) -> list:
    """(reason, count) of what dropping a sink call `name` under `reason` loses, from its first
    argument (an InitFacts or an Invocation, or its to_dict()): the call, or each span of a
    user_spans call; what an invocation's record carried (record_lost); and the log lines an init
    or an invocation holds, under `held_lines` (None: they are not lost with it, or nobody asked
    for them)."""
    if name == "user_spans":
        return [(reason, len(first) if isinstance(first, list) else 1)]

    def field(key: str) -> Any:
        if isinstance(first, (Invocation, InitFacts)):
            return getattr(first, key, None)
        return first.get(key) if isinstance(first, dict) else None

    lost = [(reason, 1)]
    if name == "invocation":
        lost.extend(record_lost(field("end"), reason))
    logs = field("logs") if held_lines and name in ("invocation", "init_span") else None
    if isinstance(logs, list) and logs:
        lost.append((held_lines, len(logs)))
    return lost


def _unreported_outcome(inv: Invocation, reason: str) -> dict:
    """The platform's word, as the SHUTDOWN's reason tells it, on an invocation it never spoke
    of; a timeout lasted until the INVOKE's deadline, not until the SHUTDOWN (which comes after
    the runtime's kill and the reset)."""
    outcome: dict = {"requestId": inv.request_id, "status": "timeout" if reason == "timeout" else "failure", "errorType": _reason_error(reason)}
    deadline_ms = platform_number((inv.invoke_event or {}).get("deadlineMs"))
    if reason == "timeout" and deadline_ms is not None:
        start_ns = int((inv.start or {}).get("start_ns") or inv.invoked_at_ns)
        outcome["metrics"] = {"durationMs": max(0.0, deadline_ms - start_ns / 1e6)}
    return outcome


def _reason_error(reason: str) -> str:
    return {"timeout": "Sandbox.Timedout", "failure": "Runtime.ExitError"}.get(reason, "Runtime.Unknown")


def _past_deadline(invoke_event: dict | None) -> bool:
    """Whether the invocation's deadline (its INVOKE's `deadlineMs`, epoch ms) has passed."""
    deadline_ms = platform_number((invoke_event or {}).get("deadlineMs"))
    return deadline_ms is not None and time.time() * 1000 >= deadline_ms


def platform_number(value: Any) -> float | None:
    """A number of the platform's telemetry (a duration, a memory size); None where there is
    none, or where it is not finite or beyond 2**53: a malformed record's NaN or 1e999 (JSON
    decoders take both) failed the span it was read for, and what the environment had built
    with it, where it is a missing value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -(2**53) <= value <= 2**53:
        return None
    return float(value)


def platform_duration_ms(value: Any) -> float | None:
    """A duration of the platform's telemetry, in ms; None where there is none, or where it is
    negative or over MAX_DURATION_MS: added to a start, it would end the span past what OTLP's
    timestamps hold (a malformed record's 1e15), where it is a missing value."""
    number = platform_number(value)
    return number if number is not None and 0 <= number <= MAX_DURATION_MS else None
