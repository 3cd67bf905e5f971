"""Routes of the platform's HTTP APIs: Runtime (2018-06-01), Extensions (2020-01-01) and
Telemetry (2022-07-01), all on the one port named by AWS_LAMBDA_RUNTIME_API."""

from __future__ import annotations

import json
import uuid

from lambdawrap.devtools.emulator.api_server import ApiError, Reply, RequestContext, parse_json_body
from lambdawrap.devtools.emulator.sandbox import Sandbox
from lambdawrap.devtools.emulator.state import Outcome, sanitize_error_type

RUNTIME = "/2018-06-01/runtime"
EXTENSION = "/2020-01-01/extension"
TELEMETRY = "/2022-07-01/telemetry"
LOGS = "/2020-08-15/logs"
_ACCEPTED = Reply(202, {"status": "OK"})
_EVENT_TYPES = ("INVOKE", "SHUTDOWN")


class PlatformApi:
    """Maps requests onto the sandbox; every error is the APIs' documented JSON."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._static = {
            RUNTIME + "/invocation/next": ("GET", self._runtime_next),
            RUNTIME + "/init/error": ("POST", self._runtime_init_error),
            EXTENSION + "/register": ("POST", self._register),
            EXTENSION + "/event/next": ("GET", self._extension_next),
            EXTENSION + "/init/error": ("POST", lambda req: self._extension_error(req, "Init")),
            EXTENSION + "/exit/error": ("POST", lambda req: self._extension_error(req, "Exit")),
            TELEMETRY: ("PUT", self._subscribe),
            LOGS: ("PUT", self._logs_subscribe),
        }

    def __call__(self, req: RequestContext) -> Reply:
        path = req.path.rstrip("/") or "/"
        route = self._static.get(path)
        if route is not None and req.oversize:
            raise ApiError(413, "RequestEntityTooLarge", "request body too large")  # only a response's size is judged
        if route is None and path.startswith(RUNTIME + "/invocation/"):
            parts = path[len(RUNTIME + "/invocation/") :].split("/")
            if len(parts) == 2 and parts[1] in ("response", "error"):
                route = ("POST", lambda r: self._runtime_post(r, parts[0], parts[1] == "error"))
        if route is None:
            raise ApiError(404, "InvalidRequest", f"unknown path {req.path}")
        method, handler = route
        if req.method != method:
            raise ApiError(405, "MethodNotAllowed", f"{req.method} is not allowed on {path}; use {method}")
        return handler(req)

    # Runtime API --------------------------------------------------------------

    def _runtime_next(self, req: RequestContext) -> Reply:
        inv = self.sandbox.runtime_next(req.connected_at)
        headers = {
            "Lambda-Runtime-Aws-Request-Id": inv.request_id,
            "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": self.sandbox.config.function_arn,
            "Lambda-Runtime-Trace-Id": inv.trace_header,
            "Lambda-Runtime-Client-Context": inv.client_context,
            "Lambda-Runtime-Cognito-Identity": inv.cognito_identity,
            "Lambda-Runtime-Aws-Tenant-Id": inv.tenant_id,
            "Content-Type": "application/json",
        }
        return Reply(200, inv.payload, {k: v for k, v in headers.items() if v})

    def _runtime_post(self, req: RequestContext, request_id: str, is_error: bool) -> Reply:
        mode = req.header("Lambda-Runtime-Function-Response-Mode")
        if mode is not None and mode.lower() != "streaming":
            raise ApiError(400, "InvalidFunctionResponseMode", f"invalid response mode {mode!r}")
        content_type = req.header("Content-Type") or "application/json"
        if req.oversize:
            # Too large to keep, and far over the payload limit: only its size matters.
            outcome = Outcome(b"", content_type, function_error=is_error, size=req.oversize)
        elif is_error:
            body = req.body
            error_type = req.header("Lambda-Runtime-Function-Error-Type")
            if content_type.startswith("application/vnd.aws.lambda.error.cause+json"):
                try:
                    body = json.dumps({k: v for k, v in json.loads(body).items() if k != "errorCause"}).encode()
                except (ValueError, AttributeError):
                    pass
            outcome = Outcome(body, "application/json", function_error=True, error_type=sanitize_error_type(error_type))
        else:
            outcome = Outcome(req.body, content_type)
        self.sandbox.runtime_respond(request_id, outcome)
        return _ACCEPTED

    def _runtime_init_error(self, req: RequestContext) -> Reply:
        self.sandbox.runtime_init_error(req.header("Lambda-Runtime-Function-Error-Type"), req.body)
        return _ACCEPTED

    # Extensions API -----------------------------------------------------------

    def _register(self, req: RequestContext) -> Reply:
        name = req.header("Lambda-Extension-Name")
        if not name:
            raise ApiError(403, "Extension.InvalidExtensionName", "Empty extension name")
        body = parse_json_body(req.body, "InvalidRequestFormat", 403)
        if not isinstance(body, dict):
            raise ApiError(403, "InvalidRequestFormat", "request body must be a JSON object")
        if body.get("configurationKeys"):
            raise ApiError(403, "InvalidRequestFormat", "configurationKeys are not supported")
        events = body.get("events") or []
        if not isinstance(events, list) or any(e not in _EVENT_TYPES for e in events):
            raise ApiError(403, "Extension.InvalidEventType", f"events must be drawn from {', '.join(_EVENT_TYPES)}")
        features = [f.strip() for f in (req.header("Lambda-Extension-Accept-Feature") or "").split(",")]
        identifier, reply = self.sandbox.extension_register(name, events, "accountId" in features)
        return Reply(200, reply, {"Lambda-Extension-Identifier": identifier})

    def _extension_next(self, req: RequestContext) -> Reply:
        event = self.sandbox.extension_next(req.header("Lambda-Extension-Identifier"))
        return Reply(200, event, {"Lambda-Extension-Event-Identifier": str(uuid.uuid4())})

    def _extension_error(self, req: RequestContext, kind: str) -> Reply:
        self.sandbox.extension_error(req.header("Lambda-Extension-Identifier"), kind, req.header("Lambda-Extension-Function-Error-Type"))
        return _ACCEPTED

    # Telemetry API ------------------------------------------------------------

    def _subscribe(self, req: RequestContext) -> Reply:
        identifier = req.header("Lambda-Extension-Identifier")
        self.sandbox.extension(identifier)  # identifier errors (403) come before body errors
        body = parse_json_body(req.body, "ValidationError", 400)
        self.sandbox.telemetry_subscribe(identifier, body)
        return Reply(200, b'"OK"', {"Content-Type": "application/json"})

    def _logs_subscribe(self, req: RequestContext) -> Reply:
        self.sandbox.extension(req.header("Lambda-Extension-Identifier"))
        raise ApiError(400, "ValidationError", "the Logs API is not supported by this emulator; subscribe with the Telemetry API")
