"""What the phases of one execution environment share, and the one condition variable that guards it.

API handler threads block on `cv` (the runtime's and the extensions' `/next`), the invoke path
waits on it for outcomes, and a reset bumps a generation counter so that every blocked thread of
the old environment lets go.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from lambdawrap.devtools.emulator.environment import FunctionConfig
from lambdawrap.devtools.emulator.limits import Limits
from lambdawrap.devtools.emulator.processes import ManagedProcess
from lambdawrap.devtools.emulator.state import Extension, Invocation
from lambdawrap.devtools.emulator.telemetry import TelemetryBus
from lambdawrap.devtools.emulator.worker_pool import WorkerPool

LogSink = Callable[[str, str], None]  # (source: function|extension|platform, line)


class SandboxState:
    """The environment's processes, registrations and current invocation; read and written
    under `cv` by the init, invoke and reset phases and by the API calls."""

    def __init__(self, config: FunctionConfig, bus: TelemetryBus, log: LogSink, limits: Limits) -> None:
        self.config = config
        self.bus = bus
        self.log = log
        self.limits = limits
        self.cv = threading.Condition()
        # Held for a whole invoke phase, including what runs after the caller has its answer,
        # so that the next invocation (or a spindown) waits for it.
        self.invoke_lock = threading.Lock()
        self.runtime_gen = 0
        self.runtime_launched_at = 0.0  # time.monotonic() just before the runtime process started
        self.env_gen = 0
        self.initialized = False
        self.init_count = 0
        self.instance_id = ""
        self.runtime: ManagedProcess | None = None
        self.runtime_ready = False
        self.init_error: tuple[str, bytes] | None = None
        self.fatal: str | None = None
        self.registration_open = False
        self.subscriptions_open = False
        self.launched: list[Extension] = []
        self.extensions: dict[str, Extension] = {}
        self.current: Invocation | None = None
        self.pending_runtime: Invocation | None = None
        self.pool = WorkerPool()  # Managed Instances only: idle workers and invocations in flight
        self.pending_init_duration: float | None = None
        self.out_of_memory: str | None = None  # request id whose runtime exceeded the memory size
        self.resets: list[str] = []  # reasons, in order, for tests and the CLI

    def wait(self, predicate: Callable[[], bool], deadline: float) -> bool:
        """Wait on the condition (held by the caller) until predicate() or the deadline."""
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.cv.wait(left)
        return True

    def runtime_replaced(self, gen: int, connected_at: float) -> bool:
        """Whether a Runtime API request read in runtime generation `gen`, on a connection made
        at `connected_at`, is not the current runtime's: a reset came since, or the connection
        is older than the runtime process (a killed runtime's, sent before and read after)."""
        return self.runtime_gen != gen or connected_at < self.runtime_launched_at

    def notify(self, *_: object) -> None:
        """Wake every waiter; also a process's on_exit callback."""
        with self.cv:
            self.cv.notify_all()

    def runtime_dead(self) -> bool:
        """Whether the runtime was started and has exited."""
        return self.runtime is not None and self.runtime.exited()

    def freeze(self) -> None:
        """Freeze the environment until its next event; telemetry for it waits for the thaw."""
        self.bus.gate.close()
        self.limits.freeze()
        if not self.limits.frozen:
            self.bus.gate.open()

    def thaw(self) -> None:
        """Thaw the environment before it gets its next event (or is shut down)."""
        self.limits.thaw()
        self.bus.gate.open()

    def note_out_of_memory(self) -> None:
        """The kernel OOM-killed a process of the environment: the current invocation fails."""
        with self.cv:
            if self.current is not None:
                self.out_of_memory = self.current.request_id
            self.cv.notify_all()

    def memory_used_mb(self) -> int:
        """maxMemoryUsedMB: the environment's high-water mark, extensions included."""
        return self.limits.max_memory_used_mb(self._sample_peak_rss_kb)

    def processes(self) -> list:
        """The runtime's process and the extensions', those started."""
        return [p for p in (self.runtime, *(e.process for e in list(self.launched))) if p is not None]

    def _sample_peak_rss_kb(self) -> int:
        return sum(p.sample_peak_rss_kb() for p in self.processes())

    def platform_line(self, line: str) -> None:
        """Log one line as the platform (START, END, REPORT, INIT_REPORT, EXTENSION)."""
        self.log("platform", line)
