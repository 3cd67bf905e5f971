"""The records the function's process sends the companion on the local channel: their types,
fields, version and validation. Both ends import this module; a schema change is one diff here.

Each frame (see `framing`) holds one JSON object with `version` and `type`:

``invocation`` -- once per invocation, when the handler has returned or raised:

    request_id       str        the platform's request id
    function_arn     str        the ARN the function was invoked by
    trace_id         32 hex     the invocation span's trace
    span_id          16 hex     the invocation span
    parent_span_id   16 hex|""  the caller's span (from the event or the X-Ray header)
    sampled          bool       the trace's sampling decision
    start_ns, end_ns int        epoch nanoseconds
    cold_start       bool       the first invocation of an on-demand environment
    proactive_init   bool       the first invocation, long after a proactive init
    trigger          str        the event source (see handler.triggers)
    attributes       object     span attributes read from the event
    links            list       [[trace_id, span_id, sampled], ...] from batch messages
    error            object     {"type", "message", "stack"} when the handler raised
    http_status      int        the status of an HTTP-triggered invocation's response
    request_payload, response_payload   str   only with LAMBDAWRAP_CAPTURE_PAYLOAD, redacted
    dropped          int        records lost on the channel since the last one that went through
    internal_errors  int        lambdawrap failures in the function's process since the last report

``spans`` -- spans the user's code ended through the OpenTelemetry API:

    spans  [{scope, name, trace_id, span_id, parent_span_id, kind, start_ns, end_ns,
             attributes, events: [[name, attributes, time_ns]],
             links: [[trace_id, span_id, attributes]], status: [code, description]}]

``secrets.get`` -- at boot, the declared secrets (answered on the same connection with a
``secrets`` record: values, errors, ttl, unavailable).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

VERSION = 2

INVOCATION = "invocation"
SPANS = "spans"
SECRETS_REQUEST = "secrets.get"
SECRETS_ANSWER = "secrets"


def invocation(
    request_id: str,
    function_arn: str,
    trace_id: int,
    span_id: int,
    parent_span_id: int,
    sampled: bool,
    start_ns: int,
    cold_start: bool,
    proactive_init: bool,
    trigger: str,
    attributes: dict,
    links: list,
) -> dict:
    """An invocation record as it is known before the handler runs (ids are ints here).
    `finish_invocation` adds what the handler's end tells."""
    return {
        "version": VERSION,
        "type": INVOCATION,
        "request_id": request_id,
        "function_arn": function_arn,
        "trace_id": f"{trace_id:032x}",
        "span_id": f"{span_id:016x}",
        "parent_span_id": f"{parent_span_id:016x}" if parent_span_id else "",
        "sampled": sampled,
        "start_ns": start_ns,
        "cold_start": cold_start,
        "proactive_init": proactive_init,
        "trigger": trigger,
        "attributes": attributes,
        "links": [[f"{link.trace_id:032x}", f"{link.span_id:016x}", link.sampled] for link in links],
    }


def finish_invocation(record: dict, end_ns: int, error: dict | None = None, http_status: int | None = None) -> dict:
    record["end_ns"] = end_ns
    if error is not None:
        record["error"] = error
    if http_status is not None:
        record["http_status"] = http_status
    return record


def span(scope: str, name: str, trace_id: int, span_id: int, parent_span_id: int, kind: int, start_ns: int, end_ns: int, attributes: dict, events: list, links: list, status: tuple) -> dict:
    """One user span, for a `spans` record."""
    return {
        "scope": scope,
        "name": name,
        "trace_id": f"{trace_id:032x}",
        "span_id": f"{span_id:016x}",
        "parent_span_id": f"{parent_span_id:016x}" if parent_span_id else "",
        "kind": kind,
        "start_ns": start_ns,
        "end_ns": end_ns,
        "attributes": attributes,
        "events": events,
        "links": links,
        "status": list(status),
    }


def spans(items: list) -> dict:
    return {"version": VERSION, "type": SPANS, "spans": items}


def secrets_request(timeout_ms: int) -> dict:
    return {"version": VERSION, "type": SECRETS_REQUEST, "timeout_ms": timeout_ms}


def secrets_answer(values: dict, errors: dict, ttl: float | None = None, unavailable: bool = False) -> dict:
    answer = {"version": VERSION, "type": SECRETS_ANSWER, "values": values, "errors": errors}
    if ttl is not None:
        answer["ttl"] = ttl
    if unavailable:
        answer["unavailable"] = True
    return answer


# validation (companion side: what arrives may come from anything that can open the socket) --


def invocation_problem(record: dict) -> str | None:
    """What makes an invocation record unusable for a span, or None if it is well formed."""
    request_id = record.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        return "no request_id"
    problem = _ids_problem(record)
    if problem is not None:
        return problem
    for key in ("start_ns", "end_ns"):
        if not _optional_time(record.get(key)):
            return f"a {key} that is not a time"
    if not _links_ok(record.get("links"), 3):
        return "malformed links"
    for key in ("attributes", "error"):
        if record.get(key) is not None and not isinstance(record.get(key), dict):
            return f"{key} that is not an object"
    return None


def span_problem(raw: Any) -> str | None:
    """What makes a user span unusable, or None if it is well formed."""
    if not isinstance(raw, dict):
        return "a span that is not an object"
    if not isinstance(raw.get("name"), str):
        return "a span without a name"
    problem = _ids_problem(raw)
    if problem is not None:
        return "a span with " + problem
    for key in ("start_ns", "end_ns"):
        if raw.get(key) is None or not _optional_time(raw.get(key)):
            return f"a span whose {key} is not a time"
    if type(raw.get("kind", 0)) is not int or not 0 <= raw.get("kind", 0) <= 4:
        return "a span of an unknown kind"
    if raw.get("attributes") is not None and not isinstance(raw.get("attributes"), dict):
        return "a span whose attributes are not an object"
    status = raw.get("status", [0, ""])
    if not isinstance(status, list) or not status or type(status[0]) is not int or not 0 <= status[0] <= 2:
        return "a span with a malformed status"
    events = raw.get("events") or []
    if not isinstance(events, list) or not all(isinstance(e, list) and len(e) == 3 and isinstance(e[1], dict) and _optional_time(e[2]) and e[2] is not None for e in events):
        return "a span with malformed events"
    if not _links_ok(raw.get("links"), 3, attributes=True):
        return "a span with malformed links"
    return None


def count(value: Any) -> int:
    """A count piggybacked on a record (dropped, internal_errors); 0 when absent or bogus."""
    return value if type(value) is int and 0 < value < 2**31 else 0


def hex_id(value: Any, length: int) -> bool:
    if not isinstance(value, str) or len(value) != length or not value.isascii():
        return False
    try:
        return int(value, 16) != 0
    except ValueError:
        return False


def _ids_problem(record: dict) -> str | None:
    if not hex_id(record.get("trace_id"), 32) or not hex_id(record.get("span_id"), 16):
        return "a trace_id or span_id that is not a hex id"
    parent = record.get("parent_span_id")
    if parent and not hex_id(parent, 16):
        return "a parent_span_id that is not a hex id"
    return None


def _optional_time(value: Any) -> bool:
    return value is None or (type(value) is int and 0 <= value < 2**63)


def _links_ok(links: Any, size: int, attributes: bool = False) -> bool:
    if links is None:
        return True
    if not isinstance(links, list):
        return False
    for link in links:
        if not isinstance(link, list) or len(link) != size or not hex_id(link[0], 32) or not hex_id(link[1], 16):
            return False
        if attributes and not isinstance(link[2], dict):
            return False
    return True
