"""A localhost HTTP API compatible with the AWS Parameters and Secrets Lambda Extension:

    GET /secretsmanager/get?secretId=...[&versionId=...][&versionStage=...]
    GET /systemsmanager/parameters/get?name=...[&withDecryption=true][&version=...][&label=...]

Every request must carry X-Aws-Parameters-Secrets-Token equal to AWS_SESSION_TOKEN. Answers
have the shapes of GetSecretValue and GetParameter.
"""

from __future__ import annotations

import base64
import datetime
import hmac
import json
import threading
from urllib.parse import parse_qs, urlsplit

from lambdawrap.companion.prebound_http import PreboundHttpServer
from lambdawrap.companion.secret_store import SecretStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


class SecretsHttpApi:
    """Binds its port at once; imports and starts the HTTP server only when the first
    request is waiting, so an unused API costs nothing at cold start."""

    def __init__(self, store: SecretStore, token: str, port: int) -> None:
        self.store = store
        self._token = token
        # Loopback only: the function reaches it on localhost, nothing else may.
        self._http = PreboundHttpServer("127.0.0.1", port)
        self.port = self._http.address[1]
        threading.Thread(target=self._serve_when_needed, name="lambdawrap-secrets-api", daemon=True).start()

    def _serve_when_needed(self) -> None:
        if self._http.wait_for_client():  # an unused API never imports http.server
            self._http.serve_forever(self._handler)

    def stop(self) -> None:
        self._http.stop()

    def _handler(self) -> type:
        from http.server import BaseHTTPRequestHandler

        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                status, body = api.handle(self.path, self.headers.get(TOKEN_HEADER))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        return Handler

    def handle(self, path: str, token: str | None) -> tuple[int, Any]:
        if not self._token or not token or not hmac.compare_digest(token.encode(), self._token.encode()):
            return 401, {"error": f"missing or invalid {TOKEN_HEADER} header (it must equal AWS_SESSION_TOKEN)"}
        try:
            parts = urlsplit(path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        except ValueError:  # e.g. "//[": not a path we could serve
            return 400, {"error": "malformed request path"}
        try:
            if parts.path == "/secretsmanager/get":
                return 200, self._secret(query)
            if parts.path == "/systemsmanager/parameters/get":
                return 200, self._parameter(query)
        except KeyError as exc:
            return 400, {"error": f"missing query parameter {exc.args[0]}"}
        except Exception as exc:  # noqa: BLE001 - AWS errors are answered, never raised
            code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code") or type(exc).__name__
            status = (getattr(exc, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode") or 500
            return int(status), {"error": code}
        return 404, {"error": f"unknown path {parts.path}"}

    def _secret(self, query: dict) -> Any:
        kwargs = {"SecretId": query["secretId"]}
        if query.get("versionId"):
            kwargs["VersionId"] = query["versionId"]
        if query.get("versionStage"):
            kwargs["VersionStage"] = query["versionStage"]
        key = ("secretsmanager",) + tuple(sorted(kwargs.items()))
        return self.store.cached_call(key, lambda: _jsonable(self.store.client("secretsmanager").get_secret_value(**kwargs)))

    def _parameter(self, query: dict) -> Any:
        name = query["name"]
        if query.get("version"):
            name = f"{name}:{query['version']}"
        elif query.get("label"):
            name = f"{name}:{query['label']}"
        decrypt = query.get("withDecryption", "false").lower() == "true"
        key = ("ssm", name, decrypt)
        answer = self.store.cached_call(key, lambda: _jsonable(self.store.client("ssm").get_parameter(Name=name, WithDecryption=decrypt)))
        return {"Parameter": answer.get("Parameter"), "ResultMetadata": {}}
