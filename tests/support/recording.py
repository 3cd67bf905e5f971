"""The invocation wrapper with a channel that keeps what it would send (no companion)."""

from __future__ import annotations

import json
import types

from lambdawrap.handler.invocation import InvocationTracer
from lambdawrap.shared import records
from lambdawrap.shared.framing import HEADER_BYTES, encode
from lambdawrap.shared.settings import Settings

CONTEXT = types.SimpleNamespace(aws_request_id="8476a536-e9f4-11e8-9739-2dfe598c3fcd", invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:f")


class RecordingChannel:
    def __init__(self) -> None:
        self.records: list = []

    def send(self, record: dict) -> bool:
        # Through the real encoding: what the companion would decode.
        self.records.append(json.loads(encode(record)[HEADER_BYTES:]))
        return True

    def send_invocation(self, start_json: bytes, end: dict) -> bool:
        self.records.append(json.loads(records.encode_invocation(start_json, end)[HEADER_BYTES:]))
        return True

    companion_refused = False

    def connect_ahead(self) -> None:
        pass  # nothing to connect: the records are kept here

    def companion_gone(self) -> bool:
        return False


def tracer(**settings_values) -> tuple:
    """(InvocationTracer, RecordingChannel) with the given settings."""
    channel = RecordingChannel()
    return InvocationTracer(Settings(**settings_values), channel, environ={}), channel


def recorded(event: object, result: object = None, **settings_values) -> dict:
    """The invocation record a handler returning `result` sends for `event`."""
    wrapper, channel = tracer(**settings_values)
    wrapper.wrap(lambda e, c: result)(event, CONTEXT)
    (record,) = channel.records
    return record
