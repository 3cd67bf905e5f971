"""The trace context in the places AWS services carry it to the consumer, written into the call's
parameters before botocore serializes (and signs) them, in the formats lambdawrap's consumers
read:

  SQS SendMessage(Batch), SNS Publish(Batch)   message attributes `traceparent` (`tracestate`,
                                               `baggage`), type String: skipped (and counted) when
                                               the message would pass 10 attributes
  EventBridge PutEvents                        each entry's `Detail`, a JSON object: key `_lambdawrap`
  Kinesis PutRecord(s)                         the record's `Data`, when it is a JSON object: same key
  Step Functions StartExecution                `input`, a JSON object: same key
  Lambda Invoke (synchronous)                  the client context's `custom` object (base64 JSON,
                                               skipped and counted past 3,583 bytes)

Nothing the caller passed is changed in place: a copy of each container carries the context.
Each service is switchable (LAMBDAWRAP_PROPAGATE_AWS); a payload that is not a JSON object, or
already carries the key, is left as it is.
"""

from __future__ import annotations

import json

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Any, Callable

PAYLOAD_KEY = "_lambdawrap"
MAX_MESSAGE_ATTRIBUTES = 10
MAX_CLIENT_CONTEXT_BYTES = 3583
MAX_EVENT_BYTES = 256 * 1024  # an EventBridge entry; also a Step Functions input
MAX_KINESIS_RECORD_BYTES = 1024 * 1024


def inject(service: str, operation: str, params: dict, fields: dict, enabled: tuple) -> bool:
    """Put `fields` (traceparent, ...) where the service carries them; False when a message or
    payload had to go without them (a limit reached)."""
    carrier = _CARRIERS.get((service, operation))
    if carrier is None or carrier[0] not in enabled:
        return True
    return carrier[1](params, fields)


def _with_attributes(attributes: "Any", fields: dict) -> "dict | None":
    """A copy of a message's attributes with the context added; None when it would not fit."""
    attributes = attributes if isinstance(attributes, dict) else {}
    if any(name in attributes for name in fields):
        return attributes  # the user's own context stands
    if len(attributes) + len(fields) > MAX_MESSAGE_ATTRIBUTES:
        return None
    added = dict(attributes)
    for name, value in fields.items():
        added[name] = {"DataType": "String", "StringValue": value}
    return added


def _message_attributes(holder: dict, fields: dict) -> "tuple[dict, bool]":
    """(a copy of the message with the context in its attributes, or itself; whether it fitted)."""
    attributes = _with_attributes(holder.get("MessageAttributes"), fields)
    if attributes is None:
        return holder, False
    return dict(holder, MessageAttributes=attributes), True


def _json_member(key: str, limit: int) -> "Callable[[dict, dict], tuple[dict, bool]]":
    """The same for a JSON object held under `key` (EventBridge Detail, Kinesis Data, ...)."""

    def update(holder: dict, fields: dict) -> "tuple[dict, bool]":
        updated = _json_with_context(holder.get(key), fields, limit)
        if not updated:
            return holder, updated is not False
        return dict(holder, **{key: updated}), True

    return update


def _json_with_context(text: "Any", fields: dict, limit: int) -> "Any":
    """`text` (str or bytes holding a JSON object) with the context under PAYLOAD_KEY, of the same
    type; None when it is not an object or already has the key; False when it would not fit."""
    if not isinstance(text, (str, bytes, bytearray)) or text.lstrip()[:1] not in ("{", b"{"):
        return None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or PAYLOAD_KEY in document:
        return None
    document[PAYLOAD_KEY] = {k: v for k, v in fields.items() if k in ("traceparent", "tracestate")}
    out = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    if len(out.encode("utf-8")) > limit:
        return False
    return out if isinstance(text, str) else out.encode("utf-8")


def _single(update: "Callable[[dict, dict], tuple[dict, bool]]") -> "Callable[[dict, dict], bool]":
    """A carrier for a call that sends one message: the parameters themselves are updated (they
    are botocore's own dict, made for this call)."""

    def inject(params: dict, fields: dict) -> bool:
        updated, fitted = update(params, fields)
        params.update(updated)
        return fitted

    return inject


def _each(entries_key: str, update: "Callable[[dict, dict], tuple[dict, bool]]") -> "Callable[[dict, dict], bool]":
    """A carrier for a batch: each entry under `entries_key` (the list and the entries copied)."""

    def inject(params: dict, fields: dict) -> bool:
        entries = params.get(entries_key)
        if not isinstance(entries, list):
            return True
        copied, complete = [], True
        for entry in entries:
            if isinstance(entry, dict):
                entry, fitted = update(entry, fields)
                complete = complete and fitted
            copied.append(entry)
        params[entries_key] = copied
        return complete

    return inject


def _client_context(params: dict, fields: dict) -> bool:
    if params.get("InvocationType", "RequestResponse") != "RequestResponse":
        return True  # the platform passes a client context to synchronous invocations only
    import base64  # deferred: only Lambda Invoke calls need it

    existing = params.get("ClientContext")
    try:
        context = json.loads(base64.b64decode(existing)) if existing else {}
    except (ValueError, TypeError):
        return True  # not ours to repair: the call fails or goes as the user wrote it
    if not isinstance(context, dict):
        return True
    custom = context.get("custom") if isinstance(context.get("custom"), dict) else {}
    if "traceparent" in custom:
        return True
    context = dict(context, custom=dict(custom, **{k: v for k, v in fields.items() if k in ("traceparent", "tracestate")}))
    encoded = base64.b64encode(json.dumps(context, separators=(",", ":")).encode("utf-8")).decode("ascii")
    if len(encoded) > MAX_CLIENT_CONTEXT_BYTES:
        return False
    params["ClientContext"] = encoded
    return True


_CARRIERS = {
    ("sqs", "SendMessage"): ("sqs", _single(_message_attributes)),
    ("sqs", "SendMessageBatch"): ("sqs", _each("Entries", _message_attributes)),
    ("sns", "Publish"): ("sns", _single(_message_attributes)),
    ("sns", "PublishBatch"): ("sns", _each("PublishBatchRequestEntries", _message_attributes)),
    ("events", "PutEvents"): ("eventbridge", _each("Entries", _json_member("Detail", MAX_EVENT_BYTES))),
    ("kinesis", "PutRecord"): ("kinesis", _single(_json_member("Data", MAX_KINESIS_RECORD_BYTES))),
    ("kinesis", "PutRecords"): ("kinesis", _each("Records", _json_member("Data", MAX_KINESIS_RECORD_BYTES))),
    ("stepfunctions", "StartExecution"): ("stepfunctions", _single(_json_member("input", MAX_EVENT_BYTES))),
    ("stepfunctions", "StartSyncExecution"): ("stepfunctions", _single(_json_member("input", MAX_EVENT_BYTES))),
    ("lambda", "Invoke"): ("lambda", _client_context),
}
