"""Trace and span ids: random and never zero (zero means "no id" in OpenTelemetry)."""

from __future__ import annotations

import random

# random.getrandbits: ~0.1 us where os.urandom is a ~10 us system call on every invocation.
# Ids need uniqueness, not secrecy, and CPython reseeds the module's generator in a forked
# child (os.register_at_fork), so forked workers never repeat each other's ids.
_getrandbits = random.getrandbits


def new_trace_id() -> int:
    """A random non-zero 128-bit trace id."""
    trace_id = _getrandbits(128)
    while not trace_id:
        trace_id = _getrandbits(128)
    return trace_id


def new_span_id() -> int:
    """A random non-zero 64-bit span id."""
    span_id = _getrandbits(64)
    while not span_id:
        span_id = _getrandbits(64)
    return span_id
