"""Free loopback ports for a process that binds them later (moto, the secrets API, `serve`).

A port found by binding port 0 and closing it is free only until the kernel hands it out
again, and it hands out ports from its ephemeral range to every later bind(0) and outgoing
connection. A test's OTLP receiver or emulator API, started after the port was chosen but
before the companion bound it, sometimes took it: the function's calls to the secrets API then
reached that server and got its 404. Ports are chosen below the ephemeral range, where the
kernel never picks one by itself, and each once per process, so two chosen in a row differ.
"""

from __future__ import annotations

import itertools
import random
import socket

EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
DEFAULT_EPHEMERAL = (32768, 60999)  # Linux's default
# Below: well-known and registered services' ports (2773 the AWS secrets extension's, 4317/4318
# OTLP's, 8080...), which tests may use by their fixed numbers.
LOWEST = 20000
LEAST_RANGE = 1000


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open(EPHEMERAL_RANGE_FILE) as f:
            low, high = (int(part) for part in f.read().split())
        return low, high
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL


def _outside_ephemeral() -> range:
    low, high = _ephemeral_range()
    if low - LOWEST >= LEAST_RANGE:
        return range(LOWEST, low)
    if 65535 - high >= LEAST_RANGE:
        return range(high + 1, 65536)
    return range(0)


_CANDIDATES = _outside_ephemeral()
# A random start, so two processes choosing at once (a test and a `serve`) rarely walk together.
_NEXT = itertools.count(random.randrange(len(_CANDIDATES)) if _CANDIDATES else 0)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port no one listens on, for a process that will bind it: outside the
    kernel's ephemeral range where the machine has room below or above it, and not one this
    process has returned before."""
    for _ in range(len(_CANDIDATES)):
        port = _CANDIDATES[next(_NEXT) % len(_CANDIDATES)]
        if _bindable(port):
            return port
    with socket.socket() as s:  # no room outside the range: the kernel's choice, as before
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
