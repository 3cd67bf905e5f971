"""A function that floods its log: every line is exported or counted, the companion's memory
stays bounded, and the time after the response stays inside the flush budget."""

from __future__ import annotations

import time

import pytest

from conftest import write_function
from support.faults import companion_process
from support.stack import instrumented

LINES = 8000  # per invocation: 8 MB, twice the companion's log buffer
FLOOD_APP = f"""
def handler(event, context):
    line = "f" * 999
    for _ in range({LINES}):
        print(line)
    return {{"printed": {LINES}}}
"""
BUDGET_MS = 1000


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.timeout(600)
def test_every_line_is_exported_or_counted_and_memory_stays_bounded(tmp_path):
    task = write_function(tmp_path / "task", FLOOD_APP)
    env = {"LAMBDAWRAP_FLUSH": "end", "LAMBDAWRAP_FLUSH_BUDGET_MS": str(BUDGET_MS)}
    with instrumented(task, env=env, timeout_s=60, memory_mb=2048) as (emu, rx):
        invocations = 3
        after_response_ms = []
        for _ in range(invocations):
            started = time.perf_counter()
            result = emu.invoke({})
            assert result.json() == {"printed": LINES}
            emu.wait_idle(60)
            after_response_ms.append((time.perf_counter() - started) * 1000 - result.duration_ms)
        peak_mb = peak_rss_mb(companion_process(emu).pid)
    produced = len(emu.log_lines("function"))  # every line the platform made a log record of
    printed = invocations * LINES
    exported = len(rx.logs())
    assert produced >= printed
    dropped = {}
    for point in rx.metrics():
        if point["name"] == "lambdawrap.dropped":
            reason = point["attributes"]["reason"]
            dropped[reason] = dropped.get(reason, 0) + point["value"]
    line_drops = sum(dropped.get(reason, 0) for reason in ("log_buffer_full", "log_shutdown_deadline", "platform_logs_dropped"))
    # THEN every line is exported or counted, once
    assert exported + line_drops == produced, (exported, dropped, produced)
    assert dropped.get("log_buffer_full", 0) > 0  # the flood was larger than the buffer
    # ... the companion's memory stays bounded (its buffer holds at most 4 MB of lines)
    assert peak_mb < 100, peak_mb
    # ... and the invoke phase after the response stays near the flush budget (the budget, plus
    # waiting for the platform's word on the invocation, plus a busy machine's slack)
    assert max(after_response_ms) < BUDGET_MS + 2000, after_response_ms
    print(f"\nlog flood: {printed} lines printed, {exported} exported, drops {dropped}, companion peak RSS {peak_mb:.0f} MB, after the response {[round(ms) for ms in after_response_ms]} ms")
