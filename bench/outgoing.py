"""Added CPU per outgoing call in the function's process: bare vs lambdawrap vs OpenTelemetry's
instrumentation of the library, side by side in one run.

    .venv/bin/python bench/outgoing.py [--rounds 40] [--calls 50] [--json OUT]

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

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ("bare", "lambdawrap", "contrib")
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

        settings = Settings.from_env({})
        channel = EncodingChannel()
        tracer = InvocationTracer(settings, channel, environ={})
        outgoing.install(settings, tracer.sampled, channel, private_wrapt.load().FunctionWrapper, import_hooks.when_imported, lambda name: None)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--json", help="write every sample here")
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
    from lambdawrap.devtools.local.moto_server import MotoServer
    from support.local_servers import recording_server

    with MotoServer() as moto, recording_server() as http:
        workers = {c: subprocess.Popen([sys.executable, __file__, "--worker", c, moto.endpoint, http.url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT / "src"), NO_PROXY="127.0.0.1")) for c in CONFIGS}
        samples: dict = {(c, k): [] for c in CONFIGS for k in KINDS}
        try:
            for round_index in range(args.rounds):
                order = CONFIGS[round_index % 3 :] + CONFIGS[: round_index % 3]
                for kind in KINDS:
                    for config in order:
                        proc = workers[config]
                        proc.stdin.write(f"{kind} {args.calls}\n")
                        proc.stdin.flush()
                        answer = json.loads(proc.stdout.readline())
                        if "cpu_ns" in answer:
                            samples[(config, kind)].append(answer["cpu_ns"] / args.calls)
                        else:
                            print(f"{config} {kind}: round not counted ({answer['error']})", file=sys.stderr)
        finally:
            for proc in workers.values():
                proc.stdin.close()
                proc.wait(30)
    report(samples, args)


def report(samples: dict, args: argparse.Namespace) -> None:
    print(f"per-call CPU in the function's process (process_time; {args.rounds} rounds of {args.calls} calls; median / minimum over rounds)")
    print("| call | bare µs | lambdawrap added µs | contrib added µs | lambdawrap / contrib |")
    print("|---|---|---|---|---|")
    out = {}
    labels = (
        ("aws", "boto3 DynamoDB.ListTables (moto)"),
        ("http", "requests.get (local server)"),
        ("aws-answered-in-process", "boto3 DynamoDB.ListTables, answered in process"),
        ("http-answered-in-process", "requests.get, answered in process"),
    )
    for kind, label in labels:
        row = {}
        for name, estimate in (("median", statistics.median), ("min", min)):
            bare = estimate(samples[("bare", kind)])
            ours = estimate(samples[("lambdawrap", kind)]) - bare
            theirs = estimate(samples[("contrib", kind)]) - bare
            row[name] = {"bare_us": bare / 1000, "lambdawrap_added_us": ours / 1000, "contrib_added_us": theirs / 1000, "ratio": ours / theirs if theirs > 0 else None}
        out[kind] = row
        cells = [" / ".join(f"{row[n][key]:.1f}" if row[n][key] is not None else "n/a" for n in ("median", "min")) for key in ("bare_us", "lambdawrap_added_us", "contrib_added_us")]
        ratio = " / ".join(f"{row[n]['ratio']:.2f}" if row[n]["ratio"] is not None else "n/a" for n in ("median", "min"))
        print(f"| {label} | {cells[0]} | {cells[1]} | {cells[2]} | {ratio} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": out, "samples": {f"{c}/{k}": v for (c, k), v in samples.items()}}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:5])
    else:
        main()
