"""Every setting of lambdawrap, parsed once from the environment into one frozen object.

Both halves (the handler's process and the companion) build their settings here, so that a
variable means the same thing on both sides. A bad value never raises: it logs one warning
naming the variable and the default used instead. Standard OTEL_EXPORTER_OTLP_* variables
are not parsed here: the OpenTelemetry exporters in the companion read them themselves.
"""

from __future__ import annotations

import os
from collections import namedtuple

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing and dataclasses cost the handler's cold start
    from typing import Any, Callable, Mapping



def _warn(message: str, *args: object) -> None:
    # logging is imported on the first warning only: the companion reads its settings before
    # its first /next, on the function's cold-start path.
    import logging

    logging.getLogger("lambdawrap").warning(message, *args)

# Environment variable names, with their defaults in `Settings` below.
DISABLED = "LAMBDAWRAP_DISABLED"
LOG_LEVEL = "LAMBDAWRAP_LOG_LEVEL"
SOCKET_PATH = "LAMBDAWRAP_SOCKET"
FLUSH = "LAMBDAWRAP_FLUSH"
FLUSH_BUDGET_MS = "LAMBDAWRAP_FLUSH_BUDGET_MS"
BUFFER_MAX_SPANS = "LAMBDAWRAP_BUFFER_MAX_SPANS"
CAPTURE_PAYLOAD = "LAMBDAWRAP_CAPTURE_PAYLOAD"
REDACT_KEYS = "LAMBDAWRAP_REDACT_KEYS"
PROACTIVE_INIT_MS = "LAMBDAWRAP_PROACTIVE_INIT_MS"
SECRETS = "LAMBDAWRAP_SECRETS"
SECRETS_TIMEOUT_MS = "LAMBDAWRAP_SECRETS_TIMEOUT_MS"
SECRETS_TTL = "LAMBDAWRAP_SECRETS_TTL"
SECRETS_REQUIRED = "LAMBDAWRAP_SECRETS_REQUIRED"
SECRETS_PORT = "LAMBDAWRAP_SECRETS_PORT"
METRICS_TEMPORALITY = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
_LOG_LEVELS = ("debug", "info", "warning", "error")
_TEMPORALITIES = ("delta", "cumulative", "lowmemory")


class FlushStrategy(namedtuple("FlushStrategy", ("mode", "interval_ms"))):
    """When the companion exports: after every invocation (end), every N ms (periodic), or
    adaptively (end while invocations are rare, periodic when they come often)."""

    __slots__ = ()

    def __new__(cls, mode: str = "adaptive", interval_ms: int = 1000) -> "FlushStrategy":
        return super().__new__(cls, mode, interval_ms)

    def __str__(self) -> str:
        return f"periodic,{self.interval_ms}" if self.mode == "periodic" else self.mode


def default_socket_path() -> str:
    # /tmp is writable and shared by the runtime and the extensions inside one environment.
    # (Not tempfile.gettempdir(): importing tempfile costs the handler's cold start.)
    return os.path.join(os.environ.get("TMPDIR") or "/tmp", "lambdawrap.sock")


_FIELDS = (
    ("disabled", False),
    ("log_level", "warning"),
    ("socket_path", None),  # default_socket_path(), read when settings are built
    ("flush", FlushStrategy()),
    ("flush_budget_ms", 1000),
    ("buffer_max_spans", 10000),
    ("capture_payload", False),
    ("redact_keys", ("authorization", "cookie", "set-cookie", "x-api-key", "password", "secret", "token")),
    ("proactive_init_ms", 10000),
    ("metrics_temporality", "delta"),
    ("secrets", ""),
    ("secrets_timeout_ms", 1500),
    ("secrets_ttl_s", 300.0),
    ("secrets_required", False),
    ("secrets_port", 2773),
    ("service_name", ""),
    ("function_name", ""),
    ("function_version", ""),
    ("memory_mb", 0),
    ("region", ""),
)


class Settings(namedtuple("Settings", [name for name, _ in _FIELDS])):
    """lambdawrap's configuration (immutable). Build it with `Settings.from_env()`."""

    __slots__ = ()

    def __new__(cls, **values: Any) -> "Settings":
        fields = dict(_FIELDS)
        fields["socket_path"] = default_socket_path()
        unknown = set(values) - set(fields)
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        fields.update(values)
        return super().__new__(cls, **fields)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, warn: bool = True) -> "Settings":
        """Parse the environment; bad values warn once each (unless `warn` is false: another
        process of the same environment warns for them) and fall back to the default."""
        env = os.environ if environ is None else environ
        d = cls()
        parse = _Parser(env, warn)
        return cls(
            disabled=parse(DISABLED, d.disabled, _bool),
            log_level=parse(LOG_LEVEL, d.log_level, _choice(_LOG_LEVELS)),
            socket_path=parse(SOCKET_PATH, d.socket_path, _nonempty),
            flush=parse(FLUSH, d.flush, _flush),
            flush_budget_ms=parse(FLUSH_BUDGET_MS, d.flush_budget_ms, _int_range(0, 60_000)),
            buffer_max_spans=parse(BUFFER_MAX_SPANS, d.buffer_max_spans, _int_range(1, 1_000_000)),
            capture_payload=parse(CAPTURE_PAYLOAD, d.capture_payload, _bool),
            redact_keys=d.redact_keys + parse(REDACT_KEYS, (), _names),
            proactive_init_ms=parse(PROACTIVE_INIT_MS, d.proactive_init_ms, _int_range(0, 3_600_000)),
            metrics_temporality=parse(METRICS_TEMPORALITY, d.metrics_temporality, _choice(_TEMPORALITIES)),
            secrets=env.get(SECRETS, "").strip(),
            secrets_timeout_ms=parse(SECRETS_TIMEOUT_MS, d.secrets_timeout_ms, _int_range(0, 60_000)),
            secrets_ttl_s=parse(SECRETS_TTL, d.secrets_ttl_s, _float_range(0, float("inf"))),
            secrets_required=parse(SECRETS_REQUIRED, d.secrets_required, _bool),
            secrets_port=parse(SECRETS_PORT, d.secrets_port, _int_range(1, 65535)),
            service_name=env.get("OTEL_SERVICE_NAME", "") or env.get("AWS_LAMBDA_FUNCTION_NAME", ""),
            function_name=env.get("AWS_LAMBDA_FUNCTION_NAME", ""),
            function_version=env.get("AWS_LAMBDA_FUNCTION_VERSION", ""),
            memory_mb=parse("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", 0, _int_range(0, 1_000_000)),
            region=env.get("AWS_REGION", "") or env.get("AWS_DEFAULT_REGION", ""),
        )


class _Parser:
    def __init__(self, env: Mapping[str, str], warn: bool = True) -> None:
        self._env = env
        self._warn = warn

    def __call__(self, name: str, default: Any, convert: Callable[[str], Any]) -> Any:
        raw = self._env.get(name)
        if raw is None or raw.strip() == "" and convert is not _bool:
            return default
        try:
            return convert(raw.strip())
        except ValueError as exc:
            if self._warn:
                _warn("lambdawrap: ignoring %s=%r (%s); using the default %s", name, raw, exc, _show(default))
            return default


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if value != () else "(none)"


def _bool(raw: str) -> bool:
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("expected true or false")


def _nonempty(raw: str) -> str:
    return raw


def _choice(choices: tuple) -> Callable[[str], str]:
    def convert(raw: str) -> str:
        if raw.lower() not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return raw.lower()

    return convert


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def convert(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("expected a whole number") from None
        if not low <= value <= high:
            raise ValueError(f"expected a number from {low} to {high}")
        return value

    return convert


def _float_range(low: float, high: float) -> Callable[[str], float]:
    def convert(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("expected a number") from None
        if not low <= value <= high or value != value:
            raise ValueError(f"expected a number from {low:g}")
        return value

    return convert


def _names(raw: str) -> tuple:
    return tuple(part.strip().lower() for part in raw.split(",") if part.strip())


def _flush(raw: str) -> FlushStrategy:
    mode, _, arg = raw.lower().partition(",")
    mode = mode.strip()
    if mode in ("end", "adaptive") and not arg:
        return FlushStrategy(mode)
    if mode == "periodic":
        interval = _int_range(1, 3_600_000)(arg.strip() or "1000")
        return FlushStrategy("periodic", interval)
    raise ValueError("expected end, periodic,<ms> or adaptive")
