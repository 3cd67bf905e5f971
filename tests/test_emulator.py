"""The emulator, driven through the real awslambdaric and real extension processes."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from conftest import read_jsonl, wait_for, write_function
from support.slow_lines import slow_log_lines
from lambdawrap.devtools.emulator import Emulator
from lambdawrap.devtools.emulator.api_server import MAX_READ_BYTES
from lambdawrap.devtools.emulator.environment import DEFAULT_MEMORY_MB

HANDLER = """
import json, os, time
LOADED = time.time()
print("module loaded", os.getpid())

def handler(event, context):
    print("hello from the handler", json.dumps(event))
    if event.get("raise"):
        raise ValueError("boom")
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("exit") is not None:
        os._exit(event["exit"])
    if event.get("big"):
        return "x" * event["big"]
    if event.get("allocate_mb"):
        block = bytearray(event["allocate_mb"] * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
    return {
        "request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "arn": context.invoked_function_arn,
        "client_context": getattr(context.client_context, "custom", None),
        "trace": os.environ.get("_X_AMZN_TRACE_ID"),
        "loaded": LOADED,
        "pid": os.getpid(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "LAMBDA_", "_HANDLER", "TZ", "LANG"))},
    }
"""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def function_dir(tmp_path: Path) -> Path:
    return write_function(tmp_path / "task", HANDLER)


def post(url: str, body: bytes, headers: dict | None = None, method: str = "POST"):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


class TestPlainFunction:
    def test_result_context_and_environment(self, function_dir):
        with Emulator(str(function_dir), "app.handler", memory_mb=256, timeout_s=5, function_name="orders") as emu:
            result = emu.invoke({"a": 1})
            assert result.status == 200 and result.function_error is None
            body = result.json()
            assert body["request_id"] == result.request_id
            assert 4000 < body["remaining_ms"] <= 5000
            assert body["arn"] == "arn:aws:lambda:us-east-1:012345678912:function:orders"
            assert body["trace"].startswith("Root=1-") and "Sampled=0" in body["trace"]
            env = body["env"]
            assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python%d.%d" % sys.version_info[:2]
            assert env["AWS_LAMBDA_FUNCTION_NAME"] == "orders"
            assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
            assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
            assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/orders"
            assert "[$LATEST]" in env["AWS_LAMBDA_LOG_STREAM_NAME"]
            assert env["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
            assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
            assert env["LAMBDA_TASK_ROOT"] == str(function_dir)
            assert env["_HANDLER"] == "app.handler"
            assert "AWS_LAMBDA_MAX_CONCURRENCY" not in env
            # The same environment serves the next invocation: no re-init.
            again = emu.invoke({"a": 2}).json()
            assert again["loaded"] == body["loaded"] and again["pid"] == body["pid"]
            assert "hello from the handler {\"a\": 1}" in emu.log_lines("function")

    def test_exception_gives_function_error(self, function_dir):
        with Emulator(str(function_dir), "app.handler") as emu:
            result = emu.invoke({"raise": True})
            assert result.function_error == "Unhandled"
            body = result.json()
            assert body["errorType"] == "ValueError" and body["errorMessage"] == "boom"
            assert any("raise ValueError" in line for line in body["stackTrace"])
            emu.wait_idle()
            report = emu.records("platform.report")[-1]["record"]
            assert report["status"] == "error"
            # A handler error is not a crash: the environment stays.
            assert emu.invoke({}).json()["pid"] == emu.invoke({}).json()["pid"]
            assert emu.sandbox.resets == []

    def test_deep_traceback_error_is_answered_not_a_crash(self, tmp_path):
        # GIVEN an error 1,000 frames deep: awslambdaric sends its X-Ray cause as one header of
        # far more than 64 KiB, which the real Runtime API accepts
        task = write_function(tmp_path / "task", """
            import os
            def descend_through_a_function_whose_long_name_makes_every_frame_of_the_cause_longer(n):
                return descend_through_a_function_whose_long_name_makes_every_frame_of_the_cause_longer(n + 1)
            def handler(event, context):
                if event.get("deep"):
                    descend_through_a_function_whose_long_name_makes_every_frame_of_the_cause_longer(0)
                return os.getpid()
            """)
        with Emulator(str(task), "app.handler") as emu:
            pid = emu.invoke({}).json()
            # WHEN it is raised
            result = emu.invoke({"deep": True})
            # THEN the caller gets the function's error and the environment stays
            assert result.function_error == "Unhandled"
            assert result.json()["errorType"] == "RecursionError"
            assert emu.invoke({}).json() == pid
            assert emu.sandbox.resets == []

    def test_runtime_asking_for_next_before_the_emulator_records_it_still_ends_init(self, function_dir, monkeypatch):
        # GIVEN an emulator thread held (as a busy machine holds it) between starting the
        # runtime and recording it, until the runtime has already called /next
        from lambdawrap.devtools.emulator import api_calls, init_phase

        asked = threading.Event()
        runtime_next = api_calls.ApiCalls.runtime_next

        def noting_next(self, *args):
            asked.set()
            return runtime_next(self, *args)

        class HeldProcess(init_phase.ManagedProcess):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                if self.name == "runtime":
                    assert asked.wait(30), "the runtime never called /next"

        monkeypatch.setattr(api_calls.ApiCalls, "runtime_next", noting_next)
        monkeypatch.setattr(init_phase, "ManagedProcess", HeldProcess)
        with Emulator(str(function_dir), "app.handler") as emu:
            # WHEN it is invoked
            result = emu.invoke({})
            # THEN that /next ended init, once: no init timeout, no second init
            assert result.status == 200 and result.function_error is None
            assert [r["record"]["status"] for r in emu.records("platform.initRuntimeDone")] == ["success"]
            assert emu.sandbox.resets == []

    def test_a_dead_runtimes_late_next_takes_nothing(self, function_dir):
        # GIVEN a connection to the Runtime API made by an earlier runtime, whose /next the
        # emulator reads only after a reset has replaced that runtime (it was sent just before)
        import socket

        with Emulator(str(function_dir), "app.handler", timeout_s=1.0) as emu:
            assert emu.invoke({}).status == 200
            host, port = emu.runtime_api.split(":")
            with socket.create_connection((host, int(port)), timeout=30) as earlier:
                time.sleep(0.05)  # accepted before the reset below
                assert emu.invoke({"sleep": 3}).json()["errorType"] == "Sandbox.Timedout"
                assert emu.invoke({}).status == 200  # a new runtime, started after that connection
                # WHEN that /next arrives
                earlier.sendall(f"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                answer = http.client.HTTPResponse(earlier)
                answer.begin()
                # THEN it is refused at once, and the current runtime still gets the next invocation
                assert answer.status == 500 and json.loads(answer.read())["errorType"] == "Runtime.Reset"
            result = emu.invoke({})
            assert result.status == 200 and result.function_error is None

    @pytest.mark.parametrize(
        "source, before",
        [
            # printed by the handler: before the platform's runtimeDone, as on Lambda
            ('def handler(event, context):\n    for n in range(3):\n        print("slow line", n)\n    return "done"\n', "platform.runtimeDone"),
            # printed as the module loads: before initRuntimeDone (and so the invocation's
            # start): a subscriber tells the init's lines from the invocation's by that order
            ('for n in range(3):\n    print("slow line", n)\n\ndef handler(event, context):\n    return "done"\n', "platform.initRuntimeDone"),
        ],
        ids=["by the handler", "as the module loads"],
    )
    def test_lines_come_before_the_platform_event_that_ends_their_phase(self, tmp_path, monkeypatch, source, before):
        # GIVEN a function that prints, and a log pipeline slower than it (a busy machine)
        task = write_function(tmp_path / "task", source)
        slow_log_lines(monkeypatch)
        with Emulator(str(task), "app.handler") as emu:
            # WHEN it is invoked
            result = emu.invoke({})
            emu.wait_idle()
            # THEN its lines precede the platform's event that ends their phase
            assert result.json() == "done"
            kinds = [(e["type"], e["record"]) for e in emu.records() if e["type"] in ("function", before)]
            assert kinds[-1][0] == before and kinds[-1][1].get("requestId", result.request_id) == result.request_id
            assert [record for kind, record in kinds[:-1] if kind == "function"] == [f"slow line {n}" for n in range(3)]

    def test_the_log_lines_read_after_an_invoke_hold_what_the_handler_printed(self, tmp_path, monkeypatch):
        # GIVEN a handler that prints before it returns, and a log pipeline slower than it
        task = write_function(tmp_path / "task", 'def handler(event, context):\n    for n in range(2):\n        print("slow line", n)\n    return "done"\n')
        slow_log_lines(monkeypatch, pause_s=0.1)  # 0.2 s in all, well within log_lines' wait
        with Emulator(str(task), "app.handler") as emu:
            # WHEN the lines are read as soon as the caller has the response
            assert emu.invoke({}).json() == "done"
            lines = emu.log_lines("function")
        # THEN they hold every line printed before it (before: read while still in the pipe)
        assert [line for line in lines if line.startswith("slow line")] == ["slow line 0", "slow line 1"]

    def test_timeout_then_reinit(self, function_dir):
        with Emulator(str(function_dir), "app.handler", timeout_s=1.0) as emu:
            first = emu.invoke({}).json()
            started = time.monotonic()
            result = emu.invoke({"sleep": 5})
            assert 0.9 < time.monotonic() - started < 4.0  # the handler would take 5 s
            assert result.function_error == "Unhandled"
            assert result.json() == {"errorType": "Sandbox.Timedout", "errorMessage": f"RequestId: {result.request_id} Error: Task timed out after 1.00 seconds"}
            after = emu.invoke({}).json()
            assert after["pid"] != first["pid"] and after["loaded"] > first["loaded"]
            assert not pid_alive(first["pid"])
            emu.wait_idle()
            assert emu.sandbox.resets == ["timeout"]
            phases = [r["record"]["phase"] for r in emu.records("platform.initStart")]
            assert phases == ["init", "invoke"]
            timed_out = [r["record"] for r in emu.records("platform.runtimeDone") if r["record"]["requestId"] == result.request_id]
            assert timed_out and timed_out[0]["status"] == "timeout"

    def test_exit_gives_runtime_exit_error_and_reset(self, function_dir):
        with Emulator(str(function_dir), "app.handler") as emu:
            first = emu.invoke({}).json()
            result = emu.invoke({"exit": 1})
            assert result.function_error == "Unhandled"
            assert result.json() == {"errorType": "Runtime.ExitError", "errorMessage": f"RequestId: {result.request_id} Error: Runtime exited with error: exit status 1"}
            after = emu.invoke({}).json()
            assert after["pid"] != first["pid"]
            assert emu.sandbox.resets == ["failure"]
            zero = emu.invoke({"exit": 0}).json()
            assert zero["errorMessage"].endswith("Runtime exited without providing a reason")

    def test_import_error(self, tmp_path):
        task = write_function(tmp_path / "task", "import does_not_exist\n")
        with Emulator(str(task), "app.handler") as emu:
            result = emu.invoke({})
            assert result.function_error == "Unhandled"
            body = result.json()
            assert body["errorType"] == "Runtime.ImportModuleError"
            assert "No module named 'does_not_exist'" in body["errorMessage"]
            # The failed init ran again inside the invoke (the platform's suppressed init), and
            # every later invoke retries init, in the invoke phase too.
            assert emu.invoke({}).json()["errorType"] == "Runtime.ImportModuleError"
            phases = [(r["record"]["phase"], r["record"]["status"]) for r in emu.records("platform.initRuntimeDone")]
            assert phases == [("init", "error"), ("invoke", "error"), ("invoke", "error")]

    def test_a_proactive_init_that_fails_is_run_again_inside_the_first_invoke_only(self, tmp_path):
        from lambdawrap.devtools.emulator.init_phase import InitFailure

        task = write_function(tmp_path / "task", "import does_not_exist\n")
        with Emulator(str(task), "app.handler") as emu:
            # A proactive init that fails is not run again at once: no invocation to run it in
            with pytest.raises(InitFailure):
                emu.init()
            assert [r["record"]["phase"] for r in emu.records("platform.initRuntimeDone")] == ["init"]
            # ... the first invoke's init is, in the invoke phase
            assert emu.invoke({}).json()["errorType"] == "Runtime.ImportModuleError"
            assert [r["record"]["phase"] for r in emu.records("platform.initRuntimeDone")] == ["init", "invoke"]

    def test_missing_wrapper_exits_127(self, function_dir):
        with Emulator(str(function_dir), "app.handler", env={"AWS_LAMBDA_EXEC_WRAPPER": "/opt/nope.sh"}, layer_dir=str(function_dir)) as emu:
            body = emu.invoke({}).json()
            assert body["errorType"] == "Runtime.ExitError"
            assert body["errorMessage"].endswith("exit status 127")
            assert any(line.endswith("nope.sh: does not exist") for line in emu.log_lines("function"))

    def test_payload_limits(self, function_dir):
        with Emulator(str(function_dir), "app.handler") as emu:
            too_big = emu.invoke(raw=b'"' + b"x" * (6 * 1024 * 1024 + 100) + b'"')
            assert too_big.status == 413 and too_big.json()["errorType"] == "RequestEntityTooLarge"
            # Over the limit, and over what the API server keeps in memory (read through
            # instead): the caller is told the size either way, as Lambda tells it.
            for big in (6 * 1024 * 1024 + 200, MAX_READ_BYTES + 5):
                result = emu.invoke({"big": big})
                assert result.function_error == "Unhandled"
                assert result.json() == {
                    "errorType": "Function.ResponseSizeTooLarge",
                    "errorMessage": f"Response payload size ({big + 2} bytes) exceeded maximum allowed payload size (6291556 bytes).",  # a JSON string: two quotes
                }
                # RIC exits after the 413; the environment resets and serves again.
                assert emu.invoke({})
                assert emu.invoke({}).json()["request_id"]
            assert emu.sandbox.resets.count("failure") == 2

    def test_report_has_memory_and_billed_duration(self, function_dir):
        with Emulator(str(function_dir), "app.handler", memory_mb=512) as emu:
            first = emu.invoke({"allocate_mb": 60})
            emu.wait_idle()
            report = next(r["record"] for r in emu.records("platform.report") if r["record"]["requestId"] == first.request_id)
            metrics = report["metrics"]
            assert metrics["maxMemoryUsedMB"] >= 60
            assert metrics["memorySizeMB"] == 512
            assert metrics["billedDurationMs"] >= metrics["durationMs"]
            assert metrics["initDurationMs"] > 0
            second = emu.invoke({})
            emu.wait_idle()
            later = next(r["record"] for r in emu.records("platform.report") if r["record"]["requestId"] == second.request_id)
            assert "initDurationMs" not in later["metrics"]


class TestInvokeEndpoint:
    def test_http_invoke_headers_and_errors(self, function_dir):
        with Emulator(str(function_dir), "app.handler") as emu:
            url = emu.invoke_url
            trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
            context = base64.b64encode(json.dumps({"custom": {"tenant": "t1"}}).encode()).decode()
            status, headers, body = post(url, b'{"x": 1}', {"X-Amzn-Trace-Id": trace, "X-Amz-Client-Context": context})
            assert status == 200 and "X-Amz-Function-Error" not in headers
            payload = json.loads(body)
            assert payload["trace"] == trace and payload["client_context"] == {"tenant": "t1"}
            status, headers, body = post(url, b'{"raise": true}')
            assert status == 200 and headers["X-Amz-Function-Error"] == "Unhandled"
            assert json.loads(body)["errorType"] == "ValueError"
            for size in (6 * 1024 * 1024 + 200, MAX_READ_BYTES + 3):
                status, _, body = post(url, b'"' + b"x" * (size - 2) + b'"')
                assert status == 413 and json.loads(body)["errorType"] == "RequestEntityTooLarge"
                assert f"({size} bytes)" in json.loads(body)["errorMessage"]
            status, _, body = post(url, b"{}", {"X-Amz-Client-Context": "%%%not base64"})
            assert status == 400 and json.loads(body)["errorType"] == "InvalidRequestContentException"
            base = url.split("/2015-03-31")[0]
            status, _, body = post(base + "/nowhere", b"{}")
            assert status == 404 and json.loads(body)["errorType"]
            status, _, body = post(url, None, method="GET")
            assert status == 405 and json.loads(body)["errorType"] == "MethodNotAllowed"

    def test_platform_api_errors_are_json(self, function_dir):
        with Emulator(str(function_dir), "app.handler") as emu:
            emu.invoke({})
            api = "http://" + emu.runtime_api
            cases = [
                ("POST", "/2020-01-01/extension/register", b'{"events": []}', {"Lambda-Extension-Name": "x"}, 403, "Extension.RegistrationClosed"),
                ("POST", "/2020-01-01/extension/register", b"{bad", {"Lambda-Extension-Name": "x"}, 403, "InvalidRequestFormat"),
                ("POST", "/2020-01-01/extension/register", b'{"events": []}', {}, 403, "Extension.InvalidExtensionName"),
                ("POST", "/2020-01-01/extension/register", b'{"events": ["NOPE"]}', {"Lambda-Extension-Name": "x"}, 403, "Extension.InvalidEventType"),
                ("GET", "/2020-01-01/extension/event/next", None, {}, 403, "Extension.MissingExtensionIdentifier"),
                ("GET", "/2020-01-01/extension/event/next", None, {"Lambda-Extension-Identifier": "not-a-uuid"}, 403, "Extension.InvalidExtensionIdentifier"),
                ("GET", "/2020-01-01/extension/event/next", None, {"Lambda-Extension-Identifier": "3f1c1d2e-0000-4000-8000-000000000000"}, 403, "Extension.UnknownExtensionIdentifier"),
                ("PUT", "/2022-07-01/telemetry", b"{}", {"Lambda-Extension-Identifier": "3f1c1d2e-0000-4000-8000-000000000000"}, 403, "Extension.UnknownExtensionIdentifier"),
                ("POST", "/2018-06-01/runtime/invocation/not-current/response", b"{}", {}, 400, "InvalidRequestID"),
                ("POST", "/2018-06-01/runtime/init/error", b"{}", {}, 403, "InvalidStateTransition"),
                ("DELETE", "/2018-06-01/runtime/invocation/next", None, {}, 405, "MethodNotAllowed"),
                ("GET", "/2018-06-01/nothing/here", None, {}, 404, "InvalidRequest"),
                # Only a response's size is judged; any other body over what is kept is refused.
                ("POST", "/2020-01-01/extension/register", b" " * (MAX_READ_BYTES + 1), {"Lambda-Extension-Name": "x"}, 413, "RequestEntityTooLarge"),
            ]
            for method, path, body, headers, status, error_type in cases:
                got_status, _, got = post(api + path, body, headers, method=method)
                assert (got_status, json.loads(got)["errorType"]) == (status, error_type), (method, path)
            # The runtime still works after all that.
            assert emu.invoke({}).status == 200


class TestExtensions:
    def test_probe_sees_lifecycle_and_telemetry(self, function_dir, probe_layer):
        layer, out = probe_layer
        with Emulator(str(function_dir), "app.handler", str(layer), env={"PROBE_OUT": str(out), "CUSTOM": "yes"}, function_name="orders") as emu:
            trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
            result = emu.invoke({"n": 1}, trace_header=trace)
            assert result.status == 200
            wait_for(lambda: any(r["kind"] == "invoke-done" for r in read_jsonl(out)), what="probe invoke-done")
        lines = read_jsonl(out)
        register = next(r for r in lines if r["kind"] == "register")
        assert register["status"] == 200
        assert register["body"] == {"functionName": "orders", "functionVersion": "$LATEST", "handler": "app.handler", "accountId": "012345678912"}
        env = register["env"]
        assert env["CUSTOM"] == "yes" and env["AWS_LAMBDA_FUNCTION_NAME"] == "orders" and env["AWS_LAMBDA_RUNTIME_API"] == emu.runtime_api
        for hidden in ("_HANDLER", "AWS_EXECUTION_ENV", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_XRAY_DAEMON_ADDRESS"):
            assert hidden not in env
        assert next(r for r in lines if r["kind"] == "subscribe")["status"] == 200
        bad = next(r for r in lines if r["kind"] == "bad-subscriptions")["answers"]
        for name, (status, body) in bad.items():
            assert status == 400 and body["errorType"] == "ValidationError", name
        late = next(r for r in lines if r["kind"] == "late")
        assert late["register"][0] == 403 and late["register"][1]["errorType"] == "Extension.RegistrationClosed"
        assert late["subscribe"][0] == 403
        events = [r["event"] for r in lines if r["kind"] == "event"]
        invoke = events[0]
        assert invoke["eventType"] == "INVOKE" and invoke["requestId"] == result.request_id
        assert invoke["invokedFunctionArn"].endswith(":function:orders")
        assert invoke["tracing"] == {"type": "X-Amzn-Trace-Id", "value": trace}
        assert abs(invoke["deadlineMs"] - (time.time() * 1000 + 3000)) < 10_000
        shutdown = events[-1]
        assert shutdown["eventType"] == "SHUTDOWN" and shutdown["shutdownReason"] == "spindown"
        shutdown_seen = next(r["t"] for r in lines if r["kind"] == "event" and r["event"]["eventType"] == "SHUTDOWN")
        # a deadline ahead, at most the 2 s SHUTDOWN gives (delivered late on a busy machine, it
        # has less left)
        assert 0 < shutdown["deadlineMs"] / 1000 - shutdown_seen <= 2.05
        telemetry = [item for r in lines if r["kind"] == "telemetry" for item in r["batch"]]
        by_type = {}
        for item in telemetry:
            by_type.setdefault(item["type"], []).append(item)
            assert item["time"].endswith("Z") and len(item["time"]) == 24
        # Init events happened before the subscription and were replayed.
        init_start = by_type["platform.initStart"][0]["record"]
        assert init_start["phase"] == "init" and init_start["initializationType"] == "on-demand"
        assert init_start["functionName"] == "orders" and init_start["instanceMaxMemory"] == DEFAULT_MEMORY_MB * 1024 * 1024
        assert by_type["platform.telemetrySubscription"][0]["record"] == {"name": "probe", "state": "Subscribed", "types": ["platform", "function", "extension"]}
        assert by_type["platform.initRuntimeDone"][0]["record"]["status"] == "success"
        assert by_type["platform.extension"][0]["record"] == {"name": "probe", "state": "Ready", "events": ["INVOKE", "SHUTDOWN"]}
        assert by_type["platform.initReport"][0]["record"]["metrics"]["durationMs"] > 0
        assert by_type["platform.start"][0]["record"] == {"requestId": result.request_id, "version": "$LATEST", "tracing": {"type": "X-Amzn-Trace-Id", "value": trace}}
        done = by_type["platform.runtimeDone"][0]["record"]
        assert done["requestId"] == result.request_id and done["status"] == "success"
        assert [s["name"] for s in done["spans"]] == ["responseLatency", "responseDuration"]
        assert done["metrics"]["producedBytes"] == len(result.body)
        report = by_type["platform.report"][0]["record"]
        assert report["status"] == "success" and report["metrics"]["billedDurationMs"] >= 1
        assert report["spans"][0]["name"] == "extensionOverhead"
        functions = [item["record"] for item in by_type["function"]]
        assert 'hello from the handler {"n": 1}' in functions
        assert "probe extension ready" in [item["record"] for item in by_type["extension"]]

    def test_slow_extension_delays_phase_not_caller(self, function_dir, probe_layer):
        layer, out = probe_layer
        # (an extension 3 s slow: a caller made to wait for it would wait that long, twice the
        # bound a busy machine is allowed)
        with Emulator(str(function_dir), "app.handler", str(layer), env={"PROBE_OUT": str(out), "PROBE_NEXT_DELAY": "3.0"}, timeout_s=10) as emu:
            emu.invoke({})  # init
            emu.wait_idle(30)
            started = time.monotonic()
            result = emu.invoke({})
            caller_s = time.monotonic() - started
            assert emu.wait_idle(30)
            phase_s = time.monotonic() - started
            assert caller_s < 1.5, caller_s
            assert phase_s >= 3.0, phase_s
            report = next(r["record"] for r in emu.records("platform.report") if r["record"]["requestId"] == result.request_id)
            assert report["metrics"]["durationMs"] >= 3000
            assert report["spans"][0]["durationMs"] >= 2900  # extensionOverhead

    def test_timeout_sends_shutdown_with_reason_after_telemetry(self, function_dir, probe_layer):
        layer, out = probe_layer
        with Emulator(str(function_dir), "app.handler", str(layer), env={"PROBE_OUT": str(out)}, timeout_s=1.0) as emu:
            result = emu.invoke({"sleep": 3})
            assert result.json()["errorType"] == "Sandbox.Timedout"
            emu.wait_idle(5)
            lines = read_jsonl(out)
            shutdown_at = next(r["t"] for r in lines if r["kind"] == "event" and r["event"]["eventType"] == "SHUTDOWN")
            shutdown = next(r["event"] for r in lines if r["kind"] == "event" and r["event"]["eventType"] == "SHUTDOWN")
            assert shutdown["shutdownReason"] == "timeout"
            done = [(r["t"], item["record"]) for r in lines if r["kind"] == "telemetry" for item in r["batch"] if item["type"] == "platform.runtimeDone"]
            assert done and done[0][1]["status"] == "timeout" and done[0][0] <= shutdown_at
            # The next invoke runs a fresh environment, extension included.
            assert emu.invoke({}).status == 200

    def test_shutdown_ignored_is_killed_at_deadline(self, function_dir, probe_layer):
        layer, out = probe_layer
        emu = Emulator(str(function_dir), "app.handler", str(layer), env={"PROBE_OUT": str(out), "PROBE_IGNORE_SHUTDOWN": "1"})
        emu.start()
        try:
            runtime_pid = emu.invoke({}).json()["pid"]
        finally:
            started = time.monotonic()
            emu.stop()
            took = time.monotonic() - started
        ext_pid = next(r["pid"] for r in read_jsonl(out) if r["kind"] == "register")
        assert 1.7 < took < 6.0, took  # killed at the 2 s deadline, however busy the machine
        assert not pid_alive(ext_pid) and not pid_alive(runtime_pid)

    def test_extension_dying_mid_invocation_gives_one_runtime_done(self, function_dir, probe_layer, monkeypatch):
        # GIVEN an extension that dies once it has the INVOKE, and a runtime whose /next after
        # its response is read just after the platform has given up on the phase (held here
        # until then, as a busy machine may hold it)
        from lambdawrap.devtools.emulator import api_calls, invoke_phase

        layer, out = probe_layer
        given_up = threading.Event()
        runtime_next = api_calls.ApiCalls.runtime_next
        emit_runtime_done = invoke_phase.emit_runtime_done

        def held_next(self, *args):
            current = self._state.current
            if current is not None and current.response is not None:
                assert given_up.wait(30), "the phase never failed"
            return runtime_next(self, *args)

        def failed_phase_runtime_done(state, inv, *args):
            emit_runtime_done(state, inv, *args)
            given_up.set()
            # Time for the held /next to add a runtimeDone of its own, before the reset
            give_up = time.monotonic() + 1.0
            while time.monotonic() < give_up and len([e for e in emu.records("platform.runtimeDone") if e["record"]["requestId"] == inv.request_id]) < 2:
                time.sleep(0.02)

        monkeypatch.setattr(api_calls.ApiCalls, "runtime_next", held_next)
        monkeypatch.setattr(invoke_phase, "emit_runtime_done", failed_phase_runtime_done)
        with Emulator(str(function_dir), "app.handler", str(layer), env={"PROBE_OUT": str(out), "PROBE_EXIT_ON_INVOKE": "3"}) as emu:
            # WHEN it is invoked
            result = emu.invoke({"sleep": 0.3})
            assert emu.wait_idle(10)
            # THEN the caller has the response, and the platform says once that the invocation
            # failed with the extension: one runtimeDone, then the report, then a reset
            assert result.status == 200 and result.function_error is None
            done = [r["record"] for r in emu.records("platform.runtimeDone") if r["record"]["requestId"] == result.request_id]
            assert [(d["status"], d.get("errorType")) for d in done] == [("error", "Extension.Crash")]
            report = next(r["record"] for r in emu.records("platform.report") if r["record"]["requestId"] == result.request_id)
            assert (report["status"], report["errorType"]) == ("error", "Extension.Crash")
            assert emu.sandbox.resets == ["failure"]

    def test_extension_crash_during_init(self, function_dir, tmp_path):
        layer = tmp_path / "layer"
        (layer / "extensions").mkdir(parents=True)
        crash = layer / "extensions" / "crasher"
        crash.write_text("#!/bin/sh\necho dying\nexit 3\n")
        crash.chmod(0o755)
        with Emulator(str(function_dir), "app.handler", str(layer)) as emu:
            body = emu.invoke({}).json()
            assert body["errorType"] == "Extension.Crash" and body["errorMessage"].endswith("exit status 3")
            assert "dying" in emu.log_lines("extension")
            # The runtime was never started: as RAPID, no initRuntimeDone, only the report, of
            # the init and of its run again inside the invoke
            assert emu.records("platform.initRuntimeDone") == []
            assert [r["record"]["phase"] for r in emu.records("platform.initReport")] == ["init", "invoke"]


def test_cli_serves_and_stops_cleanly(function_dir, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lambdawrap.devtools.emulator", "--function", str(function_dir), "--handler", "app.handler", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("invoke endpoint: http://127.0.0.1:%d/" % port), first
        status, _, body = post(first.split(": ", 1)[1].strip(), b'{"cli": true}')
        assert status == 200
        runtime_pid = json.loads(body)["pid"]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "Traceback" not in err
    assert "stopped" in out
    assert not pid_alive(runtime_pid)


def test_cli_busy_port_is_one_clear_line(function_dir):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "lambdawrap.devtools.emulator", "--function", str(function_dir), "--handler", "app.handler", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: cannot start the emulator")


def test_the_runtimes_log_channel_makes_one_record_of_each_logging_message(tmp_path):
    # GIVEN the log channel the managed runtimes give awslambdaric (_LAMBDA_TELEMETRY_LOG_FD)
    task = write_function(tmp_path / "task", "import logging\ndef handler(event, context):\n    logging.getLogger().warning('two\\nlines')\n    print('printed\\napart')\n    return 'ok'\n")
    with Emulator(str(task), "app.handler", telemetry_log_fd=True) as emu:
        # WHEN the handler logs a message of two lines and prints two lines
        assert emu.invoke({}).json() == "ok"
        assert emu.wait_idle(10)
        lines = [r["record"] for r in emu.records("function")]
    # THEN the logged message is one record (framed), the printed lines are two (stdout)
    assert [line for line in lines if line.endswith("two\nlines")] and "printed" in lines and "apart" in lines


def test_init_over_the_limit_is_retried_inside_the_invoke(tmp_path):
    # GIVEN a module that takes longer to import than the init limit
    task = write_function(tmp_path / "task", "import time\ntime.sleep(1.5)\ndef handler(event, context):\n    return 'ok'\n")
    with Emulator(str(task), "app.handler", init_timeout_s=1.0, timeout_s=5.0) as emu:
        # WHEN it is invoked THEN init times out, is retried in the invoke phase, and succeeds
        result = emu.invoke({})
        assert result.json() == "ok"
        done = [(r["record"]["phase"], r["record"]["status"]) for r in emu.records("platform.initRuntimeDone")]
        assert done == [("init", "timeout"), ("invoke", "success")]


@contextlib.contextmanager
def telemetry_bus(subscriber: str, accepting: threading.Event) -> Iterator[tuple]:
    """(a TelemetryBus, the batches its one subscriber's listener took): a listener on loopback
    that answers 200 while `accepting` is set, else 500; all stopped after."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from lambdawrap.devtools.emulator.telemetry import Subscription, TelemetryBus

    batches: list = []

    class Listener(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            ok = accepting.is_set()
            if ok:
                batches.append(body)
            self.send_response(200 if ok else 500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bus = TelemetryBus()
    try:
        sub = Subscription.parse({"schemaVersion": "2022-12-13", "types": ["function"], "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 25}, "destination": {"protocol": "HTTP", "URI": f"http://sandbox:{server.server_address[1]}/"}})
        bus.subscribe(subscriber, sub)
        yield bus, batches
    finally:
        bus.close_all()
        server.shutdown()
        server.server_close()


class TestTelemetryDelivery:
    def test_batching_and_logs_dropped_when_the_consumer_lags(self):
        accepting = threading.Event()
        with telemetry_bus("lagging", accepting) as (bus, batches):
            line = "x" * 1000
            # GIVEN a consumer that refuses everything WHEN far more than its backlog is emitted
            for _ in range(4000):
                bus.emit("function", "function", line)
            accepting.set()
            # THEN delivery resumes, batches respect maxItems, and the loss is reported in-stream
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not any(e["type"] == "platform.logsDropped" for b in batches for e in b):
                time.sleep(0.05)
            bus.flush(5)
            events = [e for b in batches for e in b]
            dropped = [e["record"] for e in events if e["type"] == "platform.logsDropped"]
            assert dropped and dropped[0]["droppedRecords"] > 0 and dropped[0]["droppedBytes"] > 0
            delivered = sum(1 for e in events if e["type"] == "function")
            assert delivered + sum(d["droppedRecords"] for d in dropped) == 4000
            assert bus.dropped_types() == {"function": sum(d["droppedRecords"] for d in dropped)}  # what the bus tells tests
            assert all(len(b) <= 1000 for b in batches)

    def test_a_batch_no_retry_delivered_is_told_as_dropped_in_the_stream(self):
        accepting = threading.Event()
        with telemetry_bus("failing", accepting) as (bus, batches):
            # GIVEN a listener that fails every attempt while 4,000 lines come: more than the
            # backlog holds (some dropped as lagging, told in a logsDropped that fails too), the
            # rest in batches no retry delivers
            for n in range(4000):
                bus.emit("function", "function", f"first {n} " + "x" * 1000)
            deadline = time.monotonic() + 60
            while bus.dropped_types().get("function", 0) < 4000 and time.monotonic() < deadline:
                time.sleep(0.05)
            # WHEN it answers again, and 5 more lines come
            accepting.set()
            for n in range(5):
                bus.emit("function", "function", f"second {n}")
            bus.flush(30)
            # THEN every line lost is told in the stream before them, once, and to the tests
            # (before: a failed batch vanished with a warning in the emulator's log only; then a
            # logsDropped in it was told as one record, its count lost)
            events = [e for b in batches for e in b]
            assert [e["type"] for e in events if e["type"] == "function"] == ["function"] * 5, events[:3]
            told = [e["record"]["droppedRecords"] for e in events if e["type"] == "platform.logsDropped"]
            assert sum(told) == 4000 and events[0]["type"] == "platform.logsDropped", told
            assert bus.dropped_types() == {"function": 4000}


def test_out_of_memory_kills_the_runtime(tmp_path):
    task = write_function(tmp_path / "task", "import time\ndef handler(event, context):\n    blocks = []\n    for _ in range(60):\n        blocks.append(bytearray(10 * 1024 * 1024))\n        time.sleep(0.01)\n    return len(blocks)\n")
    with Emulator(str(task), "app.handler", memory_mb=128, timeout_s=10, cpu_limit=False) as emu:  # about memory: at full speed
        result = emu.invoke({})
        body = result.json()
        assert body["errorType"] == "Runtime.OutOfMemory" and body["errorMessage"].endswith("signal: killed")
        emu.wait_idle()
        done = emu.records("platform.runtimeDone")[-1]["record"]
        assert done["status"] == "error" and done["errorType"] == "Runtime.OutOfMemory"
        assert emu.sandbox.resets == ["failure"]


@pytest.fixture
def header_echo():
    """An emulator API server whose one route answers with the request's headers."""
    from lambdawrap.devtools.emulator.api_server import ApiServer, Reply

    server = ApiServer(lambda req: Reply(200, {"headers": dict(req.headers), "body": len(req.body)}))
    server.start("header-echo")
    try:
        yield server
    finally:
        server.stop()


def test_api_server_takes_the_runtime_apis_header_size(header_echo):
    import http.client

    from lambdawrap.devtools.emulator.api_server import MAX_HEADER_BYTES

    def send(cause: str, extra: dict | None = None, body: bytes | None = b"{}"):
        conn = http.client.HTTPConnection("127.0.0.1", header_echo.port, timeout=30)
        try:
            conn.request("POST", "/runtime/invocation/x/error", body=body, headers={"Lambda-Runtime-Function-XRay-Error-Cause": cause, **(extra or {})})
            resp = conn.getresponse()
            return resp.status, resp.read(), resp.getheader("Connection")
        finally:
            conn.close()

    # A cause near awslambdaric's 1 MiB cap arrives whole, beside the other headers, though it
    # is read in 64 KiB pieces: the last of them, just the line's end, is not the head's end
    cause = "c" * (16 * 65536 - len("Lambda-Runtime-Function-XRay-Error-Cause: "))
    status, body, _ = send(cause, {"Expect": "100-continue", "Lambda-Runtime-Function-Error-Type": "RecursionError"})
    assert status == 200
    echoed = json.loads(body)
    assert echoed["headers"]["lambda-runtime-function-xray-error-cause"] == cause
    assert echoed["headers"]["lambda-runtime-function-error-type"] == "RecursionError" and echoed["body"] == 2
    # Past the Runtime API's limit the answer is its 431, and the connection is closed
    status, _, connection = send("c" * MAX_HEADER_BYTES, body=None)
    assert status == 431 and connection == "close"
    # A client that asks to close is answered and closed; the server keeps serving
    assert send("short", {"Connection": "close"})[0] == 200


def test_api_server_judges_large_bodies_by_their_size_and_refuses_short_ones(monkeypatch):
    import socket

    from lambdawrap.devtools.emulator import api_server
    from lambdawrap.devtools.emulator.api_server import ApiServer, Reply

    # Small limits, for the same rules at sizes a test can send
    monkeypatch.setattr(api_server, "MAX_READ_BYTES", 1000)
    monkeypatch.setattr(api_server, "MAX_DRAIN_BYTES", 5000)
    server = ApiServer(lambda req: Reply(200, {"kept": len(req.body), "oversize": req.oversize}))
    server.start("sizes")

    def send(head: bytes, body: bytes) -> tuple:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
            conn.sendall(head + b"\r\n" + body)
            conn.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        status_line, _, rest = answer.partition(b"\r\n")
        headers, _, reply = rest.partition(b"\r\n\r\n")
        return int(status_line.split()[1]), json.loads(reply), b"connection: close" in headers.lower()

    def post(body: bytes, length: int | None = None) -> tuple:
        return send(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n" % (len(body) if length is None else length), body)

    try:
        assert post(b"a" * 1000)[:2] == (200, {"kept": 1000, "oversize": 0})
        # Over what is kept: read through, and its size told
        assert post(b"a" * 4000)[:2] == (200, {"kept": 0, "oversize": 4000})
        # Over what is read through: its Content-Length told, unread, the connection closed
        assert post(b"a" * 100, length=9000) == (200, {"kept": 0, "oversize": 9000}, True)
        chunks = b"".join(b"%x\r\n%s\r\n" % (1500, b"c" * 1500) for _ in range(4)) + b"0\r\n\r\n"
        assert send(b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n", chunks)[0] == 413
        # A body that ends before its length is not a request (before: a short body was taken
        # as the whole, a truncated response for the caller)
        for sent, length in ((b"a" * 500, 800), (b"a" * 2000, 4000)):
            status, reply, closed = post(sent, length=length)
            assert (status, reply["errorType"], closed) == (400, "InvalidRequest", True)
    finally:
        server.stop()
