"""The function's log lines as OpenTelemetry log records, built at export time (the buffer
holds only the line, its time and its invocation's ids: the SDK's objects are made for the
batch on its way out).

A line in awslambdaric's Text format names its level in a `[LEVEL]` prefix. A line in its JSON
format (`AWS_LAMBDA_LOG_FORMAT=JSON`, always on Managed Instances) is a record with `level` and
`message` (a `logging` call) or `errorType`, `errorMessage` and `stackTrace` (the runtime's
report of an unhandled error): it becomes a record as the OpenTelemetry Lambda collector's
Telemetry API receiver makes one, the message as body and the level as severity, with the
record's other fields kept as attributes (the collector drops them) and its error as the
exception attributes of the semantic conventions. A line is parsed only when it looks like
such a record, at export, so a flood's dropped lines cost nothing more.
"""

from __future__ import annotations

import json
import re
import time

from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk._logs import LogRecordLimits, ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from lambdawrap import __version__
from lambdawrap.companion.encodable_text import encodable
from lambdawrap.companion.span_bounds import newest
from lambdawrap.shared.semconv import SCHEMA_URL

SCOPE = InstrumentationScope("lambdawrap", __version__, schema_url=SCHEMA_URL)  # faas.invocation_id, exception.*
TRUNCATED = "lambdawrap.log.truncated"  # set on a line the log buffer cut (log_buffer.MAX_LINE_CHARS)
# awslambdaric's text format writes the record's level name: logging's five, or one the function
# named itself (logging.addLevelName: WARN, FATAL, TRACE, NOTICE), read as the JSON format's are.
_SEVERITIES = (("[ERROR]", SeverityNumber.ERROR), ("[WARNING]", SeverityNumber.WARN), ("[INFO]", SeverityNumber.INFO), ("[DEBUG]", SeverityNumber.DEBUG), ("[CRITICAL]", SeverityNumber.FATAL), ("[NOTICE]", SeverityNumber.INFO2), ("[WARN]", SeverityNumber.WARN), ("[FATAL]", SeverityNumber.FATAL), ("[TRACE]", SeverityNumber.TRACE), ("[ALERT]", SeverityNumber.ERROR3), ("[EMERGENCY]", SeverityNumber.FATAL))
# A JSON record's level, upper-cased, as the Logs Data Model's severity numbers; awslambdaric
# writes logging's names (NOTSET for a level below DEBUG), other loggers WARN, FATAL, TRACE or
# syslog's NOTICE, ALERT and EMERGENCY (mapped as the data model maps syslog's); a level of a
# logger's own is read at INFO where the record has a message.
_LEVELS = {
    "NOTSET": SeverityNumber.UNSPECIFIED,
    "TRACE": SeverityNumber.TRACE,
    "DEBUG": SeverityNumber.DEBUG,
    "INFO": SeverityNumber.INFO,
    "NOTICE": SeverityNumber.INFO2,
    "WARN": SeverityNumber.WARN,
    "WARNING": SeverityNumber.WARN,
    "ERROR": SeverityNumber.ERROR,
    "CRITICAL": SeverityNumber.FATAL,
    "FATAL": SeverityNumber.FATAL,
    "ALERT": SeverityNumber.ERROR3,
    "EMERGENCY": SeverityNumber.FATAL,
}
_POWERTOOLS_EXCEPTION = frozenset(("exception_name", "exception"))
_MAX_DEPTH = 16  # nesting kept as OTLP maps and arrays; deeper, a value goes as its JSON text
# A record's fields become objects at export, ~100 times the memory of their text: a record is
# read whole only up to this size, or past it when it holds few values (its commas, braces and
# brackets bound them: a long message, a payload dumped as one string, costs about its text),
# and its values (attributes and what they nest) are made objects only this many times, the
# rest going as their JSON text. A batch of records (512) then stays within a few MB, as the buffer's 4 Mi
# characters do for plain lines.
MAX_READ_CHARS = 16 * 1024
_FEW_VALUES = 512
# The SDK's default attribute count limit for a log record; fields past it are not made (the
# earliest left out, and counted as dropped): a bound on memory, which a higher
# OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT does not raise.
MAX_VALUES = 128
# A record not read whole: its level, read from its head (awslambdaric writes it second, after
# the time) or among its last fields, plain values after it (structlog writes it after the
# event, a time maybe after it), not from what the record nests (a reading's "level").
_HEAD_CHARS = 512
_PLAIN_FIELDS_TO_THE_END = r'(?:\s*,\s*"[^"\\]*"\s*:\s*(?:"[^"\\]*"|[-+.\deE]+|true|false|null))*\s*}\s*$'


def _level_key(key: str) -> tuple:
    """(the level's key, the fields read, those read at a level of its own, its field in a
    record's head, its field among a record's last)."""
    field = rf'"{key}"\s*:\s*"([A-Za-z]{{1,16}})"'
    # Fields a JSON record's body, severity and time already say. Its `requestId` is left out
    # only where faas.invocation_id says it: a user's line may name another request (an
    # upstream API's), and one naming a request the platform never announced (Managed
    # Instances) has no other trace.
    read = frozenset((key, "message", "timestamp", "errorType", "errorMessage", "stackTrace"))
    return key, read, frozenset((key, "message")), re.compile(field), re.compile(field + _PLAIN_FIELDS_TO_THE_END)


# A record's level is its `level`, else its `levelname` (python-json-logger's, named after
# logging's attribute), whether it is read whole or not. A record at a level of its own may be
# no logger's (a game's): its other fields stay attributes (Powertools' exception fields are
# still read as the exception).
_LEVEL_KEYS = (_level_key("level"), _level_key("levelname"))
_INT64 = (-(2**63), 2**63 - 1)
_SAMPLED, _NOT_SAMPLED = TraceFlags(TraceFlags.SAMPLED), TraceFlags(TraceFlags.DEFAULT)


_limits: list = []  # the SDK's LogRecordLimits, read from the environment at the first record


def _bounded(attributes: dict, left_out: int = 0) -> dict:
    """`attributes` within OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT and _VALUE_LENGTH_LIMIT (or the
    OTEL_ATTRIBUTE_* ones), as the SDK's Logger keeps a record's (faas.invocation_id included):
    the earliest dropped beyond the count, texts cut to the length; the record's
    dropped_attributes_count says how many were dropped, with the `left_out` before (past
    json_record's MAX_VALUES). Within the defaults, with none left out, as they are, at no cost."""
    if not _limits:
        _limits.append(LogRecordLimits())
    count, length = _limits[0].max_log_record_attributes, _limits[0].max_log_record_attribute_length
    if not left_out and length is None and (count is None or len(attributes) <= count):
        return attributes
    # Those past the count are left out here, not by BoundedAttributes: it logs a warning for
    # each one it drops, which would be one line per field of every record.
    kept = newest(attributes, count)
    bounded = BoundedAttributes(maxlen=count, attributes=kept, immutable=False, max_value_len=length, extended_attributes=True)
    bounded.dropped += left_out + len(attributes) - len(kept)
    return bounded


def log_records(entries: list, resource: Resource) -> list:
    """ReadableLogRecords for (line, time_ns, ids, request_id) entries; an entry with a fifth
    item is a line the buffer cut."""
    # One context per invocation, not per line: a batch is mostly one invocation's lines.
    contexts: dict = {}
    # When OpenTelemetry's code observed them, as the data model has it for logs from outside
    # OpenTelemetry (the Lambda collector's receiver: as it converts them): as their batch goes.
    observed_ns = time.time_ns()
    return [_record(entry, _context(entry[2], contexts), resource, observed_ns) for entry in entries]


def _context(ids: tuple | list | None, contexts: dict) -> object:
    if not (ids and ids[0] and ids[1]):
        return None
    # A tuple, or a list when carried over from an earlier environment or filled in when the
    # init span was made (InitFacts.late_ids: empty until then); its third item, when
    # there is one, the trace's sampling decision (the record's flags say it).
    sampled = ids[2] is not False if len(ids) > 2 else True
    key = (ids[0], ids[1], sampled)
    context = contexts.get(key)
    if context is None:
        span_context = SpanContext(int(ids[0], 16), int(ids[1], 16), is_remote=False, trace_flags=_SAMPLED if sampled else _NOT_SAMPLED)
        context = contexts[key] = trace.set_span_in_context(NonRecordingSpan(span_context))
    return context


def _record(entry: tuple, context: object, resource: Resource, observed_ns: int) -> ReadableLogRecord:
    line, time_ns, _, request_id = entry[:4]
    try:
        structured = json_record(line, request_id, cut=len(entry) > 4)
    except Exception:  # noqa: BLE001 - a record that cannot be read as one goes out as its line
        structured = None
    if structured is None:
        (severity, text), body, attributes, left_out = severity_of(line), encodable(line), {}, 0
    else:
        severity, text, body, attributes, left_out = structured
    if len(entry) > 4:
        attributes[TRUNCATED] = True
    if request_id:
        attributes["faas.invocation_id"] = encodable(request_id)
    record = LogRecord(timestamp=time_ns, observed_timestamp=max(observed_ns, time_ns), context=context, severity_text=text, severity_number=severity, body=body, attributes=_bounded(attributes, left_out) if attributes or left_out else None)
    return ReadableLogRecord(log_record=record, resource=resource, instrumentation_scope=SCOPE)


def severity_of(line: str) -> tuple:
    """The severity a runtime log line names (awslambdaric's `[LEVEL]` prefix), else INFO."""
    head = line[:12].upper()
    for text, number in _SEVERITIES:
        if head.startswith(text):
            return number, text.strip("[]")
    return SeverityNumber.INFO, "INFO"


def _at_top(line: str, at: int) -> bool:
    """Whether `at` (within the head of a JSON object's text) is among the object's own keys,
    not a nested object's (structlog writes its `level` last, after the context it binds,
    which may hold a "level" of its own)."""
    depth, quoted, escaped = 0, False, False
    for char in line[:at]:
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
    return depth == 1 and not quoted


def json_record(line: str, request_id: str | None = None, cut: bool = False) -> tuple | None:
    """(severity, severity text, body, attributes, fields left out past MAX_VALUES) of a JSON
    log record with a known `level`, or a `message` at a level of its logger's own (at INFO),
    else None (`request_id`: the invocation the line is exported with). Its body is its
    `message`, or for the runtime's error report `Type: message` (the last line of Python's
    traceback); a record with neither keeps its line as body. `cut`: the buffer cut the line
    (it is no JSON any more)."""
    if not line.startswith("{") or '"level' not in line:
        return None  # the cheap test: most lines are not JSON records, and are not parsed
    whole = len(line) <= MAX_READ_CHARS or (not cut and line.count(",") + line.count("{") + line.count("[") <= _FEW_VALUES)
    record = json.loads(line) if whole else None if cut else _error_report(line)
    if record is None:
        # Not read whole: its level, with its line as body.
        found = None
        for _, _, _, first, last in _LEVEL_KEYS:
            found = next((match for match in first.finditer(line, 0, _HEAD_CHARS) if _at_top(line, match.start())), None) or last.search(line, max(0, len(line) - _HEAD_CHARS))
            if found:
                break
        severity = _LEVELS.get(found.group(1).upper()) if found else None
        return None if severity is None else (severity, found.group(1), encodable(line), {}, 0)
    if not isinstance(record, dict):
        return None
    key, read, read_of_own_level, _, _ = next((keys for keys in _LEVEL_KEYS if isinstance(record.get(keys[0]), str)), (None, None, None, None, None))
    if key is None:
        return None
    level = record[key]
    error_type, error_message, message = record.get("errorType"), record.get("errorMessage"), record.get("message")
    severity = _LEVELS.get(level.upper())
    if severity is None:
        if message is None:
            return None  # a `level` that may be no log level's (a game's, an order's): the line as written
        # A logger's level of its own (SUCCESS): kept as written, at INFO, where a severity
        # filter finds it as it did the line before.
        severity, read, error_type, error_message = SeverityNumber.INFO, read_of_own_level, None, None
    if message is None and not error_type:
        return severity, encodable(level), encodable(line), {}, 0
    fields = [(key, value) for key, value in record.items() if not (key in read or value is None or (key == "requestId" and value in ("", request_id)))]
    if not whole:
        fields = [(key, value) for key, value in fields if key not in _POWERTOOLS_EXCEPTION]
    # Past the budget, fields are left out and counted as dropped; the last ones are kept, as the
    # SDK keeps a record's last attributes past its count limit. Each field kept, and the
    # message, has its own value set aside first: a nested one (Powertools' stack_trace, five
    # values a frame; a dict message) must not leave out the fields before it. An error report
    # too long to be read whole gives its message and exception only.
    budget = [MAX_VALUES if whole else 0]
    kept = min(len(fields), max(0, budget[0] - 1))
    budget[0] -= kept
    if message is not None:
        body = _value(message, 0, budget) if whole or not isinstance(message, (dict, list)) else encodable(json.dumps(message, ensure_ascii=False))
    else:
        body = _exception_line(error_type, error_message)
    made: list = []
    for key, value in reversed(fields[len(fields) - kept :]):
        budget[0] += 1  # this field's own, set aside above
        made.append((encodable(str(key)), _value(value, 0, budget)))
    attributes = dict(reversed(made))
    left_out = len(fields) - kept
    if error_type:
        attributes["exception.type"] = encodable(str(error_type))
        if error_message is not None:
            attributes["exception.message"] = encodable(str(error_message))
        stacktrace = _stacktrace(record.get("stackTrace"), error_type, error_message)
        if stacktrace:
            attributes["exception.stacktrace"] = encodable(stacktrace)
    else:
        _powertools_exception(record, attributes)
    return severity, encodable(level), body, attributes, left_out


def _error_report(line: str) -> dict | None:
    """A record too long to be read whole, parsed for its exception only when it reports one
    (the runtime's report of an unhandled error, Powertools' logged exception): rare, and
    worth their parse; None for another record, or one that is not JSON."""
    if '"errorType"' not in line and '"exception_name"' not in line:
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and (record.get("errorType") or record.get("exception_name")) else None


def _powertools_exception(record: dict, attributes: dict) -> None:
    """Powertools' Logger writes a logged exception as `exception_name` (its class) and
    `exception` (its traceback as Python prints it): the conventions' exception.* instead."""
    name, text = record.get("exception_name"), record.get("exception")
    if not (isinstance(name, str) and name and isinstance(text, str)):
        return
    attributes.pop("exception_name", None)
    attributes.pop("exception", None)
    attributes["exception.type"] = encodable(name)
    attributes["exception.stacktrace"] = encodable(text)
    last = text.rstrip("\n").rpartition("\n")[2]  # Python's last line: "Type: message"
    written, colon, message = last.partition(": ")
    # Python writes a class not of builtins with its module (botocore.exceptions.ClientError),
    # which the conventions' exception.type is; Powertools names the class alone. An empty
    # message is written as the class alone.
    if (written == name or written.endswith("." + name)) and " " not in written:
        attributes["exception.type"] = encodable(written)
        if colon:
            attributes["exception.message"] = encodable(message)


def _exception_line(error_type: object, error_message: object) -> str:
    """Python's last traceback line: `Type: message`, or `Type` for an empty message."""
    return encodable(f"{error_type}: {error_message}" if error_message not in (None, "") else str(error_type))


def _stacktrace(frames: object, error_type: object, error_message: object) -> str | None:
    """The traceback as Python prints it, from awslambdaric's `stackTrace` (a list of formatted
    frames, each `  File ..., line N, in f\\n    code\\n`); a string is kept as it is."""
    if isinstance(frames, str):
        return frames
    if not isinstance(frames, list):
        return None
    text = "".join(str(frame) if str(frame).endswith("\n") else f"{frame}\n" for frame in frames)
    header = "Traceback (most recent call last):\n" if text else ""
    return f"{header}{text}{_exception_line(error_type, error_message)}\n"


def _value(value: object, depth: int, budget: list) -> object:
    """A JSON value as OTLP can carry it: text encodable, integers within int64, nesting and
    the values made (`budget`, spent here) bounded."""
    budget[0] -= 1
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, bool) or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if _INT64[0] <= value <= _INT64[1] else str(value)
    if depth >= _MAX_DEPTH or (isinstance(value, (list, dict)) and len(value) > budget[0]):
        return encodable(json.dumps(value, ensure_ascii=False))
    if isinstance(value, list):
        return [_value(item, depth + 1, budget) for item in value]
    if isinstance(value, dict):
        return {encodable(str(key)): _value(item, depth + 1, budget) for key, item in value.items()}
    return None  # JSON null
