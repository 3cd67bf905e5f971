"""Secret preloading through the real stack: emulator + layer + companion + a real moto server."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Iterator

import boto3
import pytest

from conftest import install_extension, wait_for, write_function
from lambdawrap.devtools.emulator import Emulator
from lambdawrap.shared.secret_sources import SecretSource, parse_sources
from lambdawrap.devtools.local.moto_server import MotoServer
from lambdawrap.devtools.local.ports import free_port
from lambdawrap.devtools.local.stack import seed_moto
from support.pip_target import installed
from support.python_versions import every_python
from support.stack import LAYER, instrumented, metric_total

DB_PASSWORD = "s3cr3t-DB-value-7f1c"
API_KEY = "api-KEY-value-99ab"
ROTATED = "r0tated-DB-value-2e4d"

APP = """
import json, os, time, urllib.request, urllib.error
from lambdawrap.handler import secret_cache as secrets

AT_IMPORT = {"DB_PASSWORD": os.environ.get("DB_PASSWORD"), "API_KEY": os.environ.get("API_KEY")}

def handler(event, context):
    if "get" in event:
        return {"value": secrets.get(event["get"])}
    if "http" in event:
        req = urllib.request.Request("http://localhost:%s%s" % (event["port"], event["http"]))
        if event.get("token"):
            req.add_header("X-Aws-Parameters-Secrets-Token", os.environ["AWS_SESSION_TOKEN"])
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return {"status": resp.status, "body": json.loads(resp.read())}
        except urllib.error.HTTPError as err:
            return {"status": err.code, "error": err.read().decode(errors="replace")}
    return {"at_import": AT_IMPORT, "accessor": secrets.get("DB_PASSWORD")}
"""


class TestSyntax:
    def test_entries(self):
        sources, problems = parse_sources(
            "DB_PASSWORD=secretsmanager:prod/db#password, API_KEY=ssm:/prod/api/key,"
            "OLD=secretsmanager:arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf#password@AWSPREVIOUS,"
            "WHOLE=secretsmanager:plain@AWSCURRENT"
        )
        assert problems == []
        assert sources == [
            SecretSource("DB_PASSWORD", "secretsmanager", "prod/db", "password"),
            SecretSource("API_KEY", "ssm", "/prod/api/key"),
            SecretSource("OLD", "secretsmanager", "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf", "password", "AWSPREVIOUS"),
            SecretSource("WHOLE", "secretsmanager", "plain", None, "AWSCURRENT"),
        ]

    def test_a_json_key_with_an_at_sign_takes_an_explicit_stage(self):
        # The text after the last '@' is the stage: without one, a key's '@' would start it.
        sources, problems = parse_sources("ADMIN=secretsmanager:prod/users#admin@example.com@AWSCURRENT,OOPS=secretsmanager:prod/users#admin@example.com")
        assert problems == []
        assert sources == [SecretSource("ADMIN", "secretsmanager", "prod/users", "admin@example.com", "AWSCURRENT"), SecretSource("OOPS", "secretsmanager", "prod/users", "admin", "example.com")]

    def test_a_json_key_on_a_parameter_is_named_as_such(self):
        # The entry would be right for secretsmanager: (before: "'#' cannot be in a secret's or
        # parameter's name; entries are separated by commas")
        sources, problems = parse_sources("CONFIG=ssm:/prod/config#password")
        assert sources == [] and problems == ["ignoring LAMBDAWRAP_SECRETS entry 'CONFIG=ssm:/prod/config#password' (a JSON key after '#' is for secretsmanager: sources; an ssm: parameter's value is injected whole)"]

    @pytest.mark.parametrize("entry", ["NOEQUALS", "1BAD=ssm:/x", "X=vault:thing", "X=ssm:", "X=secretsmanager:#key", "=ssm:/x", "_HANDLER=ssm:/x", "AWS_SESSION_TOKEN=ssm:/x", "X=secretsmanager:a;Y=ssm:/b", "X=ssm:/a\nY=ssm:/b", "X=secretsmanager:my secret#key", "X=secretsmanager:prod/db#", "X=secretsmanager:prod/db#@AWSPREVIOUS"])
    def test_bad_entries_are_reported_not_raised(self, entry):
        sources, problems = parse_sources(entry + ",GOOD=ssm:/ok")
        assert sources == [SecretSource("GOOD", "ssm", "/ok")]
        assert len(problems) == 1 and "LAMBDAWRAP_SECRETS" in problems[0]


@pytest.fixture
def moto():
    with MotoServer() as server:
        seed_moto(server, {"secrets": {"prod/db": {"password": DB_PASSWORD, "user": "app"}}, "parameters": {"/prod/api/key": API_KEY}})
        yield server


@pytest.fixture
def task(tmp_path: Path) -> Path:
    return write_function(tmp_path / "task", APP)


def secrets_env(moto: MotoServer, **extra) -> dict:
    env = {
        "AWS_ENDPOINT_URL": moto.endpoint,
        "LAMBDAWRAP_SECRETS": "DB_PASSWORD=secretsmanager:prod/db#password,API_KEY=ssm:/prod/api/key",
        # Generous: on a busy machine the companion's first fetch can outlast the default 1.5 s,
        # and the boot would then fetch by itself (the first test asserts it did not).
        "LAMBDAWRAP_SECRETS_TIMEOUT_MS": "15000",
        "LAMBDAWRAP_SECRETS_PORT": str(free_port()),
    }
    env.update(extra)
    return env


def everything_captured(emu, rx) -> str:
    """All the emulator's records and logs and all the receiver got, as one searchable text."""
    return json.dumps([emu.records(), emu.log_lines(), rx.spans(), rx.metrics(), rx.logs()], default=str)


@every_python
def test_injected_before_import_refreshed_served_and_never_leaked(task, moto, runtime_python):
    # The boot waits long enough for the companion to import boto3 and fetch, however busy
    # the machine (3.10 imports boto3 about twice as slowly as 3.11): this test is about who
    # fetches, not how fast.
    env = secrets_env(moto, LAMBDAWRAP_SECRETS_TTL="1", LAMBDAWRAP_SECRETS_TIMEOUT_MS="20000")
    with instrumented(task, env=env, python=runtime_python) as (emu, rx):
        first = emu.invoke({}).json()
        assert first == {"at_import": {"DB_PASSWORD": DB_PASSWORD, "API_KEY": API_KEY}, "accessor": DB_PASSWORD}
        # The handler side made no AWS call: the companion fetched both, during init.
        calls = moto.requests()
        assert {c["target"] for c in calls} == {"secretsmanager.GetSecretValue", "AmazonSSM.GetParameter"}
        assert all("lambdawrap/companion" in c["user_agent"] for c in calls)
        assert not any("lambdawrap/boot" in c["user_agent"] for c in calls)

        # Rotation: seen within about one TTL, and no invocation waits for the refresh.
        emu.wait_idle()  # the first invocation's export is done; time only what follows
        moto.client("secretsmanager").put_secret_value(SecretId="prod/db", SecretString=json.dumps({"password": ROTATED}))
        rotated_at = time.monotonic()
        seen, slowest = None, 0.0
        while time.monotonic() - rotated_at < 6:
            result = emu.invoke({"get": "DB_PASSWORD"})
            slowest = max(slowest, result.duration_ms)
            if result.json()["value"] == ROTATED:
                seen = time.monotonic() - rotated_at
                break
            emu.wait_idle()
            time.sleep(0.1)
        assert seen is not None and seen < 3.5, seen
        assert slowest < 100, slowest

        # The Parameters and Secrets extension's API, on the configured port.
        port = env["LAMBDAWRAP_SECRETS_PORT"]
        ok = emu.invoke({"http": "/secretsmanager/get?secretId=prod%2Fdb", "port": port, "token": True}).json()
        assert ok["status"] == 200 and json.loads(ok["body"]["SecretString"])["password"] == ROTATED and ok["body"]["Name"] == "prod/db", ok
        param = emu.invoke({"http": "/systemsmanager/parameters/get?name=%2Fprod%2Fapi%2Fkey&withDecryption=true", "port": port, "token": True}).json()
        assert param["status"] == 200 and param["body"]["Parameter"]["Value"] == API_KEY, param
        refused = emu.invoke({"http": "/secretsmanager/get?secretId=prod%2Fdb", "port": port}).json()
        assert refused["status"] == 401 and json.loads(refused["error"])["error"] == "Unauthorized", refused
        emu.wait_idle()
    captured = everything_captured(emu, rx)
    assert rx.spans(), "the run exported spans"
    for value in (DB_PASSWORD, API_KEY, ROTATED):
        assert value not in captured


CROSS_REGION_APP = """
import json, os, urllib.request
AT_IMPORT = {"FAR_SECRET": os.environ.get("FAR_SECRET"), "FAR_PARAM": os.environ.get("FAR_PARAM")}

def handler(event, context):
    req = urllib.request.Request("http://localhost:%s/secretsmanager/get?secretId=%s" % (os.environ["LAMBDAWRAP_SECRETS_PORT"], event["arn"]))
    req.add_header("X-Aws-Parameters-Secrets-Token", os.environ["AWS_SESSION_TOKEN"])
    with urllib.request.urlopen(req, timeout=5) as resp:
        return {"at_import": AT_IMPORT, "served": json.loads(resp.read())["SecretString"]}
"""


@pytest.mark.parametrize("timeout_ms", ["15000", "1"], ids=["companion", "boot"])
def test_a_secret_and_a_parameter_declared_by_the_arn_of_another_region_are_loaded(tmp_path, moto, timeout_ms):
    # GIVEN a function in us-east-1 declaring a secret and a parameter that live in eu-west-1 by
    # their ARNs (Secrets Manager and Parameter Store are regional: only eu-west-1's endpoint
    # finds them), loaded by the companion or, when it is not waited for, by the boot itself
    # before: both asked us-east-1, ResourceNotFoundException / ParameterNotFound, left unset
    far = lambda service: boto3.client(service, endpoint_url=moto.endpoint, region_name="eu-west-1", aws_access_key_id="test", aws_secret_access_key="test")
    arn = far("secretsmanager").create_secret(Name="shared/api", SecretString=json.dumps({"key": "far-k3y-value"}))["ARN"]
    far("ssm").put_parameter(Name="/shared/flag", Value="far-param-value", Type="SecureString")
    parameter_arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/shared/flag"
    task = write_function(tmp_path / "task", CROSS_REGION_APP)
    env = secrets_env(moto, LAMBDAWRAP_SECRETS=f"FAR_SECRET=secretsmanager:{arn}#key,FAR_PARAM=ssm:{parameter_arn}", LAMBDAWRAP_SECRETS_TIMEOUT_MS=timeout_ms)
    with instrumented(task, env=env) as (emu, rx):
        body = emu.invoke({"arn": arn}).json()
        emu.wait_idle()
    # THEN both are in os.environ at import, and the secrets API serves the secret by its ARN
    assert body["at_import"] == {"FAR_SECRET": "far-k3y-value", "FAR_PARAM": "far-param-value"}
    assert json.loads(body["served"]) == {"key": "far-k3y-value"}


def test_missing_secret_warns_and_leaves_variable_unset(task, moto):
    env = secrets_env(moto, LAMBDAWRAP_SECRETS="DB_PASSWORD=secretsmanager:prod/db#password,GONE=secretsmanager:does/not/exist")
    with instrumented(task, env=env) as (emu, rx):
        body = emu.invoke({}).json()
        assert body["at_import"]["DB_PASSWORD"] == DB_PASSWORD
        assert emu.invoke({"get": "GONE"}).json() == {"value": None}
        warnings = [line for line in emu.log_lines("function") if "does/not/exist" in line]
        assert len(warnings) == 1 and "ResourceNotFoundException" in warnings[0] and "left as it was" in warnings[0]
        emu.wait_idle()
    assert DB_PASSWORD not in everything_captured(emu, rx)


@pytest.mark.parametrize(("levels", "warned"), [({"AWS_LAMBDA_LOG_LEVEL": "ERROR"}, 0), ({"AWS_LAMBDA_LOG_LEVEL": "WARN"}, 1), ({"AWS_LAMBDA_LOG_LEVEL": "ERROR", "LAMBDAWRAP_LOG_LEVEL": "warning"}, 1)], ids=["error", "warn", "own-level-set"])
def test_lambdawrap_s_warning_in_the_function_s_log_is_kept_below_the_function_s_own_log_level(task, moto, levels, warned):
    # GIVEN a function whose log level (advanced logging controls, JSON format) is ERROR: the
    # runtime keeps its own warnings out of the log; lambdawrap's boot warned about a missing
    # secret all the same (its logger's level was LAMBDAWRAP_LOG_LEVEL's default, warning)
    env = secrets_env(moto, LAMBDAWRAP_SECRETS="GONE=secretsmanager:does/not/exist", AWS_LAMBDA_LOG_FORMAT="JSON", **levels)
    with instrumented(task, env=env) as (emu, rx):
        assert emu.invoke({"get": "GONE"}).json() == {"value": None}
        emu.wait_idle()
        # THEN its warning is there only where the function's own would be, or where
        # LAMBDAWRAP_LOG_LEVEL asks for it
        assert len([line for line in emu.log_lines("function") if "does/not/exist" in line]) == warned


def test_a_secret_missing_at_init_is_served_once_it_can_be_read(task, moto):
    # GIVEN the function's only declared secret missing at init (not created yet, or throttled
    # or denied for a moment): no other secret's refresh will bring it; the default TTL (5 min)
    env = secrets_env(moto, LAMBDAWRAP_SECRETS="LATE=secretsmanager:created/later")
    with instrumented(task, env=env) as (emu, rx):
        assert emu.invoke({"get": "LATE"}).json() == {"value": None}
        moto.client("secretsmanager").create_secret(Name="created/later", SecretString="arrived-value")
        # THEN secrets.get returns it within about 10 s: the function's side asks again 5 s
        # after a failure, and the companion asks AWS again when asked, its failure being over
        # 5 s old (before: None for the environment's life; then, until the TTL)
        deadline, value = time.monotonic() + 30, None
        while value is None and time.monotonic() < deadline:
            time.sleep(0.2)
            value = emu.invoke({"get": "LATE"}).json()["value"]
        assert value == "arrived-value"


def _traces_exported_with(task, moto, declared: str) -> tuple:
    """The trace exports the collector took from one invocation with `declared` secrets, and
    the companion's log."""
    with instrumented(task, env=secrets_env(moto, LAMBDAWRAP_SECRETS=declared)) as (emu, rx):
        emu.invoke({})
        rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"])
        exports = [r for r in rx.requests() if r["path"] == "/v1/traces" and r["status"] == 200]
        return exports, emu.log_lines("extension")


def test_the_collectors_credentials_can_be_a_secret(task, moto):
    # GIVEN the collector's headers (an API key) kept in Secrets Manager and declared as
    # OTEL_EXPORTER_OTLP_HEADERS, one entry of them malformed, and a per-signal one that cannot
    # be read
    moto.client("secretsmanager").create_secret(Name="collector/headers", SecretString="authorization=Bearer%20k3y-from-SM,x-team=core,x-bad")
    exports, lines = _traces_exported_with(task, moto, "OTEL_EXPORTER_OTLP_HEADERS=secretsmanager:collector/headers,OTEL_EXPORTER_OTLP_LOGS_HEADERS=secretsmanager:collector/gone")
    # THEN the companion's exports carry them (every signal: the general variable's), the bad
    # entry and the unreadable secret named in one warning each, no value shown
    assert exports and all(r["headers"].get("authorization") == "Bearer k3y-from-SM" and r["headers"].get("x-team") == "core" for r in exports), exports
    assert len([line for line in lines if "ignoring OTEL_EXPORTER_OTLP_HEADERS entries #3" in line and "collector/headers" in line]) == 1, lines
    assert len([line for line in lines if "exporting without OTEL_EXPORTER_OTLP_LOGS_HEADERS" in line and "collector/gone" in line]) == 1, lines
    assert not any("k3y-from-SM" in line for line in lines)


def test_collector_credentials_holding_a_character_the_environment_refuses_leave_export_on(task, moto):
    # GIVEN the traces' headers kept as a secret, one entry holding a NUL (which the
    # companion's environment refuses)
    moto.client("secretsmanager").create_secret(Name="collector/nul", SecretString="authorization=Bearer%20k3y\x00,x-team=core")
    exports, lines = _traces_exported_with(task, moto, "OTEL_EXPORTER_OTLP_TRACES_HEADERS=secretsmanager:collector/nul")
    # THEN the traces are exported with the entries that can go (before: the pipeline failed to
    # start, and telemetry was off), and the other named once, never shown
    assert exports and all(r["headers"].get("x-team") == "core" and "authorization" not in r["headers"] for r in exports), exports
    assert len([line for line in lines if "ignoring OTEL_EXPORTER_OTLP_TRACES_HEADERS entries 'authorization'" in line and "collector/nul" in line]) == 1, lines
    assert not any("k3y" in line or "telemetry is off" in line for line in lines), lines


def test_the_collectors_credentials_from_a_secret_are_held_to_what_grpc_can_send(task, moto):
    from support.grpc_receiver import GrpcTraceReceiver

    # GIVEN spans over gRPC, and the collector's headers kept in Secrets Manager, one of them
    # beyond printable ASCII once decoded (which gRPC cannot send: every call failed)
    moto.client("secretsmanager").create_secret(Name="collector/grpc-headers", SecretString="authorization=Bearer%20k3y-from-SM,x-team=caf%C3%A9")
    with GrpcTraceReceiver() as grpc_rx:
        env = secrets_env(moto, LAMBDAWRAP_SECRETS="OTEL_EXPORTER_OTLP_HEADERS=secretsmanager:collector/grpc-headers", OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="grpc", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=grpc_rx.endpoint)
        with instrumented(task, env=env) as (emu, rx):
            # WHEN the function runs THEN its span goes over gRPC without that header, named
            result = emu.invoke({})
            spans = grpc_rx.wait_for(1, timeout=30)
            lines = emu.log_lines("extension")
    assert any(s["attributes"].get("faas.invocation_id") and s["attributes"]["faas.invocation_id"].string_value == result.request_id for s in spans)
    said = [line for line in lines if "ignoring OTEL_EXPORTER_OTLP_HEADERS entries 'x-team'" in line]
    assert len(said) == 1 and "collector/grpc-headers" in said[0], lines
    assert not any("k3y-from-SM" in line or "caf" in line for line in lines)


def test_a_secret_named_like_a_variable_lambda_reserves_is_refused_and_the_runtime_runs(task, moto):
    # GIVEN secrets declared over _HANDLER and AWS_LAMBDA_RUNTIME_API, which Lambda lets no
    # configuration set: the runtime reads both after the boot
    env = secrets_env(moto, LAMBDAWRAP_SECRETS="DB_PASSWORD=secretsmanager:prod/db#password,_HANDLER=secretsmanager:prod/db#user,AWS_LAMBDA_RUNTIME_API=ssm:/prod/api/key")
    with instrumented(task, env=env) as (emu, rx):
        result = emu.invoke({})
        lines = emu.log_lines()  # the companion warns of the settings, the boot would not
    # THEN the function runs as configured (before: "Unable to import module 'app'"-like init
    # errors, or a runtime polling a Runtime API that is not there), and one warning names both
    assert result.function_error is None, result.json()
    assert result.json()["at_import"]["DB_PASSWORD"] == DB_PASSWORD
    warnings = [line for line in lines if "reserved by Lambda" in line]
    assert len(warnings) == 1 and "_HANDLER=secretsmanager:prod/db#user" in warnings[0] and "AWS_LAMBDA_RUNTIME_API=ssm:/prod/api/key" in warnings[0], lines


TZ_APP = """
import os, time
AT_IMPORT = {"TZ": os.environ.get("TZ"), "tzname": list(time.tzname), "zone": time.strftime("%Z", time.localtime(0))}

def handler(event, context):
    return AT_IMPORT
"""


def test_a_time_zone_declared_as_a_secret_is_in_effect_as_a_configured_one(tmp_path, moto):
    # GIVEN the function's time zone kept in Parameter Store and declared as TZ (which Lambda no
    # longer reserves: a configuration may set it)
    moto.client("ssm").put_parameter(Name="/app/tz", Value="America/New_York", Type="String")
    task = write_function(tmp_path / "task", TZ_APP)
    with Emulator(str(task), "app.handler", env={"TZ": "America/New_York"}, invoke_port=None) as bare:
        configured = bare.invoke({}).json()
    with instrumented(task, env=secrets_env(moto, LAMBDAWRAP_SECRETS="TZ=ssm:/app/tz")) as (emu, rx):
        declared = emu.invoke({}).json()
        lines = emu.log_lines("function")
    # THEN the function's clock reads that zone at import, as with TZ in its configuration
    # (before: TZ was in os.environ, but the C library's zone had been read at start: UTC)
    assert configured == {"TZ": "America/New_York", "tzname": ["EST", "EDT"], "zone": "EST"}
    assert declared == configured
    # ... with no warning of a configured TZ replaced: ":UTC" is the platform's, not the
    # configuration's
    assert not [line for line in lines if "replaces the value TZ had" in line], lines


def test_required_secret_missing_is_an_init_error_naming_it(task, moto):
    env = secrets_env(moto, LAMBDAWRAP_SECRETS="DB_PASSWORD=secretsmanager:prod/db#password,GONE=secretsmanager:does/not/exist", LAMBDAWRAP_SECRETS_REQUIRED="true")
    with instrumented(task, env=env) as (emu, rx):
        result = emu.invoke({})
        body = result.json()
        assert result.function_error == "Unhandled"
        assert body["errorType"] == "SecretsError"
        assert "GONE=secretsmanager:does/not/exist" in body["errorMessage"] and "ResourceNotFoundException" in body["errorMessage"]
        assert DB_PASSWORD not in json.dumps(body)
        init = emu.records("platform.initRuntimeDone")[0]["record"]
        assert init["status"] == "error"
    assert DB_PASSWORD not in everything_captured(emu, rx)


@pytest.mark.parametrize("required", [True, False])
def test_required_secrets_without_the_wrapper_fail_the_init_rather_than_run_without_them(task, moto, required):
    # GIVEN the layer added with secrets declared, but AWS_LAMBDA_EXEC_WRAPPER forgotten: no
    # boot in the function's process, so nothing loads its secrets
    env = secrets_env(moto, AWS_LAMBDA_EXEC_WRAPPER="", **({"LAMBDAWRAP_SECRETS_REQUIRED": "true"} if required else {}))
    with instrumented(task, env=env) as (emu, rx):
        # WHEN it is invoked
        result = emu.invoke({})
        emu.stop()
        lines = emu.log_lines("extension")
        inits = emu.records("platform.initReport")
    if required:
        # THEN, required, the init fails (before: the function ran without them, and no line
        # said so), each attempt (the platform runs it again inside the invocation), and the
        # companion's log says why at each, naming both variables ...
        assert result.function_error == "Unhandled" and result.json()["errorType"] == "Extension.InitError", result.body
        assert not emu.records("platform.start")
        said = [line for line in lines if "LAMBDAWRAP_SECRETS_REQUIRED is true and AWS_LAMBDA_EXEC_WRAPPER is not set" in line]
        assert len(said) == len(inits) >= 1, (said, inits)
        # ... and each failed init is exported and counted, as any is
        spans = rx.wait_for_spans(lambda s: s["name"].endswith(" init"), count=len(inits), timeout=30)
        assert all(s["status_code"] == 2 and s["attributes"]["error.type"] == "Extension.InitError" for s in spans), spans
        assert all("AWS_LAMBDA_EXEC_WRAPPER is not set" in s["status_message"] for s in spans), spans
        assert metric_total(rx, "lambdawrap.init_errors") == len(inits)
    else:
        # ... and without the setting the function runs, as it did (optional secrets)
        assert result.function_error is None, result.body
        assert not [line for line in lines if "LAMBDAWRAP_SECRETS_REQUIRED" in line]


def test_with_a_required_secret_missing_the_handler_s_package_does_not_run_either(tmp_path, moto):
    # GIVEN a handler in a package whose __init__ uses the configuration (a Flask or Django
    # package builds its engine there), a required secret missing
    task = tmp_path / "task"
    (task / "shop").mkdir(parents=True)
    marker = tmp_path / "package-ran"
    (task / "shop" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (task / "shop" / "main.py").write_text("def handler(event, context):\n    return 'served'\n")
    env = secrets_env(moto, LAMBDAWRAP_SECRETS="GONE=secretsmanager:does/not/exist", LAMBDAWRAP_SECRETS_REQUIRED="true")
    with instrumented(task, "shop.main.handler", env=env) as (emu, rx):
        body = emu.invoke({}).json()
    # THEN init fails naming it, and neither the module nor its package ran (before: the
    # package's __init__ ran, with the placeholder the configuration holds)
    assert body["errorType"] == "SecretsError" and "GONE=secretsmanager:does/not/exist" in body["errorMessage"], body
    assert not marker.exists()


def test_a_declared_secret_lambdawrap_would_read_as_its_own_configuration_is_warned_of(caplog):
    from lambdawrap.shared.settings import Settings

    # GIVEN the collector's endpoint (credentials in its URL) declared as a secret, and its
    # headers, which the companion does take from a secret
    declared = "OTEL_EXPORTER_OTLP_ENDPOINT=secretsmanager:collector/url,OTEL_EXPORTER_OTLP_HEADERS=secretsmanager:collector/headers"
    with caplog.at_level(logging.WARNING, logger="lambdawrap"):
        settings = Settings.from_env({"LAMBDAWRAP_SECRETS": declared})
    # THEN both are the function's, and one warning says the endpoint is not lambdawrap's
    # (before: none, and the companion exported to localhost)
    assert [source.env_name for source in settings.secrets] == ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS"]
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "declares OTEL_EXPORTER_OTLP_ENDPOINT: the function gets it" in warning and "declares OTEL_EXPORTER_OTLP_HEADERS" not in warning


def test_a_variable_declared_twice_the_same_way_leaves_nothing_out():
    from lambdawrap.shared.settings import Settings

    # The function gets the one secret it declared, twice over; another it declared second, not
    read = lambda declared: Settings.from_env({"LAMBDAWRAP_SECRETS": declared}, warn=False).secrets_refused  # noqa: E731
    assert read("DB=ssm:/prod/db,DB=ssm:/prod/db") == ()
    assert read("DB=ssm:/prod/db,DB=ssm:/prod/other") == ("LAMBDAWRAP_SECRETS entry 'DB=ssm:/prod/other' was left out (DB is declared before it)",)


@pytest.mark.parametrize("declared, named", [
    ("API_KEY=ssm:/prod/api/key;DB_PASSWORD=secretsmanager:prod/db#password", "API_KEY=ssm:/prod/api/key;DB_PASSWORD=secretsmanager:prod/db#password"),
    # a variable declared twice: the second is left out, as the settings' warning says
    ("DB_PASSWORD=secretsmanager:prod/db#password,DB_PASSWORD=ssm:/prod/api/key", "'DB_PASSWORD=ssm:/prod/api/key' was left out (DB_PASSWORD is declared before it)"),
])
def test_required_secrets_with_an_entry_left_out_are_an_init_error_naming_it(task, moto, declared, named):
    # GIVEN fail-closed secrets whose list was written with ";" between its entries (one entry
    # no secret name can be), or that declares a variable twice, and a placeholder the
    # function's configuration sets for a local run
    env = secrets_env(moto, LAMBDAWRAP_SECRETS=declared, LAMBDAWRAP_SECRETS_REQUIRED="true", DB_PASSWORD="local-placeholder")
    with instrumented(task, env=env) as (emu, rx):
        result = emu.invoke({})
        body = result.json()
        init = emu.records("platform.initRuntimeDone")[0]["record"]
    # THEN init fails with one error naming the entry, as for a secret that is missing (before:
    # the function ran with neither secret, on the placeholder, after one warning)
    assert result.function_error == "Unhandled", body
    assert body["errorType"] == "SecretsError"
    assert "LAMBDAWRAP_SECRETS_REQUIRED is true" in body["errorMessage"] and named in body["errorMessage"], body
    assert init["status"] == "error"


@every_python
def test_without_the_companion_the_boot_fetches_itself(task, moto, tmp_path, runtime_python):
    layer = tmp_path / "layer-no-companion"
    shutil.copytree(LAYER, layer, symlinks=True)
    shutil.rmtree(layer / "extensions")
    with instrumented(task, env=secrets_env(moto), layer=layer, python=runtime_python) as (emu, rx):
        body = emu.invoke({}).json()
        assert body["at_import"] == {"DB_PASSWORD": DB_PASSWORD, "API_KEY": API_KEY}
    calls = moto.requests()
    assert calls and all("lambdawrap/boot" in c["user_agent"] for c in calls)


@contextlib.contextmanager
def proxy_closed(proxy: "SlowForCompanion") -> Iterator[None]:
    try:
        yield
    finally:
        proxy.close()


class SlowForCompanion:
    """A real HTTP server in front of moto that passes every AWS call on, the companion's after
    `delay_s` (a companion whose first fetch outlasts the boot's wait)."""

    def __init__(self, moto: MotoServer, delay_s: float) -> None:
        import threading
        import urllib.error
        import urllib.request
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Forward(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - stdlib name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if "lambdawrap/companion" in self.headers.get("User-Agent", ""):
                    time.sleep(delay_s)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                request = urllib.request.Request(moto.endpoint + self.path, data=body, headers=headers, method="POST")
                try:
                    with urllib.request.urlopen(request, timeout=30) as answer:
                        status, data, kind = answer.status, answer.read(), answer.headers.get("Content-Type", "")
                except urllib.error.HTTPError as err:
                    status, data, kind = err.code, err.read(), err.headers.get("Content-Type", "")
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self._httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def test_with_no_wait_at_init_the_refreshes_ask_the_companion_once_it_answers(task, moto):
    # GIVEN no wait for the companion at init (the boot fetches the secrets itself), a TTL of 1 s
    env = secrets_env(moto, LAMBDAWRAP_SECRETS_TTL="1", LAMBDAWRAP_SECRETS_TIMEOUT_MS="0")

    def own_fetches() -> int:
        return len([c for c in moto.requests() if "lambdawrap/boot" in c["user_agent"]])

    with instrumented(task, env=env) as (emu, rx):
        assert emu.invoke({}).json()["accessor"] == DB_PASSWORD
        assert own_fetches() == 2
        # WHEN the secret rotates, and the function reads it over several TTLs
        moto.client("secretsmanager").put_secret_value(SecretId="prod/db", SecretString=json.dumps({"password": ROTATED}))
        wait_for(lambda: emu.invoke({"get": "DB_PASSWORD"}).json()["value"] == ROTATED, timeout=30, interval=0.3, what="the rotated value")
        fetched = own_fetches()
        for _ in range(12):
            emu.invoke({"get": "DB_PASSWORD"})
            time.sleep(0.3)
        # THEN the function's process fetches no more: its refreshes ask the companion, the one
        # cache, as the README says (before: they never waited for its answer, and the process
        # called AWS itself at every TTL for the environment's life)
        assert own_fetches() == fetched, (fetched, own_fetches())
        assert emu.invoke({"get": "DB_PASSWORD"}).json()["value"] == ROTATED


def test_a_rotation_that_takes_away_a_value_the_boot_fetched_itself_is_said_once(task, moto):
    # GIVEN no wait for the companion at init (the boot fetches the secrets itself, as where the
    # companion is slow to start), a TTL of 1 s
    env = secrets_env(moto, LAMBDAWRAP_SECRETS_TTL="1", LAMBDAWRAP_SECRETS_TIMEOUT_MS="0")

    def said() -> list:
        return [line for line in emu.log_lines() if "refreshing" in line and "DB_PASSWORD" in line]

    with instrumented(task, env=env) as (emu, rx):
        assert emu.invoke({}).json()["accessor"] == DB_PASSWORD
        # WHEN a rotation renames the declared JSON key, and the function reads it over several TTLs
        moto.client("secretsmanager").put_secret_value(SecretId="prod/db", SecretString=json.dumps({"Password": ROTATED}))
        wait_for(lambda: emu.invoke({"get": "DB_PASSWORD"}) and said(), timeout=30, interval=0.3, what="a warning naming DB_PASSWORD")
        for _ in range(6):
            assert emu.invoke({"get": "DB_PASSWORD"}).json()["value"] == DB_PASSWORD  # the last value served
            time.sleep(0.3)
        # THEN one warning names it and why, never a value (before: none, the value being the
        # boot's and not one the companion had handed over; the function's refreshes, asking the
        # companion once it answered, said nothing either)
        (warning,) = said()
        assert "has no JSON key 'password'" in warning and DB_PASSWORD not in warning and ROTATED not in warning, warning


def test_a_companion_whose_first_fetch_outlasts_the_wait_leaves_the_boot_to_fetch(task, moto):
    # GIVEN the default wait for the companion (1.5 s), and a companion whose first fetch takes
    # 4 s (its AWS endpoint slow for it, the machine busy as it starts)
    proxy = SlowForCompanion(moto, delay_s=4.0)
    try:
        env = secrets_env(moto, AWS_ENDPOINT_URL=proxy.endpoint, LAMBDAWRAP_SECRETS_TIMEOUT_MS="1500")
        with instrumented(task, env=env, timeout_s=10) as (emu, rx):
            body = emu.invoke({}).json()
            lines = emu.log_lines("function")
    finally:
        proxy.close()
    # THEN the boot fetched them itself, as the README says, and they were there at import
    # (before: the companion's answer "not fetched within 1400 ms" was taken for its secrets,
    # and the function loaded without them)
    assert body["at_import"] == {"DB_PASSWORD": DB_PASSWORD, "API_KEY": API_KEY}, lines
    assert any("0 of 2 secrets from the companion" in line and "fetching the rest directly" in line for line in lines), lines
    assert any("lambdawrap/boot" in c["user_agent"] for c in moto.requests())


LOGS_ITS_SECRET_APP = """
import os
print("connecting at import with", os.environ.get("DB_PASSWORD"))

def handler(event, context):
    print("connecting in the handler with", os.environ.get("DB_PASSWORD"))
    return {"at_import": os.environ.get("DB_PASSWORD")}
"""


@pytest.mark.parametrize("timeout_ms", ["0", "1500"])
def test_values_the_boot_fetched_itself_are_not_exported_before_the_companion_has_its_own(tmp_path, moto, timeout_ms):
    # GIVEN a companion whose first fetch takes 4 s, the boot fetching the secret itself (at
    # once with a wait of 0, after 1.5 s by default), and a function that logs the value
    proxy = SlowForCompanion(moto, delay_s=4.0)
    task = write_function(tmp_path / "task", LOGS_ITS_SECRET_APP)
    try:
        env = secrets_env(moto, AWS_ENDPOINT_URL=proxy.endpoint, LAMBDAWRAP_SECRETS="DB_PASSWORD=secretsmanager:prod/db#password", LAMBDAWRAP_SECRETS_TIMEOUT_MS=timeout_ms, LAMBDAWRAP_FLUSH="end")
        with instrumented(task, env=env, timeout_s=10) as (emu, rx):
            assert emu.invoke({}).json() == {"at_import": DB_PASSWORD}
            wait_for(lambda: sum("connecting" in str(r.get("body")) for r in rx.logs()) == 2, timeout=30, what="both log lines exported")
            emu.wait_idle()
    finally:
        proxy.close()
    # THEN neither line carries the value: the boot told the companion what it fetched before
    # the function's module loaded (before: both went out whole, the companion not knowing the
    # value until its own fetch ended)
    bodies = [str(r.get("body")) for r in rx.logs() if "connecting" in str(r.get("body"))]
    assert all("[REDACTED]" in body for body in bodies), bodies
    assert DB_PASSWORD not in json.dumps([rx.spans(), rx.metrics(), rx.logs()], default=str)


def test_large_values_the_boot_fetched_itself_reach_the_companion_without_a_drop(tmp_path, moto):
    # GIVEN the boot fetching the secrets itself (a wait of 0), five of them whole 60 KB
    # documents (more than one record of the local channel holds together), and a function
    # that logs one of the small ones
    names = [f"BIG_{n}" for n in range(5)]
    for name in names:
        moto.client("secretsmanager").create_secret(Name=f"docs/{name}", SecretString=name.lower() * 12_000)
    task = write_function(tmp_path / "task", LOGS_ITS_SECRET_APP)
    declared = ",".join(["DB_PASSWORD=secretsmanager:prod/db#password"] + [f"{name}=secretsmanager:docs/{name}" for name in names])
    env = secrets_env(moto, LAMBDAWRAP_SECRETS=declared, LAMBDAWRAP_SECRETS_TIMEOUT_MS="0", LAMBDAWRAP_FLUSH="end")
    with instrumented(task, env=env, timeout_s=10) as (emu, rx):
        assert emu.invoke({}).json() == {"at_import": DB_PASSWORD}
        wait_for(lambda: sum("connecting" in str(r.get("body")) for r in rx.logs()) == 2, timeout=30, what="both log lines exported")
        emu.wait_idle()
        lines = emu.log_lines("extension")
    # THEN the companion took them all, as requests it answers, and counted nothing as dropped
    # (before: one frame over the channel's 256 KB, refused as malformed and counted as a drop)
    assert not [p for p in rx.metrics() if p["name"] == "lambdawrap.dropped"], [p for p in rx.metrics() if p["name"] == "lambdawrap.dropped"]
    assert not any("malformed" in line for line in lines), lines
    assert DB_PASSWORD not in json.dumps([rx.spans(), rx.logs()], default=str)


NO_COMPANION_APP = """
import logging, os, sys
from lambdawrap.handler import secret_cache as secrets

# The function logs everything, the libraries' debug lines included.
logging.getLogger().setLevel(logging.DEBUG)  # through the runtime's own handler
AT_IMPORT = {name: os.environ.get(name) for name in ("DB_PASSWORD", "API_KEY", "CONFIGURED", "WITH_NUL")}

def handler(event, context):
    if event.get("own_call"):
        import boto3
        # The function's own call: its debug lines are the function's to see.
        boto3.client("ssm", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).get_parameter(Name="/public/greeting")
    return {"at_import": AT_IMPORT, "accessor": {name: secrets.get(name) for name in ("DB_PASSWORD", "WITH_NUL")}}
"""


def layer_without_companion(tmp_path: Path) -> Path:
    layer = tmp_path / "layer-no-companion"
    shutil.copytree(LAYER, layer, symlinks=True)
    shutil.rmtree(layer / "extensions")
    return layer


def test_the_boots_own_fetch_names_each_failure_and_never_logs_a_value(tmp_path):
    # GIVEN the boot fetching by itself (no companion) for a function that logs at DEBUG, with
    # a secret holding a NUL and one holding an unpaired surrogate (which os.environ refuses)
    # declared before the others, and a variable the function's configuration also sets
    task = write_function(tmp_path / "task", NO_COMPANION_APP)
    with MotoServer() as moto:
        seed_moto(moto, {"secrets": {"prod/db": {"password": DB_PASSWORD}, "nul": "before\x00after", "surrogate": {"half": "\ud800"}}, "parameters": {"/prod/api/key": API_KEY, "/public/greeting": "public-greeting-value"}})
        env = secrets_env(moto, LAMBDAWRAP_SECRETS="WITH_NUL=secretsmanager:nul,HALF=secretsmanager:surrogate#half,DB_PASSWORD=secretsmanager:prod/db#password,CONFIGURED=ssm:/prod/api/key,API_KEY=ssm:/prod/api/key", CONFIGURED="from-the-configuration", LAMBDAWRAP_SECRETS_TTL="1")
        with instrumented(task, env=env, layer=layer_without_companion(tmp_path)) as (emu, rx):
            body = emu.invoke({}).json()
            time.sleep(1.5)  # past the TTL: the next call's read starts the refresh, in this process
            emu.invoke({})
            wait_for(lambda: len([c for c in moto.requests() if "lambdawrap/boot" in c["user_agent"]]) > 4, 30, what="the refresh's fetches")
            emu.invoke({"own_call": True})
            lines = emu.log_lines("function")
    # THEN the others are injected, the NUL one named (and still readable with secrets.get),
    # the configured variable's replacement warned of, and no value in the function's log
    assert body["at_import"] == {"DB_PASSWORD": DB_PASSWORD, "API_KEY": API_KEY, "CONFIGURED": API_KEY, "WITH_NUL": None}
    assert body["accessor"] == {"DB_PASSWORD": DB_PASSWORD, "WITH_NUL": "before\x00after"}
    assert any("secret WITH_NUL=secretsmanager:nul holds a character the environment cannot (NUL)" in line for line in lines), lines
    assert any("secret HALF=secretsmanager:surrogate#half holds text the environment cannot (an unpaired surrogate" in line for line in lines), lines
    assert any("replaces the value CONFIGURED had in the function's configuration" in line for line in lines), lines
    assert any("public-greeting-value" in line for line in lines)  # the function's own call's debug lines show
    assert not any(DB_PASSWORD in line or API_KEY in line for line in lines), [line for line in lines if DB_PASSWORD in line or API_KEY in line][:3]


def test_a_boto3_the_boot_cannot_import_names_each_secret(tmp_path):
    # GIVEN no companion, and a function that bundles a boto3 that fails to import (the boot's
    # own fetch takes the function's, as its own import would)
    task = write_function(tmp_path / "task", NO_COMPANION_APP)
    (task / "boto3").mkdir()
    (task / "boto3" / "__init__.py").write_text('raise ImportError("a broken bundle")\n')
    with MotoServer() as moto:
        seed_moto(moto, {"secrets": {"prod/db": {"password": DB_PASSWORD}}, "parameters": {"/prod/api/key": API_KEY}})
        env = secrets_env(moto, LAMBDAWRAP_SECRETS="DB_PASSWORD=secretsmanager:prod/db#password,API_KEY=ssm:/prod/api/key")
        with instrumented(task, env=env, layer=layer_without_companion(tmp_path)) as (emu, rx):
            # WHEN the function starts
            result = emu.invoke({})
            lines = emu.log_lines("function")
    # THEN it starts without them, each secret named in a line of its own (before: one line
    # naming none, "its variable is left as it was", and they were never asked for again)
    assert result.function_error is None and result.json()["accessor"] == {"DB_PASSWORD": None, "WITH_NUL": None}, result.body
    for described in ("DB_PASSWORD=secretsmanager:prod/db#password", "API_KEY=ssm:/prod/api/key"):
        assert sum(f"secret {described} could not be fetched: ImportError" in line for line in lines) == 1, lines
    assert not any("secrets could not be loaded" in line for line in lines), lines


def test_a_required_secret_the_environment_cannot_hold_is_served_by_secrets_get(tmp_path):
    # GIVEN secrets required, one of them holding a NUL (which os.environ refuses), its variable
    # also set by the function's configuration (a placeholder)
    task = write_function(tmp_path / "task", NO_COMPANION_APP)
    with MotoServer() as moto:
        seed_moto(moto, {"secrets": {"prod/db": {"password": DB_PASSWORD}, "nul": "before\x00after"}})
        env = secrets_env(moto, LAMBDAWRAP_SECRETS="WITH_NUL=secretsmanager:nul,DB_PASSWORD=secretsmanager:prod/db#password", LAMBDAWRAP_SECRETS_REQUIRED="true", WITH_NUL="placeholder-from-config")
        with instrumented(task, env=env) as (emu, rx):
            # WHEN the function starts
            result = emu.invoke({})
            lines = emu.log_lines("function")
    # THEN it starts, the value left out of its environment and named once, and served by
    # secrets.get as the README says (before: init failed, its error telling to use secrets.get)
    assert result.function_error is None, result.body
    body = result.json()
    assert body["at_import"]["WITH_NUL"] is None and body["accessor"] == {"DB_PASSWORD": DB_PASSWORD, "WITH_NUL": "before\x00after"}
    assert sum("secret WITH_NUL=secretsmanager:nul holds a character the environment cannot (NUL)" in line for line in lines) == 1, lines
    # ... and the placeholder does not stand for it, said in the same line (before: it stayed in
    # the environment, with a line saying the secret had replaced it)
    assert any("NUL): read it with secrets.get; the value the function's configuration gave it is removed" in line for line in lines), lines
    assert not any("replaces the value WITH_NUL" in line for line in lines), lines


def test_the_boots_own_refreshes_are_not_traced_as_the_functions_calls(tmp_path):
    # GIVEN a companion that does not answer in time (0 ms) and whose own fetch hangs, so the
    # boot fetches the secrets itself and the handler side refreshes them with boto3, in the
    # function's process
    task = write_function(tmp_path / "task", NO_COMPANION_APP)
    with MotoServer() as moto:
        seed_moto(moto, {"secrets": {"prod/db": {"password": DB_PASSWORD}}, "parameters": {"/prod/api/key": API_KEY, "/public/greeting": "hello"}})
        proxy = SlowForCompanion(moto, delay_s=25.0)
        env = secrets_env(moto, AWS_ENDPOINT_URL=proxy.endpoint, LAMBDAWRAP_SECRETS="DB_PASSWORD=secretsmanager:prod/db#password", LAMBDAWRAP_SECRETS_TIMEOUT_MS="0", LAMBDAWRAP_SECRETS_TTL="1")
        with proxy_closed(proxy), instrumented(task, env=env) as (emu, rx):
            emu.invoke({})
            time.sleep(1.5)  # past the TTL: the next read starts the refresh, in this process
            emu.invoke({})
            wait_for(lambda: len([c for c in moto.requests() if "lambdawrap/boot" in c["user_agent"]]) >= 2, 30, what="the refresh's fetch")
            emu.invoke({"own_call": True})
            emu.wait_idle()
            wait_for(lambda: any(s["name"] == "SSM.GetParameter" for s in rx.spans()), 10, what="the function's own call's span")
            names = [s["name"] for s in rx.spans()]
    # THEN the function's own call is a span, the layer's refresh is none (before: a root
    # "Secrets Manager.GetSecretValue" trace per refresh, or a child of the invocation under way)
    assert names.count("SSM.GetParameter") == 1 and "Secrets Manager.GetSecretValue" not in names, names


REFRESH_CPU_APP = """
import time
from lambdawrap import secrets

def handler(event, context):
    # Waits for secrets.get (past its TTL) to bring the rotated value, and says how much CPU
    # this process has spent in all
    deadline = time.monotonic() + 20
    while secrets.get("DB_PASSWORD") != event["expect"] and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"value": secrets.get("DB_PASSWORD"), "cpu_ms": time.process_time() * 1000}
"""


def test_the_boots_own_refreshes_make_their_aws_clients_once(tmp_path):
    # GIVEN the boot fetching the secrets itself (a wait of 0) and refreshing them in the
    # function's process, with a TTL of 1 s
    task = write_function(tmp_path / "task", REFRESH_CPU_APP)
    with MotoServer() as moto:
        seed_moto(moto, {"secrets": {"prod/db": {"password": DB_PASSWORD}}})
        env = secrets_env(moto, LAMBDAWRAP_SECRETS="DB_PASSWORD=secretsmanager:prod/db#password", LAMBDAWRAP_SECRETS_TIMEOUT_MS="0", LAMBDAWRAP_SECRETS_TTL="1")
        with instrumented(task, env=env, timeout_s=30) as (emu, rx):
            spent = []
            for round_ in range(5):
                # WHEN the secret is rotated and read past its TTL, again and again
                value = f"rotated-value-{round_}-5e1f"
                moto.client("secretsmanager").put_secret_value(SecretId="prod/db", SecretString=json.dumps({"password": value}))
                time.sleep(1.2)
                body = emu.invoke({"expect": value}).json()
                assert body["value"] == value, body
                spent.append(body["cpu_ms"])
    # THEN only the first refresh makes the AWS clients: the later ones cost the function's
    # process a few milliseconds of CPU (before: ~70 ms each, a session and its client made
    # anew, a second beside the handler at 128 MB)
    per_round = [later - earlier for earlier, later in zip(spent[1:], spent[2:])]
    assert sum(per_round) / len(per_round) < 40, per_round


BUNDLED_SDK_APP = """
import os
import botocore

AT_IMPORT = os.environ.get("DB_PASSWORD")

def handler(event, context):
    return {"botocore": [botocore.__file__, botocore.__version__], "at_import": AT_IMPORT}
"""


@pytest.mark.parametrize("where", ["function", "layer"])
def test_the_boots_own_fetch_leaves_the_function_the_sdk_it_bundles(tmp_path, moto, where):
    # GIVEN a function that bundles its own botocore (older than the runtime's), in its own
    # folder or in a layer of its own (python/, beside lambdawrap's), and a companion that does
    # not answer in time (0 ms), so the boot fetches the secrets itself with boto3, before the
    # function's module is imported
    bundled = Path(installed("aiobotocore-requirements.txt", "lambdawrap-aiobotocore")) / "botocore"
    task = write_function(tmp_path / "task", BUNDLED_SDK_APP)
    layer = tmp_path / "opt"
    shutil.copytree(LAYER, layer, symlinks=True)
    folder = task if where == "function" else layer / "python"
    (folder / "botocore").symlink_to(bundled, target_is_directory=True)
    # ... beside a module named as a standard one, which the runtime imports before it puts
    # that folder on sys.path: the function never sees it
    (folder / "decimal.py").write_text("raise ImportError('not the standard decimal')\n")
    env = secrets_env(moto, LAMBDAWRAP_SECRETS="DB_PASSWORD=secretsmanager:prod/db#password", LAMBDAWRAP_SECRETS_TIMEOUT_MS="0")
    with Emulator(str(task), "app.handler", str(layer), env=env, invoke_port=None) as bare:
        without = bare.invoke({}).json()
    with instrumented(task, env=env, layer=layer) as (emu, rx):
        body = emu.invoke({}).json()
    # THEN the secret was fetched, and the function's `import botocore` found its own, as it
    # does without the layer (before: the runtime's, which the boot had imported first; or the
    # fetch failed on that decimal.py, which the boot's boto3 imported)
    assert without["botocore"][1] == "1.43.117" and without["at_import"] is None
    assert body == {"botocore": without["botocore"], "at_import": DB_PASSWORD}
    assert any("lambdawrap/boot" in c["user_agent"] for c in moto.requests())


def test_a_secrets_endpoint_that_never_answers_costs_the_boot_a_bounded_time(tmp_path, task):
    import socket
    import threading

    # GIVEN no companion, and a Secrets Manager endpoint that accepts and never answers
    listener = socket.create_server(("127.0.0.1", 0))
    held: list = []
    stop = threading.Event()

    def hold() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{listener.getsockname()[1]}", "LAMBDAWRAP_SECRETS": "DB_PASSWORD=secretsmanager:prod/db#password,API_KEY=ssm:/prod/api/key"}
        with instrumented(task, env=env, layer=layer_without_companion(tmp_path), timeout_s=30) as (emu, rx):
            result = emu.invoke({})
            init_ms = emu.records("platform.initReport")[0]["record"]["metrics"]["durationMs"]
            lines = emu.log_lines("function")
        asked = []
        for conn in held:
            conn.settimeout(5)
            request = conn.recv(65536)
            asked.append(next((line.split(b":", 1)[1].strip().decode() for line in request.split(b"\r\n") if line.lower().startswith(b"x-amz-target:")), None))
    finally:
        stop.set()
        holder.join(5)
        for conn in held:
            conn.close()
        listener.close()
    # THEN the function runs without them, each named, within the boot's budget (3 s) and far
    # from init's 10 s (before: 3 attempts x 5 s a secret, init timed out, twice)
    assert result.function_error is None and result.json()["at_import"] == {"DB_PASSWORD": None, "API_KEY": None}
    assert init_ms < 8000, init_ms
    # ... with one try a secret, as the budget is sized for (before: botocore's max_attempts,
    # which counts retries, made it two, each given all the time left: the first secret took
    # 4.5 s of a 3 s budget, and the second was never asked for)
    assert sorted(asked) == ["AmazonSSM.GetParameter", "secretsmanager.GetSecretValue"], asked
    assert sum("was not fetched within the boot's" in line or "DB_PASSWORD" in line or "API_KEY" in line for line in lines) >= 1, lines


TIMES_ITS_IMPORT_APP = """
import os, time

IMPORTED_AT = time.time()
AT_IMPORT = {name: os.environ.get(name) for name in ("DB_PASSWORD", "API_KEY", "TOKEN")}

def handler(event, context):
    return {"imported_at": IMPORTED_AT, "at_import": AT_IMPORT}
"""


def test_a_secrets_endpoint_that_answers_slowly_then_never_cannot_hold_the_boot_past_its_budget(tmp_path):
    import socket
    import threading

    # GIVEN no companion, three declared secrets, and an AWS endpoint that answers the first
    # call after 2 s (an error) and takes every later one without answering
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    first_request_at: list = []
    held: list = []

    def answer_late(conn: socket.socket) -> None:
        conn.recv(65536)
        first_request_at.append(time.time())
        if not stop.wait(2.0):
            body = b'{"__type":"ResourceNotFoundException","message":"not here"}'
            head = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
            try:
                conn.sendall(head + body)
            except OSError:
                pass  # the client gave up first (a busy machine)
        conn.close()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn = listener.accept()[0]
            except OSError:
                continue
            if first_request_at or held:
                held.append(conn)
            else:
                held.append(None)  # the first connection is answered, the rest are held
                threading.Thread(target=answer_late, args=(conn,), daemon=True).start()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    task = write_function(tmp_path / "task", TIMES_ITS_IMPORT_APP)
    try:
        env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{listener.getsockname()[1]}", "LAMBDAWRAP_SECRETS": "DB_PASSWORD=secretsmanager:prod/db#password,API_KEY=ssm:/prod/api/key,TOKEN=secretsmanager:token"}
        with instrumented(task, env=env, layer=layer_without_companion(tmp_path), timeout_s=30) as (emu, rx):
            body = emu.invoke({}).json()
            lines = emu.log_lines("function")
    finally:
        stop.set()
        server.join(5)
        for conn in held:
            if conn is not None:
                conn.close()
        listener.close()
    # THEN the function runs without them, the boot's fetch having ended within its 3 s of the
    # first call (before: the second call, made with 0.7 s left, waited its full 3 s read
    # timeout, and the handler module was imported 5 s after the first call)
    assert body["at_import"] == {"DB_PASSWORD": None, "API_KEY": None, "TOKEN": None}
    assert first_request_at and body["imported_at"] - first_request_at[0] < 4.0, (body, first_request_at)
    # and the secret it had (next to) no time left for is named: not asked for, or asked with
    # the quarter second left (one try a secret leaves that much where two did not)
    assert any("secret TOKEN" in line and ("was not fetched within the boot's 3 s" in line or "could not be fetched" in line) for line in lines), [l for l in lines if "TOKEN" in l or "API_KEY" in l]


def test_the_boot_s_own_fetch_asks_again_when_aws_throttles_it(tmp_path):
    from support.aws_front import AwsFront

    # GIVEN no companion, and AWS throttling the boot's first call for a secret and its first
    # two for a parameter (many environments starting at once)
    task = write_function(tmp_path / "task", TIMES_ITS_IMPORT_APP)
    with MotoServer() as moto:
        seed_moto(moto, {"secrets": {"prod/db": {"password": "throttled-pass-0001"}}, "parameters": {"/prod/api/key": "throttled-key-0002"}})
        with AwsFront(moto.endpoint, {"secretsmanager.GetSecretValue": ["throttle"], "AmazonSSM.GetParameter": ["throttle", "throttle"]}) as front:
            env = {"AWS_ENDPOINT_URL": front.endpoint, "LAMBDAWRAP_SECRETS": "DB_PASSWORD=secretsmanager:prod/db#password,API_KEY=ssm:/prod/api/key"}
            with instrumented(task, env=env, layer=layer_without_companion(tmp_path), timeout_s=30) as (emu, rx):
                body = emu.invoke({}).json()
                lines = emu.log_lines("function")
            turns = {target: [turn for _, turn in front.made(target)] for target in ("secretsmanager.GetSecretValue", "AmazonSSM.GetParameter")}
    # THEN the function's module has both, the calls made again after the throttling (before:
    # one throttled call failed the secret, with most of the boot's 3 s unspent, and a
    # module reading os.environ["DB_PASSWORD"] failed its init)
    assert body["at_import"] == {"DB_PASSWORD": "throttled-pass-0001", "API_KEY": "throttled-key-0002", "TOKEN": None}, (body, lines)
    assert turns == {"secretsmanager.GetSecretValue": ["throttle", "pass"], "AmazonSSM.GetParameter": ["throttle", "throttle", "pass"]}, turns


USES_ITS_SECRETS_APP = """
import os, urllib.request

print("calling the maps API with key " + os.environ["MAPS_KEY"])

def handler(event, context):
    url = "http://127.0.0.1:%d/maps?key=%s&q=x" % (event["port"], os.environ["MAPS_KEY"])
    with urllib.request.urlopen(url, timeout=5) as resp:
        resp.read()
    if event.get("fail"):
        raise RuntimeError("upstream refused " + url + " as user " + os.environ["DB_USER"])
    return {"user": os.environ["DB_USER"]}
"""


def test_values_the_function_puts_in_urls_errors_and_logs_are_not_exported(tmp_path):
    from support.local_servers import recording_server

    # GIVEN a function that puts its declared API key in a URL's query (under `key`, which no
    # redaction list names), raises an error quoting that URL, and prints it; a short
    # declared value (a user name) too
    maps_key = "AIzaSy-maps-key-value-0c9e"
    task = write_function(tmp_path / "task", USES_ITS_SECRETS_APP)
    with MotoServer() as moto, recording_server() as upstream:
        seed_moto(moto, {"secrets": {"maps": maps_key, "prod/db": {"username": "app"}}})
        env = secrets_env(moto, LAMBDAWRAP_SECRETS="MAPS_KEY=secretsmanager:maps,DB_USER=secretsmanager:prod/db#username")
        with instrumented(task, env=env) as (emu, rx):
            assert emu.invoke({"port": upstream.port}).json() == {"user": "app"}
            failed = emu.invoke({"port": upstream.port, "fail": True})
            emu.wait_idle()
        # (read after the shutdown's flush: the Telemetry API may deliver the log lines after
        # the invocations' own flushes)
        assert len([s for s in rx.spans() if s["name"] == "GET"]) == 2
        captured = json.dumps([rx.spans(), rx.metrics(), rx.logs()], default=str)
    # THEN the caller still gets the function's own error, untouched
    assert maps_key in failed.json()["errorMessage"]
    # and the collector gets the spans, the error and the line, with the key replaced (before:
    # in url.full, the status, the exception's message and stack, and the log line)
    assert maps_key not in captured
    assert "key=[REDACTED]&q=x" in captured and "upstream refused" in captured and "calling the maps API with key [REDACTED]" in captured
    # a value too short to be a credential is left as it is
    assert "as user app" in captured


def test_entries_not_separated_by_commas_are_one_warning_naming_the_variable(task, moto):
    # GIVEN two declarations on separate lines (a YAML block) instead of separated by a comma,
    # and one well-formed declaration
    env = secrets_env(moto, LAMBDAWRAP_SECRETS="DB_PASSWORD=secretsmanager:prod/db#password,\nGONE=ssm:/x\nAPI_KEY=ssm:/prod/api/key")
    with instrumented(task, env=env) as (emu, rx):
        body = emu.invoke({}).json()
        emu.wait_idle()
        ours = [line for line in emu.log_lines("function") + emu.log_lines("extension") if "lambdawrap" in line or "API_KEY" in line]
    # THEN the well-formed one is injected, and the other is one warning, on one line, naming
    # LAMBDAWRAP_SECRETS and what is wrong (before: fetched as a secret named "x\nAPI_KEY=...",
    # a ValidationException warned of on two lines, in the function's log)
    assert body["at_import"] == {"DB_PASSWORD": DB_PASSWORD, "API_KEY": None}
    assert len(ours) == 1, ours
    assert "ignoring LAMBDAWRAP_SECRETS entry 'GONE=ssm:/x\\nAPI_KEY=ssm:/prod/api/key'" in ours[0] and "separated by commas" in ours[0]


def test_a_long_secrets_timeout_and_an_aws_that_never_answers_do_not_time_init_out(task):
    from support.local_servers import silent_server

    # GIVEN the companion, a LAMBDAWRAP_SECRETS_TIMEOUT_MS longer than init's 10 s, and a
    # Secrets Manager / SSM that takes connections and never answers (as from a VPC without a
    # route to them)
    with silent_server() as url:
        env = {"AWS_ENDPOINT_URL": url.rsplit("/", 1)[0], "LAMBDAWRAP_SECRETS": "DB_PASSWORD=secretsmanager:prod/db#password,API_KEY=ssm:/prod/api/key", "LAMBDAWRAP_SECRETS_TIMEOUT_MS": "15000", "LAMBDAWRAP_SECRETS_PORT": str(free_port())}
        with instrumented(task, env=env, timeout_s=30) as (emu, rx):
            result = emu.invoke({})
            inits = [r["record"] for r in emu.records("platform.initReport")]
    # THEN the function runs without them after one init within the boot's 8 s for secrets
    # (before: init waited 15 s, was timed out at 10 s and run again inside the invocation)
    assert result.function_error is None and result.json()["at_import"] == {"DB_PASSWORD": None, "API_KEY": None}
    assert len(inits) == 1 and inits[0]["metrics"]["durationMs"] < 9500, inits


LOGS_ITS_SECRET_AS_JSON_APP = """
import json, os, urllib.parse, urllib.request

def handler(event, context):
    password = os.environ["DB_PASSWORD"]
    # a structured logger's line (JSON: the quote and the backslash escaped) and a URL built
    # properly (the value percent-encoded), as the function's code writes them
    print(json.dumps({"message": "connecting", "password": password}))
    url = "http://127.0.0.1:%d/login?k=%s&q=x" % (event["port"], urllib.parse.quote(password, safe=""))
    with urllib.request.urlopen(url, timeout=5) as resp:
        resp.read()
    return {"ok": True}
"""


def exported_calling_upstream(task, password: str):
    """The receiver, after the function (declaring DB_PASSWORD, whose value is `password`) was
    invoked once with {"port": an upstream HTTP server's port}, answered {"ok": True}, and the
    environment went idle."""
    from support.local_servers import recording_server

    with MotoServer() as moto, recording_server() as upstream:
        seed_moto(moto, {"secrets": {"prod/db": {"password": password}}})
        env = secrets_env(moto, LAMBDAWRAP_SECRETS="DB_PASSWORD=secretsmanager:prod/db#password")
        with instrumented(task, env=env) as (emu, rx):
            assert emu.invoke({"port": upstream.port}).json() == {"ok": True}
            emu.wait_idle()
    return rx


def test_a_value_the_function_escapes_in_json_or_a_url_is_not_exported(tmp_path):
    from urllib.parse import quote

    # GIVEN a declared password with the punctuation Secrets Manager's generated passwords hold
    # (a quote, a backslash, a slash), which the function writes in a JSON log line and in a
    # URL's query (under a name no redaction list knows), each escaped as those formats escape it
    password = 'Pa"ss\\w0rd/é#x'
    escaped = json.dumps(password)[1:-1]
    rx = exported_calling_upstream(write_function(tmp_path / "task", LOGS_ITS_SECRET_AS_JSON_APP), password)
    assert len([s for s in rx.spans() if s["name"] == "GET"]) == 1
    captured = json.dumps([rx.spans(), rx.logs()], default=str, ensure_ascii=False)
    logs = json.dumps(rx.logs(), default=str, ensure_ascii=False)
    # THEN neither escaped form reaches the collector (before: the log line kept the JSON-escaped
    # value, url.full the percent-encoded one); the line and the span are exported, redacted
    assert "connecting" in logs and "[REDACTED]" in logs
    assert "k=[REDACTED]&q=x" in captured
    for form in (password, escaped, json.dumps(password, ensure_ascii=False)[1:-1], quote(password, safe="")):
        assert form not in captured and json.dumps(form, ensure_ascii=False)[1:-1] not in captured, form


SPANS_ITS_SECRET_AS_BYTES_APP = """
import os
from opentelemetry import trace

tracer = trace.get_tracer("payments")

def handler(event, context):
    with tracer.start_as_current_span("charge") as span:
        span.set_attribute("request.body", ("key=%s&amount=5" % os.environ["DB_PASSWORD"]).encode())
        span.set_attribute("request.raw", b"\\xff\\x00 not text")
    return {"ok": True}
"""


def test_a_value_in_a_bytes_attribute_of_the_function_s_own_span_is_not_exported(tmp_path):
    # GIVEN a function that records a request body holding its declared key on a span of its
    # own, as bytes (which cross the channel as base64), beside bytes that are no text
    password = "sk_live_0123456789abcdef"
    task = write_function(tmp_path / "task", SPANS_ITS_SECRET_AS_BYTES_APP)
    with MotoServer() as moto:
        seed_moto(moto, {"secrets": {"prod/db": {"password": password}}})
        env = secrets_env(moto, LAMBDAWRAP_SECRETS="DB_PASSWORD=secretsmanager:prod/db#password")
        with instrumented(task, env=env) as (emu, rx):
            assert emu.invoke({}).json() == {"ok": True}
            emu.wait_idle()
            charge = rx.wait_for_spans(lambda s: s["name"] == "charge", count=1)[0]
    # THEN the span carries the body with the key replaced, still as bytes, and the other bytes
    # as they were (before: the base64 text hid the key from the search, and it went out whole)
    body, raw = charge["attributes"]["request.body"], charge["attributes"]["request.raw"]
    assert body == b"key=[REDACTED]&amount=5" and raw == b"\xff\x00 not text", (body, raw)
    captured = json.dumps([rx.spans(), rx.logs()], default=lambda v: v.decode("latin-1") if isinstance(v, bytes) else str(v))
    assert password not in captured


USES_ITS_SECRET_STRIPPED_APP = """
import os, urllib.parse, urllib.request

def handler(event, context):
    key = os.environ["DB_PASSWORD"].strip()
    print("calling with", urllib.parse.quote(key, safe=""))
    url = "http://127.0.0.1:%d/login?k=%s&q=x" % (event["port"], urllib.parse.quote(key, safe=""))
    with urllib.request.urlopen(url, timeout=5) as resp:
        resp.read()
    return {"ok": True}
"""


def test_a_value_kept_with_a_line_break_that_the_function_strips_and_escapes_is_not_exported(tmp_path):
    from urllib.parse import quote

    # GIVEN a declared key stored as read from a file (a line break at its end), with the
    # characters base64 keys hold, which the function strips and puts in a URL's query
    stored = "sk_live/AbC+dEf=GhIj123\n"
    rx = exported_calling_upstream(write_function(tmp_path / "task", USES_ITS_SECRET_STRIPPED_APP), stored)
    calls = [s for s in rx.spans() if s["name"] == "GET"]
    # THEN url.full and the log line have it replaced (before: the stripped value's escaped form
    # was searched for by no one, and went out whole)
    assert len(calls) == 1 and calls[0]["attributes"]["url.full"].endswith("/login?k=[REDACTED]&q=x"), calls[0]["attributes"]["url.full"]
    assert "calling with [REDACTED]" in [record["body"] for record in rx.logs()], rx.logs()
    assert quote(stored.strip(), safe="") not in json.dumps([rx.spans(), rx.logs()], default=str)


PRINTS_ITS_PRIVATE_KEY_APP = """
import logging, os

def handler(event, context):
    print(os.environ["SIGNING_KEY"])
    logging.getLogger().warning("signing with %s", os.environ["SIGNING_KEY"])
    return {"ok": True}
"""


def test_a_value_of_several_lines_printed_is_not_exported(tmp_path, moto):
    # GIVEN a PEM private key kept in Secrets Manager, which the function prints (a debugging
    # line left in) and logs: print() reaches the Telemetry API a line at a time
    pem = "\n".join(["-----BEGIN PRIVATE KEY-----", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj", "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu", "-----END PRIVATE KEY-----"])
    moto.client("secretsmanager").create_secret(Name="jwt/signing-key", SecretString=pem)
    task = write_function(tmp_path / "task", PRINTS_ITS_PRIVATE_KEY_APP)
    env = secrets_env(moto, LAMBDAWRAP_SECRETS="SIGNING_KEY=secretsmanager:jwt/signing-key")
    with instrumented(task, env=env) as (emu, rx):
        assert emu.invoke({}).json() == {"ok": True}
        emu.wait_idle()
    bodies = [record["body"] for record in rx.logs()]
    # THEN each printed line is exported redacted, as the logged record is (before: the key's
    # lines, one log record each, exported as printed)
    assert bodies.count("[REDACTED]") == 4, bodies
    assert any(body.endswith("signing with [REDACTED]") for body in bodies), bodies
    for line in pem.splitlines():
        assert line not in json.dumps([rx.spans(), rx.logs()], default=str), line


PUTS_ITS_SECRET_IN_AIOHTTP_PARAMS_APP = """
import asyncio, os
import aiohttp

async def call(port):
    async with aiohttp.ClientSession() as session:
        async with session.get("http://127.0.0.1:%d/login" % port, params={"k": os.environ["DB_PASSWORD"], "q": "x"}) as resp:
            await resp.read()

def handler(event, context):
    asyncio.run(call(event["port"]))
    return {"ok": True}
"""


def test_a_value_aiohttp_puts_in_a_query_is_not_exported(tmp_path):
    # GIVEN a declared password with the punctuation a generated one holds, which the function
    # passes to aiohttp as a query parameter (under a name no redaction list knows): yarl
    # encodes a query value its own way, keeping ! $ ' ( ) * , / : ? @ and writing a blank as +
    password = "Q!w#e$r(t)y/u:i@o+p é"
    rx = exported_calling_upstream(write_function(tmp_path / "task", PUTS_ITS_SECRET_IN_AIOHTTP_PARAMS_APP), password)
    calls = [s for s in rx.spans() if s["name"] == "GET"]
    # THEN the call's span is exported with the value replaced in url.full (before: as yarl
    # wrote it, Q!w%23e$r(t)y/u:i@o%2Bp+%C3%A9, a form not searched for)
    assert len(calls) == 1
    assert calls[0]["attributes"]["url.full"].endswith("/login?k=[REDACTED]&q=x"), calls[0]["attributes"]["url.full"]


USES_A_WHOLE_JSON_SECRET_APP = """
import json, logging, os

CREDENTIALS = json.loads(os.environ["DB_SECRET"])
print("database settings", CREDENTIALS)

def handler(event, context):
    dsn = "postgresql://%s:%s@%s/app" % (CREDENTIALS["username"], CREDENTIALS["password"], CREDENTIALS["host"])
    logging.getLogger().warning("connecting to %s", dsn)
    raise ConnectionError("could not connect to " + dsn)
"""


@pytest.mark.parametrize("timeout_ms", ["15000", "0"], ids=["companion", "boot"])
def test_the_values_of_a_json_secret_declared_whole_are_not_exported(tmp_path, moto, timeout_ms):
    # GIVEN an RDS-shaped secret declared whole (no #key: the function gets the JSON text and
    # parses it), fetched by the companion or by the boot itself; the function prints the
    # parsed settings, logs a connection string with the password, and raises an error quoting it
    password = "Rds-Generated-Pw-8c1f9a"
    moto.client("secretsmanager").create_secret(Name="prod/rds", SecretString=json.dumps({"username": "app", "password": password, "engine": "postgres", "dbname": "postgres", "host": "db.example.internal", "port": 5432}))
    task = write_function(tmp_path / "task", USES_A_WHOLE_JSON_SECRET_APP)
    env = secrets_env(moto, LAMBDAWRAP_SECRETS="DB_SECRET=secretsmanager:prod/rds", LAMBDAWRAP_SECRETS_TIMEOUT_MS=timeout_ms)
    with instrumented(task, env=env) as (emu, rx):
        failed = emu.invoke({})
        emu.wait_idle()
    captured = json.dumps([rx.spans(), rx.logs()], default=str)
    # THEN the caller gets the function's own error, untouched
    assert password in failed.json()["errorMessage"]
    # and the collector gets the lines and the error, each of the secret's string values replaced
    # (before: the password in the printed settings, the log line, the exception's message and stack)
    assert "could not connect to postgresql://app:[REDACTED]@[REDACTED]/app" in captured
    assert "connecting to postgresql://app:[REDACTED]@[REDACTED]/app" in captured and "database settings" in captured
    for value in (password, "db.example.internal"):
        assert value not in captured, value
    # a value too short to be a credential is left as it is, and so is the engine, no credential
    # (before: "postgres" replaced made "[REDACTED]ql://" of every connection string)
    assert "'username': 'app'" in captured and "'engine': 'postgres'" in captured and "'dbname': 'postgres'" in captured


AWS_DOCS_PARAMETER_APP = """
import json, os, urllib.parse, urllib.request

port = os.environ["PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"]

def get(path):
    request = urllib.request.Request("http://localhost:" + port + path)
    request.add_header("X-Aws-Parameters-Secrets-Token", os.environ["AWS_SESSION_TOKEN"])
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())

def handler(event, context):
    # As AWS's documentation of the extension writes the URL, with a slash before the query
    ssm_parameter_path = urllib.parse.quote("/prod/api/key", safe="")
    parameter_url = "/systemsmanager/parameters/get/?name=" + ssm_parameter_path + "&withDecryption=true"
    return {"parameter": get(parameter_url)["Parameter"]["Value"], "secret": get("/secretsmanager/get/?secretId=prod%2Fdb")["SecretString"]}
"""


def test_the_aws_extensions_paths_are_served_as_its_documentation_writes_them(tmp_path, moto):
    # GIVEN a function written for the AWS Parameters and Secrets extension from AWS's own
    # example (`/systemsmanager/parameters/get/?name=`, a slash before the query), moved to
    # lambdawrap with its PARAMETERS_SECRETS_EXTENSION_HTTP_PORT kept
    task = write_function(tmp_path / "task", AWS_DOCS_PARAMETER_APP)
    env = secrets_env(moto, PARAMETERS_SECRETS_EXTENSION_HTTP_PORT=str(free_port()))
    with instrumented(task, env=env) as (emu, rx):
        result = emu.invoke({})
    # THEN it gets the parameter and the secret, as from that extension (before: 404, unknown path)
    assert result.function_error is None, result.json()
    assert result.json() == {"parameter": API_KEY, "secret": json.dumps({"password": DB_PASSWORD, "user": "app"})}


def test_a_function_moved_from_the_aws_extension_gets_no_value_staler_than_its_ttl_said(tmp_path, moto):
    # GIVEN that function moved with its configuration for the AWS extension, which caches a
    # secret for 5 s (SECRETS_MANAGER_TTL) where lambdawrap's own default is 300 s
    task = write_function(tmp_path / "task", AWS_DOCS_PARAMETER_APP)
    env = secrets_env(moto, PARAMETERS_SECRETS_EXTENSION_HTTP_PORT=str(free_port()), SECRETS_MANAGER_TTL="5")
    with instrumented(task, env=env) as (emu, rx):
        assert json.loads(emu.invoke({}).json()["secret"])["password"] == DB_PASSWORD
        # WHEN the secret is rotated
        moto.client("secretsmanager").put_secret_value(SecretId="prod/db", SecretString=json.dumps({"password": ROTATED}))
        rotated_at, seen = time.monotonic(), None
        while seen is None and time.monotonic() - rotated_at < 30:
            if json.loads(emu.invoke({}).json()["secret"])["password"] == ROTATED:
                seen = time.monotonic() - rotated_at
            else:
                time.sleep(0.2)
    # THEN the function reads the new value within seconds, as with that extension (before: the
    # variable was ignored and the old value served for 300 s)
    assert seen is not None, "the rotated value was not served within 30 s"


# AWS's Parameters and Secrets extension, as far as the test needs it: it registers, listens on
# PARAMETERS_SECRETS_EXTENSION_HTTP_PORT and ends init (exits) when that port is taken, as a
# server that cannot listen does.
AWS_SECRETS_EXTENSION = """
import json, os, sys, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2020-01-01/extension"
register = urllib.request.Request(api + "/register", data=json.dumps({"events": ["SHUTDOWN"]}).encode(), headers={"Lambda-Extension-Name": os.path.basename(sys.argv[0])}, method="POST")
ext_id = urllib.request.urlopen(register, timeout=10).headers["Lambda-Extension-Identifier"]


class Theirs(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"served_by": "aws"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


try:
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"])), Theirs)
except OSError as exc:
    print(f"[AWS Parameters and Secrets Lambda Extension] FATAL cannot listen: {exc}", flush=True)
    sys.exit(1)
import threading
threading.Thread(target=server.serve_forever, daemon=True).start()
urllib.request.urlopen(urllib.request.Request(api + "/event/next", headers={"Lambda-Extension-Identifier": ext_id}), timeout=None)
"""

CALLS_THE_LOCAL_API = """
import json, os, urllib.request

def handler(event, context):
    url = f"http://localhost:{os.environ['PARAMETERS_SECRETS_EXTENSION_HTTP_PORT']}/secretsmanager/get?secretId=prod/db"
    req = urllib.request.Request(url, headers={"X-Aws-Parameters-Secrets-Token": os.environ.get("AWS_SESSION_TOKEN", "")})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())
"""


def test_the_aws_parameters_and_secrets_extension_beside_ours_keeps_its_port(tmp_path, moto):
    # GIVEN a function that keeps AWS's Parameters and Secrets extension layer beside ours, both
    # wanting the same port (2773 for both by default; here a free one, set for both)
    layer = tmp_path / "opt"
    shutil.copytree(LAYER, layer, symlinks=True)
    install_extension(layer, "AWSParametersAndSecretsLambdaExtension", write_function(tmp_path / "ext", AWS_SECRETS_EXTENSION) / "app.py")
    port = free_port()
    env = secrets_env(moto, PARAMETERS_SECRETS_EXTENSION_HTTP_PORT=str(port), LAMBDAWRAP_SECRETS_PORT=str(port))
    task = write_function(tmp_path / "task", CALLS_THE_LOCAL_API)
    with instrumented(task, env=env, layer=layer) as (emu, rx):
        # WHEN the function calls the local API on it, as it did before adding ours
        result = emu.invoke({})
        emu.wait_idle()
        lines = emu.log_lines("extension")
    # THEN it is answered by AWS's extension, which runs, and ours says once that it left the
    # port to it (before: ours listened on it too, and whichever came second failed: theirs
    # ended init, or ours warned that it could not listen)
    assert result.function_error is None and result.json() == {"served_by": "aws"}, result.body
    ours = [line for line in lines if "lambdawrap" in line and str(port) in line]
    assert len(ours) == 1 and "leaves port" in ours[0] and "AWS Parameters and Secrets extension" in ours[0], ours
    assert not any("cannot listen" in line for line in lines)


def test_a_function_moved_from_the_aws_extension_finds_the_api_on_the_port_it_read_there(tmp_path, moto):
    # GIVEN a function that used AWS's Parameters and Secrets extension on a port of its own
    # choosing, with that layer now replaced by ours and its variable kept as it was
    port = free_port()
    env = secrets_env(moto, PARAMETERS_SECRETS_EXTENSION_HTTP_PORT=str(port), LAMBDAWRAP_SECRETS_PORT=str(free_port()))
    task = write_function(tmp_path / "task", CALLS_THE_LOCAL_API)
    with instrumented(task, env=env) as (emu, rx):
        # WHEN it calls the local API there, as it did
        result = emu.invoke({})
        invocation = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id, timeout=30)[0]
    # THEN ours answers it, as AWS's did (before: connection refused, the function failed), and
    # the call is no span of the function's: it is lambdawrap's own API
    assert result.function_error is None, result.body
    assert json.loads(result.json()["SecretString"])["password"] == DB_PASSWORD
    assert not [s for s in rx.spans() if s.get("parent_span_id") == invocation["span_id"] and s["kind"] == 3]


PRINTS_ITS_ENVIRONMENT_APP = """
import logging, os

def handler(event, context):
    print("environment:", dict(os.environ))
    logging.getLogger().warning("signing with %s", os.environ["AWS_SECRET_ACCESS_KEY"])
    raise RuntimeError("token " + os.environ["AWS_SESSION_TOKEN"] + " was refused")
"""


def test_the_execution_roles_credentials_the_function_prints_are_not_exported(tmp_path):
    # GIVEN a function with no secrets declared that prints its environment, logs the role's
    # secret key and fails quoting its session token
    secret_key, token = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "IQoJb3JpZ2luX2VjEXAMPLE+session/token=="
    task = write_function(tmp_path / "task", PRINTS_ITS_ENVIRONMENT_APP)
    with instrumented(task, env={"AWS_SECRET_ACCESS_KEY": secret_key, "AWS_SESSION_TOKEN": token}) as (emu, rx):
        result = emu.invoke({})
        rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id, timeout=30)
        wait_for(lambda: sum("signing with" in str(r.get("body")) for r in rx.logs()) == 1, timeout=30, what="the log line exported")
        lines = emu.log_lines("function")
    # THEN the caller and the function's own log see them as without the layer...
    assert token in json.loads(result.body)["errorMessage"]
    assert any(secret_key in line for line in lines) and any(token in line for line in lines)
    # ...and the collector sees neither (before: the printed environment, the warning and the
    # exception's message carried both), only the lines and the error, redacted
    captured = json.dumps([rx.spans(), rx.logs()], default=str)
    assert "signing with [REDACTED]" in captured and "token [REDACTED] was refused" in captured
    for value in (secret_key, token):
        assert value not in captured and json.dumps(value)[1:-1] not in captured, value


CUTS_THROUGH_ITS_KEY_APP = """
import os, urllib.request

def handler(event, context):
    key = os.environ["API_KEY"]
    # The key where the texts the layer records are cut: 5 of its characters before the cut
    # (url.full at 2,048 characters, an exception's message at 4,096)
    prefix = "http://127.0.0.1:%d/search?pad=" % event["port"]
    url = prefix + "p" * (2048 - 5 - len(prefix) - len("&k=")) + "&k=" + key
    urllib.request.urlopen(url, timeout=10).read()
    raise ValueError("m" * (4096 - 5) + key)
"""


def test_a_text_cut_where_a_secret_is_leaves_none_of_it(tmp_path):
    # GIVEN a declared API key that the function puts in a long URL's query and a long error
    # message, each just where the layer cuts what it records
    from support.local_servers import recording_server

    task = write_function(tmp_path / "task", CUTS_THROUGH_ITS_KEY_APP)
    with MotoServer() as moto, recording_server() as upstream:
        seed_moto(moto, {"parameters": {"/prod/api/key": API_KEY}})
        env = secrets_env(moto, LAMBDAWRAP_SECRETS="API_KEY=ssm:/prod/api/key")
        with instrumented(task, env=env) as (emu, rx):
            result = emu.invoke({"port": upstream.port})
            spans = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id, timeout=30)
            (call,) = rx.wait_for_spans(lambda s: s["name"] == "GET", timeout=30)
    # THEN the caller's error is the function's, whole
    assert json.loads(result.body)["errorMessage"].endswith("m" + API_KEY)
    # ... and what is exported is cut before the key, no part of it left (before: its first 5
    # characters, which the companion's search for the whole value could not find)
    assert call["attributes"]["url.full"].endswith("&k="), call["attributes"]["url.full"][-20:]
    (event,) = [e for e in spans[0]["events"] if e["name"] == "exception"]
    assert event["attributes"]["exception.message"] == "m" * (4096 - 5)
    captured = json.dumps([rx.spans(), rx.logs()], default=str)
    assert API_KEY[:5] not in captured


def test_cuts_move_to_the_edge_of_a_secret_in_any_form_it_is_written(monkeypatch):
    # GIVEN the role's session token, which holds characters a URL escapes
    from urllib.parse import quote

    from lambdawrap.handler import secret_cuts

    token = "IQoJ+session/token=="
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    for written in (token, quote(token, safe="")):
        text = "a" * 10 + written + "b" * 10
        # WHEN a text holding it is cut through it, from either end
        # THEN the cut leaves it whole or drops it whole
        assert secret_cuts.head(text, 14) == "a" * 10 and secret_cuts.tail(text, len(written) + 6) == "b" * 10
        # ... and a cut clear of it is the plain cut
        assert secret_cuts.head(text, 8) == "a" * 8 and secret_cuts.tail(text, 8) == "b" * 8
        assert secret_cuts.head(text, len(text)) == text


def test_the_roles_credentials_stay_searched_for_however_many_secrets_come_after():
    # GIVEN the scrubber of a long-lived environment: the role's credentials, then many
    # rotations of a JSON secret (each value in several written forms)
    from lambdawrap.companion.secret_scrub import MAX_VALUES, SecretScrubber

    key, token = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "IQoJb3JpZ2luX2VjEXAMPLE+session/token=="
    scrubber = SecretScrubber(permanent=[key, token])
    for n in range(MAX_VALUES):
        scrubber.learn([json.dumps({"password": f"rotated-password-{n:03d}/+x", "host": f"db{n:03d}.example.internal"})])
    # THEN both are still replaced (before: the oldest forms learned, theirs, were forgotten first)
    assert scrubber.text(f"key={key} tok={token}") == "key=[REDACTED] tok=[REDACTED]"
    assert scrubber.text("rotated-password-000/+x") == "rotated-password-000/+x"  # the oldest secret's are


def test_every_cut_of_what_the_function_s_process_records_leaves_no_part_of_a_secret(monkeypatch):
    from lambdawrap.handler import secret_cache
    from lambdawrap.handler.redact import TRUNCATED, payload_text
    from lambdawrap.handler.triggers.http_request import query_from_parameters

    # GIVEN a declared secret put in os.environ at boot, then rotated by a refresh (the old
    # value stays in os.environ, and in what the function prints)
    old, new = "Old-Webhook-Secret-2024", "New-Webhook-Secret-2025"
    monkeypatch.setattr(secret_cache, "_cache", {})
    monkeypatch.setattr(secret_cache, "_injected", [])
    monkeypatch.delenv("WEBHOOK_SECRET", raising=False)
    assert secret_cache._inject("WEBHOOK_SECRET", old, None) is None
    secret_cache._store({"WEBHOOK_SECRET": new})
    for secret in (old, new):
        # WHEN a captured payload and a rebuilt query are cut where it is written
        # (both cut at 4,096 characters; the secret starts 5 before)
        payload = payload_text({"state": "s" * 4069, "apiKey": secret})
        query = query_from_parameters({"state": "s" * 4079, "code": secret}, None, encode=True)
        bare = query_from_parameters({"state": "s" * 4084, secret: ""}, None, encode=True)  # "?<token>"
        assert bare.endswith("s&"), bare[-20:]
        # THEN the cut falls before it: none of it is left for the companion's search to miss
        # (before: the payload kept 27 of its 28 characters, the query its first 7)
        assert payload.endswith('"apiKey":"' + TRUNCATED), payload[-40:]
        assert query.endswith("&code="), query[-20:]
        assert secret[:5] not in payload + query + bare


def test_quieting_the_own_calls_while_the_function_makes_loggers_does_not_fail():
    import logging
    import sys
    import threading

    from lambdawrap.handler.secret_cache import quiet_own_calls

    # GIVEN a function's thread importing modules, each making its logger, as a refresh starts
    # on another thread (switching threads as often as the interpreter can)
    stop = threading.Event()

    def make_loggers() -> None:
        made = logging.Logger.manager.loggerDict
        while not stop.is_set():
            names = [f"lambdawrap.test.made.{n}" for n in range(100)]
            for name in names:
                logging.getLogger(name)
            for name in names:
                made.pop(name, None)  # the dict keeps changing size, and stays small

    # (a big application's loggers: iterating them takes long enough to be interrupted)
    many = [f"lambdawrap.test.many.{n}" for n in range(5000)]
    for name in many:
        logging.getLogger(name)
    failures = []
    switch = sys.getswitchinterval()
    maker = threading.Thread(target=make_loggers, daemon=True)
    sys.setswitchinterval(1e-6)
    maker.start()
    try:
        # WHEN the refresh quiets its own calls, again and again
        for _ in range(300):
            try:
                with quiet_own_calls():
                    pass
            except RuntimeError as exc:  # "dictionary changed size during iteration"
                failures.append(exc)
    finally:
        stop.set()
        maker.join(10)
        sys.setswitchinterval(switch)
        for name in many:
            logging.Logger.manager.loggerDict.pop(name, None)
    # THEN it never fails (before: nearly every time, a warning and a refresh lost)
    assert failures == []


def test_a_secret_s_current_value_stays_searched_for_however_many_texts_the_others_make():
    from lambdawrap.companion.secret_scrub import REDACTED, SecretScrubber

    # GIVEN a declared password and two declared JSON documents of 32 values each (every value
    # searched for in each form it is written in: 166 texts a document)
    scrubber = SecretScrubber()
    password = "DB_pass=word!0123"
    scrubber.learn([password], source="password")
    for name in ("config-a", "config-b"):
        scrubber.learn([json.dumps({f"key{n}": f"{name}-value-{n:02d}/+&!" for n in range(32)})], source=name)
    # THEN the password is still found (before: the 256 texts kept counted forms, not values,
    # and the oldest, the password's, went first)
    assert scrubber.text(f"password is {password}") == f"password is {REDACTED}"
    # ... and when one secret keeps rotating, its own earlier values are the ones forgotten
    for n in range(300):
        scrubber.learn([f"rotated-token-{n:03d}/+x"], source="token")
    assert scrubber.text(password) == scrubber.text("rotated-token-299/+x") == scrubber.text("config-b-value-31/+&!") == REDACTED
    assert scrubber.text("rotated-token-001/+x") == "rotated-token-001/+x"
    # ... but never its first, which os.environ keeps for the environment's life
    assert scrubber.text("rotated-token-000/+x") == REDACTED
    scrubber.learn(["DB_pass=word!0124"], source="password")
    for n in range(300, 400):
        scrubber.learn([f"rotated-token-{n:03d}/+x"], source="token")
    assert scrubber.text(password) == REDACTED


def test_only_a_database_secret_s_engine_word_is_left_out_of_the_search():
    from lambdawrap.shared.secret_forms import searched_forms

    # GIVEN JSON secrets: a database's, whose engine names a word spans hold, and a
    # configuration whose "engine" holds credentials of its own
    database = searched_forms([json.dumps({"engine": "postgres", "username": "postgres", "password": "Pw-1234567890"})])
    config = searched_forms([json.dumps({"engine": {"api_key": "sk-live-4f9a8b7c6d5e"}, "name": "search-engine-prod"})])
    # THEN the engine's word is no text searched for, wherever it is the value; every other
    # value is, an "engine" object's included
    assert "postgres" not in database and "Pw-1234567890" in database
    assert "sk-live-4f9a8b7c6d5e" in config and "search-engine-prod" in config


def test_a_secret_is_found_as_python_prints_it_and_in_json_held_in_json():
    from lambdawrap.companion.secret_scrub import REDACTED, SecretScrubber

    # GIVEN secrets with both quotes, a backslash, and non-ASCII text
    quoted, escaped, accented = "It's\"quoted\"-pw9", 'Ab3"kP9\\zQ7-long', "Pässwort-2024-geheim"
    scrubber = SecretScrubber()
    scrubber.learn([quoted, escaped, accented])
    # WHEN the function prints them in a dict (os.environ, an exception's message) or logs an
    # HTTP event whose body is JSON held in a JSON string
    texts = [repr({"DB_PASSWORD": quoted})]
    for secret in (escaped, accented):
        texts += [json.dumps({"body": json.dumps({"apiKey": secret}, ensure_ascii=inner)}, ensure_ascii=outer) for inner in (True, False) for outer in (True, False)]
    # ... or prints its UTF-8 bytes, encoded to send
    texts += [repr(accented.encode()), repr({"k": accented.encode()}), json.dumps({"body": str(accented.encode())}), json.dumps({"k": accented.encode()}, default=str)]
    # THEN no part of any is left (before: these forms were not searched for)
    for text in texts:
        scrubbed = scrubber.text(text)
        assert REDACTED in scrubbed and not any(part in scrubbed for part in ("quoted", "kP9", "sswort")), (text, scrubbed)


def test_a_json_key_s_value_that_is_no_string_is_its_json_text_and_a_binary_secret_is_named(monkeypatch):
    from lambdawrap.shared.secret_sources import SecretsError, fetch, make_clients

    # GIVEN a JSON secret holding a number, a boolean, null and an object, and a binary secret
    with MotoServer() as moto:
        for name, value in (("AWS_ENDPOINT_URL", moto.endpoint), ("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
            monkeypatch.setenv(name, value)
        aws = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto.endpoint)
        aws.create_secret(Name="prod/db", SecretString=json.dumps({"port": 5432, "tls": True, "replica": None, "pool": {"size": 4}}))
        aws.create_secret(Name="prod/limits", SecretString='{"ratio": 1e3}')
        aws.create_secret(Name="prod/keystore", SecretBinary=b"\x00\x01binary")
        client = make_clients("boot", "us-east-1")
        (port, tls, replica, pool, keystore), problems = parse_sources("PORT=secretsmanager:prod/db#port,TLS=secretsmanager:prod/db#tls,REPLICA=secretsmanager:prod/db#replica,POOL=secretsmanager:prod/db#pool,KEYSTORE=secretsmanager:prod/keystore")
        assert problems == []
        # WHEN each is fetched as the boot and the companion fetch it
        # THEN each value is as Python's json writes it again, as the README says (a number
        # written 1e3 too)
        assert [fetch(source, client) for source in (port, tls, replica, pool)] == ["5432", "true", "null", '{"size": 4}']
        (ratio,), _ = parse_sources("RATIO=secretsmanager:prod/limits#ratio")
        assert fetch(ratio, client) == "1000.0"
        # ... and the binary secret fails, named, without its bytes
        with pytest.raises(SecretsError, match="KEYSTORE=secretsmanager:prod/keystore is binary"):
            fetch(keystore, client)


def test_a_secret_an_aws_service_manages_is_declared_by_its_name_or_arn_and_fetched(monkeypatch):
    from lambdawrap.shared.secret_sources import fetch, make_clients

    # GIVEN a secret RDS manages (its master password: RDS names it rds!db-<id>)
    with MotoServer() as moto:
        for name, value in (("AWS_ENDPOINT_URL", moto.endpoint), ("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
            monkeypatch.setenv(name, value)
        aws = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto.endpoint)
        arn = aws.create_secret(Name="rds!db-0f16c155-4ea1-4c6f-9a52-6a0e1e0d7d11", SecretString=json.dumps({"username": "admin", "password": "rds-managed-pw"}))["ARN"]
        # WHEN it is declared by its name and by its ARN
        sources, problems = parse_sources(f"BY_NAME=secretsmanager:rds!db-0f16c155-4ea1-4c6f-9a52-6a0e1e0d7d11#password,BY_ARN=secretsmanager:{arn}#password")
        # THEN both are taken and fetched (before: refused, the warning blaming a missing comma)
        assert problems == []
        client = make_clients("boot", "us-east-1")
        assert [fetch(source, client) for source in sources] == ["rds-managed-pw", "rds-managed-pw"]


def test_the_scrubber_s_grouped_search_replaces_what_a_search_for_each_value_replaces():
    import random

    from lambdawrap.companion.secret_scrub import REDACTED, SecretScrubber

    # GIVEN two JSON secrets of 31 fields (hundreds of texts searched for: the search goes by
    # their beginnings), values that contain one another among them
    rng = random.Random(7)
    scrubber = SecretScrubber()
    for name in ("orders", "billing"):
        scrubber.learn([json.dumps({f"key{n}": f"{name}-pa\"ss'word-{n:02d}/+&!" for n in range(30)} | {"outer": f"{name}-pa\"ss'word-07/+&!-and-more"})], source=name)
    values, groups = scrubber._search
    assert groups is not None and len(groups) * 4 < len(values)

    def each_value(text: str) -> str:  # the plain search: every value, longest first
        for value in values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    # WHEN texts hold some of them, in any form, amid other text
    for _ in range(300):
        parts = [rng.choice(values) if rng.random() < 0.3 else "".join(rng.choice("abc-/'\"+&! ") for _ in range(rng.randrange(1, 12))) for _ in range(rng.randrange(1, 8))]
        text = "".join(parts)
        # THEN the grouped search replaces exactly what the plain one does
        assert scrubber.text(text) == each_value(text), text


@pytest.mark.parametrize(
    "entry",
    [
        "X=secretsmanager:prod/db#key\nY=ssm:/b",
        "X=secretsmanager:prod/db#key\r\nY=ssm:/b",
        "X=secretsmanager:prod/db#key;Y=ssm:/b",
        "X=secretsmanager:prod/db#key Y=ssm:/b",
        "X=secretsmanager:prod/db#key\tY=secretsmanager:other",
        "X=secretsmanager:prod/db@AWSPREVIOUS;Y",
        "X=secretsmanager:prod/db@",
        "X=secretsmanager:prod/db#key@",
    ],
)
def test_a_json_key_or_stage_that_runs_into_the_next_entry_is_refused_with_one_warning(entry):
    # GIVEN entries not separated by commas after a JSON key or a stage, or an empty stage
    refused: list = []
    # WHEN the list is read
    sources, problems = parse_sources(entry + ",GOOD=ssm:/ok", refused)
    # THEN the entry is left out with one problem naming the variable, as other malformed entries
    # are (before: the next entry was taken as part of the key, and never loaded, unannounced)
    assert sources == [SecretSource("GOOD", "ssm", "/ok")]
    assert len(problems) == 1 and "LAMBDAWRAP_SECRETS" in problems[0] and len(refused) == 1
    # ... while a key may still hold a blank or a ';'
    assert parse_sources("K=secretsmanager:prod/db#db password;2@AWSPREVIOUS") == ([SecretSource("K", "secretsmanager", "prod/db", "db password;2", "AWSPREVIOUS")], [])


def test_a_secret_is_found_as_python_prints_json_holding_it_and_a_text_quoting_it():
    from lambdawrap.companion.secret_scrub import REDACTED, SecretScrubber

    # GIVEN secrets with a quote and a backslash, a lone single quote, and non-ASCII text with both
    secrets = {'Ab"cd\\ef!gh': "ef!gh", "It's-a-long-pw": "long-pw", 'Pä"sswort\\2024-geheim': "geheim"}
    scrubber = SecretScrubber()
    scrubber.learn(list(secrets))
    for secret, part in secrets.items():
        # WHEN the function prints an event whose body is JSON holding it, a message quoting it,
        # or logs a printed dict through a JSON logger
        texts = [str({"body": json.dumps({"password": secret}, ensure_ascii=ascii)}) for ascii in (True, False)]
        texts += [str({"message": f'password "{secret}" refused'}), json.dumps({"message": str({"password": secret})})]
        # THEN no part of it is left (before: each secret was left whole in one or two of these)
        for text in texts:
            scrubbed = scrubber.text(text)
            assert REDACTED in scrubbed and part not in scrubbed, (text, scrubbed)


def test_the_boots_own_calls_log_nothing_where_the_function_turned_thread_ids_off(monkeypatch):
    import logging
    import threading

    from lambdawrap.handler.secret_cache import quiet_own_calls

    # GIVEN a function that logs botocore at DEBUG, its records without thread ids
    monkeypatch.setattr(logging, "logThreads", False)
    seen: list = []

    class Kept(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger, kept = logging.getLogger("botocore.parsers"), Kept()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(kept)
    try:
        # WHEN lambdawrap's own fetch logs a response body on its thread, and one of the
        # function's threads logs one meanwhile
        with quiet_own_calls():
            logger.debug("Response body: %s", "own-call-body")
            other = threading.Thread(target=logger.debug, args=("Response body: %s", "function-call-body"))
            other.start()
            other.join(10)
        # THEN only the function's reaches its handlers (before: both, the secret's body too)
        assert seen == ["Response body: function-call-body"]
    finally:
        logger.removeHandler(kept)
        logger.setLevel(level)


def test_a_secret_that_makes_a_variable_linux_refuses_is_named_in_a_warning(monkeypatch, caplog):
    import errno
    import logging
    import os
    import subprocess
    import sys

    from lambdawrap.handler import secret_cache

    monkeypatch.setattr(secret_cache, "_cache", {})
    monkeypatch.setattr(secret_cache, "_injected", [])
    limit = secret_cache.MAX_VARIABLE_BYTES
    # GIVEN a `name=value` one byte under 128 KiB, and one of 128 KiB exactly
    cases = {"UNDER_LIMIT": ("x" * (limit - 13), False), "AT_THE_LIMIT": ("x" * (limit - 13), True)}
    for name in cases:
        monkeypatch.delenv(name, raising=False)
    assert len("UNDER_LIMIT=" + cases["UNDER_LIMIT"][0]) == limit - 1 and len("AT_THE_LIMIT=" + cases["AT_THE_LIMIT"][0]) == limit
    if sys.platform == "linux":
        # ... the first of which Linux passes to a child process, and the second not (it counts the NUL)
        subprocess.run([sys.executable, "-c", ""], env={"UNDER_LIMIT": cases["UNDER_LIMIT"][0]}, check=True)
        with pytest.raises(OSError) as refused:
            subprocess.run([sys.executable, "-c", ""], env={"AT_THE_LIMIT": cases["AT_THE_LIMIT"][0]})
        assert refused.value.errno == errno.E2BIG
    try:
        for name, (value, warned) in cases.items():
            # WHEN each is injected
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="lambdawrap"):
                assert secret_cache._inject(name, value, None) is None
            # THEN only the second is named in a warning (before: neither)
            assert any("128 KiB" in r.getMessage() and name in r.getMessage() for r in caplog.records) is warned, name
    finally:
        for name in cases:  # (monkeypatch restores no variable that was absent: every later child process would fail)
            os.environ.pop(name, None)
