"""The trace context in the places AWS services carry it to the consumer, written into the call's
parameters before botocore serializes (and signs) them, in the formats lambdawrap's consumers
read:

  SQS SendMessage(Batch), SNS Publish(Batch)   message attributes `traceparent` (`tracestate`,
                                               `baggage`), type String: skipped (and counted) when
                                               the message would pass 10 attributes, or 256 KiB
                                               (a batch: its messages together)
  EventBridge PutEvents                        each entry's `Detail`, a JSON object: key `_lambdawrap`
                                               (the entries together within 256 KiB)
  Kinesis PutRecord(s)                         the record's `Data`, when it is a JSON object: same key
                                               (a record within 1 MiB, a request within 5 MiB)
  Step Functions StartExecution                `input`, a JSON object: same key (not a named
                                               execution's: its name and input make it idempotent)
  Lambda Invoke (synchronous),                the client context's `custom` object (base64 JSON,
  InvokeWithResponseStream                     skipped and counted past 3,583 bytes; not for a
                                               payload holding its own context at its top)

Nothing the caller passed is changed in place: a copy of each container carries the context
(of the parameters too: botocore_hook hands the carriers a copy). Each service is switchable
(LAMBDAWRAP_PROPAGATE_AWS); a payload that is not a JSON object, or that holds the function's own
`traceparent` at its top, is left as it is; our key an earlier hop left in it is replaced.
"""

from __future__ import annotations

import json
from json.decoder import WHITESPACE

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Any, Callable

PAYLOAD_KEY = "_lambdawrap"
_BLANKS = " \t\n\r"  # JSON's own whitespace
MAX_MESSAGE_ATTRIBUTES = 10
# SQS and SNS count a message's attributes (name, type, value) in its size, and a batch's
# messages together: 256 KiB for SNS, and for an SQS queue at its former default. A queue's own
# limit (1 KiB to 1 MiB) is not known here, so the context goes only where the message stays
# within 256 KiB: past a limit, the service would refuse the call the function made. A single
# message a smaller queue refuses is sent again as written (botocore_hook).
MAX_MESSAGE_BYTES = 256 * 1024
_MESSAGE_TEXT_KEYS = ("MessageBody", "Message", "Subject")
MAX_CLIENT_CONTEXT_BYTES = 3583
MAX_EVENT_BYTES = 256 * 1024  # a PutEvents request's entries together; a Step Functions input
MAX_KINESIS_RECORD_BYTES = 1024 * 1024  # a record's data and partition key
MAX_KINESIS_REQUEST_BYTES = 5 * 1024 * 1024  # a PutRecords request's records together


def inject(service: str, operation: str, params: dict, fields: dict, enabled: tuple) -> bool:
    """Put `fields` (traceparent, ...) where the service carries them; False when a message or
    payload had to go without them (a limit reached)."""
    if not carries(service, operation, enabled):
        return True
    return _CARRIERS[(service, operation)][1](params, fields)


def carries(service: str, operation: str, enabled: tuple) -> bool:
    """Whether the call's parameters would carry the context (inject() may write into them)."""
    carrier = _CARRIERS.get((service, operation))
    return carrier is not None and carrier[0] in enabled


def _with_attributes(attributes: "Any", fields: dict) -> "tuple[dict, dict] | None":
    """(a copy of a message's attributes with the context added, the fields added); None when
    it would not fit."""
    attributes = attributes if isinstance(attributes, dict) else {}
    if "traceparent" in attributes:
        return attributes, {}  # the user's own context stands, with its own tracestate and baggage
    # An attribute of the user's that shares another field's name (a `baggage` of their own
    # meaning, a tracestate) is theirs and stays, as beside an HTTP request's headers: the
    # traceparent goes beside it.
    added = {name: value for name, value in fields.items() if name not in attributes}
    for optional in ("baggage", "tracestate"):
        # Short of room, the traceparent alone: the link is what the consumer needs most.
        if len(attributes) + len(added) <= MAX_MESSAGE_ATTRIBUTES:
            break
        added.pop(optional, None)
    if len(attributes) + len(added) > MAX_MESSAGE_ATTRIBUTES:
        return None
    grown = dict(attributes)
    for name, value in added.items():
        grown[name] = {"DataType": "String", "StringValue": value}
    return grown, added


def _message_attributes(holder: dict, fields: dict, room: int) -> "tuple[dict, bool, int]":
    """(a copy of the message with the context in its attributes, or itself; whether it fitted
    in the attribute count and in `room` bytes; the bytes it grew by)."""
    if "MessageAttributes" in holder and not isinstance(holder["MessageAttributes"], dict):
        return holder, False, 0  # None or not a map: botocore refuses the call as the function wrote it
    update = _with_attributes(holder.get("MessageAttributes"), fields)
    if update is None:
        return holder, False, 0
    attributes, added = update
    if not added:
        return holder, True, 0  # the user's own context stands
    grown = _attributes_bytes(added)
    if grown > room:
        return holder, False, 0
    return dict(holder, MessageAttributes=attributes), True, grown


def _message_bytes(message: dict) -> int:
    """A message's size as SQS and SNS count it: its text and its attributes' names, types and
    values."""
    size = sum(_byte_length(message.get(key)) for key in _MESSAGE_TEXT_KEYS)
    return size + _attributes_bytes(message.get("MessageAttributes"))


def _attributes_bytes(attributes: "Any") -> int:
    if not isinstance(attributes, dict):
        return 0
    size = 0
    for name, value in attributes.items():
        size += _byte_length(name)
        if isinstance(value, dict):
            size += _byte_length(value.get("DataType")) + _byte_length(value.get("StringValue")) + _byte_length(value.get("BinaryValue"))
        elif isinstance(value, str):
            size += len("String") + _byte_length(value)  # the fields lambdawrap adds
    return size


def _byte_length(value: "Any") -> int:
    if isinstance(value, str):
        return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    return 0


def _json_member(key: str, blob: bool = False) -> "Update":
    """The same for a JSON object held under `key` (EventBridge Detail, Kinesis Data, ...): text,
    or UTF-8 bytes where the parameter is a blob (Kinesis Data); anything else is left for
    botocore to take or refuse as the function wrote it."""

    def update(holder: dict, fields: dict, room: int) -> "tuple[dict, bool, int]":
        value = holder.get(key)
        if isinstance(value, str):
            if blob and not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    # A lone surrogate (a name decoded with surrogateescape): botocore fails to
                    # encode the blob, and must fail as on the function's text, not ours.
                    return holder, True, 0
            text = value
        elif blob and isinstance(value, (bytes, bytearray)):
            try:
                text = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                return holder, True, 0  # not UTF-8 JSON: not ours to read
        else:
            return holder, True, 0
        updated = _json_with_context(text, fields)
        if updated is None:
            return holder, True, 0
        encoded = updated.encode("utf-8", "surrogatepass")
        grown = len(encoded) - _byte_length(value)
        if grown > room:
            return holder, False, 0
        return dict(holder, **{key: updated if isinstance(value, str) else encoded}), True, grown

    return update


def _json_with_context(text: str, fields: dict) -> "str | None":
    """`text`, a JSON object, with the context under PAYLOAD_KEY, inserted as its first member:
    the rest stays byte for byte (numbers, spacing, repeated keys; a parse and a dump would
    change them, and write `1e400` as `Infinity`, which is not JSON). None when it is not an
    object, or has a top-level `traceparent` of the function's. A PAYLOAD_KEY it holds is an
    earlier hop's (a function forwarding the event it got): it goes, or the consumer would
    take that hop for this call's parent."""
    document = _json_object(text)
    if document is None or _has_own_context(document):
        return None
    if PAYLOAD_KEY in document:
        text = _without_member(text, PAYLOAD_KEY)
        if text is None:
            return None
        document = {key: None for key in document if key != PAYLOAD_KEY}
    context = {k: v for k, v in fields.items() if k in ("traceparent", "tracestate")}
    return _first_member(text, json.dumps(PAYLOAD_KEY) + ":" + json.dumps(context, separators=(",", ":")), not document)


def _without_member(text: str, name: str) -> "str | None":
    """`text`, a JSON object, without its top-level members named `name`, the rest byte for
    byte; None where it cannot be walked (it parsed, so it can)."""
    members = _members(text)
    if members is None:
        return None
    kept_from, pieces = 0, []
    for key, start, _, _, after in members:
        if key == name:
            # The member and its comma go (the one before it, for the last member).
            pieces.append(text[kept_from:start])
            kept_from = after
    if not pieces:
        return text
    rest = text[kept_from:]
    joined = "".join(pieces)
    if rest.lstrip(_BLANKS).startswith("}") and joined.rstrip(_BLANKS).endswith(","):
        joined = joined.rstrip(_BLANKS)[:-1]
    return joined + rest


def _members(text: str) -> "list[tuple[str, int, int, int, int]] | None":
    """The top-level members of `text`, a JSON object that parsed, in order: (key, where its
    blanks before the key start, where its value starts, where its value ends, past its comma
    (at the closing "}" for the last)); None where it cannot be walked."""
    decoder = json.JSONDecoder()

    def after_blanks(at: int) -> int:
        return WHITESPACE.match(text, at).end()  # JSON's own blanks, as its decoder skips them

    position = after_blanks(0) + 1  # past the "{"
    found: list = []
    try:
        while True:
            start = position
            position = after_blanks(position)
            if text[position] == "}":
                return found
            key, position = decoder.raw_decode(text, position)
            value_start = after_blanks(after_blanks(position) + 1)  # past the ":"
            _, value_end = decoder.raw_decode(text, value_start)
            position = after_blanks(value_end)
            ends = text[position] == "}"
            if not ends:
                position += 1  # the ","
            found.append((key, start, value_start, value_end, position))
            if ends:
                return found
    except (ValueError, IndexError, RecursionError):
        return None


def _first_member(text: str, member: str, empty: bool) -> str:
    """`text`, a JSON object (`empty`: without members), with `member` inserted first."""
    opening = len(text) - len(text.lstrip(_BLANKS)) + 1
    return text[:opening] + member + ("" if empty else ",") + text[opening:]


def _json_object(text: str) -> "dict | None":
    """`text` parsed, when it is a JSON object; None otherwise (not parsed unless it opens as one)."""
    if text.lstrip()[:1] != "{":
        return None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def _has_own_context(document: dict) -> bool:
    """Whether a payload carries the function's own context at its top: a `traceparent` (its
    propagator's inject(), which the consumer reads when our key is not there): it stands, as
    an HTTP request's own traceparent does."""
    return isinstance(document.get("traceparent"), str)


# A carrier's update of one message: (a copy with the context, or the message itself; whether it
# fitted; the bytes it grew by), given the message, the fields and the bytes it may grow by.
Update = "Callable[[dict, dict, int], tuple[dict, bool, int]]"


def _single(update: Update, size_of: "Callable[[dict], int]", limit: int) -> "Callable[[dict, dict], bool]":
    """A carrier for a call that sends one message of at most `limit` bytes (as `size_of` counts
    them): the parameters themselves are updated (botocore's own dict, made for this call)."""

    def inject(params: dict, fields: dict) -> bool:
        updated, fitted, _ = update(params, fields, limit - size_of(params))
        params.update(updated)
        return fitted

    return inject


def _each(entries_key: str, update: Update, size_of: "Callable[[dict], int]", limit: int) -> "Callable[[dict, dict], bool]":
    """A carrier for a batch whose entries under `entries_key` take at most `limit` bytes
    together (the list and the entries copied): each entry gains the context while they fit."""

    def inject(params: dict, fields: dict) -> bool:
        entries = params.get(entries_key)
        if not isinstance(entries, (list, tuple)):  # botocore takes either for a list
            return True
        total = sum(size_of(entry) for entry in entries if isinstance(entry, dict))
        copied, complete = [], True
        for entry in entries:
            if isinstance(entry, dict):
                updated, fitted, grown = update(entry, fields, limit - total)
                total += grown
                entry, complete = updated, complete and fitted
            copied.append(entry)
        params[entries_key] = copied
        return complete

    return inject


def _event_entry_bytes(entry: dict) -> int:
    """A PutEvents entry's size as EventBridge counts it (its documented calculation)."""
    size = 14 if entry.get("Time") is not None else 0
    size += _byte_length(entry.get("Source")) + _byte_length(entry.get("DetailType")) + _byte_length(entry.get("Detail"))
    resources = entry.get("Resources")
    return size + (sum(_byte_length(r) for r in resources) if isinstance(resources, (list, tuple)) else 0)


def _kinesis_record_bytes(record: dict) -> int:
    return _byte_length(record.get("Data")) + _byte_length(record.get("PartitionKey"))


def _bounded(update: Update, size_of: "Callable[[dict], int]", limit: int) -> Update:
    """`update` within a per-entry limit as well as the batch's (Kinesis: 1 MiB a record)."""
    return lambda entry, fields, room: update(entry, fields, min(room, limit - size_of(entry)))


def _member_bytes(key: str) -> "Callable[[dict], int]":
    return lambda holder: _byte_length(holder.get(key))


def _named_as_written(carrier: "Callable[[dict, dict], bool]") -> "Callable[[dict, dict], bool]":
    """A carrier for StartExecution, which is idempotent by name and input (STANDARD workflows):
    the same named call made again (by a retried invocation, or the function's own retry) is
    answered with the execution already running, and one whose input differs is refused as
    ExecutionAlreadyExists. The context differs at each call, so a named execution's input goes as
    the function wrote it: False (counted) where it would have gained the context."""

    def inject(params: dict, fields: dict) -> bool:
        if not params.get("name"):
            return carrier(params, fields)
        trial = dict(params)
        return carrier(trial, fields) and trial.get("input") is params.get("input")

    return inject


def _client_context(params: dict, fields: dict) -> bool:
    if params.get("InvocationType", "RequestResponse") != "RequestResponse":
        return True  # the platform passes a client context to synchronous invocations only
    if _carries_own_context(params.get("Payload")):
        # The function's own context at the top of the payload (its propagator's inject()):
        # the function invoked reads a client context first, so ours would outrank it.
        return True
    import base64  # deferred: only Lambda Invoke calls need it

    existing = params.get("ClientContext")
    if existing is not None and not isinstance(existing, str):
        return True  # bytes, say: botocore refuses the call as the function wrote it
    try:
        # Only base64 as written (no character skipped, as b64decode does by default: a line
        # break would make the header botocore sends fail) of UTF-8 JSON: another client context
        # rewritten clean would be sent where the function's own would fail or be refused.
        text = base64.b64decode(existing, validate=True).decode("utf-8") if existing else "{}"
        context = json.loads(text)
    except (ValueError, TypeError, RecursionError):
        return True  # not ours to repair: the call fails or goes as the user wrote it
    if not isinstance(context, dict):
        return True
    custom = context.get("custom")
    if custom is not None and (not isinstance(custom, dict) or "traceparent" in custom):
        return True  # the function's own value (a string, a list) or context: not ours to replace
    w3c = context.get("w3c")
    if isinstance(w3c, dict) and "traceparent" in w3c:
        return True  # the function's own context where the runtimes' context.w3c() reads it
    # A tracestate of the function's own stays, as on an HTTP request.
    ours = json.dumps({k: v for k, v in fields.items() if k in ("traceparent", "tracestate") and k not in (custom or ())}, separators=(",", ":"))
    written = _with_custom_members(text, ours[1:-1], custom)
    if written is None:
        return True  # left as the function wrote it
    encoded = base64.b64encode(written.encode("utf-8")).decode("ascii")
    if len(encoded) > MAX_CLIENT_CONTEXT_BYTES:
        return False
    params["ClientContext"] = encoded
    return True


def _with_custom_members(text: str, members: str, custom: "dict | None") -> "str | None":
    """A client context's text with `members` first in its `custom` object, every other byte as
    the function wrote it (a parse and a dump would write `1e5` as `100000.0`, an escape as its
    character, and drop repeated keys); None where it cannot be walked."""
    found = _members(text)
    if found is None:
        return None
    customs = [member for member in found if member[0] == "custom"]
    if not customs:
        return _first_member(text, '"custom":{' + members + "}", not found)
    # The last, as a parser keeps it: an object, or null (`custom` None).
    _, _, value_start, value_end, _ = customs[-1]
    if custom is None:
        return text[:value_start] + "{" + members + "}" + text[value_end:]
    return text[:value_start] + _first_member(text[value_start:value_end], members, not custom) + text[value_end:]


def _carries_own_context(payload: "Any") -> bool:
    """Whether an Invoke payload (text or bytes; a file is not read) is a JSON object holding
    the function's own context at its top, a `traceparent` text (our key there is an earlier
    hop's, the event forwarded: the client context, read first, outranks it)."""
    if isinstance(payload, (bytes, bytearray)):
        if b"traceparent" not in payload:
            return False  # the usual payload: no parse
        try:
            payload = bytes(payload).decode("utf-8")
        except UnicodeDecodeError:
            return False
    elif not isinstance(payload, str) or "traceparent" not in payload:
        return False
    document = _json_object(payload)
    return document is not None and _has_own_context(document)


_CARRIERS = {
    ("sqs", "SendMessage"): ("sqs", _single(_message_attributes, _message_bytes, MAX_MESSAGE_BYTES)),
    ("sqs", "SendMessageBatch"): ("sqs", _each("Entries", _message_attributes, _message_bytes, MAX_MESSAGE_BYTES)),
    ("sns", "Publish"): ("sns", _single(_message_attributes, _message_bytes, MAX_MESSAGE_BYTES)),
    ("sns", "PublishBatch"): ("sns", _each("PublishBatchRequestEntries", _message_attributes, _message_bytes, MAX_MESSAGE_BYTES)),
    ("events", "PutEvents"): ("eventbridge", _each("Entries", _json_member("Detail"), _event_entry_bytes, MAX_EVENT_BYTES)),
    ("kinesis", "PutRecord"): ("kinesis", _single(_json_member("Data", blob=True), _kinesis_record_bytes, MAX_KINESIS_RECORD_BYTES)),
    ("kinesis", "PutRecords"): ("kinesis", _each("Records", _bounded(_json_member("Data", blob=True), _kinesis_record_bytes, MAX_KINESIS_RECORD_BYTES), _kinesis_record_bytes, MAX_KINESIS_REQUEST_BYTES)),
    ("stepfunctions", "StartExecution"): ("stepfunctions", _named_as_written(_single(_json_member("input"), _member_bytes("input"), MAX_EVENT_BYTES))),
    ("stepfunctions", "StartSyncExecution"): ("stepfunctions", _single(_json_member("input"), _member_bytes("input"), MAX_EVENT_BYTES)),
    ("lambda", "Invoke"): ("lambda", _client_context),
    ("lambda", "InvokeWithResponseStream"): ("lambda", _client_context),
}
