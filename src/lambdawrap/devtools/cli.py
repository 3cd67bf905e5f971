"""The `lambdawrap` command.

    lambdawrap local invoke --example hello -n 3      run an example through the emulator with the layer
    lambdawrap local invoke --function DIR --handler mod.fn --event FILE -n N
    lambdawrap local invoke --example hello --python python3.13    on another Python runtime
    lambdawrap local serve --example hello --port 9000
    lambdawrap build-layer --out build/layer
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from lambdawrap.devtools.command_line import add_limit_options, env_pair, limit_arguments, wait_for_stop
from lambdawrap.devtools.emulator.limits import FULL_CORE_MB, MAX_MEMORY_MB
from lambdawrap.devtools.local.stack import EXAMPLES, SOURCE_LAYER, LocalError, RunConfig, local_stack

PROGRESS_EVERY = 10
LAMBDA_DEFAULT_MEMORY_MB = 128


def _examples() -> list:
    return sorted(p.name for p in EXAMPLES.iterdir() if (p / "example.json").is_file()) if EXAMPLES.is_dir() else []


def _load_event(spec: str | None) -> bytes:
    if spec is None:
        return b"{}"
    path = Path(spec)
    if not path.is_file():
        sample = EXAMPLES / "events" / f"{spec}.json"
        if not sample.is_file():
            names = ", ".join(sorted(p.stem for p in (EXAMPLES / "events").glob("*.json")))
            raise LocalError(f"event {spec!r} is neither a file nor a sample event ({names})")
        path = sample
    data = path.read_bytes()
    try:
        json.loads(data)
    except ValueError as exc:
        raise LocalError(f"event file {path} is not valid JSON: {exc}") from None
    return data


def _config(args: argparse.Namespace) -> tuple:
    """(RunConfig, event bytes) from the command line and, for --example, its example.json."""
    env: dict = {}
    seed = None
    event = args.event
    if args.example:
        folder = EXAMPLES / args.example
        if not (folder / "example.json").is_file():
            raise LocalError(f"unknown example {args.example!r}; choose from: {', '.join(_examples()) or '(none found)'}")
        spec = json.loads((folder / "example.json").read_text())
        function_dir, handler = folder, spec["handler"]
        env.update(spec.get("env") or {})
        seed = spec.get("moto")
        event = event or spec.get("event")
    else:
        if not args.function or not args.handler:
            raise LocalError("give --example NAME, or --function DIR and --handler module.function")
        function_dir, handler = Path(args.function), args.handler
    env.update(dict(args.env))
    layer = None if args.no_layer else Path(args.layer) if args.layer else SOURCE_LAYER
    config = RunConfig(
        function_dir=Path(function_dir).resolve(),
        handler=handler,
        env=env,
        layer_dir=layer.resolve() if layer else None,
        otlp_endpoint=args.otlp_endpoint,
        timeout_s=args.timeout,
        memory_mb=args.memory,
        moto_seed=seed,
        invoke_port=getattr(args, "port", None),
        **limit_arguments(args),
        python=args.python,
    )
    return config, _load_event(event)


def cmd_invoke(args: argparse.Namespace) -> int:
    from lambdawrap.devtools.local.render import invocation_report, metrics_report, own_messages, summary

    config, event = _config(args)
    if args.n < 1:
        raise LocalError("-n must be at least 1")
    echo = (lambda source, line: print(f"  [{source}] {line}", file=sys.stderr)) if args.verbose else None
    results = []
    with local_stack(config, echo=echo) as (emu, receiver, _moto):
        for i in range(args.n):
            results.append(emu.invoke(raw=event))
            emu.wait_idle(config.timeout_s + 5)
            if args.n > PROGRESS_EVERY and (i + 1) % max(1, args.n // PROGRESS_EVERY) == 0:
                print(f"  ... {i + 1}/{args.n} invocations", file=sys.stderr, flush=True)
        emu.stop()  # SHUTDOWN: the companion flushes what is left before we read the receiver
        reports = {r["record"]["requestId"]: r["record"] for r in emu.records("platform.report")}
        shown = results if len(results) <= args.show else results[: args.show // 2] + results[-(args.show - args.show // 2) :]
        for index, result in enumerate(results, 1):
            if result in shown:
                print("\n".join(invocation_report(index, len(results), result, reports.get(result.request_id), receiver)))
                print()
        if receiver is not None:
            print("\n".join(metrics_report(receiver)))
        elif config.layer_dir is not None:
            print(f"exported to {config.otlp_endpoint}")
        else:
            print("no layer: nothing instrumented (--no-layer)")
        said = [] if args.verbose else own_messages(list(emu.logs))  # -v printed them as they came
        if said:
            print("\n".join(said))
        print("\n".join(summary(results, list(reports.values()))))
        print(size_note(config, emu.sandbox.state.limits.unavailable))
        print(f"runtime: {_runtime_version(emu)} ({emu.config.python})")
    return 0


def _runtime_version(emu: Any) -> str:
    """The runtime the platform announced (initStart's runtimeVersion, e.g. python:3.13)."""
    return next((r["record"].get("runtimeVersion", "?") for r in emu.records("platform.initStart")), "?")


def size_note(config: RunConfig, limits_unavailable: str | None) -> str:
    """Which size the run had, and how to see it at Lambda's default size."""
    memory_mb = config.memory_mb
    if limits_unavailable:
        return f"ran at {memory_mb} MB without Lambda's CPU and memory limits ({limits_unavailable})"
    if config.max_concurrency or not config.cpu_limit:
        return f"ran at {memory_mb} MB, CPU not limited"
    share = min(memory_mb, MAX_MEMORY_MB) / FULL_CORE_MB
    note = f"ran at {memory_mb} MB: {share:.0%} of a vCPU, as Lambda gives it"
    if memory_mb != LAMBDA_DEFAULT_MEMORY_MB:
        note += f"; to see it at Lambda's default size, add --memory {LAMBDA_DEFAULT_MEMORY_MB} ({LAMBDA_DEFAULT_MEMORY_MB / FULL_CORE_MB:.0%} of a vCPU)"
    return note


def cmd_serve(args: argparse.Namespace) -> int:
    config, _ = _config(args)
    echo = lambda source, line: print(f"[{source}] {line}", flush=True)  # noqa: E731
    exported = lambda kind, item: print(f"[exported {kind}] {item.get('name') or item.get('body')}", flush=True)  # noqa: E731
    with local_stack(config, echo=echo, on_exported=exported) as (emu, receiver, _moto):
        print(f"invoke endpoint: {emu.invoke_url}", flush=True)
        print(f"try: curl -s -XPOST {emu.invoke_url} -d '{{}}'", flush=True)
        wait_for_stop()
    print("stopped", flush=True)
    return 0


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--example", help=f"an example from examples/ ({', '.join(_examples())})")
    parser.add_argument("--function", help="function folder (plays /var/task)")
    parser.add_argument("--handler", help="handler, e.g. app.handler")
    parser.add_argument("--event", help="event file, or a sample name (apigw-rest, sqs, ...)")
    parser.add_argument("--timeout", type=float, default=3.0, help="function timeout, seconds (default 3)")
    add_limit_options(parser)
    parser.add_argument("--env", type=env_pair, action="append", default=[], metavar="KEY=VALUE", help="function environment variable (repeatable)")
    parser.add_argument("--layer", help="layer folder (default: the development layer of this checkout)")
    parser.add_argument("--no-layer", action="store_true", help="run without lambdawrap, for comparison")
    parser.add_argument("--python", metavar="PATH_OR_NAME", help="the runtime's Python: a path, a name such as python3.13, or 3.13 (default: this interpreter); its environment is prepared on first use")
    parser.add_argument("--otlp-endpoint", help="export to this collector instead of the built-in receiver")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the function's and extensions' output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lambdawrap", description="Zero-code OpenTelemetry for Python AWS Lambda functions.")
    commands = parser.add_subparsers(dest="command", required=True)
    local = commands.add_parser("local", help="run a function locally through the emulator").add_subparsers(dest="local_command", required=True)
    invoke = local.add_parser("invoke", help="invoke a function N times and show what was exported")
    _add_run_options(invoke)
    invoke.add_argument("-n", type=int, default=3, help="number of invocations (default 3)")
    invoke.add_argument("--show", type=int, default=6, help="invocations to show in detail (default 6)")
    invoke.set_defaults(run=cmd_invoke)
    serve = local.add_parser("serve", help="keep the emulator up for curl")
    _add_run_options(serve)
    serve.add_argument("--port", type=int, default=9000, help="invoke endpoint port (default 9000)")
    serve.set_defaults(run=cmd_serve)
    # Listed for --help; its own options are parsed by lambdawrap.layer_build (see main).
    commands.add_parser("build-layer", help="build the layer folder and zip (see build-layer --help)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["build-layer"]:
        from lambdawrap.devtools.layer_build import main as build_main

        return build_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except LocalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback, for any other failure
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())


__all__: Any = ["main"]
