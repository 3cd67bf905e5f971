"""Ports chosen for a process that binds them later: no bind(0) or outgoing connection of the
kernel's may take one in between."""

from __future__ import annotations

import socket

from lambdawrap.devtools.local.ports import EPHEMERAL_RANGE_FILE, free_port


def ephemeral_range() -> tuple[int, int]:
    with open(EPHEMERAL_RANGE_FILE) as f:
        low, high = (int(part) for part in f.read().split())
    return low, high


def test_a_chosen_port_is_outside_the_kernel_s_own_choices_and_never_chosen_twice():
    # GIVEN the kernel's ephemeral range, from which it picks every bind(0) and outgoing
    # connection's local port (before: free_port was one of those, freed, so the OTLP receiver
    # or an emulator API started next could take it and answer the function's secrets calls 404)
    low, high = ephemeral_range()
    # WHEN ports are chosen in a row, none yet bound
    chosen = [free_port() for _ in range(50)]
    # THEN each is outside the range, free, and distinct
    assert all(not low <= port <= high for port in chosen), (low, high, chosen)
    assert len(set(chosen)) == len(chosen)
    for port in chosen:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))

