"""Text the OTLP encoding can carry. Strings decoded from JSON may hold lone surrogates (an
escape like \\udc80 in the channel's records, or in the Telemetry API's log lines), which no
UTF-8 encoder takes: protobuf refuses the whole batch, and a batch that can never be sent would
hold back every span or log record behind it. They become U+FFFD, as a decoder replaces bytes
it cannot read."""

from __future__ import annotations


def encodable(text: str) -> str:
    """`text` if UTF-8 can encode it (nearly always: a check of its characters), else `text`
    with each lone surrogate replaced by U+FFFD (a pair made of two is joined into its
    character, as UTF-16 reads it)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text
