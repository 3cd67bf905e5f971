"""Security checks: the local socket is private, every listener is on loopback, the secrets
API wants its token, payloads are recorded only on request and redacted then, and no secret
value reaches any span, metric, log or error. Plus the redaction module's unit tests."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import stat
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import write_function
from lambdawrap.handler.redact import ALWAYS_REDACTED, MAX_PAYLOAD_CHARS, REDACTED, TRUNCATED, payload_text, redact_query, redaction_keys
from lambdawrap.companion.secrets_api import TOKEN_HEADER, SecretsHttpApi
from lambdawrap.devtools.local.moto_server import MotoServer
from lambdawrap.devtools.local.ports import free_port
from lambdawrap.devtools.local.stack import seed_moto
from lambdawrap.shared.secret_sources import SecretSource, value_of
from lambdawrap.shared.settings import Settings
from support.faults import companion_process
from support.stack import EVENTS, instrumented

DB_PASSWORD = "sec-suite-DB-value-81f3"
API_KEY = "sec-suite-API-value-22c9"
BEARER = "sec-suite-bearer-token-7a0b"
COOKIE = "sec-suite-cookie-4d1e"
CARD = "4111111111111111"
QUERY_TOKEN = "sec-suite-query-token-93aa"
SESSION_TOKEN = "emulator-session-token"  # the emulator's AWS_SESSION_TOKEN
SECRETS = (DB_PASSWORD, API_KEY, BEARER, COOKIE, CARD, QUERY_TOKEN)

APP = """
import json, os, urllib.request

def handler(event, context):
    if event.get("fail"):
        raise RuntimeError("failing on purpose")
    if event.get("version") == "2.0":  # payload 2.0: the response's cookies in a list of their own
        return {"statusCode": 200, "cookies": ["session=" + os.environ["DB_PASSWORD"] + "; HttpOnly"], "body": "ok"}
    return {
        "statusCode": 200,
        "headers": {"Set-Cookie": "session=" + os.environ["DB_PASSWORD"], "Content-Type": "application/json"},
        "body": json.dumps({"password": os.environ["DB_PASSWORD"], "api_key": os.environ["API_KEY"], "ok": True}),
    }
"""


@pytest.fixture
def moto():
    with MotoServer() as server:
        seed_moto(server, {"secrets": {"prod/db": {"password": DB_PASSWORD}}, "parameters": {"/prod/api/key": API_KEY}})
        yield server


@pytest.fixture
def task(tmp_path: Path) -> Path:
    return write_function(tmp_path / "task", APP)


def stack_env(moto: MotoServer, **extra: str) -> dict:
    return {
        "AWS_ENDPOINT_URL": moto.endpoint,
        "LAMBDAWRAP_SECRETS": "DB_PASSWORD=secretsmanager:prod/db#password,API_KEY=ssm:/prod/api/key",
        # Generous (within the 10 s init limit): on a busy machine the companion's first fetch can
        # outlast the default 1.5 s.
        "LAMBDAWRAP_SECRETS_TIMEOUT_MS": "8000",
        "LAMBDAWRAP_SECRETS_PORT": str(free_port()),
        **extra,
    }


def request_event(**changes) -> dict:
    event = json.loads((EVENTS / "apigw-rest.json").read_text())
    event["headers"] = {**event["headers"], "Authorization": "Bearer " + BEARER, "Cookie": "sid=" + COOKIE}
    event["multiValueHeaders"] = {"Authorization": ["Bearer " + BEARER], "Cookie": ["sid=" + COOKIE]}
    event["queryStringParameters"] = {"token": QUERY_TOKEN, "page": "2"}
    event["multiValueQueryStringParameters"] = {"token": [QUERY_TOKEN], "page": ["2"]}
    event["body"] = json.dumps({"order": 17, "payment": {"Card_Number": CARD}})
    event.update(changes)
    return event


def captured(emu, rx) -> str:
    """Everything the run left anywhere: platform records, every log line, spans, metrics, logs."""
    return json.dumps([emu.records(), emu.log_lines(), rx.spans(), rx.metrics(), rx.logs(), rx.requests()], default=str)


def invocation_spans(rx) -> list:
    return [s for s in rx.spans() if "faas.invocation_id" in s["attributes"]]


# ---------------------------------------------------------------------------------------------
# Payload capture and secrets, end to end.


def test_payloads_are_not_recorded_by_default_and_no_secret_leaks(task, moto):
    # GIVEN secrets declared, and requests that carry credentials in headers, query and body
    with instrumented(task, env=stack_env(moto)) as (emu, rx):
        # WHEN the function answers (with a secret in its response) and fails once
        ok = emu.invoke(request_event())
        failed = emu.invoke(request_event(fail=True))
        emu.wait_idle()
    assert ok.function_error is None and failed.function_error == "Unhandled"
    spans = invocation_spans(rx)
    # THEN nothing of the payloads is recorded
    assert len(spans) == 2
    assert not [s for s in spans if {"lambdawrap.request.payload", "lambdawrap.response.payload"} & set(s["attributes"])]
    # ... the query's token is redacted in url.query (a configured key), the rest kept
    assert {s["attributes"]["url.query"] for s in spans} == {"token=REDACTED&page=2"}
    # ... and no secret value, credential or card number appears anywhere
    text = captured(emu, rx)
    for value in SECRETS:
        assert value not in text, value


def test_captured_payloads_are_truncated_and_redacted(task, moto):
    # GIVEN payload capture on, with one more key to redact
    env = stack_env(moto, LAMBDAWRAP_CAPTURE_PAYLOAD="true", LAMBDAWRAP_REDACT_KEYS="card_number, api_key")
    with instrumented(task, env=env) as (emu, rx):
        # WHEN the function is invoked
        result = emu.invoke(request_event())
        big = emu.invoke(request_event(body="x" * 100_000))
        v2_url, v2_api = (emu.invoke({**json.loads((EVENTS / name).read_text()), "cookies": ["sid=" + COOKIE, "theme=dark"]}) for name in ("function-url.json", "apigw-http.json"))
        encoded = emu.invoke(request_event(body=base64.b64encode(json.dumps({"payment": {"Card_Number": CARD}}).encode()).decode(), isBase64Encoded=True))
        form = emu.invoke(request_event(body=f"card_number={CARD}&amount=3"))
        kinesis = json.loads((EVENTS / "kinesis.json").read_text())
        kinesis["Records"][0]["kinesis"]["data"] = base64.b64encode(json.dumps({"card_number": CARD}).encode()).decode()
        stream = emu.invoke(kinesis)
        emu.wait_idle()
    assert result.function_error is None and big.function_error is None and v2_url.function_error is None and v2_api.function_error is None
    spans = {s["attributes"]["faas.invocation_id"]: s for s in invocation_spans(rx)}
    attrs = spans[result.request_id]["attributes"]
    request = attrs["lambdawrap.request.payload"]
    response = attrs["lambdawrap.response.payload"]
    # THEN the request and the response are on the span, as JSON ...
    assert json.loads(request)["httpMethod"] == "GET" and json.loads(request)["queryStringParameters"]["page"] == "2"
    assert json.loads(json.loads(response)["body"])["ok"] is True
    # ... with Authorization, Cookie, Set-Cookie and the configured keys redacted at any depth,
    # inside the JSON body string and in the query too
    assert json.loads(request)["headers"]["Authorization"] == REDACTED and json.loads(request)["headers"]["Cookie"] == REDACTED
    assert json.loads(request)["multiValueHeaders"] == {"Authorization": REDACTED, "Cookie": REDACTED}
    assert json.loads(request)["queryStringParameters"]["token"] == REDACTED
    assert json.loads(json.loads(request)["body"])["payment"]["Card_Number"] == REDACTED
    assert json.loads(response)["headers"]["Set-Cookie"] == REDACTED
    assert json.loads(json.loads(response)["body"]) == {"password": REDACTED, "api_key": REDACTED, "ok": True}
    # ... a body sent base64-encoded too (before: kept encoded, the card number in it)
    assert json.loads(json.loads(spans[encoded.request_id]["attributes"]["lambdawrap.request.payload"])["body"]) == {"payment": {"Card_Number": REDACTED}}
    # ... and a form's pairs by key (before: kept as they came)
    assert json.loads(spans[form.request_id]["attributes"]["lambdawrap.request.payload"])["body"] == f"card_number={REDACTED}&amount=3"
    # ... and a stream record's base64 data (before: kept encoded, the card number in it)
    record = json.loads(spans[stream.request_id]["attributes"]["lambdawrap.request.payload"])["Records"][0]
    assert json.loads(record["kinesis"]["data"]) == {"card_number": REDACTED}
    # ... and, in payload 2.0 (HTTP APIs, function URLs), the request's and the response's
    # `cookies` lists, where their Cookie and Set-Cookie headers go (before: kept whole)
    for v2 in (v2_url, v2_api):
        attrs = spans[v2.request_id]["attributes"]
        assert json.loads(attrs["lambdawrap.request.payload"])["cookies"] == REDACTED
        assert json.loads(attrs["lambdawrap.response.payload"]) == {"statusCode": 200, "cookies": REDACTED, "body": "ok"}
    # ... a large payload is cut to a few KB
    cut = spans[big.request_id]["attributes"]["lambdawrap.request.payload"]
    assert len(cut) <= MAX_PAYLOAD_CHARS + len(TRUNCATED) and cut.endswith(TRUNCATED)
    # ... and no secret value, credential or card number appears anywhere
    text = captured(emu, rx)
    for value in SECRETS:
        assert value not in text, value


# A presigned S3 URL's query (SigV4): the credential, session token and signature are live
# credentials for as long as the URL is valid.
PRESIGNED_QUERY = (
    "file=report.pdf&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAPRESIGNEDKEY%2F20250101%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Security-Token=IQoJsecsuitesessiontoken&X-Amz-Signature=sec-suite-signature-5f1d&X-Goog-Signature=sec-suite-goog-77&sig=sec-suite-sas-31"
)
PRESIGNED_SECRETS = ("ASIAPRESIGNEDKEY", "IQoJsecsuitesessiontoken", "sec-suite-signature-5f1d", "sec-suite-goog-77", "sec-suite-sas-31")
PRESIGNED_REDACTED = (
    "file=report.pdf&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=REDACTED"
    "&X-Amz-Security-Token=REDACTED&X-Amz-Signature=REDACTED&X-Goog-Signature=REDACTED&sig=REDACTED"
)
CLIENT = 3  # OTLP's SPAN_KIND_CLIENT
FETCHES_PRESIGNED = """
import os, urllib.request

def handler(event, context):
    with urllib.request.urlopen(os.environ["HTTP_BASE"] + "/status/200?" + event["rawQueryString"], timeout=10) as response:
        return {"statusCode": response.status}
"""


def test_presigned_url_credentials_reach_no_span(tmp_path):
    # GIVEN a request whose query is a presigned URL's, and a function that passes it on in a call
    from support.local_servers import recording_server

    task = write_function(tmp_path / "task", FETCHES_PRESIGNED)
    event = json.loads((EVENTS / "apigw-http.json").read_text())
    event["rawQueryString"] = PRESIGNED_QUERY
    event["queryStringParameters"] = dict(urllib.parse.parse_qsl(PRESIGNED_QUERY))
    # (payloads captured: the request's query is in the captured event too)
    with recording_server() as http, instrumented(task, env={"HTTP_BASE": http.url, "LAMBDAWRAP_CAPTURE_PAYLOAD": "true"}, timeout_s=30) as (emu, rx):
        # WHEN it is invoked
        result = emu.invoke(event)
        assert result.function_error is None and http.requests[0]["path"].endswith(PRESIGNED_QUERY)
        server = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id, timeout=20)[0]
        (client,) = rx.wait_for_spans(lambda s: s.get("parent_span_id") == server["span_id"] and s["kind"] == CLIENT, timeout=20)
    # THEN the values of the conventions' keys are REDACTED in the server span's url.query and
    # in the client span's url.full, their keys and the other values kept; and in the captured
    # request
    assert server["attributes"]["url.query"] == PRESIGNED_REDACTED
    assert client["attributes"]["url.full"] == f"{http.url}/status/200?{PRESIGNED_REDACTED}"
    captured_request = json.loads(server["attributes"]["lambdawrap.request.payload"])
    assert captured_request["queryStringParameters"]["X-Amz-Credential"] == REDACTED and captured_request["queryStringParameters"]["file"] == "report.pdf"
    text = json.dumps([rx.spans(), rx.logs()])
    for value in PRESIGNED_SECRETS:
        assert value not in text, value


FAILS_TO_FETCH_PRESIGNED = """
import os, urllib.request
import requests, urllib3

def handler(event, context):
    url = "http://127.0.0.1:" + os.environ["REFUSED_PORT"] + "/report.pdf?" + event["rawQueryString"]
    failed = []
    for fetch in (lambda: requests.get(url, timeout=5), lambda: urllib3.PoolManager(retries=urllib3.Retry(total=1)).request("GET", url), lambda: urllib.request.urlopen(url, timeout=5)):
        try:
            fetch()
        except Exception as exc:
            failed.append(type(exc).__name__)
    return failed
"""


def test_presigned_url_credentials_in_a_failed_call_s_error_reach_no_span(tmp_path):
    from support.local_servers import closed_port

    # GIVEN a function whose calls to a presigned URL are refused: the clients' errors name the
    # URL ("Max retries exceeded with url: /report.pdf?...")
    task = write_function(tmp_path / "task", FAILS_TO_FETCH_PRESIGNED)
    with instrumented(task, env={"REFUSED_PORT": str(closed_port())}, timeout_s=30) as (emu, rx):
        # WHEN it is invoked
        result = emu.invoke({"rawQueryString": PRESIGNED_QUERY})
        assert result.json() == ["ConnectionError", "MaxRetryError", "URLError"], result.json()
        server = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id, timeout=20)[0]
        clients = rx.wait_for_spans(lambda s: s.get("parent_span_id") == server["span_id"] and s["kind"] == CLIENT, count=3, timeout=20)
    # THEN each call is a failed span whose error texts keep the URL with its credentials
    # REDACTED, as url.full does (before: the status description, exception.message and
    # exception.stacktrace held them as sent)
    assert all(span["status_code"] == 2 for span in clients), clients
    assert any("REDACTED" in span["status_message"] for span in clients), [span["status_message"] for span in clients]
    # (the spans: urllib3's own retry warning, a log line of the function's, says what it says
    # without the layer too)
    text = json.dumps(rx.spans())
    for value in PRESIGNED_SECRETS:
        assert value not in text, text[max(0, text.find(value) - 300) : text.find(value) + 60]



# A transport adapter of the function's that retries on its own, each refusal chained to the
# one before and naming the URL: a stack longer than a span keeps, its tail cut inside a query.
REFUSES_WITH_A_LONG_CHAIN = """
import requests
from requests.adapters import BaseAdapter

class Refusing(BaseAdapter):
    def send(self, request, **kwargs):
        error = None
        for attempt in range(12):
            try:
                raise ConnectionRefusedError(f"attempt {attempt}: GET {request.url} refused") from error
            except ConnectionRefusedError as exc:
                error = exc
        raise requests.ConnectionError(f"gave up on GET {request.url}") from error

    def close(self):
        pass

def handler(event, context):
    session = requests.Session()
    session.mount("http://", Refusing())
    try:
        session.get("http://refused.example/report.pdf?pad=" + "a" * 3000 + "&" + event["rawQueryString"])
    except requests.ConnectionError as exc:
        return type(exc).__name__
"""


def test_presigned_url_credentials_in_the_tail_of_a_long_stack_reach_no_span(tmp_path):
    # GIVEN a function whose failed call's stack trace is longer than a span keeps, each
    # exception in it naming the presigned URL
    task = write_function(tmp_path / "task", REFUSES_WITH_A_LONG_CHAIN)
    with instrumented(task, timeout_s=30) as (emu, rx):
        # WHEN it is invoked
        result = emu.invoke({"rawQueryString": PRESIGNED_QUERY})
        assert result.json() == "ConnectionError", result.json()
        server = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id, timeout=20)[0]
        (client,) = rx.wait_for_spans(lambda s: s.get("parent_span_id") == server["span_id"] and s["kind"] == CLIENT, timeout=20)
    # THEN the stack kept is its tail, which begins inside a URL's query ...
    (event,) = [event for event in client["events"] if event["name"] == "exception"]
    stack = event["attributes"]["exception.stacktrace"]
    assert len(stack) >= 30_000 and stack.count("REDACTED") >= 12, stack[:200]
    # ... with the credentials of every URL in it REDACTED (before: the query in which the cut
    # fell kept them: its '?' was cut away)
    text = json.dumps(rx.spans())
    for value in PRESIGNED_SECRETS:
        assert value not in text, text[max(0, text.find(value) - 300) : text.find(value) + 60]

# ---------------------------------------------------------------------------------------------
# The local socket and the listeners.


def _socket_inodes(pid: int) -> set:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # /proc/net/tcp{,6} print each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def listening_tcp(pid: int) -> list:
    """(address, port) of every TCP socket the process listens on."""
    inodes = _socket_inodes(pid)
    found = []
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                address, port = local.split(":")
                found.append((_address(address), int(port, 16)))
    return found


def test_socket_is_private_listeners_are_loopback_and_the_secrets_api_wants_its_token(task, moto):
    env = stack_env(moto, LAMBDAWRAP_SECRETS_COMPAT_PORT=str(free_port()))
    port = int(env["LAMBDAWRAP_SECRETS_PORT"])
    compat_port = int(env["LAMBDAWRAP_SECRETS_COMPAT_PORT"])
    with instrumented(task, env=env) as (emu, rx):
        assert emu.invoke(request_event()).function_error is None
        emu.wait_idle()
        # GIVEN a running environment: the companion and the function's process
        companion = companion_process(emu)
        runtime = emu.sandbox.state.runtime
        socket_path = env_socket = emu.config.env["LAMBDAWRAP_SOCKET"]
        # THEN the local socket is the owner's only
        mode = os.stat(socket_path)
        assert stat.S_ISSOCK(mode.st_mode) and stat.S_IMODE(mode.st_mode) == 0o600 and mode.st_uid == os.getuid()
        # ... the companion listens on loopback only (telemetry listener and secrets API),
        # and the function's process listens on nothing at all
        listeners = listening_tcp(companion.pid)
        assert len(listeners) >= 3 and {port, compat_port} <= {p for _, p in listeners}, listeners
        assert all(ipaddress.ip_address(address).is_loopback for address, _ in listeners), listeners
        assert listening_tcp(runtime.pid) == []

        # ... and the secrets API refuses every request without the session token
        def get(path: str, token: str | None, on_port: int = port) -> tuple:
            request = urllib.request.Request(f"http://127.0.0.1:{on_port}{path}")
            if token is not None:
                request.add_header(TOKEN_HEADER, token)
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as err:
                return err.code, err.read().decode()

        secret_path = "/secretsmanager/get?secretId=prod%2Fdb"
        for token in (None, "", "wrong", SESSION_TOKEN.upper(), SESSION_TOKEN + "x", SESSION_TOKEN[:-1]):
            status, body = get(secret_path, token)
            assert status == 401 and DB_PASSWORD not in body, (token, status)
        assert get("/systemsmanager/parameters/get?name=%2Fprod%2Fapi%2Fkey&withDecryption=true", None)[0] == 401
        for path in ("/secrets/DB_PASSWORD", "/secrets/prod/db", "/?name=API_KEY", "/?name=/prod/api/key"):
            for on_port in (port, compat_port):
                for token in (None, "wrong"):
                    status, body = get(path, token, on_port)
                    assert status == 401 and DB_PASSWORD not in body and API_KEY not in body, (path, on_port, token)
        assert get("/../../etc/passwd", None)[0] == 401
        status, body = get(secret_path, SESSION_TOKEN)
        assert status == 200 and DB_PASSWORD in body  # the one way in
        assert get("/../../etc/passwd", SESSION_TOKEN)[0] == 404
        del env_socket


def test_secrets_api_without_a_session_token_refuses_everything():
    class Store:  # never reached
        sources = [SecretSource("DB_PASSWORD", "secretsmanager", "prod/db", "password")]

        def answer(self, key):
            raise AssertionError("the store was consulted")

    # GIVEN no AWS_SESSION_TOKEN, even with token-less requests allowed
    api = SecretsHttpApi(Store(), "", Settings(secrets_port=0, secrets_token="optional", secrets_allow_undeclared=True))
    try:
        # THEN no request on any path is served
        for path in ("/secretsmanager/get?secretId=x", "/secrets/DB_PASSWORD", "/?name=DB_PASSWORD"):
            for token in (None, "", "anything"):
                status, body = api.handle(path, token)
                assert status == 401 and "AWS_SESSION_TOKEN" in body["message"], (path, token)
    finally:
        api.stop()


def test_token_less_requests_are_served_only_when_optional_only_for_the_token_less_shapes_and_only_from_loopback():
    class Store:
        sources = [SecretSource("DB_PASSWORD", "secretsmanager", "prod/db", "password")]

        def answer(self, key):
            return {"Name": "prod/db", "SecretString": json.dumps({"password": DB_PASSWORD})}

        def value(self, source, answer):
            return value_of(source, answer)

        def served(self, key, answer, value=None):
            pass

    def api_with(**settings):
        return SecretsHttpApi(Store(), SESSION_TOKEN, Settings(secrets_port=0, **settings))

    required, optional = api_with(), api_with(secrets_token="optional")
    try:
        for path in ("/secrets/DB_PASSWORD", "/?name=DB_PASSWORD"):
            # GIVEN the default: the token is required on every path
            status, body = required.handle(path, None)
            assert status == 401 and TOKEN_HEADER in body["message"] and "LAMBDAWRAP_SECRETS_TOKEN=optional" in body["message"]
            assert required.handle(path, SESSION_TOKEN) == (200, {"value": DB_PASSWORD})
            # GIVEN optional: served without a token from loopback, never from elsewhere, and a
            # wrong token is refused all the same
            assert optional.handle(path, None, "127.0.0.1") == (200, {"value": DB_PASSWORD})
            assert optional.handle(path, None, "::1") == (200, {"value": DB_PASSWORD})
            for host in ("10.0.0.7", "169.254.169.254", "::ffff:10.0.0.7", "not-an-address"):
                assert optional.handle(path, None, host)[0] == 401, host
            for wrong in ("wrong", "", "   "):  # a header sent empty is a wrong token, not none
                assert optional.handle(path, wrong, "127.0.0.1")[0] == 401, repr(wrong)
        # ... and the AWS extension's paths, whose functions always send it, still want it
        status, body = optional.handle("/secretsmanager/get?secretId=prod%2Fdb", None, "127.0.0.1")
        assert status == 401 and "optional" not in body["message"]
    finally:
        required.stop()
        optional.stop()


# ---------------------------------------------------------------------------------------------
# The redaction module.


class TestRedaction:
    KEYS = redaction_keys(("password", "Token", " api_key "))

    def test_keys_always_include_the_credential_headers(self):
        assert ALWAYS_REDACTED <= redaction_keys(()) and {"password", "token", "api_key"} <= self.KEYS

    def test_keys_are_matched_case_insensitively_at_any_depth(self):
        value = {"a": [{"b": {"PASSWORD": "p", "keep": 1}}], "Authorization": "Bearer x", "headers": {"set-cookie": ["a", "b"]}}
        out = json.loads(payload_text(value, self.KEYS))
        assert out == {"a": [{"b": {"PASSWORD": REDACTED, "keep": 1}}], "Authorization": REDACTED, "headers": {"set-cookie": REDACTED}}

    def test_a_json_body_string_is_redacted_inside_and_stays_a_string(self):
        out = json.loads(payload_text({"body": json.dumps({"user": "u", "token": "t"})}, self.KEYS))
        assert json.loads(out["body"]) == {"user": "u", "token": REDACTED}

    def test_a_json_body_after_blanks_or_base64_encoded_is_redacted_inside(self):
        import base64

        document = json.dumps({"user": "u", "token": "t"})
        encoded = base64.b64encode(document.encode()).decode()
        # GIVEN a body that starts with a line end, and one an HTTP API sent base64-encoded
        # (before: both were kept as they came, the token in them)
        out = json.loads(payload_text({"padded": {"body": "\n  " + document}, "encoded": {"body": encoded, "isBase64Encoded": True}}, self.KEYS))
        # THEN each is its JSON, redacted inside, as a string
        assert json.loads(out["padded"]["body"]) == json.loads(out["encoded"]["body"]) == {"user": "u", "token": REDACTED}
        # ... and a base64 body that is not JSON text (an image), or a body that is not base64
        # though marked so, is kept as it came
        image = base64.b64encode(b"\x89PNG\r\n\x00").decode()
        assert json.loads(payload_text({"body": image, "isBase64Encoded": True}, self.KEYS))["body"] == image
        assert json.loads(payload_text({"body": "a=1", "isBase64Encoded": True}, self.KEYS))["body"] == "a=1"
        # ... though one that is no base64 is read as any body (its form's token redacted)
        assert json.loads(payload_text({"body": "token=t&a=1", "isBase64Encoded": True}, self.KEYS))["body"] == f"token={REDACTED}&a=1"

    def test_records_base64_data_is_redacted_inside(self):
        import base64

        document = json.dumps({"user": "u", "token": "t"})
        encoded = base64.b64encode(document.encode()).decode()
        event = {
            "Records": [{"kinesis": {"data": encoded, "partitionKey": "k"}}],
            "records": [{"data": encoded}],
            "messages": [{"data": encoded}],
            "kafka": [{"topic": "t", "partition": 0, "value": encoded}],
        }
        # GIVEN the records of Kinesis, Firehose, Amazon MQ and Kafka, whose data is base64 of
        # a JSON document (before: kept encoded, the token in them for anyone to decode)
        out = json.loads(payload_text(event, self.KEYS))
        # THEN each is its JSON, redacted inside, as a string
        datas = [out["Records"][0]["kinesis"]["data"], out["records"][0]["data"], out["messages"][0]["data"], out["kafka"][0]["value"]]
        assert [json.loads(data) for data in datas] == [{"user": "u", "token": REDACTED}] * 4
        # ... while data that is binary (CloudWatch Logs' gzip), no base64, or a `value` outside
        # a Kafka record is kept as it came
        gzipped = base64.b64encode(b"\x1f\x8b\x08\x00binary").decode()
        kept = {"awslogs": {"data": gzipped}, "data": "plain words", "value": encoded}
        assert json.loads(payload_text(kept, self.KEYS)) == kept

    def test_form_bodies_are_redacted_by_key(self):
        import base64

        form = "user=u&Pass%77ord=p&token=t+t&note=a%3Db"
        redacted = f"user=u&Pass%77ord={REDACTED}&token={REDACTED}&note=a%3Db"
        # GIVEN form bodies (application/x-www-form-urlencoded): an HTTP request's, one sent
        # base64-encoded, and an SQS message's (before: each kept as it came, the password in it)
        event = {"plain": {"body": form}, "encoded": {"body": base64.b64encode(form.encode()).decode(), "isBase64Encoded": True}, "Records": [{"body": form}]}
        out = json.loads(payload_text(event, self.KEYS))
        # THEN each shows its pairs with the keys' values redacted, the others kept
        assert out["plain"]["body"] == out["encoded"]["body"] == out["Records"][0]["body"] == redacted
        # ... a base64 form with nothing to redact is kept encoded, as it came
        clean = base64.b64encode(b"user=u&page=2").decode()
        assert json.loads(payload_text({"body": clean, "isBase64Encoded": True}, self.KEYS))["body"] == clean
        # ... a form longer than the output is redacted in what is kept, cut as any text
        long_form = "token=t&" + "a=1&" * 5000 + "password=p"
        cut = payload_text({"body": long_form}, self.KEYS, limit=200)
        assert cut.endswith(TRUNCATED) and cut.startswith('{"body":"token=' + REDACTED + "&a=1")
        # ... one whose value redaction shortens, so that its cut head fits, is marked cut
        # (before: its tail gone without a word)
        cut = payload_text({"body": "password=" + "x" * 5000 + "&name=bob", "after": "tail"}, self.KEYS)
        assert cut == '{"body":"password=' + REDACTED + '"' + TRUNCATED
        # ... also inside a JSON document carried as a body (an SQS message of a queued request)
        queued = json.dumps({"body": "password=" + "x" * 500 + "&name=bob", "after": "tail"})
        assert payload_text({"Records": [{"body": queued, "messageId": "m1"}]}, self.KEYS, limit=300).endswith(TRUNCATED)
        # ... and text that is no form, or a form-like string outside a body, is kept
        assert json.loads(payload_text({"body": "x == y, token=t"}, self.KEYS))["body"] == "x == y, token=t"
        assert json.loads(payload_text({"note": "token=t"}, self.KEYS))["note"] == "token=t"

    def test_newline_delimited_json_bodies_are_redacted_line_by_line(self):
        # GIVEN a body of JSON documents one per line (NDJSON; before: kept as it came, since
        # it does not parse as one document)
        body = json.dumps({"user": "u", "token": "t"}) + "\n\n" + json.dumps([{"password": "p", "note": "a\u2028b"}], ensure_ascii=False) + "\n"
        out = json.loads(payload_text({"body": body}, self.KEYS))["body"]
        # THEN each line is its document, redacted inside (a line separator inside a string,
        # which JSON allows raw, ends no line)
        assert [json.loads(line) for line in out.split("\n")] == [{"user": "u", "token": REDACTED}, [{"password": REDACTED, "note": "a\u2028b"}]]

    def test_json_that_does_not_parse_is_named_if_it_could_hold_a_key(self):
        # GIVEN bodies that begin as JSON but do not parse (cut short by the client)
        cut_short = '{"user": "u", "Token": "t-secret'
        harmless = '{"user": "u", "page": 2'
        out = json.loads(payload_text({"a": {"body": cut_short}, "b": {"body": harmless}}, self.KEYS))
        # THEN one that names a key to redact is named, not kept (before: kept, the token in it)
        assert out["a"]["body"] == f"<{len(cut_short)} characters of JSON that does not parse, not captured>"
        # ... and one that names none is kept as it came
        assert out["b"]["body"] == harmless

    def test_a_json_body_too_long_to_read_is_named_not_kept(self):
        import base64

        document = json.dumps({"token": "t-secret-value", "rows": ["x" * 100] * 300})
        # GIVEN JSON bodies past what is read (4 KB of output: 16 Ki characters of JSON, 24 Ki of
        # base64), their credential first
        out = json.loads(payload_text({"plain": {"body": document}, "encoded": {"body": base64.b64encode(document.encode()).decode(), "isBase64Encoded": True}}, self.KEYS))
        # THEN each is named, not kept (before: kept as it came, cut, the token in its first
        # characters, readable or decodable)
        assert out["plain"]["body"] == f"<{len(document)} characters of JSON, not captured>"
        assert out["encoded"]["body"].endswith("characters of base64, not captured>")

    def test_long_text_that_only_starts_with_a_bracket_is_kept_and_cut(self):
        # GIVEN a long log message that is no JSON ("[INFO] ...")
        text = "[INFO] " + "x" * 20_000
        out = payload_text({"message": text}, self.KEYS)
        # THEN it is kept, cut to the limit, as any text (before: named as JSON, not captured)
        assert out.endswith(TRUNCATED) and '"message":"[INFO] xxx' in out

    def test_raw_query_strings_are_redacted_by_key(self):
        out = json.loads(payload_text({"rawQueryString": "a=1&TOKEN=t&pass%77ord=p&b"}, self.KEYS))
        assert out["rawQueryString"] == f"a=1&TOKEN={REDACTED}&pass%77ord={REDACTED}&b"
        assert redact_query("no pairs", self.KEYS) == "no pairs"

    def test_a_presigned_urls_credentials_are_redacted_in_queries_and_parameter_maps_only(self):
        # url.query's keys count in a captured event's query and its maps of query parameters,
        # not as JSON keys elsewhere (a body's "signature" is the user's data).
        event = {
            "rawQueryString": "X-Amz-Credential=AKIA&sig=s&q=1",
            "queryStringParameters": {"X-Amz-Security-Token": "t", "q": "1"},
            "multiValueQueryStringParameters": {"X-Amz-Signature": ["a", "b"], "q": ["1"]},
            "body": json.dumps({"signature": "kept", "token": "t"}),
        }
        out = json.loads(payload_text(event, self.KEYS))
        assert out["rawQueryString"] == f"X-Amz-Credential={REDACTED}&sig={REDACTED}&q=1"
        assert out["queryStringParameters"] == {"X-Amz-Security-Token": REDACTED, "q": "1"}
        assert out["multiValueQueryStringParameters"] == {"X-Amz-Signature": REDACTED, "q": ["1"]}
        assert json.loads(out["body"]) == {"signature": "kept", "token": REDACTED}

    def test_credentials_in_authorizer_events_signed_headers_and_presigned_urls_anywhere_are_redacted(self):
        # GIVEN events and answers that carry credentials under names no configured key covers:
        # authorizer tokens, a request signed with a session token, and presigned URLs (a custom
        # resource's ResponseURL, S3 Object Lambda's inputS3Url, a redirect), which are live
        event = {
            "authorizationToken": "Bearer eyJ-token",
            "identitySource": ["Bearer eyJ-source"],
            "headers": {"X-Amz-Security-Token": "session-t", "Proxy-Authorization": "Basic proxy-b"},
            "ResponseURL": "https://cloudformation-custom-resource-response.s3.amazonaws.com/stack?X-Amz-Credential=AKIA-cred&X-Amz-Signature=sig-4f8c#part",
            "getObjectContext": {"inputS3Url": "https://bucket.s3.amazonaws.com/k?x-amz-security-token=obj-t&a=1"},
            "raw_path": "/orders?password=pass-p&page=2",
            "body": json.dumps({"Location": "https://b.s3.amazonaws.com/k?X-Amz-Signature=body-sig"}),
            "note": "what? a question, not a URL",
            "message": "Ready? Download it (https://b.s3.amazonaws.com/r.pdf?X-Amz-Credential=prose-cred&x=1) now",
            # a URL in a log's lines: its credential redacted, the lines after it kept
            "log": "GET https://b.s3.amazonaws.com/r.pdf?sig=log-sig failed\nretrying & giving up",
            "asked": "Is it ok? see https://b/my file.pdf?X-Amz-Signature=asked-sig (expires in 5 min)",
            # a link a template wrote in HTML, its '&' escaped
            "html": '<a href="https://b.s3.amazonaws.com/r.pdf?X-Amz-Algorithm=AWS4&amp;X-Amz-Credential=html-cred&amp;X-Amz-Signature=html-sig">Get</a>',
            # a URL with a blank in its path, in prose
            "Message": "Your report is ready: https://b.s3.amazonaws.com/reports/Q3 report.pdf?X-Amz-Credential=prose-blank-cred&X-Amz-Signature=prose-blank-sig",
            "https://b.s3.amazonaws.com/k?X-Amz-Security-Token=key-t": 1,
            "reply": {"statusCode": 302, "body": "https://app.example.com/reset?password=reset-p"},
            # quotes and brackets a URL may hold (encodeURIComponent leaves them), a path's blank
            "links": ["https://b.s3.amazonaws.com/photo(1).jpg?X-Amz-Signature=paren-sig", "https://host/O'Brien.pdf?name=O'Brien&sig=quote-sig", '/path with space?sig=blank-sig', "https://b.s3.amazonaws.com/my report.pdf?X-Amz-Signature=blank-path-sig", "https://h/o?response-content-disposition=attachment; filename=a.pdf&X-Amz-Signature=blank-query-sig"],
        }
        # WHEN captured
        text = payload_text(event, self.KEYS)
        out = json.loads(text)
        # THEN none of them is in the text, and what is no credential is kept as it came
        for value in ("eyJ-token", "eyJ-source", "session-t", "proxy-b", "AKIA-cred", "sig-4f8c", "obj-t", "pass-p", "body-sig", "prose-cred", "key-t", "reset-p", "paren-sig", "quote-sig", "blank-sig", "blank-path-sig", "blank-query-sig", "log-sig", "prose-blank-cred", "prose-blank-sig", "asked-sig", "html-cred", "html-sig"):
            assert value not in text, value
        assert out["ResponseURL"] == f"https://cloudformation-custom-resource-response.s3.amazonaws.com/stack?X-Amz-Credential={REDACTED}&X-Amz-Signature={REDACTED}#part"
        assert out["getObjectContext"]["inputS3Url"].endswith(f"x-amz-security-token={REDACTED}&a=1")
        assert out["raw_path"] == f"/orders?password={REDACTED}&page=2"
        assert out["note"] == event["note"]
        assert out["log"] == f"GET https://b.s3.amazonaws.com/r.pdf?sig={REDACTED} failed\nretrying & giving up"
        # ... after a question of the line's own, and with what follows the URL kept
        assert out["html"] == f'<a href="https://b.s3.amazonaws.com/r.pdf?X-Amz-Algorithm=AWS4&amp;X-Amz-Credential={REDACTED}&amp;X-Amz-Signature={REDACTED}">Get</a>'
        assert out["asked"] == f"Is it ok? see https://b/my file.pdf?X-Amz-Signature={REDACTED} (expires in 5 min)"
        assert out["message"] == f"Ready? Download it (https://b.s3.amazonaws.com/r.pdf?X-Amz-Credential={REDACTED}&x=1) now"
        # ... also when the URL is cut
        cut = payload_text({"Location": "https://b.s3.amazonaws.com/k?X-Amz-Signature=" + "s" * 5000}, self.KEYS, limit=300)
        assert "sss" not in cut and cut.endswith(TRUNCATED)

    def test_a_value_holding_quotes_brackets_or_a_question_mark_is_redacted_whole(self):
        # GIVEN URLs in texts whose credentials hold characters that also close a link around a
        # URL (encodeURIComponent leaves ' ( ) ! * unescaped), or a '?' after a '/'
        event = {
            "message": "GET https://api.example.com/login?user=bob&password=o'Neil(1984)! ok",
            "log": "fetch https://b.s3.amazonaws.com/k?X-Amz-Signature=abc/def?ghi",
            "body": 'redirect=https://x/cb?api_key=k3y"tail&z=1',
            "marks": "see https://b/k?sig=SE`CRET and https://b/k?sig=SE<CRET and https://b/k?token=abc>def",
        }
        # WHEN captured
        text = payload_text(event, self.KEYS)
        # THEN no part of any of them is in the text (a pass that ended values at those marks
        # alone left "'Neil(1984)!", "?ghi", '"tail', "CRET", ">def")
        for part in ("Neil", "1984", "ghi", "tail", "CRET", "def"):
            assert part not in text, (part, text)

    def test_a_stack_cut_inside_a_long_line_s_query_keeps_none_of_its_credentials(self):
        from lambdawrap.handler.invocation import MAX_STACK_CHARS, describe_exception
        from lambdawrap.handler.redact import URL_QUERY_KEYS, urls_redacted

        # GIVEN an exception whose note is one line longer than the stack kept, a URL's query
        # crossing the cut, its '?' before it
        error = RuntimeError("failed")
        error.add_note("retry url https://b/p?a=" + "x" * 10_000 + "&sig=NOTE-SIG&b=" + "y" * 30_000)
        # WHEN a failed call's span describes it
        stack = describe_exception(error, redact=lambda text: urls_redacted(text, URL_QUERY_KEYS, "REDACTED"))["stack"]
        # THEN its tail is kept, the credential redacted (before: read from mid-line, the
        # query's '?' cut away, it went as it came)
        assert len(stack) == MAX_STACK_CHARS and "NOTE-SIG" not in stack and "sig=REDACTED" in stack

    def test_output_is_bounded_whatever_the_input_size(self):
        huge = {"blob": "y" * 6_000_000, "list": list(range(100_000))}
        text = payload_text(huge, self.KEYS, limit=1000)
        assert len(text) <= 1000 + len(TRUNCATED) and text.endswith(TRUNCATED)

    def test_what_json_cannot_say_is_named_never_repr_d(self):
        class Loud:
            def __repr__(self) -> str:
                raise AssertionError("repr() of the user's object was called")

            __str__ = __repr__

        class Sneaky(str):
            def __str__(self) -> str:
                raise AssertionError("a str subclass's __str__ was called")

        out = json.loads(payload_text({"obj": Loud(), "raw": b"\x00\x01", "nan": float("nan"), "big": 10**40, "s": Sneaky("v"), 3: None}, self.KEYS))
        assert out == {"obj": "<Loud>", "raw": "<2 bytes>", "nan": "nan", "big": "<133-bit int>", "s": "v", "3": None}

    def test_bytes_payloads_are_kept_only_as_json(self):
        assert json.loads(payload_text(b'{"password": "p", "x": 1}', self.KEYS)) == {"password": REDACTED, "x": 1}
        assert payload_text(b"\xff\xfe binary", self.KEYS) == '"<9 bytes>"'

    def test_deep_nesting_is_cut_not_recursed_into(self):
        deep: list = []
        for _ in range(5000):
            deep = [deep]
        text = payload_text(deep, self.KEYS)
        assert "nested too deeply" in text

    def test_never_raises(self):
        class Weird(dict):
            def items(self):
                raise RuntimeError("boom")

        assert payload_text(Weird(a=1), self.KEYS) == '{"a":1}'  # the dict's own items, not the override
