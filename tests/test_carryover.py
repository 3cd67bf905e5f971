"""What an environment could not export, kept in /tmp for the next environment of the sandbox
(companion/carryover.py): invocations, init spans, user spans and log lines come back as the
same spans and log records they would have been; what does not fit is counted; a file that is
not ours changes nothing."""

from __future__ import annotations

import collections
import json
import os
import time

import pytest
from opentelemetry.sdk.metrics import MeterProvider

from lambdawrap.companion import carryover
from lambdawrap.companion.correlator import Correlator
from lambdawrap.companion.deferred import DeferredSink
from lambdawrap.companion.resource import build_resource
from lambdawrap.companion.signals import Signals
from lambdawrap.shared import records
from lambdawrap.shared.settings import Settings

RID = "6bd3e0a8-1c9d-4c8e-9a44-0d9d2a1f7c21"
ENV = {"AWS_LAMBDA_FUNCTION_NAME": "orders", "AWS_REGION": "eu-west-1", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST"}


def finished_calls(timed_out: bool = False) -> list:
    """The sink calls a correlator makes for an init and one invocation (with a user span and
    log lines), before any pipeline exists: what a companion still holds at SHUTDOWN."""
    sink = DeferredSink()
    correlator = Correlator(sink, lambda reason, detail: None)
    now = time.time_ns()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    correlator.on_telemetry([
        {"time": stamp, "type": "platform.initStart", "record": {"initializationType": "on-demand", "phase": "init"}},
        {"time": stamp, "type": "function", "record": "loading the orders table"},
        {"time": stamp, "type": "platform.initRuntimeDone", "record": {"status": "success"}},
        {"time": stamp, "type": "platform.initReport", "record": {"metrics": {"durationMs": 123.4}}},
    ])
    correlator.on_invoke({"eventType": "INVOKE", "requestId": RID, "invokedFunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:orders", "deadlineMs": int(time.time() * 1000) + 3000})
    correlator.on_telemetry([
        {"time": stamp, "type": "platform.start", "record": {"requestId": RID}},
        {"time": stamp, "type": "function", "record": "[INFO]\tlooking up order 42"},
    ])
    start = json.loads(records.encode_invocation_start(request_id=RID, function_arn="arn:aws:lambda:eu-west-1:123456789012:function:orders", trace_id=0x5B8AA5A2D2C872E8321CF37308D69DF2, span_id=0x051581BF3CB55C13, parent_span_id=0, sampled=True, start_ns=now - 5_000_000, cold_start=True, proactive_init=False, trigger="http", attributes={"http.request.method": "GET", "http.route": "/orders/{id}"}, links=[], span_name="GET /orders/{id}", span_kind=2))
    user_span = {"name": "orders.lookup", "trace_id": "5b8aa5a2d2c872e8321cf37308d69df2", "span_id": "1111111111111111", "parent_span_id": "051581bf3cb55c13", "start_ns": now - 4_000_000, "end_ns": now - 2_000_000, "kind": 1, "attributes": {"order.id": "42"}, "status": [0, ""], "events": [], "scope": "orders"}
    if not timed_out:
        end = records.invocation_end(now, http_status=200)
        end["spans"] = [user_span]
        correlator.on_record({"version": records.VERSION, "type": records.INVOCATION, "start": start, "end": end})
    outcome = {"requestId": RID, "status": "timeout" if timed_out else "success"}
    correlator.on_telemetry([{"time": stamp, "type": "platform.runtimeDone", "record": outcome}])
    if timed_out:
        correlator.finish_unreported("timeout")
    return sink.take_calls()


def failed_init_calls(lines: list, records_before: list = (), stamp: str = "") -> list:
    """The sink calls a correlator makes for an init that failed after printing `lines` (and
    the function's process sent `records_before`), before any pipeline exists: what a
    companion holds at the SHUTDOWN that ends its environment. `stamp`: the platform's time
    of its events (now, to the second, by default)."""
    sink = DeferredSink()
    correlator = Correlator(sink, lambda reason, detail: None)
    for record in records_before:
        correlator.on_record(record)
    stamp = stamp or time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    correlator.on_telemetry(
        [{"time": stamp, "type": "platform.initStart", "record": {"initializationType": "on-demand", "phase": "init"}}]
        + [{"time": stamp, "type": "function", "record": line} for line in lines]
        + [
            {"time": stamp, "type": "platform.initRuntimeDone", "record": {"status": "error", "errorType": "Runtime.ImportModuleError"}},
            {"time": stamp, "type": "platform.initReport", "record": {"status": "error", "errorType": "Runtime.ImportModuleError", "metrics": {"durationMs": 812.0}}},
        ]
    )
    correlator.finish_unreported("failure")
    return sink.take_calls()


def exported(calls: list) -> tuple:
    """Replay calls into a real Signals: (spans, log entries) as they would be exported."""
    settings = Settings.from_env(ENV)
    resource = build_resource(settings, None)
    signals = Signals(settings, resource, MeterProvider(resource=resource))
    for name, args, kwargs in calls:
        getattr(signals, name)(*args, **kwargs)
    # An init span's own id is made when it is built (each build makes a new one), and the
    # init's log lines carry it; log entries' ids come back as JSON lists.
    taken = signals.spans.take(100)
    spans = [(s.name, s.context.trace_id, s.context.span_id if "lambdawrap.init.phase" not in s.attributes else "init", s.parent.span_id if s.parent else None, s.start_time, s.end_time, s.status.status_code, dict(s.attributes)) for s in taken]
    init_ids = {(f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}") for s in taken if "lambdawrap.init.phase" in s.attributes}
    return spans, [(line, time_ns, "init" if ids and tuple(ids) in init_ids else tuple(ids) if ids else ids, rid) for line, time_ns, ids, rid in signals.logs.take(100)]


@pytest.fixture
def socket_path(tmp_path):
    return str(tmp_path / "lw.sock")


@pytest.mark.parametrize("timed_out", [False, True], ids=["finished", "timed out"])
def test_what_comes_back_is_what_would_have_been_exported(socket_path, timed_out):
    calls = finished_calls(timed_out)
    assert {name for name, _, _ in calls} >= {"invocation", "init_span"}
    carryover.save(socket_path, [{"name": "lambdawrap.dropped", "attributes": {"reason": "buffer_full"}, "value": 3}], calls)
    assert os.stat(socket_path + carryover.SUFFIX).st_mode & 0o777 == 0o600
    carried = carryover.take(socket_path)
    assert not os.path.exists(socket_path + carryover.SUFFIX)  # taken once
    assert carried.counts == [{"name": "lambdawrap.dropped", "attributes": {"reason": "buffer_full"}, "value": 3}]
    assert carried.request_ids == {RID} and carried.failed_inits == 0
    direct, replayed = exported(calls), exported(carried.calls)
    assert replayed == direct
    spans, logs = replayed
    names = sorted(span[0] for span in spans)
    # A timed-out invocation's span is named from its in-flight start (none here): the function's name.
    assert names == (["orders", "orders init"] if timed_out else ["GET /orders/{id}", "orders init", "orders.lookup"])
    assert [(line, ids) for line, _, ids, _ in logs][:1] == [("loading the orders table", "init")]  # on the init span
    assert [line for line, *_ in logs] == ["loading the orders table", "[INFO]\tlooking up order 42"]


def test_files_add_up_across_environments(socket_path):
    carryover.save(socket_path, [], finished_calls())
    carryover.save(socket_path, [{"name": "faas.invocations", "attributes": {}, "value": 1}], [])
    carried = carryover.take(socket_path)
    assert carried.request_ids == {RID} and len(carried.counts) == 1


def test_what_does_not_fit_is_counted_log_lines_first(socket_path, monkeypatch):
    monkeypatch.setattr(carryover, "MAX_BYTES", 12_000)
    calls = finished_calls()
    calls += [("log_line", ("x" * 100, time.time_ns(), None, None), {}) for _ in range(200)]
    carryover.save(socket_path, [], calls)
    carried = carryover.take(socket_path)
    assert carried.request_ids == {RID}  # the invocation is kept
    assert not [c for c in carried.calls if c[0] == "log_line"]
    dropped = {c["attributes"]["reason"]: c["value"] for c in carried.counts if c["name"] == "lambdawrap.dropped"}
    assert dropped == {"log_shutdown_deadline": 201}  # the 200 lines and the one of the invocation


def test_counts_are_carried_even_where_no_call_fits(socket_path, monkeypatch):
    # GIVEN a file limit of 12 KB, counts already held, and an environment that ends holding an
    # invocation and 500 platform reports (a long flood of them while the collector was down),
    # more than the limit with everything else shed
    monkeypatch.setattr(carryover, "MAX_BYTES", 12_000)
    report = {"type": "platform.report", "record": {"requestId": RID, "status": "success", "metrics": {"durationMs": 12.3, "billedDurationMs": 13, "memorySizeMB": 128, "maxMemoryUsedMB": 60}}}
    held = [{"name": "lambdawrap.dropped", "attributes": {"reason": "log_buffer_full"}, "value": 1}] * 400
    calls = finished_calls() + [("report", (report, "http"), {}) for _ in range(500)] + [("dropped", ("buffer_full", 2), {})]
    # WHEN it is saved
    carryover.save(socket_path, held, calls)
    carried = carryover.take(socket_path)
    # THEN the counts come back, one per counter (before: no file was written, and every
    # count with it was lost uncounted), with what was shed counted
    dropped = {c["attributes"]["reason"]: c["value"] for c in carried.counts if c["name"] == "lambdawrap.dropped"}
    # The invocation, the function's span its record carried, and the init span; the
    # invocation's log line and the one the init span held.
    assert dropped == {"log_buffer_full": 400, "log_shutdown_deadline": 2, "shutdown_deadline": 3}, carried.counts
    assert [c for c in carried.calls if c[0] == "dropped"] == [("dropped", ["buffer_full", 2], {})]


def test_an_invocation_shed_counts_what_its_record_carried(socket_path, monkeypatch):
    # GIVEN a file limit of 12 KB, and an environment that ends holding an invocation whose
    # record carries three of the function's spans, 4 spans dropped past the limits, 2 outgoing
    # calls whose context could not travel, and two log lines still held on it, besides 500
    # platform reports, so that the invocation is shed
    monkeypatch.setattr(carryover, "MAX_BYTES", 12_000)
    calls = finished_calls()
    (inv,) = [args[0] for name, args, _ in calls if name == "invocation"]
    inv.end["spans"] = inv.end["spans"] * 3
    inv.end.update(spans_dropped=4, context_not_injected=2)
    inv.logs = [("held one", 1), ("held two", 2)]
    report = {"type": "platform.report", "record": {"requestId": RID, "status": "success", "metrics": {"durationMs": 12.3}}}
    calls += [("report", (report, "http"), {}) for _ in range(500)]
    # WHEN it is saved
    carryover.save(socket_path, [], calls)
    carried = carryover.take(socket_path)
    # THEN the invocation is shed with everything it carried counted: its span and the function's
    # three (before: one, the function's spans lost uncounted), its held lines, and the counts
    # the record carried (before: lost)
    assert carried.request_ids == set() and [name for name, _, _ in carried.calls] == ["init_span"]
    dropped = collections.Counter()
    for count in carried.counts:
        dropped[count["attributes"]["reason"]] += count["value"]
    # (log lines: the invocation's two held and one handed over after it; the init's one held,
    # taken off the init span, which is kept)
    assert dropped == {"log_shutdown_deadline": 1 + 2 + 1, "shutdown_deadline": 1 + 3, "span_limit": 4, "context_not_injected": 2}, carried.counts


@pytest.mark.parametrize("logs_exported", [True, False], ids=["logs exported", "OTEL_LOGS_EXPORTER=none"])
def test_an_init_whose_held_lines_do_not_fit_is_kept_without_them(socket_path, monkeypatch, logs_exported):
    # GIVEN a file limit of 12 KB, and an environment that ends holding only a failed init
    # whose span holds 300 of its log lines, more than the file holds
    from lambdawrap.companion.correlator import InitFacts

    monkeypatch.setattr(carryover, "MAX_BYTES", 12_000)
    init = InitFacts(start_ns=time.time_ns())
    init.status = "error"
    init.error_type = "Runtime.ImportModuleError"
    init.logs = [(f"line {n} " + "x" * 60, time.time_ns()) for n in range(300)]
    # WHEN it is saved
    carryover.save(socket_path, [], [("init_span", (init, None), {})], logs_exported=logs_exported)
    carried = carryover.take(socket_path)
    # THEN the failed init comes back without its lines (before: it was shed whole, and the
    # next environment exported no span of it), the lines counted only where logs are exported
    # (nobody asked for them otherwise)
    ((name, (kept, parent), _),) = carried.calls
    assert (name, kept.status, kept.error_type, kept.logs, parent) == ("init_span", "error", "Runtime.ImportModuleError", [], None)
    dropped = {c["attributes"]["reason"]: c["value"] for c in carried.counts if c["name"] == "lambdawrap.dropped"}
    assert dropped == ({"log_shutdown_deadline": 300} if logs_exported else {})


def test_failed_inits_whose_held_lines_do_not_fit_are_exported_without_them(socket_path):
    # GIVEN a function whose init fails in environment after environment, each before its
    # companion loaded its pipeline, after printing 1,000 lines of 1,000 characters not in
    # ASCII, held for its init span: 6 MB in JSON each, past the file's 4 MB
    lines = [f"{n:04} " + "é" * 995 for n in range(1000)]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())  # one for all: spans compared
    for _ in range(3):
        # WHEN each environment's companion saves what it holds
        calls = failed_init_calls(lines, stamp=stamp)
        ((name, (init, parent), _),) = calls
        assert (name, init.status, len(init.logs), parent) == ("init_span", "error", 1000, None)
        carryover.save(socket_path, [], calls)
    carried = carryover.take(socket_path)
    # THEN the next environment exports the three failed init spans, as they would have been
    # without their lines (before: each was shed whole, counted as shutdown_deadline, and no
    # span of a failed init reached the collector), each line counted
    assert carried.failed_inits == 3
    init.logs = []
    spans, _ = exported(carried.calls)
    # (each a trace of its own, whose id is made as its span is)
    assert [span[2:] for span in spans] == [span[2:] for span in exported(calls)[0]] * 3 and {span[0] for span in spans} == {"orders init"}
    dropped = collections.Counter()
    for count in carried.counts:
        dropped[count["attributes"]["reason"]] += count["value"]
    assert dropped == {"log_shutdown_deadline": 3 * 1000}, carried.counts


def test_a_failed_init_carried_over_stays_the_root_of_the_calls_its_module_made(socket_path):
    # GIVEN an init that failed after its module made a call, whose span the function's process
    # sent with the init span's ids it chose (handler/init_trace.py), in an environment that
    # ended before its pipeline was loaded
    now = time.time_ns()
    call = records.span("urllib", "GET", 0x7A11, 0xCA11, 0x1417, 3, now - 3_000_000, now - 1_000_000, {"url.full": "http://config/"}, [], [], (2, ""))
    calls = failed_init_calls(["loading"], [records.spans([call], [f"{0x7A11:032x}", f"{0x1417:016x}"])])
    # WHEN it is carried to the next environment
    carryover.save(socket_path, [], calls)
    carried = carryover.take(socket_path)
    # THEN the init span it exports is the call's parent, in the call's trace (before: a trace
    # of its own, with an id of its own)
    settings = Settings.from_env(ENV)
    resource = build_resource(settings, None)
    signals = Signals(settings, resource, MeterProvider(resource=resource))
    for name, args, kwargs in carried.calls:
        getattr(signals, name)(*args, **kwargs)
    spans = {s.name: s for s in signals.spans.take(100)}
    init = spans["orders init"]
    assert (init.context.trace_id, init.context.span_id, init.parent) == (0x7A11, 0x1417, None)
    assert (spans["GET"].context.trace_id, spans["GET"].parent.span_id) == (0x7A11, 0x1417)
    # ... and the init's line carries its ids
    assert [(line, tuple(ids)) for line, _, ids, _ in signals.logs.take(10)] == [("loading", (f"{0x7A11:032x}", f"{0x1417:016x}"))]


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b"[1, 2]", b'{"calls": "no"}', b'{"calls": [["attach", [], {}], ["take_calls", [], {}]]}', b'{"calls": [["invocation", [{"__lambdawrap__": "invocation", "data": {}}], {}]]}', b"{" * 100_000],
)
def test_a_file_that_is_not_ours_changes_nothing(socket_path, content):
    with open(socket_path + carryover.SUFFIX, "wb") as f:
        f.write(content)
    carried = carryover.take(socket_path)
    assert carried.calls == [] and carried.counts == []


SLEEPER = """
import time

def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"ok": True}
"""


def test_a_first_invocation_that_times_out_at_128_mb_is_exported_once(tmp_path):
    from conftest import wait_for, write_function
    from support.stack import instrumented, metric_total

    task = write_function(tmp_path / "task", SLEEPER)
    # GIVEN a 128 MB environment under Lambda's CPU share (7 % of a core, init too): its
    # companion is still importing the SDK when the first invocation times out, and SHUTDOWN
    # leaves it 2 s (it may or may not make it: either way, nothing may be lost or doubled).
    # (The timeout leaves room for the next environment's init, which runs inside its invoke.)
    # (8 s: on a busy 2-core machine that init once took 7 s, more than a 4 s timeout.)
    with instrumented(task, memory_mb=128, cpu_limit=True, init_cpu="as-invoke", timeout_s=8.0) as (emu, rx):
        timed_out = emu.invoke({"sleep": 10})
        assert b"Sandbox.Timedout" in timed_out.body
        # WHEN the next invocation comes to the sandbox's next environment (whose init runs
        # inside it, at 7 % of a core: on a busy machine it has timed out too, as in the CI's
        # run on f18666f, and what its environment held went on to the next one; invoked again
        # then, up to three times, until one ends well)
        results = [timed_out, emu.invoke({})]
        while results[-1].function_error is not None and len(results) < 4:
            assert results[-1].status == 200 and b"Sandbox.Timedout" in results[-1].body, results[-1]
            results.append(emu.invoke({}))
        assert results[-1].status == 200 and results[-1].function_error is None, results
        # THEN every invocation is exported, once, with what its caller got: as its span, or,
        # one that timed out in its environment's init (run inside it), as that init's failed
        # span (docs/reliability.md: a failed init's span stands for the invocation it failed)
        ends = {results[0].request_id, results[-1].request_id}
        rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") in ends, count=2, timeout=120)
        rids = {result.request_id for result in results}
        spans = rx.spans()
        invocations = [s for s in spans if s["attributes"].get("faas.invocation_id") in rids]
        by_rid = {s["attributes"]["faas.invocation_id"]: s for s in invocations}
        assert len(invocations) == len(by_rid)
        for result in results:
            if result.request_id in by_rid:
                assert by_rid[result.request_id]["attributes"].get("error.type") == (None if result.function_error is None else "Sandbox.Timedout")
        failed_inits = [s for s in spans if s["attributes"].get("lambdawrap.init.phase") == "invoke" and s["attributes"].get("error.type") == "Sandbox.Timedout"]
        assert len(failed_inits) == len(rids - set(by_rid)), (failed_inits, rids - set(by_rid))
        counted = lambda: metric_total(rx, "faas.invocations")  # noqa: E731 - a delta counter, summed over environments
        wait_for(lambda: counted() >= len(results), timeout=120, what=lambda: f"{len(results)} faas.invocations, {counted()} so far")
        assert counted() == len(results)
        carried = [line for line in emu.log_lines() if "what it held goes to the next environment" in line]
        assert len(carried) < len(results)
    assert not [p for p in rx.metrics() if p["name"] == "lambdawrap.dropped" and p["value"]]


def test_invocations_after_a_reset_at_128_mb_end_within_their_timeout(tmp_path):
    from conftest import write_function
    from support.stack import instrumented, metric_total

    task = write_function(tmp_path / "task", SLEEPER)
    # GIVEN a 128 MB function with a 1 s timeout under Lambda's CPU share and freezing, whose
    # second invocation times out: the sandbox's next environment starts inside the third, and
    # its companion imports the SDK at 7 % of a core, for seconds, behind the function
    with instrumented(task, memory_mb=128, cpu_limit=True, freeze=True, timeout_s=1.0) as (emu, rx):
        results = [emu.invoke({}), emu.invoke({"sleep": 5})]
        # WHEN it is invoked six more times, each handler done in a millisecond
        results += [emu.invoke({}) for _ in range(6)]
        emu.wait_idle(30)
        reports = [r["record"] for r in emu.records() if r["type"] == "platform.report"]
        # THEN each caller got what it gets without the layer, and the platform ended each of
        # those invocations as the caller saw it: the companion's wait for its export pipeline
        # ends its invoke phase before the function's deadline, by a margin made for a share of
        # a core (before: 50 ms, overrun by a late wake-up, so that a success was billed 1 s as
        # a timeout and the environment reset again, in a chain)
        assert [r.function_error for r in results] == [None, "Unhandled"] + [None] * 6, results
        by_rid = {r["requestId"]: r for r in reports}
        assert [by_rid[r.request_id]["status"] for r in results] == ["success", "timeout"] + ["success"] * 6, reports
        assert [r["record"].get("phase") for r in emu.records() if r["type"] == "platform.initReport"] == ["init", "invoke"]
    # ... and every invocation is exported, with its outcome, by SHUTDOWN at the latest (the
    # environment is frozen between invocations: its SDK import goes on while they run)
    rids = [r.request_id for r in results]
    spans = [s for s in rx.spans() if s["attributes"].get("faas.invocation_id") in rids]
    assert sorted(s["attributes"].get("error.type", "") for s in spans) == [""] * 7 + ["Sandbox.Timedout"], spans
    assert metric_total(rx, "faas.invocations") == 8 and metric_total(rx, "faas.timeouts") == 1


KILLED_WHILE_SAVING = """
import sys
from lambdawrap.companion import carryover
lines = [("log_line", ["x" * 2000], {}) for _ in range(1800)]  # about 4 MB to encode and write
print("saving", flush=True)
carryover.save(sys.argv[1], [{"name": "faas.invocations", "attributes": {}, "value": 1}], lines)
print("saved", flush=True)
"""


def test_a_companion_killed_while_it_saves_leaves_what_earlier_environments_left(socket_path):
    import random
    import signal
    import subprocess
    import sys

    # GIVEN what an earlier environment left
    earlier = {"name": "lambdawrap.dropped", "attributes": {"reason": "handler_channel"}, "value": 3}
    for attempt in range(12):
        carryover.save(socket_path, [earlier], [])
        # WHEN the next environment's companion is killed at some moment of its own save (as
        # the platform's SIGKILL at SHUTDOWN's deadline may come)
        saver = subprocess.Popen([sys.executable, "-c", KILLED_WHILE_SAVING, socket_path], stdout=subprocess.PIPE, text=True)
        assert saver.stdout.readline() == "saving\n"
        time.sleep(random.uniform(0, 0.04))
        saver.send_signal(signal.SIGKILL)
        saver.wait(30)
        # THEN the file holds the earlier environment's counts, with or without its own (before:
        # the earlier file was removed as the save began, and a kill meanwhile left none, or half
        # of one, which was then ignored)
        held = carryover.take(socket_path)
        assert earlier in held.counts, (attempt, held.counts)
        # ... and a half-written file a kill left is not left in /tmp once read
        assert not [name for name in os.listdir(os.path.dirname(socket_path)) if name.endswith(".writing")]


KILLED_WRITING_THE_LINES = """
import os, sys
from lambdawrap.companion import carryover
write = carryover._write
written = []

def killed_at_the_second(path, data):
    # The platform's SIGKILL at SHUTDOWN's deadline, as the lines are being written
    if written:
        os._exit(9)
    written.append(path)
    write(path, data)

carryover._write = killed_at_the_second
lines = [("log_line", ["x" * 100], {}) for _ in range(int(sys.argv[2]))]
carryover.save(sys.argv[1], [{"name": "faas.invocations", "attributes": {}, "value": 1}], [("dropped", ["handler_channel", 2], {})] + lines)
"""


@pytest.mark.parametrize("lines", [8000, 10])
def test_a_companion_killed_while_it_writes_many_lines_leaves_the_rest_with_the_lines_counted(socket_path, lines):
    import subprocess
    import sys

    # GIVEN a companion whose environment ends before its pipeline is loaded, holding an
    # invocation's counts and 8,000 of its log lines (a flood, then a crash, after a reset at
    # 128 MB: encoding them takes longer than SHUTDOWN leaves)
    # WHEN the platform kills it while it writes them
    saver = subprocess.run([sys.executable, "-c", KILLED_WRITING_THE_LINES, socket_path, str(lines)], capture_output=True, text=True, timeout=120)
    held = carryover.take(socket_path)
    if lines * (100 + carryover.LINE_WEIGHT) > carryover.LINES_WEIGHT_SAVED_SECOND:
        # THEN what it wrote first is left: every count and call but the lines, each line
        # counted as lost (before: one file, with the lines, whose write the kill ended: nothing
        # of the environment was left, its invocation neither exported nor counted)
        assert saver.returncode == 9, saver.stderr
        assert {"name": "faas.invocations", "attributes": {}, "value": 1} in held.counts
        assert {"name": "lambdawrap.dropped", "attributes": {"reason": "log_shutdown_deadline"}, "value": lines} in held.counts, held.counts
        assert [name for name, _, _ in held.calls] == ["dropped"]
    else:
        # ... and a few lines are written at once, with the rest, in one file
        assert saver.returncode == 0, saver.stderr
        assert [name for name, _, _ in held.calls] == ["dropped"] + ["log_line"] * lines and held.counts == [{"name": "faas.invocations", "attributes": {}, "value": 1}]


KILLED_WRITING_HELD_LINES = """
import os, sys, time
from lambdawrap.companion import carryover
from lambdawrap.companion.correlator import InitFacts
write = carryover._write

def killed_writing_the_lines(path, data):
    if b"held line" in data:
        os._exit(9)  # the platform's SIGKILL at SHUTDOWN's deadline, as the lines are written
    write(path, data)

carryover._write = killed_writing_the_lines
init = InitFacts(start_ns=time.time_ns())
init.status, init.error_type = "error", "Runtime.ImportModuleError"
init.logs = [("held line %d " % n + "x" * 1000, time.time_ns()) for n in range(1000)]
carryover.save(sys.argv[1], [], [("init_span", (init, None), {})])
"""


def test_a_companion_killed_while_it_writes_a_failed_init_s_held_lines_leaves_the_init(socket_path):
    import subprocess
    import sys

    # GIVEN a companion whose environment's init failed after printing 1,000 lines of 1 KiB,
    # held for the init span
    # WHEN the platform kills it while it writes those lines
    saver = subprocess.run([sys.executable, "-c", KILLED_WRITING_HELD_LINES, socket_path], capture_output=True, text=True, timeout=120)
    assert saver.returncode == 9, saver.stderr
    held = carryover.take(socket_path)
    # THEN the failed init is left, without its lines, each counted (before: the one file was
    # written with the lines, as only loose lines were weighed, and the kill left nothing: the
    # failed init was neither exported nor counted)
    assert held.failed_inits == 1
    ((name, (init, parent), _),) = held.calls
    assert (init.error_type, init.logs, parent) == ("Runtime.ImportModuleError", [], None)
    assert held.counts == [{"name": "lambdawrap.dropped", "attributes": {"reason": "log_shutdown_deadline"}, "value": 1000}]


def test_a_companion_that_writes_many_lines_leaves_them_all_uncounted(socket_path):
    # GIVEN the same held, WHEN nothing stops the save THEN the lines are kept, and the count
    # of their loss the first file held is gone with it
    lines = [("log_line", ["x" * 100], {}) for _ in range(1000)]
    carryover.save(socket_path, [{"name": "faas.invocations", "attributes": {}, "value": 1}], [("dropped", ["handler_channel", 2], {})] + lines)
    held = carryover.take(socket_path)
    assert held.counts == [{"name": "faas.invocations", "attributes": {}, "value": 1}]
    assert [name for name, _, _ in held.calls] == ["dropped"] + ["log_line"] * 1000


def test_drops_left_by_a_process_ended_but_not_reaped_are_collected(tmp_path):
    # GIVEN a count left by a process that has ended but that its parent has not reaped yet (a
    # Managed Instances worker that died in init: awslambdaric's parent joins its workers in
    # order), which signal 0 still finds
    from conftest import wait_for
    from lambdawrap.shared import inflight, unreported_drops

    socket_path = str(tmp_path / "s")
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        wait_for(lambda: inflight.ended(pid), what="the child ended, unreaped")
        assert unreported_drops.keep(socket_path, pid, 1)
        # WHEN the companion collects THEN it is counted (before: taken for a running process,
        # and never counted)
        assert [left.count for left in unreported_drops.collect(socket_path)] == [1]
    finally:
        os.waitpid(pid, 0)


def test_drops_left_by_a_process_still_running_are_its_own_to_report(tmp_path):
    # GIVEN counts left beside the socket by a function's process that has ended (an earlier
    # environment's) and by one still running (this environment's runtime, whose record went
    # before the companion listened: it reports its drops with its next record)
    import subprocess
    import sys

    from lambdawrap.shared import unreported_drops

    socket_path = str(tmp_path / "s")
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    ended_pid = int(ended.stdout)
    assert unreported_drops.keep(socket_path, ended_pid, 3) and unreported_drops.keep(socket_path, os.getpid(), 2)
    # WHEN the companion collects them THEN only the ended process's count is taken, once
    # (before: the running one's too, and again with its next record)
    assert [left.count for left in unreported_drops.collect(socket_path)] == [3]
    assert sorted(os.listdir(tmp_path)) == [f"s.dropped.{os.getpid()}"]
    assert unreported_drops.collect(socket_path) == []
