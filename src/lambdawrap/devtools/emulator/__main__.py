"""Command line: serve one function through the emulator until Ctrl-C / SIGTERM.

    python -m lambdawrap.devtools.emulator --function DIR --handler mod.fn [--layer DIR] [--port 9000] [--python python3.13]
"""

from __future__ import annotations

import argparse
import sys

from lambdawrap.devtools.command_line import add_limit_options, env_pair, limit_arguments, wait_for_stop
from lambdawrap.devtools.emulator.emulator import Emulator
from lambdawrap.devtools.interpreters import InterpreterNotFound
from lambdawrap.devtools.runtime_envs import RuntimeEnvError, runtime_python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lambdawrap.devtools.emulator", description="Serve a Python Lambda function locally through the Docker-free emulator.")
    parser.add_argument("--function", required=True, help="function folder (plays /var/task)")
    parser.add_argument("--handler", required=True, help="handler, e.g. app.handler")
    parser.add_argument("--layer", help="layer folder (plays /opt)")
    parser.add_argument("--port", type=int, default=9000, help="invoke endpoint port (default 9000)")
    parser.add_argument("--timeout", type=float, default=3.0, help="function timeout in seconds")
    add_limit_options(parser)
    parser.add_argument("--env", type=env_pair, action="append", default=[], metavar="KEY=VALUE", help="function environment variable (repeatable)")
    parser.add_argument("--python", metavar="PATH_OR_NAME", help="the runtime's Python: a path, a name such as python3.13, or 3.13 (default: this interpreter); its environment is prepared on first use")
    args = parser.parse_args(argv)

    try:
        runtime = runtime_python(args.python)
    except (InterpreterNotFound, RuntimeEnvError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        emulator = Emulator(args.function, args.handler, args.layer, env=dict(args.env), timeout_s=args.timeout, memory_mb=args.memory, invoke_port=args.port, echo=sys.stdout, python=runtime.python, **limit_arguments(args))
        emulator.start()
    except (OSError, ValueError) as exc:
        print(f"error: cannot start the emulator: {exc}", file=sys.stderr)
        return 2
    try:
        print(f"invoke endpoint: {emulator.invoke_url}", flush=True)
        wait_for_stop()
    finally:
        emulator.stop()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
