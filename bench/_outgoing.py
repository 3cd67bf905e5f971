"""The worker of the outgoing-call phase (bench/run.py --only outgoing; harness/phases/outgoing.py):
added CPU per outgoing call in the function's process, bare vs lambdawrap vs OpenTelemetry's
instrumentation of the library.

    python bench/_outgoing.py CONFIG MOTO_URL HTTP_URL     (started by the phase, one per config)

Three worker processes (each patches the libraries its own way) make the same calls: boto3
`DynamoDB.ListTables` against a local moto server, and `requests.get` against a local HTTP
server. The parent alternates the workers round by round (A B C, B C A, ...); each round is one
invocation of N calls, timed in process CPU time (`time.process_time_ns`: background threads
included, wall time excluded, so a busy machine's waiting does not count). Per call: the median
(and the minimum: the least disturbed round, the better estimate on a busy machine) over rounds
of (CPU of the round / N), minus bare's.

  bare        the calls alone
  lambdawrap  the layer's hooks, installed as the boot installs them; calls inside a wrapped
              handler; the invocation record (with its spans) encoded as the channel would
  contrib     opentelemetry-instrumentation-botocore / -requests with the SDK's TracerProvider
              and BatchSpanProcessor (the exporter discards: no encoding, no network, which
              flatters it), calls inside a parent span
"""

from __future__ import annotations

import json
import os
import sys
import time

KINDS = ("aws", "http", "aws-answered-in-process", "http-answered-in-process")


def worker(config: str, moto: str, http: str) -> None:
    """Serve `KIND N` commands: N calls inside one invocation, answer the CPU ns it took."""
    run_invocation = _setup(config)
    import boto3
    import requests

    from botocore.config import Config

    # A stalled moto costs the round, not the run.
    dynamodb = boto3.client("dynamodb", endpoint_url=moto, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t", config=Config(read_timeout=10, retries={"max_attempts": 1}))
    session = requests.Session()
    # The same calls answered without a network: the library's own work and the hooks' only,
    # so that the added CPU is not lost in the server's noise.
    local_dynamodb = boto3.client("dynamodb", endpoint_url=moto, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")
    local_dynamodb.meta.events.register("before-send", _answer_aws)
    local_session = requests.Session()
    local_session.mount("http://", _AnsweringAdapter())
    calls = {
        "aws": dynamodb.list_tables,
        "http": lambda: session.get(http + "/status/200", timeout=10),
        "aws-answered-in-process": local_dynamodb.list_tables,
        "http-answered-in-process": lambda: local_session.get(http + "/status/200", timeout=10),
    }
    for kind in KINDS:  # warm: connections open, caches filled
        run_invocation(lambda: [calls[kind]() for _ in range(5)])
    for line in sys.stdin:
        kind, count = line.split()
        call = calls[kind]

        def body() -> None:
            for _ in range(int(count)):
                call()

        started = time.process_time_ns()
        try:
            run_invocation(body)
        except Exception as exc:  # noqa: BLE001 - a server that stalled: the round is not counted
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
            continue
        print(json.dumps({"cpu_ns": time.process_time_ns() - started}), flush=True)


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, *args: object, **kwargs: object):
        yield self._data


def _answer_aws(request: object, **kwargs: object) -> object:
    from botocore.awsrequest import AWSResponse

    return AWSResponse(request.url, 200, {"x-amzn-requestid": "bench", "content-type": "application/x-amz-json-1.0"}, _Body(b'{"TableNames": []}'))


def _AnsweringAdapter():
    import io

    import requests
    from urllib3 import HTTPResponse

    class AnsweringAdapter(requests.adapters.HTTPAdapter):
        """Answers 200 without a socket (the adapter's own response building included)."""

        def send(self, request, **kwargs):  # noqa: ANN001
            raw = HTTPResponse(body=io.BytesIO(b"{}"), headers={"Content-Type": "application/json"}, status=200, preload_content=False)
            return self.build_response(request, raw)

    return AnsweringAdapter()


def _setup(config: str):
    if config == "bare":
        return lambda body: body()
    if config == "lambdawrap":
        from lambdawrap.handler import import_hooks, outgoing, private_wrapt
        from lambdawrap.handler.invocation import InvocationTracer
        from lambdawrap.shared import records
        from lambdawrap.shared.settings import Settings

        class EncodingChannel:
            """The channel's work without the socket: the record (and its spans) encoded."""

            def send(self, record: dict) -> bool:
                return True

            def send_invocation(self, start_json: bytes, end: dict) -> bool:
                records.encode_invocation(start_json, end)
                return True

            def connect_ahead(self) -> None:
                pass  # no socket: connected, as the real channel is after its first invocation

            def companion_gone(self) -> bool:
                return False

        settings = Settings.from_env({})
        channel = EncodingChannel()
        tracer = InvocationTracer(settings, channel, environ={})
        outgoing.install(settings, tracer.sampled, tracer.inflight, channel, private_wrapt.load().FunctionWrapper, import_hooks.when_imported, lambda name: None)
        context = type("Context", (), {"aws_request_id": "bench", "invoked_function_arn": "arn:aws:lambda:us-east-1:1:function:f"})()
        handler = tracer.wrap(lambda event, ctx: event())
        return lambda body: handler(body, context)
    os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "http"
    from opentelemetry import trace
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans):  # noqa: ANN001
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    trace.set_tracer_provider(provider)
    BotocoreInstrumentor().instrument()
    RequestsInstrumentor().instrument()
    tracer = trace.get_tracer("bench")

    def run(body) -> None:
        with tracer.start_as_current_span("invocation"):
            body()

    return run


if __name__ == "__main__":
    worker(*sys.argv[1:4])
