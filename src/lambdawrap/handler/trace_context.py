"""Trace context parsing and formatting for the handler side: W3C ``traceparent`` and AWS X-Ray.

Runs on every invocation inside the user's process, so it is standard library only, cheap to
import, and no public function raises on any input: bad input yields ``None`` / ``""`` / ``[]``.
"""

from __future__ import annotations

from collections import namedtuple
from itertools import islice

from lambdawrap.shared.hex_digits import is_hex as _is_hex
from lambdawrap.shared.xray_header import MAX_CHARS as _MAX_XRAY_CHARS
from lambdawrap.shared.xray_header import parse as _parse_xray_header
from lambdawrap.shared.xray_header import root_trace_id as _xray_root_trace_id

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Any, Callable, Iterable, List, Optional, Tuple

__all__ = [
    "MAX_LINKS",
    "MAX_SCANNED_MESSAGES",
    "SpanContext",
    "choose_parent",
    "client_context_w3c",
    "collect_links",
    "extract_parent",
    "format_traceparent",
    "format_xray",
    "header",
    "parse_message_context",
    "parse_traceparent",
    "parse_xray",
    "xray_root_trace_id",
]

# Upper bound on links taken from one batch event. The OpenTelemetry SDK's default span link
# limit is 128 too; an SQS batch can hold up to 10,000 records.
MAX_LINKS = 128
# Messages of one batch read for their context: the link limit twice over. The rest of a large
# batch is not read, so that a batch of 10,000 messages costs what one of 256 does.
MAX_SCANNED_MESSAGES = 256
# Names of a header object looked through for one in another case (after its usual spellings):
# real requests carry a few dozen (API Gateway caps them at 10 KB); a forged event's `headers`
# with 400,000 names took 95 ms an invocation to walk.
MAX_SCANNED_NAMES = 256

_TRACE_ID_MAX = (1 << 128) - 1
_SPAN_ID_MAX = (1 << 64) - 1
_LOW_96 = (1 << 96) - 1
# HTTP optional whitespace that an intermediary may leave around a header value.
_OWS = " \t"
# A tracestate or baggage value longer than this is not read (w3c_fields keeps 512 and 8,192).
MAX_RAW_CHARS = 8192
# A traceparent is 55 characters (a later version's may add fields): a longer value is not one,
# and is not read (stripping a forged 6 MB of blanks around one cost ~40 ms a reading).
_MAX_TRACEPARENT_CHARS = 512


SpanContext = namedtuple("SpanContext", ("trace_id", "span_id", "sampled"))
SpanContext.__doc__ = "A remote span context: 128-bit trace id, 64-bit span id, and the sampled flag."


def parse_traceparent(value: object) -> Optional[SpanContext]:
    """Parse a W3C Trace Context ``traceparent`` value; ``None`` if it is not valid.

    Version ``00`` must be exactly ``00-<32 hex>-<16 hex>-<2 hex>``. Higher versions (except the
    forbidden ``ff``) are parsed as the specification asks: the same four leading fields, then
    either the end of the value or a ``-`` starting fields this parser does not know. Only
    lowercase hex is accepted; an all-zero trace id or span id is invalid. Flag bit 0 is sampled.
    A value over 512 characters (blanks around it included) is not read.
    """
    try:
        if not isinstance(value, str) or len(value) > _MAX_TRACEPARENT_CHARS:
            return None
        value = value.strip(_OWS)
        length = len(value)
        if length < 55:
            return None
        version = value[:2]
        if not _is_hex(version) or version == "ff":
            return None
        if version == "00":
            if length != 55:
                return None
        elif length > 55 and value[55] != "-":
            return None
        if value[2] != "-" or value[35] != "-" or value[52] != "-":
            return None
        trace_hex = value[3:35]
        span_hex = value[36:52]
        flags_hex = value[53:55]
        if not (_is_hex(trace_hex) and _is_hex(span_hex) and _is_hex(flags_hex)):
            return None
        trace_id = int(trace_hex, 16)
        span_id = int(span_hex, 16)
        if trace_id == 0 or span_id == 0:
            return None
        return SpanContext(trace_id, span_id, bool(int(flags_hex, 16) & 1))
    except Exception:  # never let tracing break the handler
        return None


def parse_xray(value: object) -> Optional[SpanContext]:
    """Parse an AWS X-Ray trace header (``Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=1``).

    Fields may come in any order with whitespace around them; unknown fields (``Lineage``,
    ``Self``, ...) are ignored. ``Parent`` is required, since without it there is no span to
    continue. ``Sampled=1`` means sampled; ``0``, ``?`` or a missing field means not sampled.
    """
    parsed = _parse_xray_header(value)
    return SpanContext(*parsed) if parsed is not None else None


def xray_root_trace_id(value: object) -> Optional[int]:
    """The trace id an X-Ray header's Root names, with or without a Parent (a header a function
    sets may be a bare Root); None when it names none, or none well-formed."""
    return _xray_root_trace_id(value)


def _valid_ids(ctx: object) -> bool:
    # type() rather than isinstance() so that bools (an int subclass) are rejected.
    try:
        trace_id, span_id = ctx.trace_id, ctx.span_id  # type: ignore[attr-defined]
    except Exception:
        return False
    return (
        type(trace_id) is int
        and type(span_id) is int
        and 0 < trace_id <= _TRACE_ID_MAX
        and 0 < span_id <= _SPAN_ID_MAX
    )


def format_traceparent(ctx: SpanContext) -> str:
    """Format a context as a version ``00`` ``traceparent``; ``""`` if its ids are out of range."""
    try:
        if not _valid_ids(ctx):
            return ""
        flags = "01" if ctx.sampled else "00"
        return "00-%032x-%016x-%s" % (ctx.trace_id, ctx.span_id, flags)
    except Exception:  # never let tracing break the handler
        return ""


def format_xray(ctx: SpanContext) -> str:
    """Format a context as an X-Ray header ``Root=1-…;Parent=…;Sampled=0|1``; ``""`` if invalid."""
    try:
        if not _valid_ids(ctx):
            return ""
        trace_id = ctx.trace_id
        return "Root=1-%08x-%024x;Parent=%016x;Sampled=%d" % (
            trace_id >> 96,
            trace_id & _LOW_96,
            ctx.span_id,
            1 if ctx.sampled else 0,
        )
    except Exception:  # never let tracing break the handler
        return ""


def header(headers: object, name: str) -> Optional[str]:
    """Case-insensitive header lookup in a dict; a list value yields its first element. A name
    in a case other than as asked, lowercased or title-cased is looked for among the first
    ``MAX_SCANNED_NAMES``.

    Anything that is not a dict, a missing name, or a non-string value yields ``None``.
    """
    try:
        if not isinstance(headers, dict) or not isinstance(name, str) or not headers:
            return None
        value = headers.get(name)
        if value is None:
            lowered = name.lower()
            value = headers.get(lowered)
            if value is None:
                value = headers.get(lowered.title())  # as clients write it: X-Amzn-Trace-Id
            if value is None:
                # Slow path for mixed-case keys (API Gateway REST passes headers as sent).
                for key, candidate in islice(headers.items(), MAX_SCANNED_NAMES):
                    if isinstance(key, str) and key.lower() == lowered:
                        value = candidate
                        break
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        return value if isinstance(value, str) else None
    except Exception:  # never let tracing break the handler
        return None


def extract_parent(headers: object, xray: Optional[str]) -> Tuple[Optional[SpanContext], str]:
    """Pick the parent context: a valid W3C ``traceparent`` header first, then the X-Ray value.

    Returns ``(context, source)`` with source ``"traceparent"``, ``"xray"``, or ``"none"``
    (then the context is ``None``).
    """
    try:
        ctx = parse_traceparent(header(headers, "traceparent"))
        if ctx is not None:
            return ctx, "traceparent"
        ctx = parse_xray(xray)
        if ctx is not None:
            return ctx, "xray"
    except Exception:  # never let tracing break the handler
        pass
    return None, "none"


def parse_message_context(found: Tuple[Optional[str], bool]) -> Optional[SpanContext]:
    """Parse what a message reader found, ``(raw, is_w3c)``: W3C, else X-Ray."""
    try:
        raw, is_w3c = found
        if raw is None:
            return None
        return parse_traceparent(raw) if is_w3c else parse_xray(raw)
    except Exception:  # never let tracing break the handler
        return None


def collect_links(records: Iterable, read: Callable[[dict], Tuple[Optional[str], bool]]) -> List[SpanContext]:
    """Span contexts of the messages in a batch, for span links; `read` gives each message's
    raw context and whether it is W3C (else X-Ray). Invalid values are skipped, duplicates
    dropped (first kept, order preserved), at most ``MAX_LINKS`` from the first
    ``MAX_SCANNED_MESSAGES`` messages (a batch of 10,000 costs what one of 256 does)."""
    links: List[SpanContext] = []
    try:
        seen_raw = set()
        seen_ids = set()
        scanned = 0
        for record in records:
            scanned += 1
            if scanned > MAX_SCANNED_MESSAGES:
                break
            if not isinstance(record, dict):
                continue
            raw, is_w3c = read(record)
            # Most batches repeat a handful of values; skip re-parsing ones already seen.
            if raw is None or raw in seen_raw:
                continue
            seen_raw.add(raw)
            ctx = parse_traceparent(raw) if is_w3c else parse_xray(raw)
            if ctx is None:
                continue
            key = (ctx.trace_id, ctx.span_id)
            if key in seen_ids:
                continue
            seen_ids.add(key)
            links.append(ctx)
            if len(links) >= MAX_LINKS:
                break
    except Exception:  # never let tracing break the handler; keep what was found
        pass
    return links


def client_context_w3c(context: Any) -> Optional[dict]:
    """The W3C fields (``traceparent``, ``tracestate``, ``baggage``) a Lambda ``Invoke`` caller
    sent in the client context, where it sent a ``traceparent``, else a ``baggage`` alone:
    awslambdaric 4.2+ moves ``clientContext.w3c`` to ``context.w3c()`` (read first, when its
    traceparent is valid); SDK instrumentations write them in ``clientContext.custom``."""
    try:
        fields = None
        w3c = getattr(context, "w3c", None)
        if callable(w3c):
            fields = w3c()
            # Only a valid one: a malformed traceparent there must not hide the one in custom.
            if isinstance(fields, dict) and parse_traceparent(fields.get("traceparent")) is not None:
                return fields
        custom = getattr(getattr(context, "client_context", None), "custom", None)
        if isinstance(custom, dict) and isinstance(custom.get("traceparent"), str):
            return custom
        # No parent there: its baggage all the same (read apart from the trace context).
        for carrier in (fields, custom):
            if isinstance(carrier, dict) and isinstance(carrier.get("baggage"), str):
                return carrier
        return None
    except Exception:  # a context of any shape: never let tracing break the handler
        return None


def _sampled_xray(value: object) -> Optional[SpanContext]:
    # Lambda hands every invocation an X-Ray header, Sampled=0 when active tracing is off;
    # parenting on it would make every span unsampled, so only a sampled one counts (and the
    # usual header, with one "Sampled=0" or none, is not parsed at all).
    if not isinstance(value, str) or len(value) > _MAX_XRAY_CHARS:
        return None  # parse_xray would not read it: not lowered and searched either
    lowered = value.lower()
    fields = lowered.count("sampled")
    if fields == 0 or (fields == 1 and "sampled=0" in lowered):
        return None
    ctx = parse_xray(value)
    return ctx if ctx is not None and ctx.sampled else None


def _w3c_fields(carrier: Any) -> Tuple[Optional[str], Optional[str], Optional[str]]:
    """The ``traceparent``, ``tracestate`` and ``baggage`` of a dict of headers (or a client
    context), each read as ``header`` reads one, in at most one pass over names of any case (REST
    APIs keep the client's): most invocations carry none of the three, and each is looked for.
    Beside a lowercase ``traceparent`` the other two are lowercase or title-cased, not walked for."""
    if not isinstance(carrier, dict) or not carrier:
        return None, None, None
    parent = carrier.get("traceparent")
    if "traceparent" in carrier:  # lowercase (HTTP APIs, function URLs, ALB, a client context), or as written
        state = carrier.get("tracestate") or carrier.get("Tracestate")
        baggage = carrier.get("baggage") or carrier.get("Baggage")
        scan = parent is None
    else:
        parent = carrier.get("Traceparent")
        state = carrier.get("Tracestate") or carrier.get("tracestate")
        baggage = carrier.get("Baggage") or carrier.get("baggage")
        scan = parent is None or state is None or baggage is None
    if scan:
        for key, value in islice(carrier.items(), MAX_SCANNED_NAMES):
            if isinstance(key, str) and len(key) in (7, 10, 11):
                lowered = key.lower()
                if lowered == "traceparent":
                    parent = value if parent is None else parent
                elif lowered == "tracestate":
                    state = value if state is None else state
                elif lowered == "baggage":
                    baggage = value if baggage is None else baggage
    if isinstance(parent, (list, tuple)):
        parent = parent[0] if parent else None
    if state is None and baggage is None:
        return parent if isinstance(parent, str) else None, None, None
    return parent if isinstance(parent, str) else None, _first_text(state), _first_text(baggage)


def _propagated(order: tuple, headers: object, xray: Optional[str]) -> Tuple[Optional[SpanContext], bool]:
    """(the parent, whether it is the W3C one) as the SDK's composite propagator extracts it
    with these propagators in this order: each that finds a context replaces the one before;
    ``xray-lambda`` reads the X-Ray header as ``xray`` does, then, when no propagator before it
    had found a context, the environment's (``_X_AMZN_TRACE_ID``), sampled or not, which
    replaces the header's (the semantic conventions' ``xray-lambda`` propagator)."""
    current, from_w3c = None, False
    for name in order:
        if name == "tracecontext":
            found = parse_traceparent(header(headers, "traceparent"))
            if found is not None:
                current, from_w3c = found, True
            continue
        had = current is not None
        found = parse_xray(header(headers, "x-amzn-trace-id"))
        if found is not None:
            current, from_w3c = found, False
        if name == "xray-lambda" and not had:
            found = parse_xray(xray)
            if found is not None:
                current, from_w3c = found, False
    return current, from_w3c


def _baggage_of(carrier: object) -> Optional[str]:
    return _w3c_fields(carrier)[2]


def _without_traceparent(headers: object) -> object:
    """An event's headers as a reader without W3C Trace Context sees them: only the X-Ray header
    (the one other header a parent is read from)."""
    found = header(headers, "x-amzn-trace-id")
    return {"x-amzn-trace-id": found} if found is not None else None


def _first_text(value: Any) -> Optional[str]:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    # Longer than either may be is not kept (nor carried in the record, whose size it would take).
    return value if isinstance(value, str) and len(value) <= MAX_RAW_CHARS else None


def choose_parent(headers: object, client_context: Optional[dict], message: Optional[SpanContext], xray: Optional[str], message_state: Optional[str] = None, message_baggage: Optional[str] = None, xray_lambda_order: tuple = (), propagators: Optional[tuple] = None) -> Tuple[Optional[SpanContext], Optional[SpanContext], Optional[tuple]]:
    """The invocation span's parent, a context to link to that was not chosen as the parent
    (the platform's sampled X-Ray context, the ambient context the function runs in; with
    ``xray-lambda`` first, the event's own), and the ``(tracestate, baggage)`` that came beside
    a W3C parent, as they came, or the caller's baggage without one (None when neither did):
    they are validated where they are used (shared.w3c_fields), not on every invocation.

    In order: the client context of a Lambda ``Invoke`` (``client_context_w3c``); a W3C
    ``traceparent`` header of an HTTP-shaped event; the context a single message or payload carries;
    a sampled X-Ray context from the environment (``_X_AMZN_TRACE_ID``), then from an HTTP
    ``X-Amzn-Trace-Id`` header. With ``xray_lambda_order`` (OTEL_PROPAGATORS naming
    ``xray-lambda``), the parent the OpenTelemetry SDK's propagators would extract from the
    event's headers in that order, whenever they extract one (``_propagated``).

    ``propagators`` (OTEL_PROPAGATORS; None: the default) as OpenTelemetry's own extraction reads
    them: without ``tracecontext`` no W3C context is taken; with none at all, no context is (a
    public API's clients then choose neither the trace nor its sampling), the platform's
    sampled X-Ray context a link.
    """
    try:
        if propagators is not None and not propagators and not xray_lambda_order:
            return None, _sampled_xray(xray), None
        if propagators is not None and "tracecontext" not in propagators and not xray_lambda_order:
            # (With xray-lambda, its order says which propagators extract the parent; a W3C
            # context not chosen stays a link.) The baggage is read apart from the parent, as
            # OpenTelemetry's baggage propagator reads it.
            parent, ambient, _ = choose_parent(_without_traceparent(headers), None, None, xray)
            baggage = (_baggage_of(client_context) or _baggage_of(headers) or _first_text(message_baggage)) if "baggage" in propagators else None
            return parent, ambient, (None, baggage) if baggage else None
        if xray_lambda_order:
            parent, from_w3c = _propagated(xray_lambda_order, headers, xray)
            if parent is not None and from_w3c:
                beside = _w3c_fields(headers)[1:]
                return parent, _sampled_xray(xray), beside if beside != (None, None) else None
            if parent is not None:
                # The X-Ray context the user asked to come first (Lambda's active tracing
                # segment): the one the event or its caller carries stays reachable as a link,
                # and the baggage the headers carry goes on (its propagator reads it apart).
                own = parse_traceparent(client_context.get("traceparent")) if client_context is not None else None
                _, _, baggage = fields = _w3c_fields(headers)
                if own is None:
                    own = parse_traceparent(fields[0])
                return parent, own or message, (None, baggage) if baggage else None
        ambient = _sampled_xray(xray)
        # The caller's client context first: a function that invokes another with the HTTP
        # event it got passes the client's traceparent on in the event, and its own in the
        # client context (as OpenTelemetry Java's Lambda instrumentation ranks them).
        parent = parse_traceparent(client_context.get("traceparent")) if client_context is not None else None
        if parent is not None:
            beside = _w3c_fields(client_context)[1:]
            return parent, ambient, beside if beside != (None, None) else None
        # The headers' three W3C fields in one look: the baggage is wanted without a parent too.
        traceparent, state, headers_baggage = _w3c_fields(headers)
        parent = parse_traceparent(traceparent)
        if parent is not None:
            return parent, ambient, (state, headers_baggage) if (state, headers_baggage) != (None, None) else None
        if message is not None:
            # The tracestate and baggage the message carried beside it.
            beside = (_first_text(message_state), _first_text(message_baggage))
            return message, ambient, beside if beside != (None, None) else None
        # No W3C parent: the caller's baggage all the same, where it is propagated, as
        # OpenTelemetry's baggage propagator reads it apart from the trace context (a tracestate
        # belongs to a traceparent).
        baggage = (_baggage_of(client_context) or headers_baggage) if propagators is None or "baggage" in propagators else None
        return ambient or _sampled_xray(header(headers, "x-amzn-trace-id")), None, (None, baggage) if baggage else None
    except Exception:  # never let tracing break the handler
        return None, None, None
