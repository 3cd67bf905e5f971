"""Learn at once when the kernel OOM-kills a process of the sandbox group (spec §10).

The kernel's kill is the signal: v1 notifies an eventfd registered through
`cgroup.event_control` for `memory.oom_control`, v2 marks `memory.events` as changed (poll
priority event). The counter is also read every POLL_S, so a missed notification costs at most
that much delay.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from typing import Callable

from lambdawrap.devtools.emulator.cgroups import SandboxGroup

logger = logging.getLogger(__name__)

POLL_S = 0.25


class OomWatch:
    """A named thread that calls `on_oom()` each time the group's OOM-kill count grows."""

    def __init__(self, group: SandboxGroup, on_oom: Callable[[], None]) -> None:
        self._group = group
        self._on_oom = on_oom
        self._seen = group.oom_kills()
        self._lock = threading.Lock()
        self._stop_read, self._stop_write = os.pipe()
        self._thread = threading.Thread(target=self._run, name=f"oom-watch-{group.name}", daemon=True)
        self._thread.start()

    def check(self) -> bool:
        """Read the count now; True (and `on_oom()` called) if it grew since the last look."""
        try:
            count = self._group.oom_kills()
        except (OSError, ValueError):
            return False
        with self._lock:
            grew = count > self._seen
            self._seen = max(self._seen, count)
        if grew:
            self._on_oom()
        return grew

    def stop(self) -> None:
        try:
            os.write(self._stop_write, b"x")
        except OSError:
            pass
        self._thread.join(timeout=2)
        for descriptor in (self._stop_read, self._stop_write):
            try:
                os.close(descriptor)
            except OSError:
                pass

    def _notifier(self) -> tuple[int, int, list[int]]:
        """(descriptor to poll, poll event, descriptors to close afterwards)."""
        if self._group.memory_version == 1:
            event = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            watched = os.open(self._group.oom_file, os.O_RDONLY | os.O_CLOEXEC)
            with open(os.path.join(self._group.memory_dir, "cgroup.event_control"), "w") as control:
                control.write(f"{event} {watched}")
            return event, select.POLLIN, [event, watched]
        events = os.open(self._group.oom_file, os.O_RDONLY | os.O_CLOEXEC)
        os.read(events, 4096)  # kernfs notifies about changes after the last read
        return events, select.POLLPRI, [events]

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._stop_read, select.POLLIN)
        try:
            watched, event, to_close = self._notifier()
            poller.register(watched, event)
        except OSError as exc:
            logger.debug("emulator: OOM notifications unavailable (%s); polling every %.2f s", exc, POLL_S)
            watched, to_close = -1, []
        try:
            while True:
                ready = dict(poller.poll(POLL_S * 1000))
                if self._stop_read in ready:
                    return
                if watched in ready:
                    _rearm(watched)
                self.check()
        finally:
            for descriptor in to_close:
                try:
                    os.close(descriptor)
                except OSError:
                    pass


def _rearm(descriptor: int) -> None:
    try:
        os.lseek(descriptor, 0, os.SEEK_SET)
    except OSError:
        pass
    try:
        os.read(descriptor, 4096)  # drains an eventfd's count, or re-reads memory.events
    except OSError:
        pass
