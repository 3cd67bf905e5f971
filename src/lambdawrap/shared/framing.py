"""How records travel on the local channel: frames of a 4-byte big-endian length, then compact
JSON. Both ends use this module; what the records say is `records`' concern."""

from __future__ import annotations

import json
from json.encoder import c_make_encoder, encode_basestring

HEADER_BYTES = 4
MAX_RECORD_BYTES = 256 * 1024  # one invocation's record; a bigger one is dropped and counted
MAX_ANSWER_BYTES = 16 * 1024 * 1024  # an answer to a request (secrets)


# One encoder for every record: json.dumps builds a new one per call when given options. Text
# goes as UTF-8, not as ASCII escapes: a CJK character is 3 bytes rather than 6, an emoji 4
# rather than 12, so a record of non-Latin text fits the channel's limits as Latin text does.
# Lone surrogates go through as they came (surrogatepass, as decode_json reads them).
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=repr, ensure_ascii=False)


# The same C encoder, built once and without the cycle check: json.dumps builds one per call
# (~0.6 µs), and values lambdawrap makes itself from decoded events hold no reference cycles.
_OWN_VALUES = c_make_encoder(None, repr, encode_basestring, None, ":", ",", False, False, True) if c_make_encoder else None


def encode_json(value: object) -> bytes:
    """Compact JSON bytes. Values JSON cannot carry become their repr (never an exception)."""
    return _ENCODER.encode(value).encode("utf-8", "surrogatepass")


def own_json_text(value: object) -> str:
    """The text encode_json gives for a value lambdawrap made itself (no reference cycles, which
    would raise RecursionError here rather than ValueError)."""
    if type(value) is str:  # not __class__, which a proxy or a mock may claim
        return encode_basestring(value)
    if _OWN_VALUES is None:  # an interpreter without the C accelerator
        return _ENCODER.encode(value)
    return "".join(_OWN_VALUES(value, 0))


_DECODER = json.JSONDecoder()
_JSON_SPACE = " \t\n\r"


def decode_json(data: bytes) -> object:
    """json.loads(data), without its per-call detours for what the channel, the Extensions API
    and the Telemetry API send: UTF-8 text that starts with an object or an array. Raises
    ValueError where json.loads does, and RecursionError for nesting too deep for the decoder
    (one Python frame less deep here: before 3.12 the decoder counts those, so the limit may
    come one level later)."""
    # An ASCII "{" or "[" then a byte that is not NUL: json.loads would detect UTF-8 too (a BOM,
    # UTF-16 and UTF-32 begin otherwise), and nothing before the value is whitespace.
    if data[:1] in (b"{", b"[") and data[1:2] != b"\x00":
        text = data.decode("utf-8", "surrogatepass")
        value, end = _DECODER.raw_decode(text)
        if end != len(text):
            rest = text[end:]
            if rest.strip(_JSON_SPACE):
                raise json.JSONDecodeError("Extra data", text, len(text) - len(rest.lstrip(_JSON_SPACE)))
        return value
    return json.loads(data)


def encode(record: dict) -> bytes:
    """One frame."""
    body = encode_json(record)
    return len(body).to_bytes(HEADER_BYTES, "big") + body


class FrameReader:
    """Splits a byte stream into decoded records."""

    def __init__(self, max_bytes: int = MAX_RECORD_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_bytes

    def feed(self, data: bytes) -> list:
        """The complete records so far; raises ValueError on a corrupt stream."""
        self._buffer += data
        records = []
        while len(self._buffer) >= HEADER_BYTES:
            length = int.from_bytes(self._buffer[:HEADER_BYTES], "big")
            if length > self._max:
                raise ValueError(f"frame of {length} bytes exceeds {self._max}")
            if len(self._buffer) < HEADER_BYTES + length:
                break
            body = bytes(self._buffer[HEADER_BYTES : HEADER_BYTES + length])
            del self._buffer[: HEADER_BYTES + length]
            try:
                records.append(decode_json(body))
            except RecursionError:  # nesting too deep for the decoder: as corrupt as bad JSON
                raise ValueError("record nested too deeply") from None
        return records

    def pending(self) -> int:
        """The bytes of a frame not complete yet."""
        return len(self._buffer)
