"""Where this machine keeps its cgroups (spec §10): which hierarchy holds the cpu and memory
controllers and which one can freeze, and the emulator's own cgroup in each, read from
/proc/self/mountinfo and /proc/self/cgroup; paths are never assumed.

A hybrid host has v1 controllers plus a v2 hierarchy without controllers: CPU and memory then
use the v1 files, while freezing may use the v2 core files (`cgroup.freeze`), which work in a
controller-less hierarchy.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

MOUNTINFO = "/proc/self/mountinfo"
OWN_CGROUPS = "/proc/self/cgroup"
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Hierarchy:
    """One cgroup hierarchy, as seen from the emulator's process."""

    version: int  # 1 or 2
    mount_point: str
    own_dir: str  # the directory of the emulator's own cgroup in it

    @property
    def is_root(self) -> bool:
        return os.path.normpath(self.own_dir) == os.path.normpath(self.mount_point)


@dataclass(frozen=True)
class CgroupLayout:
    """The hierarchy for each concern, None where this machine has none."""

    cpu: Hierarchy | None
    memory: Hierarchy | None
    freezer: Hierarchy | None  # v2 (core freezer) when there is one, else the v1 freezer controller


def read_cgroup_file(path: str) -> str:
    with open(path) as f:
        return f.read()


def write_cgroup_file(path: str, value: str) -> None:
    # One write() per value: the kernel takes each write to a cgroup file as one request.
    with open(path, "w") as f:
        f.write(value)


def _unescape(field: str) -> str:
    # mountinfo writes spaces, tabs, newlines and backslashes in paths as octal escapes.
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _mounts(mountinfo_text: str) -> list[tuple[str, str, str, set[str]]]:
    """(fs type, mount root, mount point, super options) of every cgroup mount."""
    found = []
    for line in mountinfo_text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        found.append((tail[0], _unescape(fields[3]), _unescape(fields[4]), set(tail[2].split(","))))
    return found


def _own_paths(cgroup_text: str) -> tuple[dict[str, str], str | None]:
    """The emulator's cgroup path per v1 controller, and its v2 path (None without v2)."""
    by_controller: dict[str, str] = {}
    unified = None
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if parts[0] == "0" and controllers == "":
            unified = path
            continue
        for controller in controllers.split(","):
            if controller:
                by_controller[controller] = path
    return by_controller, unified


def _own_dir(mount_root: str, mount_point: str, own_path: str) -> str | None:
    """The directory of our cgroup under a mount, or None when the mount does not show it
    (a container that mounts only its own part of the tree)."""
    root = mount_root.rstrip("/")
    if own_path != root and not own_path.startswith(root + "/"):
        return None
    return os.path.normpath(os.path.join(mount_point, own_path[len(root) :].lstrip("/")))


def _v2_controllers(own_dir: str) -> set[str]:
    try:
        return set(read_cgroup_file(os.path.join(own_dir, "cgroup.controllers")).split())
    except OSError:
        return set()


def find_layout(mountinfo_text: str | None = None, cgroup_text: str | None = None, *, v1_freezer: bool = False) -> CgroupLayout:
    """Find the hierarchies from the kernel's own account (the texts are for tests);
    `v1_freezer` picks the v1 freezer controller even where v2 could freeze."""
    if mountinfo_text is None:
        with open(MOUNTINFO) as f:
            mountinfo_text = f.read()
    if cgroup_text is None:
        with open(OWN_CGROUPS) as f:
            cgroup_text = f.read()
    by_controller, unified_path = _own_paths(cgroup_text)
    v1: dict[str, Hierarchy] = {}
    v2: Hierarchy | None = None
    for fs_type, root, point, options in _mounts(mountinfo_text):
        if fs_type == "cgroup2":
            if v2 is None and unified_path is not None:
                own = _own_dir(root, point, unified_path)
                v2 = Hierarchy(2, point, own) if own else None
            continue
        for controller in ("cpu", "memory", "freezer"):
            if controller in options and controller not in v1 and controller in by_controller:
                own = _own_dir(root, point, by_controller[controller])
                if own:
                    v1[controller] = Hierarchy(1, point, own)
    v2_controllers = _v2_controllers(v2.own_dir) if v2 else set()
    # A controller lives in one hierarchy only: where v2 lists it, v1 cannot have it.
    cpu = v2 if "cpu" in v2_controllers else v1.get("cpu")
    memory = v2 if "memory" in v2_controllers else v1.get("memory")
    # One freezer, not both: the v2 core freezer (kernel 5.2+) lets SIGKILL through to frozen
    # tasks, so it is preferred; the v1 freezer controller serves where there is no v2.
    v2_freezes = v2 is not None and _kernel_at_least(5, 2) and not (v1_freezer and "freezer" in v1)
    freezer = v2 if v2_freezes else v1.get("freezer")
    return CgroupLayout(cpu=cpu, memory=memory, freezer=freezer)


def _kernel_at_least(major: int, minor: int) -> bool:
    release = os.uname().release
    numbers = re.match(r"(\d+)\.(\d+)", release)
    return bool(numbers) and (int(numbers.group(1)), int(numbers.group(2))) >= (major, minor)
