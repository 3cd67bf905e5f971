"""The companion's flush decision, per LAMBDAWRAP_FLUSH strategy."""

from lambdawrap.companion.flush_policy import FlushPolicy
from lambdawrap.shared.settings import FlushStrategy


def drive(policy: FlushPolicy, times: list) -> list:
    decisions = []
    for now in times:
        policy.on_invoke(now)
        flush = policy.should_flush(now)
        if flush:
            policy.flushed(now)
        decisions.append(flush)
    return decisions


def test_end_flushes_every_invocation():
    assert drive(FlushPolicy(FlushStrategy("end")), [0, 0.1, 0.2]) == [True] * 3


def test_periodic_flushes_once_per_interval():
    decisions = drive(FlushPolicy(FlushStrategy("periodic", 1000)), [10.0, 10.3, 10.9, 11.0, 11.5, 12.1])
    assert decisions == [True, False, False, True, False, True]


def test_adaptive_is_end_while_rare_and_periodic_when_busy():
    policy = FlushPolicy(FlushStrategy("adaptive"))
    rare = drive(policy, [0, 30, 60, 90, 120])
    assert rare == [True] * 5
    busy = drive(policy, [120.1, 120.2, 120.3, 120.4, 120.5, 121.0, 121.2, 121.7])
    # While the last 8 gaps are still mostly long, each invocation flushes; once the median
    # gap drops under a second (at 120.5) it exports at most once a second.
    assert busy == [True, True, True, True, False, False, False, True]
    assert policy.busy()


def test_only_adaptive_while_rare_exports_each_invocation_at_its_end():
    policy = FlushPolicy(FlushStrategy("adaptive"))
    assert policy.exports_at_each_end()  # a fresh environment's first invocations
    drive(policy, [0, 0.1, 0.2, 0.3, 0.4])
    assert not policy.exports_at_each_end()  # busy: once a second
    assert not FlushPolicy(FlushStrategy("end")).exports_at_each_end()  # waits for the platform anyway
    assert not FlushPolicy(FlushStrategy("periodic", 1000)).exports_at_each_end()


def test_adaptive_reads_the_wall_clock_whose_time_goes_on_while_the_environment_is_frozen(monkeypatch):
    import time

    # GIVEN a function invoked every five minutes, its environment frozen in between: the
    # monotonic clock stands still while frozen (the platform spec, section 10), the wall
    # clock goes on
    policy = FlushPolicy(FlushStrategy("adaptive"))
    monotonic, wall = [100.0], [1_700_000_000.0]
    monkeypatch.setattr(time, "monotonic", lambda: monotonic[0])
    monkeypatch.setattr(time, "time", lambda: wall[0])
    decisions = []
    for _ in range(8):
        policy.on_invoke()
        flush = policy.should_flush()
        if flush:
            policy.flushed()
        decisions.append(flush)
        monotonic[0] += 0.08  # the invocation ran 80 ms
        wall[0] += 300.0
    # THEN every invocation is exported at its end (before: by the monotonic clock it looked
    # busy from the fifth on, and was exported about once in 13 invocations)
    assert decisions == [True] * 8 and not policy.busy()


def test_periodic_flushing_goes_on_after_the_wall_clock_is_set_back():
    # GIVEN periodic flushing each 60 s, and a wall clock set back 10 minutes after a flush
    policy = FlushPolicy(FlushStrategy("periodic", 60_000))
    assert drive(policy, [10_000.0]) == [True]
    # THEN the next invocation a minute later flushes (before: none until the clock caught up)
    assert drive(policy, [9_400.0 + 61, 9_400.0 + 62]) == [True, False]
