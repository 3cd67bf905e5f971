"""What the two command lines (`lambdawrap`, `python -m lambdawrap.devtools.emulator`) share."""

from __future__ import annotations

import argparse
import signal
import threading


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
