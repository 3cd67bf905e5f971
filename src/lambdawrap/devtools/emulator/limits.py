"""What the platform enforces on an execution environment (spec §10), on the phases' cue:
CPU in proportion to memory, one memory limit for the runtime and the extensions together,
and freezing between invocations.

Each environment gets a fresh `SandboxGroup` when its init starts, removed when it is reset.
Where the machine cannot do this (not root, no cgroups, a controller missing), the emulator says
so in one line and keeps its old behaviour: no CPU limit, no freezing, and the memory limit
enforced by sampling the runtime's RSS.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

from lambdawrap.devtools.emulator.cgroup_mounts import CgroupLayout, find_layout
from lambdawrap.devtools.emulator.cgroups import CPU_PERIOD_US, SandboxGroup, remove_stale_groups
from lambdawrap.devtools.emulator.oom_watch import OomWatch

logger = logging.getLogger(__name__)

FULL_CORE_MB = 1769  # the memory size that buys one vCPU-second per second
MAX_MEMORY_MB = 10240
INIT_CPU_POLICIES = ("unthrottled", "as-invoke")
# AWS documents no CPU boost for init, but the one published measurement (van Donkersgoed, 2022)
# found init code running faster than the same code in the handler at every size below ~3 GB,
# consistent with init being unthrottled up to the 2 visible cores. Whether that survived INIT
# billing (Aug 2025) is unknown, so the measured behaviour is the default and `as-invoke` the
# pessimistic alternative for a worst-case cold start.
DEFAULT_INIT_CPU = "unthrottled"
UNTHROTTLED_INIT_CPUS = 2  # the cores a function of up to 3,008 MB sees


def cpu_quota_us(memory_mb: int) -> int:
    """CPU time per 100 ms period for a memory size: memory/1769 of one core."""
    return round(CPU_PERIOD_US * min(memory_mb, MAX_MEMORY_MB) / FULL_CORE_MB)


@dataclass(frozen=True)
class LimitSettings:
    """Which limits to enforce; each can be switched off for debugging."""

    cpu_limit: bool = True
    freeze: bool = True
    init_cpu: str = DEFAULT_INIT_CPU

    def __post_init__(self) -> None:
        if self.init_cpu not in INIT_CPU_POLICIES:
            raise ValueError(f"init CPU policy must be one of {', '.join(INIT_CPU_POLICIES)}, not {self.init_cpu!r}")


def machine_support(concerns: Iterable[str] = ("cpu", "memory", "freezer")) -> tuple[str | None, CgroupLayout | None]:
    """(why these concerns cannot be enforced here or None, the cgroup layout)."""
    if os.geteuid() != 0:
        return "needs root", None
    try:
        layout = find_layout()
    except OSError as exc:
        return f"cannot read the cgroup mounts: {exc.strerror}", None
    missing = [c for c in concerns if getattr(layout, c) is None]
    if missing:
        return "no cgroup " + " or ".join(missing) + " controller", layout
    return None, layout


_notices_given: set[str] = set()


def _notice(message: str) -> None:
    # One line per distinct reason and process: a test run starts many emulators.
    if message not in _notices_given:
        _notices_given.add(message)
        logger.warning("emulator: %s", message)


class Limits:
    """The limits of one emulator's environments, one environment at a time.

    In Managed Instances mode the environment is never frozen and its CPU is not throttled
    (its CPU comes from the capacity provider's memory-per-vCPU ratio, not the 1,769 MB rule);
    the memory limit covers every worker.
    """

    def __init__(self, settings: LimitSettings, memory_mb: int, managed_instances: bool = False) -> None:
        self.settings = settings
        self.memory_mb = memory_mb
        self._cpu = settings.cpu_limit and not managed_instances
        self._freeze = settings.freeze and not managed_instances
        self._concerns = ["memory"] + (["cpu"] if self._cpu else []) + (["freezer"] if self._freeze else [])
        self._lock = threading.Lock()
        self._group: SandboxGroup | None = None
        self._oom_watch: OomWatch | None = None
        self._frozen = False
        self._peak_bytes = 0
        self._sampled_peak_kb = 0
        self.unavailable = self._check_machine()
        if self.unavailable:
            _notice(f"CPU, memory and freezing are not enforced ({self.unavailable}); memory is sampled instead")
        else:
            remove_stale_groups(self._layout)

    def _check_machine(self) -> str | None:
        """Why the limits cannot be enforced here, or None when they can."""
        reason, layout = machine_support(self._concerns)
        if layout is not None:
            self._layout = layout
        return reason

    @property
    def enforced(self) -> bool:
        """Whether a cgroup enforces the memory limit (otherwise sampling does)."""
        return not self.unavailable

    # the environment's lifecycle, on the phases' cue ------------------------------------

    def environment_starting(self, on_oom: Callable[[], None]) -> None:
        """A new environment's init begins: a fresh group with the memory limit and the init CPU."""
        self.environment_ended()
        self._sampled_peak_kb = self._peak_bytes = 0
        if self.unavailable:
            return
        try:
            group = SandboxGroup(self._layout, self._concerns)
            group.limit_memory(self.memory_mb * 1024 * 1024)
            if self._cpu:
                group.set_cpu_quota(self._init_quota())
        except OSError as exc:
            self.unavailable = f"cannot set up a cgroup: {exc}"
            _notice(f"CPU, memory and freezing are not enforced ({self.unavailable}); memory is sampled instead")
            return
        with self._lock:
            self._group = group
            self._frozen = False
        self._oom_watch = OomWatch(group, on_oom)

    def _init_quota(self) -> int | None:
        invoke = cpu_quota_us(self.memory_mb)
        if self.settings.init_cpu == "as-invoke":
            return invoke
        return max(invoke, UNTHROTTLED_INIT_CPUS * CPU_PERIOD_US)

    def init_succeeded(self) -> None:
        """From now on the environment gets memory/1769 of a core."""
        group = self._group
        if group is not None and self._cpu:
            group.set_cpu_quota(cpu_quota_us(self.memory_mb))

    def placement(self) -> list[str]:
        """The argv prefix that puts a process into the environment's group ([]: no group)."""
        group = self._group
        return group.placement() if group is not None else []

    def freeze(self) -> None:
        """Freeze the environment: the runtime and every extension have called /next."""
        with self._lock:
            group = self._group
            if group is None or group.freezer is None or self._frozen:
                return
            if group.freezer.freeze():
                self._frozen = True
                return
            logger.warning("emulator: the environment did not freeze in time; it keeps running")
            group.freezer.thaw()

    def thaw(self) -> None:
        """Thaw the environment before it gets an event (or is shut down)."""
        with self._lock:
            group = self._group
            if group is None or group.freezer is None or not self._frozen:
                return
            if not group.freezer.thaw():
                logger.warning("emulator: the environment did not thaw in time")
            self._frozen = False

    @property
    def frozen(self) -> bool:
        return self._frozen

    def environment_ended(self) -> None:
        """The environment's processes were stopped: kill any left (thawed first), remove the group."""
        watch, self._oom_watch = self._oom_watch, None
        if watch is not None:
            watch.stop()
        with self._lock:
            group, self._group = self._group, None
            self._frozen = False
        if group is not None and not group.remove():
            logger.warning("emulator: could not remove cgroup %s; the next emulator removes it", group.name)

    # what the platform reads ----------------------------------------------------------

    def out_of_memory(self) -> bool:
        """Whether the kernel OOM-killed something in the group since the last look."""
        watch = self._oom_watch
        return watch.check() if watch is not None else False

    def max_memory_used_mb(self, sample_kb: Callable[[], int]) -> int:
        """The environment's memory high-water mark in MB: the group's peak, or, without a group,
        the running maximum of `sample_kb()` (the processes' summed peak RSS)."""
        group = self._group
        if group is not None:
            try:
                self._peak_bytes = max(self._peak_bytes, group.memory_peak_bytes())
            except (OSError, ValueError):
                pass
            return math.ceil(self._peak_bytes / (1024 * 1024))
        self._sampled_peak_kb = max(self._sampled_peak_kb, sample_kb())
        return math.ceil(self._sampled_peak_kb / 1024)

    def members(self) -> set[int]:
        """The processes in the environment's group (empty without one)."""
        group = self._group
        return group.members() if group is not None else set()
