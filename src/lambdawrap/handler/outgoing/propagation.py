"""The trace context an outgoing call carries, in the formats OTEL_PROPAGATORS names.

HTTP requests get `traceparent` (+ `tracestate`) for `tracecontext`, `baggage` for `baggage`
(the user's OpenTelemetry baggage, when their code uses the API and set some, else the baggage
that came with the invocation's parent) and
`X-Amzn-Trace-Id` for `xray`; the client span is the parent. A header the user already set is
never overwritten, nor joined by one naming another trace (an X-Ray header of the user's only
where X-Ray is propagated too).

An X-Ray header is always derived from the one already there (botocore copies the function's
`_X_AMZN_TRACE_ID` into every AWS call): only Root, Parent and Sampled are replaced, every other
field is kept, `Lineage` above all (Lambda counts recursive invocations with it and stops the
loop), and the result is cut at 256 characters, as OpenTelemetry Java does.

Payload carriers (SQS/SNS message attributes, EventBridge detail, ...) always carry the W3C
form, the one lambdawrap's consumers read.
"""

from __future__ import annotations

import sys
from weakref import ref  # logging, which the runtime imports before us, imported it already

from lambdawrap.handler.invocation import active_invocation
from lambdawrap.handler.trace_context import xray_root_trace_id
from lambdawrap.handler.outgoing.recorder import ClientSpan
from lambdawrap.shared.w3c_fields import MAX_BAGGAGE_CHARS, MAX_BAGGAGE_MEMBER_CHARS, MAX_BAGGAGE_MEMBERS
from lambdawrap.shared.own_stdlib import standard

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Callable

_LOW_96 = (1 << 96) - 1
MAX_XRAY_CHARS = 256
XRAY_HEADER = "X-Amzn-Trace-Id"
# Ours that describe the invocation's trace, left off a request the function set a traceparent on,
# and those left off one it set an X-Ray header of another trace on.
_BESIDE_OWN_PARENT = ("tracestate", XRAY_HEADER.lower())
_BESIDE_OWN_XRAY = ("traceparent", "tracestate")
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
        # Whether a header of one send's own goes (a span's): only it tells a request sent again.
        self.per_send = self.tracecontext or self.xray

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
    """The W3C `baggage` value of the user's OpenTelemetry baggage, within W3C Baggage's limits
    as the OpenTelemetry API's propagator keeps them when it injects (a header past them is one
    servers refuse: nginx's default buffer holds a header line of 8 KiB; API Gateway, 10 KiB of
    headers in all); "" when none is set."""
    baggage = sys.modules.get("opentelemetry.baggage")
    if baggage is None:
        return ""
    try:
        entries = baggage.get_all()
        if not entries:
            return ""
        quote = standard("urllib.parse").quote  # deferred: only when the user set baggage

        pairs: list = []
        length = -1  # the commas between members
        for key, value in entries.items():
            pair = f"{quote(str(key), safe='')}={quote(str(value), safe='')}"
            if len(pair) > MAX_BAGGAGE_MEMBER_CHARS:
                continue
            length += len(pair) + 1
            if len(pairs) == MAX_BAGGAGE_MEMBERS or length > MAX_BAGGAGE_CHARS:
                break
            pairs.append(pair)
        return ",".join(pairs)
    except Exception:  # noqa: BLE001 - an API of any version: no baggage rather than an error
        return ""


# The values lately written into requests, by header: a request object the function sends again
# (a retry loop over one requests PreparedRequest, urllib Request or httpx Request; one kept from
# an earlier invocation) still holds those of its first send, ours to replace or remove (the
# server would be told the wrong parent, another trace's tracestate, another caller's baggage),
# not the user's to keep. A dict (insertion-ordered, oldest first): its lookups are atomic.
_WRITTEN: dict = {}
_MAX_WRITTEN = 1024
CARRIED = ("traceparent", "tracestate", "baggage", XRAY_HEADER.lower())
_ONE_PER_INVOCATION = ("tracestate", "baggage")  # the same on every send: a value tells no send
_ONE_PER_SEND = ("traceparent", XRAY_HEADER.lower())  # a span's: a value tells its send


# And by request: what was written into each request object (or headers mapping) still alive,
# by id, with a weak reference that takes it out when the object goes. A request kept longer
# than the values' cap (a module's Request sent once per invocation, a thousand other calls
# between) would otherwise hold a value no longer known as ours, sent as the user's for ever,
# an earlier trace's. Objects that take no weak reference (a dict) are new at each send.
_WRITTEN_ON: dict = {}


def written_by_us(name: str, value: object) -> bool:
    """Whether a header's value is one lambdawrap wrote for an earlier send."""
    return isinstance(value, str) and (name.lower(), value) in _WRITTEN


def _written_on(carrier: object) -> dict:
    """What lambdawrap wrote into `carrier` at its last send: lowercase name -> value."""
    entry = _WRITTEN_ON.get(id(carrier)) if carrier is not None else None
    return entry[1] if entry is not None and entry[0]() is carrier else {}


def _remember_on(carrier: object, written: dict) -> None:
    if carrier is None:
        return
    key = id(carrier)
    if not written:
        _WRITTEN_ON.pop(key, None)
        return
    try:
        _WRITTEN_ON[key] = (ref(carrier, lambda _gone, key=key: _WRITTEN_ON.pop(key, None)), written)
    except TypeError:  # no weak reference to it: the values' memory serves
        pass


def _remember(written: tuple) -> None:
    """Keep a value written, as the newest: the oldest goes once the cap is reached. Not all of
    them at once: a request object kept across invocations, whose value was written one
    request ago, would then hold a value no longer known as ours, sent as the user's forever."""
    _WRITTEN.pop(written, None)  # a value written again (a tracestate, a baggage) is the newest
    _WRITTEN[written] = True
    while len(_WRITTEN) > _MAX_WRITTEN:
        try:
            del _WRITTEN[next(iter(_WRITTEN))]
        except (StopIteration, KeyError, RuntimeError):  # another thread took it, or changed the dict
            break


def carried_changes(present: dict, pairs: list, per_send: bool | None = None, carrier: object = None) -> tuple:
    """What a request's headers need to carry `pairs`: ([(name, value)] to set, those missing
    or ours from an earlier send; [lowercase names] to remove, ours from an earlier send that
    this one does not carry). `present`: the request's CARRIED headers, lowercase name -> value;
    `per_send`: whether the propagators carry a header of one send's own (a traceparent, an
    X-Ray header); None: whether `pairs` hold one (a call not traced holds none, whatever they
    carry); `carrier`: the object the headers live in, which may be sent again."""
    known = _written_on(carrier)
    to_set, to_remove = _changes(present, pairs, per_send, lambda name, value: value is not None and known.get(name) == value or written_by_us(name, value))
    if carrier is not None and (known or to_set):
        removed = set(to_remove)
        still = {name: value for name, value in known.items() if present.get(name) == value and name not in removed}
        _remember_on(carrier, {**still, **{name.lower(): value for name, value in to_set}})
    return to_set, to_remove


def _changes(present: dict, pairs: list, per_send: bool | None, written: Callable[[str, object], bool]) -> tuple:
    """carried_changes, with `written(lowercase name, value)` telling a value lambdawrap wrote."""
    if per_send is None:
        per_send = any(name.lower() in _ONE_PER_SEND for name, _ in pairs)
    parent = present.get("traceparent")
    own_parent = parent is not None and not written("traceparent", parent)
    if own_parent:
        # The function sent its own traceparent: a tracestate belongs to the traceparent it
        # came with (W3C Trace Context), so the invocation's (another trace's vendor state)
        # does not join it, nor does an X-Ray header naming the invocation's trace (the next
        # service would follow one trace or the other by the header it reads); the function's
        # own tracestate, if any, stays.
        pairs = [(name, value) for name, value in pairs if name.lower() not in _BESIDE_OWN_PARENT]
    elif not written(XRAY_HEADER.lower(), present.get(XRAY_HEADER.lower())) and _names_another_trace(present.get(XRAY_HEADER.lower()), pairs):
        # With X-Ray propagation, the function sent its own X-Ray header naming another trace
        # than the invocation's: a traceparent beside it would name a second one. One naming the
        # invocation's trace (the function forwarding its _X_AMZN_TRACE_ID, where the invocation
        # joined it) goes with the traceparent, naming the client span.
        pairs = [(name, value) for name, value in pairs if name.lower() not in _BESIDE_OWN_XRAY]
    # Beside the function's own traceparent, every header is the function's too, whatever its
    # value: a tracestate or baggage is not one send's (every request of an invocation carries
    # the same, as does the caller's own header, which a function forwarding it sends on), so its
    # value alone does not tell it from one lambdawrap wrote (a traceparent's does: a span's).
    # Nor does it alone tell a request sent again from a new one whose function set the same
    # baggage: only a request holding a traceparent or X-Ray header of ours (a span's, one send's)
    # was sent before, and only there are its tracestate and baggage ours too.
    # Where neither is sent (OTEL_PROPAGATORS=baggage), the value is all there is to go by.
    # Worked out only for a request holding a carried header: a new one (most sends) asks nothing.
    resent = bool(present) and (
        (parent is not None and not own_parent)
        or written(XRAY_HEADER.lower(), present.get(XRAY_HEADER.lower()))
        or not per_send
    )

    def ours(name: str, value: str) -> bool:
        return written(name.lower(), value) and (resent or name.lower() not in _ONE_PER_INVOCATION)

    to_set = []
    for name, value in pairs:
        old = present.get(name.lower())
        if old is None or (not own_parent and ours(name, old)):
            to_set.append((name, value))
            _remember((name.lower(), value))
    if not present or own_parent:
        return to_set, []
    wanted = {name.lower() for name, _ in pairs}
    return to_set, [name for name, value in present.items() if name not in wanted and ours(name, value)]


def _names_another_trace(theirs: object, pairs: list) -> bool:
    """Whether the function's own X-Ray header `theirs` (None when there is none), where X-Ray is
    propagated, names a trace other than the traceparent in `pairs`; one without a well-formed
    Root it is taken to.

    Where X-Ray is not propagated (the default), the header is the function's alone, as beside
    OpenTelemetry's instrumentations: the X-Ray SDK's (Powertools' Tracer adds one to every
    `requests` call), or Lambda's forwarded, which names another trace than the invocation's
    whenever X-Ray did not sample it. The traceparent goes beside it."""
    if theirs is None or written_by_us(XRAY_HEADER, theirs) or not any(name == XRAY_HEADER for name, _ in pairs):
        return False
    ours = next((value for name, value in pairs if name == "traceparent"), None)
    if ours is None:
        return False
    return xray_root_trace_id(theirs) != int(ours[3:35], 16)


def header_text(value: object) -> str:
    """A header's name or value as text: http.client, and so urllib3 and urllib.request, send a
    bytes name or value as it is, so a function's b"traceparent" is its traceparent (read as
    str(), another name: ours would go beside it, a second traceparent)."""
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)


def add_missing(headers: object, pairs: list, per_send: bool | None = None) -> None:
    """Set each header the mapping does not have yet (any case), leaving the user's alone (values
    of ours left from an earlier send of the same request are replaced, or removed); `per_send`
    as carried_changes has it."""
    if not pairs and not (headers and (_WRITTEN or _WRITTEN_ON)):
        return  # nothing to carry, and nothing of ours that could be left there
    keys = {(k if type(k) is str else header_text(k)).lower(): k for k in headers} if headers else {}  # type: ignore[union-attr]
    present = {name: header_text(headers[key]) for name, key in keys.items() if name in CARRIED}  # type: ignore[index]
    to_set, to_remove = carried_changes(present, pairs, per_send, headers)
    for name, value in to_set:
        headers[keys.get(name.lower(), name)] = value  # type: ignore[index]
    for name in to_remove:
        del headers[keys[name]]  # type: ignore[attr-defined]
