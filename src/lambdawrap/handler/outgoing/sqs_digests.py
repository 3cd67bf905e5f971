"""SQS answers a send with `MD5OfMessageAttributes`, the digest of the attributes it received:
ours (the trace context, see aws_carriers) among them. The function gets the answer it would
have got without them: the digest of its own attributes, or no such key where it sent none (a
function checking the digest, as SQS documents and other SDKs do, found a mismatch).

The digest is SQS's documented one: each attribute, in the order of the names (letters, digits, `-`, `_`, `.`), as
its name, its data type (each a 4-byte big-endian length and the UTF-8 bytes), a transport byte
(1 for String and Number types, 2 for Binary) and its value (a 4-byte length and the bytes)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Any

_DIGEST_KEY = "MD5OfMessageAttributes"
_NONE = object()  # no digest to restore: the function's attributes are not ones SQS takes


def sent_as_written(operation: str, params: dict) -> "tuple | None":
    """What the function gave to the send before the carriers wrote into the parameters (they
    copy what they change: these stay as the function wrote them), as (operation, attributes or
    entries); None for other calls."""
    if operation == "SendMessage":
        return operation, params.get("MessageAttributes")
    if operation == "SendMessageBatch":
        entries = params.get("Entries")
        return (operation, list(entries)) if isinstance(entries, (list, tuple)) else None
    return None


def to_restore(as_written: tuple, params: dict) -> "dict | None":
    """{entry Id (None for SendMessage): (the digest SQS would have answered for the function's
    own attributes (None: it sent none), the digest of those sent, ours among them)} for each
    message the carriers gave attributes; None where they gave none."""
    operation, written = as_written
    restore: dict = {}
    if operation == "SendMessage":
        sent = params.get("MessageAttributes")
        if sent is not written:
            restore[None] = (digest(written), digest(sent))
    else:
        for entry, sent in zip(written, params.get("Entries") or ()):
            if sent is not entry and isinstance(entry, dict) and isinstance(sent, dict) and sent.get("MessageAttributes") is not entry.get("MessageAttributes"):
                restore[entry.get("Id")] = (digest(entry.get("MessageAttributes")), digest(sent.get("MessageAttributes")))
    restore = {key: value for key, value in restore.items() if _NONE not in value}
    return restore or None


def restore(restore: dict, parsed: "Any") -> None:
    """Put the function's own digests in the answer (`to_restore`'s)."""
    if not isinstance(parsed, dict):
        return
    if None in restore:
        _put(parsed, restore[None])
    for entry in parsed.get("Successful") or ():
        if isinstance(entry, dict) and entry.get("Id") in restore:
            _put(entry, restore[entry["Id"]])


def _put(answer: dict, digests: tuple) -> None:
    value, sent = digests
    if answer.get(_DIGEST_KEY) != sent:
        # Not the digest of what was sent (ours among it): an answer a handler of the
        # function's made up (a cache, a before-send stub), or none of a message that went
        # with attributes. Nothing of ours in it.
        return
    if value is None:
        del answer[_DIGEST_KEY]
    else:
        answer[_DIGEST_KEY] = value


def digest(attributes: "Any") -> "Any":
    """SQS's MD5OfMessageAttributes of `attributes` as botocore takes them; None for none, _NONE
    for attributes SQS would not take (botocore or SQS refuses them: no answer to restore)."""
    if attributes is None or (isinstance(attributes, dict) and not attributes):
        return None
    if not isinstance(attributes, dict):
        return _NONE
    import hashlib

    md5 = hashlib.md5(usedforsecurity=False)
    try:
        encoded = sorted((name.encode("utf-8"), value) for name, value in attributes.items())
        for name, value in encoded:
            data_type = value["DataType"]
            md5.update(_sized(name) + _sized(data_type.encode("utf-8")))
            if data_type.startswith("Binary"):
                binary = value["BinaryValue"]
                md5.update(b"\x02" + _sized(binary.encode("utf-8") if isinstance(binary, str) else bytes(binary)))
            else:
                md5.update(b"\x01" + _sized(value["StringValue"].encode("utf-8")))
    except Exception:  # noqa: BLE001 - not a shape SQS takes: the call fails as it would without us
        return _NONE
    return md5.hexdigest()


def _sized(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data
