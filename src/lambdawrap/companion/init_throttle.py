"""Whether this init runs at an invocation's CPU share: the platform does not say (spec §10).

Below one vCPU the companion holds its first /next, up to the startup wait, until its export
pipeline is built: wherever init was measured it ran at full speed, so the import costs a
fraction of what it costs after a response (a fourteenth at 128 MB). Where init is throttled
like an invocation that reasoning fails: the import costs as much in init as after the response,
holding init lengthens every cold start the caller waits for, and the import takes its CPU from
the runtime's own init, which shares the same quota. There the first /next goes as soon as the
companion is listening, and the pipeline is built at low priority, behind the function.

The share of a core this process got since `main` began tells which: it has been busy all
along (imports, sockets; one short exchange with the platform), so at full speed it got most of
a core, throttled no more than the memory's share of one, which the runtime is using too (7 %
at 128 MB, 29 % at 512 MB).
"""

from __future__ import annotations

import time

# Far below what a busy process gets at full speed, even beside two others on two cores;
# above what it gets throttled below one vCPU, where the startup wait applies.
THROTTLED_BELOW = 0.3
MIN_WALL_S = 0.005  # a window shorter than this says nothing (a clock tick, a preemption)


class StartClock:
    """The wall and CPU clocks of this process when `main` began."""

    def __init__(self) -> None:
        self.wall = time.monotonic()
        self.cpu = time.process_time()

    def share(self) -> float | None:
        """The share of one core this process has had since then; None if too soon to say."""
        wall = time.monotonic() - self.wall
        if wall < MIN_WALL_S:
            return None
        return (time.process_time() - self.cpu) / wall


def throttled(clock: StartClock | None) -> tuple[bool, float | None]:
    """(whether init looks throttled, the share measured)."""
    share = clock.share() if clock is not None else None
    return share is not None and share < THROTTLED_BELOW, share
