"""Whether an init runs at an invocation's CPU share (init_throttle): measured by the companion
from the share of a core it got since it started. Throttled, the first /next does not wait for
the export pipeline (which then loads behind the function); at full speed it does, below one
vCPU. Through the emulator at 128 MB under both of its init policies."""

from __future__ import annotations

import pytest

from conftest import write_function
from lambdawrap.companion import init_throttle
from lambdawrap.devtools.emulator.limits import machine_support
from support.stack import instrumented

UNSUPPORTED, _ = machine_support()
THROTTLED_LINE = "throttled like an invocation"
REHEARSED_LINE = "export rehearsed in init"


class FakeClocks:
    def __init__(self) -> None:
        self.wall = 100.0
        self.cpu = 5.0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(init_throttle.time, "monotonic", lambda: self.wall)
        monkeypatch.setattr(init_throttle.time, "process_time", lambda: self.cpu)


@pytest.mark.parametrize(
    "wall_s, cpu_s, expected",
    [
        (0.040, 0.036, False),  # a full core's worth: init at full speed
        (0.040, 0.014, False),  # a busy machine's share: still not throttled
        (0.500, 0.036, True),  # 7 % of a core: 128 MB's share
        (0.200, 0.040, True),  # 20 %: 512 MB's share, shared with the runtime
    ],
)
def test_the_share_of_a_core_since_main_tells_a_throttled_init(monkeypatch, wall_s, cpu_s, expected):
    clocks = FakeClocks()
    clocks.install(monkeypatch)
    started = init_throttle.StartClock()
    clocks.wall += wall_s
    clocks.cpu += cpu_s
    is_throttled, share = init_throttle.throttled(started)
    assert is_throttled is expected
    assert share == pytest.approx(cpu_s / wall_s)


def test_too_short_a_window_or_no_clock_says_nothing(monkeypatch):
    clocks = FakeClocks()
    clocks.install(monkeypatch)
    started = init_throttle.StartClock()
    clocks.wall += init_throttle.MIN_WALL_S / 2
    assert init_throttle.throttled(started) == (False, None)
    assert init_throttle.throttled(None) == (False, None)


APP = 'def handler(event, context):\n    print("handled")\n    return {"ok": True}\n'


@pytest.mark.skipif(UNSUPPORTED is not None, reason=f"limits not enforced here: {UNSUPPORTED}")
@pytest.mark.parametrize("policy", ["as-invoke", "unthrottled"])
def test_a_throttled_init_is_not_held_for_the_pipeline_and_nothing_is_lost(tmp_path, policy):
    # GIVEN a 128 MB function, where the startup wait applies, its init throttled or not
    task = write_function(tmp_path / "task", APP)
    with instrumented(task, memory_mb=128, cpu_limit=True, init_cpu=policy, timeout_s=10.0, env={"LAMBDAWRAP_LOG_LEVEL": "debug"}) as (emu, rx):
        # WHEN it is invoked twice
        results = [emu.invoke({}) for _ in range(2)]
        assert all(r.status == 200 and r.json() == {"ok": True} for r in results)
        rids = {r.request_id for r in results}
        # THEN both invocations are exported either way, and their log lines (by SHUTDOWN at
        # the latest: a line the Telemetry API delivers after its invocation's export waits)
        rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") in rids, count=2, timeout=120)
        lines = emu.log_lines("extension")
    rx.wait_for_logs(lambda line: line["body"].startswith("handled"), count=2, timeout=60)
    # AND only the throttled init skipped the wait (no rehearsal, which the wait places in init)
    throttled = [line for line in lines if THROTTLED_LINE in line]
    rehearsed = [line for line in lines if REHEARSED_LINE in line]
    if policy == "as-invoke":
        assert len(throttled) == 1 and not rehearsed, lines
        share = float(throttled[0].split("init ran at ")[1].split(" %")[0])
        assert share < init_throttle.THROTTLED_BELOW * 100
    else:
        assert not throttled and len(rehearsed) == 1, lines
