"""The function's log lines as OpenTelemetry log records, built at export time (the buffer
holds only the line, its time and its invocation's ids: the SDK's objects are made for the
batch on its way out)."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from lambdawrap import __version__
from lambdawrap.companion.encodable_text import encodable

SCOPE = InstrumentationScope("lambdawrap", __version__)
TRUNCATED = "lambdawrap.log.truncated"  # set on a line the log buffer cut (log_buffer.MAX_LINE_CHARS)
_SEVERITIES = (("[ERROR]", SeverityNumber.ERROR), ("[WARNING]", SeverityNumber.WARN), ("[INFO]", SeverityNumber.INFO), ("[DEBUG]", SeverityNumber.DEBUG), ("[CRITICAL]", SeverityNumber.FATAL))


def log_records(entries: list, resource: Resource) -> list:
    """ReadableLogRecords for (line, time_ns, ids, request_id) entries; an entry with a fifth
    item is a line the buffer cut."""
    # One context per invocation, not per line: a batch is mostly one invocation's lines.
    contexts: dict = {}
    return [_record(entry, _context(entry[2], contexts), resource) for entry in entries]


def _context(ids: tuple | None, contexts: dict) -> object:
    if not (ids and ids[0] and ids[1]):
        return None
    key = (ids[0], ids[1])  # a tuple, or a list when carried over from an earlier environment
    context = contexts.get(key)
    if context is None:
        span_context = SpanContext(int(ids[0], 16), int(ids[1], 16), is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        context = contexts[key] = trace.set_span_in_context(NonRecordingSpan(span_context))
    return context


def _record(entry: tuple, context: object, resource: Resource) -> ReadableLogRecord:
    line, time_ns, _, request_id = entry[:4]
    severity, text = severity_of(line)
    attributes: dict = {}
    if len(entry) > 4:
        attributes[TRUNCATED] = True
    if request_id:
        attributes["faas.invocation_id"] = request_id
    record = LogRecord(timestamp=time_ns, observed_timestamp=time_ns, context=context, severity_text=text, severity_number=severity, body=encodable(line), attributes=attributes or None)
    return ReadableLogRecord(log_record=record, resource=resource, instrumentation_scope=SCOPE)


def severity_of(line: str) -> tuple:
    """The severity a runtime log line names (awslambdaric's `[LEVEL]` prefix), else INFO."""
    head = line[:10].upper()
    for text, number in _SEVERITIES:
        if head.startswith(text):
            return number, text.strip("[]")
    return SeverityNumber.INFO, "INFO"
