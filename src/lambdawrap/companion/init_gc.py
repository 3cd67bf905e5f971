"""The cyclic garbage collector, paused while the companion imports in init and frozen after.

Init is mostly imports (the OpenTelemetry SDK, protobuf), which allocate tens of thousands of
objects that live as long as the process; the collector would scan them again and again while
they are made (about a tenth of the imports' CPU, on init's critical path below one vCPU), and
again at every full collection afterwards. Once the export pipeline is built they are frozen
(`gc.freeze`: never scanned, never collected) and the collector resumes for what comes after.
The few cycles the imports leave are frozen with them: a quarter of a megabyte, where
collecting them first would cost more CPU than pausing saved.
"""

from __future__ import annotations

import gc

_paused: list = []  # one entry while this module holds the collector off


def pause() -> None:
    """Hold the collector off, if it is on (a process that turned it off keeps it off)."""
    if gc.isenabled():
        gc.disable()
        _paused.append(True)


def resume() -> int:
    """Freeze what init made and turn the collector back on; the number of objects frozen.
    Idempotent, and safe from any thread: only the first call after `pause` acts."""
    try:
        _paused.pop()
    except IndexError:
        return 0
    gc.freeze()
    gc.enable()
    return gc.get_freeze_count()
