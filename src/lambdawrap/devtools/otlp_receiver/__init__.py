"""A real OTLP/HTTP receiver for tests and local runs.

It accepts ``POST /v1/traces``, ``/v1/metrics`` and ``/v1/logs`` in OTLP/protobuf and
OTLP/JSON (optionally gzip- or deflate-compressed), keeps what it received in memory as flat,
easy-to-assert dicts, can append them to a JSONL file, and can inject faults (delays, error
statuses, dropped connections) to exercise exporters' retry paths.

This package is not part of the handler side of the Lambda layer, so it imports protobuf and
opentelemetry-proto at module level.

Run it by hand with ``python -m lambdawrap.devtools.otlp_receiver --port 4318 [--jsonl FILE]``.
"""

from lambdawrap.devtools.otlp_receiver.receiver import OtlpReceiver

__all__ = ["OtlpReceiver"]
