"""The localhost secrets API the function calls, in the shapes functions are commonly written for:

    GET /secretsmanager/get?secretId=...[&versionId=...][&versionStage=...]
    GET /systemsmanager/parameters/get?name=...[&withDecryption=true][&version=...][&label=...]
        (either with a slash before the query too: /systemsmanager/parameters/get/?name=...)
        the AWS Parameters and Secrets Lambda Extension's: answers shaped like GetSecretValue
        and GetParameter, errors as {"error": <AWS code>} with AWS's status
    GET /secrets/<name>   {"value": "..."}; 404 when the name is unknown, 500 when it cannot be read
    GET /?name=<name>     {"value": "..."}; 500 with {"error", "message"} when it cannot be read

(`secret_names` says what a bare name means.) Every request must carry
X-Aws-Parameters-Secrets-Token equal to AWS_SESSION_TOKEN, as the AWS extension wants. With
LAMBDAWRAP_SECRETS_TOKEN=optional the last two shapes, whose usual code sends no token, are
served without one to loopback clients; a wrong token is refused whatever the setting. The API
listens on 127.0.0.1 only, on LAMBDAWRAP_SECRETS_PORT, on LAMBDAWRAP_SECRETS_COMPAT_PORT if set,
and on PARAMETERS_SECRETS_EXTENSION_HTTP_PORT if set while that extension is not in the
environment (a function moved from it reads its port there); every port answers every shape.
All answers come from the store's one cache.
"""

from __future__ import annotations

import json
import threading
from urllib.parse import parse_qs, unquote, urlsplit

# hmac's own fallback, in constant time: `import hmac` loads OpenSSL's hashlib, ~2 ms of the
# companion's CPU in init, where nothing else of it needs hashing.
from _operator import _compare_digest as compare_digest

from lambdawrap.companion.prebound_http import PreboundHttpServer
from lambdawrap.companion.secret_names import ReadFailed, SecretNames, UnknownName
from lambdawrap.companion.secret_store import SecretStore
from lambdawrap.companion.secrets_ports import bind_ports
from lambdawrap.shared.log import Failures
from lambdawrap.shared.secret_sources import error_code, parameter_key, secret_key
from lambdawrap.shared.settings import SECRETS_TOKEN, Settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from lambdawrap.companion.event_loop import EventLoop

TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"
SECRETS_MANAGER_PATH = "/secretsmanager/get"
PARAMETERS_PATH = "/systemsmanager/parameters/get"
SECRETS_PREFIX = "/secrets/"
NAME_PATH = "/"


class SecretsHttpApi:
    """Binds its ports at once; imports and starts an HTTP server on a port only when the
    first request is waiting there, so an unused API costs nothing at cold start.

    With the companion's event loop, the loop watches the ports until then: a thread waiting
    for a client that may never come would be stopped and restarted by the freezer around
    every invocation. Without one (tests, tools), a thread per port waits."""

    def __init__(self, store: SecretStore, session_token: str, settings: Settings, loop: EventLoop | None = None, servers: list | None = None) -> None:
        """`servers`: the ports bound already (secrets_ports.bind_ports); bound here if None."""
        self.store = store
        self.names = SecretNames(store.sources, settings.secrets_allow_undeclared)
        self._session_token = session_token
        self._token_optional = settings.secrets_token == "optional"
        self._failures = Failures()
        self._servers: list = bind_ports(settings) if servers is None else servers
        for server in self._servers:
            if loop is None:
                threading.Thread(target=self._serve_when_needed, args=(server,), name=f"lambdawrap-secrets-api-{server.address[1]}", daemon=True).start()
            else:
                # Registered from the loop's own thread: its selector is not shared.
                loop.call_soon_threadsafe(lambda server=server: loop.add_reader(server.listening_socket, lambda _sock, server=server: self._first_client(loop, server)))
        self.ports = [server.address[1] for server in self._servers]

    def _serve_when_needed(self, server: PreboundHttpServer) -> None:
        if server.wait_for_client():  # an unused port never imports http.server
            server.serve_forever(self._handler)

    def _first_client(self, loop: EventLoop, server: PreboundHttpServer) -> None:
        loop.remove_reader(server.listening_socket)
        threading.Thread(target=server.serve_forever, args=(self._handler,), name=f"lambdawrap-secrets-api-{server.address[1]}", daemon=True).start()

    def stop(self) -> None:
        for server in self._servers:
            server.stop()

    def _handler(self) -> type:
        from http.server import BaseHTTPRequestHandler

        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                status, body = api.handle(self.path, self.headers.get(TOKEN_HEADER), self.client_address[0])
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        return Handler

    def handle(self, path: str, token: str | None, client_host: str = "127.0.0.1") -> tuple[int, Any]:
        """(status, JSON body) for one GET; never raises, never puts a value in an error."""
        try:
            return self._handle(path, token, client_host)
        except Exception:  # noqa: BLE001 - a bug of ours is answered, the companion keeps serving
            self._failures.record("a secrets API request failed")
            return 500, {"error": "InternalError", "message": "the secrets API failed on this request"}

    def _handle(self, path: str, token: str | None, client_host: str) -> tuple[int, Any]:
        try:
            parts = urlsplit(path)
            # A literal "+" is kept: secret and parameter names hold no spaces, but may hold "+".
            query = {k: v[-1] for k, v in parse_qs(parts.query.replace("+", "%2B")).items()}
        except ValueError:  # e.g. "//[": not a path we could serve
            parts, query = None, {}
        tokenless_shape = parts is not None and (parts.path.startswith(SECRETS_PREFIX) or parts.path == NAME_PATH)
        refusal = self._refusal(token, client_host, tokenless_shape)
        if refusal is not None:
            return 401, refusal
        if parts is None:
            return 400, {"error": "malformed request path"}
        if parts.path.startswith(SECRETS_PREFIX):
            return self._value(unquote(parts.path[len(SECRETS_PREFIX) :]), unknown_status=404)
        if parts.path == NAME_PATH:
            if not query.get("name"):
                return 400, {"error": "missing query parameter name"}
            return self._value(query["name"], unknown_status=500)
        # The AWS extension's paths with a slash before the query too, as AWS's documentation of
        # it writes them (`/systemsmanager/parameters/get/?name=...`): that extension serves both.
        path = parts.path[:-1] if parts.path in (SECRETS_MANAGER_PATH + "/", PARAMETERS_PATH + "/") else parts.path
        try:
            if path == SECRETS_MANAGER_PATH:
                key = secret_key(query["secretId"], query.get("versionId") or None, query.get("versionStage") or None)
                answer = self.store.answer(key)
                self.store.served(key, answer)
                return 200, answer
            if path == PARAMETERS_PATH:
                return 200, self._parameter(query)
        except KeyError as exc:
            return 400, {"error": f"missing query parameter {exc.args[0]}"}
        except Exception as exc:  # noqa: BLE001 - AWS errors are answered, never raised
            status = (getattr(exc, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode") or 500
            return int(status), {"error": error_code(exc)}
        return 404, {"error": f"unknown path {parts.path[:200]}"}

    def _refusal(self, token: str | None, client_host: str, tokenless_shape: bool) -> dict | None:
        """Why the request is refused (a 401 body), or None to serve it."""
        if not self._session_token:
            return {"error": "Unauthorized", "message": "AWS_SESSION_TOKEN is not set in this environment, so no request can be authenticated"}
        if token is not None:  # present, even empty: it must be right
            if compare_digest(token.encode(), self._session_token.encode()):
                return None
            return {"error": "Unauthorized", "message": f"the {TOKEN_HEADER} header does not equal AWS_SESSION_TOKEN"}
        if tokenless_shape and self._token_optional and _is_loopback(client_host):
            return None
        hint = f" ({SECRETS_TOKEN}=optional serves this shape without it, to loopback clients)" if tokenless_shape else ""
        return {"error": "Unauthorized", "message": f"the {TOKEN_HEADER} header is missing: it must equal AWS_SESSION_TOKEN{hint}"}

    def _value(self, name: str, unknown_status: int) -> tuple[int, dict]:
        try:
            return 200, {"value": self.names.value(self.store, name)}
        except UnknownName as exc:
            return unknown_status, {"error": "NotFound", "message": str(exc)}
        except ReadFailed as exc:
            return 500, {"error": exc.code, "message": str(exc)}

    def _parameter(self, query: dict) -> dict:
        name = query["name"]
        if query.get("version"):
            name = f"{name}:{query['version']}"
        elif query.get("label"):
            name = f"{name}:{query['label']}"
        decrypt = query.get("withDecryption", "false").lower() == "true"
        key = parameter_key(name, decrypt)
        answer = self.store.answer(key)
        self.store.served(key, answer)
        return {"Parameter": answer.get("Parameter"), "ResultMetadata": {}}


def _is_loopback(host: str) -> bool:
    import ipaddress  # deferred: only token-less requests need it

    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback
