"""How much of each phase a run does: the full run's sizes, and the smoke run's."""

from __future__ import annotations

from dataclasses import dataclass

from harness.configurations import MEMORY_SIZES


@dataclass
class Plan:
    """How much of everything to run. The defaults are the full run (~50 min on a busy 2-core
    machine: the cold starts at 128 MB with init throttled are most of it)."""

    sizes: tuple = MEMORY_SIZES  # memory sizes (MB), every environment under Lambda's limits
    n: int = 400  # warm invocations per configuration and memory size (figure 1)
    inproc: int = 2000  # in-process calls per configuration and handler (figure 1)
    n_slow: int = 100  # warm invocations against the 200 ms receiver, at the full-core size (figure 2)
    cold: int = 15  # fresh environments per configuration, handler and size, init unthrottled (figure 3)
    cold_as_invoke: int = 5  # the same with init throttled like an invocation (figure 3)
    cold_later: int = 5  # invocations after the first, per fresh environment at the smallest size, init unthrottled (figure 3)
    n_post: int = 100  # invocations per flush strategy and size (figure 4)
    n_sparse: int = 8  # adaptive with 1.1 s gaps between invocations, per size (figure 4)
    n_flood: int = 3  # invocations printing flood_mb of logs, per size, bare and lambdawrap (figure 5)
    flood_mb: int = 50
    rates: tuple = (1000, 2000, 3000, 4000, 6000, 8000, 12000, 16000)  # offered records/s (figure 6)
    rate_seconds: float = 3.0
    burst: int = 20000  # records sent as fast as the socket takes them (figure 6)
    shutdown_spans: int = 10000  # buffered spans flushed on SHUTDOWN (figure 6)
    shutdown_repeats: int = 3
    warmup: int = 20  # unmeasured warm invocations per environment
    chunk: int = 100  # in-process calls per turn before the next configuration's turn
    min_round_ms: float = 100.0  # below a full core, each environment gets at most one warm invocation per CFS period
    outgoing_rounds: int = 30  # outgoing-call phase: rounds of outgoing_calls calls per worker (figure 7)
    outgoing_calls: int = 50

    @classmethod
    def smoke(cls) -> "Plan":
        """A few of everything at one memory size: the CI smoke run."""
        return cls(sizes=(512,), n=5, inproc=40, n_slow=2, cold=1, cold_as_invoke=1, cold_later=1, n_post=3, n_sparse=0, n_flood=1, flood_mb=2, rates=(1000,), rate_seconds=0.2, burst=300, shutdown_spans=300, shutdown_repeats=1, warmup=2, chunk=20, outgoing_rounds=2, outgoing_calls=5)

    @property
    def full_core_size(self) -> int:
        """The size the full-core figures (CPU per invocation, slow collector) are read at."""
        return max(self.sizes)
