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


def add_missing(headers: object, pairs: list) -> None:
    """Set each header the mapping does not have yet (any case), leaving the user's alone."""
    if not pairs:
        return
    present = {str(k).lower() for k in headers} if headers else set()  # type: ignore[union-attr]
    for name, value in pairs:
        if name.lower() not in present:
            headers[name] = value  # type: ignore[index]
