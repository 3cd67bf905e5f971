"""Everything a local run needs, started together and always stopped: the OTLP receiver,
moto (for declared secrets), and the emulator with the layer wired in."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from lambdawrap.devtools.emulator import Emulator
from lambdawrap.devtools.emulator.environment import DEFAULT_MEMORY_MB
from lambdawrap.devtools.emulator.limits import DEFAULT_INIT_CPU
from lambdawrap.devtools.interpreters import InterpreterNotFound
from lambdawrap.devtools.layer_build import layer_python_version
from lambdawrap.devtools.otlp_receiver import OtlpReceiver
from lambdawrap.devtools.local.moto_server import MotoServer
from lambdawrap.devtools.runtime_envs import RuntimeEnvError, runtime_python

ROOT = Path(__file__).resolve().parents[4]
SOURCE_LAYER = ROOT / "layer"  # the development layer, in a source checkout
EXAMPLES = ROOT / "examples"


class LocalError(Exception):
    """A problem with what the user asked for; the command line prints it as one line."""


def layer_env(otlp_endpoint: str | None, socket_dir: str, extra: Mapping[str, str] | None = None) -> dict:
    """The function environment that turns the layer on, as a user would configure it."""
    env = {
        "AWS_LAMBDA_EXEC_WRAPPER": "/opt/wrapper.sh",
        # A socket of its own per run, so parallel runs never talk to each other's companion.
        "LAMBDAWRAP_SOCKET": f"{socket_dir}/lw.sock",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    if otlp_endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_endpoint
    env.update(extra or {})
    return env


@dataclass
class RunConfig:
    function_dir: Path
    handler: str
    env: dict = field(default_factory=dict)
    layer_dir: Path | None = SOURCE_LAYER
    otlp_endpoint: str | None = None
    timeout_s: float = 3.0
    init_timeout_s: float = 10.0  # Lambda's init limit
    memory_mb: int = DEFAULT_MEMORY_MB
    moto_seed: Mapping[str, Any] | None = None
    invoke_port: int | None = None
    cpu_limit: bool = True
    freeze: bool = True
    init_cpu: str = DEFAULT_INIT_CPU
    max_concurrency: int | None = None
    telemetry_log_fd: bool = True
    python: str | None = None  # the runtime's interpreter: a path, a name or X.Y; None: this one


def seed_moto(moto: MotoServer, seed: Mapping[str, Any]) -> None:
    for name, value in (seed.get("secrets") or {}).items():
        moto.client("secretsmanager").create_secret(Name=name, SecretString=value if isinstance(value, str) else json.dumps(value))
    for name, value in (seed.get("parameters") or {}).items():
        moto.client("ssm").put_parameter(Name=name, Value=str(value), Type="SecureString")
    moto.reset_recording()


@contextlib.contextmanager
def local_stack(config: RunConfig, echo: Any = None, on_exported: Any = None) -> Iterator[tuple]:
    """Yields (emulator, receiver or None, moto or None); stops all of them on the way out.
    `on_exported(kind, item)` sees every span, metric point and log record the built-in
    receiver gets."""
    if not config.function_dir.is_dir():
        raise LocalError(f"function folder not found: {config.function_dir}")
    if config.layer_dir is not None and not (config.layer_dir / "wrapper.sh").is_file():
        raise LocalError(f"no layer at {config.layer_dir}: build one with `lambdawrap build-layer --out {config.layer_dir}` or pass --layer DIR")
    try:
        runtime = runtime_python(config.python)
    except (InterpreterNotFound, RuntimeEnvError) as exc:
        raise LocalError(str(exc)) from None
    built_for = layer_python_version(config.layer_dir) if config.layer_dir is not None else None
    if built_for is not None and built_for != runtime.interpreter.version:
        # Its wrapt extension and bytecode are another version's: the handler would run uninstrumented.
        raise LocalError(
            f"the layer at {config.layer_dir} is built for Python {built_for}, the runtime is Python {runtime.interpreter.version}: "
            f"pass --python {built_for}, or build one with `lambdawrap build-layer --python-version {runtime.interpreter.version}`"
        )
    with contextlib.ExitStack() as stack:
        receiver = None
        endpoint = config.otlp_endpoint
        if config.layer_dir is not None and endpoint is None:
            receiver = stack.enter_context(OtlpReceiver(on_item=on_exported))
            endpoint = receiver.endpoint
        env = dict(config.env)
        moto = None
        if config.moto_seed or ("LAMBDAWRAP_SECRETS" in env and "AWS_ENDPOINT_URL" not in env):
            moto = stack.enter_context(MotoServer())
            seed_moto(moto, config.moto_seed or {})
            env.setdefault("AWS_ENDPOINT_URL", moto.endpoint)
        if config.layer_dir is not None:
            socket_dir = tempfile.mkdtemp(prefix="lw")  # short: Unix socket paths are capped at 108 bytes
            stack.callback(shutil.rmtree, socket_dir, True)
            env = layer_env(endpoint, socket_dir, env)
        emulator = Emulator(
            str(config.function_dir),
            config.handler,
            str(config.layer_dir) if config.layer_dir is not None else None,
            env=env,
            timeout_s=config.timeout_s,
            init_timeout_s=config.init_timeout_s,
            memory_mb=config.memory_mb,
            invoke_port=config.invoke_port,
            echo=echo,
            cpu_limit=config.cpu_limit,
            freeze=config.freeze,
            init_cpu=config.init_cpu,
            max_concurrency=config.max_concurrency,
            telemetry_log_fd=config.telemetry_log_fd,
            python=runtime.python,
        )
        try:
            stack.enter_context(emulator)
        except OSError as exc:
            raise LocalError(f"cannot start the emulator: {exc.strerror or exc}") from None
        yield emulator, receiver, moto
