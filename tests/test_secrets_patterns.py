"""Functions written for the common secrets-cache patterns work unchanged with lambdawrap.

Each function below is its pattern's usual code (urllib.request, nothing of lambdawrap in it);
only environment variables differ. They run through the real stack: emulator + layer +
companion + a real moto server, and the companion's answers are also read directly from the
test, to see the JSON a refusal or an error carries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, NamedTuple

import pytest

from conftest import write_function
from lambdawrap.devtools.local.moto_server import MotoServer
from lambdawrap.devtools.local.ports import free_port
from lambdawrap.devtools.local.stack import seed_moto
from support.http_json import json_exchange
from support.stack import instrumented

DB_PASSWORD = "patterns-DB-value-5d20"
DB_SECRET = json.dumps({"password": DB_PASSWORD, "user": "app"})
API_KEY = "patterns-API-value-c7e1"
OTHER_SECRET = "patterns-undeclared-secret-0b9a"
OTHER_PARAMETER = "patterns-undeclared-param-e43f"
VALUES = (DB_PASSWORD, API_KEY, OTHER_SECRET, OTHER_PARAMETER)
DECLARED = "DB_PASSWORD=secretsmanager:prod/db#password,API_KEY=ssm:/prod/api/key"
# A busy 2-core machine can take longer than the default 1.5 s to start the companion's boto3;
# the boot then fetches by itself, which these tests (counting AWS calls) must not see.
BOOT_WAIT_MS = "8000"  # within the 10 s init limit

# The /secrets/<name> pattern: a port from SECRETS_EXTENSION_PORT, {"value": ...} back.
SECRETS_PATH_APP = """
import json
import os
import urllib.request

SECRETS_EXTENSION_PORT = os.environ.get("SECRETS_EXTENSION_PORT", "8080")


def get_secret(name):
    url = f"http://127.0.0.1:{SECRETS_EXTENSION_PORT}/secrets/{name}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())["value"]


def handler(event, context):
    return {name: get_secret(name) for name in event["names"]}
"""

# The /?name=<name> pattern on the Parameters and Secrets extension's port.
NAME_QUERY_APP = """
import json
import os
import urllib.request

PORT = os.environ.get("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "2773")


def get_value(name):
    with urllib.request.urlopen(f"http://localhost:{PORT}/?name={name}", timeout=5) as response:
        return json.loads(response.read())["value"]


def handler(event, context):
    return {name: get_value(name) for name in event["names"]}
"""


@pytest.fixture
def moto():
    with MotoServer() as server:
        seed_moto(server, {"secrets": {"prod/db": DB_SECRET, "other/secret": OTHER_SECRET}, "parameters": {"/prod/api/key": API_KEY, "/other/param": OTHER_PARAMETER}})
        yield server


def declared_env(moto: MotoServer, ports: dict, extra: dict) -> dict:
    return {"AWS_ENDPOINT_URL": moto.endpoint, "LAMBDAWRAP_SECRETS": DECLARED, "LAMBDAWRAP_SECRETS_TIMEOUT_MS": BOOT_WAIT_MS, **ports, **extra}


def secrets_path_env(moto: MotoServer, **extra: str) -> dict:
    """The /secrets/ pattern's function configured for lambdawrap: its port is the compat port."""
    port = str(free_port())
    return declared_env(moto, {"LAMBDAWRAP_SECRETS_PORT": str(free_port()), "LAMBDAWRAP_SECRETS_COMPAT_PORT": port, "SECRETS_EXTENSION_PORT": port}, extra)


def name_query_env(moto: MotoServer, **extra: str) -> dict:
    """The /?name= pattern's function: the API's own port (2773 in Lambda; a free one here)."""
    port = str(free_port())
    return declared_env(moto, {"LAMBDAWRAP_SECRETS_PORT": port, "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": port}, extra)


class Pattern(NamedTuple):
    app: str  # the function's source
    env: Callable[..., dict]  # its environment, with lambdawrap's variables
    port_variable: str  # the variable the function reads its port from
    path: str  # the request for a name, as the function makes it
    unknown_status: int  # what the pattern's server answers for a name it cannot serve


PATTERNS = {
    "secrets-path": Pattern(SECRETS_PATH_APP, secrets_path_env, "SECRETS_EXTENSION_PORT", "/secrets/{}", 404),
    "name-query": Pattern(NAME_QUERY_APP, name_query_env, "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "/?name={}", 500),
}


def fetch_directly(port: str, path: str) -> tuple:
    """(status, JSON body) of the companion's answer to a token-less GET from the test."""
    return json_exchange(f"http://127.0.0.1:{port}{path}")


def captured(emu, rx) -> str:
    """Everything the run left anywhere: platform records, every log line, spans, metrics, logs."""
    return json.dumps([emu.records(), emu.log_lines(), rx.spans(), rx.metrics(), rx.logs(), rx.requests()], default=str)


def assert_no_value_leaked(emu, rx) -> None:
    text = captured(emu, rx)
    assert rx.spans(), "the run exported spans"
    for value in VALUES:
        assert value not in text, value


def secret_fetches(moto: MotoServer) -> list:
    return [json.loads(c["body"]) for c in moto.requests() if c["target"] == "secretsmanager.GetSecretValue"]


@pytest.mark.parametrize("pattern", PATTERNS.values(), ids=PATTERNS.keys())
def test_each_pattern_reads_declared_secrets_by_env_name_and_by_id_from_the_one_cache(tmp_path: Path, moto, pattern: Pattern):
    # GIVEN a function written for the pattern, token-less as its usual code is
    task = write_function(tmp_path / "task", pattern.app)
    env = pattern.env(moto, LAMBDAWRAP_SECRETS_TOKEN="optional")
    with instrumented(task, env=env) as (emu, rx):
        # WHEN it asks for the declared secrets by environment name, by secret id, by parameter name
        result = emu.invoke({"names": ["DB_PASSWORD", "API_KEY", "prod/db", "/prod/api/key"]})
        # THEN it gets the values: the JSON key picked out by env name, the whole secret by id
        assert result.function_error is None, result.json()
        assert result.json() == {"DB_PASSWORD": DB_PASSWORD, "API_KEY": API_KEY, "prod/db": DB_SECRET, "/prod/api/key": API_KEY}
        # ... from the one cache: the preload's fetch of prod/db is the only one
        assert secret_fetches(moto) == [{"SecretId": "prod/db"}]

        # WHEN it asks for a name that is not declared, or does not exist
        for name in ("other/secret", "does/not/exist"):
            failed = emu.invoke({"names": [name]})
            # THEN its call fails as the pattern's server fails it, with a JSON reason
            assert failed.function_error == "Unhandled" and failed.json()["errorType"] == "HTTPError"
            assert str(pattern.unknown_status) in failed.json()["errorMessage"]
            status, body = fetch_directly(env[pattern.port_variable], pattern.path.format(name))
            assert status == pattern.unknown_status and body["error"] == "NotFound" and name in body["message"]
            assert "LAMBDAWRAP_SECRETS_ALLOW_UNDECLARED" in body["message"]
        emu.wait_idle()
    # ... an undeclared secret was never fetched, and no value reached telemetry or logs
    assert {f["SecretId"] for f in secret_fetches(moto)} == {"prod/db"}
    assert_no_value_leaked(emu, rx)
    # ... and the function's calls to the secrets API, lambdawrap's own endpoint on either of its
    # ports, are not recorded as client spans
    assert not [span for span in rx.spans() if "url.full" in span["attributes"]]


@pytest.mark.parametrize("pattern", PATTERNS.values(), ids=PATTERNS.keys())
def test_by_default_the_token_is_required_and_its_absence_is_a_clear_401(tmp_path: Path, moto, pattern: Pattern):
    # GIVEN a token-less pattern's function, and LAMBDAWRAP_SECRETS_TOKEN left at its default
    task = write_function(tmp_path / "task", pattern.app)
    env = pattern.env(moto)
    with instrumented(task, env=env) as (emu, rx):
        # WHEN it asks for a declared secret without the session token
        failed = emu.invoke({"names": ["DB_PASSWORD"]})
        # THEN it is refused with 401, and the JSON says which header is missing and the way out
        assert failed.function_error == "Unhandled" and "401" in failed.json()["errorMessage"]
        status, body = fetch_directly(env[pattern.port_variable], pattern.path.format("DB_PASSWORD"))
        assert status == 401 and body["error"] == "Unauthorized"
        assert "X-Aws-Parameters-Secrets-Token" in body["message"] and "LAMBDAWRAP_SECRETS_TOKEN=optional" in body["message"]
        assert DB_PASSWORD not in json.dumps(body)
        emu.wait_idle()
    assert_no_value_leaked(emu, rx)


@pytest.mark.parametrize("pattern", PATTERNS.values(), ids=PATTERNS.keys())
def test_undeclared_names_are_served_when_allowed_from_either_service(tmp_path: Path, moto, pattern: Pattern):
    # GIVEN a pattern's function, with undeclared names allowed (as the AWS extension serves them)
    task = write_function(tmp_path / "task", pattern.app)
    env = pattern.env(moto, LAMBDAWRAP_SECRETS_TOKEN="optional", LAMBDAWRAP_SECRETS_ALLOW_UNDECLARED="true")
    with instrumented(task, env=env) as (emu, rx):
        # WHEN it asks for a secret and a parameter it did not declare
        result = emu.invoke({"names": ["other/secret", "/other/param"]})
        # THEN it gets both, each from its service
        assert result.function_error is None, result.json()
        assert result.json() == {"other/secret": OTHER_SECRET, "/other/param": OTHER_PARAMETER}
        # ... asking again is served from the cache
        assert emu.invoke({"names": ["other/secret", "/other/param"]}).json() == result.json()
        assert [f["SecretId"] for f in secret_fetches(moto)].count("other/secret") == 1
        # WHEN a name exists in neither service THEN the pattern's error answer says so
        status, body = fetch_directly(env[pattern.port_variable], pattern.path.format("does/not/exist"))
        assert status == pattern.unknown_status and body["error"] == "NotFound" and "does/not/exist" in body["message"]
        emu.wait_idle()
    assert_no_value_leaked(emu, rx)


LOGS_WHAT_IT_IS_SERVED = """

def logging_handler(event, context):
    values = handler(event, context)
    for value in values.values():
        print("using key", value)
    return values
"""


def test_undeclared_values_the_api_served_are_not_exported_where_the_function_logs_them(tmp_path: Path, moto):
    # GIVEN a function written for the AWS extension, logging what it is served, with undeclared
    # names allowed (a function moved over unchanged)
    pattern = PATTERNS["name-query"]
    task = write_function(tmp_path / "task", pattern.app + LOGS_WHAT_IT_IS_SERVED)
    env = pattern.env(moto, LAMBDAWRAP_SECRETS_TOKEN="optional", LAMBDAWRAP_SECRETS_ALLOW_UNDECLARED="true")
    moto.client("ssm").put_parameter(Name="/other/table", Value="orders-table-prod", Type="String")
    with instrumented(task, handler="app.logging_handler", env=env) as (emu, rx):
        # WHEN it asks for a secret, a SecureString parameter and a plain one it did not declare,
        # and logs them
        assert emu.invoke({"names": ["other/secret", "/other/param", "/other/table"]}).json() == {"other/secret": OTHER_SECRET, "/other/param": OTHER_PARAMETER, "/other/table": "orders-table-prod"}
        emu.wait_idle()
    # THEN the lines are exported with the secret values replaced (before: only declared secrets'
    # values were searched for, and these went to the collector as logged), and the plain
    # parameter, no secret (a table's name), as it was logged
    exported = json.dumps([rx.spans(), rx.logs()], default=str)
    assert [record["body"] for record in rx.logs() if record["body"].startswith("using key")] == ["using key [REDACTED]"] * 2 + ["using key orders-table-prod"], rx.logs()
    assert OTHER_SECRET not in exported and OTHER_PARAMETER not in exported


def test_debug_logging_shows_no_value(tmp_path: Path, moto):
    # GIVEN lambdawrap's own messages at debug, as someone chasing a secrets problem sets it
    pattern = PATTERNS["name-query"]
    task = write_function(tmp_path / "task", pattern.app)
    env = pattern.env(moto, LAMBDAWRAP_SECRETS_TOKEN="optional", LAMBDAWRAP_SECRETS_ALLOW_UNDECLARED="true", LAMBDAWRAP_LOG_LEVEL="debug")
    with instrumented(task, env=env) as (emu, rx):
        # WHEN the companion fetches declared and undeclared values for the function
        result = emu.invoke({"names": ["DB_PASSWORD", "other/secret", "/other/param"]})
        assert result.json() == {"DB_PASSWORD": DB_PASSWORD, "other/secret": OTHER_SECRET, "/other/param": OTHER_PARAMETER}
        emu.wait_idle()
    # THEN the libraries' debug output (botocore logs whole responses) is not in the log
    assert_no_value_leaked(emu, rx)
