"""What a function's process that ended before its companion listened leaves beside the socket
(`shared.unreported_drops`), and what the companion makes of it (`companion.ended_processes`):
the spans it held are delivered once, with the init span's ids only where the process was this
environment's; what cannot be read or delivered is counted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from lambdawrap.companion import ended_processes
from lambdawrap.shared import records, unreported_drops
from lambdawrap.shared.framing import encode

INIT_IDS = ["4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"]

# A function's process whose module makes calls as it loads, before the companion listens,
# and is then killed (an init that timed out, or ran out of memory): nothing of it runs after.
HOLDS_THEN_KILLED = """
import os, signal, sys
from lambdawrap.handler.channel import Channel
from lambdawrap.shared import records

channel = Channel(sys.argv[1])
for n in range(int(sys.argv[2])):
    channel.send(records.spans([{"trace_id": "%032x" % 7, "span_id": "%016x" % (n + 1), "name": "GET", "n": n + 1}], {init}))
os.kill(os.getpid(), signal.SIGKILL)
""".replace("{init}", repr(INIT_IDS))


@pytest.fixture
def socket_path():
    folder = tempfile.mkdtemp(prefix="lw")  # short: a socket's path is capped at 108 bytes
    yield os.path.join(folder, "s")
    shutil.rmtree(folder, ignore_errors=True)


def take(socket_path: str, environment_start: int | None, seen: ended_processes.SpansSeen | None = None, deliver=None) -> tuple:
    delivered, dropped = [], []
    ended_processes.take(socket_path, environment_start, deliver or delivered.append, lambda reason, count: dropped.append((reason, count)), seen or ended_processes.SpansSeen())
    return delivered, dropped


def killed_after_holding(socket_path: str, spans: int = 2) -> None:
    ended = subprocess.run([sys.executable, "-c", HOLDS_THEN_KILLED, socket_path, str(spans)], capture_output=True, text=True, timeout=60)
    assert ended.returncode == -9, ended.stderr


def left_in(socket_path: str) -> list:
    return sorted(os.listdir(os.path.dirname(socket_path)))


def span(n: int) -> dict:
    return {"trace_id": "%032x" % 7, "span_id": "%016x" % n, "name": "GET", "n": n}


def test_spans_a_killed_process_held_for_its_companion_are_delivered_once(socket_path):
    # GIVEN a process of this environment that held two spans for a companion not yet
    # listening, and was killed
    killed_after_holding(socket_path)
    # WHEN the companion, started before it, takes what it left
    delivered, dropped = take(socket_path, environment_start=0)
    # THEN both spans come, with the init span's ids, none counted as dropped (before: counted
    # as dropped beside the socket, not exported), and once only
    assert [record["spans"] for record in delivered] == [[span(1)], [span(2)]]
    assert [records.init_span_ids(record) for record in delivered] == [tuple(INIT_IDS)] * 2
    assert dropped == [] and take(socket_path, environment_start=0) == ([], []) and left_in(socket_path) == []


@pytest.mark.parametrize("companion_start", ["after the process", "unknown"])
def test_spans_a_process_not_known_to_be_this_environment_s_held_come_without_its_init_span_ids(socket_path, companion_start):
    # GIVEN what a process left, read by a companion started after it (a later environment's:
    # the earlier one's companion died before it took it), or one whose start is not known
    killed_after_holding(socket_path)
    (name,) = [name for name in left_in(socket_path) if ".held." in name]
    started = int(open(os.path.join(os.path.dirname(socket_path), name), "rb").read().partition(b"\n")[0])
    # WHEN it is taken
    delivered, dropped = take(socket_path, environment_start=started + 1 if companion_start == "after the process" else None)
    # THEN its spans still come, but do not make this environment's init their root
    assert [record["spans"][0]["n"] for record in delivered] == [1, 2] and dropped == []
    assert [records.init_span_ids(record) for record in delivered] == [None, None]


def test_spans_that_came_on_the_channel_too_are_delivered_once(socket_path):
    # GIVEN a process killed after it sent what it held and before it removed the file it kept
    # it in (the companion saw its first span on the channel)
    killed_after_holding(socket_path)
    seen = ended_processes.SpansSeen()
    seen.note([span(1)])
    # WHEN taken THEN only the span that did not come is delivered
    delivered, dropped = take(socket_path, environment_start=0, seen=seen)
    assert [record["spans"] for record in delivered] == [[span(2)]] and dropped == []


def test_spans_without_ids_hide_no_other():
    # GIVEN a span without ids that came on the channel (the sink counts it as malformed)
    seen = ended_processes.SpansSeen()
    seen.note([{"name": "no ids"}, span(1)])
    # THEN another without ids is not taken for it; one that came is
    assert seen.unseen([{"name": "also none"}, span(1), span(2)]) == [{"name": "also none"}, span(2)]


def test_drops_after_the_holding_is_full_rewrite_only_the_count(socket_path, monkeypatch):
    from lambdawrap.handler import channel as channel_module
    from lambdawrap.handler.channel import Channel

    # GIVEN a process holding as many spans as it holds, before the companion listens
    monkeypatch.setattr(channel_module, "MAX_EARLY_FRAMES", 2)
    channel = Channel(socket_path)
    assert [channel.send(records.spans([span(n)])) for n in (1, 2)] == [True, True]
    held = os.stat(unreported_drops.held_path_for(socket_path, os.getpid()))
    # WHEN more are made, dropped
    for n in range(3, 50):
        assert channel.send(records.spans([span(n)])) is False
    # THEN the file of the spans held is not written again for each (before: its 64 KiB were
    # rewritten with every drop), and the count says the drops
    again = os.stat(unreported_drops.held_path_for(socket_path, os.getpid()))
    assert (again.st_ino, again.st_mtime_ns) == (held.st_ino, held.st_mtime_ns)
    assert open(unreported_drops.path_for(socket_path, os.getpid())).read() == "47"


def test_a_running_process_s_files_are_its_own_and_one_that_sent_what_it_held_counts_nothing(socket_path):
    # GIVEN the files of a process still running (this one): its own to report and send
    frames = encode(records.spans([span(1)]))
    assert unreported_drops.keep_held(socket_path, os.getpid(), frames, unreported_drops.process_start())
    assert unreported_drops.keep(socket_path, os.getpid(), 7)
    # WHEN taken THEN nothing of them is
    assert take(socket_path, environment_start=None) == ([], []) and len(left_in(socket_path)) == 2
    # ... and a held file removed as it was about to be read (the process sent its spans and
    # ended) is counted as nothing
    pid = ended_pids(1)[0]
    path = unreported_drops.held_path_for(socket_path, pid)
    assert unreported_drops._take(pid, [(unreported_drops.HELD_SUFFIX, False, path)]).count == 0


def test_what_cannot_be_read_or_delivered_is_counted(socket_path):
    # GIVEN files of ended processes: frames that stop short beside a count of 2, a count that
    # is not one, a count with a line's end, a FIFO named as a held file, frames of a record no
    # channel sends, and a held file a process was killed writing
    pids = ended_pids(6)
    frames = encode(records.spans([span(1)]))
    paths = [unreported_drops.held_path_for(socket_path, pid) for pid in pids]
    open(paths[0], "wb").write(b"-\n" + frames[:-3])
    open(unreported_drops.path_for(socket_path, pids[0]), "w").write("2")
    open(unreported_drops.path_for(socket_path, pids[1]), "w").write("several")
    open(unreported_drops.path_for(socket_path, pids[2]), "w").write("12\n")
    os.mkfifo(paths[3])
    open(paths[4], "wb").write(b"-\n" + encode({"version": records.VERSION, "type": "invocation"}) + frames)
    open(paths[5] + unreported_drops.WRITING, "wb").write(b"-\n")
    # WHEN taken (at once: the FIFO does not hold it)
    started = time.monotonic()
    delivered, dropped = take(socket_path, environment_start=None)
    # THEN the one span that reads is delivered, and each of the others counted
    assert time.monotonic() - started < 5 and delivered == [records.spans([span(1)])]
    assert sum(count for reason, count in dropped if reason == "handler_channel") == 2 + 1 + 1 + 12 + 1 + 1 + 1
    assert left_in(socket_path) == []


def test_a_delivery_that_fails_loses_neither_the_counts_nor_the_other_spans(socket_path):
    # GIVEN two processes that held spans, one of which also counted drops
    pids = ended_pids(2)
    for pid, n in zip(pids, (1, 2)):
        assert unreported_drops.keep_held(socket_path, pid, encode(records.spans([span(n)])), None)
    assert unreported_drops.keep(socket_path, pids[0], 5)
    delivered = []

    def deliver(record: dict) -> None:
        if record["spans"][0]["n"] == 1:
            raise RuntimeError("a correlator's bug")
        delivered.append(record)

    # WHEN the first cannot be delivered THEN the other is, and the drops and the lost span count
    _, dropped = take(socket_path, environment_start=None, deliver=deliver)
    assert [record["spans"][0]["n"] for record in delivered] == [2]
    assert sum(count for _, count in dropped) == 5 + 1


def ended_pids(count: int) -> list:
    code = "import os\nfor _ in range(%d):\n    pid = os.fork()\n    if pid == 0: os._exit(0)\n    os.waitpid(pid, 0); print(pid)" % count
    return [int(pid) for pid in subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()]


def test_a_second_attach_of_the_router_returns_once_the_first_has_replayed_what_it_held():
    import threading

    from lambdawrap.companion.record_router import RecordRouter

    # GIVEN records the router held before the companion's startup thread attached it, which
    # that thread is replaying, slowly
    router = RecordRouter(lambda reason, count: None)
    router(records.spans([span(1)]))
    router(records.spans([span(2)]))
    replaying, go_on, delivered = threading.Event(), threading.Event(), []

    def slow(record: dict) -> None:
        replaying.set()
        go_on.wait(10)
        delivered.append(record["spans"][0]["n"])

    startup = threading.Thread(target=router.attach, args=(slow,))
    startup.start()
    assert replaying.wait(10)
    # WHEN SHUTDOWN attaches it too
    shutdown = threading.Thread(target=router.attach, args=(lambda record: delivered.append("shutdown"),))
    shutdown.start()
    shutdown.join(0.3)
    # THEN it returns only once they are all delivered, before it makes anything of them
    # (before: at once, and the init span was made before the spans naming it came)
    assert shutdown.is_alive()
    go_on.set()
    startup.join(10)
    shutdown.join(10)
    assert delivered == [1, 2]


# A function's process whose module made a call as it loads and was killed while it waited on it
# (an init that timed out): the call is in its in-flight slot, under the init's mark.
MARKS_THEN_KILLED = """
import os, signal, sys, time
from lambdawrap.shared import inflight, records

slot = inflight.InflightSlot(sys.argv[1])
from lambdawrap.shared.unreported_drops import process_start
assert slot.hold(records.init_mark({init}, time.time_ns(), process_start()), time.time_ns())
assert slot.call_started(1, b'{"name":"GET","trace_id":"%s","span_id":"%016x","attributes":{}}' % ({init}[0].encode(), 5)) is not None
os.kill(os.getpid(), signal.SIGKILL)
""".replace("{init}", repr(INIT_IDS))


def marked_then_killed(socket_path: str) -> None:
    ended = subprocess.run([sys.executable, "-c", MARKS_THEN_KILLED, socket_path], capture_output=True, text=True, timeout=60)
    assert ended.returncode == -9, ended.stderr


def test_the_calls_a_killed_init_had_under_way_are_read_from_its_slot_once(socket_path):
    from lambdawrap.shared import inflight

    # GIVEN the slot of a process killed while its module waited on a call
    marked_then_killed(socket_path)
    # WHEN the companion reads the init's calls THEN it has the mark and the call, once
    ((mark, calls, unkept),) = inflight.init_calls(socket_path)
    assert (records.init_span_ids(mark), [call["name"] for call in calls], unkept) == (tuple(INIT_IDS), ["GET"], 0)
    assert inflight.init_calls(socket_path) == [] and left_in(socket_path) == []


def test_a_call_under_way_in_an_environment_spun_down_unused_is_counted(socket_path):
    from lambdawrap.companion.correlator import Correlator
    from lambdawrap.companion.deferred import DeferredSink

    # GIVEN an environment whose init succeeded while a call of its module's was still under
    # way, then spun down before any invocation (a proactive init), its process gone
    marked_then_killed(socket_path)
    sink = DeferredSink()
    correlator = Correlator(sink, lambda reason, detail: None, socket_path)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    correlator.on_telemetry([
        {"time": stamp, "type": "platform.initStart", "record": {"initializationType": "on-demand", "phase": "init"}},
        {"time": stamp, "type": "platform.initRuntimeDone", "record": {"status": "success"}},
        {"time": stamp, "type": "platform.initReport", "record": {"status": "success", "metrics": {"durationMs": 120.0}}},
    ])
    # WHEN it ends
    correlator.finish_unreported("spindown")
    # THEN the call is counted as ended with its process, not made a failed span of a healthy
    # init, and its slot is gone
    calls = sink.take_calls()
    assert [(name, args) for name, args, _ in calls if name == "dropped"] == [("dropped", ("process_ended", 1))]
    assert [name for name, _, _ in calls if name == "user_spans"] == [] and left_in(socket_path) == []


def failed_init_correlator(socket_path: str, environment_start: int | None):
    from lambdawrap.companion.correlator import Correlator
    from lambdawrap.companion.deferred import DeferredSink

    sink = DeferredSink()
    correlator = Correlator(sink, lambda reason, detail: None, socket_path)
    correlator.environment_start = environment_start
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    correlator.on_telemetry([
        {"time": stamp, "type": "platform.initStart", "record": {"initializationType": "on-demand", "phase": "init"}},
        {"time": stamp, "type": "platform.initReport", "record": {"status": "timeout", "metrics": {"durationMs": 2000.0}}},
    ])
    correlator.finish_unreported("failure")
    return sink.take_calls()


@pytest.mark.parametrize("whose", ["this environment's", "an earlier environment's"])
def test_the_calls_of_a_timed_out_init_are_its_children_only_in_its_own_environment(socket_path, whose):
    from lambdawrap.shared import inflight

    # GIVEN the slot of a process killed while its module waited on a call, of this
    # environment, or of an earlier one whose companion died before it took it
    marked_then_killed(socket_path)
    ((mark, _, _),) = [(start, None, None) for _, _, start in inflight._slots(socket_path)]
    started = mark["process_start"]
    # WHEN this environment's init times out
    calls = failed_init_correlator(socket_path, started if whose == "this environment's" else started + 1)
    spans = [span for name, args, _ in calls if name == "user_spans" for span in args[0]]
    (init,) = [args[0] for name, args, _ in calls if name == "init_span"]
    if whose == "this environment's":
        # THEN its call ends where the init did, failed, and the init span has the ids its mark
        # names (those its calls name as their trace and parent)
        assert [(s["name"], s["trace_id"], s["status"][0], s["attributes"]["error.type"]) for s in spans] == [("GET", INIT_IDS[0], 2, "Sandbox.Timedout")]
        assert init.own_trace == tuple(INIT_IDS) and spans[0]["end_ns"] == init.start_ns + 2_000_000_000
    else:
        # THEN it is counted, not made a child of this environment's init
        assert spans == [] and init.own_trace is None
        assert [args for name, args, _ in calls if name == "dropped"] == [("process_ended", 1)]


def test_an_init_mark_does_not_replace_the_first_invocation_s_start(socket_path):
    from lambdawrap.shared import inflight

    # GIVEN the first invocation's start, held as a thread of the module was about to mark the
    # slot for the init (the module had loaded by then)
    slot = inflight.InflightSlot(socket_path)
    start = b'{"request_id":"first","span_id":"%016x","start_ns":1}' % 3
    assert slot.hold(start, time.time_ns())
    # WHEN the thread marks it, the init over THEN the start stays
    assert not slot.hold_if(records.init_mark(INIT_IDS, time.time_ns(), None), time.time_ns(), lambda: False)
    assert [start_record["request_id"] for _, _, start_record in inflight._slots(socket_path)] == ["first"]
