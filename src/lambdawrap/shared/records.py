"""The records the function's process sends the companion on the local channel: their types,
fields, version and validation. Both ends import this module; a schema change is one diff here.

Each frame (see `framing`) holds one JSON object with `version` and `type`:

``invocation`` -- once per invocation, when the handler has returned or raised. It has two
parts: ``start``, what was known before the handler ran (the same bytes the process publishes
in its in-flight slot, see `inflight`, so that the companion can still build the span when the
process dies), and ``end``:

    start.request_id       str        the platform's request id
    start.function_arn     str        the ARN the function was invoked by
    start.trace_id         32 hex     the invocation span's trace
    start.span_id          16 hex     the invocation span
    start.parent_span_id   16 hex|""  the caller's span (from the event or the X-Ray header)
    start.sampled          bool       the trace's sampling decision, made once, here
    start.start_ns         int        epoch nanoseconds
    start.cold_start       bool       the first invocation of an on-demand environment
    start.proactive_init   bool       the first invocation, long after a proactive init
    start.trigger          str        the event source (see handler.triggers)
    start.span_name        str        the invocation span's name as the conventions name it for
                                      its trigger ("GET /pets/{id}", "process orders"); "" (or
                                      absent) names the span after the function, the FaaS default
    start.span_kind        int        the invocation span's kind, numbered as shared.semconv's
                                      constants (SERVER 1, CONSUMER 4; absent: SERVER)
    start.attributes       object     span attributes read from the event (faas.trigger among them)
    start.links            list       [[trace_id, span_id, sampled], ...] from batch messages
    start.request_payload  str        only with LAMBDAWRAP_CAPTURE_PAYLOAD, redacted
    start.trace_state      str        the W3C tracestate that came with the parent (absent: none)
    start.init_span        [trace_id, span_id]  the first invocation's only, where the handler's
                                      module made calls or spans as it loaded, in a sampled
                                      trace: the init span's
                                      ids (see handler.init_trace), also for a call of the init
                                      that ends after the init span is made
    end.remaining_ms       int        Managed Instances: the time the invocation had left at the
                                      handler's return (the companion awaits the platform's word)
    end.end_ns             int        epoch nanoseconds
    end.error              object     {"type", "message", "stack"} when the handler raised
    end.http_status        int        the status of an HTTP-triggered invocation's response
    end.response_payload   str        only with LAMBDAWRAP_CAPTURE_PAYLOAD, redacted
    end.spans              list       spans ended during the invocation: the user's (OpenTelemetry API)
                                      and the client spans of its outgoing calls (below)
    end.annotations        object     what the function set on the invocation span it found
                                      current: {"attributes", "events" ([name, attributes,
                                      time_ns], ...), "status" ([code, description]), "name"},
                                      each present only when set, within the span limits
    end.spans_dropped      int        spans over LAMBDAWRAP_MAX_SPANS_PER_INVOCATION
    end.spans_too_large    int        spans each larger than a record by itself
    end.internal_errors    int        lambdawrap failures in the function's process since the last report
    end.context_not_injected int      outgoing calls that went without the trace context since the
                                      last report (a message already at its attribute limit, ...)
    end.posted             str        a record held for the runtime's post: what was posted, as a
                                      ``posted`` record's outcome says (below)
    end.posted_size        int        with end.posted "too_large": the bytes refused
    dropped                int        records lost on the channel since the last one that went through

``spans`` -- spans ended outside an invocation (at import time, on a thread that outlived it),
and the shape of each span in ``end.spans``: the user's (OpenTelemetry API) and the client spans
of outgoing calls (kind 2 CLIENT or 3 PRODUCER, the API's SpanKind values; a failed call has status 2 and ``error.type``):

    spans  [{scope, name, trace_id, span_id, parent_span_id, kind, start_ns, end_ns,
             attributes, events: [[name, attributes, time_ns]],
             links: [[trace_id, span_id, attributes, remote]], status: [code, description],
             trace_state (only when the trace has one), parent_remote (only when the parent
             came from another process: the OTLP span flags say so, as the SDK's), scope_version,
             scope_schema_url, scope_attributes (each only when the tracer has one)}]
    spans_too_large  int  spans each larger than a record by itself, sent without them
    init_span  [trace_id, span_id]  the init span's ids, which the function's process chose for
                                    what the handler's module did as it loaded (see
                                    handler.init_trace), when the spans are of that trace

``posted`` -- right after the runtime handed an invocation's response (``outcome`` "result") or
its error ("error") to the Runtime API, and the call returned, for an invocation whose record
went before the post (a held one carries it as ``end.posted``): the verdict the platform's
runtimeDone would give, known without waiting for the Telemetry API:

    request_id  str   the platform's request id
    outcome     str   "result" or "error"; "too_large": the platform refused the response
    size        int   with "too_large": the bytes refused

``init.failed`` -- Managed Instances only: this worker process could not load the function (the
runtime's handler lookup raised), while the environment's init may have ended without it (it
ends when the first worker asks for work, and the runtime posts only the first worker's error):

    start_ns    int     epoch nanoseconds, when the runtime began to look the handler up
    end_ns      int     epoch nanoseconds, when the lookup raised
    error       object  {"type", "message", "stack"}, as the runtime reports it (shared.runtime_report)

``secrets.get`` -- at boot and at each refresh, the declared secrets (answered on the same
connection with a ``secrets`` record: values, errors, ages (seconds since each value was fetched
from AWS, so that the handler side's copy expires with the companion's), ttl, unavailable).

``secrets.fetched`` -- when the function's process fetched the declared secrets itself (the
companion had not answered in time): their values, that the companion keeps them out of what it
exports before the function's module can log one (answered with an empty ``secrets`` record once
it has them):

    values      dict  env name -> value
"""

from __future__ import annotations

from lambdawrap.shared.attribute_values import MAX_NESTING
from lambdawrap.shared.framing import HEADER_BYTES, encode_json, own_json_text
from lambdawrap.shared.hex_digits import ANY_CASE, is_hex
from lambdawrap.shared.semconv import CONSUMER, INTERNAL, SERVER

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

VERSION = 3  # 3: a user span link carries its remote flag; parent_remote, scope_attributes; end.annotations (optional: no bump)

INVOCATION = "invocation"
SPANS = "spans"
POSTED = "posted"
# "too_large": the platform refused the response's size (its post failed); the caller got
# Function.ResponseSizeTooLarge, which no platform event names.
POSTED_OUTCOMES = ("result", "error", "too_large")
MAX_RESPONSE_BYTES = 6 * 1024 * 1024 + 100  # the platform's limit for a buffered response
INIT_FAILED = "init.failed"
SECRETS_REQUEST = "secrets.get"
SECRETS_ANSWER = "secrets"
SECRETS_FETCHED = "secrets.fetched"
REQUESTS = frozenset({SECRETS_REQUEST, SECRETS_FETCHED})  # records the function waits on for an answer


def encode_invocation_start(
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
    span_name: str,
    span_kind: int,
    request_payload: str | None = None,
    trace_state: str = "",
    init_span: list | None = None,
) -> bytes:
    """The start part of an invocation record (ids as hex, links as [trace_id, span_id,
    sampled], then request_payload, trace_state and init_span where given): byte for byte what encode_json writes of that
    object for arguments of the annotated types, the strings of any type (a test's context may
    hand any request id). Written without building the object first: this runs before every
    handler call, where the object and the encoder's walk over it cost twice as much."""
    link_texts = ",".join([f'["{link.trace_id:032x}","{link.span_id:016x}",{"true" if link.sampled else "false"}]' for link in links]) if links else ""
    text = (
        f'{{"request_id":{own_json_text(request_id)},"function_arn":{own_json_text(function_arn)},'
        f'"trace_id":"{trace_id:032x}","span_id":"{span_id:016x}","parent_span_id":"{f"{parent_span_id:016x}" if parent_span_id else ""}",'
        f'"sampled":{"true" if sampled else "false"},"start_ns":{start_ns:d},'
        f'"cold_start":{"true" if cold_start else "false"},"proactive_init":{"true" if proactive_init else "false"},'
        f'"trigger":{own_json_text(trigger)},"span_name":{own_json_text(span_name)},"span_kind":{span_kind:d},'
        f'"attributes":{own_json_text(attributes)},"links":[{link_texts}]'
    )
    if request_payload is not None:
        text += f',"request_payload":{own_json_text(request_payload)}'
    if trace_state:
        text += f',"trace_state":{own_json_text(trace_state)}'
    if init_span:
        text += f',"init_span":["{init_span[0]}","{init_span[1]}"]'
    return (text + "}").encode("utf-8", "surrogatepass")


def init_mark(init_span: list, start_ns: int, process_start: int | None) -> bytes:
    """What the in-flight slot holds while the handler's module loads, once it made a call: the
    init span's ids (see handler.init_trace), under which the companion ends the calls under
    way there if the init fails (a timeout while the module waits on one), and the process's
    start (shared.unreported_drops.process_start: an earlier environment's is not this one's
    init). No request_id: no invocation's."""
    started = b"null" if process_start is None else b"%d" % process_start
    return b'{"init_span":["%s","%s"],"start_ns":%d,"process_start":%s}' % (init_span[0].encode(), init_span[1].encode(), start_ns, started)


def ids_as_hex(trace_id: int, span_id: int, parent_span_id: int) -> dict:
    """A span's ids as the records carry them: lowercase hex, no parent as ""."""
    return {"trace_id": f"{trace_id:032x}", "span_id": f"{span_id:016x}", "parent_span_id": f"{parent_span_id:016x}" if parent_span_id else ""}


def invocation_end(end_ns: int, error: dict | None = None, http_status: int | None = None) -> dict:
    end: dict = {"end_ns": end_ns}
    if error is not None:
        end["error"] = error
    if http_status is not None:
        end["http_status"] = http_status
    return end


def encode_invocation(start_json: bytes, end: dict, dropped: int = 0) -> bytes:
    """The invocation record's frame, around the start part already encoded (the in-flight
    slot holds the same bytes: they are made once)."""
    head = b'{"version":%d,"type":"invocation",' % VERSION
    if dropped:
        head += b'"dropped":%d,' % dropped
    body = head + b'"start":' + start_json + b',"end":' + encode_json(end) + b"}"
    return len(body).to_bytes(HEADER_BYTES, "big") + body


def span(scope: str, name: str, trace_id: int, span_id: int, parent_span_id: int, kind: int, start_ns: int, end_ns: int, attributes: dict, events: list, links: list, status: tuple, trace_state: str = "", scope_version: str = "", scope_schema_url: str = "", scope_attributes: dict | None = None, parent_remote: bool = False) -> dict:
    """One span of the function's own, for an invocation's `end.spans` or a `spans` record."""
    made = {
        "scope": scope,
        "name": name,
        **ids_as_hex(trace_id, span_id, parent_span_id),
        "kind": kind,
        "start_ns": start_ns,
        "end_ns": end_ns,
        "attributes": attributes,
        "events": events,
        "links": links,
        "status": list(status),
    }
    if trace_state:
        made["trace_state"] = trace_state
    if scope_version:  # the user's tracer's, as `trace.get_tracer(name, version, schema_url)` gave them
        made["scope_version"] = scope_version
    if scope_schema_url:
        made["scope_schema_url"] = scope_schema_url
    if scope_attributes:
        made["scope_attributes"] = scope_attributes
    if parent_remote:
        made["parent_remote"] = True
    return made


def spans(items: list, init_span: list | None = None) -> dict:
    record = {"version": VERSION, "type": SPANS, "spans": items}
    if init_span is not None:
        record["init_span"] = init_span
    return record


def posted(request_id: str, outcome: str, size: int | None = None) -> dict:
    """The runtime posted the invocation's response ("result") or its error ("error"), or the
    platform refused the response's `size` bytes ("too_large")."""
    record = {"version": VERSION, "type": POSTED, "request_id": request_id, "outcome": outcome}
    if size is not None:
        record["size"] = size
    return record


def init_failed(start_ns: int, end_ns: int, error: dict) -> dict:
    """This worker's init failed (Managed Instances): when it began and ended, and why."""
    return {"version": VERSION, "type": INIT_FAILED, "start_ns": start_ns, "end_ns": end_ns, "error": error}


def secrets_request(timeout_ms: int) -> dict:
    return {"version": VERSION, "type": SECRETS_REQUEST, "timeout_ms": timeout_ms}


def secrets_fetched(values: dict) -> dict:
    return {"version": VERSION, "type": SECRETS_FETCHED, "values": values}


def secrets_answer(values: dict, errors: dict, ttl: float | None = None, unavailable: bool = False, ages: dict | None = None) -> dict:
    answer = {"version": VERSION, "type": SECRETS_ANSWER, "values": values, "errors": errors}
    if ages:
        answer["ages"] = ages
    if ttl is not None:
        answer["ttl"] = ttl
    if unavailable:
        answer["unavailable"] = True
    return answer


# validation (companion side: what arrives may come from anything that can open the socket) --


def invocation_problem(record: dict) -> str | None:
    """What makes an invocation record unusable for a span, or None if it is well formed."""
    start, end = record.get("start"), record.get("end")
    if not isinstance(start, dict) or not isinstance(end, dict):
        return "no start or end part"
    return start_problem(start) or end_problem(end)


def posted_problem(record: dict) -> str | None:
    """What makes a `posted` record unusable, or None if it is well formed."""
    request_id = record.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        return "no request_id"
    if record.get("outcome") not in POSTED_OUTCOMES:
        return "an outcome that is not result, error or too_large"
    if record["outcome"] == "too_large" and not (type(record.get("size")) is int and record["size"] > MAX_RESPONSE_BYTES):
        return "a refused response without a size over the limit"
    return None


def init_span_ids(record: dict) -> tuple | None:
    """A `spans` record's `init_span` as (trace_id, span_id) in lowercase hex, or None where it
    has none, or one that is not two ids."""
    ids = record.get("init_span")
    if not (isinstance(ids, list) and len(ids) == 2 and hex_id(ids[0], 32) and hex_id(ids[1], 16)):
        return None
    return ids[0].lower(), ids[1].lower()


def init_failed_problem(record: dict) -> str | None:
    """What makes an `init.failed` record unusable, or None if it is well formed."""
    start_ns, end_ns = record.get("start_ns"), record.get("end_ns")
    if not (type(start_ns) is int and type(end_ns) is int and 0 < start_ns <= end_ns < 2**63):
        return "times that are not a start and an end"
    error = record.get("error")
    if not (isinstance(error, dict) and isinstance(error.get("type"), str) and error["type"]):
        return "an error without a type"
    if not all(isinstance(error.get(part, ""), str) for part in ("message", "stack")):
        return "an error whose message or stack is not text"
    return None


def start_problem(start: dict) -> str | None:
    """What makes an invocation's start part (also read from an in-flight slot) unusable."""
    request_id = start.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        return "no request_id"
    problem = _ids_problem(start)
    if problem is not None:
        return problem
    if not _optional_time(start.get("start_ns")):
        return "a start_ns that is not a time"
    if not isinstance(start.get("sampled", True), bool):
        # Read as a flag by the log lines' ids and as a truth by the spans: they would disagree.
        return "a sampled flag that is not true or false"
    if not _links_ok(start.get("links"), 3):
        return "malformed links"
    if not isinstance(start.get("span_name", ""), str):
        return "a span_name that is not a string"
    if not _span_kind_ok(start.get("span_kind", SERVER)):
        return "a span_kind that is not a span kind"
    if start.get("attributes") is not None and not isinstance(start.get("attributes"), dict):
        return "attributes that are not an object"
    return None


def end_problem(end: dict) -> str | None:
    if not _optional_time(end.get("end_ns")):
        return "an end_ns that is not a time"
    error = end.get("error")
    if error is not None and not isinstance(error, dict):
        return "an error that is not an object"
    if error is not None and not (isinstance(error.get("type"), str) and error["type"]):
        # The handler side names every error it reports (an exception's class, the runtime's
        # errorType); one without a name exported error.type "None".
        return "an error without a type"
    if end.get("spans") is not None and not isinstance(end.get("spans"), list):
        return "spans that are not a list"
    annotations = end.get("annotations")
    if annotations is not None and not (isinstance(annotations, dict) and _annotations_ok(annotations)):
        return "malformed annotations"
    if "posted" in end:
        posted = {"request_id": "-", "outcome": end["posted"], **({"size": end["posted_size"]} if "posted_size" in end else {})}
        problem = posted_problem(posted)
        if problem is not None:
            return "a posted verdict with " + problem
    return None


def _annotations_ok(annotations: dict) -> bool:
    """Nested no deeper than the bridge nests them (see end.annotations: the attribute values it
    keeps), which the companion cleans recursively. What else makes no sense in them (an event
    the function gave a time of none) is left out where the span is made, not the record."""
    attributes = annotations.get("attributes")
    return (attributes is None or isinstance(attributes, dict)) and _nested_within(annotations, MAX_NESTING + 4)


def _nested_within(value: Any, depth: int) -> bool:
    """Whether `value`'s lists and objects nest no deeper than `depth` (walked without recursion)."""
    pending = [(value, 0)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            if level >= depth:
                return False
            pending.extend((child, level + 1) for child in item)
    return True


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
    if not _span_kind_ok(raw.get("kind", INTERNAL)):
        return "a span of an unknown kind"
    if raw.get("attributes") is not None and not isinstance(raw.get("attributes"), dict):
        return "a span whose attributes are not an object"
    status = raw.get("status", [0, ""])
    if not isinstance(status, list) or not status or type(status[0]) is not int or not 0 <= status[0] <= 2:
        return "a span with a malformed status"
    events = raw.get("events") or []
    if not isinstance(events, list) or not all(event_ok(e) for e in events):
        return "a span with malformed events"
    if not _links_ok(raw.get("links"), 4, attributes=True):
        return "a span with malformed links"
    if raw.get("scope_attributes") is not None and not isinstance(raw.get("scope_attributes"), dict):
        return "a span whose scope attributes are not an object"
    return None


def count(value: Any) -> int:
    """A count piggybacked on a record (dropped, internal_errors); 0 when absent or bogus."""
    return value if type(value) is int and 0 < value < 2**31 else 0


def hex_id(value: Any, length: int, zero: bool = False) -> bool:
    # Hex digits only: int(value, 16) also takes a sign, "_" and "0x", and a negative id of
    # the right length (f"{-1:032x}") failed the encoding of every batch that held its span.
    if not isinstance(value, str) or len(value) != length or not is_hex(value, ANY_CASE):
        return False
    return zero or value.strip("0") != ""


def _ids_problem(record: dict) -> str | None:
    if not hex_id(record.get("trace_id"), 32) or not hex_id(record.get("span_id"), 16):
        return "a trace_id or span_id that is not a hex id"
    parent = record.get("parent_span_id")
    if parent and not hex_id(parent, 16):
        return "a parent_span_id that is not a hex id"
    return None


def _span_kind_ok(value: Any) -> bool:
    return type(value) is int and INTERNAL <= value <= CONSUMER


def event_ok(event: Any) -> bool:
    """Whether `event` is a span event as the records carry one: [name, attributes, time_ns]."""
    return isinstance(event, list) and len(event) == 3 and isinstance(event[1], dict) and event[2] is not None and _optional_time(event[2])


def _optional_time(value: Any) -> bool:
    return value is None or (type(value) is int and 0 <= value < 2**63)


def _links_ok(links: Any, size: int, attributes: bool = False) -> bool:
    if links is None:
        return True
    if not isinstance(links, list):
        return False
    for link in links:
        # A user span's link may name no span (zero ids), as the SDK keeps one with attributes.
        if not isinstance(link, list) or len(link) != size or not hex_id(link[0], 32, zero=attributes) or not hex_id(link[1], 16, zero=attributes):
            return False
        if attributes and not (isinstance(link[2], dict) and type(link[3]) is bool):
            return False
    return True
