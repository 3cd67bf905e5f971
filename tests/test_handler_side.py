"""Handler-side pieces on their own: settings, boot, channel, the exec wrapper, fork safety."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conftest import wait_for
from support.python_versions import every_python
from support.stub_runtimes import env_named_python
from lambdawrap.handler import boot
from lambdawrap.handler.channel import Channel, encode
from lambdawrap.companion.channel_server import SocketServer
from lambdawrap.shared.settings import FlushStrategy, Settings

ROOT = Path(__file__).resolve().parent.parent
WRAPPER = ROOT / "layer" / "wrapper.sh"


@pytest.fixture
def sock_path():
    folder = tempfile.mkdtemp(prefix="lw")
    yield os.path.join(folder, "lw.sock")
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))
    os.rmdir(folder)


@pytest.fixture
def listener(sock_path):
    received = []
    server = SocketServer(sock_path, lambda record: received.append(record), lambda reason, detail: server.problems.append(reason))
    server.problems = []
    server.start()
    yield server, received
    server.stop()


class TestSettings:
    def test_a_misspelt_setting_is_named_once_with_the_one_meant(self, caplog):
        # GIVEN a setting misspelt (the fail-closed switch for secrets, one letter short), and
        # the variables lambdawrap's launchers set for its own processes
        env = {"LAMBDAWRAP_SECRETS_REQUIRE": "true", "LAMBDAWRAP_BOOT_DIR": "/opt/python/lambdawrap_boot", "LAMBDAWRAP_EXTENSION_ID": "x"}
        with caplog.at_level(logging.WARNING, logger="lambdawrap"):
            settings = Settings.from_env(env)
        # THEN one warning names it and the setting meant (before: none, the secrets optional)
        assert [r.getMessage() for r in caplog.records] == ["lambdawrap: ignoring LAMBDAWRAP_SECRETS_REQUIRE (no such setting; did you mean LAMBDAWRAP_SECRETS_REQUIRED?)"]
        assert settings.secrets_required is False
        caplog.clear()
        Settings.from_env(env, warn=False)  # the other process of the environment
        assert caplog.records == []

    def test_defaults(self):
        s = Settings.from_env({})
        assert s.flush == FlushStrategy("adaptive") and s.flush_budget_ms == 1000 and s.secrets_ttl_s == 300
        assert not s.disabled and s.metrics_temporality == "delta" and s.secrets_port == 2773

    def test_the_default_socket_is_in_the_tmpdir_of_the_environment_read(self, tmp_path):
        # The mapping given, not this process's environment
        assert Settings.from_env({"TMPDIR": str(tmp_path)}, warn=False).socket_path == str(tmp_path / "lambdawrap.sock")
        assert Settings.from_env({"TMPDIR": str(tmp_path / "missing")}, warn=False).socket_path == "/tmp/lambdawrap.sock"

    def test_values(self):
        s = Settings.from_env({"LAMBDAWRAP_FLUSH": "periodic,250", "LAMBDAWRAP_DISABLED": "TRUE", "LAMBDAWRAP_SECRETS_TTL": "86400", "OTEL_SERVICE_NAME": "svc", "AWS_LAMBDA_FUNCTION_NAME": "fn"})
        assert s.flush == FlushStrategy("periodic", 250) and s.disabled and s.secrets_ttl_s == 86400 and s.service_name == "svc"

    @pytest.mark.parametrize(
        "env, ttl",
        [
            # A configuration made for AWS's Parameters and Secrets extension: the smaller TTL set
            ({"SECRETS_MANAGER_TTL": "60"}, 60),
            ({"SECRETS_MANAGER_TTL": "120", "SSM_PARAMETER_STORE_TTL": "30"}, 30),
            ({"PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED": "true", "SECRETS_MANAGER_TTL": "", "PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE": "1000"}, 300),
            # No cache there is a short one here, not a call to AWS every second: it refreshes
            # in the background, that extension on demand
            ({"SSM_PARAMETER_STORE_TTL": "0"}, 5),
            ({"SECRETS_MANAGER_TTL": "2"}, 5),
            ({"PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED": "FALSE", "SECRETS_MANAGER_TTL": "60"}, 5),
            ({"PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE": "0"}, 5),
            # lambdawrap's own setting wins
            ({"LAMBDAWRAP_SECRETS_TTL": "600", "SECRETS_MANAGER_TTL": "60", "PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED": "false"}, 600),
            ({"LAMBDAWRAP_SECRETS_TTL": "1", "SECRETS_MANAGER_TTL": "60"}, 1),
        ],
    )
    def test_the_aws_secrets_extensions_ttls_are_kept(self, caplog, env, ttl):
        # (before: ignored, so a function moved from that extension with a 60 s TTL got 300 s)
        with caplog.at_level(logging.WARNING, logger="lambdawrap"):
            assert Settings.from_env(env).secrets_ttl_s == ttl
        assert not caplog.records

    def test_a_bad_secrets_ttl_falls_back_to_the_aws_extensions(self, caplog):
        with caplog.at_level(logging.WARNING, logger="lambdawrap"):
            assert Settings.from_env({"LAMBDAWRAP_SECRETS_TTL": "forever", "SECRETS_MANAGER_TTL": "60"}).secrets_ttl_s == 60
        assert [r.getMessage() for r in caplog.records] == ["lambdawrap: ignoring LAMBDAWRAP_SECRETS_TTL='forever' (expected a number); using the default 60.0"]

    @pytest.mark.parametrize("value", ["otlp", " OTLP", ""])
    def test_otlp_as_the_choice_of_exporter_is_taken_without_a_word(self, caplog, value):
        with caplog.at_level(logging.WARNING, logger="lambdawrap"):
            s = Settings.from_env({"OTEL_TRACES_EXPORTER": value, "OTEL_METRICS_EXPORTER": value, "OTEL_LOGS_EXPORTER": value})
        assert not caplog.records and s.exported_signals == ("traces", "metrics", "logs")

    @pytest.mark.parametrize("exporter, protocol, chosen", [("otlp_proto_grpc", "", "grpc"), ("otlp_proto_http", "grpc", "http/protobuf"), (" OTLP_PROTO_GRPC", "http/protobuf", "grpc")])
    def test_the_sdks_names_of_an_otlp_exporter_choose_its_protocol_without_a_word(self, caplog, exporter, protocol, chosen):
        # The SDK's entry points by those names are its gRPC and HTTP exporters, whatever
        # OTEL_EXPORTER_OTLP_PROTOCOL says (before: warned of as bad, and exported over the
        # protocol's default)
        with caplog.at_level(logging.WARNING, logger="lambdawrap"):
            s = Settings.from_env({"OTEL_TRACES_EXPORTER": exporter, "OTEL_LOGS_EXPORTER": exporter, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol} if protocol else {"OTEL_TRACES_EXPORTER": exporter, "OTEL_LOGS_EXPORTER": exporter})
        assert not caplog.records and s.exported_signals == ("traces", "metrics", "logs")
        assert (s.protocol("traces"), s.protocol("logs"), s.protocol("metrics")) == (chosen, chosen, protocol or "http/protobuf")

    def test_none_as_the_choice_of_exporter_leaves_metrics_and_logs_out_without_a_word(self, caplog):
        with caplog.at_level(logging.WARNING, logger="lambdawrap"):
            s = Settings.from_env({"OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": " NONE "})
        assert not caplog.records and s.exported_signals == ("traces",)

    @pytest.mark.parametrize("value, disabled", [("true", True), (" TRUE", True), ("True", True), ("false", False), ("FALSE", False), ("", False)])
    def test_otel_sdk_disabled_reads_as_the_opentelemetry_sdks_do(self, caplog, value, disabled):
        with caplog.at_level(logging.WARNING, logger="lambdawrap"):
            assert Settings.from_env({"OTEL_SDK_DISABLED": value}).sdk_disabled is disabled
        assert not caplog.records

    @pytest.mark.parametrize(
        "name, value, expected",
        [
            ("LAMBDAWRAP_BUFFER_MAX_SPANS", "0", "expected a whole number from 1 to 1000000"),  # before: 1e+06
            ("LAMBDAWRAP_PROACTIVE_INIT_MS", "-5", "expected a whole number from 0 to 3600000"),
            ("LAMBDAWRAP_SECRETS_TTL", "-1", "expected a number from 0 to 31536000"),
            ("OTEL_TRACES_SAMPLER_ARG", "2", "expected a number from 0 to 1"),
        ],
    )
    def test_a_range_is_written_in_whole_numbers(self, caplog, name, value, expected):
        with caplog.at_level(logging.WARNING, logger="lambdawrap"):
            Settings.from_env({name: value, "OTEL_TRACES_SAMPLER": "traceidratio"})
        (warning,) = [r.getMessage() for r in caplog.records]
        assert f"ignoring {name}={value!r} ({expected});" in warning, warning

    def test_a_socket_in_a_folder_that_is_a_file_is_a_bad_value(self, caplog, tmp_path):
        # GIVEN a socket path whose folder is a file this process may write to and search (the
        # companion's launcher, which asks for a folder, ignores it: the two must agree)
        folder = tmp_path / "a-file"
        folder.write_text("")
        folder.chmod(0o755)
        with caplog.at_level(logging.WARNING, logger="lambdawrap"):
            s = Settings.from_env({"LAMBDAWRAP_SOCKET": f"{folder}/lw.sock"})
        (warning,) = [r.getMessage() for r in caplog.records]
        assert "LAMBDAWRAP_SOCKET" in warning and s.socket_path == Settings.from_env({}).socket_path

    @pytest.mark.parametrize("name, field", [("LAMBDAWRAP_INSTRUMENT", "instrument"), ("LAMBDAWRAP_PROPAGATE_AWS", "propagate_aws")])
    def test_none_written_twice_still_chooses_nothing(self, caplog, name, field):
        # GIVEN `none` repeated (before: no name it knew, so a bad value, and the default, every
        # library and every payload-changing carrier, was used: the opposite of what was meant)
        with caplog.at_level(logging.WARNING, logger="lambdawrap"):
            s = Settings.from_env({name: "NONE, none"})
        assert getattr(s, field) == () and not caplog.records

    def test_none_among_the_libraries_to_instrument_is_said_to_stand_alone(self, caplog):
        # GIVEN `none` written in a list, as OTEL_PROPAGATORS allows it
        with caplog.at_level(logging.WARNING, logger="lambdawrap"):
            s = Settings.from_env({"LAMBDAWRAP_INSTRUMENT": "none,http"})
        # THEN the names are kept, and the one warning says `none` stands alone (before: it
        # named `none` as unknown while listing it as a choice)
        (warning,) = [r.getMessage() for r in caplog.records]
        assert s.instrument == ("requests", "urllib3", "urllib", "httpx", "aiohttp")
        assert "entries none (expected none alone, or names out of aws-sdk, http," in warning, warning

    @pytest.mark.parametrize(
        "name, value, default_text",
        [
            ("LAMBDAWRAP_FLUSH", "sometimes", "adaptive"),
            ("LAMBDAWRAP_FLUSH", "periodic,-5", "adaptive"),
            ("LAMBDAWRAP_FLUSH_BUDGET_MS", "lots", "1000"),
            ("LAMBDAWRAP_DISABLED", "maybe", "false"),
            # OpenTelemetry's booleans: only "true" is true, any other value false and warned of.
            ("OTEL_SDK_DISABLED", "1", "false"),
            ("OTEL_SDK_DISABLED", "yes", "false"),
            ("LAMBDAWRAP_SECRETS_TTL", "-1", "300.0"),
            ("SECRETS_MANAGER_TTL", "3600", "300"),  # the AWS extension's range: 0-300 s
            ("PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED", "maybe", "true"),
            ("PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE", "-1", "1000"),
            ("LAMBDAWRAP_BUFFER_MAX_SPANS", "0", "10000"),
            # Numbers in ASCII digits, as the launchers and the URLs of every export read them
            # (before: int() and float() took these without a word)
            ("LAMBDAWRAP_SECRETS_PORT", "２７７４", "2773"),
            ("LAMBDAWRAP_BUFFER_MAX_SPANS", "1_0", "10000"),
            ("LAMBDAWRAP_FLUSH_BUDGET_MS", "٣", "1000"),
            ("LAMBDAWRAP_SECRETS_TTL", "３00", "300.0"),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "weekly", "delta"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318", "http://localhost:4318"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://[::1", "http://localhost:4318"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:0", "http://localhost:4318"),
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "ftp://collector/v1/logs", "from OTEL_EXPORTER_OTLP_ENDPOINT"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "-1", "10"),
            # Milliseconds, as the specification has them: the Python exporters read seconds
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10000", "10"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "inf", "from OTEL_EXPORTER_OTLP_TIMEOUT"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli", "none"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem", "(the system's CA certificates)"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/", "(none)"),
            ("OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY", "/nonexistent/client.key", "from OTEL_EXPORTER_OTLP_CLIENT_KEY"),
            # The SDK's choice of exporter: OTLP here, or none for metrics and logs
            ("OTEL_LOGS_EXPORTER", "console", "otlp"),
            ("OTEL_TRACES_EXPORTER", "none", "otlp"),
            ("OTEL_TRACES_EXPORTER", "console", "otlp"),
            ("OTEL_METRICS_EXPORTER", "otlp,prometheus", "otlp"),
            # The SDK's span limits: "unset" is no spelling of the SDK's (a blank value is).
            ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "unset", "128"),
            ("OTEL_SPAN_EVENT_COUNT_LIMIT", "-1", "128"),
            ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "ten", "no limit"),
            ("OTEL_ATTRIBUTE_COUNT_LIMIT", "lots", "128"),  # each count's default (before: "no limit")
            # The SDK's log record limits: refused as it made the companion's first log record
            ("OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", "lots", "128"),
            ("OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT", "-1", "no limit"),
        ],
    )
    def test_bad_value_warns_once_with_name_and_default(self, caplog, name, value, default_text):
        with caplog.at_level(logging.WARNING, logger="lambdawrap"):
            s = Settings.from_env({name: value})
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert name in warnings[0] and repr(value) in warnings[0] and f"default {default_text}" in warnings[0]
        # The exporters' own variables are corrected in the companion's environment instead.
        assert s._replace(sdk_corrections=()) == Settings.from_env({})
        assert s.sdk_corrections in ((), ((name, None),))


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:key@collector.example:4318/otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://collector.example/v1/traces?x=1#f"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://[::1]:4318", "OTEL_EXPORTER_OTLP_TIMEOUT": "2.5", "OTEL_EXPORTER_OTLP_COMPRESSION": "GZIP"},
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"},  # gRPC takes host:port
        # ... and only gRPC reads the general endpoint here: the HTTP signal has its own
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:4318/v1/metrics"},
        {"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20abc, x-team = shop,a=b=c"},
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_COMPRESSION": "none", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "GZIP"},
        # deflate is the HTTP signals' alone to read here
        {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "gzip", "OTEL_EXPORTER_OTLP_COMPRESSION": "deflate"},
        # an _INSECURE read as written, or not read at all
        {"OTEL_EXPORTER_OTLP_INSECURE": "1"},  # OTLP/HTTP reads no _INSECURE: the scheme says
        # ... nor does a gRPC signal with its own
        {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "True", "OTEL_EXPORTER_OTLP_INSECURE": "1"},
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_INSECURE": "TRUE", "OTEL_EXPORTER_OTLP_LOGS_INSECURE": "false"},
    ],
)
def test_good_otlp_exporter_values_are_left_alone(env, caplog):
    with caplog.at_level(logging.WARNING, logger="lambdawrap"):
        assert Settings.from_env(env).sdk_corrections == ()
    assert not caplog.records


@pytest.mark.parametrize(
    "env, kept",
    [
        # Latin-1 goes over OTLP/HTTP; only printable ASCII over gRPC, whose every call fails
        # on any other character ("Illegal header value")
        ({"OTEL_EXPORTER_OTLP_HEADERS": "x-team=caf%C3%A9"}, None),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_HEADERS": "x-team=caf%C3%A9,a=b"}, "a=b"),
        # ... the general variable is read over gRPC only by a signal without its own
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "a=b", "OTEL_EXPORTER_OTLP_HEADERS": "x-team=caf%C3%A9"}, None),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-team=caf%C3%A9,a=b"}, "a=b"),
    ],
)
def test_a_header_value_is_held_to_what_its_protocol_can_send(env, kept):
    corrections = dict(Settings.from_env(env).sdk_corrections)
    assert corrections == ({} if kept is None else {next(k for k in env if k.endswith("HEADERS") and "caf" in env[k]): kept}), corrections


def _traces_exporter_as_corrected(env: dict, monkeypatch, caplog) -> tuple:
    """(endpoint, headers, warnings) of the SDK's OTLP/HTTP span exporter made from `env` as the
    companion corrects its own environment (lifecycle)."""
    import opentelemetry.exporter.otlp.proto.http.trace_exporter as http_traces

    for name in [n for n in os.environ if n.startswith("OTEL_EXPORTER_OTLP")]:
        monkeypatch.delenv(name)
    with caplog.at_level(logging.WARNING, logger="lambdawrap"):
        settings = Settings.from_env(env)
    warnings = [r.getMessage() for r in caplog.records]
    corrected = dict(env)
    for variable, value in settings.sdk_corrections:
        if value is None:
            corrected.pop(variable, None)
        else:
            corrected[variable] = value
    for name, value in corrected.items():
        monkeypatch.setenv(name, value)
    exporter = http_traces.OTLPSpanExporter()
    return exporter._endpoint, {k: v for k, v in exporter._client._headers.items() if k.startswith("x-")}, warnings


GENERAL = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://vendor-a.example", "OTEL_EXPORTER_OTLP_HEADERS": "x-vendor-a-key=SECRET_A"}


@pytest.mark.parametrize(
    "env, named",
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
        ({"OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": " grpc "}, "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL=grpc"),
        ({"OTEL_TRACES_EXPORTER": "otlp_proto_grpc"}, "OTEL_TRACES_EXPORTER=otlp_proto_grpc"),
        # a signal's own protocol that is a bad value: the general one said grpc
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
    ],
)
def test_grpc_asked_of_a_layer_without_it_names_what_asked_and_is_not_asked_again(monkeypatch, caplog, env, named):
    from lambdawrap.companion import protocols

    # GIVEN a layer without the OTLP/gRPC exporter, and gRPC asked for as `env` says
    monkeypatch.setattr(protocols, "find_spec", lambda name: None)
    for name in [n for n in os.environ if n.startswith(("OTEL_EXPORTER_OTLP", "OTEL_TRACES", "OTEL_LOGS", "OTEL_METRICS"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # WHEN the companion reads its settings, falling back
    with caplog.at_level(logging.WARNING, logger="lambdawrap"):
        protocols.fall_back_from_grpc(Settings.from_env(warn=False))
    # THEN the warning names the variable that asked, and read again the settings ask no gRPC
    # (before: the signal's own variable was named whatever it held, and the SDK's exporter
    # name was not set aside)
    assert [r.getMessage() for r in caplog.records] == [f"lambdawrap: ignoring {named} (this layer has no OTLP/gRPC exporter: build the grpc variant); using the default http/protobuf"]
    assert {Settings.from_env(warn=False).protocol(signal) for signal in ("traces", "metrics", "logs")} == {"http/protobuf"}


def test_a_general_endpoint_a_signal_falls_back_to_from_its_own_refused_one_is_checked_too(monkeypatch, caplog):
    # GIVEN every signal with an endpoint of its own, the traces' written without its scheme,
    # and the general one written so too
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "collector.example.com:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector.example.com:4318/v1/traces",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "https://collector.example.com/v1/metrics",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "https://collector.example.com/v1/logs",
    }
    endpoint, _, warnings = _traces_exporter_as_corrected(env, monkeypatch, caplog)
    # THEN the traces, which fall back to the general endpoint, find it checked and ignored too
    # (before: it was not checked, no signal reading it at first, and every traces export went
    # to "collector.example.com:4318/v1/traces", no URL)
    assert endpoint == "http://localhost:4318/v1/traces", (endpoint, warnings)
    assert [w for w in warnings if "ignoring OTEL_EXPORTER_OTLP_ENDPOINT=" in w] and [w for w in warnings if "ignoring OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=" in w], warnings


def test_a_signal_s_own_headers_all_refused_send_none_not_the_general_ones(monkeypatch, caplog):
    # GIVEN a general endpoint and its credentials, and the traces' own endpoint, whose headers
    # are written as "name: value" (refused, every one)
    env = {**GENERAL, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://vendor-b.example/v1/traces", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-vendor-b-key: SECRET_B"}
    endpoint, headers, warnings = _traces_exporter_as_corrected(env, monkeypatch, caplog)
    # THEN the traces go to their endpoint without the general credentials (before: the
    # variable was unset, and the exporter sent vendor A's key to vendor B)
    assert (endpoint, headers) == ("https://vendor-b.example/v1/traces", {})
    (warned,) = [w for w in warnings if "TRACES_HEADERS" in w]
    assert warned.endswith("; none is sent") and "SECRET" not in warned, warnings


@pytest.mark.parametrize("general", ["https://collector.example/otlp?api-key=s3cr3t", "https://collector.example:4318#part"])
def test_a_general_endpoint_with_a_query_or_fragment_is_named_and_a_signal_s_own_may_have_one(monkeypatch, caplog, general):
    # GIVEN a general endpoint with a query (a vendor's key) or a fragment, which the
    # exporters append /v1/<signal> after, and the traces' own endpoint with a query
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": general, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://collector.example:4318/v1/traces?api-key=s3cr3t#part"}
    endpoint, _, warnings = _traces_exporter_as_corrected(env, monkeypatch, caplog)
    # THEN the traces' own is used as written (before: one with a fragment was refused as
    # "the port must be a number") ...
    assert endpoint == env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"], (endpoint, warnings)
    # ... and the general one is named once, why, its key not shown (before: it passed, and
    # every export of metrics and logs went to "/otlp?api-key=s3cr3t/v1/metrics")
    (warning,) = warnings
    assert "ignoring OTEL_EXPORTER_OTLP_ENDPOINT=" in warning and "a query or fragment" in warning and "s3cr3t" not in warning, warning
    assert Settings.from_env(env, warn=False).sdk_corrections == (("OTEL_EXPORTER_OTLP_ENDPOINT", None),)


@pytest.mark.parametrize("general", ["https://collector.example:4318/v1/traces", "https://collector.example/otlp/v1/logs/"])
def test_a_general_endpoint_ending_in_a_signal_s_path_is_named(monkeypatch, caplog, general):
    # GIVEN a signal's own URL given as the general endpoint, which the exporters append
    # /v1/<signal> to
    endpoint, _, warnings = _traces_exporter_as_corrected({"OTEL_EXPORTER_OTLP_ENDPOINT": general}, monkeypatch, caplog)
    # THEN it is named once, with why and the default (before: every export of every signal
    # went to ".../v1/traces/v1/traces", a 404 each time, and nothing said which variable)
    (warning,) = warnings
    assert "ignoring OTEL_EXPORTER_OTLP_ENDPOINT=" in warning and "a signal's path" in warning and "default http://localhost:4318" in warning, warning
    assert endpoint == "http://localhost:4318/v1/traces"


@pytest.mark.parametrize("general", ["https://collector.example/apiv1/traces", "https://collector.example/v1/traces-gateway"])
def test_a_general_endpoint_whose_path_only_looks_like_a_signal_s_is_kept(monkeypatch, caplog, general):
    endpoint, _, warnings = _traces_exporter_as_corrected({"OTEL_EXPORTER_OTLP_ENDPOINT": general}, monkeypatch, caplog)
    assert (endpoint, warnings) == (general + "/v1/traces", [])


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict:
    """A CA, client certificates and keys in the forms users hand over."""
    from lambdawrap.devtools.otlp_receiver.certificates import make_test_pki

    folder = tmp_path_factory.mktemp("tls")
    pki = make_test_pki(folder)
    x509 = folder / "x509.pem"  # the label OpenSSL and gRPC accept too
    x509.write_text(open(pki["client.pem"]).read().replace("BEGIN CERTIFICATE", "BEGIN X509 CERTIFICATE").replace("END CERTIFICATE", "END X509 CERTIFICATE"))
    combined = folder / "combined.pem"
    combined.write_text(open(pki["client.pem"]).read() + open(pki["client.key"]).read())
    encrypted = folder / "encrypted.key"
    subprocess.run(["openssl", "pkcs8", "-topk8", "-in", pki["client.key"], "-out", str(encrypted), "-passout", "pass:p4ss"], check=True, capture_output=True, timeout=60)
    combined_server = folder / "combined-server.pem"
    combined_server.write_text(open(pki["server.pem"]).read() + open(pki["server.key"]).read())
    combined_encrypted = folder / "combined-encrypted.pem"
    combined_encrypted.write_text(open(pki["client.pem"]).read() + encrypted.read_text())
    files = {"x509.pem": x509, "combined.pem": combined, "encrypted.key": encrypted, "combined-server.pem": combined_server, "combined-encrypted.pem": combined_encrypted}
    return {**pki, **{name: str(path) for name, path in files.items()}}


SIGNALS = ("TRACES", "METRICS", "LOGS")


def _client_pairs(env: dict) -> dict:
    """{signal: (client certificate, client key)} each signal's exporter reads from `env`: over
    gRPC a pair only where its own CERTIFICATE is set, else the general one's where that is set
    (opentelemetry-exporter-otlp-proto-grpc); over OTLP/HTTP each of the two, its own or the
    general one."""
    def get(name: str):
        return env.get(f"OTEL_EXPORTER_OTLP_{name}")

    pairs = {}
    for signal in SIGNALS:
        if (get(f"{signal}_PROTOCOL") or get("PROTOCOL")) == "grpc":
            prefix = f"{signal}_" if get(f"{signal}_CERTIFICATE") else "" if get("CERTIFICATE") else None
            pairs[signal] = (None, None) if prefix is None else (get(f"{prefix}CLIENT_CERTIFICATE"), get(f"{prefix}CLIENT_KEY"))
        else:
            pairs[signal] = (get(f"{signal}_CLIENT_CERTIFICATE") or get("CLIENT_CERTIFICATE"), get(f"{signal}_CLIENT_KEY") or get("CLIENT_KEY"))
    return pairs


@pytest.mark.parametrize(
    "env, pairs, warned",
    [
        # a certificate under the X509 label is good; over gRPC its key goes with it
        ({"PROTOCOL": "grpc", "CERTIFICATE": "ca.pem", "CLIENT_CERTIFICATE": "x509.pem", "CLIENT_KEY": "client.key"}, ("x509.pem", "client.key"), {}),
        ({"CERTIFICATE": "x509.pem"}, (None, None), {}),
        # over OTLP/HTTP a certificate's file may hold its key
        ({"CLIENT_CERTIFICATE": "combined.pem"}, ("combined.pem", None), {}),
        # over gRPC the key is read from CLIENT_KEY alone, and half a pair aborted the companion
        ({"PROTOCOL": "grpc", "CERTIFICATE": "ca.pem", "CLIENT_CERTIFICATE": "client.pem"}, (None, None), {"CLIENT_CERTIFICATE": "goes with OTEL_EXPORTER_OTLP_CLIENT_KEY"}),
        ({"PROTOCOL": "grpc", "CERTIFICATE": "ca.pem", "CLIENT_KEY": "client.key"}, (None, None), {"CLIENT_KEY": "goes with OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"}),
        # ... though a certificate's file that holds its key is given to gRPC as the key too,
        # unless that key is encrypted
        ({"PROTOCOL": "grpc", "CERTIFICATE": "ca.pem", "CLIENT_CERTIFICATE": "combined.pem"}, ("combined.pem", "combined.pem"), {}),
        ({"PROTOCOL": "grpc", "CERTIFICATE": "ca.pem", "CLIENT_CERTIFICATE": "combined-encrypted.pem"}, (None, None), {"CLIENT_CERTIFICATE": "goes with"}),
        # gRPC reads no pair where the prefix's CERTIFICATE is not set: the OTLP/HTTP signals
        # keep theirs
        ({"TRACES_PROTOCOL": "grpc", "CLIENT_CERTIFICATE": "combined.pem"}, {"TRACES": (None, None), "METRICS": ("combined.pem", None), "LOGS": ("combined.pem", None)}, {}),
        # a gRPC signal reading the general pair is given its own: the general variables stay
        # the OTLP/HTTP signals', one of which has a certificate of its own
        (
            {"METRICS_PROTOCOL": "grpc", "CERTIFICATE": "ca.pem", "CLIENT_CERTIFICATE": "combined.pem", "TRACES_CLIENT_CERTIFICATE": "combined-server.pem"},
            {"TRACES": ("combined-server.pem", None), "METRICS": ("combined.pem", "combined.pem"), "LOGS": ("combined.pem", None)},
            {},
        ),
        # one of the pair refused takes the other with it over gRPC
        ({"PROTOCOL": "grpc", "CERTIFICATE": "ca.pem", "CLIENT_CERTIFICATE": "client.key", "CLIENT_KEY": "client.key"}, (None, None), {"CLIENT_CERTIFICATE": "holds no PEM certificate", "CLIENT_KEY": "goes with"}),
        # an encrypted key: the exporters pass no password
        ({"CLIENT_CERTIFICATE": "client.pem", "CLIENT_KEY": "encrypted.key"}, ("client.pem", None), {"CLIENT_KEY": "an encrypted key"}),
    ],
)
def test_certificate_and_key_files_are_held_to_what_each_protocol_reads(tls_files, caplog, env, pairs, warned):
    # GIVEN TLS files for the collector, as `env` names them
    values = {f"OTEL_EXPORTER_OTLP_{name}": tls_files.get(file, file) for name, file in env.items()}
    # WHEN the settings are read, and their corrections made
    with caplog.at_level(logging.WARNING, logger="lambdawrap"):
        settings = Settings.from_env(values)
    corrected = dict(values)
    for variable, value in settings.sdk_corrections:
        corrected.pop(variable, None) if value is None else corrected.__setitem__(variable, value)
    # THEN each signal's exporter reads a whole client pair or none, of files it can use
    pairs = pairs if isinstance(pairs, dict) else dict.fromkeys(SIGNALS, pairs)
    expected = {signal: tuple(tls_files.get(file) if file else None for file in pair) for signal, pair in pairs.items()}
    assert _client_pairs(corrected) == expected, settings.sdk_corrections
    # ... and what it cannot use is named once, with why
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == len(warned), warnings
    for name, why in warned.items():
        assert [w for w in warnings if f"OTEL_EXPORTER_OTLP_{name}=" in w and why in w], (name, warnings)


def test_an_endpoint_whose_host_has_an_empty_label_is_named_and_the_default_used(monkeypatch, caplog):
    # GIVEN the traces' own endpoint with a doubled dot in its host (a trailing dot, a fully
    # qualified name, is good)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.internal.:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector..internal:4318/v1/traces"}
    endpoint, _, warnings = _traces_exporter_as_corrected(env, monkeypatch, caplog)
    # THEN it is named once, and the traces go to the general endpoint (before: it passed, and
    # every traces export failed at once with "label empty or too long", unnamed)
    assert endpoint == "http://collector.internal.:4318/v1/traces", (endpoint, warnings)
    (warning,) = warnings
    assert "ignoring OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=" in warning and "an empty label" in warning, warning


@pytest.mark.parametrize("endpoint, why", [
    ("http://collector :4318/v1/traces", "a blank or control character in the host"),
    ("http://collector\x01.internal:4318/v1/traces", "a blank or control character in the host"),
    ("http://collector\u00a0:4318/v1/traces", "a blank or control character in the host"),
    ("http://collector\u3000.internal:4318/v1/traces", "a blank or control character in the host"),
    ("http://127.0.0.1:\u0664\u0663\u0661\u0668/v1/traces", "the port must be a number"),
    ("http://[::1]:\u0664\u0663\u0661\u0668/v1/traces", "the port must be a number"),
])
def test_an_endpoint_no_export_could_reach_is_named_and_the_default_used(monkeypatch, caplog, endpoint, why):
    # GIVEN the traces' own endpoint with a blank or a control character in its host, or its
    # port in non-ASCII digits
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.internal:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint}
    used, _, warnings = _traces_exporter_as_corrected(env, monkeypatch, caplog)
    # THEN it is named once, and the traces go to the general endpoint (before: it passed, and
    # every traces export failed, a lookup refused or a port the URL parser could not read)
    assert used == "http://collector.internal:4318/v1/traces", (used, warnings)
    (warning,) = warnings
    assert "ignoring OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=" in warning and why in warning, warning


@pytest.mark.parametrize("endpoint", [
    "http://local\thost:4318/v1/traces",  # the URL parser drops a tab or a line break
    "http://local\u00adhost:4318/v1/traces",  # the IDNA codec drops a soft hyphen
    "http://b\u00fccher.example:4318/v1/traces",
    "http://[fe80::1%25eth0]:4318/v1/traces",
])
def test_an_endpoint_an_export_reaches_is_taken_as_it_is(monkeypatch, caplog, endpoint):
    # GIVEN the traces' own endpoint written oddly, in ways the export path reads all the same
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.internal:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint}
    used, _, warnings = _traces_exporter_as_corrected(env, monkeypatch, caplog)
    # THEN it is used, unwarned
    assert used == endpoint and warnings == [], (used, warnings)


def test_a_signal_s_own_endpoint_ignored_takes_the_general_headers_not_its_own(monkeypatch, caplog):
    # GIVEN the traces' own endpoint written without its scheme (ignored, the general one used),
    # with credentials of its own
    env = {**GENERAL, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "vendor-b.example:443/v1/traces", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-vendor-b-key=SECRET_B"}
    endpoint, headers, warnings = _traces_exporter_as_corrected(env, monkeypatch, caplog)
    # THEN the traces go to the general endpoint with its own credentials, not vendor B's
    # (before: vendor B's key went to vendor A), and both are warned about
    assert (endpoint, headers) == ("https://vendor-a.example/v1/traces", {"x-vendor-a-key": "SECRET_A"})
    assert any("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" in w for w in warnings) and any("ignoring OTEL_EXPORTER_OTLP_TRACES_HEADERS too" in w for w in warnings), warnings
    assert not [w for w in warnings if "SECRET" in w], warnings


@pytest.mark.parametrize(
    "name",
    ["OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_HEADERS", "OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE"],
)
@pytest.mark.parametrize("value", ["", "  "])
@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_an_exporter_variable_of_blanks_only_is_unset_without_a_word(caplog, name, value, protocol):
    # The specification's empty value is unset; the exporters take it as a value (over gRPC an
    # empty compression or timeout fails the exporter as it is made).
    with caplog.at_level(logging.WARNING, logger="lambdawrap"):
        s = Settings.from_env({name: value, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol})
    assert s.sdk_corrections == ((name, None),)
    assert not caplog.records


@pytest.mark.parametrize(
    "env, name, default_text",
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_COMPRESSION": "deflate"}, "OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
        ({"OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_COMPRESSION": "deflate"}, "OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
        ({"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "deflate"}, "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "from OTEL_EXPORTER_OTLP_COMPRESSION"),
    ],
)
def test_deflate_read_over_grpc_warns_once_with_name_and_default(caplog, env, name, default_text):
    with caplog.at_level(logging.WARNING, logger="lambdawrap"):
        s = Settings.from_env(env)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert f"ignoring {name}='deflate'" in warning and "over gRPC" in warning and f"default {default_text}" in warning, warning
    assert s.sdk_corrections == ((name, None),)


def test_bad_resource_attributes_are_named_once_and_left_out_of_the_sdks_reading(caplog):
    with caplog.at_level(logging.WARNING, logger="lambdawrap"):
        s = Settings.from_env({"OTEL_RESOURCE_ATTRIBUTES": "a=b,oops,=x, c = d%20e ", "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "*"})
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "'oops'" in warning and "'=x'" in warning and "OTEL_RESOURCE_ATTRIBUTES" in warning, warning
    assert s.resource_attributes == (("a", "b"), ("c", "d e"))
    assert s.sdk_corrections == (("OTEL_RESOURCE_ATTRIBUTES", "a=b, c = d%20e "), ("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", None))
    # only bad ones: the SDK reads nothing
    assert Settings.from_env({"OTEL_RESOURCE_ATTRIBUTES": "oops"}, warn=False).sdk_corrections == (("OTEL_RESOURCE_ATTRIBUTES", None),)


@pytest.mark.parametrize(
    "value",
    [
        "https://user:s3cr3t@collector.example:0/otlp",
        " https://s3cr3t@collector.example:4318 ",
        # Without its scheme (before: shown whole) ...
        "user:s3cr3t@collector.example:4318",
        # ... and with a "/" in the password, which ended the part searched for "@" (before: the
        # password shown)
        "https://user:s3cr3t/x@collector.example",
        # ... and a key in its query (before: shown)
        "https://collector.example:0/otlp?api-key=s3cr3t",
    ],
)
def test_an_endpoint_warned_about_is_shown_without_its_credentials(caplog, value):
    with caplog.at_level(logging.WARNING, logger="lambdawrap"):
        Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": value})
    (warning,) = [r.getMessage() for r in caplog.records]
    shown = "***@collector.example" if "@" in value else "https://collector.example:0/otlp"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in warning and shown in warning and "s3cr3t" not in warning, warning


def test_a_header_entry_refused_is_named_never_shown(caplog):
    # Without "=", an entry may be "name: value", its value a credential.
    with caplog.at_level(logging.WARNING, logger="lambdawrap"):
        s = Settings.from_env({"OTEL_EXPORTER_OTLP_HEADERS": "Authorization: Bearer sk-SECRET,x-team=core,x-key=a%0Ab"})
    assert s.sdk_corrections == (("OTEL_EXPORTER_OTLP_HEADERS", "x-team=core"),)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "SECRET" not in warning and "#1" in warning and "'x-key'" in warning, warning


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"])
def test_a_grpc_endpoint_the_exporter_cannot_read_is_warned_about_and_the_exporter_is_made(caplog, variable):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    # GIVEN traces over gRPC to an endpoint whose IPv6 address lacks its "]"
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", variable: "http://[::1:4317"}
    with caplog.at_level(logging.WARNING, logger="lambdawrap"):
        corrections = Settings.from_env(env).sdk_corrections
    # THEN it is named once, with the default, and left out of what the exporter reads (before:
    # taken as it was, the exporter raised as it was made: the whole pipeline failed to start,
    # telemetry off for the environment's life)
    (warning,) = [r.getMessage() for r in caplog.records]
    assert variable in warning and ("http://localhost:4317" if variable == "OTEL_EXPORTER_OTLP_ENDPOINT" else "from OTEL_EXPORTER_OTLP_ENDPOINT") in warning, warning
    fixed = dict(env)
    for name, value in corrections:
        fixed.pop(name) if value is None else fixed.__setitem__(name, value)
    with pytest.raises(ValueError):
        OTLPSpanExporter(endpoint=env[variable])
    saved = dict(os.environ)
    try:
        os.environ.update(fixed)
        OTLPSpanExporter().shutdown()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_an_endpoint_with_blanks_around_it_is_used_without_them(caplog):
    with caplog.at_level(logging.WARNING, logger="lambdawrap"):
        s = Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example:4318 "})
    assert s.sdk_corrections == (("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector.example:4318"),)
    assert len(caplog.records) == 1 and "OTEL_EXPORTER_OTLP_ENDPOINT" in caplog.records[0].getMessage()


# Entries the exporters refuse (spaces and tabs only around a name and a value, in their
# reading), quoting them whole in their warning: before, each was kept, its value stripped of the
# blank here, and the credential was in the function's log.
SECRET_HEADER_ENTRIES = [
    "authorization=\nBearer-s3cr3t",
    "authorization=Bearer\r\n-s3cr3t",
    "authorization\r=Bearer-s3cr3t",
    "authorization=\x0cBearer-s3cr3t",
    "authorization=\x0bBearer-s3cr3t",
    "authorization=\xa0Bearer-s3cr3t",
    "authorization\u2028=Bearer-s3cr3t",
]


def corrected_environment(monkeypatch, env: dict) -> Settings:
    """`env` as the companion's environment, its settings read and their corrections made in
    it, as the companion makes them before it makes its exporters."""
    for name in [name for name in os.environ if name.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = Settings.from_env(env)  # the environment's other variables (LAMBDAWRAP_*) left out
    for variable, value in s.sdk_corrections:
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, value)
    return s


@pytest.mark.parametrize("entry", SECRET_HEADER_ENTRIES)
def test_a_header_entry_the_exporters_would_quote_is_left_out_before_they_read_it(caplog, monkeypatch, entry):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # GIVEN the entry between two good ones
    env = {"OTEL_EXPORTER_OTLP_HEADERS": f"x-team=shop,{entry},x-other=1"}
    with caplog.at_level(logging.WARNING):
        # WHEN the companion reads its settings and makes its exporter
        s = corrected_environment(monkeypatch, env)
        exporter = OTLPSpanExporter()
    # THEN one warning, ours: the variable and the header named, the value not; the good
    # entries sent
    assert not [r for r in caplog.records if "s3cr3t" in r.getMessage()], caplog.text
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith("lambdawrap: ignoring OTEL_EXPORTER_OTLP_HEADERS entries 'authorization'"), warning
    headers = exporter._client._headers
    assert headers.get("x-team") == "shop" and headers.get("x-other") == "1" and "authorization" not in headers, headers
    # ... as over gRPC
    grpc = Settings.from_env({**env, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, warn=False)
    assert grpc.sdk_corrections == s.sdk_corrections == (("OTEL_EXPORTER_OTLP_HEADERS", "x-team=shop,x-other=1"),)


def test_no_header_entry_kept_is_one_the_exporters_refuse(caplog):
    import random

    from opentelemetry.util.re import parse_env_headers

    from lambdawrap.shared.otlp_variables import header_entries

    # Entries made of the pieces where the two readings could part: each kept one the exporters'
    # own parser reads without a word.
    pieces = ["a", "B", "-", "=", " ", "\t", "\n", "\r", "\x0b", "\x0c", "\xa0", "\u2028", "%20", "%0A", "%C3%A9", '"', ";", "\\", ":", "/", "\xe9", "\x00"]
    rng = random.Random(7)
    for _ in range(5000):
        entry = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        kept, _ = header_entries(entry)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="opentelemetry"):
            read = parse_env_headers(kept, liberal=True)
        assert not caplog.records and len(read) == (1 if kept else 0), repr(entry)


@pytest.mark.parametrize("raw", ["x-team=shop\n", "\r\nx-team=shop,\x0bx-other=1\xa0", "x-team = shop\t"])
def test_blanks_of_any_kind_around_a_header_entry_are_read_as_the_exporters_read_them(caplog, raw):
    # Around the whole entry, the exporters take them away (a line break ending the variable)
    with caplog.at_level(logging.WARNING):
        assert Settings.from_env({"OTEL_EXPORTER_OTLP_HEADERS": raw}).sdk_corrections == ()
    assert not caplog.records


@pytest.mark.parametrize("name", ["OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_TRACES_INSECURE"])
@pytest.mark.parametrize("value", ["1", "yes", "on", "ture"])
def test_an_insecure_the_grpc_exporters_read_as_false_warns_once_with_name_and_default(caplog, name, value):
    # (before: read as false without a word: TLS to a plaintext collector, every export failed)
    with caplog.at_level(logging.WARNING, logger="lambdawrap"):
        s = Settings.from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", name: value})
    (warning,) = [r.getMessage() for r in caplog.records]
    assert f"ignoring {name}={value!r}" in warning and "default false" in warning, warning
    assert s.sdk_corrections == ((name, "false"),)


def test_an_insecure_with_blanks_around_it_is_what_the_grpc_exporter_reads(monkeypatch, tmp_path):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    # " true" is true to the specification, false to the exporters, which compare it as written
    s = corrected_environment(monkeypatch, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_INSECURE": " true\n"})
    assert s.sdk_corrections == (("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "true"),)
    exporter = OTLPSpanExporter(endpoint=f"unix://{tmp_path}/none.sock")  # the channel connects at the first export
    try:
        assert exporter._insecure is True
    finally:
        exporter.shutdown()


class TestBoot:
    @pytest.mark.parametrize("value", ["", "noperiod", ".handler", "mod.", "../../etc/passwd.x", "\x00.x", "mod..fn", "/abs.handler"])
    def test_handler_values_the_runtime_cannot_import_are_refused_quietly(self, value):
        assert boot.handler_target(value) is None
        assert boot.initialize({"_HANDLER": value}, swallow_exceptions=False) is None

    # What importlib imports, the runtime does: a file named my-function.py is a module to it.
    @pytest.mark.parametrize("value, target", [("app.handler", ("app", "handler")), ("pkg.mod.fn", ("pkg.mod", "fn")), ("src/svc/api.handler", ("src.svc.api", "handler")), ("my-function.handler", ("my-function", "handler")), ("a b.handler", ("a b", "handler"))])
    def test_handler_forms(self, value, target):
        assert boot.handler_target(value) == target

    def test_wrapping_is_idempotent(self, tmp_path, sock_path, monkeypatch):
        (tmp_path / "lw_idem_mod.py").write_text("def handler(event, context):\n    return event\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        env = {"_HANDLER": "lw_idem_mod.handler", "LAMBDAWRAP_SOCKET": sock_path}
        # Two boots: as with a second copy of the layer, or a re-run of sitecustomize.
        assert boot.initialize(env, swallow_exceptions=False) is not None
        assert boot.initialize(env, swallow_exceptions=False) is not None
        import lw_idem_mod
        from awslambdaric import bootstrap

        handler = bootstrap._get_handler("lw_idem_mod.handler")  # what the runtime calls
        assert handler.__wrapped__ is lw_idem_mod.handler  # wrapped exactly once ...
        assert type(lw_idem_mod.handler).__name__ == "function"  # ... and the module's own left as it is
        assert handler({"x": 1}, None) == {"x": 1}


def kept_beside(sock_path: str) -> tuple:
    """What this process keeps beside the socket: (the drops counted, the records held)."""
    from lambdawrap.shared import unreported_drops
    from lambdawrap.shared.framing import FrameReader

    count_path, held_path = unreported_drops.path_for(sock_path, os.getpid()), unreported_drops.held_path_for(sock_path, os.getpid())
    count = int(Path(count_path).read_text()) if os.path.exists(count_path) else 0
    held = Path(held_path).read_bytes().partition(b"\n")[2] if os.path.exists(held_path) else b""
    return count, FrameReader().feed(held)


class TestChannel:
    def test_absent_companion_drops_counts_and_warns_once(self, sock_path, caplog):
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
            gone.bind(sock_path)  # its file left behind, nothing listening: connections refused
            channel = Channel(sock_path)
            with caplog.at_level(logging.WARNING, logger="lambdawrap"):
                for _ in range(3):
                    assert channel.send({"version": 2, "type": "invocation"}) is False
                    channel._next_connect = 0.0  # each send tries again
        assert channel.dropped == 3
        assert len([r for r in caplog.records if "companion not reachable" in r.getMessage()]) == 1

    def test_a_companion_that_dies_is_said_also_after_its_socket_was_missing_at_first(self, sock_path, caplog):
        # GIVEN a record sent before the companion's socket is there (a posted record: spans
        # would be held for it), then the companion up, then gone (its file left, connections
        # refused)
        channel = Channel(sock_path)
        span = {"version": 3, "type": "spans", "spans": []}
        with caplog.at_level(logging.WARNING, logger="lambdawrap"):
            assert channel.send({"version": 3, "type": "posted", "request_id": "r", "outcome": "result"}) is False
            server = SocketServer(sock_path, lambda record: None, lambda reason, detail: None)
            server.start()
            channel._next_connect = 0.0
            assert channel.send(dict(span)) is True
            server.stop(wait_s=1.0, keep_file=True)
            for _ in range(3):
                channel.send(dict(span))
                channel._next_connect = 0.0
        # THEN each is said once: the missing socket, and the refusals (before: the first line
        # was the only one, and the companion's death went unsaid while drops were counted)
        said = [r.getMessage() for r in caplog.records if "companion not reachable" in r.getMessage()]
        assert len(said) == 2 and "No such file" in said[0] and "refused" in said[1], said


    def test_an_invocation_ending_just_after_a_refused_span_reaches_the_companion_that_came(self, sock_path):
        import socket

        # GIVEN the socket file a killed companion left, where a span of the function's init is
        # refused (the new companion not yet listening): it is held, kept beside the socket
        # until it goes
        from lambdawrap.shared import unreported_drops

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
            gone.bind(sock_path)
        channel = Channel(sock_path)
        assert channel.send({"version": 2, "type": "spans", "spans": [{}]}) is True and channel.dropped == 0
        assert kept_beside(sock_path) == (0, [{"version": 2, "type": "spans", "spans": [{}]}])
        # WHEN the new companion listens there, and the first invocation ends within the second
        # a refused connection holds other records back
        received = []
        server = SocketServer(sock_path, received.append, lambda reason, detail: None)
        server.start()
        try:
            sent = channel.send_invocation(b'{"request_id":"first"}', {"end_ns": 1})
            wait_for(lambda: len(received) == 2, what="the span and the invocation's record")
        finally:
            server.stop()
        # THEN its record goes (before: held back, counted as dropped by the function's process
        # while the companion counted it missing: one invocation counted twice, and not exported),
        # after the span held for the companion, which is no longer counted as dropped (before:
        # dropped, and the count went with the record)
        # (the record's own connect, no connect ahead of it: the held span is not also reported
        # as dropped)
        assert sent is True and received[0]["type"] == "spans" and received[1]["start"]["request_id"] == "first"
        assert "dropped" not in received[1] and channel.dropped == 0
        assert not os.path.exists(unreported_drops.path_for(sock_path, os.getpid())) and not os.path.exists(unreported_drops.held_path_for(sock_path, os.getpid()))

    def test_a_connection_made_before_the_file_was_removed_is_taken_when_the_companion_listens_again(self, sock_path):
        from lambdawrap.companion.event_loop import EventLoop

        # GIVEN a companion that has not yet accepted the connection a process made at its
        # invocation's start, and the socket's file then removed (the handler emptied /tmp)
        received = []
        server = SocketServer(sock_path, received.append, lambda reason, detail: None)
        loop = EventLoop()
        server.attach(loop)
        channel = Channel(sock_path)
        channel.connect_ahead()
        os.unlink(sock_path)
        try:
            # WHEN the companion listens again, then the invocation's record is sent
            assert server.rebind_if_removed()
            sent = channel.send_invocation(b'{"request_id":"early"}', {"end_ns": 1})

            def served() -> list:
                loop.run_once(0.05)
                return received

            wait_for(served, what="the invocation's record")
        finally:
            server.stop()
        # THEN it arrives, on the connection made before (before: reset with the old listener,
        # taken for the companion's death, and counted by both sides)
        assert sent is True and received[0]["start"]["request_id"] == "early"
        assert channel.dropped == 0 and not channel.companion_refused

    def test_a_worker_whose_init_failed_waits_for_the_companion_to_listen(self, sock_path):
        import threading

        from lambdawrap.handler.invocation import InvocationTracer

        # GIVEN a Managed Instances worker whose init failed before the companion, whose Python
        # starts after the runtime, listens
        received = []
        started = threading.Event()

        def companion_starting_late() -> None:
            time.sleep(0.3)
            server = SocketServer(sock_path, received.append, lambda reason, detail: None)
            server.start()
            started.set()
            wait_for(lambda: received, what="the record")
            server.stop()

        late = threading.Thread(target=companion_starting_late)
        late.start()
        channel = Channel(sock_path)
        tracer = InvocationTracer(Settings(socket_path=sock_path), channel, environ={})
        # WHEN it tells of its failure, waiting for the companion
        tracer.init_failed(time.time_ns(), {"type": "OrderError", "message": "no table", "stack": ""}, wait_s=30)
        late.join(30)
        # THEN the record reaches it, nothing dropped (before: dropped at once, and the worker
        # exited; its count was left in a file no collect took while the worker was unreaped)
        assert started.is_set() and received and received[0]["type"] == "init.failed", received
        assert received[0]["error"]["type"] == "OrderError" and channel.dropped == 0

    def test_a_removed_socket_file_leaves_the_invocation_to_the_live_companion(self, listener, sock_path):
        # The file gone (a function emptied /tmp) after the process reached the companion, its
        # connection lost: the companion lives, saw the INVOKE and counts the invocation as
        # record_missing; other records only this process can count.
        channel = Channel(sock_path)
        assert channel.send({"version": 2, "type": "spans", "spans": []}) is True
        channel._close()
        os.unlink(sock_path)
        assert channel.send({"version": 2, "type": "invocation"}) is False
        assert channel.dropped == 0
        assert channel.send({"version": 2, "type": "spans", "spans": []}) is False
        assert channel.dropped == 1

    def test_spans_made_before_the_companion_listens_are_held_for_it_and_counted_until_they_go(self, sock_path, monkeypatch):
        from lambdawrap.handler import channel as channel_module
        from lambdawrap.shared import unreported_drops

        # GIVEN a process whose module makes spans as it loads, before the companion's socket
        # is there, more than the channel holds
        monkeypatch.setattr(channel_module, "MAX_EARLY_FRAMES", 2)
        channel = Channel(sock_path)
        sent = [channel.send({"version": 3, "type": "spans", "spans": [{"name": f"at import {n}"}]}) for n in range(3)]
        # THEN the first two are held, the third dropped, and all three kept beside the socket
        # meanwhile (a process that ends before the companion listens), the two held as they
        # are, the third counted; only the third is a drop a record will report
        assert sent == [True, True, False] and channel.dropped == 1
        assert kept_beside(sock_path) == (1, [{"version": 3, "type": "spans", "spans": [{"name": f"at import {n}"}]} for n in range(2)])
        # WHEN the companion listens, and the first invocation starts
        received = []
        server = SocketServer(sock_path, received.append, lambda reason, detail: None)
        server.start()
        try:
            channel.connect_ahead()
            wait_for(lambda: len(received) == 2, what="the spans held")
            assert channel.send_invocation(b'{"request_id":"first"}', {"end_ns": 1})
            wait_for(lambda: len(received) == 3, what="the invocation's record")
        finally:
            server.stop()
        # THEN the held spans reach it first, in order, no longer counted; the one dropped is
        # reported with the invocation's record (before: all three dropped, and counted)
        assert [r["spans"][0]["name"] for r in received[:2]] == ["at import 0", "at import 1"] and not [r for r in received[:2] if "dropped" in r]
        assert received[2]["dropped"] == 1 and channel.dropped == 0
        assert not os.path.exists(unreported_drops.path_for(sock_path, os.getpid())) and not os.path.exists(unreported_drops.held_path_for(sock_path, os.getpid()))

    def test_spans_held_by_a_process_that_ends_go_if_the_companion_listens_by_then(self, sock_path):
        from lambdawrap.shared import unreported_drops

        # GIVEN a process whose module made a call as it loaded, before the companion listened,
        # and then failed (the call's answer was an error): nothing else will be sent
        channel = Channel(sock_path)
        assert channel.send({"version": 3, "type": "spans", "spans": [{"name": "GET"}]}) is True
        received = []
        server = SocketServer(sock_path, received.append, lambda reason, detail: None)
        server.start()
        try:
            # WHEN the process exits, the companion listening by then
            channel.send_early_at_exit()
            wait_for(lambda: received, what="the span held")
        finally:
            server.stop()
        # THEN the span goes, and is counted no more (before: held until a next record that
        # never came, counted beside the socket)
        assert received[0]["spans"] == [{"name": "GET"}] and channel.dropped == 0
        assert not os.path.exists(unreported_drops.path_for(sock_path, os.getpid())) and not os.path.exists(unreported_drops.held_path_for(sock_path, os.getpid()))

    def test_a_companion_that_died_is_seen_on_its_connection(self, sock_path):
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(sock_path)
            server.listen()
            channel = Channel(sock_path)
            assert not channel.companion_gone()  # not connected yet: the next send tells
            assert channel.send({"version": 2, "type": "invocation", "request_id": "a"})
            connection, _ = server.accept()
            assert not channel.companion_gone()
            connection.close()  # as the companion's death closes it
            assert channel.companion_gone()

    def test_records_arrive_and_drop_count_travels(self, listener, sock_path):
        server, received = listener
        channel = Channel(sock_path)
        channel.dropped = 2  # e.g. from a time the companion was away
        assert channel.send({"version": 2, "type": "invocation", "request_id": "a"})
        wait_for(lambda: received, what="record")
        assert received[0]["request_id"] == "a" and received[0]["dropped"] == 2 and channel.dropped == 0

    def test_an_invocation_record_a_live_companion_has_no_room_for_counts_the_spans_it_carried(self, sock_path):
        # GIVEN a companion that lives but has fallen behind: it accepted the connection and
        # reads nothing, so the socket's buffers fill
        import socket

        from lambdawrap.shared import records

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(sock_path)
            server.listen()
            channel = Channel(sock_path)
            filler = {"version": records.VERSION, "type": records.POSTED, "request_id": "f" * 4096}
            assert channel.send(filler)
            connection, _ = server.accept()
            with connection:
                for _ in range(10_000):
                    if not channel.send(filler):  # a posted record's loss counts nothing
                        break
                else:
                    pytest.fail("the socket's buffers never filled")
                assert channel.dropped == 0
                # WHEN an invocation's record carrying 3 of the function's spans, and 2 counted
                # over the limit, finds no room
                span = records.span("user", "work", 1, 2, 3, 1, 10, 20, {}, [], [], (0, ""))
                start = records.encode_invocation_start("r1", "arn", 1, 3, 0, True, 10, False, False, "other", {}, [], "handler", 1)
                end = dict(records.invocation_end(30), spans=[span] * 3, spans_dropped=2, context_not_injected=4)
                assert channel.send_invocation(start, end) is False
                # THEN the invocation is left to the companion (record_missing), and its 5 spans
                # are this process's to count: lost on the channel; the calls that went without
                # the trace context are not, they go with the next record
                assert channel.dropped == 5
                # ... and the count reaches the companion once it reads again
                connection.setblocking(True)
                connection.settimeout(60)
                reader_done = []

                def read_all():
                    chunks = []
                    while True:
                        chunk = connection.recv(1 << 20)
                        if not chunk:
                            break
                        chunks.append(chunk)
                    reader_done.append(b"".join(chunks))

                import threading

                reader = threading.Thread(target=read_all)
                reader.start()
                # (a posted record: one that finds no room yet adds no drop of its own)
                wait_for(lambda: channel.send(dict(filler)), timeout=60, what="a record through")
                assert channel.dropped == 0
                channel._close()
                reader.join(60)
        assert b'"dropped":5' in reader_done[0]

    def test_a_span_ended_inside_a_send_on_its_own_thread_goes_after_it(self, listener, sock_path):
        import threading

        from lambdawrap.handler.invocation import deliver_span

        server, received = listener
        channel = Channel(sock_path)
        span = {"name": "in a generator", "trace_id": "1" * 32, "span_id": "2" * 16, "start_ns": 1, "end_ns": 2, "scope": "orders"}

        class EndsASpanAsItIsEncoded:
            # As the garbage collector may, finalizing (while a record is encoded) a generator
            # whose `with tracer.start_as_current_span(...)` then ends its span
            def __repr__(self) -> str:
                deliver_span(channel, span)
                return "'odd'"

        # GIVEN no invocation under way (the span goes alone), WHEN the record being sent runs
        # code that ends a span on the sending thread
        sent: list = []
        sender = threading.Thread(target=lambda: sent.append(channel.send({"version": 2, "type": "invocation", "request_id": "r1", "odd": EndsASpanAsItIsEncoded()})), daemon=True)
        sender.start()
        sender.join(10)
        # THEN the send ends (before: the span's send waited for the lock its own thread held,
        # and the function's process hung for ever), and the span goes after the record
        assert not sender.is_alive() and sent == [True]
        wait_for(lambda: len(received) >= 2, what="the record and the span")
        assert [record.get("type") for record in received] == ["invocation", "spans"]
        assert received[1]["spans"][0]["name"] == "in a generator"

    def test_the_companion_s_absence_is_logged_without_holding_up_a_thread_sending_a_span(self, sock_path):
        import socket
        import threading

        # GIVEN no companion (its socket file left, nothing listening), and a logging handler of
        # the function's that posts each warning somewhere (a webhook), one post at a time
        posting = threading.RLock()

        class Webhook(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                with posting:
                    pass

        webhook = Webhook(level=logging.WARNING)
        logging.getLogger().addHandler(webhook)
        gone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        gone.bind(sock_path)
        channel = Channel(sock_path)
        sending = threading.Event()
        span = {"version": 2, "type": "spans", "spans": []}

        def post_a_warning() -> None:
            # Inside the webhook's post, a traced call ends: its span goes to the channel.
            with posting:
                sending.set()
                channel.send(span)

        class StartsThePost:
            def __repr__(self) -> str:  # as the record is encoded, the channel's lock held
                threading.Thread(target=post_a_warning, daemon=True).start()
                sending.wait(10)
                time.sleep(0.2)  # the span's send is waiting for the channel's lock by now
                return "'odd'"

        # WHEN the invocation's record finds the companion gone, and warns of it
        results: list = []
        sender = threading.Thread(target=lambda: results.append(channel.send({"version": 2, "type": "invocation", "odd": StartsThePost()})), daemon=True)
        try:
            sender.start()
            sender.join(10)
            # THEN both sends end (before: the warning was logged with the channel's lock held,
            # the webhook waited for its own post to end, which waited for that lock: the
            # invocation hung until its timeout)
            assert not sender.is_alive() and results == [False]
        finally:
            logging.getLogger().removeHandler(webhook)
            gone.close()

    def test_a_descriptor_the_function_reused_never_holds_up_the_check_for_a_gone_companion(self, listener, sock_path):
        import socket
        import threading

        # GIVEN a connection to the companion whose descriptor number the function closed and
        # reused for a blocking socket of its own, whose peer says nothing
        channel = Channel(sock_path)
        assert channel.send({"version": 2, "type": "invocation", "request_id": "a"})
        number = channel._sock.fileno()
        mine, peer = socket.socketpair()
        os.dup2(mine.fileno(), number)
        try:
            # WHEN the invocation asks whether the companion is gone
            answers: list = []
            asking = threading.Thread(target=lambda: answers.append(channel.companion_gone()), daemon=True)
            asking.start()
            asking.join(10)
            # THEN it answers at once (before: the peek waited for the function's peer to write)
            assert not asking.is_alive() and answers == [False]
        finally:
            peer.close()
            mine.close()

    def test_a_signal_handler_that_raises_in_a_send_never_leaves_the_channel_locked(self, sock_path):
        import signal

        # GIVEN a function whose timeout decorator raises from its SIGALRM handler, the alarm
        # firing every 50 µs, and records sent meanwhile (no companion: each is dropped)
        class Alarm(Exception):
            pass

        armed = [True]

        def raise_alarm(signum: int, frame: object) -> None:
            # Inside the channel's code only: raised in this test's own lines, it would end it.
            if armed[0] and frame is not None and getattr(frame, "f_code").co_filename.endswith("channel.py"):
                raise Alarm()

        channel = Channel(sock_path)
        previous = signal.signal(signal.SIGALRM, raise_alarm)
        interrupted = leaked = 0
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.00005, 0.00005)
            deadline = time.monotonic() + 1.0
            while not leaked:
                try:
                    if time.monotonic() > deadline:
                        break
                    # Only a send holds the lock (and names its thread), and none is under way
                    # here: held or named, it leaked.
                    leaked = channel._lock.locked() or channel._holder != 0
                    channel.send({"version": 2, "type": "spans", "spans": []})
                except Alarm:
                    interrupted += 1
        finally:
            armed[0] = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        # THEN the alarms interrupted sends, and none left the lock held (before: one raised
        # between the lock's acquire and the try that releases it, and every later send of the
        # process waited for ever)
        assert interrupted and not leaked and not channel._lock.locked(), (interrupted, leaked)

    def test_socket_is_private_and_survives_garbage(self, listener, sock_path):
        server, received = listener
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600
        import socket

        for garbage in (b"\xff\xff\xff\xff" + b"x" * 10, b"\x00\x00\x00\x05{bad}", encode(["not", "a", "dict"])):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(sock_path)
                s.sendall(garbage)
        wait_for(lambda: server.problems.count("malformed_record") >= 3, what="malformed records counted")
        assert Channel(sock_path).send({"version": 2, "type": "invocation", "request_id": "after"})
        wait_for(lambda: any(r.get("request_id") == "after" for r in received), what="record after garbage")


    def test_a_record_whose_type_is_no_text_leaves_its_connection_serving(self, listener, sock_path, caplog):
        import socket

        server, received = listener
        # GIVEN a record whose type is a list, and a good one after it on the same connection
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(sock_path)
            s.sendall(encode({"version": 3, "type": ["x"]}) + encode({"version": 3, "type": "spans", "spans": [], "request_id": "next"}))
            # THEN both are handed on, as any record of an unknown type is (before: a traceback
            # in the companion's log, the connection closed as failing, and the next record lost)
            wait_for(lambda: any(r.get("request_id") == "next" for r in received), what="the record after it")
        assert server.problems == [] and not [r for r in caplog.records if r.exc_info]


def run_booted(folder: Path, sock_path: str, module: str, body: str, **environ: str) -> None:
    """Run `body` in a new process where lambdawrap has booted for `module`.handler (a handler
    returning its event, written to `folder`), with its records going to `sock_path`."""
    (folder / f"{module}.py").write_text("def handler(event, context):\n    return event\n")
    env = {"_HANDLER": f"{module}.handler", "LAMBDAWRAP_SOCKET": sock_path, **environ}
    prologue = f"""
import os, sys, types
sys.path.insert(0, {str(folder)!r})
from lambdawrap.handler import boot
boot.initialize({env!r}, swallow_exceptions=False)
from awslambdaric import bootstrap
looked_up = bootstrap._get_handler  # the handler as the runtime gets it: wrapped
"""
    subprocess.run([sys.executable, "-c", prologue + textwrap.dedent(body)], check=True, timeout=30)


MANY_SPANS_THEN_EXIT = """
import os, sys
from lambdawrap.handler import channel
from lambdawrap.shared import records
channel.SEND_BUFFER_BYTES = 212992  # Lambda's net.core.wmem_max: the kernel makes it 416 KB
attributes = {"rpc.service": "DynamoDB", "rpc.method": "PutItem", "url.full": "https://dynamodb.eu-west-1.amazonaws.com/" + "x" * 500}
spans = [records.span("botocore", "DynamoDB.PutItem", 7, i + 1, 3, 2, 1, 2, dict(attributes), [], [], (0, "")) for i in range(1000)]
start = records.encode_invocation_start("req-1", "arn", 7, 3, 0, True, 1, False, False, "sqs", {}, [], "", 4)
print(channel.Channel(sys.argv[1]).send_invocation(start, {"end_ns": 2, "spans": spans}), flush=True)
os._exit(0)  # the environment ends before another record
"""


def test_spans_too_many_for_the_socket_s_buffer_are_each_delivered_or_counted_when_the_process_ends_at_once(listener, sock_path):
    from lambdawrap.shared import unreported_drops

    server, received = listener
    # GIVEN the function's process, with Lambda's send buffer, ending an invocation with 1,000
    # client spans (~700 KB, sent in frames beside its record) and then at once
    out = subprocess.run([sys.executable, "-c", MANY_SPANS_THEN_EXIT, sock_path], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "True", out.stderr

    def delivered() -> int:
        return sum(len(r.get("spans", [])) + len(r.get("end", {}).get("spans", [])) for r in list(received))

    # THEN each span reached the companion or was counted as dropped (before: a frame that
    # found the buffer part full was sent in part, its rest left for a next send that never
    # came, and ~300 spans were neither)
    kept = [0]

    def accounted() -> bool:
        kept[0] += sum(left.count for left in unreported_drops.collect(sock_path))
        return delivered() + kept[0] == 1000

    wait_for(accounted, timeout=30, what="every span delivered or counted")
    assert delivered() >= 300 and server.problems == []


def test_fork_gives_each_worker_its_own_connection_and_cold_start(tmp_path, listener, sock_path):
    server, received = listener
    run_booted(tmp_path, sock_path, "forkmod", """
        handler = looked_up("forkmod.handler")
        ctx = types.SimpleNamespace(aws_request_id="parent-1", invoked_function_arn="arn:x")
        handler({}, ctx)  # the parent serves first, then forks as the runtime's workers do
        pid = os.fork()
        if pid == 0:
            for i in range(3):
                handler({}, types.SimpleNamespace(aws_request_id=f"child-{i}", invoked_function_arn="arn:x"))
            os._exit(0)
        os.waitpid(pid, 0)
        handler({}, types.SimpleNamespace(aws_request_id="parent-2", invoked_function_arn="arn:x"))
        """)
    wait_for(lambda: len(received) >= 5, what="five records")
    by_rid = {r["start"]["request_id"]: r["start"] for r in received}
    assert set(by_rid) == {"parent-1", "parent-2", "child-0", "child-1", "child-2"}
    assert by_rid["parent-1"]["cold_start"] and not by_rid["parent-2"]["cold_start"]
    assert by_rid["child-0"]["cold_start"] and not by_rid["child-1"]["cold_start"]
    assert len({r["start"]["span_id"] for r in received}) == 5  # ids stay unique across the fork


def test_on_managed_instances_a_failure_before_the_workers_fork_is_reported_once(tmp_path, listener, sock_path):
    server, received = listener
    # GIVEN awslambdaric's parent on Managed Instances, where lambdawrap boots and one of its
    # hooks fails (counted) before the parent forks its workers, then serves nothing itself
    run_booted(tmp_path, sock_path, "mimod", """
        from lambdawrap.handler.invocation import FAILURES
        FAILURES.record("a post-import hook on awslambdaric.lambda_runtime_client", exc_info=False)
        workers = []
        for w in range(3):
            pid = os.fork()
            if pid == 0:
                handler = looked_up("mimod.handler")  # each worker imports the handler
                for i in range(2):
                    handler({}, types.SimpleNamespace(aws_request_id=f"w{w}-{i}", invoked_function_arn="arn:x"))
                os._exit(0)
            workers.append(pid)
        for pid in workers:
            os.waitpid(pid, 0)
        """, AWS_LAMBDA_INITIALIZATION_TYPE="lambda-managed-instances")
    # WHEN each worker reports its invocations THEN that failure is counted once, not per worker
    wait_for(lambda: len(received) >= 6, what="six records")
    assert sum(r["end"].get("internal_errors", 0) for r in received) == 1


class TestExecWrapper:
    def run(self, env: dict, *args: str) -> dict:
        with tempfile.TemporaryDirectory() as folder:
            out = subprocess.run([str(WRAPPER), env_named_python(Path(folder)), *args], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, check=True)
        return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)

    def test_puts_only_the_boot_folder_on_an_unset_pythonpath(self):
        # The layers' folders, which the runtime adds after its own imports, would come before
        # the standard library while the boot imports it (another layer's enum.py in python/)
        env = self.run({"AWS_EXECUTION_ENV": "AWS_Lambda_python3.12"})
        layer = str(WRAPPER.parent)
        assert env["PYTHONPATH"] == f"{layer}/python/lambdawrap_boot" and env["LAMBDAWRAP_PYTHONPATH_UNSET"] == "1"

    def test_keeps_a_user_pythonpath_and_adds_no_stray_separator(self):
        layer = str(WRAPPER.parent)
        assert self.run({"PYTHONPATH": "/mine"})["PYTHONPATH"] == f"{layer}/python/lambdawrap_boot:/mine"
        assert self.run({"PYTHONPATH": ""})["PYTHONPATH"] == f"{layer}/python/lambdawrap_boot"

    def test_kill_switch(self):
        env = self.run({"LAMBDAWRAP_DISABLED": "true", "PYTHONPATH": "/mine"})
        assert env["PYTHONPATH"] == "/mine" and "LAMBDAWRAP_BOOT_DIR" not in env

    def test_chains_to_the_next_wrapper(self, tmp_path):
        nxt = tmp_path / "next.sh"
        nxt.write_text('#!/bin/sh\nexport CHAINED="$#:$1"\nexec "$@"\n')
        nxt.chmod(0o755)
        env = self.run({"LAMBDAWRAP_NEXT_WRAPPER": str(nxt)})
        # It is handed our wrapper in place of the interpreter, which sets the boot up after it
        # and execs the interpreter.
        assert env["CHAINED"] == f"1:{WRAPPER}" and "lambdawrap_boot" in env["PYTHONPATH"]

    def test_runs_from_any_folder(self, tmp_path):
        import shutil

        copy = tmp_path / "some" / "where"
        shutil.copytree(WRAPPER.parent, copy)
        out = subprocess.run(["sh", "-c", f"cd {copy} && ./wrapper.sh {env_named_python(tmp_path)}"], capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"})
        assert f"PYTHONPATH={copy}/python/lambdawrap_boot\n" in out.stdout


@pytest.mark.parametrize("pythonpath", [None, "mine"])
def test_a_layer_whose_package_fails_to_import_starts_the_function_as_without_it(tmp_path, pythonpath):
    # GIVEN a layer whose lambdawrap package cannot be imported (copied in part, or a Python it
    # does not support), and a function with a sitecustomize of its own on its PYTHONPATH
    import shutil

    layer = tmp_path / "layer"
    shutil.copytree(WRAPPER.parent, layer, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "src" / "lambdawrap", layer / "python" / "lambdawrap", ignore=shutil.ignore_patterns("__pycache__"))
    (layer / "python" / "lambdawrap" / "handler" / "boot.py").write_text("raise SyntaxError('a module this Python cannot compile')\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "sitecustomize.py").write_text("import os\nos.environ['USER_SITECUSTOMIZE'] = 'ran'\n")
    runtime = tmp_path / "runtime.py"
    runtime.write_text(textwrap.dedent("""
        import json, os, sys
        seen = {k: v for k, v in os.environ.items() if k.startswith(("LAMBDAWRAP_", "PYTHONPATH", "USER_"))}
        print(json.dumps({"path": sys.path, "env": seen}))
        """))
    env = {"PATH": "/usr/bin:/bin", "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12"}
    if pythonpath:
        env["PYTHONPATH"] = str(mine)
    # WHEN it starts with and without the layer
    bare = subprocess.run([sys.executable, str(runtime)], env=env, capture_output=True, text=True, timeout=60, check=True)
    wrapped = subprocess.run([str(layer / "wrapper.sh"), sys.executable, str(runtime)], env=env, capture_output=True, text=True, timeout=60, check=True)
    # THEN it sees the same sys.path and environment (its own sitecustomize run, none of the
    # wrapper's variables left; before: all four left, PYTHONPATH the wrapper's, its
    # sitecustomize not run), and the one line says why it is not instrumented
    assert json.loads(wrapped.stdout) == json.loads(bare.stdout)
    assert ("USER_SITECUSTOMIZE" in json.loads(bare.stdout)["env"]) is bool(pythonpath)
    said = [line for line in wrapped.stderr.splitlines() if "lambdawrap" in line]
    assert len(said) == 1 and "not instrumenting, the lambdawrap package failed to import" in said[0], wrapped.stderr


# An exception described for its span ----------------------------------------------------


class _Counted(Exception):
    """An exception that counts the renderings of its message."""

    rendered = 0

    def __str__(self) -> str:
        type(self).rendered += 1
        return "counted"


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


def _raised(make):
    try:
        make()
    except BaseException as exc:  # noqa: BLE001 - the test's own exceptions
        return exc
    raise AssertionError("nothing raised")


def _chained():
    try:
        {}["key"]
    except KeyError as exc:
        raise ValueError("while looking up") from exc


def _in_handling():
    try:
        1 / 0
    except ZeroDivisionError:
        raise LookupError("during handling")


def _suppressed():
    try:
        1 / 0
    except ZeroDivisionError:
        raise TypeError("context suppressed") from None


def _noted():
    error = OSError(2, "gone", "/tmp/x")
    if hasattr(error, "add_note"):
        error.add_note("a note on the way")
    raise error


def _syntax():
    compile("def f(:\n", "<handler>", "exec")


def _deeper(n):
    return _deeper(n + 1)


def _ping(n):
    return _pong(n + 1) if n % 7 else _ping(n + 1)  # runs of one line, broken by another


def _pong(n):
    return _ping(n + 1)


def _recursion_as_cause():
    try:
        _deeper(0)
    except RecursionError as exc:
        raise ValueError("too deep") from exc


@pytest.mark.parametrize(
    "make",
    [_chained, _in_handling, _suppressed, _noted, _syntax, lambda: sys.exit(3), lambda: _deeper(0), lambda: _ping(1), _recursion_as_cause],
    ids=["cause", "context", "suppressed", "notes", "syntax", "exit", "recursion", "mutual recursion", "recursion as cause"],
)
def test_an_exception_is_described_with_the_texts_python_gives_it(make):
    import traceback

    from lambdawrap.handler.invocation import MAX_STACK_CHARS, describe_exception

    error = _raised(make)
    described = describe_exception(error)
    assert described["stack"] == "".join(traceback.format_exception(type(error), error, error.__traceback__))[-MAX_STACK_CHARS:]
    assert described["message"] == str(error)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10's StackSummary.format() has no per-frame hook: it formats every frame")
def test_a_recursions_frames_python_does_not_print_are_not_formatted(monkeypatch):
    import traceback

    from lambdawrap.handler import own_traceback
    from lambdawrap.handler.invocation import describe_exception

    # GIVEN a RecursionError: a thousand frames, of which Python prints a few and counts the rest
    error = _raised(lambda: _deeper(0))
    printed = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    formatted = []
    summary = own_traceback.traceback().StackSummary  # what lambdawrap formats with
    plain = summary.format_frame_summary
    monkeypatch.setattr(summary, "format_frame_summary", lambda self, frame, **kw: formatted.append(frame) or plain(self, frame, **kw))
    # WHEN it is described THEN the text is Python's, and only the frames printed were formatted
    # (each was, carets and all, before: tens of milliseconds after every such invocation)
    assert describe_exception(error)["stack"] == printed
    assert "more times]" in printed and len(formatted) == printed.count('  File "'), len(formatted)


def test_an_exception_message_is_rendered_once_and_an_unprintable_one_named():
    from lambdawrap.handler.invocation import describe_exception

    error = _raised(lambda: (_ for _ in ()).throw(_Counted()))
    _Counted.rendered = 0
    described = describe_exception(error)
    assert _Counted.rendered == 1
    assert described["message"] == "counted" and described["stack"].endswith("_Counted: counted\n")
    unprintable = describe_exception(_raised(lambda: (_ for _ in ()).throw(_Unprintable())))
    assert unprintable["message"] == "<unprintable _Unprintable>"


def test_an_exception_is_described_with_the_traceback_it_had_when_the_handler_raised():
    from lambdawrap.handler.invocation import describe_exception

    error = _raised(_chained)
    when_raised = (error, error.__traceback__)
    try:
        raise error  # on its way up, as through the runtime's frames
    except ValueError:
        pass
    assert describe_exception(*when_raised)["stack"].count("test_handler_side.py") == describe_exception(error)["stack"].count("test_handler_side.py") - 1


class _HidesItsNames(type):
    def __getattribute__(cls, name):
        if name in ("__module__", "__qualname__"):
            raise AttributeError(name)
        return super().__getattribute__(name)


class _NamesHidden(Exception, metaclass=_HidesItsNames):
    pass


def test_an_exception_whose_class_hides_its_names_is_described_by_the_class_itself():
    from lambdawrap.handler.invocation import describe_exception

    # The metaclass's lookups raised out of describe_exception, and the record was lost.
    described = describe_exception(_raised(lambda: (_ for _ in ()).throw(_NamesHidden("hidden"))))
    assert described["type"] == f"{__name__}._NamesHidden"
    assert described["message"] == "hidden"


def test_our_failure_is_never_raised_by_a_log_handler_that_cannot_format_it():
    from lambdawrap.shared.log import Failures

    class RuntimeLikeHandler(logging.Handler):
        """As awslambdaric's: emit formats without handleError, so what formatting raises goes on."""

        def emit(self, record):
            self.format(record)

    def unformattable(record):
        raise AttributeError("cannot format")

    handler = RuntimeLikeHandler()
    handler.format = unformattable
    logger = logging.getLogger("lambdawrap.test_unformattable")
    logger.addHandler(handler)
    try:
        failures = Failures("lambdawrap.test_unformattable")
        try:
            raise ValueError("ours")
        except ValueError:
            failures.record("a step of ours")
        assert failures.count == 1
    finally:
        logger.removeHandler(handler)


PRIVATE_WRAPT_PROBE = """
import json, os, sys
from lambdawrap.handler import private_wrapt
boot_dir = sys.argv[1]
try:
    module = private_wrapt.load(boot_dir)
    found = module.__file__
except ImportError as exc:
    found = "ImportError"
print(json.dumps({"found": found, "in_sys_modules": private_wrapt.PRIVATE_NAME in sys.modules, "wrapt_imported": "wrapt" in sys.modules}))
"""


def _private_wrapt(boot_dir: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PRIVATE_WRAPT_PROBE, boot_dir], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_built_layer_without_wrapt_for_this_python_loads_none_found_on_the_path(tmp_path):
    # GIVEN a built layer (its private folder there) whose wrapt is for another Python, and a
    # wrapt on the path (another layer's, the function's: wrapt 2's extension imports its own
    # package as it loads, which would become the function's `wrapt`)
    boot = tmp_path / "layer" / "python" / "lambdawrap_boot"
    boot.mkdir(parents=True)
    (tmp_path / "layer" / "lambdawrap" / "handler-lib" / "wrapt").mkdir(parents=True)
    (tmp_path / "layer" / "lambdawrap" / "handler-lib" / "wrapt" / "_wrappers.cpython-39-x86_64-linux-gnu.so").write_bytes(b"")
    # THEN none is loaded: the function runs uninstrumented, as the README says (before: the
    # one on the path was loaded)
    assert _private_wrapt(str(boot)) == {"found": "ImportError", "in_sys_modules": False, "wrapt_imported": False}
    # ... and from a source checkout (no private folder) the one installed beside it is, and
    # it is left out of sys.modules, where it could be neither imported nor reloaded
    found = _private_wrapt(str(tmp_path / "elsewhere" / "python" / "lambdawrap_boot"))
    assert found["found"].endswith(".so") and found["in_sys_modules"] is False and found["wrapt_imported"] is False, found


def test_a_first_request_long_after_the_handler_loaded_is_a_proactive_init_whatever_the_monotonic_clock_says(monkeypatch):
    from support.recording import CONTEXT, tracer

    # GIVEN a process whose handler loaded, then waited frozen for its first request: wall-clock
    # time went on, the monotonic clock (which a frozen guest may not advance) stood still
    wrapper, channel = tracer(proactive_init_ms=300)
    wrapper.handler_loaded()
    frozen = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: frozen)
    real_time_ns = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real_time_ns() + 60 * 10**9)
    # WHEN the first request comes
    wrapper.wrap(lambda event, context: None)({}, CONTEXT)
    # THEN it is a proactive init, not a cold start (before: counted on the monotonic clock)
    (record,) = channel.records
    assert (record["start"]["proactive_init"], record["start"]["cold_start"]) == (True, False)


def test_when_lambdawrap_fails_before_the_handler_its_error_has_the_traceback_it_has_without_the_layer(monkeypatch):
    import traceback

    from support.recording import CONTEXT, tracer

    # GIVEN a handler that raises, wrapped
    wrapper, channel = tracer()

    def handler(event, context):
        raise ValueError("boom")

    wrapped = wrapper.wrap(handler)

    def entries() -> list:
        try:
            wrapped({}, CONTEXT)
        except ValueError as exc:
            return [(entry.filename, entry.name) for entry in traceback.extract_tb(exc.__traceback__)]
        raise AssertionError("the handler's error did not come through")

    instrumented = entries()
    # WHEN lambdawrap's own work before the handler fails (instrumentation fails open)
    monkeypatch.setattr(type(wrapper), "_before", lambda self, args, kwargs: 1 / 0)
    failed_open = entries()
    # THEN the error the runtime reports has the traceback of the handler alone, as when
    # instrumented (before: the wrapper's frame was in it, in the stack trace the caller got)
    assert failed_open == instrumented and instrumented[-1][1] == "handler", (failed_open, instrumented)
    assert len(channel.records) == 1


def test_a_handler_s_warning_or_log_line_naming_its_caller_names_the_same_line_with_the_wrapper_between():
    import warnings

    from support.recording import CONTEXT, tracer

    # GIVEN a handler that warns and logs naming its caller (stacklevel=2), as a deprecation
    # helper does
    logger = logging.getLogger("stacklevel-probe")

    def handler(event, context):
        warnings.warn("old API", DeprecationWarning, stacklevel=2)
        logger.warning("old API", stacklevel=2)

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.pathname, record.lineno))

    wrapper, _ = tracer()
    wrapped = wrapper.wrap(handler)
    lines = Lines()
    logger.addHandler(lines)
    try:
        for call in (handler, wrapped):  # without the wrapper, then with it
            seen: list = []
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                here = sys._getframe().f_lineno + 1
                call({}, CONTEXT)
            seen.append((caught[0].filename, caught[0].lineno))
            # THEN both name this line, the handler's caller (before: the wrapper's line)
            assert seen == [(__file__, here)] * 2, seen
    finally:
        logger.removeHandler(lines)


SUGGESTION_PROBE = """
import json, sys
from lambdawrap.handler.invocation import describe_exception

class Order:
    amount = 1

def failures():
    try:
        Order().amout
    except AttributeError as error:
        yield error
    try:
        sys.modules  # a name that is no name
        undefined_totl = 1
        print(undefined_tota)
    except NameError as error:
        yield error
    try:
        math.pi
    except NameError as error:
        yield error
    try:
        from json import dumsp
    except ImportError as error:
        yield error
    # The function's own words, which no Python adds
    yield AttributeError("Unknown field 'nme'. Did you mean: 'name'?")
    yield ImportError("plugin 'x' missing. Did you forget to import 'plugins'?")
    # ... and its own subclass, whose `name` cannot be read
    class FieldError(AttributeError):
        @property
        def name(self):
            raise IndexError("no field")

    yield FieldError("bad field")

print(json.dumps([[str(error), describe_exception(error)["message"], describe_exception(error)["stack"].splitlines()[-1]] for error in failures()]))
"""


def test_an_exception_whose_class_hides_its_name_is_still_described():
    from lambdawrap.handler.invocation import describe_exception

    # GIVEN an exception whose metaclass refuses to give its class's name
    class Meta(type):
        def __getattribute__(cls, name):
            if name == "__name__":
                raise RuntimeError("no name")
            return type.__getattribute__(cls, name)

    class Hidden(Exception, metaclass=Meta):
        pass

    try:
        raise Hidden("declined")
    except Hidden as error:
        # WHEN it is described THEN it is (before: describing it raised, and its record was lost)
        try:
            described = describe_exception(error)
        except Exception as failure:  # noqa: BLE001 - told below, outside the exception's context
            described = {"raised": repr(failure)}
    assert described.get("message") == "declined" and described["type"].endswith("Hidden"), described


@every_python
def test_an_exceptions_message_is_its_text_without_pythons_suggestions(interpreter, python_version):
    # GIVEN the errors Python 3.12+ adds a suggestion to as it formats them ("Did you mean",
    # "Did you forget to import")
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    done = subprocess.run([interpreter.path, "-c", SUGGESTION_PROBE], capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=src))
    assert done.returncode == 0, done.stderr
    # WHEN each is described THEN its message is its text, as the runtime's errorMessage and the
    # SDK's exception.message are (before: with the suggestion on 3.12+), and its stack ends as
    # Python prints it but for a "Did you mean" (which runs the function's code to find it)
    described = json.loads(done.stdout)
    assert [message for _, message, _ in described] == [text for text, _, _ in described]
    if python_version >= "3.12":
        lasts = [last for _, _, last in described[:4]]
        assert not [last for last in lasts if "Did you mean" in last] and "Did you forget to import 'math'" in lasts[2], described
    # ... the function's own suggestions kept, on every version (before: cut on 3.10 and 3.11,
    # which add none)
    assert [message for _, message, _ in described[-3:]] == ["Unknown field 'nme'. Did you mean: 'name'?", "plugin 'x' missing. Did you forget to import 'plugins'?", "bad field"]


CODE_RUN_BY_SUGGESTIONS_PROBE = """
import json, sys
from lambdawrap.handler.invocation import describe_exception

RAN = []

class Client:
    @property
    def session(self):
        RAN.append("property")
        return 1

    def run(self):
        return session  # noqa: F821 - "self." forgotten

class Lazy:
    def __dir__(self):
        RAN.append("__dir__")
        return ["value"]

failures = []
try:
    Client().run()
except NameError as error:
    failures.append(error)
try:
    Lazy().valu
except AttributeError as error:
    failures.append(error)
error = ImportError("cannot import name 'x' from 'plugins_never_imported'", name="plugins_never_imported")
error.name_from = "x"  # as the import system sets it, 3.12+
failures.append(error)

class Loud(Exception):
    def __str__(self):  # describes an exception of its own as it is described
        describe_exception(ValueError("inner"))
        return "loud"

try:
    try:
        Client().run()
    except NameError:
        raise Loud()
except Loud as error:
    failures.append(error)
described = [describe_exception(error) for error in failures]
ran = list(RAN)
# The function's own formatting still has Python's suggestions
import traceback
own = "".join(traceback.format_exception(failures[0]))
print(json.dumps({"ran": ran, "imported": "plugins_never_imported" in sys.modules, "messages": [d["message"] for d in described], "own": own.splitlines()[-1]}))
"""


@every_python
def test_describing_an_exception_runs_none_of_the_functions_code_to_suggest_a_name(interpreter, python_version, tmp_path):
    # GIVEN a NameError raised in a method whose object has a property of that name, an
    # AttributeError of an object with its own __dir__, an ImportError of a module not loaded,
    # and the NameError again, the context of an exception whose __str__ describes another
    (tmp_path / "plugins_never_imported.py").write_text("RAN = open(__file__ + '.ran', 'w')\n")
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    done = subprocess.run([interpreter.path, "-c", CODE_RUN_BY_SUGGESTIONS_PROBE], capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=os.pathsep.join([src, str(tmp_path)])), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    # WHEN each is described THEN neither the property, nor __dir__, nor the module ran (before,
    # on 3.12+: Python's search for a "Did you mean" ran all three, as the runtime never does)
    assert found["ran"] == [] and found["imported"] is False and not (tmp_path / "plugins_never_imported.py.ran").exists(), found
    assert found["messages"] == ["name 'session' is not defined", "'Lazy' object has no attribute 'valu'", "cannot import name 'x' from 'plugins_never_imported'", "loud"]
    # ... and the function formatting its own errors still gets Python's suggestions
    if python_version >= "3.12":
        assert found["own"] == "NameError: name 'session' is not defined. Did you mean: 'self.session'?", found


def test_spans_that_went_beside_an_invocation_record_that_could_not_go_are_counted_not_sent(tmp_path):
    from lambdawrap.shared import records

    # GIVEN a channel whose invocation record finds no room in the socket's buffer, its spans
    # too many to ride with it
    class FullForRecords(Channel):
        def __init__(self, path: str) -> None:
            super().__init__(path)
            self.sent_kinds: list = []

        def _send_frame(self, frame, kind, reported, weight=1):  # noqa: ANN001 - the channel's own
            if kind == records.INVOCATION:
                self._count_drop(kind, companion_alive=True)
                return False
            self.sent_kinds.append(kind)
            return True

    channel = FullForRecords(str(tmp_path / "lw.sock"))
    now = time.time_ns()
    spans = [{"name": f"s{n}", "trace_id": "0" * 31 + "1", "span_id": f"{n + 1:016x}", "parent_span_id": "0" * 15 + "2", "start_ns": now, "end_ns": now, "kind": 1, "attributes": {"text": "x" * 1000}, "status": [0, ""], "events": [], "scope": "s"} for n in range(400)]
    start = records.encode_invocation_start(request_id="r", function_arn="arn:aws:lambda:us-east-1:123456789012:function:f", trace_id=1, span_id=2, parent_span_id=0, sampled=True, start_ns=now, cold_start=False, proactive_init=False, trigger="other", attributes={}, links=[], span_name="f", span_kind=2)
    # WHEN it is sent
    end = records.invocation_end(now)
    end["spans"] = spans
    assert channel.send_invocation(start, end) is False
    # THEN its spans do not go as orphans of a span never made: each is counted (the record is
    # the companion's to count, as record_missing)
    assert channel.sent_kinds == [] and channel.dropped == 400


def test_an_invocation_whose_record_could_not_go_leaves_its_start_in_its_slot(tmp_path):
    from lambdawrap.handler.invocation import InvocationTracer
    from lambdawrap.shared import inflight
    from support.recording import CONTEXT, RecordingChannel

    # GIVEN a live companion with no room for an invocation's record (the socket's buffer full)
    class NoRoom(RecordingChannel):
        def send_invocation(self, start_json: bytes, end: dict) -> bool:
            self.records.append(json.loads(start_json))
            return False

    channel = NoRoom()
    socket_path = str(tmp_path / "lw.sock")
    wrapper = InvocationTracer(Settings(socket_path=socket_path), channel, environ={})

    def failing(event: object, context: object) -> None:
        raise ValueError("bad order")

    # WHEN the handler fails and its record cannot go
    with pytest.raises(ValueError):
        wrapper.wrap(failing)({}, CONTEXT)
    # THEN the companion, accounting for it from the platform's word, reads the start the
    # process chose in its slot: the span keeps its trace (before: the slot was cleared, and
    # the span was made with ids of the companion's, in another trace)
    (tried,) = channel.records
    held = inflight.read(socket_path, CONTEXT.aws_request_id)
    assert held is not None and (held["trace_id"], held["span_id"]) == (tried["trace_id"], tried["span_id"])
    # ... but not where the companion is gone: the slot would outlive the environment, for a
    # retry of the request in the next to take for its own
    channel.companion_refused = True
    with pytest.raises(ValueError):
        wrapper.wrap(failing)({}, CONTEXT)
    assert inflight.read(socket_path, CONTEXT.aws_request_id) is None


def test_a_process_restored_from_a_snapshot_draws_ids_of_its_own_and_its_first_request_is_cold():
    from lambdawrap.shared import ids
    from support.recording import CONTEXT, RecordingChannel
    from lambdawrap.handler.invocation import InvocationTracer

    # GIVEN a process of a SnapStart function, restored from the snapshot taken after its init
    # (long ago: the version's publication), as other environments may restore it too
    channel = RecordingChannel()
    wrapper = InvocationTracer(Settings(proactive_init_ms=300), channel, booted_at=time.time() - 3600, environ={"AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"})
    snapshot = ids._generator.getstate()
    # WHEN its first request comes
    wrapper.wrap(lambda event, context: None)({}, CONTEXT)
    # THEN its trace id is not the one every copy of the snapshot would draw (the generator is
    # seeded again first), and its first request is its cold start, no proactive init
    (record,) = channel.records
    ids._generator.setstate(snapshot)
    drawn_from_the_snapshot = ids.new_trace_id()
    ids.reseed()  # the rest of the suite draws ids of its own
    assert record["start"]["trace_id"] != f"{drawn_from_the_snapshot:032x}"
    assert (record["start"]["cold_start"], record["start"]["proactive_init"]) == (True, False)


def test_the_headers_a_secret_must_not_set_are_those_of_an_endpoint_ignored_as_bad():
    # The companion reads them before it applies the corrections, for the header secrets.
    from lambdawrap.shared.otlp_variables import headers_of_ignored_endpoints

    env = {**GENERAL, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "vendor-b.example:443/v1/traces", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": " "}
    corrections = Settings.from_env(env, warn=False).sdk_corrections
    # A bad one (no scheme) takes its headers with it; a blank one is unset, as if never set
    assert headers_of_ignored_endpoints(corrections, env) == {"OTEL_EXPORTER_OTLP_TRACES_HEADERS"}


@pytest.mark.parametrize(
    ("levels", "warned"),
    [({"AWS_LAMBDA_LOG_LEVEL": "ERROR"}, False), ({"AWS_LAMBDA_LOG_LEVEL": "fatal"}, False), ({"AWS_LAMBDA_LOG_LEVEL": "WARN"}, True), ({"AWS_LAMBDA_LOG_LEVEL": "ERROR", "LAMBDAWRAP_LOG_LEVEL": "warn"}, False), ({"AWS_LAMBDA_LOG_LEVEL": "ERROR", "LAMBDAWRAP_LOG_LEVEL": "Warning"}, True)],
    ids=["error", "fatal", "warn", "own-level-unknown", "own-level-set"],
)
def test_the_boot_s_settings_warnings_keep_to_the_function_s_log_level(tmp_path, levels, warned):
    # GIVEN a function's process that warns about a bad value itself (no companion expected),
    # whose log level (AWS_LAMBDA_LOG_LEVEL) is ERROR or FATAL, or whose LAMBDAWRAP_LOG_LEVEL
    # names no level
    environ = {"LAMBDAWRAP_FLUSH": "bogus", "_HANDLER": "", **levels}
    script = f"from lambdawrap.handler import boot\nboot.initialize({environ!r})\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    # THEN the warning is there only where the function's own would be, or where
    # LAMBDAWRAP_LOG_LEVEL names warning (before: the settings warned before lambdawrap's level
    # was set, and a LAMBDAWRAP_LOG_LEVEL that named no level set it to warning)
    assert out.returncode == 0, out.stderr
    assert ("ignoring LAMBDAWRAP_FLUSH='bogus'" in out.stderr) is warned, out.stderr


def test_spans_a_thread_ends_as_the_handler_returns_go_with_the_record_or_alone_never_lost(tmp_path, listener, sock_path):
    server, received = listener
    # GIVEN a handler whose worker thread (in the invocation's trace) ends spans in a loop while
    # the handler returns and its record is made, 300 invocations over, switching threads as
    # often as the interpreter can
    (tmp_path / "racing.py").write_text(textwrap.dedent("""
        import threading, time
        from opentelemetry import context, trace

        tracer = trace.get_tracer("race")
        ended, stop, threads = [0], threading.Event(), []

        def worker(ctx):
            context.attach(ctx)
            while not stop.is_set():
                tracer.start_span("w").end()
                ended[0] += 1

        def handler(event, ctx):
            stop.clear()
            threads.append(threading.Thread(target=worker, args=(context.get_current(),)))
            threads[-1].start()
            time.sleep(0.0005)
            return "ok"
        """))
    count_file = tmp_path / "ended"
    run_booted(tmp_path, sock_path, "unused", f"""
        import fcntl, json, struct, termios, time
        sys.setswitchinterval(1e-6)
        import racing
        # Records the channel could not send (a socket buffer the listener, on a busy machine,
        # did not drain in time): whole records lost, which is another test's matter
        channel = boot._state["channel"]

        def drained():
            # Paced as the listener reads: what the peer has not read yet (TIOCOUTQ), none left.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                sock = channel._sock
                try:
                    if sock is None or struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4)))[0] == 0:
                        return
                except OSError:  # closed as it was read: nothing left to wait for
                    return
                time.sleep(0.001)
        send_invocation, refused = channel.send_invocation, [0]

        def counted(*args, **kwargs):
            sent = send_invocation(*args, **kwargs)
            refused[0] += not sent
            return sent

        channel.send_invocation = counted
        handler = looked_up("racing.handler")
        for n in range(300):
            handler({{}}, types.SimpleNamespace(aws_request_id=f"r{{n}}", invoked_function_arn="arn:x"))
            racing.stop.set()
            racing.threads.pop().join()
            time.sleep(0.005)  # paced, as invocations come
            drained()
        open({str(count_file)!r}, "w").write(json.dumps([racing.ended[0], refused[0], channel.dropped]))
        """, LAMBDAWRAP_MAX_SPANS_PER_INVOCATION="100000")
    ended, refused, dropped = json.loads(count_file.read_text())
    if refused or dropped:
        pytest.skip(f"inconclusive: the listener fell behind, and the channel dropped {refused} records and {dropped} spans")

    def accounted() -> int:
        in_records = sum(len(r["end"].get("spans") or []) + (r["end"].get("spans_dropped") or 0) for r in received if r.get("type") == "invocation")
        # (a span the channel could not send is counted with the next record: none expected)
        return in_records + sum(len(r.get("spans") or []) for r in received if r.get("type") == "spans") + sum(r.get("dropped") or 0 for r in received)

    wait_for(lambda: sum(1 for r in received if r.get("type") == "invocation") == 300, timeout=60, what="300 records")
    # THEN every span ended is in an invocation's record or went alone (before: a span appended
    # to a record already sent was lost, uncounted: a few in each run)
    wait_for(lambda: accounted() >= ended, timeout=60, what=f"{ended} spans")
    assert accounted() == ended


@pytest.mark.parametrize("shape", ["package", "namespace package", "module"])
def test_a_lambdawrap_of_the_function_s_own_is_told_from_a_copy_of_the_layer_s(tmp_path, shape):
    # GIVEN a function folder with a top-level lambdawrap of its own, in each form Python imports
    if shape == "module":
        (tmp_path / "lambdawrap.py").write_text("")
    else:
        (tmp_path / "lambdawrap").mkdir()
        if shape == "package":
            (tmp_path / "lambdawrap" / "__init__.py").write_text("")
    own = boot.function_s_own_lambdawrap({"LAMBDA_TASK_ROOT": str(tmp_path)})
    # THEN the boot finds it (and steps aside: tests/test_differential.py, own_lambdawrap)
    assert own == str(tmp_path / ("lambdawrap.py" if shape == "module" else "lambdawrap"))


def test_a_copy_of_the_layer_s_package_in_the_function_s_folder_is_not_the_function_s_own(tmp_path):
    # GIVEN lambdawrap itself bundled with the function (to use lambdawrap.secrets in its tests)
    (tmp_path / "lambdawrap" / "handler").mkdir(parents=True)
    (tmp_path / "lambdawrap" / "handler" / "boot.py").write_text("")
    # THEN it is not one of the function's own: the layer instruments as ever
    assert boot.function_s_own_lambdawrap({"LAMBDA_TASK_ROOT": str(tmp_path)}) is None
    assert boot.function_s_own_lambdawrap({"LAMBDA_TASK_ROOT": str(tmp_path / "elsewhere")}) is None
    assert boot.function_s_own_lambdawrap({}) is None


FORKS_AS_IT_LOADS = """
import os, sys
from lambdawrap.handler import init_trace
from lambdawrap.handler.channel import Channel
from lambdawrap.handler.invocation import InvocationTracer
from lambdawrap.shared.settings import Settings

InvocationTracer(Settings(socket_path=sys.argv[1]), Channel(sys.argv[1]), environ={})
print("parent:" + ("none" if init_trace.current() is None else "init"), flush=True)
child = os.fork()
if child == 0:
    print("child:" + ("none" if init_trace.current() is None else "init"), flush=True)
    os._exit(0)
os.waitpid(child, 0)
"""


class TestInitTrace:
    """What the handler's module does as it loads is the init span's (handler/init_trace.py)."""

    def test_spans_made_as_the_module_loads_share_one_init_context_that_ends_when_it_has_loaded(self, sock_path):
        from lambdawrap.handler import init_trace
        from lambdawrap.handler.invocation import InvocationTracer

        tracer = InvocationTracer(Settings(socket_path=sock_path), Channel(sock_path), environ={})
        first, again = init_trace.current(), init_trace.current()
        assert first is again and first.sampled and init_trace.ids_for({"trace_id": first.trace_hex}) == [first.trace_hex, first.span_hex]
        assert init_trace.ids_for({"trace_id": "1" * 32}) is None  # a span of another trace
        tracer.handler_loaded()
        assert init_trace.current() is None

    def test_an_unsampled_init_names_no_init_span_to_the_first_invocation(self, sock_path):
        from lambdawrap.handler import init_trace
        from lambdawrap.handler.invocation import InvocationTracer

        # GIVEN a module that made a call as it loaded, in a trace the sampler did not sample
        tracer = InvocationTracer(Settings.from_env({"OTEL_TRACES_SAMPLER": "always_off", "LAMBDAWRAP_SOCKET": sock_path}), Channel(sock_path), environ={})
        assert init_trace.current() is not None and not init_trace.current().sampled
        tracer.handler_loaded()
        # THEN the first invocation's start names no init span (its span is not made: the trace
        # records nothing), as it does for a sampled one
        assert init_trace.chosen_ids() is None

    @pytest.mark.parametrize("environ", [{"AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start"}, {"AWS_LAMBDA_INITIALIZATION_TYPE": "lambda-managed-instances"}], ids=["SnapStart", "Managed Instances"])
    def test_no_init_context_where_the_init_span_could_not_hold_it(self, sock_path, environ):
        from lambdawrap.handler import init_trace
        from lambdawrap.handler.invocation import InvocationTracer

        # A snapshot's every restored copy would export the ids it holds; on Managed Instances
        # every worker loads the module, for one init span.
        InvocationTracer(Settings.from_env({**environ, "LAMBDAWRAP_SOCKET": sock_path}), Channel(sock_path), environ=environ)
        assert init_trace.current() is None

    def test_a_process_forked_as_the_module_loads_makes_no_init_span_s_children(self, sock_path):
        # GIVEN a module that forks a process of its own as it loads (a poller), in a process of
        # its own: a fork of the test runner's would run the fork handlers of every export
        # pipeline earlier tests made, which start threads in the child
        forks = subprocess.run([sys.executable, "-c", FORKS_AS_IT_LOADS, sock_path], capture_output=True, text=True, timeout=60)
        # THEN what the child does is not the init's (before the fork handler: it stayed so
        # for the child's life, its calls children of an init span long exported)
        assert forks.stdout.split() == ["parent:init", "child:none"], forks.stderr
