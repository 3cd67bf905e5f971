"""The public face of the emulator: servers, the invoke endpoint and the sandbox, as one object."""

from __future__ import annotations

import base64
import binascii
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Any, Callable, Mapping, TextIO

from lambdawrap.devtools.emulator.apis import PlatformApi
from lambdawrap.devtools.emulator.environment import DEFAULT_MEMORY_MB, FunctionConfig
from lambdawrap.devtools.emulator.api_server import ApiError, ApiServer, Reply, RequestContext
from lambdawrap.devtools.emulator.init_phase import InitFailure
from lambdawrap.devtools.emulator.invoke_phase import request_too_large
from lambdawrap.devtools.emulator.limits import DEFAULT_INIT_CPU, LimitSettings
from lambdawrap.devtools.emulator.runtime_files import write_runtime_dir
from lambdawrap.devtools.emulator.sandbox import Sandbox
from lambdawrap.devtools.emulator.state import InvokeResult
from lambdawrap.devtools.emulator.telemetry import TelemetryBus

INVOKE_PATH_PREFIX = "/2015-03-31/functions/"
INVOKE_PATH_SUFFIX = "/invocations"
MAX_CONCURRENCY = 1600  # PerExecutionEnvironmentMaxConcurrency


class Emulator:
    """A Docker-free Lambda execution environment for one function.

    The layer folder plays /opt and the task folder /var/task. The runtime is the real
    awslambdaric, started through AWS_LAMBDA_EXEC_WRAPPER as the managed bootstrap does.
    Use as a context manager; `invoke()` from Python, or POST to `invoke_url`.

    Where the machine allows (root, cgroups), the environment gets what Lambda enforces:
    memory/1769 of a core during invocations (`cpu_limit`; during init as `init_cpu` says),
    one memory limit for the runtime and the extensions, freezing between invocations
    (`freeze`). `max_concurrency=N` runs it as a Lambda Managed Instances environment: N
    runtime workers, concurrent invocations, never frozen.
    """

    def __init__(
        self,
        task_dir: str,
        handler: str,
        layer_dir: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 3.0,
        memory_mb: int = DEFAULT_MEMORY_MB,
        function_name: str = "function",
        init_timeout_s: float = 10.0,
        region: str = "us-east-1",
        python: str | None = None,
        invoke_port: int | None = 0,
        echo: TextIO | Callable[[str, str], None] | None = None,
        cpu_limit: bool = True,
        freeze: bool = True,
        init_cpu: str = DEFAULT_INIT_CPU,
        max_concurrency: int | None = None,
        telemetry_log_fd: bool = True,
    ) -> None:
        python = python or sys.executable
        if max_concurrency is not None and not 1 <= max_concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"max_concurrency must be between 1 and {MAX_CONCURRENCY}")
        self.limit_settings = LimitSettings(cpu_limit=cpu_limit, freeze=freeze, init_cpu=init_cpu)
        self.config = FunctionConfig(
            task_dir=os.path.abspath(task_dir),
            handler=handler,
            layer_dir=os.path.abspath(layer_dir) if layer_dir else None,
            function_name=function_name,
            memory_mb=memory_mb,
            timeout_s=timeout_s,
            init_timeout_s=init_timeout_s,
            region=region,
            env=dict(env or {}),
            python=python,
            max_concurrency=max_concurrency,
            telemetry_log_fd=telemetry_log_fd,
        )
        self._invoke_port = invoke_port
        self._echo = echo
        self._log_lock = threading.Lock()
        self.logs: collections.deque[tuple[str, str]] = collections.deque(maxlen=200_000)
        self.bus = TelemetryBus()
        self._runtime_dir: str | None = None
        self._api: ApiServer | None = None
        self._invoke_server: ApiServer | None = None
        self.sandbox: Sandbox | None = None

    # lifecycle -----------------------------------------------------------------

    def start(self) -> "Emulator":
        if not os.path.isdir(self.config.task_dir):
            raise FileNotFoundError(f"function folder not found: {self.config.task_dir}")
        if self.config.layer_dir and not os.path.isdir(self.config.layer_dir):
            raise FileNotFoundError(f"layer folder not found: {self.config.layer_dir}")
        self._runtime_dir = tempfile.mkdtemp(prefix="lambdawrap-runtime-")
        version = _python_version(self.config.python)
        bootstrap = write_runtime_dir(
            self._runtime_dir,
            python=self.config.python,
            execution_env=f"AWS_Lambda_python{version}",
            opt_dir=self.config.opt_dir or os.path.join(self._runtime_dir, "opt"),
        )
        self.sandbox = Sandbox(self.config, self.bus, self._log, bootstrap, self._runtime_dir, f"python:{version}", self.limit_settings)
        self._api = ApiServer(PlatformApi(self.sandbox))
        self._api.start("emulator-platform-api")
        self.sandbox.api_address = f"127.0.0.1:{self._api.port}"
        if self._invoke_port is not None:
            try:
                self._invoke_server = ApiServer(self._route_invoke, port=self._invoke_port)
            except OSError:
                self.stop()
                raise
            self._invoke_server.start("emulator-invoke")
        return self

    def stop(self) -> None:
        """Spin the environment down (SHUTDOWN to extensions) and stop every server."""
        if self.sandbox is not None:
            self.sandbox.spindown()
        for server in (self._invoke_server, self._api):
            if server is not None:
                server.stop()
        self._invoke_server = self._api = None
        if self._runtime_dir:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)
            self._runtime_dir = None

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # use -----------------------------------------------------------------------

    @property
    def runtime_api(self) -> str:
        return self.sandbox.api_address if self.sandbox else ""

    @property
    def invoke_url(self) -> str:
        if self._invoke_server is None:
            return ""
        return f"http://127.0.0.1:{self._invoke_server.port}{INVOKE_PATH_PREFIX}function{INVOKE_PATH_SUFFIX}"

    def init(self) -> None:
        """Initialize now instead of at the first invoke; raises InitFailure."""
        self.sandbox.init()

    def invoke(self, event: Any = None, *, trace_header: str | None = None, client_context: Mapping | None = None, raw: bytes | None = None, request_id: str | None = None) -> InvokeResult:
        """Invoke the function with a JSON-able event (or raw bytes); returns when the caller
        would. `request_id`: the id of an earlier invocation, as Lambda's retry of an
        asynchronous invocation that failed keeps it."""
        payload = raw if raw is not None else json.dumps(event).encode()
        context = json.dumps(client_context) if client_context is not None else None
        return self.sandbox.invoke(payload, trace_header=trace_header, client_context=context, request_id=request_id)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until the current invoke phase (extensions, report, any reset) has ended; with
        max_concurrency, until no invocation is in flight and every worker still alive is idle."""
        return self.sandbox.wait_idle(timeout)

    def records(self, record_type: str | None = None) -> list[dict]:
        """Telemetry records emitted so far, optionally of one type (e.g. 'platform.report')."""
        return [e for e in list(self.bus.history) if record_type is None or e["type"] == record_type]

    def log_lines(self, source: str | None = None) -> list[str]:
        """The lines logged so far, optionally from one source ("function", "extension",
        "platform"): every line the environment's processes wrote before the call included
        (waiting up to 1 s in all for them to be handed on)."""
        if self.sandbox is not None:
            self.sandbox.drain_output()
        return [line for src, line in list(self.logs) if source is None or src == source]

    # internals -----------------------------------------------------------------

    def _log(self, source: str, line: str) -> None:
        self.logs.append((source, line))
        echo = self._echo
        if echo is None:
            return
        if callable(echo):
            echo(source, line)
            return
        with self._log_lock:
            echo.write(f"[{source}] {line}\n")
            echo.flush()

    def _route_invoke(self, req: RequestContext) -> Reply:
        if not (req.path.startswith(INVOKE_PATH_PREFIX) and req.path.endswith(INVOKE_PATH_SUFFIX)):
            raise ApiError(404, "ResourceNotFoundException", f"unknown path {req.path}")
        if req.method != "POST":
            raise ApiError(405, "MethodNotAllowed", "use POST")
        if req.oversize:
            raise ApiError(413, "RequestEntityTooLarge", request_too_large(req.oversize))
        client_context = req.header("X-Amz-Client-Context")
        if client_context:
            try:
                client_context = base64.b64decode(client_context, validate=True).decode()
                json.loads(client_context)
            except (binascii.Error, ValueError):
                raise ApiError(400, "InvalidRequestContentException", "X-Amz-Client-Context must be base64-encoded JSON") from None
        result = self.sandbox.invoke(
            req.body or b"{}",
            trace_header=req.header("X-Amzn-Trace-Id"),
            client_context=client_context or None,
            tenant_id=req.header("X-Amz-Tenant-Id"),
        )
        return Reply(result.status, result.body, result.headers)


def _python_version(python: str) -> str:
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        return "%d.%d" % sys.version_info[:2]
    out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


__all__ = ["Emulator", "InitFailure", "InvokeResult"]
