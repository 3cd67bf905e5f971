"""What the two command lines (`lambdawrap`, `python -m lambdawrap.devtools.emulator`) share."""

from __future__ import annotations

import argparse
import signal
import threading

from lambdawrap.devtools.emulator.environment import DEFAULT_MEMORY_MB
from lambdawrap.devtools.emulator.limits import DEFAULT_INIT_CPU, INIT_CPU_POLICIES


def env_pair(text: str) -> tuple:
    """An argparse type for --env KEY=VALUE."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def wait_for_stop() -> None:
    """Block until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """--memory and what the emulator enforces, for both command lines."""
    parser.add_argument("--memory", type=int, default=DEFAULT_MEMORY_MB, help=f"memory size, MB (default {DEFAULT_MEMORY_MB}: one full vCPU; Lambda's default is 128)")
    parser.add_argument("--no-cpu-limit", action="store_true", help="do not limit CPU to memory/1769 of a core (debugging)")
    parser.add_argument("--no-freeze", action="store_true", help="do not freeze the environment between invocations (debugging)")
    parser.add_argument("--init-cpu", choices=INIT_CPU_POLICIES, default=DEFAULT_INIT_CPU, help=f"CPU during init (default {DEFAULT_INIT_CPU}: up to 2 CPUs)")
    parser.add_argument("--max-concurrency", type=int, metavar="N", help="run as Lambda Managed Instances: N runtime workers, concurrent invocations")


def limit_arguments(args: argparse.Namespace) -> dict:
    """The Emulator keyword arguments for the options of add_limit_options (memory aside)."""
    return {"cpu_limit": not args.no_cpu_limit, "freeze": not args.no_freeze, "init_cpu": args.init_cpu, "max_concurrency": args.max_concurrency}
