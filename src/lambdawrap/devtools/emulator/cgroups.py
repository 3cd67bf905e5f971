"""One cgroup per execution environment (spec §10): the runtime and every extension in it, the
emulator's own servers and threads outside it.

A `SandboxGroup` spans the hierarchies that hold the concerns it was made for (cpu, memory,
freezer): it sets the CPU quota and the memory limit, places a process before it execs, reads
the peak and the OOM kills, freezes and thaws, and at the end kills whatever is left in it and
removes itself. Groups are named after the emulator's process, so that the groups of an
emulator that died without cleaning up are found and removed by the next one.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import signal
import time
from typing import Iterable

from lambdawrap.devtools.emulator.cgroup_freezer import V1Freezer, V2Freezer, freezer_for, thaw_any
from lambdawrap.devtools.emulator.cgroup_mounts import CgroupLayout, Hierarchy, read_cgroup_file as _read, write_cgroup_file as _write

CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000  # the kernel refuses smaller quotas
REMOVE_TIMEOUT_S = 5.0
_NAME_PREFIX = "lambdawrap-emu"
# lambdawrap-emu.<pid namespace>.<emulator pid>.<sequence>
_NAME = re.compile(r"^lambdawrap-emu\.(\d+)\.(\d+)\.\d+$")
_sequence = itertools.count(1)
_CONTROLLERS = {"cpu": "cpu", "memory": "memory"}  # concern -> v2 controller it needs
# sh -c: each argument up to "--" a cgroup.procs to join; then exec the program after it. A
# group that cannot be joined fails the start (125), as a refused preexec_fn did.
_ENTER_GROUP = 'while [ "$1" != -- ]; do echo 0 > "$1" || exit 125; shift; done; shift; exec "$@"'


def _pid_namespace() -> int:
    return os.stat("/proc/self/ns/pid").st_ino


def _parent_dirs(layout: CgroupLayout, concerns: Iterable[str]) -> dict[str, tuple[Hierarchy, list[str]]]:
    """Where to create the group for each concern: parent directory -> (hierarchy, concerns)."""
    parents: dict[str, tuple[Hierarchy, list[str]]] = {}
    for concern in concerns:
        hierarchy: Hierarchy | None = getattr(layout, concern)
        if hierarchy is None:
            raise OSError(errno.ENOENT, f"no cgroup hierarchy for {concern}")
        parent = hierarchy.own_dir
        needs = {_CONTROLLERS[c] for c in concerns if c in _CONTROLLERS and getattr(layout, c) == hierarchy}
        if hierarchy.version == 2 and needs and not hierarchy.is_root:
            # v2 gives controllers only to groups whose parent holds no processes; the
            # emulator's own group holds the emulator, so the group is made beside it, under
            # the parent that gave the emulator's group these controllers.
            parent = os.path.dirname(hierarchy.own_dir)
        entry = parents.setdefault(parent, (hierarchy, []))
        entry[1].append(concern)
    return parents


def _enable_v2_controllers(parent: str, controllers: set[str]) -> None:
    enabled = set(_read(os.path.join(parent, "cgroup.subtree_control")).split())
    missing = controllers - enabled
    if missing:
        _write(os.path.join(parent, "cgroup.subtree_control"), " ".join("+" + c for c in sorted(missing)))


def _members(group_dir: str) -> set[int]:
    try:
        return {int(pid) for pid in _read(os.path.join(group_dir, "cgroup.procs")).split()}
    except (OSError, ValueError):
        return set()


def clear_and_remove(group_dirs: list[str], timeout: float = REMOVE_TIMEOUT_S) -> bool:
    """Thaw, kill everything in and remove the directories of one group; True if all are gone.

    Thawing comes first: a task frozen by the v1 freezer ignores SIGKILL until it is thawed.
    """
    existing = [d for d in group_dirs if os.path.isdir(d)]
    for group_dir in existing:
        try:
            thaw_any(group_dir)
        except OSError:
            pass
    deadline = time.monotonic() + timeout
    while existing:
        for group_dir in existing:
            try:
                os.rmdir(group_dir)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                _kill_members(group_dir)
        existing = [d for d in existing if os.path.isdir(d)]
        if not existing:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _kill_members(group_dir: str) -> None:
    kill_file = os.path.join(group_dir, "cgroup.kill")
    if os.path.exists(kill_file):
        try:
            _write(kill_file, "1")
            return
        except OSError:
            pass
    for pid in _members(group_dir):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def remove_stale_groups(layout: CgroupLayout) -> list[str]:
    """Remove the groups of emulators of this pid namespace that are no longer running
    (killed before they could clean up); returns the directories removed."""
    namespace = _pid_namespace()
    stale: dict[str, list[str]] = {}
    for parent in _parent_dirs(layout, [c for c in ("cpu", "memory", "freezer") if getattr(layout, c)]):
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            match = _NAME.match(name)
            if match and int(match.group(1)) == namespace and not os.path.exists(f"/proc/{match.group(2)}"):
                stale.setdefault(name, []).append(os.path.join(parent, name))
    removed = []
    for dirs in stale.values():
        try:
            if clear_and_remove(dirs):
                removed.extend(dirs)
        except OSError:
            pass
    return removed




class SandboxGroup:
    """The cgroup of one execution environment, over every hierarchy it needs."""

    def __init__(self, layout: CgroupLayout, concerns: Iterable[str]) -> None:
        concerns = list(concerns)
        self.name = f"{_NAME_PREFIX}.{_pid_namespace()}.{os.getpid()}.{next(_sequence)}"
        self._dirs: dict[str, str] = {}
        self._versions: dict[str, int] = {}
        self.paths: list[str] = []
        try:
            for parent, (hierarchy, here) in _parent_dirs(layout, concerns).items():
                needs = {_CONTROLLERS[c] for c in here if c in _CONTROLLERS}
                if hierarchy.version == 2 and needs:
                    _enable_v2_controllers(parent, needs)
                path = os.path.join(parent, self.name)
                os.mkdir(path)
                self.paths.append(path)
                for concern in here:
                    self._dirs[concern] = path
                    self._versions[concern] = hierarchy.version
            self._procs = [os.path.join(path, "cgroup.procs") for path in self.paths]
            for procs in self._procs:  # writable, or no group: found here, not by each process
                os.close(os.open(procs, os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            clear_and_remove(self.paths)
            raise
        self.freezer: V1Freezer | V2Freezer | None = None
        if "freezer" in self._dirs:
            self.freezer = freezer_for(self._dirs["freezer"], self._versions["freezer"])

    def _file(self, concern: str, v1_name: str, v2_name: str) -> str:
        return os.path.join(self._dirs[concern], v1_name if self._versions[concern] == 1 else v2_name)

    def has(self, concern: str) -> bool:
        return concern in self._dirs

    # placement --------------------------------------------------------------------

    def placement(self) -> list[str]:
        """The argv prefix that moves a new process into the group before it runs its program,
        so that everything it starts is in the group too: a shell writes its own pid ("0") into
        each group's cgroup.procs, then execs the program (same pid). Not a `preexec_fn`: with
        one, Python runs in the child between fork and exec the at-fork handlers other code of
        this process registered (the OpenTelemetry SDK's start threads there), which can hang
        the child on a lock another thread held at the fork."""
        return ["/bin/sh", "-c", _ENTER_GROUP, "lambdawrap-enter-group", *self._procs, "--"]

    def members(self) -> set[int]:
        """Every process in the group."""
        found: set[int] = set()
        for path in self.paths:
            found |= _members(path)
        return found

    # limits -----------------------------------------------------------------------

    def set_cpu_quota(self, quota_us: int | None) -> None:
        """Allow `quota_us` of CPU time per 100 ms period to the whole group (None: no limit)."""
        if self._versions["cpu"] == 1:
            _write(self._file("cpu", "cpu.cfs_period_us", ""), str(CPU_PERIOD_US))
            _write(self._file("cpu", "cpu.cfs_quota_us", ""), str(max(MIN_CPU_QUOTA_US, quota_us)) if quota_us else "-1")
        else:
            _write(self._file("cpu", "", "cpu.max"), f"{max(MIN_CPU_QUOTA_US, quota_us) if quota_us else 'max'} {CPU_PERIOD_US}")

    def limit_memory(self, limit_bytes: int) -> None:
        """One limit for everything in the group, with no swap."""
        if self._versions["memory"] == 1:
            _write(self._file("memory", "memory.limit_in_bytes", ""), str(limit_bytes))
            memsw = self._file("memory", "memory.memsw.limit_in_bytes", "")
            if os.path.exists(memsw):  # memory + swap, only where swap accounting is on
                _write(memsw, str(limit_bytes))
            else:
                try:
                    _write(self._file("memory", "memory.swappiness", ""), "0")
                except OSError:
                    pass  # best effort: without swap accounting, swapping can only be discouraged
        else:
            _write(self._file("memory", "", "memory.max"), str(limit_bytes))
            swap = self._file("memory", "", "memory.swap.max")
            if os.path.exists(swap):
                _write(swap, "0")

    def memory_peak_bytes(self) -> int:
        """The group's memory high-water mark (v2 before 5.19: its current use)."""
        if self._versions["memory"] == 1:
            return int(_read(self._file("memory", "memory.max_usage_in_bytes", "")))
        peak = self._file("memory", "", "memory.peak")
        return int(_read(peak if os.path.exists(peak) else self._file("memory", "", "memory.current")))

    @property
    def oom_file(self) -> str:
        """The file whose `oom_kill` line counts the kernel's OOM kills in the group."""
        return self._file("memory", "memory.oom_control", "memory.events")

    @property
    def memory_version(self) -> int:
        return self._versions["memory"]

    @property
    def memory_dir(self) -> str:
        return self._dirs["memory"]

    def oom_kills(self) -> int:
        for line in _read(self.oom_file).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    # the end ----------------------------------------------------------------------

    def remove(self, timeout: float = REMOVE_TIMEOUT_S) -> bool:
        """Kill what is left in the group (thawing first) and remove it; True if it is gone."""
        return clear_and_remove(self.paths, timeout)
