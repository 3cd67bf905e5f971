"""In-process overhead of the handler wrapper, measured with perf_counter in the handler's process.

Run by the bench harness (worker, drain, components), except `recognition`, run by hand:

  worker --config bare|lambdawrap|otel --task DIR --module MOD --event FILE [...]
      Imports the function the way that configuration's layer would in Lambda, behind a thin
      timing shim, then serves "run K" commands on stdin: K calls of the handler, each timed
      from outside (the wrapped call) and from inside (the user's handler alone), and each
      followed, untimed, by the runtime's post of its result through awslambdaric's own client
      (its C part replaced by one that posts nowhere): the caller's response is on its way
      from there, and lambdawrap sends its record after that post, as it does in Lambda.
      Answers one JSON line per command. The caller alternates the workers (A B C A B C ...).
  drain PATH
      A stand-in companion for the lambdawrap worker: accepts connections on the Unix socket
      and discards what arrives, in a process of its own (as the real companion is).
  recognition [--n N] [--json FILE]
      The cost of recognising each kind of event, over the sample events of tests/events (by
      the kind their table gives): p50 of detect_trigger alone, and of everything the wrapper
      does before the handler (recognition, trace context, the record). A table on stdout.

lambdawrap is booted exactly as sitecustomize does (lambdawrap.handler.boot.initialize with _HANDLER,
the post-import hook wraps the handler, the OpenTelemetry bridge is set up if the function
imports the API). otel is set up exactly as opentelemetry-instrument's sitecustomize does
(auto_instrumentation.initialize(): distro defaults, SDK TracerProvider with BatchSpanProcessor
and the OTLP/HTTP exporter, AwsLambdaInstrumentor), with the OpenTelemetry layer's packages
first on sys.path, exporting to a real OTLP receiver.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import sys
import time
import uuid

SHIM = '''
import {module} as _user
from time import perf_counter_ns as _clock

INNER = []


def handler(event, context):
    started = _clock()
    try:
        return _user.handler(event, context)
    finally:
        INNER.append(_clock() - started)
'''


class FakeContext:
    """What awslambdaric hands the handler, with the attributes both wrappers read."""

    function_name = "function"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:012345678912:function:function"
    memory_limit_in_mb = "128"
    log_group_name = "/aws/lambda/function"
    log_stream_name = "2026/01/01/[$LATEST]0000"
    identity = None
    client_context = None

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.time() + 3

    def get_remaining_time_in_millis(self) -> int:
        return int(max(0, self._deadline - time.time()) * 1000)


def _platform_env(config: str, args: argparse.Namespace) -> dict:
    env = {
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_NAME": "function",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/01/01/[$LATEST]0000",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "_HANDLER": "benchshim.handler",
    }
    if config == "lambdawrap":
        env["LAMBDAWRAP_SOCKET"] = args.socket
    if config == "otel":
        # What the otel exec wrapper sets before the runtime starts.
        env.update(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": args.endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_SERVICE_NAME": "function",
                "OTEL_PROPAGATORS": "tracecontext,baggage,xray",
                "OTEL_RESOURCE_ATTRIBUTES": "cloud.region=us-east-1,cloud.provider=aws,faas.name=function,faas.version=$LATEST",
                "ORIG_HANDLER": "benchshim.handler",
                "NO_PROXY": "127.0.0.1,localhost",
            }
        )
    return env


def _load(args: argparse.Namespace):
    for key in [k for k in os.environ if k.startswith(("OTEL_", "LAMBDAWRAP_", "AWS_LAMBDA_"))]:
        del os.environ[key]
    os.environ.update(_platform_env(args.config, args))
    shim_dir = os.path.join(args.scratch, f"shim-{args.config}-{os.getpid()}")
    os.makedirs(shim_dir, exist_ok=True)
    with open(os.path.join(shim_dir, "benchshim.py"), "w") as f:
        f.write(SHIM.format(module=args.module))
    sys.path[0:0] = [args.task, shim_dir]
    if args.config == "otel":
        sys.path.insert(0, args.otel_pkgs)
        from opentelemetry.instrumentation.auto_instrumentation import initialize

        initialize()
        from opentelemetry.instrumentation.aws_lambda import AwsLambdaInstrumentor

        AwsLambdaInstrumentor().instrument()  # no-op when initialize() already did it
    elif args.config == "lambdawrap":
        from lambdawrap.handler.boot import initialize

        if initialize(os.environ, swallow_exceptions=False) is None:
            raise SystemExit("lambdawrap did not boot")
    import importlib

    shim = importlib.import_module("benchshim")
    handler = shim.handler
    if args.config == "lambdawrap":
        # Wrapped where the runtime's lookup hands it to the runtime, not in its module.
        from awslambdaric import bootstrap

        handler = bootstrap._get_handler("benchshim.handler")
    if args.config != "bare" and not hasattr(handler, "__wrapped__"):
        raise SystemExit(f"{args.config}: the handler was not wrapped")
    return shim, handler


def _vm(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class _NoRuntimeApi:
    """awslambdaric's C client, for posts that go nowhere."""

    def post_invocation_result(self, *args: object) -> None:
        pass

    def post_error(self, *args: object) -> None:
        pass


def _runtime_client():
    # Imported after the layer's boot, as the runtime imports it: its post-import hooks fire.
    from awslambdaric import lambda_runtime_client as module
    from awslambdaric.lambda_runtime_marshaller import to_json

    module.runtime_client = _NoRuntimeApi()
    client = module.LambdaRuntimeClient("127.0.0.1:9001")
    return lambda request_id, result: client.post_invocation_result(request_id, to_json(result))


def worker(args: argparse.Namespace) -> int:
    shim, handler = _load(args)
    post = _runtime_client()
    with open(args.event) as f:
        event = json.load(f)
    clock = time.perf_counter_ns
    out = sys.stdout
    out.write(json.dumps({"ready": True, "wrapped": args.config != "bare"}) + "\n")
    out.flush()
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        if command[0] == "rss":
            out.write(json.dumps({"VmHWM_kb": _vm("VmHWM"), "VmRSS_kb": _vm("VmRSS")}) + "\n")
            out.flush()
            continue
        count = int(command[1])
        totals = []
        shim.INNER.clear()
        for _ in range(count):
            context = FakeContext()
            # The runtime sets the platform's trace header before each call (Sampled=0 when
            # active tracing is off), outside the handler.
            os.environ["_X_AMZN_TRACE_ID"] = f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)};Sampled=0"
            started = clock()
            result = handler(event, context)
            totals.append(clock() - started)
            post(context.aws_request_id, result)
        out.write(json.dumps({"total_ns": totals, "inner_ns": list(shim.INNER)}) + "\n")
        out.flush()
    return 0


def components(args: argparse.Namespace) -> int:
    """p50 of each step of lambdawrap's per-invocation work, hot and after 2 ms idle."""
    import statistics

    from lambdawrap.handler import trace_context as tc
    from lambdawrap.handler import triggers
    from lambdawrap.handler.channel import Channel
    from lambdawrap.handler.invocation import InvocationTracer
    from lambdawrap.shared import records
    from lambdawrap.shared.ids import new_span_id, new_trace_id
    from lambdawrap.shared.settings import Settings

    with open(args.event) as f:
        event = json.load(f)
    channel = Channel(args.socket)
    tracer = InvocationTracer(Settings(socket_path=args.socket), channel)
    wrapped = tracer.wrap(lambda e, c: {"statusCode": 200})
    trigger = triggers.detect_trigger(event)
    xray = "Root=1-65f16ede-6a6e2b2f1c0f0b7d3e4a5b6c;Parent=53995c3f42cd8ad8;Sampled=0"
    context = FakeContext()
    # _before returns the invocation under way (its start part already encoded); the record is
    # that start part and an end part, framed together as the channel sends it.
    state = tracer._before((event, context), {})
    end = records.invocation_end(time.time_ns(), http_status=200)
    steps = {
        "detect_trigger (API Gateway event)": lambda: triggers.detect_trigger(event),
        "extract_parent (traceparent + X-Ray)": lambda: tc.extract_parent(trigger.headers, xray),
        "new trace and span ids": lambda: (new_trace_id(), new_span_id()),
        "_before (all of it)": lambda: tracer._before((event, context), {}),
        "encode the record (end part + frame)": lambda: records.encode_invocation(state.start_json, end),
        "Channel.send_invocation (encode + send syscall)": lambda: channel.send_invocation(state.start_json, dict(end)),
        "whole wrapper, trivial handler": lambda: wrapped(event, context),
        "reference: a bare call": lambda: None,
    }
    out = {"record_bytes": len(records.encode_invocation(state.start_json, end))}
    clock = time.perf_counter_ns
    for name, fn in steps.items():
        row = {}
        for label, gap in (("hot_us", 0.0), ("after_idle_us", 0.002)):
            for _ in range(50):
                fn()
            samples = []
            for _ in range(args.n):
                if gap:
                    time.sleep(gap)
                started = clock()
                fn()
                samples.append(clock() - started)
            row[label] = statistics.median(samples) / 1000
        out[name] = row
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "events")


def _p50_us(fn, n: int) -> float:
    import statistics

    clock = time.perf_counter_ns
    for _ in range(20):
        fn()
    samples = []
    for _ in range(n):
        started = clock()
        fn()
        samples.append(clock() - started)
    return statistics.median(samples) / 1000


def recognition(args: argparse.Namespace) -> int:
    """p50 cost of recognition per event kind, over every corpus event of that kind."""
    import statistics

    from lambdawrap.handler import triggers
    from lambdawrap.handler.invocation import InvocationTracer
    from lambdawrap.shared.settings import Settings

    with open(os.path.join(CORPUS, "expected.json")) as f:
        table = json.load(f)
    by_kind: dict = {}
    for name, expected in sorted(table.items()):
        with open(os.path.join(CORPUS, name)) as f:
            by_kind.setdefault(expected["kind"], []).append((name, json.load(f)))
    import tempfile

    import socket

    from lambdawrap.handler.channel import Channel

    scratch = tempfile.mkdtemp(prefix="lwbench")  # for the in-flight slot _before writes
    path = os.path.join(scratch, "lw.sock")
    # _before sends nothing, but connects at the first invocation: a listener for that connect,
    # whose later invocations find the channel connected, as a companion's do.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    tracer = InvocationTracer(Settings(socket_path=path), Channel(path), environ={})
    context = FakeContext()
    os.environ["_X_AMZN_TRACE_ID"] = f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)};Sampled=0"
    rows = {}
    for kind, events in sorted(by_kind.items()):
        detect = [_p50_us(lambda e=event: triggers.detect_trigger(e), args.n) for _, event in events]
        before = [_p50_us(lambda e=event: tracer._before((e, context), {}), args.n) for _, event in events]
        slowest = max(range(len(events)), key=lambda i: before[i])
        rows[kind] = {
            "events": len(events),
            "detect_trigger_p50_us": round(statistics.median(detect), 2),
            "before_handler_p50_us": round(statistics.median(before), 2),
            "before_handler_max_us": round(before[slowest], 2),
            "slowest_event": events[slowest][0],
        }
    out = sys.stdout
    out.write("| kind | events | detect_trigger p50 (µs) | before the handler p50 (µs) | slowest event: before the handler (µs) |\n|---|---:|---:|---:|---|\n")
    for kind, row in rows.items():
        out.write(f"| {kind} | {row['events']} | {row['detect_trigger_p50_us']:.2f} | {row['before_handler_p50_us']:.2f} | {row['before_handler_max_us']:.2f} ({row['slowest_event']}) |\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    import shutil

    listener.close()
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


def drain(path: str) -> int:
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj is server:
                conn, _ = server.accept()
                selector.register(conn, selectors.EVENT_READ)
            else:
                data = key.fileobj.recv(262144)
                if not data:
                    selector.unregister(key.fileobj)
                    key.fileobj.close()


def main(argv: list) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--config", required=True, choices=("bare", "lambdawrap", "otel"))
    w.add_argument("--task", required=True)
    w.add_argument("--module", required=True)
    w.add_argument("--event", required=True)
    w.add_argument("--scratch", required=True)
    w.add_argument("--socket", default="")
    w.add_argument("--endpoint", default="")
    w.add_argument("--otel-pkgs", default="")
    d = sub.add_parser("drain")
    d.add_argument("path")
    c = sub.add_parser("components")
    c.add_argument("--socket", required=True)
    c.add_argument("--event", required=True)
    c.add_argument("--n", type=int, default=1000)
    r = sub.add_parser("recognition")
    r.add_argument("--n", type=int, default=2000)
    r.add_argument("--json", default="")
    args = parser.parse_args(argv)
    if args.mode == "recognition":
        return recognition(args)
    if args.mode == "drain":
        return drain(args.path)
    if args.mode == "components":
        return components(args)
    return worker(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
