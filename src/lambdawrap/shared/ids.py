"""Trace and span ids: random and never zero (zero means "no id" in OpenTelemetry)."""

from __future__ import annotations

import os

from lambdawrap.shared.own_stdlib import _random

# A Mersenne Twister's getrandbits: ~0.1 us, where os.urandom is a ~10 us system call on every
# invocation; ids need uniqueness, not secrecy. The C generator itself, not the `random`
# module (whose import costs the function's cold start). Seeded from os.urandom, and seeded
# again in a forked child, so that forked workers never repeat each other's ids.
_generator = _random.Random()
_getrandbits = _generator.getrandbits
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_generator.seed)


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


def reseed() -> None:
    """Seed the generator again from os.urandom: in a process restored from a snapshot (Lambda
    SnapStart), which may be restored in many environments at once, each would otherwise draw
    the same ids from the state the snapshot holds."""
    _generator.seed()
