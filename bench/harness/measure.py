"""Measurement helpers: percentiles and summaries, the interleaving order, /proc readings of a
process's memory and CPU, and the progress lines on stderr."""

from __future__ import annotations

import math
import os
import statistics
import sys
import time


def log(message: str) -> None:
    """One timestamped progress line on stderr."""
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def pct(values: list, q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no data."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def summary(values: list) -> dict:
    """Count, p50, p99, mean and min of the values (NaN for no data)."""
    return {"n": len(values), "p50": pct(values, 50), "p99": pct(values, 99), "mean": statistics.fmean(values) if values else float("nan"), "min": min(values) if values else float("nan")}


def rotated(items: list, i: int) -> list:
    """The items rotated by i, for round i of an interleaved run (A B C, B C A, ...)."""
    k = i % len(items) if items else 0
    return items[k:] + items[:k]


def proc_status(pid: int) -> dict:
    """VmHWM/VmRSS of a process in MB (empty if it is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def cpu_ns(pid: int) -> float:
    """CPU time a process has used so far, its exited threads' included, in nanoseconds (0 if it
    is gone): the kernel's CPU clock of the whole process, which any process may read. Summing
    the live threads' counts instead misses threads that ran and exited in between (the
    companion's per-flush export threads: ~100 µs per warm invocation)."""
    try:
        return float(time.clock_gettime_ns(_process_cpu_clock(pid)))
    except OSError:  # gone, or a kernel that refuses: what the live threads used
        return _live_threads_cpu_ns(pid)


def _process_cpu_clock(pid: int) -> int:
    # The clock id clock_getcpuclockid(pid) returns: the kernel's MAKE_PROCESS_CPUCLOCK(pid,
    # CPUCLOCK_SCHED), which Python does not expose.
    return ((~pid) << 3) | 2


def _live_threads_cpu_ns(pid: int) -> float:
    total = 0.0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += float(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            pass
    return total


def wait_cpu_quiet(pid: int, quiet_s: float = 0.3, timeout_s: float = 60.0) -> float:
    """Wait until the process has been (nearly) idle for quiet_s; returns when it was last busy
    (monotonic). Busy = more than 0.5 ms of CPU in a 10 ms poll."""
    last = cpu_ns(pid)
    last_busy = time.monotonic()
    deadline = last_busy + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.01)
        now_ns = cpu_ns(pid)
        now = time.monotonic()
        if now_ns - last > 0.5e6:
            last_busy = now
        last = now_ns
        if now - last_busy >= quiet_s:
            break
    return last_busy
