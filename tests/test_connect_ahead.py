"""Connections to a distant collector made while the function runs (Pipeline.connect_ahead).

Collectors and load balancers close connections idle for a minute or so, so a function invoked
less often than that finds every connection closed and, before this, opened them again in the
flush after its response: the round trips and TLS handshakes billed after every invocation.
Through the emulator with the real awslambdaric, an https receiver whose new connections take
CONNECT_S to set up and that closes them after IDLE_S: once the collector has closed them, an
invocation that waits (on I/O) longer than CONNECT_S is billed far less than CONNECT_S after its
response, because its connections were made while it waited; one that runs for less than that,
or computes, makes them in the flush, as before, and an invocation that will not flush makes
none. The transport's own behaviour (a connection made ahead is the one the next request takes, a closed one is never
used) is in test_otlp_transport.py.
"""

from __future__ import annotations

import pytest

from conftest import wait_for, write_function
from lambdawrap.devtools.otlp_receiver import OtlpReceiver
from lambdawrap.devtools.otlp_receiver.certificates import make_test_pki
from support.stack import instrumented
from test_response_posted import post_response_ms

HANDLER = '''
import time


def handler(event, context):
    print("working on", context.aws_request_id)
    time.sleep(event.get("sleep_s", 0))  # a call to a database or an API, say
    computed_until = time.monotonic() + event.get("compute_s", 0)
    while time.monotonic() < computed_until:
        pass
    return {"statusCode": 200}
'''
CONNECT_S = 1.0  # each new connection's set-up, as the round trips to a distant collector
HANDLER_S = CONNECT_S + 0.5  # long enough for the connections to be made while it runs
IDLE_S = 1.5  # the collector closes a connection idle this long (one made ahead waits ~0.5 s)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize(
    "case, work, flush",
    [
        ("waits long enough", {"sleep_s": HANDLER_S}, "adaptive"),
        ("too short", {}, "adaptive"),
        ("computes", {"compute_s": HANDLER_S}, "adaptive"),
        ("no flush at its end", {"sleep_s": HANDLER_S}, "periodic,60000"),
    ],
)
def test_connections_the_collector_closed_are_made_again_while_the_function_runs(tmp_path, pki, case, work, flush):
    task = write_function(tmp_path / "task", HANDLER)
    # Computing at 128 MB: the function uses its whole share (7 % of a core) however busy the
    # machine is, so that nothing is left, as in Lambda; the others at a full core.
    memory = {"memory_mb": 128} if case == "computes" else {}
    with OtlpReceiver(tls=(pki["server.pem"], pki["server.key"]), idle_timeout_s=IDLE_S, connect_delay_s=CONNECT_S) as rx:
        env = {"OTEL_EXPORTER_OTLP_CERTIFICATE": pki["ca.pem"], "LAMBDAWRAP_FLUSH": flush}
        with instrumented(task, "app.handler", env=env, receiver=rx, timeout_s=10.0, **memory) as (emu, _):
            # The cold start: its export makes the first connections, timed. The function's
            # process connects to the companion during it, so that the next is the first whose
            # run (waiting or computing) the companion sees.
            for _ in range(2):
                warm_up = emu.invoke(work)
                if flush == "adaptive":
                    # Its export done (its connections take CONNECT_S), nothing under way.
                    rx.wait_for_spans(lambda s, rid=warm_up.request_id: s["attributes"].get("faas.invocation_id") == rid, timeout=60)
                emu.wait_idle(60)
            before = rx.connections_accepted
            billed_after = []
            for _ in range(2):
                wait_for(lambda: rx.open_connections == 0, timeout=30, what="the collector to close every connection")
                accepted = rx.connections_accepted
                result = emu.invoke(work)
                assert result.status == 200
                emu.wait_idle(60)
                billed_after.append(post_response_ms(emu, result.request_id))
                if case == "waits long enough":
                    rx.wait_for_spans(lambda s, rid=result.request_id: s["attributes"].get("faas.invocation_id") == rid, timeout=30)
                    # One each, made ahead, for the spans, the metrics and the log lines.
                    assert rx.connections_accepted - accepted == 3
            if case == "waits long enough":
                # The flush found its connections made: nowhere near a connection's set-up.
                assert max(billed_after) < CONNECT_S * 1000 / 2, billed_after
            elif case in ("too short", "computes"):
                # Made in the flush: a connection that could not be ready by the response is
                # not worth its CPU while the function runs, nor one whose CPU the function's
                # computing would have to share.
                assert min(billed_after) >= CONNECT_S * 1000 * 0.9, billed_after
            else:
                assert rx.connections_accepted == before  # no connection for a flush not made
