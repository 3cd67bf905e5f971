"""The SDK's span limits (OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT, OTEL_*_VALUE_LENGTH_LIMIT,
OTEL_SPAN_EVENT_COUNT_LIMIT, OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT) kept on the spans the companion
builds, as the SDK keeps them on a span it records: the newest attributes and events kept, the
others counted as dropped, strings (also in arrays) cut to the length. The function's own spans
come within them already (handler/otel_bridge.py); the invocation's, the init's and the client
calls' are made within them here.

Cut here rather than by BoundedAttributes alone: it logs a warning for each value it cuts and
each attribute it drops, lines in the function's log for every span."""

from __future__ import annotations

from typing import Mapping

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.util import BoundedList


def bounded_attributes(attributes: Mapping, count: int | None, length: int | None) -> Mapping:
    """`attributes` within `count` and `length` (None: no limit); themselves when they are."""
    over = count is not None and len(attributes) > count
    if not over and (length is None or not any(_longer(value, length) for value in attributes.values())):
        return attributes
    kept = newest(attributes, count)
    if length is not None:
        kept = {key: _cut(value, length) for key, value in kept.items()}
    bounded = BoundedAttributes(maxlen=count, attributes=kept, immutable=True)
    bounded.dropped = len(attributes) - len(kept)
    return bounded


def newest(attributes: Mapping, count: int | None) -> Mapping:
    """The newest `count` of `attributes` (None: all), as the SDK keeps them; themselves when
    they are within it."""
    if count is None or len(attributes) <= count:
        return attributes
    return dict(list(attributes.items())[len(attributes) - count :])


def bounded_events(events: list, count: int | None) -> list:
    """The newest `count` of `events`, the others counted as dropped."""
    if count is None or len(events) <= count:
        return events
    return BoundedList.from_seq(count, events)


def _longer(value: object, length: int) -> bool:
    if isinstance(value, str):
        return len(value) > length
    return isinstance(value, (list, tuple)) and any(isinstance(item, str) and len(item) > length for item in value)


def _cut(value: object, length: int) -> object:
    if isinstance(value, str):
        return value[:length]
    if isinstance(value, (list, tuple)):
        return tuple(item[:length] if isinstance(item, str) else item for item in value)
    return value
