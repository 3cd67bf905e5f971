"""Lambda Managed Instances (spec §9): the runtime workers waiting for work, the invocations in
flight and the ids of those that timed out, guarded by the sandbox's condition variable."""

from __future__ import annotations

import collections

from lambdawrap.devtools.emulator.state import Invocation

MAX_IDLE_WORKERS = 10_000  # MaxIdleRuntimesQueueSize
TIMED_OUT_REMEMBERED = 10_000  # late posts for these get 410 rather than 400


class WorkerSlot:
    """One worker's pending `/next`: it gets the invocation an invoke assigns to it."""

    __slots__ = ("invocation",)

    def __init__(self) -> None:
        self.invocation: Invocation | None = None


class WorkerPool:
    """Idle workers in the order they asked for work; an invoke takes the longest waiting."""

    def __init__(self) -> None:
        self.idle: collections.deque[WorkerSlot] = collections.deque()
        self.in_flight: dict[str, Invocation] = {}
        self._timed_out: collections.OrderedDict[str, None] = collections.OrderedDict()

    def clear(self) -> None:
        """A new environment: no worker of the old runtime will answer."""
        self.idle.clear()
        self.in_flight.clear()
        self._timed_out.clear()

    def park(self) -> WorkerSlot | None:
        """Add a worker that called /next; None when the queue is full."""
        if len(self.idle) >= MAX_IDLE_WORKERS:
            return None
        slot = WorkerSlot()
        self.idle.append(slot)
        return slot

    def leave(self, slot: WorkerSlot) -> None:
        """A parked worker stops waiting (its environment was reset)."""
        try:
            self.idle.remove(slot)
        except ValueError:
            pass

    def assign(self, invocation: Invocation) -> bool:
        """Give the invocation to the longest-idle worker; False when no worker is idle."""
        if not self.idle:
            return False
        self.idle.popleft().invocation = invocation
        self.in_flight[invocation.request_id] = invocation
        return True

    def finish(self, invocation: Invocation, timed_out: bool) -> None:
        """The caller has its answer: the invocation is no longer routed to."""
        self.in_flight.pop(invocation.request_id, None)
        if timed_out:
            self._timed_out[invocation.request_id] = None
            while len(self._timed_out) > TIMED_OUT_REMEMBERED:
                self._timed_out.popitem(last=False)

    def consume_timed_out(self, request_id: str) -> bool:
        """Whether a post for `request_id` comes after its timeout (asked once per id)."""
        return self._timed_out.pop(request_id, 0) is None
