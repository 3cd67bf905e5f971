"""How much of each phase a run does: the full run's sizes, and the smoke run's."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Plan:
    """How much of everything to run. The defaults are the full run (~7 min on 2 cores)."""

    n: int = 2000  # warm invocations per configuration (figure 1)
    inproc: int = 2000  # in-process calls per configuration and handler (figure 1)
    n_slow: int = 200  # warm invocations against the 200 ms receiver (figure 2)
    cold: int = 40  # fresh environments per configuration and handler (figure 3)
    n_post: int = 300  # invocations per flush strategy (figure 4)
    n_sparse: int = 15  # adaptive with 1.1 s gaps between invocations (figure 4)
    rates: tuple = (1000, 2000, 3000, 4000, 6000, 8000, 12000, 16000)  # offered records/s (figure 6)
    rate_seconds: float = 3.0
    burst: int = 20000  # records sent as fast as the socket takes them (figure 6)
    shutdown_spans: int = 10000  # buffered spans flushed on SHUTDOWN (figure 6)
    shutdown_repeats: int = 3
    warmup: int = 20  # unmeasured warm invocations per environment
    chunk: int = 100  # in-process calls per turn before the next configuration's turn

    @classmethod
    def smoke(cls) -> "Plan":
        """A few of everything: the CI smoke run."""
        return cls(n=5, inproc=40, n_slow=2, cold=1, n_post=3, n_sparse=0, rates=(1000,), rate_seconds=0.2, burst=300, shutdown_spans=300, shutdown_repeats=1, warmup=2, chunk=20)
