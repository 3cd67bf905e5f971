"""The companion's export rehearsal: during the pipeline's build it pays the first export's
one-time costs (the OTLP encoders' first run; for an https collector ssl, the CA bundle and the
IDNA codec the server name goes through) and sends nothing. That nothing reaches the collector
is checked end to end in test_pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, sys
from opentelemetry.sdk.resources import Resource
from lambdawrap.companion.rehearsal import rehearse_export
before = "encodings.idna" in sys.modules
size = rehearse_export(Resource({"service.name": "orders"}))
print(json.dumps({"idna_before": before, "idna_after": "encodings.idna" in sys.modules, "size": size}))
"""


def test_the_rehearsal_encodes_every_signal_without_the_idna_codec():
    # A fresh interpreter: what the rehearsal loads is not already loaded by the test run.
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    # Only a connection needs it, and only an https one (tests below).
    assert found["idna_before"] is False and found["idna_after"] is False
    assert found["size"] > 100  # a span, a log record and a metrics batch, encoded


TRANSPORT_PROBE = """
import json, os, sys
os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "orders"
os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sys.argv[1]
from lambdawrap.companion.exporting import make_exporters
from lambdawrap.companion.rehearsal import prepare_transports
from lambdawrap.shared.settings import Settings
exporters = make_exporters(Settings.from_env())
ssl_before, idna_before = "ssl" in sys.modules, "encodings.idna" in sys.modules
ready = prepare_transports(exporters)
contexts = [exporter._client._transport._context is not None for exporter in exporters]
print(json.dumps({"ssl_before": ssl_before, "ssl_after": "ssl" in sys.modules, "idna_before": idna_before, "idna_after": "encodings.idna" in sys.modules, "ready": ready, "tls_contexts": contexts}))
"""


def probe_transports(endpoint: str, **environ: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    out = subprocess.run([sys.executable, "-c", TRANSPORT_PROBE, endpoint], capture_output=True, text=True, timeout=120, check=True, env=dict(env, **environ))
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_rehearsal_readies_the_tls_of_an_https_collector_and_nothing_for_plain_http():
    # The exporters' own attributes it relies on are there in the pinned SDK, and an https
    # collector's TLS context (ssl, the CA bundle) is built in init, not in the first export.
    found = probe_transports("https://collector.example:4318")
    assert found == {"ssl_before": False, "ssl_after": True, "idna_before": False, "idna_after": True, "ready": 3, "tls_contexts": [True, True, True]}
    # A plain-HTTP collector needs neither ssl nor http.client at all.
    found = probe_transports("http://127.0.0.1:4318")
    assert found == {"ssl_before": False, "ssl_after": False, "idna_before": False, "idna_after": False, "ready": 3, "tls_contexts": [False, False, False]}
    # Through a proxy the name goes to http.client as a str, through the IDNA codec: loaded in
    # init too (no ssl for a plain-HTTP proxy).
    found = probe_transports("http://collector.example:4318", HTTP_PROXY="http://127.0.0.1:3128")
    assert found == {"ssl_before": False, "ssl_after": False, "idna_before": False, "idna_after": True, "ready": 3, "tls_contexts": [False, False, False]}


def test_the_rehearsal_leaves_the_real_meters_alone():
    from opentelemetry import metrics
    from opentelemetry.sdk.resources import Resource

    from lambdawrap.companion.rehearsal import rehearse_export

    provider_before = metrics.get_meter_provider()
    rehearse_export(Resource({}))
    assert metrics.get_meter_provider() is provider_before


def test_with_the_startup_wait_the_companion_rehearses_in_init_and_sends_only_what_happened(tmp_path):
    from conftest import write_function
    from support.stack import instrumented, metric_total

    task = write_function(tmp_path / "task", 'def handler(event, context):\n    print("handled")\n    return {"ok": True}\n')
    # The startup wait is what places the rehearsal in init (below one vCPU by default); set
    # here at a full core's size so that the test keeps its speed.
    env = {"LAMBDAWRAP_STARTUP_WAIT_MS": "500", "LAMBDAWRAP_LOG_LEVEL": "debug"}
    with instrumented(task, "app.handler", env=env) as (emu, rx):
        results = [emu.invoke({}) for _ in range(2)]
        assert all(r.status == 200 and r.function_error is None for r in results)
        rids = {r.request_id for r in results}
        rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") in rids, count=2)
        rehearsed = [line for line in emu.log_lines() if "export rehearsed in init" in line]
        assert len(rehearsed) == 1, emu.log_lines()
    # Only the function's own telemetry reached the collector: two invocations, their log
    # lines (by SHUTDOWN at the latest), one init.
    rx.wait_for_logs(lambda line: line["body"].startswith("handled"), count=2)
    assert not [s for s in rx.spans() if s["name"] == "rehearsal"]
    assert not [p for p in rx.metrics() if p["name"].startswith("rehearsal")]
    assert not [line for line in rx.logs() if line["body"] == "rehearsal"]
    assert metric_total(rx, "faas.invocations") == 2
    assert metric_total(rx, "faas.coldstarts") == 1


def test_an_init_without_the_startup_wait_does_not_rehearse(tmp_path):
    from conftest import write_function
    from support.stack import instrumented

    task = write_function(tmp_path / "task", 'def handler(event, context):\n    return {"ok": True}\n')
    with instrumented(task, "app.handler", env={"LAMBDAWRAP_STARTUP_WAIT_MS": "0", "LAMBDAWRAP_LOG_LEVEL": "debug"}) as (emu, rx):
        result = emu.invoke({})
        assert result.status == 200
        rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id)
        assert not [line for line in emu.log_lines() if "export rehearsed" in line]
