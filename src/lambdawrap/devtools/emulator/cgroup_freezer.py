"""Freezing and thawing a cgroup (spec §10), with the v2 core freezer or the v1 freezer controller.

Freezing is asynchronous in both: the state file says FREEZING (v1) or `frozen 0` (v2) until
every task has stopped, so each operation polls until the kernel confirms it.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from lambdawrap.devtools.emulator.cgroup_mounts import read_cgroup_file as _read, write_cgroup_file as _write

FREEZE_TIMEOUT_S = 5.0
_FIRST_POLL_S = 0.0005
_LONGEST_POLL_S = 0.005


def _poll_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    pause = _FIRST_POLL_S
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, _LONGEST_POLL_S)
    return True


class V2Freezer:
    """`cgroup.freeze` and `cgroup.events` (kernel 5.2+); works in a controller-less hierarchy."""

    # A v2-frozen task dies at SIGKILL at once.
    kill_needs_thaw = False

    def __init__(self, group_dir: str) -> None:
        self._freeze_file = os.path.join(group_dir, "cgroup.freeze")
        self._events_file = os.path.join(group_dir, "cgroup.events")

    def _frozen(self) -> bool:
        return "frozen 1" in _read(self._events_file).splitlines()

    def freeze(self, timeout: float = FREEZE_TIMEOUT_S) -> bool:
        _write(self._freeze_file, "1")
        return _poll_until(self._frozen, timeout)

    def thaw(self, timeout: float = FREEZE_TIMEOUT_S) -> bool:
        _write(self._freeze_file, "0")
        return _poll_until(lambda: not self._frozen(), timeout)


class V1Freezer:
    """`freezer.state` of the v1 freezer controller."""

    # A v1-frozen task ignores SIGKILL (it sleeps uninterruptibly) until it is thawed.
    kill_needs_thaw = True

    def __init__(self, group_dir: str) -> None:
        self._state_file = os.path.join(group_dir, "freezer.state")

    def _reads(self, wanted: str) -> Callable[[], bool]:
        return lambda: _read(self._state_file).strip() == wanted

    def freeze(self, timeout: float = FREEZE_TIMEOUT_S) -> bool:
        _write(self._state_file, "FROZEN")
        return _poll_until(self._reads("FROZEN"), timeout)

    def thaw(self, timeout: float = FREEZE_TIMEOUT_S) -> bool:
        _write(self._state_file, "THAWED")
        return _poll_until(self._reads("THAWED"), timeout)


def freezer_for(group_dir: str, version: int) -> V1Freezer | V2Freezer:
    return V2Freezer(group_dir) if version == 2 else V1Freezer(group_dir)


def thaw_any(group_dir: str) -> None:
    """Thaw a group whatever froze it (used before killing what is left in it)."""
    if os.path.exists(os.path.join(group_dir, "freezer.state")):
        V1Freezer(group_dir).thaw(FREEZE_TIMEOUT_S)
    if os.path.exists(os.path.join(group_dir, "cgroup.freeze")):
        V2Freezer(group_dir).thaw(FREEZE_TIMEOUT_S)
