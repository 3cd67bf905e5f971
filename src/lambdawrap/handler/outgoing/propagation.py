"""The trace context an outgoing call carries, in the formats OTEL_PROPAGATORS names.

HTTP requests get `traceparent` (+ `tracestate`) for `tracecontext`, `baggage` for `baggage`
(the user's OpenTelemetry baggage, when their code uses the API and set some, else the baggage
that came with the invocation's parent) and
`X-Amzn-Trace-Id` for `xray`; the client span is the parent. A header the user already set is
never overwritten.

An X-Ray header is always derived from the one already there (botocore copies the function's
`_X_AMZN_TRACE_ID` into every AWS call): only Root, Parent and Sampled are replaced, every other
field is kept, `Lineage` above all (Lambda counts recursive invocations with it and stops the
loop), and the result is cut at 256 characters, as OpenTelemetry Java does.

Payload carriers (SQS/SNS message attributes, EventBridge detail, ...) always carry the W3C
form, the one lambdawrap's consumers read.
"""

from __future__ import annotations

import sys

from lambdawrap.handler.invocation import active_invocation
from lambdawrap.handler.outgoing.recorder import ClientSpan

_LOW_96 = (1 << 96) - 1
MAX_XRAY_CHARS = 256
XRAY_HEADER = "X-Amzn-Trace-Id"
_XRAY_REPLACED = ("root", "parent", "sampled")


def traceparent(span: ClientSpan) -> str:
    return "00-%032x-%016x-%s" % (span.trace_id, span.span_id, "01" if span.sampled else "00")


def xray(span: ClientSpan, existing: str = "") -> str:
    """The X-Ray header naming `span`, keeping every field of `existing` but Root/Parent/Sampled."""
    ours = "Root=1-%08x-%024x;Parent=%016x;Sampled=%d" % (span.trace_id >> 96, span.trace_id & _LOW_96, span.span_id, 1 if span.sampled else 0)
    if existing:
        kept = [part for part in existing.split(";") if part.strip() and part.partition("=")[0].strip().lower() not in _XRAY_REPLACED]
        if kept:
            ours = ";".join([ours] + kept)
    return ours[:MAX_XRAY_CHARS]


class Propagation:
    """What each outgoing call carries, per the configured propagators."""

    def __init__(self, propagators: tuple) -> None:
        self.tracecontext = "tracecontext" in propagators
        self.baggage = "baggage" in propagators
        self.xray = "xray" in propagators

    def http_headers(self, span: ClientSpan) -> list:
        """[(name, value)] for an HTTP request under `span`."""
        headers = []
        if self.tracecontext:
            headers.append(("traceparent", traceparent(span)))
            if span.trace_state:
                headers.append(("tracestate", span.trace_state))
        if self.baggage:
            baggage = user_baggage() or invocation_baggage()
            if baggage:
                headers.append(("baggage", baggage))
        if self.xray:
            headers.append((XRAY_HEADER, xray(span)))
        return headers

    def message_fields(self, span: ClientSpan) -> dict:
        """The W3C fields a message or payload carries (what lambdawrap's consumers read)."""
        fields = {"traceparent": traceparent(span)}
        if span.trace_state:
            fields["tracestate"] = span.trace_state
        if self.baggage:
            baggage = user_baggage() or invocation_baggage()
            if baggage:
                fields["baggage"] = baggage
        return fields


def invocation_baggage() -> str:
    """The W3C `baggage` that came with the invocation's parent ("" when none)."""
    invocation = active_invocation()
    return invocation.baggage if invocation is not None else ""


def user_baggage() -> str:
    """The W3C `baggage` value of the user's OpenTelemetry baggage ("" when none is set)."""
    baggage = sys.modules.get("opentelemetry.baggage")
    if baggage is None:
        return ""
    try:
        entries = baggage.get_all()
        if not entries:
            return ""
        from urllib.parse import quote  # deferred: only when the user set baggage

        return ",".join(f"{quote(str(k), safe='')}={quote(str(v), safe='')}" for k, v in entries.items())
    except Exception:  # noqa: BLE001 - an API of any version: no baggage rather than an error
        return ""


# The span-naming values lately written into requests (traceparent, X-Amzn-Trace-Id): a request
# object the function sends again (a retry loop over one requests PreparedRequest, urllib
# Request or httpx Request) still holds the one of its first send, ours to replace (the server
# would be told the wrong parent), not the user's to keep. A dict: its lookups are atomic.
_WRITTEN: dict = {}
_MAX_WRITTEN = 1024
_SPAN_NAMING = ("traceparent", XRAY_HEADER.lower())


def written_by_us(value: object) -> bool:
    """Whether a header's value is one lambdawrap wrote for an earlier send."""
    return isinstance(value, str) and value in _WRITTEN


def remember_written(name: str, value: str) -> None:
    if name.lower() in _SPAN_NAMING:
        if len(_WRITTEN) >= _MAX_WRITTEN:
            _WRITTEN.clear()
        _WRITTEN[value] = True


def add_missing(headers: object, pairs: list) -> None:
    """Set each header the mapping does not have yet (any case), leaving the user's alone (a
    value of ours left from an earlier send of the same request is replaced)."""
    if not pairs:
        return
    present = {str(k).lower(): k for k in headers} if headers else {}  # type: ignore[union-attr]
    for name, value in pairs:
        key = present.get(name.lower())
        if key is None or written_by_us(headers[key]):  # type: ignore[index]
            headers[name if key is None else key] = value  # type: ignore[index]
            remember_written(name, value)
