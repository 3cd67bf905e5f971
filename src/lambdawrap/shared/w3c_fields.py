"""The W3C fields that travel beside a ``traceparent``: ``tracestate`` (Trace Context) and
``baggage`` (Baggage), checked before lambdawrap carries them on.

Shared: the function's process checks them where it uses them (the first outgoing call of an
invocation, the user's spans), never on every invocation; the companion checks the tracestate a
record carries before the spans it builds get it. Standard library only, and nothing raises.
"""

from __future__ import annotations

# W3C Trace Context: at most 32 list members; vendors should carry at least 512 characters on.
MAX_TRACE_STATE_MEMBERS = 32
MAX_TRACE_STATE_CHARS = 512
# W3C Baggage: 8,192 bytes at most in all; OpenTelemetry's propagator reads 180 members of up to
# 4,096 characters each, as the specification's limits say a platform may.
MAX_BAGGAGE_CHARS = 8192
MAX_BAGGAGE_MEMBERS = 180
MAX_BAGGAGE_MEMBER_CHARS = 4096
# Longer than any tracestate a hop passes on is not read (nor are such texts kept where they are
# found: handler.trace_context.MAX_RAW_CHARS); up to it, a long one is cut, not discarded.
MAX_READ_TRACE_STATE_CHARS = 8192
_OWS = " \t"
_state_member = None  # compiled on first use: most invocations carry no tracestate
_baggage_member = None  # the same


def parse_tracestate(value: object) -> str:
    """A W3C ``tracestate`` to carry on unchanged: its members, blanks around them and empty
    ones dropped; ``""`` when it is not one (a member that is not ``key=value`` as the
    specification, and OpenTelemetry's API, write them; a repeated key; more than 32 members).
    An invalid tracestate is discarded whole, as the API does; one longer than 512 characters is
    cut as W3C Trace Context says (its members over 128 characters, then from the end)."""
    global _state_member
    try:
        if not isinstance(value, str) or not value or len(value) > MAX_READ_TRACE_STATE_CHARS:
            return ""
        if _state_member is None:
            import re  # deferred: only for a tracestate (already loaded by json in any case)

            _state_member = re.compile(r"(?:[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
        members = [member.strip(_OWS) for member in value.split(",")]
        members = [member for member in members if member]
        keys = {member.partition("=")[0] for member in members}
        if len(members) > MAX_TRACE_STATE_MEMBERS or len(keys) != len(members) or not all(_state_member.fullmatch(member) for member in members):
            return ""
        state = ",".join(members)
        if len(state) > MAX_TRACE_STATE_CHARS:
            # Cut as W3C Trace Context says: the members over 128 characters first, then from
            # the end (the oldest), not the whole state (every vendor's entry lost).
            members = [member for member in members if len(member) <= 128]
            while len(",".join(members)) > MAX_TRACE_STATE_CHARS:
                members.pop()
            state = ",".join(members)
        return state
    except Exception:  # noqa: BLE001 - a value of any kind: never let tracing break anything
        return ""


def parse_baggage(value: object) -> str:
    """A W3C ``baggage`` value to carry on as it came (within its 8,192 characters), without the
    members that are not ``key=value`` as W3C Baggage writes them (OpenTelemetry's propagator
    drops those too); ``""`` when none is left."""
    global _baggage_member
    if not isinstance(value, str):
        return ""
    value = value.strip(_OWS)
    # Printable ASCII only: it goes into the headers of the function's own requests, where a
    # line break would make the request fail (or, in a client that does not check, add headers).
    if not (len(value) <= MAX_BAGGAGE_CHARS and value.isascii() and value.isprintable() and "=" in value):
        return ""
    if _baggage_member is None:
        import re  # deferred: only for a baggage (already loaded by json in any case)

        # key = value, then properties (key = value, or key), as W3C Baggage writes them
        key, octets, ows = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*", r"[ \t]*"
        pair = f"{ows}{key}{ows}={ows}{octets}{ows}"
        _baggage_member = re.compile(f"{pair}(?:;(?:{pair}|{ows}{key}{ows}))*")
    kept, read = [], 0
    for member in value.split(","):
        member = member.strip(_OWS)
        if not member or len(member) > MAX_BAGGAGE_MEMBER_CHARS:
            continue
        read += 1
        if read > MAX_BAGGAGE_MEMBERS:
            break
        if _baggage_member.fullmatch(member):
            kept.append(member)
    return ",".join(kept)
