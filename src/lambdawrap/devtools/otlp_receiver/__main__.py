"""Command line: run a receiver until Ctrl-C / SIGTERM, printing one line per item received.

    python -m lambdawrap.devtools.otlp_receiver [--host 127.0.0.1] [--port 4318] [--jsonl FILE]
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any, Optional, Sequence

from lambdawrap.devtools.otlp_receiver.decoding import Item
from lambdawrap.devtools.otlp_receiver.receiver import OtlpReceiver
from lambdawrap.devtools.otlp_receiver.store import describe


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run a receiver until SIGINT/SIGTERM, printing one line per span/metric/log received."""
    parser = argparse.ArgumentParser(
        prog="python -m lambdawrap.otlp_receiver",
        description="Local OTLP/HTTP receiver: prints what it receives.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=4318, help="port to listen on, 0 for any (default 4318)")
    parser.add_argument("--jsonl", metavar="FILE", default=None, help="also append every item to FILE as JSONL")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    # Installed before binding so that an early Ctrl-C still exits quietly.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    print_lock = threading.Lock()

    def on_item(kind: str, item: Item) -> None:
        with print_lock:
            print(describe(kind, item), flush=True)

    try:
        receiver = OtlpReceiver(args.host, args.port, args.jsonl, on_item=on_item)
        receiver.start()
    except (OSError, ValueError) as exc:
        print(f"otlp_receiver: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    try:
        with print_lock:
            print(f"OTLP receiver listening on {receiver.endpoint}", flush=True)
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not stop.wait(0.5):
            pass
    finally:
        receiver.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
