"""A collector's answers over OTLP/gRPC, which the gRPC exporters drop: the answer to an
accepted request (an OTLP partial success says what was rejected in it) and the code of a
refused one (the exporter only says it failed). Both reach collector_answers as the HTTP
transport's do.

The exporter's stub is wrapped, and so is the factory it remakes the stub with (after an
UNAVAILABLE answer it opens a new channel): every Export call passes here, its request,
answer and error unchanged. Imported only when a signal is exported over gRPC."""

from __future__ import annotations

import time
from typing import Any

import grpc

from lambdawrap.companion.collector_answers import GRPC_RETRY_ADVISED, GRPC_TOO_LARGE, Answers

# The server's words for a message over its maximum size (grpc-core: "Received message larger
# than max (N vs. M)"; a client-side limit: "Sent message larger than max").
_TOO_LARGE_WORDS = "message larger than max"
_RETRY_INFO = "google.rpc.retryinfo-bin"  # the trailer of a google.rpc.RetryInfo
# The codes OTLP retries (RESOURCE_EXHAUSTED only with a RetryInfo): a RetryInfo on another
# refusal holds nothing back, the exporter retries none.
_RETRYABLE = frozenset(("CANCELLED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS"))
# How long a RESOURCE_EXHAUSTED not to retry tells the exporter to wait before retrying: longer
# than any export's timeout, so it gives up at once.
_NEVER_S = 24 * 3600


def tap(exporter: object) -> Answers | None:
    """The answers to `exporter`'s requests from now on; None if it is not an OTLP/gRPC exporter
    of the shape this knows (it then exports as it would, its answers unread)."""
    make_stub = getattr(exporter, "_stub", None)
    stub = getattr(exporter, "_client", None)
    if not callable(make_stub) or stub is None or not callable(getattr(stub, "Export", None)):
        return None
    answers = Answers()

    def tapped_stub(channel: Any) -> _TappedStub:
        return _TappedStub(make_stub(channel), answers)

    exporter._stub = tapped_stub
    exporter._client = _TappedStub(stub, answers)
    return answers


class _TappedStub:
    """A stub whose Export tells `answers` what the collector answered."""

    def __init__(self, stub: Any, answers: Answers) -> None:
        self._stub = stub
        self._answers = answers

    def Export(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - the stub's method name
        answers = self._answers
        answers.last_status = None
        started = time.monotonic()
        try:
            answer = self._stub.Export(*args, **kwargs)
        except grpc.RpcError as error:
            code = error.code() if callable(getattr(error, "code", None)) else None
            retry_info, too_large = _retry_info(error), _over_the_message_size(error)
            retryable = getattr(code, "name", None) in _RETRYABLE
            not_retried = code == grpc.StatusCode.RESOURCE_EXHAUSTED and (too_large or retry_info is None)
            if retryable and not not_retried:
                answers.tell_failed()
            wait_s = _delay_s(retry_info)
            if wait_s is not None and not too_large and retryable:
                answers.hold_off(wait_s)
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                # Retryable only when the server says when (RetryInfo), as OTLP has it, and a
                # message over its size never is; the exporter would retry it regardless, with
                # backoff, until its timeout.
                if not_retried:
                    answers.last_status = GRPC_TOO_LARGE if too_large else code.name
                    raise _NotToBeRetried(error) from error
                answers.last_status = GRPC_RETRY_ADVISED
                raise
            answers.last_status = getattr(code, "name", None)
            raise
        finally:
            answers.last_request_s = time.monotonic() - started
        answers.last_status = "OK"
        answers.hold_off(0.0)
        if answers.answered is not None:
            answers.answered(answer)
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)


def _retry_info(error: grpc.RpcError) -> bytes | str | None:
    """The RetryInfo trailer of a refusal (the server's "retry then"), None if it has none."""
    metadata = error.trailing_metadata() if callable(getattr(error, "trailing_metadata", None)) else None
    return next((value for key, value in metadata or () if key == _RETRY_INFO), None)


def _delay_s(retry_info: bytes | str | None) -> float | None:
    """The wait a RetryInfo trailer asks for, in seconds; None if there is none or it cannot
    be read."""
    if not isinstance(retry_info, bytes):
        return None
    try:
        from google.rpc import error_details_pb2  # the gRPC exporter's own dependency

        delay = error_details_pb2.RetryInfo.FromString(retry_info).retry_delay
        return delay.seconds + delay.nanos / 1e9
    except Exception:  # noqa: BLE001 - an unreadable trailer says nothing
        return None


def _over_the_message_size(error: grpc.RpcError) -> bool:
    details = error.details() if callable(getattr(error, "details", None)) else None
    return isinstance(details, str) and _TOO_LARGE_WORDS in details.lower()


class _NotToBeRetried(grpc.RpcError):
    """A RESOURCE_EXHAUSTED not to retry (a message over the server's size, or no RetryInfo),
    as the exporter reads it (code, details), with the advice not to retry within the export's
    deadline (a google.rpc.RetryInfo trailer, which the exporter honours): otherwise it would
    retry with backoff until its timeout (7 s of 10 by default), and before every halving of a
    batch too large."""

    def __init__(self, error: grpc.RpcError) -> None:
        super().__init__(str(error))
        self._error = error

    def code(self) -> Any:
        return self._error.code()

    def details(self) -> Any:
        return self._error.details()

    def trailing_metadata(self) -> tuple:
        from google.rpc.error_details_pb2 import RetryInfo

        advice = RetryInfo()
        advice.retry_delay.seconds = _NEVER_S
        metadata = getattr(self._error, "trailing_metadata", None)
        return (*(metadata() or () if callable(metadata) else ()), (_RETRY_INFO, advice.SerializeToString()))
