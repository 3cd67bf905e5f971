"""One background thread per process for refreshing secrets, on either side of the layer.

A refresh used to start a thread of its own each time; this worker is one named daemon thread,
started on first need, woken by an Event, and running its work at most once per
`min_interval_s` however often it is woken (wake-ups in between are folded into the next run).
The work returns how long the worker may sleep before running again unwoken (None: until woken),
so that periodic and on-demand refreshes share the one thread. Stdlib only: the function's
process imports it.
"""

from __future__ import annotations

import os
import threading
import time

from lambdawrap.shared.log import Failures

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Callable


class RefreshWorker:
    def __init__(self, name: str, work: Callable[[], float | None], min_interval_s: float = 0.0) -> None:
        self.name = name
        self._work = work
        self._min_interval_s = min_interval_s
        self._failures = Failures()
        self._start_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        if hasattr(os, "register_at_fork"):
            # A forked child (awslambdaric's multi-concurrency workers) has no copy of the
            # thread: it must start its own on first need, with fresh locks.
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        woken, stopped = self._wake.is_set(), self._stopped.is_set()
        self._start_lock = threading.Lock()
        self._wake, self._stopped = threading.Event(), threading.Event()
        if woken:
            self._wake.set()
        if stopped:
            self._stopped.set()
        self._thread = None

    def start(self) -> None:
        """Start the thread (idempotent); its first run happens at once. Never raises: where no
        thread can be had (at the interpreter's exit, as from an atexit callback, or at the
        process's limit of threads), the values held are served and the start is tried again at
        the next wake."""
        self._wake.set()
        with self._start_lock:
            if self._thread is None and not self._stopped.is_set():
                thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                try:
                    thread.start()
                except RuntimeError:
                    self._failures.record(f"{self.name}: no thread could be started")
                    return
                self._thread = thread

    def wake(self) -> None:
        """Ask for a run soon (no more often than min_interval_s); never blocks."""
        self.start()

    def stop(self) -> None:
        """Let the thread end after its current run (idempotent)."""
        self._stopped.set()
        self._wake.set()

    def _run(self) -> None:
        sleep_s: float | None = None
        while True:
            self._wake.wait(sleep_s)
            if self._stopped.is_set():
                return
            self._wake.clear()
            started = time.monotonic()
            try:
                sleep_s = self._work()
            except Exception:  # noqa: BLE001 - the worker outlives a failing run; logged once
                self._failures.record(f"{self.name} failed")
                sleep_s = None
            rest_s = max(0.0, self._min_interval_s - (time.monotonic() - started))
            if rest_s and self._stopped.wait(rest_s):
                return
            if sleep_s is not None:
                sleep_s = max(0.0, sleep_s - rest_s)
