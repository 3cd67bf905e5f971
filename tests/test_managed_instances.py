"""Lambda Managed Instances mode (spec §9): `max_concurrency=N` runs awslambdaric's N worker
processes, each with its own /next loop, and invocations run concurrently on idle workers."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import read_jsonl, wait_for, write_function
from support.concurrency import concurrently
from support.slow_lines import slow_log_lines
from lambdawrap.devtools.emulator import Emulator, InitFailure

HANDLER = """
import os, time
print("worker ready", os.getpid())

def handler(event, context):
    time.sleep(event.get("sleep", 0))
    if event.get("exit") is not None:
        os._exit(event["exit"])
    return {"pid": os.getpid(), "request_id": context.aws_request_id, "env": {k: v for k, v in os.environ.items() if k.startswith("AWS_LAMBDA_")}}
"""


@pytest.fixture
def function_dir(tmp_path: Path) -> Path:
    return write_function(tmp_path / "task", HANDLER)


def post(url: str, event: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(event).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_concurrent_invocations_each_take_an_idle_worker(function_dir):
    with Emulator(str(function_dir), "app.handler", max_concurrency=4, timeout_s=10) as emu:
        # GIVEN four workers, all waiting for work
        emu.init()
        assert emu.wait_idle(20)
        # WHEN four invocations of 1.5 s arrive at once, two by HTTP and two through invoke()
        started = time.monotonic()
        results = concurrently(
            [lambda: post(emu.invoke_url, {"sleep": 1.5})] * 2 + [lambda: (lambda r: (r.status, r.json()))(emu.invoke({"sleep": 1.5}))] * 2
        )
        elapsed = time.monotonic() - started
        # THEN each ran on a worker of its own, at the same time
        assert [status for status, _ in results] == [200] * 4
        assert len({body["pid"] for _, body in results}) == 4
        assert elapsed < 0.75 * 4 * 1.5, elapsed  # one after another: 6 s
        env = results[0][1]["env"]
        assert env["AWS_LAMBDA_MAX_CONCURRENCY"] == "4" and env["AWS_LAMBDA_INITIALIZATION_TYPE"] == "lambda-managed-instances"
        # AND the workers were started once: one init for the environment
        assert len(emu.records("platform.initStart")) == 1
        assert emu.records("platform.initStart")[0]["record"]["initializationType"] == "lambda-managed-instances"
        assert sorted(line for line in emu.log_lines("function") if line.startswith("worker ready")) == sorted(f"worker ready {body['pid']}" for _, body in results)


def test_no_idle_worker_means_runtime_unavailable(function_dir):
    with Emulator(str(function_dir), "app.handler", max_concurrency=2, timeout_s=10) as emu:
        emu.init()
        assert emu.wait_idle(20)
        # GIVEN both workers busy
        busy = threading.Thread(target=lambda: concurrently([lambda: emu.invoke({"sleep": 2})] * 2))
        busy.start()
        wait_for(lambda: len(emu.sandbox.state.pool.in_flight) == 2, what="both workers busy")
        # WHEN a third invocation arrives THEN it is refused, not queued
        refused = emu.invoke({})
        assert refused.status == 400 and refused.json()["errorType"] == "Runtime.Unavailable"
        busy.join(timeout=30)
        assert emu.wait_idle(10) and emu.invoke({}).status == 200


def test_a_timeout_fails_only_its_request(function_dir):
    with Emulator(str(function_dir), "app.handler", max_concurrency=2, timeout_s=1.0) as emu:
        emu.init()
        assert emu.wait_idle(20)
        # GIVEN one invocation that outlives the timeout, next to a quick one
        slow, quick = concurrently([lambda: emu.invoke({"sleep": 2.5}), lambda: emu.invoke({})])
        # THEN only the slow one fails, and nothing is reset
        assert slow.json()["errorType"] == "Sandbox.Timedout"
        assert quick.status == 200 and quick.function_error is None
        report = next(r["record"] for r in emu.records("platform.report") if r["record"]["requestId"] == slow.request_id)
        assert report["status"] == "timeout" and report["errorType"] == "Sandbox.Timedout"
        # AND its worker, not stopped, answers late (410), then serves again in the same environment
        assert emu.wait_idle(10)
        wait_for(lambda: any("410" in line and "InvokeTimeout" in line for line in emu.log_lines("function")), what="the late post's 410")
        workers = {int(line.split()[-1]) for line in emu.log_lines("function") if line.startswith("worker ready")}
        served = set()
        for _ in range(4):
            # Each request once every worker is back at /next: the platform refuses one that no
            # worker is free for, and a busy machine can hold a worker just after it answered.
            assert emu.wait_idle(10)
            served.add(emu.invoke({}).json()["pid"])
        assert served <= workers
        assert emu.sandbox.resets == [] and len(emu.records("platform.initStart")) == 1


def test_a_dead_worker_leaves_the_others_serving(function_dir):
    with Emulator(str(function_dir), "app.handler", max_concurrency=2, timeout_s=1.0) as emu:
        emu.init()
        assert emu.wait_idle(20)
        # WHEN a worker dies mid-request THEN its request times out; the other worker serves on
        assert emu.invoke({"exit": 1}).json()["errorType"] == "Sandbox.Timedout"
        assert emu.invoke({}).status == 200
        assert emu.sandbox.resets == []


def test_an_environment_whose_worker_died_is_idle_once_the_others_are(function_dir):
    with Emulator(str(function_dir), "app.handler", max_concurrency=2, timeout_s=1.0) as emu:
        emu.init()
        assert emu.wait_idle(20)
        # GIVEN a worker that died mid-request (awslambdaric never replaces it)
        assert emu.invoke({"exit": 1}).json()["errorType"] == "Sandbox.Timedout"
        # WHEN a test waits for the environment to be idle THEN it is, with the other worker at
        # /next (before: never, each wait running out its timeout)
        started = time.monotonic()
        assert emu.wait_idle(10)
        assert time.monotonic() - started < 5
        assert emu.invoke({}).status == 200
        assert emu.wait_idle(10)


def test_an_environment_is_idle_only_once_every_worker_has_been_started_and_asks(function_dir):
    # GIVEN a runtime slow to fork its workers (a busy machine): its first worker asks for work,
    # which ends init, long before the last is started. A .pth in the task folder is read by the
    # runtime's main process before it forks, and slows each fork there.
    (function_dir / "slow_fork.pth").write_text("import os; os.register_at_fork(after_in_parent=lambda: __import__('time').sleep(0.4))\n")
    with Emulator(str(function_dir), "app.handler", max_concurrency=4, timeout_s=10) as emu:
        emu.init()
        # WHEN a test waits for the environment to be idle THEN it waits for all four workers
        # (before: a worker not yet forked was taken for a dead one, and three of these four
        # requests were refused with no idle worker)
        assert emu.wait_idle(30)
        results = concurrently([lambda: emu.invoke({"sleep": 0.5})] * 4)
        assert [r.status for r in results] == [200] * 4
        assert len({r.json()["pid"] for r in results}) == 4


def test_an_environment_whose_worker_died_before_any_wait_is_idle_once_the_others_are(function_dir):
    with Emulator(str(function_dir), "app.handler", max_concurrency=2, timeout_s=1.0) as emu:
        # GIVEN a worker that died in the environment's first request, before anything waited
        # for the environment to be idle (so that nothing saw both workers alive)
        assert emu.invoke({"exit": 1}).json()["errorType"] == "Sandbox.Timedout"
        # WHEN a test waits for it to be idle THEN it is, once the other worker asks for work
        # (a worker not seen is not waited for past a settling time)
        assert emu.wait_idle(20)
        assert emu.invoke({}).status == 200


def test_runtime_api_routes_by_request_id(function_dir):
    with Emulator(str(function_dir), "app.handler", max_concurrency=2) as emu:
        emu.invoke({})
        base = f"http://{emu.runtime_api}/2018-06-01/runtime/invocation"
        status, body = post(f"{base}/not-a-request/response", {})
        assert (status, body["errorType"]) == (400, "InvalidRequestID")


def test_extensions_get_shutdown_only_and_per_request_telemetry(function_dir, probe_layer):
    layer, out = probe_layer
    env = {"PROBE_OUT": str(out), "PROBE_EVENTS": "SHUTDOWN", "PROBE_FIRST_TRY_EVENTS": "INVOKE,SHUTDOWN", "PROBE_SCHEMA": "2025-01-29"}
    with Emulator(str(function_dir), "app.handler", str(layer), env=env, max_concurrency=3) as emu:
        emu.init()
        assert emu.wait_idle(20)
        results = [emu.invoke({}) for _ in range(2)]
        assert [r.status for r in results] == [200, 200]
        # The report goes out with the response: it is there before the caller has returned.
        reported = {r["record"]["requestId"] for r in emu.records("platform.report")}
        assert {r.request_id for r in results} <= reported
        assert emu.wait_idle(10) and not emu.sandbox.state.limits.frozen
    lines = read_jsonl(out)
    # Registering for INVOKE is refused; SHUTDOWN alone is accepted.
    first_try = next(r for r in lines if r["kind"] == "first-try")
    assert first_try["status"] == 403 and first_try["body"]["errorType"] == "Extension.InvalidEventType"
    register = next(r for r in lines if r["kind"] == "register")
    assert register["status"] == 200
    assert register["env"]["AWS_LAMBDA_INITIALIZATION_TYPE"] == "lambda-managed-instances" and "AWS_LAMBDA_MAX_CONCURRENCY" not in register["env"]
    # The Telemetry API takes the 2025-01-29 schema only.
    assert next(r for r in lines if r["kind"] == "subscribe")["status"] == 200
    assert next(r for r in lines if r["kind"] == "bad-subscriptions")["answers"]["older-schema"][0] == 400
    # No INVOKE ever reaches the extension.
    assert [r["event"]["eventType"] for r in lines if r["kind"] == "event"] == ["SHUTDOWN"]
    telemetry = [item for r in lines if r["kind"] == "telemetry" for item in r["batch"]]
    types = [item["type"] for item in telemetry]
    assert types.count("platform.initStart") == 1 and "platform.runtimeDone" not in types
    for result in results:
        start = next(i["record"] for i in telemetry if i["type"] == "platform.start" and i["record"]["requestId"] == result.request_id)
        assert start["functionArn"].endswith(":function:function")
        report = next(i["record"] for i in telemetry if i["type"] == "platform.report" and i["record"]["requestId"] == result.request_id)
        assert report["status"] == "success" and list(report["metrics"]) == ["durationMs"]
        assert [span["name"] for span in report["spans"]] == ["responseLatency", "responseDuration"]


def test_lines_printed_before_the_response_come_before_its_report(tmp_path, monkeypatch):
    # GIVEN workers that print before they answer (the runtime's own error line, say), and a
    # log pipeline slower than them (a busy machine)
    task = write_function(tmp_path / "task", """
        def handler(event, context):
            for n in range(3):
                print("slow line", context.aws_request_id, n)
            return "done"
        """)
    slow_log_lines(monkeypatch)
    with Emulator(str(task), "app.handler", max_concurrency=2, timeout_s=10) as emu:
        # WHEN it is invoked
        result = emu.invoke({})
        # THEN its lines precede the platform's report of that request (it goes with the
        # response: a subscriber names the error the caller got from the line before it)
        assert result.json() == "done"
        kinds = [(e["type"], e["record"]) for e in emu.records() if e["type"] == "function" or (e["type"] == "platform.report" and e["record"]["requestId"] == result.request_id)]
        assert kinds[-1][0] == "platform.report"
        assert [record for kind, record in kinds[:-1] if kind == "function" and record.startswith("slow line")] == [f"slow line {result.request_id} {n}" for n in range(3)]


LAMBDAWRAP_HANDLER = """
import logging, os, time
logger = logging.getLogger()
logger.setLevel(logging.INFO)

def handler(event, context):
    logger.info("working on %s", event["n"])
    time.sleep(0.3)
    if event.get("fail"):
        raise ValueError("bad order %s in %s" % (event["n"], os.getpid()))
    return {"pid": os.getpid(), "n": event["n"]}
"""


def test_lambdawrap_on_managed_instances_exports_every_request_once_on_its_timer(tmp_path):
    from support.stack import instrumented

    task = write_function(tmp_path / "lw", LAMBDAWRAP_HANDLER)
    # GIVEN lambdawrap in a Managed Instances environment of 4 workers: no INVOKE events for
    # its companion (registering for them would fail init), no runtimeDone, never frozen
    with instrumented(task, max_concurrency=4, timeout_s=10) as (emu, rx):
        emu.init()
        # WHEN 8 requests arrive, 4 at a time, one of them failing
        results = []
        for wave in (range(4), range(4, 8)):
            # every worker back at /next first: the platform refuses a request no worker is free
            # for, and a busy machine can keep one from asking for the next just after it answered
            assert emu.wait_idle(30)
            results += concurrently([lambda n=n: emu.invoke({"n": n, "fail": n == 5}) for n in wave])
        assert [r.status for r in results] == [200] * 8
        rids = [r.request_id for r in results]
        # THEN, with no further invocation, the timer exports one span per request
        spans = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") in rids, count=8, timeout=60)
        by_rid = {s["attributes"]["faas.invocation_id"]: s for s in spans}
        assert sorted(by_rid) == sorted(rids) and len(spans) == 8
        for n, result in enumerate(results):
            span = by_rid[result.request_id]
            assert (span["status_code"] == 2) == (n == 5), (n, span["status_code"])
            assert (result.function_error is not None) == (n == 5)
        # ... each worker counted its own first request as its cold start, once
        pids = [json.loads(r.body)["pid"] if r.function_error is None else int(json.loads(r.body)["errorMessage"].split()[-1]) for r in results]
        firsts = {rid for n, rid in enumerate(rids) if pids[n] not in pids[:n]}
        assert {rid for rid, span in by_rid.items() if span["attributes"].get("faas.coldstart")} == firsts
        # ... and each log line went with its own request, though requests ran at once
        logs = rx.wait_for_logs(lambda r: "working on" in str(r["body"]), count=8, timeout=30)
        for record in logs:
            n = int(record["body"].split()[-1])  # the JSON record's message
            assert record["attributes"].get("faas.invocation_id") == rids[n], record
            assert record["trace_id"] == by_rid[rids[n]]["trace_id"]
            assert (record["severity_number"], record["severity_text"]) == (9, "INFO")
        # ... the runtime's JSON report of the failed request's error is an ERROR record with
        # its exception (Managed Instances always log in JSON)
        error = rx.wait_for_logs(lambda r: r["attributes"].get("exception.type") == "ValueError", timeout=30)[0]
        assert (error["severity_number"], error["severity_text"]) == (17, "ERROR")
        assert error["body"].startswith("ValueError: bad order 5 in ") and "Traceback" in error["attributes"]["exception.stacktrace"]
        assert error["attributes"]["faas.invocation_id"] == rids[5] and error["trace_id"] == by_rid[rids[5]]["trace_id"]
        assert not [p for p in rx.metrics() if p["name"] == "lambdawrap.dropped" and p["value"]]


def test_on_managed_instances_a_worker_that_loads_late_logs_with_the_init_span_s_ids(tmp_path):
    from support.stack import instrumented

    # GIVEN two workers, the second of which loads the module 2 s after the first (a busy
    # machine): init ends when the first asks for work, so the second logs its init line
    # after the first invocation, once the init span has gone
    marker = tmp_path / "first-worker"
    task = write_function(tmp_path / "lw", f"""
        import logging, os, time
        try:
            os.close(os.open({str(marker)!r}, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            time.sleep(2)
        logging.getLogger().warning("loading the model")

        def handler(event, context):
            return {{"ok": 1}}
        """)
    with instrumented(task, max_concurrency=2, timeout_s=10) as (emu, rx):
        emu.init()
        # WHEN the first worker serves an invocation meanwhile
        result = emu.invoke({})
        init = rx.wait_for_spans(lambda s: s["name"].endswith(" init"), timeout=30)[0]
        # THEN both workers' init lines carry the init span's ids, the late one too
        lines = rx.wait_for_logs(lambda r: "loading the model" in str(r["body"]), count=2, timeout=30)
    invocation = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id)[0]
    assert init["trace_id"] == invocation["trace_id"] and init["parent_span_id"] == invocation["span_id"]
    assert [(r["trace_id"], r["span_id"]) for r in lines] == [(init["trace_id"], init["span_id"])] * 2


LATE_WORDS_HANDLER = """
import decimal, json, logging, time, urllib.request
logging.getLogger().warning("loading the model")  # init: the JSON format's requestId is ""


class SlowToSerialize(decimal.Decimal):
    def is_nan(self):  # awslambdaric's encoder asks it, after the handler returned
        time.sleep(3.5)  # longer than the companion once waited for the platform's word
        raise ValueError("cannot serialize this response")


def handler(event, context):
    if event.get("upstream"):
        # the function's own JSON, naming a request of its own
        print(json.dumps({"requestId": "upstream-7", "message": "relayed"}))
        return {"ok": 1}
    if event.get("slow_result"):
        return {"v": SlowToSerialize("1")}
    urllib.request.urlopen(event["url"] + "/status/200", timeout=5).read()
    time.sleep(7)  # past the timeout: on Managed Instances the worker carries on
    return {"late": 1}
"""


def test_on_managed_instances_what_comes_after_the_handler_returned_or_timed_out_is_accounted_for(tmp_path):
    from support.local_servers import recording_server
    from support.stack import instrumented, metric_total

    task = write_function(tmp_path / "lw", LATE_WORDS_HANDLER)
    with recording_server() as server, instrumented(task, max_concurrency=3, timeout_s=6) as (emu, rx):
        emu.init()
        assert emu.wait_idle(30)
        # WHEN one response fails to serialize 3.5 s after its handler returned (its record went
        # at the return), one request times out after a call and reports once its handler ends,
        # and one prints a JSON line naming an upstream request
        slow, timed_out, upstream = concurrently([
            lambda: emu.invoke({"slow_result": True}),
            lambda: emu.invoke({"url": server.url}),
            lambda: emu.invoke({"upstream": True}),
        ])
        assert slow.function_error == "Unhandled" and b"Runtime.MarshalError" in slow.body, slow.body
        assert b"Sandbox.Timedout" in timed_out.body or b"timed out" in timed_out.body, timed_out.body
        assert upstream.status == 200 and upstream.function_error is None
        rids = {slow.request_id, timed_out.request_id, upstream.request_id}
        spans = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") in rids, count=3, timeout=60)
        by_rid = {s["attributes"]["faas.invocation_id"]: s for s in spans}
        # THEN the response that failed after its record is an error, as the caller saw it
        assert by_rid[slow.request_id]["status_code"] == 2 and by_rid[slow.request_id]["attributes"].get("error.type") == "Runtime.MarshalError"
        # ... the timed-out request's call, reported after its span was made, is its child
        timeout_span = by_rid[timed_out.request_id]
        assert timeout_span["status_code"] == 2
        calls = rx.wait_for_spans(lambda s: s["name"] == "GET" and s["trace_id"] == timeout_span["trace_id"], timeout=60)
        assert calls[0]["parent_span_id"] == timeout_span["span_id"]
        # ... the upstream JSON line and the init line are exported, not held
        rx.wait_for_logs(lambda r: "relayed" in str(r["body"]), timeout=60)
        init_lines = rx.wait_for_logs(lambda r: "loading the model" in str(r["body"]), timeout=60)
        assert all(r["trace_id"] for r in init_lines)  # with the init span (each worker's init)
        assert metric_total(rx, "faas.invocations") == 3
    assert not [p for p in rx.metrics() if p["name"] == "lambdawrap.dropped" and p["value"] and p["attributes"].get("reason") != "sampled_out"]


def test_many_workers_reporting_at_once_never_wait_for_the_companion_to_accept():
    import shutil
    import tempfile

    from lambdawrap.companion.channel_server import SocketServer
    from lambdawrap.handler.channel import Channel
    from lambdawrap.shared import records

    # GIVEN a companion whose loop has not yet accepted any connection (busy, or starved of CPU
    # by the workers), and 100 worker processes (Managed Instances run up to 1,600), each with
    # a channel of its own, ending their first invocations at once
    folder = tempfile.mkdtemp(prefix="lw")  # a socket's path must stay short
    received: list = []
    server = SocketServer(f"{folder}/lw.sock", received.append, lambda reason, detail: None)
    workers = [Channel(f"{folder}/lw.sock") for _ in range(100)]

    def report(n: int) -> bool:
        start = records.encode_invocation_start(f"r{n}", "arn", n + 1, n + 1, 0, True, time.time_ns(), True, False, "other", {}, [], "function", 2)
        return workers[n].send_invocation(start, records.invocation_end(time.time_ns()))

    sent: list = []
    try:
        # WHEN each sends its record
        sender = threading.Thread(target=lambda: sent.extend(report(n) for n in range(100)), daemon=True)
        sender.start()
        sender.join(timeout=20)
        # THEN none waits for the companion (a connect beyond the listener's backlog would)
        assert not sender.is_alive(), f"a worker's send blocked after {len(sent)} records"
        # ... and once the companion serves, it has every record
        server.start()
        assert all(sent)
        wait_for(lambda: len(received) == 100, timeout=30, what="every worker's record")
        assert sorted(r["start"]["request_id"] for r in received) == sorted(f"r{n}" for n in range(100))
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_on_managed_instances_a_request_whose_platform_events_were_lost_is_still_exported(tmp_path):
    from support.faults import lose_telemetry
    from support.stack import instrumented, metric_total

    task = write_function(tmp_path / "lw", LAMBDAWRAP_HANDLER)
    with instrumented(task, max_concurrency=2, timeout_s=3) as (emu, rx):
        emu.init()
        assert emu.wait_idle(30)
        # GIVEN a platform that drops telemetry the companion was too slow for: there the
        # request's platform.start is its only announcement (no INVOKE), and may be lost with
        # its batch, the report too
        lost: dict = {}
        lose_telemetry(emu, lambda e: e["type"] in lost.get((e.get("record") or {}).get("requestId"), ()) if isinstance(e.get("record"), dict) else False)
        lost.update({"start-lost": ("platform.start",), "both-lost": ("platform.start", "platform.report")})
        # WHEN a failing request loses its start, a good one its start and its report, and a
        # third loses nothing
        failed = emu.invoke({"n": 1, "fail": True}, request_id="start-lost")
        assert emu.wait_idle(30)
        good = emu.invoke({"n": 2}, request_id="both-lost")
        assert emu.wait_idle(30)
        plain = emu.invoke({"n": 3})
        assert failed.function_error is not None and good.function_error is None and plain.function_error is None
        # THEN each is exported once, as its record and the platform's word (where it came) say
        rids = ("start-lost", "both-lost", plain.request_id)
        spans = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") in rids, count=3, timeout=60)
        by_rid = {s["attributes"]["faas.invocation_id"]: s for s in spans}
        assert sorted(by_rid) == sorted(rids) and len(spans) == 3
        assert by_rid["start-lost"]["status_code"] == 2 and by_rid["both-lost"]["status_code"] != 2
        wait_for(lambda: metric_total(rx, "faas.invocations") == 3, timeout=30, what="three invocations counted")
        # ... and their log lines carry their ids
        lines = rx.wait_for_logs(lambda r: "working on" in str(r["body"]), count=3, timeout=30)
        assert sorted((r["attributes"].get("faas.invocation_id"), r["trace_id"]) for r in lines) == sorted((rid, by_rid[rid]["trace_id"]) for rid in rids)
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "platform_logs_dropped"}) == 3  # the events lost, as the platform counts them
    assert len([s for s in rx.spans() if s["attributes"].get("faas.invocation_id") in rids]) == 3


def test_on_managed_instances_a_worker_s_first_request_is_a_cold_start_however_long_init_took(tmp_path):
    from support.stack import instrumented

    # GIVEN three workers whose module takes 4 s to load (Managed Instances' init may take
    # 15 minutes: N workers load at once on shared vCPUs), and proactive init set at 3 s
    task = write_function(tmp_path / "lw", """
        import os, time
        time.sleep(4)

        def handler(event, context):
            time.sleep(0.3)
            return {"pid": os.getpid()}
        """)
    with instrumented(task, env={"LAMBDAWRAP_PROACTIVE_INIT_MS": "3000"}, max_concurrency=3, timeout_s=10) as (emu, rx):
        emu.init()
        assert emu.wait_idle(60)
        # WHEN two requests come as soon as the workers are ready, and three more once the third
        # worker has waited longer than that for its first
        first = concurrently([lambda: emu.invoke({})] * 2)
        time.sleep(3.5)
        assert emu.wait_idle(30)
        second = concurrently([lambda: emu.invoke({})] * 3)
        rids = [r.request_id for r in first + second]
        assert [r.status for r in first + second] == [200] * 5 and len({json.loads(r.body)["pid"] for r in first + second}) == 3
        spans = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") in rids, count=5, timeout=60)
    # THEN the two served at once were their workers' cold starts; the third worker's first,
    # which did not wait for its load, is a proactive init, and the rest are warm
    flags = {s["attributes"]["faas.invocation_id"]: (s["attributes"].get("faas.coldstart"), s["attributes"].get("lambdawrap.proactive_init", False)) for s in spans}
    assert [flags[r.request_id] for r in first] == [(True, False)] * 2
    assert sorted(flags[r.request_id] for r in second) == [(False, False), (False, False), (False, True)]


def companion_whose_pipeline_waits_for(tmp_path: Path, marker: Path) -> Path:
    """An interpreter for the companion (LAMBDAWRAP_PYTHON) whose export pipeline loads only
    once `marker` exists: a companion slow to import the SDK (at 128 MB it takes seconds), as
    long as the test needs, whatever the machine's speed."""
    hold = tmp_path / "hold_pipeline.py"
    hold.write_text(textwrap.dedent(f"""
        import os, runpy, sys, time

        class HeldPipeline:
            def find_spec(self, name, path=None, target=None):
                if name == "lambdawrap.companion.signals":
                    deadline = time.monotonic() + 60
                    while not os.path.exists({str(marker)!r}) and time.monotonic() < deadline:
                        time.sleep(0.02)
                return None

        sys.meta_path.insert(0, HeldPipeline())
        sys.argv = sys.argv[1:]
        runpy.run_module("lambdawrap.companion", run_name="__main__", alter_sys=True)
        """))
    python = tmp_path / "held-python"
    # The launcher asks the interpreter its version with -c first; then runs -m lambdawrap.companion NAME.
    python.write_text(f'#!/bin/bash\ncase " $* " in *" -c "*) exec {sys.executable} "$@" ;; esac\nexec {sys.executable} -E -s {str(hold)!r} "${{@: -1}}"\n')
    python.chmod(0o755)
    return python


def test_on_managed_instances_a_timed_out_request_reporting_before_the_pipeline_loads_keeps_its_span(tmp_path):
    from support.stack import instrumented, metric_total

    # GIVEN a handler that runs on past its timeout and then raises (Managed Instances do not
    # stop it), and a companion whose export pipeline is still loading all the while
    marker = tmp_path / "pipeline-may-load"
    task = write_function(tmp_path / "lw", """
        import time

        def handler(event, context):
            time.sleep(2.5)
            raise ValueError("too late")
        """)
    env = {"LAMBDAWRAP_PYTHON": str(companion_whose_pipeline_waits_for(tmp_path, marker))}
    with instrumented(task, env=env, max_concurrency=1, timeout_s=1.0) as (emu, rx):
        emu.init()
        assert emu.wait_idle(30)
        # WHEN the request times out, and its record comes once the handler raised, late
        result = emu.invoke({})
        assert result.json()["errorType"] == "Sandbox.Timedout"
        wait_for(lambda: any("410" in line and "InvokeTimeout" in line for line in emu.log_lines("function")), timeout=30, what="the late post's 410")
        # ... and only then the pipeline loads
        marker.touch()
        span = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id, timeout=30)[0]
        wait_for(lambda: metric_total(rx, "faas.invocations") == 1, timeout=30, what="the invocation counted")
    # THEN its span is the timeout its caller got, with its duration, as with the pipeline
    # loaded in time (the late record made it a span of no duration, its exception "None")
    assert span["status_code"] == 2 and span["attributes"]["error.type"] == "Sandbox.Timedout", span
    assert span["end_time_unix_nano"] - span["start_time_unix_nano"] >= 900_000_000, span
    assert all(e["attributes"].get("exception.type") != "None" for e in span["events"]), span["events"]
    assert metric_total(rx, "faas.timeouts") == 1
    assert len([s for s in rx.spans() if s["attributes"].get("faas.invocation_id") == result.request_id]) == 1


def test_on_managed_instances_lines_held_under_an_id_never_announced_go_out_on_the_timer(tmp_path):
    from support.stack import instrumented

    # GIVEN a function that logs a JSON line naming a request of its own (an upstream's id),
    # which the companion holds a while for a request Lambda might yet announce
    task = write_function(tmp_path / "lw", """
        import json

        def handler(event, context):
            print(json.dumps({"level": "INFO", "message": "forwarded", "requestId": "upstream-7f3a"}))
            return {"ok": True}
        """)
    with instrumented(task, max_concurrency=2, timeout_s=10) as (emu, rx):
        emu.init()
        assert emu.wait_idle(30)
        # WHEN one request comes, and then none
        assert emu.invoke({}).json() == {"ok": True}
        # THEN the timer exports the line once its hold is over (before: the timer exported only
        # after requests or records came, and the line waited for the next request or SHUTDOWN)
        (line,) = rx.wait_for_logs(lambda r: r["body"] == "forwarded", timeout=30)
        assert not line["trace_id"]  # no span of its own


def test_on_managed_instances_spans_a_collector_held_off_go_out_on_the_timer_once_it_allows(tmp_path):
    from support.stack import instrumented

    # GIVEN a collector that answers its next two requests 429, Retry-After 15 s: longer than
    # an export waits (its 10 s timeout), so the spans are held back in their buffer
    task = write_function(tmp_path / "lw", """
        def handler(event, context):
            return {"ok": True}
        """)
    with instrumented(task, max_concurrency=2, timeout_s=10) as (emu, rx):
        emu.init()
        assert emu.wait_idle(30)
        rx.set_behaviour(status=429, retry_after=15.0, remaining=2)
        # WHEN one request comes, and then none
        result = emu.invoke({})
        assert result.json() == {"ok": True}
        # THEN the timer sends its span once the hold is over (before: the timer sent only after
        # requests or records came, and the span waited for the next request or SHUTDOWN)
        rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id, timeout=90)


EMPTIES_TMP = """
import os, shutil, time

def handler(event, context):
    socket = os.environ["LAMBDAWRAP_SOCKET"]
    if event.get("empty"):
        # What a function cleaning /tmp after its work does (the socket's folder is /tmp)
        folder = os.path.dirname(socket)
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
        print("emptied", folder)
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid(), "socket": socket}
"""


def test_on_managed_instances_a_function_that_empties_tmp_has_every_request_reported(tmp_path):
    from support.stack import instrumented, metric_total

    task = write_function(tmp_path / "lw", EMPTIES_TMP)
    # GIVEN two workers, and the companion's timer too slow to matter (a minute): only what it
    # is told of the requests can make it listen again
    with instrumented(task, max_concurrency=2, timeout_s=10, env={"LAMBDAWRAP_FLUSH": "periodic,60000"}) as (emu, rx):
        emu.init()
        assert emu.wait_idle(30)
        # WHEN a first request empties the socket's folder and returns at once
        first = emu.invoke({"empty": True})
        socket = first.json()["socket"]
        # THEN the companion listens again, on the request's telemetry (before: at its next
        # tick, and each worker's record until then was lost, counted as record_missing)
        wait_for(lambda: os.path.exists(socket), timeout=30, what="the companion listening again")
        # ... and two requests at once, on both workers, one of which never sent a record yet
        assert emu.wait_idle(30)
        others = concurrently([lambda: emu.invoke({"sleep": 0.2}) for _ in range(2)])
        assert len({r.json()["pid"] for r in others}) == 2
        rids = [r.request_id for r in [first, *others]]
        emu.stop()
    # ... are each their span, the first too (its process connected before its handler ran)
    spans = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") in rids, count=3, timeout=30)
    assert sorted(s["attributes"]["faas.invocation_id"] for s in spans) == sorted(rids)
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "record_missing"}) == 0


ONE_WORKER_FAILS = """
import os, time


class OrderError(Exception):
    pass


try:
    os.close(os.open({marker!r}, os.O_CREAT | os.O_EXCL))
    failing = True
except FileExistsError:
    failing = False
if failing:
    deadline = time.monotonic() + 60
    while not os.path.exists({go!r}) and time.monotonic() < deadline:
        time.sleep(0.02)
    {failure}

def handler(event, context):
    return {{"pid": os.getpid()}}
"""


@pytest.mark.parametrize(
    "failure, error_type, message",
    [
        ("import a_module_this_function_lacks", "Runtime.ImportModuleError", "Unable to import module 'app': No module named 'a_module_this_function_lacks'"),
        ("raise OrderError('no orders table')", "OrderError", "no orders table"),
    ],
    ids=["runtime's error", "function's error"],
)
def test_on_managed_instances_a_worker_whose_init_failed_is_told_as_a_failed_init(tmp_path, failure, error_type, message):
    from support.stack import instrumented, metric_total

    go = tmp_path / "go"
    task = write_function(tmp_path / "lw", ONE_WORKER_FAILS.format(marker=str(tmp_path / "failing"), go=str(go), failure=failure))
    # GIVEN two workers, one of which fails to import the function's module once the other has
    # ended the environment's init (it asked for work): the environment serves on with one
    with instrumented(task, max_concurrency=2, timeout_s=10) as (emu, rx):
        emu.init()
        go.touch()
        wait_for(lambda: any(f'"errorType": "{error_type}"' in line for line in emu.log_lines("function")), timeout=60, what="the worker's init error")
        assert emu.wait_idle(30)
        result = emu.invoke({})
        assert result.status == 200 and result.function_error is None
        emu.stop()
    # THEN the environment's init is a success, in the first invocation's trace
    spans = rx.wait_for_spans(lambda s: s["name"].endswith(" init"), count=2, timeout=30)
    invocation = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id)[0]
    ok = [s for s in spans if s["status_code"] != 2]
    failed = [s for s in spans if s["status_code"] == 2]
    assert len(ok) == 1 and ok[0]["parent_span_id"] == invocation["span_id"]
    # ... and the worker's failed init is a failed init, as an environment's is: its own trace,
    # the runtime's error named
    assert len(failed) == 1, spans
    worker = failed[0]
    assert worker["trace_id"] != invocation["trace_id"] and not worker["parent_span_id"]
    # ... named as the runtime named it in its own report (its JSON log line): the type, the
    # message, and the stack from the function's frames (none for a module it could not import)
    assert worker["attributes"]["error.type"] == error_type and worker["status_message"] == message
    (event,) = [e for e in worker["events"] if e["name"] == "exception"]
    stack = event["attributes"].get("exception.stacktrace", "")
    assert "bootstrap.py" not in stack
    assert ('app.py", line' in stack) == (error_type == "OrderError"), stack
    assert worker["attributes"]["lambdawrap.init.worker"] is True and worker["attributes"]["faas.coldstart"] is False
    assert "lambdawrap.init.worker" not in ok[0]["attributes"]
    assert metric_total(rx, "lambdawrap.init_errors") == 1
    # ... whose duration is not the environment's init duration, which the platform measured
    assert metric_total(rx, "faas.init_duration") == 1


def test_on_managed_instances_workers_that_all_fail_to_init_are_one_failed_init(tmp_path):
    from support.stack import instrumented, metric_total

    task = write_function(tmp_path / "lw", """
        import a_module_this_function_lacks

        def handler(event, context):
            return {}
        """)
    # GIVEN three workers that each fail to import the function's module
    with instrumented(task, max_concurrency=3, timeout_s=10) as (emu, rx):
        with pytest.raises(InitFailure):
            emu.init()
        emu.stop()
    # THEN the environment's init failed, once: the runtime reports the first worker's error,
    # and the others' are that same failure
    spans = rx.wait_for_spans(lambda s: s["name"].endswith(" init"), timeout=30)
    assert len(spans) == 1 and spans[0]["status_code"] == 2, spans
    assert spans[0]["attributes"]["error.type"] == "Runtime.ImportModuleError"
    assert "lambdawrap.init.worker" not in spans[0]["attributes"]
    assert metric_total(rx, "lambdawrap.init_errors") == 1
