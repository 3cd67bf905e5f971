"""The environment variables the platform gives the runtime and the extensions (spec §6)."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Mapping

# Never handed to extensions, besides every name that starts with "_".
_HIDDEN_FROM_EXTENSIONS = frozenset(
    {
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_XRAY_CONTEXT_MISSING",
        "AWS_XRAY_DAEMON_ADDRESS",
        "LAMBDA_RUNTIME_DIR",
        "LAMBDA_TASK_ROOT",
        "AWS_LAMBDA_MAX_CONCURRENCY",  # the runtime's alone, on Managed Instances
    }
)
# The platform owns these; a customer value cannot replace them.
_RESERVED = frozenset({"AWS_LAMBDA_RUNTIME_API", "_HANDLER", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR", "AWS_LAMBDA_MAX_CONCURRENCY"})
MANAGED_INSTANCES_INIT_LIMIT_S = 130.0
DEFAULT_MEMORY_MB = 1769  # a full vCPU: emulated functions run at full speed unless asked otherwise
_FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "ASIAEMULATOREXAMPLE0",
    "AWS_SECRET_ACCESS_KEY": "emulator/secret/access/key/example0000000",
    "AWS_SESSION_TOKEN": "emulator-session-token",
}


@dataclass(frozen=True)
class FunctionConfig:
    """What the emulator needs to know about the function it hosts."""

    task_dir: str
    handler: str
    layer_dir: str | None = None
    function_name: str = "function"
    function_version: str = "$LATEST"
    memory_mb: int = DEFAULT_MEMORY_MB
    timeout_s: float = 3.0
    init_timeout_s: float = 10.0
    region: str = "us-east-1"
    account_id: str = "012345678912"
    env: Mapping[str, str] = field(default_factory=dict)
    python: str = ""
    max_concurrency: int | None = None  # Lambda Managed Instances: requests per environment
    # The runtime gets _LAMBDA_TELEMETRY_LOG_FD, as the managed runtimes do: awslambdaric then
    # writes `logging` output and its error reports as framed records, one record each.
    telemetry_log_fd: bool = True

    @property
    def managed_instances(self) -> bool:
        return self.max_concurrency is not None

    @property
    def initialization_type(self) -> str:
        """As AWS_LAMBDA_INITIALIZATION_TYPE and platform.initStart both say it: provisioned
        concurrency where the function's environment asks for it (the init still runs at the
        first invoke here), as Lambda's telemetry then says so too."""
        if self.managed_instances:
            return "lambda-managed-instances"
        return "provisioned-concurrency" if self.env.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "provisioned-concurrency" else "on-demand"

    @property
    def init_limit_s(self) -> float:
        """How long init may take: max(130 s, the function timeout) on Managed Instances."""
        return max(MANAGED_INSTANCES_INIT_LIMIT_S, self.timeout_s) if self.managed_instances else self.init_timeout_s

    @property
    def function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.function_name}"

    @property
    def opt_dir(self) -> str:
        """The folder that plays /opt (an empty private folder when no layer is given)."""
        return self.layer_dir or ""


def _opt_path(value: str, opt_dir: str) -> str:
    """Map a path the user wrote for the real platform (/opt/...) onto the layer folder."""
    if opt_dir and (value == "/opt" or value.startswith("/opt/")):
        return opt_dir + value[len("/opt") :]
    return value


def log_stream_name() -> str:
    return time.strftime("%Y/%m/%d", time.gmtime()) + "/[$LATEST]" + secrets.token_hex(16)


def runtime_environment(config: FunctionConfig, api_address: str, runtime_dir: str, stream_name: str) -> dict[str, str]:
    """The runtime process's environment, built from nothing as the platform does."""
    opt = config.opt_dir
    env = {
        "PATH": f"{os.path.dirname(config.python)}:/usr/local/bin:/usr/bin:/bin:{opt}/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "LD_LIBRARY_PATH": f"{opt}/lib",
        "AWS_REGION": config.region,
        "AWS_DEFAULT_REGION": config.region,
        "AWS_LAMBDA_FUNCTION_NAME": config.function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": config.function_version,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": stream_name,
        "AWS_LAMBDA_INITIALIZATION_TYPE": config.initialization_type,
        "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        **_FAKE_CREDENTIALS,
    }
    for key, value in config.env.items():
        if key not in _RESERVED:
            env[key] = _opt_path(value, opt) if key == "AWS_LAMBDA_EXEC_WRAPPER" else value
    if config.managed_instances:
        # RIC forks this many workers; Managed Instances logs are always JSON.
        env["AWS_LAMBDA_MAX_CONCURRENCY"] = str(config.max_concurrency)
        env["AWS_LAMBDA_LOG_FORMAT"] = "JSON"
    env.update(
        {
            "AWS_LAMBDA_RUNTIME_API": api_address,
            "_HANDLER": config.handler,
            "LAMBDA_TASK_ROOT": config.task_dir,
            "LAMBDA_RUNTIME_DIR": runtime_dir,
        }
    )
    return env


def extension_environment(runtime_env: Mapping[str, str]) -> dict[str, str]:
    """The extensions' environment: the runtime's, less the variables they never get."""
    return {k: v for k, v in runtime_env.items() if not k.startswith("_") and k not in _HIDDEN_FROM_EXTENSIONS}
