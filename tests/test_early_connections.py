"""Connections to the collector opened as the companion starts (companion/early_connections.py),
so that the first flush after a cold start finds them open: through the emulator with the real
awslambdaric and an https receiver, init alone opens one per signal and the first invocation's
export goes on them; and the endpoints they go to are the ones the pinned OTLP/HTTP exporters
read from the same environment."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from conftest import wait_for, write_function
from lambdawrap.companion.early_connections import exporter_endpoint
from lambdawrap.devtools.otlp_receiver import OtlpReceiver
from lambdawrap.devtools.otlp_receiver.certificates import make_test_pki
from support.stack import instrumented

EXPORTERS = {"traces": OTLPSpanExporter, "metrics": OTLPMetricExporter, "logs": OTLPLogExporter}
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example:4318"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example:4318/"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example/otlp//"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": ""},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:1", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example/custom/path"},
        {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://metrics.example:9000", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": ""},
    ],
)
def test_each_signal_connects_to_the_endpoint_its_exporter_sends_to(monkeypatch, env):
    for name in ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for signal, exporter_class in EXPORTERS.items():
        exporter = exporter_class()
        try:
            assert exporter_endpoint(signal, env) == exporter._endpoint, signal
        finally:
            exporter.shutdown()


HANDLER = '''
def handler(event, context):
    print("working on", context.aws_request_id)
    return {"statusCode": 200}
'''


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize("memory_mb", [128, None], ids=["init-waits-for-the-pipeline", "full-core"])
def test_init_opens_the_connections_the_first_flush_sends_on(tmp_path, pki, memory_mb):
    task = write_function(tmp_path / "task", HANDLER)
    memory = {"memory_mb": memory_mb} if memory_mb else {}
    with OtlpReceiver(tls=(pki["server.pem"], pki["server.key"])) as rx:
        env = {"OTEL_EXPORTER_OTLP_CERTIFICATE": pki["ca.pem"]}
        with instrumented(task, "app.handler", env=env, receiver=rx, timeout_s=30.0, **memory) as (emu, _):
            emu.init()
            # Before any invocation: nothing else would connect to the collector yet.
            wait_for(lambda: rx.connections_accepted == 3, timeout=60, what="a connection per signal from init")
            result = emu.invoke({})
            assert result.status == 200 and result.function_error is None
            rid = result.request_id
            rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == rid, timeout=60)
            rx.wait_for_metrics(timeout=60)
            emu.wait_idle(60)
        # Its log line, which may come after its flush, goes at the latest at SHUTDOWN.
        rx.wait_for_logs(lambda r: rid in str(r["body"]), timeout=60)
        assert rx.connections_accepted == 3  # the exports found them open
