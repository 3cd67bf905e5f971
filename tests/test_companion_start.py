"""The companion's start against a scripted Extensions API on loopback (the real process, `python
-m lambdawrap.companion`): what it does when the platform refuses part of its start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import wait_for
from lambdawrap.handler.channel import Channel
from support.extensions_api import ExtensionsApi
from support.local_servers import closed_port

SHUTDOWN = {"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": 0}


@pytest.fixture
def started(tmp_path):
    made = []

    def start(subscriptions: list, **extra_env: str) -> tuple:
        api = ExtensionsApi(subscriptions, hold_next=True)
        socket_path = str(tmp_path / "lw.sock")
        env = dict(os.environ, **extra_env, AWS_LAMBDA_RUNTIME_API=api.address, LAMBDAWRAP_SOCKET=socket_path, LAMBDAWRAP_SECRETS_PORT=str(closed_port()), AWS_LAMBDA_FUNCTION_NAME="orders", AWS_REGION="eu-west-1", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
        process = subprocess.Popen([sys.executable, "-m", "lambdawrap.companion", "lambdawrap"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        made.append((api, process))
        return api, process, socket_path

    yield start
    for api, process in made:
        api.events.put(SHUTDOWN)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        api.close()


def test_a_telemetry_subscription_the_platform_fails_twice_leaves_nothing_listening_for_the_function(started):
    # GIVEN a platform that answers the telemetry subscription 500, twice
    api, process, socket_path = started([500, 500])
    wait_for(lambda: api.next_calls >= 1, timeout=60, what="the companion to wait for the next event")
    # THEN it asked twice, then went idle with nothing listening on the channel (before: the
    # channel stayed open, took the function's records and did nothing with them: neither
    # exported nor counted) ...
    assert api.answered == [500, 500]
    # ... so the function's records, its invocations' too, are counted as dropped on its side,
    # for the next environment to report (the channel's file refuses: the companion is gone)
    channel = Channel(socket_path)
    assert channel.send({"version": 2, "type": "invocation"}) is False and channel.dropped == 1
    # ... and it still ends at SHUTDOWN
    api.events.put(SHUTDOWN)
    assert process.wait(30) == 0, process.stdout.read()


@pytest.mark.parametrize("level, warned", [("error", False), ("", True)])
def test_the_companion_s_settings_warnings_keep_to_lambdawrap_s_log_level(started, level, warned):
    # GIVEN a bad value, and LAMBDAWRAP_LOG_LEVEL=error (or not set)
    api, process, socket_path = started([], LAMBDAWRAP_FLUSH_BUDGET_MS="lots", LAMBDAWRAP_LOG_LEVEL=level)
    wait_for(lambda: api.next_calls >= 1, timeout=60, what="the companion to wait for the next event")
    api.events.put(SHUTDOWN)
    assert process.wait(30) == 0
    # THEN the companion warns of it only where lambdawrap's level lets warnings through
    # (before: the settings were read, and warned about, before the level was set)
    assert ("ignoring LAMBDAWRAP_FLUSH_BUDGET_MS='lots'" in process.stdout.read()) is warned


def test_a_telemetry_subscription_the_platform_fails_once_is_asked_again(started):
    # GIVEN a platform that answers the telemetry subscription 500 once (a moment's failure)
    api, process, socket_path = started([500])
    wait_for(lambda: api.next_calls >= 1, timeout=60, what="the companion to wait for the next event")
    # THEN it asked again and runs (before: one 500 turned telemetry off for the environment)
    assert api.answered == [500, 200]
    assert Channel(socket_path).send({"version": 2, "type": "invocation"}) is True


def test_a_next_event_the_platform_fails_leaves_as_a_shutdown_does_carrying_what_it_holds(started, tmp_path):
    import json
    import time

    # GIVEN a companion whose collector is down, told of an invocation whose record never comes
    api, process, socket_path = started([])
    api.events.put({"eventType": "INVOKE", "requestId": "8476a536-e9f4-4a5f-8b5b-1d4a1d1bf1a5", "deadlineMs": int((time.time() + 2) * 1000), "invokedFunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:orders"})
    # WHEN the platform then fails /next (a 500: the extension should exit)
    api.events.put(500)
    output = process.communicate(timeout=60)[0]
    # THEN it leaves as at a SHUTDOWN, with no traceback: what it could not export is left for
    # the next environment (before: the error ended the process, and it was lost)
    assert process.returncode == 0 and "Traceback" not in output, output
    carried = json.loads((tmp_path / "lw.sock.carryover.json").read_text())
    # ... the invocation it had no word of counted, no crash made up for it (the runtime may be
    # running still); beside it only the environment's init span, counted as not exported where
    # the pipeline had loaded (else carried whole)
    counts = {count["attributes"].get("reason", count["name"]): count["value"] for count in carried["counts"]}
    assert counts in ({"record_missing": 1}, {"record_missing": 1, "shutdown_deadline": 1}), carried
    assert [name for name, _, _ in carried["calls"]] in ([], ["init_span"]), carried


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_signal_from_a_local_supervisor_leaves_as_a_shutdown_does_carrying_what_it_holds(started, tmp_path, signal_name):
    import json
    import signal
    import time

    # GIVEN a companion whose collector is down, told of an invocation whose record never comes,
    # and waiting for its next event
    api, process, socket_path = started([])
    api.events.put({"eventType": "INVOKE", "requestId": "0b7c1a4e-5d0b-4b8e-9d55-8a3b2c1d0e9f", "deadlineMs": int((time.time() + 2) * 1000), "invokedFunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:orders"})
    assert wait_for(lambda: api.next_calls >= 2, timeout=60)
    # WHEN a local supervisor signals it (Lambda sends SHUTDOWN, then SIGKILL; a container's stop
    # sends SIGTERM, a terminal's Ctrl-C SIGINT)
    process.send_signal(getattr(signal, signal_name))
    output = process.communicate(timeout=60)[0]
    # THEN it leaves as at a SHUTDOWN, with no traceback: what it could not export (the
    # invocation, counted as dropped for its missing record) is left for the next environment
    # (before: the signal's default ended the process, and it was lost)
    assert process.returncode == 0 and "Traceback" not in output, output
    assert f"{signal_name} received" in output, output
    carried = json.loads((tmp_path / "lw.sock.carryover.json").read_text())
    assert {"name": "lambdawrap.dropped", "attributes": {"reason": "record_missing"}, "value": 1} in carried["counts"], carried

