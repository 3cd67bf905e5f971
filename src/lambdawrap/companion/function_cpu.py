"""How the function's last invocation ran, seen from the companion: for how long, and how much
of the environment's CPU share it left unused (waiting on I/O) rather than computed with.

Work the companion does while the function runs (connections made ahead) is only free where
the function waits: the environment's CPU quota is shared, and at 128 MB a TLS handshake's CPU
on the other vCPU delays a computing handler's answer by as much (+55 to +110 ms at the p50,
30 ms of handler CPU, whatever the thread's priority). The function's process is the peer of
the channel's connection its records come on (SO_PEERCRED); its CPU time is read through its
process CPU clock, one system call, no file to open."""

from __future__ import annotations

import time

from lambdawrap.shared.settings import FULL_VCPU_MB

# Of its share, what a function computing flat out still leaves unused to scheduling (the
# quota's periods, other processes on the host): not spare. Only what it left beyond this
# fraction is, so that a computing function's jitter never lets connections be made beside it.
UNUSED_BY_JITTER = 0.1


def process_cpu_s(pid: int | None) -> float | None:
    """CPU seconds process `pid` has used (all its threads); None if it cannot be read."""
    if not pid:
        return None
    try:
        # Linux's CPU-time clock of another process (MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)),
        # which os does not expose as clock_getcpuclockid.
        return time.clock_gettime(((~pid) << 3) | 2)
    except (OSError, OverflowError, ValueError):
        return None


class RunMeter:
    """The last invocation's run, from its INVOKE to the handler's record."""

    def __init__(self, memory_mb: int) -> None:
        self._cpu_share = memory_mb / FULL_VCPU_MB if memory_mb > 0 else 1.0
        self._pid: int | None = None
        self._started = 0.0
        self._cpu_at_start: float | None = None
        self._own_cpu_at_start = 0.0
        self.run_s = 0.0
        # The environment's CPU share over the run that the function's process and the
        # companion left unused (0 when unknown): what work beside the function can take
        # without delaying its answer.
        self.spare_cpu_s = 0.0

    def started(self, pid: int | None) -> None:
        self._pid, self._started, self._cpu_at_start = pid, time.monotonic(), process_cpu_s(pid)
        self._own_cpu_at_start = time.process_time()

    def ended(self, pid: int | None) -> None:
        """At the handler's record, sent by process `pid`: not the one read at the start (a
        forked child wrote last then, or the runtime restarted), nothing is known."""
        self.run_s = time.monotonic() - self._started
        cpu_now = process_cpu_s(self._pid) if pid == self._pid else None
        if cpu_now is None or self._cpu_at_start is None:
            self.spare_cpu_s = 0.0
            return
        # The companion's own CPU meanwhile came out of the same share.
        used = cpu_now - self._cpu_at_start + time.process_time() - self._own_cpu_at_start
        self.spare_cpu_s = max(0.0, (1 - UNUSED_BY_JITTER) * self._cpu_share * self.run_s - used)
