"""A log pipeline slower than the function (a busy machine): the emulator hands on each of the
runtime's lines that starts with a prefix only after a pause."""

from __future__ import annotations

import time
from typing import Any


def slow_log_lines(monkeypatch: Any, prefix: str = "slow line", pause_s: float = 0.2) -> None:
    from lambdawrap.devtools.emulator import init_phase

    runtime_line = init_phase.InitPhase.runtime_line

    def slow_line(self: Any, stream: str, line: str) -> None:
        if line.startswith(prefix):
            time.sleep(pause_s)
        runtime_line(self, stream, line)

    monkeypatch.setattr(init_phase.InitPhase, "runtime_line", slow_line)
