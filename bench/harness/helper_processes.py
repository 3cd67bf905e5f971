"""The bench's helper processes: an in-process worker (bench/_inprocess.py) per configuration, the
Unix-socket drain that stands in for the companion, and the project's OTLP receiver."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from typing import Iterator

from harness.configurations import BENCH, Stack
from harness.layers import OTEL


class Worker:
    """An in-process worker (bench/_inprocess.py) that loads the function as one configuration's layer would."""

    def __init__(self, stack: Stack, config: str, module: str, endpoint: str, socket_path: str) -> None:
        cmd = [stack.python, str(BENCH / "_inprocess.py"), "worker", "--config", config, "--task", str(stack.task), "--module", module, "--event", stack.event_file, "--scratch", str(stack.scratch), "--socket", socket_path, "--endpoint", endpoint, "--otel-pkgs", str(OTEL.site)]
        self.config = config
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LAMBDAWRAP_"))})
        ready = self.proc.stdout.readline()
        if not ready:
            raise RuntimeError(f"in-process worker {config} failed to start: {self.proc.stderr.read()[-2000:]}")

    def ask(self, command: str) -> dict:
        """Send one command ("run K", "rss") and return its JSON answer."""
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"in-process worker {self.config} died: {self.proc.stderr.read()[-2000:]}")
        return json.loads(line)

    def close(self) -> None:
        """Ask the worker to quit; kill it if it has not within 5 s."""
        with contextlib.suppress(Exception):
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def drain_server(path: str) -> Iterator[subprocess.Popen]:
    """A process that accepts connections on the Unix socket at path and discards what arrives."""
    proc = subprocess.Popen([sys.executable, str(BENCH / "_inprocess.py"), "drain", path], stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        yield proc
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def receiver_process() -> Iterator[str]:
    """The project's OTLP receiver in a process of its own, so it never takes the worker's GIL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "lambdawrap.devtools.otlp_receiver", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()
