"""The OpenTelemetry SDK's span and log record limits (OTEL_*_COUNT_LIMIT,
OTEL_*_VALUE_LENGTH_LIMIT), read as the SDK's SpanLimits and LogRecordLimits read them: a count
of at least 0 (as int() reads it: "+5", "1_000", blanks around), or a blank value for no limit.
The function's spans made through the OpenTelemetry API are kept within them by the bridge in
the function's process (handler/otel_bridge.py); the log records the companion makes of the
function's lines, by the SDK's LogRecordLimits, which reads its two from the companion's
environment (companion/log_records.py).

The SDK refuses any other value (a ValueError as its trace module is imported, for
OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT: the companion would export nothing). Here a bad value gets one
warning naming it and the default used, and a correction (unset) the companion makes to its own
environment before it imports the SDK."""

from __future__ import annotations

from collections import namedtuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Mapping, Optional

DEFAULT_COUNT = 128  # each count's default in the SDK; the value lengths have none
# The most a bounded list's length may be (a deque's maxlen, Py_ssize_t): past it, the bridge's
# and the SDK's lists of events and links fail as a span is made, so that none is recorded.
MAX_LIMIT = 2**63 - 1


class SpanLimits(namedtuple("SpanLimits", ("span_attributes", "event_attributes", "link_attributes", "events", "links", "attribute_length", "span_attribute_length"))):
    """Each limit, None for none."""

    __slots__ = ()


def read(env: Mapping[str, str], warn: Callable[..., None]) -> tuple:
    """(SpanLimits, corrections): corrections are ((variable, None), ...) for the values the SDK
    would refuse, each warned about once."""
    corrections: list = []

    def limit(variable: str, default: Optional[int], shown: Optional[str] = None) -> Optional[int]:
        raw = env.get(variable)
        if raw is None:
            return default
        text = raw.strip()
        if not text:
            return None  # the SDK's spelling of "no limit"
        try:
            value = int(text)
        except ValueError:
            value = -1
        if 0 <= value <= MAX_LIMIT:
            return value
        shown = shown or ("no limit" if default is None else str(default))
        warn("lambdawrap: ignoring %s=%r (expected a whole number from 0 to %d, or empty for no limit); using the default %s", variable, raw, MAX_LIMIT, shown)
        corrections.append((variable, None))
        return default

    # Unset, each count's own default holds: 128 (the variable's "no limit" is a blank value).
    any_attributes = limit("OTEL_ATTRIBUTE_COUNT_LIMIT", None, shown=str(DEFAULT_COUNT))
    attributes = DEFAULT_COUNT if any_attributes is None else any_attributes
    attribute_length = limit("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", None)
    limits = SpanLimits(
        span_attributes=limit("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", attributes),
        event_attributes=limit("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", attributes),
        link_attributes=limit("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", attributes),
        events=limit("OTEL_SPAN_EVENT_COUNT_LIMIT", DEFAULT_COUNT),
        links=limit("OTEL_SPAN_LINK_COUNT_LIMIT", DEFAULT_COUNT),
        attribute_length=attribute_length,
        span_attribute_length=limit("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", attribute_length),
    )
    # Read for their warnings and corrections only: the companion's SDK reads them itself, and
    # would refuse a bad one as it makes the first log record.
    limit("OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", attributes)
    limit("OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT", attribute_length)
    return limits, tuple(corrections)
