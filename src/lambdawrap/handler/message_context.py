"""Where a message carries the trace context of whoever created it, source by source.

Each reader takes one message (an SQS record, a Kafka record...) and returns ``(raw, is_w3c)``:
the raw context value it found (a W3C ``traceparent``, or an X-Ray header when ``is_w3c`` is
false) or ``(None, False)``. The caller parses the value and turns it into a link or a parent.

Besides the places the services define (message attributes, record headers), lambdawrap's own
producers carry W3C context inside JSON payloads as ``"_lambdawrap": {"traceparent": ...}``, and
others put a top-level ``"traceparent"`` there; both are read. A payload is a parsed dict
(EventBridge ``detail``, a Step Functions input) or text (an SQS body, an SNS message, base64
Kinesis data): text is searched only in its first and last 2 KB, so a message of any size costs
the same, at the price of missing a key buried in the middle of a large document; within a window
only the first 8 ``"traceparent"`` keys are tried, and across a batch 64 tries that find nothing
(a batch forged of such keys would otherwise cost ~10 ms per invocation; its later messages'
contexts are then not looked for).

Runs on every invocation inside the user's process: standard library only, never raises.
"""

from __future__ import annotations

from lambdawrap.handler.trace_context import collect_links, parse_traceparent
from lambdawrap.shared.own_stdlib import binascii

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Callable, Iterable, List, Optional, Tuple

    from lambdawrap.handler.trace_context import SpanContext

__all__ = [
    "base64_context",
    "batch_links",
    "follow_propagators",
    "firehose_record_context",
    "kafka_record_context",
    "kinesis_record_context",
    "mq_message_context",
    "payload_context",
    "payload_state",
    "rabbitmq_message_context",
    "sns_message_context",
    "sns_message_beside",
    "sqs_message_context",
    "text_context",
]

NONE: Tuple[Optional[str], bool] = (None, False)
_WINDOW_CHARS = 2048
# A multiple of 4, so that a window of base64 text decodes on its own (to 2,049 bytes).
_BASE64_WINDOW_CHARS = 2732
# A traceparent is 55 characters: a header value much longer than that is not one.
_MAX_HEADER_BYTES = 256
_MAX_HEADERS = 32
# A Binary message attribute beside a traceparent (tracestate, baggage) is decoded up to the
# 8,192 characters kept of such a text (trace_context.MAX_RAW_CHARS), in base64.
_BINARY_ATTRIBUTE_CHARS = 10_924
# A traceparent over 512 characters is not read (trace_context): its base64 is 684 at most.
_BINARY_TRACEPARENT_CHARS = 684
# "traceparent" keys tried in one window of text: a payload holds one, a few in a batch or list.
_MAX_KEYS_TRIED = 8
# Tries that found nothing (a "traceparent" key holding no context, a base64 window decoded for
# none) across one batch: each costs a regex match or a 2 KB decode from Python, and a batch of
# 256 forged messages cost ~10 ms per invocation (about 14 times that at 128 MB).
_MAX_BATCH_MISSES = 64
_misses_left: Optional[list] = None  # [count] while a batch is read
# Whether a message's W3C context is read for its link: OTEL_PROPAGATORS names `tracecontext`
# (`follow_propagators`). Its X-Ray header (SQS's AWSTraceHeader) is the platform's, read always.
_w3c_links = True
_pattern = None
_escaped_pattern = None


def follow_propagators(propagators: tuple) -> None:
    """Read a message's W3C context for a link only where OpenTelemetry's extraction, with
    these propagators (OTEL_PROPAGATORS), would read it: with ``tracecontext``."""
    global _w3c_links
    _w3c_links = "tracecontext" in propagators


def batch_links(records: Iterable, read: Callable[[dict], Tuple[Optional[str], bool]]) -> List[SpanContext]:
    """`collect_links` over a batch's messages, their tries that find nothing bounded together;
    a message that does carry a context gets one back (a placeholder key before its own: more
    would let a forged batch whose every message ends with a context cost what none did)."""
    global _misses_left
    left = _misses_left = [_MAX_BATCH_MISSES]
    w3c = _w3c_links

    def reading(record: dict) -> Tuple[Optional[str], bool]:
        before = left[0]
        found = read(record)
        if found[0] is not None and left[0] < before:
            left[0] += 1
        return found if w3c or not found[1] else NONE

    try:
        return collect_links(records, reading)
    finally:
        _misses_left = None


def _missed() -> bool:
    """Counts a try that found nothing; True once the batch's tries are spent."""
    left = _misses_left
    if left is None:
        return False
    left[0] -= 1
    return left[0] <= 0


def _spent() -> bool:
    left = _misses_left
    return left is not None and left[0] <= 0


def _traceparent_pattern():
    global _pattern
    if _pattern is None:
        import re  # json has already imported it: costs a dict lookup

        # "traceparent": "<value>", also in "_lambdawrap": {...} and nested objects, and as a
        # message attribute object ({"Type": "String", "Value": "<value>"}, as an SNS envelope
        # holds it).
        _pattern = re.compile(
            r'"traceparent"\s*:\s*(?:\{[^{}]{0,80}?"(?:Value|stringValue|StringValue)"\s*:\s*)?'
            r'"([0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2})"'
        )
    return _pattern


def _escaped_traceparent_pattern():
    global _escaped_pattern
    if _escaped_pattern is None:
        import re

        # lambdawrap's own carrier in a JSON document held as a string in the text, its quotes
        # escaped: an EventBridge event (its detail's "_lambdawrap") that SNS delivered to an
        # SQS queue is the envelope's Message, in the message's body. Read in an envelope's
        # Message only: elsewhere such a string is a document the message carries (a stored
        # event), not its producer's context.
        _escaped_pattern = re.compile(
            r'\\"_lambdawrap\\"\s*:\s*\{[^{}]{0,600}?\\"traceparent\\"\s*:\s*'
            r'\\"([0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2})\\"'
        )
    return _escaped_pattern


def _search(window: str) -> Optional[str]:
    if "traceparent" not in window or _spent():  # in C: most payloads stop here
        return None
    return _first_context(window, '"traceparent"', _traceparent_pattern())


def _enveloped_search(window: str) -> Optional[str]:
    if '\\"_lambdawrap\\"' not in window or _spent():
        return None
    return _first_context(window, '\\"_lambdawrap\\"', _escaped_traceparent_pattern())


def _first_context(window: str, key: str, pattern: object) -> Optional[str]:
    # Only the first keys are tried: each try costs a regex match from Python, and a forged batch
    # of bodies made of nothing but "traceparent" keys would otherwise cost tens of ms.
    start = 0
    for _ in range(_MAX_KEYS_TRIED):
        start = window.find(key, start)
        if start < 0:
            return None
        match = pattern.match(window, start)  # type: ignore[attr-defined]
        # A well-formed value that is no context (all-zero ids, version ff: a placeholder in the
        # user's document) must not hide the one after it, lambdawrap's own carrier above all.
        if match and _w3c(match.group(1)) is not None:
            return match.group(1)
        if _missed():
            return None
        start += len(key)
    return None


def text_context(text: object, enveloped: bool = False) -> Optional[str]:
    """A ``traceparent`` value written in the first or last 2 KB of a JSON text, else ``None``;
    `enveloped`: the text is an SNS envelope, whose Message may hold lambdawrap's carrier too."""
    try:
        if not isinstance(text, str):
            return None
        windows = (text,) if len(text) <= 2 * _WINDOW_CHARS else (text[:_WINDOW_CHARS], text[-_WINDOW_CHARS:])
        found = next((value for value in map(_search, windows) if value is not None), None)
        if found is None and enveloped:
            found = next((value for value in map(_enveloped_search, windows) if value is not None), None)
        return found
    except Exception:  # never let tracing break the handler
        return None


def _sns_envelope(body: object) -> bool:
    """Whether an SQS body is the envelope SNS wraps a message in (raw delivery off)."""
    if not isinstance(body, str):
        return False
    head = body[:_ENVELOPE_HEAD_CHARS]
    return '"Notification"' in head and '"Type"' in head


_ENVELOPE_HEAD_CHARS = 256  # the envelope's Type comes first


def _bytes_context(raw: bytes) -> Optional[str]:
    if b"traceparent" not in raw:
        return None
    return _search(raw.decode("latin-1"))  # never fails; the value itself is ASCII


def _base64_patterns(word: bytes) -> Tuple[str, ...]:
    """The base64 text ``word`` always encodes to, for each of its three possible offsets in the
    data (base64 encodes 3 bytes at a time): the characters that depend on its bytes only."""
    patterns = []
    for offset in range(3):
        encoded = binascii.b2a_base64(bytes(offset) + word, newline=False).decode()
        patterns.append(encoded[-(-offset * 8 // 6) : (offset + len(word)) * 8 // 6])
    return tuple(patterns)


# Searched for in the base64 text itself, so that records without context (most of them) are
# never decoded.
_TRACEPARENT_BASE64 = _base64_patterns(b"traceparent")


def _base64_window_context(window: str) -> Optional[str]:
    for pattern in _TRACEPARENT_BASE64:
        if pattern in window:
            if _spent():
                return None
            found = _bytes_context(binascii.a2b_base64(window))
            if found is None:
                _missed()
            return found
    return None


def base64_context(data: object) -> Optional[str]:
    """A ``traceparent`` value in base64-encoded JSON (Kinesis and Firehose record data),
    looking only at the first and last 2 KB of what it decodes to."""
    try:
        if not isinstance(data, str) or not data:
            return None
        if len(data) <= 2 * _BASE64_WINDOW_CHARS:
            return _base64_window_context(data)
        start = len(data) - _BASE64_WINDOW_CHARS
        start -= start % 4  # stay on a 4-character boundary counted from the start
        return _base64_window_context(data[:_BASE64_WINDOW_CHARS]) or _base64_window_context(data[start:])
    except Exception:  # not base64 (binascii.Error), or anything else: no context
        return None


def _own_carrier(payload: dict) -> Optional[dict]:
    """``_lambdawrap`` when it holds a valid ``traceparent``: an invalid one there must not hide
    a top-level one."""
    carrier = payload.get("_lambdawrap")
    if isinstance(carrier, dict):
        value = carrier.get("traceparent")
        if isinstance(value, str) and parse_traceparent(value) is not None:
            return carrier
    return None


def payload_context(payload: object) -> Optional[str]:
    """The context a parsed JSON payload carries: a valid ``_lambdawrap.traceparent``, else a
    top-level ``traceparent`` string."""
    if not isinstance(payload, dict):
        return None
    carrier = _own_carrier(payload)
    if carrier is not None:
        return carrier["traceparent"]
    value = payload.get("traceparent")
    return value if isinstance(value, str) else None


def payload_state(payload: object) -> Optional[str]:
    """The W3C ``tracestate`` beside a parsed JSON payload's context (``_lambdawrap.tracestate``,
    as lambdawrap's producers write it, when its context is the one used, and then none other;
    else a top-level ``tracestate``), as it came."""
    if not isinstance(payload, dict):
        return None
    carrier = _own_carrier(payload)
    # The carrier's context is used: only its own state goes with it. A top-level tracestate
    # came with the top-level traceparent, another trace's state when both are there.
    value = carrier.get("tracestate") if carrier is not None else payload.get("tracestate")
    return value if isinstance(value, str) else None


def sns_message_beside(record: dict) -> tuple:
    """The ``tracestate`` and ``baggage`` message attributes of an SNS message (lambdawrap's
    producers add them beside ``traceparent``), as they came; only beside a valid
    ``traceparent`` attribute, since otherwise the context is read elsewhere (the message) and
    they are not its own. ``(None, None)`` when there are none."""
    sns = record.get("Sns")
    if not isinstance(sns, dict):
        return None, None
    attributes = sns.get("MessageAttributes")
    if _w3c(_attribute_value(attributes, "Value")) is None:
        return None, None
    return _attribute_value(attributes, "Value", "tracestate"), _attribute_value(attributes, "Value", "baggage")


def _w3c(value: Optional[str]) -> Optional[str]:
    """``value`` when it is a valid ``traceparent``, else ``None``: a place holding a malformed
    one (a user's bad attribute) must not hide the context the next place holds, the
    ``AWSTraceHeader`` AWS set on an SQS message above all."""
    return value if value is not None and parse_traceparent(value) is not None else None


def _attribute_value(attributes: object, field: str, name: str = "traceparent") -> Optional[str]:
    """``attributes[name][field]`` as SQS and SNS message attributes hold it; the text of a
    Binary one (SQS ``binaryValue``, SNS ``Type: Binary``), which the event gives in base64."""
    if isinstance(attributes, dict):
        attribute = attributes.get(name)
        if isinstance(attribute, dict):
            value = attribute.get(field)
            if field == "stringValue" and value is None:
                value = attribute.get("binaryValue")
            elif attribute.get("Type") != "Binary":
                return value if isinstance(value, str) else None
            return _binary_text(value, _BINARY_TRACEPARENT_CHARS if name == "traceparent" else _BINARY_ATTRIBUTE_CHARS)
    return None


def _binary_text(value: object, most: int) -> Optional[str]:
    # SQS's binaryValue is None or base64 text; a longer one than `most` is no traceparent (nor
    # tracestate or baggage worth decoding on every invocation): anyone who may send to the
    # queue would otherwise have each message of a batch cost a decode of 8 KB.
    if not isinstance(value, str) or len(value) > most:
        return None
    try:
        return binascii.a2b_base64(value).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def sqs_message_context(record: dict) -> Tuple[Optional[str], bool]:
    """An SQS message's context: the ``traceparent`` message attribute, else one in its body
    (lambdawrap's producers, or the envelope of an SNS message delivered to the queue), else the
    ``AWSTraceHeader`` system attribute SQS sets when the sender was traced by X-Ray. Each W3C
    place counts only when it holds a valid value, and only where the W3C context is read."""
    value = None
    if _w3c_links:
        body = record.get("body")
        value = _w3c(_attribute_value(record.get("messageAttributes"), "stringValue")) or _w3c(text_context(body, _sns_envelope(body)))
    if value is not None:
        return value, True
    system = record.get("attributes")
    if isinstance(system, dict):
        value = system.get("AWSTraceHeader")
        if isinstance(value, str):
            return value, False
    return NONE


def sns_message_context(record: dict) -> Tuple[Optional[str], bool]:
    """An SNS message's context: the ``traceparent`` message attribute, else one in the message
    (each only when valid).

    SNS records delivered to Lambda carry no X-Ray header of their own (X-Ray continues SNS
    traces through the invocation's _X_AMZN_TRACE_ID instead), so only W3C context counts.
    """
    sns = record.get("Sns")
    if not isinstance(sns, dict):
        return NONE
    value = _w3c(_attribute_value(sns.get("MessageAttributes"), "Value")) or _w3c(text_context(sns.get("Message")))
    return (value, True) if value is not None else NONE


def kinesis_record_context(record: dict) -> Tuple[Optional[str], bool]:
    """A Kinesis record's context: only in its (base64) data, where a producer embedded it.
    An event source mapping nests the data under ``kinesis``; an EventBridge Pipe hands over
    flat records, the data at the top (the Pipes guide's Kinesis source sample)."""
    kinesis = record.get("kinesis")
    value = base64_context(kinesis.get("data") if isinstance(kinesis, dict) else record.get("data"))
    return (value, True) if value is not None else NONE


def firehose_record_context(record: dict) -> Tuple[Optional[str], bool]:
    """A Firehose record's context: in its (base64) data, like Kinesis."""
    value = base64_context(record.get("data"))
    return (value, True) if value is not None else NONE


def _header_text(value: object) -> Optional[str]:
    """A header value given as text, as a byte array (Kafka), or as ``{"bytes": [...]}`` (the
    AMQP strings of RabbitMQ events)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = value.get("bytes")
    if isinstance(value, list) and len(value) <= _MAX_HEADER_BYTES:
        try:
            return bytes(value).decode("latin-1")
        except (TypeError, ValueError):  # not a list of 0-255 integers
            return None
    return None


def kafka_record_context(record: dict) -> Tuple[Optional[str], bool]:
    """A Kafka record's context: its last ``traceparent`` header, a list of one-key objects
    whose values are byte arrays (``[{"traceparent": [48, 48, 45, ...]}]``). Kafka headers are
    appended to: a service that forwards a record with its headers adds its own traceparent
    after the one it received, so the last is the newest hop (Kafka's lastHeader, as
    OpenTelemetry Java reads it)."""
    headers = record.get("headers")
    found = None
    if isinstance(headers, list):
        # The last headers first, newest first; of a record with many, the first ones too.
        for header in _newest_first(headers):
            if isinstance(header, dict) and "traceparent" in header:
                found = header["traceparent"]
                break
    value = _header_text(found) if found is not None else None
    return (value, True) if value is not None else NONE


def _newest_first(headers: list) -> list:
    """Of a Kafka record's headers, those read for its context, the newest first: the last
    _MAX_HEADERS, then (of a record with more) the first ones."""
    last = headers[-_MAX_HEADERS:][::-1]
    return last if len(headers) <= _MAX_HEADERS else last + headers[: min(_MAX_HEADERS, len(headers) - _MAX_HEADERS)][::-1]


def mq_message_context(message: dict) -> Tuple[Optional[str], bool]:
    """An ActiveMQ message's context: its ``traceparent`` message property."""
    properties = message.get("properties")
    value = properties.get("traceparent") if isinstance(properties, dict) else None
    return (value, True) if isinstance(value, str) else NONE


def rabbitmq_message_context(message: dict) -> Tuple[Optional[str], bool]:
    """A RabbitMQ message's context: its ``traceparent`` AMQP header."""
    properties = message.get("basicProperties")
    headers = properties.get("headers") if isinstance(properties, dict) else None
    value = _header_text(headers.get("traceparent")) if isinstance(headers, dict) else None
    return (value, True) if value is not None else NONE
