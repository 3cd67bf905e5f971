"""Every setting of lambdawrap, parsed once from the environment into one frozen object.

Both processes (the function's and the companion) build their settings here, so that a
variable means the same thing on both sides; nothing else reads lambdawrap's variables, and
the shell launchers (layer/wrapper.sh, layer/extensions/lambdawrap) accept exactly the
spellings this module accepts (a test holds them together). A bad value never raises: it logs
one warning naming the variable and the default used instead.

Of the standard OTEL_* variables, the ones lambdawrap decides on are parsed here (service name,
resource attributes, protocols, temporality, sampler, OTEL_SDK_DISABLED, the span limits); the connection
settings of the OTLP exporters (endpoint, headers, timeout, compression, certificates) are
read by the OpenTelemetry exporters in the companion, as the SDK defines them.
"""

from __future__ import annotations

import os
import stat  # os imported it already
from collections import namedtuple

from lambdawrap.shared import otlp_variables, span_limits
from lambdawrap.shared.secret_sources import parse_sources
from lambdawrap.shared.semconv import HTTP_METHODS
from lambdawrap.shared.own_stdlib import standard

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing and dataclasses cost the handler's cold start
    from typing import Any, Callable, Mapping

# Environment variable names, with their defaults in `Settings` below.
DISABLED = "LAMBDAWRAP_DISABLED"
NEXT_WRAPPER = "LAMBDAWRAP_NEXT_WRAPPER"
PYTHON = "LAMBDAWRAP_PYTHON"
LOG_LEVEL = "LAMBDAWRAP_LOG_LEVEL"
APPLICATION_LOG_LEVEL = "AWS_LAMBDA_LOG_LEVEL"  # the function's log level (advanced logging controls)
SOCKET_PATH = "LAMBDAWRAP_SOCKET"
FLUSH = "LAMBDAWRAP_FLUSH"
FLUSH_BUDGET_MS = "LAMBDAWRAP_FLUSH_BUDGET_MS"
BUFFER_MAX_SPANS = "LAMBDAWRAP_BUFFER_MAX_SPANS"
CAPTURE_PAYLOAD = "LAMBDAWRAP_CAPTURE_PAYLOAD"
REDACT_KEYS = "LAMBDAWRAP_REDACT_KEYS"
PROACTIVE_INIT_MS = "LAMBDAWRAP_PROACTIVE_INIT_MS"
STARTUP_WAIT_MS = "LAMBDAWRAP_STARTUP_WAIT_MS"
# Below one vCPU's worth of memory an invocation gets a fraction of a core (7 % at 128 MB) while
# init runs at full speed: there the companion finishes loading its exporters in init.
FULL_VCPU_MB = 1769
SMALL_FUNCTION_STARTUP_WAIT_MS = 500
SECRETS = "LAMBDAWRAP_SECRETS"
SECRETS_TIMEOUT_MS = "LAMBDAWRAP_SECRETS_TIMEOUT_MS"
SECRETS_TTL = "LAMBDAWRAP_SECRETS_TTL"
MAX_SECRETS_TTL_S = 365 * 86400.0  # a year: beyond it a deadline overflows the clocks' arithmetic
SECRETS_REQUIRED = "LAMBDAWRAP_SECRETS_REQUIRED"
SECRETS_PORT = "LAMBDAWRAP_SECRETS_PORT"
MAX_SPANS_PER_INVOCATION = "LAMBDAWRAP_MAX_SPANS_PER_INVOCATION"
INSTRUMENT = "LAMBDAWRAP_INSTRUMENT"
INSTRUMENT_EXCLUDE_HOSTS = "LAMBDAWRAP_INSTRUMENT_EXCLUDE_HOSTS"
PROPAGATE_AWS = "LAMBDAWRAP_PROPAGATE_AWS"
PROPAGATORS = "OTEL_PROPAGATORS"
HTTP_KNOWN_METHODS = "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS"
SECRETS_COMPAT_PORT = "LAMBDAWRAP_SECRETS_COMPAT_PORT"
# The AWS Parameters and Secrets extension's own port variable: a function that used that
# extension may read its port from it.
AWS_SECRETS_EXTENSION_PORT = "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"
# How long that extension caches (0-300 s each; 0, its cache turned off or of size 0: not at
# all). A function moved from it with a shorter TTL than lambdawrap's keeps it.
AWS_SECRETS_EXTENSION_TTLS = ("SECRETS_MANAGER_TTL", "SSM_PARAMETER_STORE_TTL")
AWS_SECRETS_EXTENSION_MAX_TTL_S = 300
AWS_SECRETS_EXTENSION_CACHE = "PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED"
AWS_SECRETS_EXTENSION_CACHE_SIZE = "PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE"
AWS_SECRETS_EXTENSION_MAX_CACHE_SIZE = 1000
# lambdawrap refreshes declared secrets in the background, where that extension fetches on
# demand: its "no cache" read as no TTL would call AWS every second from every environment.
MIN_AWS_EXTENSION_TTL_S = 5.0
SECRETS_TOKEN = "LAMBDAWRAP_SECRETS_TOKEN"
SECRETS_ALLOW_UNDECLARED = "LAMBDAWRAP_SECRETS_ALLOW_UNDECLARED"
SDK_DISABLED = "OTEL_SDK_DISABLED"
SERVICE_NAME = "OTEL_SERVICE_NAME"
RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
RESOURCE_DETECTORS = "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS"  # not read: see _resource_attributes
PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
SIGNAL_PROTOCOL = "OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"  # TRACES, METRICS, LOGS
METRICS_TEMPORALITY = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"
SAMPLER = "OTEL_TRACES_SAMPLER"
# The SDK's choice of exporter per signal: lambdawrap exports over OTLP, and honours none for
# metrics and logs; any other value (console, a list; none for traces) is a bad value, not one
# passed over in silence.
SIGNAL_EXPORTER = "OTEL_{signal}_EXPORTER"  # TRACES, METRICS, LOGS
SAMPLER_ARG = "OTEL_TRACES_SAMPLER_ARG"

# The spellings of a boolean; the shell launchers match exactly these (case-insensitively,
# surrounding blanks ignored).
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")
LOG_LEVELS = ("debug", "info", "warning", "error")
TEMPORALITIES = ("delta", "cumulative", "lowmemory")
PROTOCOLS = ("http/protobuf", "grpc")
# The SDK's exporters registered by their protocol's name (its entry points), read as that protocol.
EXPORTER_PROTOCOLS = {"otlp_proto_grpc": "grpc", "otlp_proto_http": "http/protobuf"}
SIGNALS = ("traces", "metrics", "logs")
# The blanks ignored around a value: what the launchers' [:space:] holds in the C locale. Not
# str.strip()'s, which also drops Unicode spaces (U+00A0, U+2003, U+001F...): around "true"
# the launchers would start lambdawrap that this module then calls switched off.
BLANKS = " \t\n\r\v\f"
# LAMBDAWRAP_INSTRUMENT: the libraries whose outgoing calls become client spans; a group name
# stands for its members.
LIBRARIES = ("botocore", "requests", "urllib3", "urllib", "httpx", "aiohttp")
LIBRARY_GROUPS = {"aws-sdk": ("botocore",), "http": ("requests", "urllib3", "urllib", "httpx", "aiohttp")}
# LAMBDAWRAP_PROPAGATE_AWS: the AWS calls whose payload carries the trace context to the consumer.
AWS_CARRIERS = ("sqs", "sns", "eventbridge", "kinesis", "stepfunctions", "lambda")
# OTEL_PROPAGATORS: the formats outgoing HTTP requests carry (the SDK's names; others are ignored).
PROPAGATOR_NAMES = ("tracecontext", "baggage", "xray")
# The X-Ray propagator's form for Lambda (opentelemetry-propagator-aws-xray's, the one AWS's
# Lambda guides name) sends the X-Ray header as xray does; what it reads differently (the
# function's _X_AMZN_TRACE_ID), lambdawrap reads anyway.
PROPAGATOR_GROUPS = {"xray-lambda": ("xray",)}
# Where lambdawrap's own traffic goes besides the configured collector: never a client span.
OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
DEFAULT_OTLP_ENDPOINT = "localhost:4318"
SECRETS_TOKEN_MODES = ("required", "optional")
SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio")


def _warn(message: str, *args: object) -> None:
    # logging is imported on the first warning only: the companion reads its settings before
    # its first /next, on the function's cold-start path.
    import logging

    logging.getLogger("lambdawrap").warning(message, *args)


class FlushStrategy(namedtuple("FlushStrategy", ("mode", "interval_ms"))):
    """When the companion exports: after every invocation (end), every N ms (periodic), or
    adaptively (end while invocations are rare, periodic when they come often)."""

    __slots__ = ()

    def __new__(cls, mode: str = "adaptive", interval_ms: int = 1000) -> "FlushStrategy":
        return super().__new__(cls, mode, interval_ms)

    def __str__(self) -> str:
        return f"periodic,{self.interval_ms}" if self.mode == "periodic" else self.mode


MANAGED_INSTANCES = "lambda-managed-instances"  # AWS_LAMBDA_INITIALIZATION_TYPE there
SOCKET_NAME = "lambdawrap.sock"
# What a Unix socket's path may hold on Linux (sun_path is 108 bytes, its NUL included).
MAX_SOCKET_PATH_BYTES = 107


def default_socket_path(environ: Mapping[str, str] | None = None) -> str:
    # /tmp is writable and shared by the runtime and the extensions inside one environment.
    # TMPDIR only where it names a folder there already, as tempfile takes it: the companion
    # starts before the function's code, and could not listen in a folder that code makes;
    # and only where the socket's path there fits a socket's (sun_path), or neither process
    # could use it. (Not tempfile.gettempdir(): importing tempfile costs the handler's cold start.)
    folder = (os.environ if environ is None else environ).get("TMPDIR") or "/tmp"
    path = os.path.join(folder, SOCKET_NAME)
    if not (os.path.isabs(folder) and len(os.fsencode(path)) <= MAX_SOCKET_PATH_BYTES and os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)):
        path = os.path.join("/tmp", SOCKET_NAME)
    return path


_FIELDS = (
    ("disabled", False),
    ("sdk_disabled", False),
    ("next_wrapper", ""),
    ("python", "python3"),
    ("log_level", "warning"),  # the companion's; the function's process: function_log_level()
    ("socket_path", None),  # default_socket_path(), read when settings are built
    ("flush", FlushStrategy()),
    ("flush_budget_ms", 1000),
    ("startup_wait_ms", 0),  # from_env: SMALL_FUNCTION_STARTUP_WAIT_MS below FULL_VCPU_MB
    ("buffer_max_spans", 10000),
    ("capture_payload", False),
    ("redact_keys", ("authorization", "cookie", "set-cookie", "x-api-key", "password", "secret", "token")),
    ("proactive_init_ms", 10000),
    ("max_spans_per_invocation", 1000),
    ("instrument", ("botocore", "requests", "urllib3", "urllib", "httpx", "aiohttp")),
    ("instrument_exclude_hosts", ()),  # lowercased host or host:port
    ("propagators", ("tracecontext", "baggage")),
    # With xray-lambda named in OTEL_PROPAGATORS: the names that read a parent, in their order
    # (tracecontext, xray, xray-lambda), for the parent the OpenTelemetry SDK's composite
    # propagator would extract; () for lambdawrap's own choice of parent.
    ("xray_lambda_order", ()),
    ("http_known_methods", HTTP_METHODS),
    ("propagate_aws", AWS_CARRIERS),
    ("own_endpoints", ()),  # host:port of the Runtime API, the secrets API, X-Ray, the collector
    ("protocols", (("traces", "http/protobuf"), ("metrics", "http/protobuf"), ("logs", "http/protobuf"))),
    ("exported_signals", SIGNALS),  # OTEL_METRICS_EXPORTER / OTEL_LOGS_EXPORTER=none leave theirs out
    ("metrics_temporality", "delta"),
    ("sampler", "parentbased_always_on"),
    ("sampler_ratio", 1.0),
    ("secrets", ()),  # SecretSource, in declaration order
    ("secrets_refused", ()),  # one message per LAMBDAWRAP_SECRETS entry left out (malformed, a reserved name)
    ("secrets_timeout_ms", 1500),
    ("secrets_ttl_s", 300.0),
    ("secrets_required", False),
    ("secrets_port", 2773),
    ("secrets_compat_port", None),  # a second port for the API (the /secrets/<name> pattern's)
    ("secrets_aws_port", None),  # PARAMETERS_SECRETS_EXTENSION_HTTP_PORT, the AWS extension's port, when set
    ("secrets_token", "required"),  # or "optional": token-less /secrets/ and /?name= requests
    ("secrets_allow_undeclared", False),
    ("service_name", ""),
    ("resource_attributes", ()),  # (key, value) pairs from OTEL_RESOURCE_ATTRIBUTES
    ("function_name", ""),
    ("function_version", ""),
    ("memory_mb", 0),
    ("region", ""),
    ("managed_instances", False),  # Lambda Managed Instances (AWS_LAMBDA_INITIALIZATION_TYPE)
    ("span_limits", span_limits.SpanLimits(*[span_limits.DEFAULT_COUNT] * 5, None, None)),
    # (variable, value or None to unset) the companion makes in its own environment, where the
    # SDK reads them: see shared/otlp_variables.py and shared/span_limits.py
    ("sdk_corrections", ()),
)


class Settings(namedtuple("Settings", [name for name, _ in _FIELDS])):
    """lambdawrap's configuration (immutable). Build it with `Settings.from_env()`."""

    __slots__ = ()

    def __new__(cls, **values: Any) -> "Settings":
        fields = dict(_FIELDS)
        if "socket_path" not in values:
            fields["socket_path"] = default_socket_path()
        unknown = set(values) - set(fields)
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        fields.update(values)
        return super().__new__(cls, **fields)

    def protocol(self, signal: str) -> str:
        """The OTLP protocol of one signal (traces, metrics, logs)."""
        return dict(self.protocols)[signal]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, warn: bool = True) -> "Settings":
        """Parse the environment; bad values warn once each (unless `warn` is false: another
        process of the same environment warns for them) and fall back to the default."""
        env = os.environ if environ is None else environ
        d = cls(socket_path=default_socket_path(env))
        parse = _Parser(env, warn)
        protocol = parse(PROTOCOL, "http/protobuf", _choice(PROTOCOLS, lower=False))
        function_name = env.get("AWS_LAMBDA_FUNCTION_NAME", "")
        resource_attributes, resource_corrections = _resource_attributes(env, parse.warn)
        secrets_port = parse(SECRETS_PORT, d.secrets_port, _int_range(1, 65535))
        memory_mb = parse("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", 0, _int_range(0, 1_000_000))
        startup_wait_default = SMALL_FUNCTION_STARTUP_WAIT_MS if 0 < memory_mb < FULL_VCPU_MB else 0
        secrets_compat_port = parse(SECRETS_COMPAT_PORT, d.secrets_compat_port, _int_range(1, 65535))
        secrets_aws_port = parse(AWS_SECRETS_EXTENSION_PORT, d.secrets_aws_port, _int_range(1, 65535))
        exporters = {signal: parse(SIGNAL_EXPORTER.format(signal=signal.upper()), "otlp", _exporter_choice(signal)) for signal in SIGNALS}
        # The SDK's exporter named by its protocol is that protocol's, whatever the variables say.
        protocols = tuple((signal, EXPORTER_PROTOCOLS.get(exporters[signal]) or parse(SIGNAL_PROTOCOL.format(signal=signal.upper()), protocol, _choice(PROTOCOLS, lower=False))) for signal in SIGNALS)
        otlp_corrections = otlp_variables.corrections(env, protocols, parse.warn)
        limits, limit_corrections = span_limits.read(env, parse.warn)
        exported_signals = tuple(signal for signal in SIGNALS if exporters[signal] != "none")
        sampler = parse(SAMPLER, d.sampler, _choice(SAMPLERS))
        # The argument is the ratio samplers' alone, as the SDK reads it: beside another sampler
        # (an unknown one too: xray, jaeger_remote, whose argument is no number) it is not read.
        sampler_ratio = parse(SAMPLER_ARG, d.sampler_ratio, _float_range(0.0, 1.0)) if sampler.endswith("traceidratio") else d.sampler_ratio
        secrets, secrets_refused = _secrets(env.get(SECRETS, ""), parse.warn)
        settings = cls(
            disabled=parse(DISABLED, d.disabled, _bool),
            sdk_disabled=parse(SDK_DISABLED, d.sdk_disabled, _otel_bool),
            next_wrapper=env.get(NEXT_WRAPPER, "").strip(BLANKS),
            python=parse(PYTHON, d.python, _nonempty),
            log_level=parse(LOG_LEVEL, d.log_level, _choice(LOG_LEVELS)),
            socket_path=parse(SOCKET_PATH, d.socket_path, _socket_path),
            flush=parse(FLUSH, d.flush, _flush),
            flush_budget_ms=parse(FLUSH_BUDGET_MS, d.flush_budget_ms, _int_range(0, 60_000)),
            startup_wait_ms=parse(STARTUP_WAIT_MS, startup_wait_default, _int_range(0, 60_000)),
            buffer_max_spans=parse(BUFFER_MAX_SPANS, d.buffer_max_spans, _int_range(1, 1_000_000)),
            capture_payload=parse(CAPTURE_PAYLOAD, d.capture_payload, _bool),
            redact_keys=d.redact_keys + parse(REDACT_KEYS, (), _names),
            proactive_init_ms=parse(PROACTIVE_INIT_MS, d.proactive_init_ms, _int_range(0, 3_600_000)),
            max_spans_per_invocation=parse(MAX_SPANS_PER_INVOCATION, d.max_spans_per_invocation, _int_range(0, 100_000)),
            instrument=parse(INSTRUMENT, d.instrument, _names_of(LIBRARIES, LIBRARY_GROUPS)),
            instrument_exclude_hosts=parse(INSTRUMENT_EXCLUDE_HOSTS, (), _hosts),
            propagators=parse(PROPAGATORS, d.propagators, _propagators),
            xray_lambda_order=_xray_lambda_order(env.get(PROPAGATORS, "")),
            http_known_methods=parse(HTTP_KNOWN_METHODS, d.http_known_methods, _http_methods),
            propagate_aws=parse(PROPAGATE_AWS, d.propagate_aws, _names_of(AWS_CARRIERS, {})),
            own_endpoints=_own_endpoints(env, (secrets_port, secrets_compat_port, secrets_aws_port), {name for name, value in otlp_corrections if value is None}),
            protocols=protocols,
            exported_signals=exported_signals,
            span_limits=limits,
            sdk_corrections=otlp_corrections + limit_corrections + resource_corrections + _sdk_disabled_correction(env),
            metrics_temporality=parse(METRICS_TEMPORALITY, d.metrics_temporality, _choice(TEMPORALITIES)),
            sampler=sampler,
            sampler_ratio=sampler_ratio,
            secrets=secrets,
            secrets_refused=secrets_refused,
            secrets_timeout_ms=parse(SECRETS_TIMEOUT_MS, d.secrets_timeout_ms, _int_range(0, 60_000)),
            secrets_ttl_s=_secrets_ttl(env, parse, d.secrets_ttl_s),
            secrets_required=parse(SECRETS_REQUIRED, d.secrets_required, _bool),
            secrets_port=secrets_port,
            secrets_compat_port=secrets_compat_port,
            secrets_aws_port=secrets_aws_port,
            secrets_token=parse(SECRETS_TOKEN, d.secrets_token, _choice(SECRETS_TOKEN_MODES)),
            secrets_allow_undeclared=parse(SECRETS_ALLOW_UNDECLARED, d.secrets_allow_undeclared, _bool),
            # OTEL_SERVICE_NAME wins over a service.name in OTEL_RESOURCE_ATTRIBUTES (as in the
            # SDK); the function's name is lambdawrap's default.
            service_name=env.get(SERVICE_NAME, "").strip() or dict(resource_attributes).get("service.name", "") or function_name,
            resource_attributes=resource_attributes,
            function_name=function_name,
            function_version=env.get("AWS_LAMBDA_FUNCTION_VERSION", ""),
            memory_mb=memory_mb,
            region=env.get("AWS_REGION", "") or env.get("AWS_DEFAULT_REGION", ""),
            managed_instances=env.get("AWS_LAMBDA_INITIALIZATION_TYPE") == MANAGED_INSTANCES,
        )
        _warn_of_unknown_names(env, parse)
        return settings


def _secrets_ttl(env: Mapping[str, str], parse: "_Parser", default: float) -> float:
    """LAMBDAWRAP_SECRETS_TTL; without it (or for a bad value), what a configuration made for AWS's
    Parameters and Secrets extension asks: the smaller of its TTLs that are set, 0 where its cache
    is off, but at least MIN_AWS_EXTENSION_TTL_S. One TTL for every secret."""
    asked = [parse(name, AWS_SECRETS_EXTENSION_MAX_TTL_S, _int_range(0, AWS_SECRETS_EXTENSION_MAX_TTL_S)) for name in AWS_SECRETS_EXTENSION_TTLS if _given(env, name)]
    if _given(env, AWS_SECRETS_EXTENSION_CACHE) and not parse(AWS_SECRETS_EXTENSION_CACHE, True, _bool):
        asked.append(0)
    if _given(env, AWS_SECRETS_EXTENSION_CACHE_SIZE) and not parse(AWS_SECRETS_EXTENSION_CACHE_SIZE, AWS_SECRETS_EXTENSION_MAX_CACHE_SIZE, _int_range(0, AWS_SECRETS_EXTENSION_MAX_CACHE_SIZE)):
        asked.append(0)
    if asked:
        default = max(MIN_AWS_EXTENSION_TTL_S, float(min(asked)))
    return parse(SECRETS_TTL, default, _float_range(0, MAX_SECRETS_TTL_S))


def _given(env: Mapping[str, str], name: str) -> bool:
    """Whether `name` is set to more than blanks (a blank value is an unset one)."""
    return env.get(name, "").strip(BLANKS) != ""


class _Parser:
    def __init__(self, env: Mapping[str, str], warn: bool = True) -> None:
        self._env = env
        self._warn = warn

    def warn(self, message: str, *args: object) -> None:
        if self._warn:
            _warn(message, *args)

    def __call__(self, name: str, default: Any, convert: Callable[[str], Any]) -> Any:
        raw = self._env.get(name)
        if raw is None or raw.strip(BLANKS) == "" and convert is not _bool:
            return default
        try:
            return convert(raw.strip(BLANKS))
        except _PartlyValid as partly:
            if not partly.known:  # none known: a bad value, not a choice of nothing (that is `none`)
                self.warn("lambdawrap: ignoring %s=%r (%s); using the default %s", name, raw, partly.expected, _show(default))
                return default
            # Some names were known: those are kept, the rest named once.
            self.warn("lambdawrap: ignoring %s=%r entries %s (%s)", name, raw, ", ".join(partly.unknown), partly.expected)
            return partly.known
        except ValueError as exc:
            self.warn("lambdawrap: ignoring %s=%r (%s); using the default %s", name, raw, exc, _show(default))
            return default


# What lambdawrap's launchers and local tools set for its own processes: no settings of the user's.
_INTERNAL_NAMES = (
    "LAMBDAWRAP_BOOT_DIR",
    "LAMBDAWRAP_ADDED_PATHS",
    "LAMBDAWRAP_PYTHONPATH_UNSET",
    "LAMBDAWRAP_RUNTIME_SCRIPT",
    "LAMBDAWRAP_CHAINED_INTERPRETER",
    "LAMBDAWRAP_CHAINED_WRAPPER",
    "LAMBDAWRAP_EXTENSION_ID",
    "LAMBDAWRAP_REGISTER_BODY",
    "LAMBDAWRAP_INIT_ERROR",
    "LAMBDAWRAP_EXTENSIONS_DIR",
    "LAMBDAWRAP_PYTHONS_DIR",
)


def _warn_of_unknown_names(env: Mapping[str, str], parse: "_Parser") -> None:
    """One warning for each LAMBDAWRAP_ variable that names no setting: a misspelt one
    (LAMBDAWRAP_SECRETS_REQUIRE) would otherwise leave its setting at the default in silence,
    a required secret optional."""
    unknown = [name for name in env if name.startswith("LAMBDAWRAP_") and name not in _KNOWN_NAMES]
    if not unknown:
        return
    # Only for a name that needs it, and the standard one: at boot an import would leave it in
    # sys.modules, where the function's `import difflib` would later find it for its own file.
    get_close_matches = standard("difflib").get_close_matches

    prefix = len("LAMBDAWRAP_")
    settings = sorted(name[prefix:] for name in _SETTING_NAMES)
    for name in sorted(unknown):
        close = get_close_matches(name[prefix:], settings, n=1)
        parse.warn("lambdawrap: ignoring %s (no such setting%s)", name, f"; did you mean LAMBDAWRAP_{close[0]}?" if close else "")


def function_log_level(env: Mapping[str, str]) -> str:
    """lambdawrap's own level in the function's process, where its lines are application logs:
    LAMBDAWRAP_LOG_LEVEL where it names a level, else the stricter of warning and the function's
    own level (AWS_LAMBDA_LOG_LEVEL, as the runtime reads it: upper-cased; ERROR, FATAL and
    CRITICAL keep lambdawrap's warnings out). Read without a warning: the boot sets it before
    the settings are parsed, so that their warnings keep to it too."""
    own = env.get(LOG_LEVEL, "").strip(BLANKS).lower()
    if own in LOG_LEVELS:
        return own
    return "error" if env.get(APPLICATION_LOG_LEVEL, "").upper() in ("ERROR", "FATAL", "CRITICAL") else "warning"


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, frozenset):
        return ",".join(sorted(value))
    if isinstance(value, FlushStrategy):
        return str(value)  # its own spelling ("adaptive"), not its fields
    if isinstance(value, tuple) and value:
        return ",".join(map(str, value))
    return "(none)" if value is None or value == () else str(value)


def _bool(raw: str) -> bool:
    low = raw.strip(BLANKS).lower()
    if low in TRUE_WORDS:
        return True
    if low in FALSE_WORDS:
        return False
    raise ValueError("expected true or false")


def _sdk_disabled_correction(env: Mapping[str, str]) -> tuple:
    """OTEL_SDK_DISABLED unset in the companion's environment where it is a bad value: read as
    false here, where the SDK's MeterProvider strips any blank (Unicode's too: "true\u00a0") and
    would turn itself off, and export no metrics."""
    raw = env.get(SDK_DISABLED)
    if raw is None or raw.strip(BLANKS) == "":
        return ()
    try:
        _otel_bool(raw)
    except ValueError:
        return ((SDK_DISABLED, None),)
    return ()


def _otel_bool(raw: str) -> bool:
    # The OpenTelemetry specification's booleans (OTEL_SDK_DISABLED): "true" in any case is true,
    # any other value false ("1" and "yes" too, with a warning), as every SDK reads them.
    low = raw.strip(BLANKS).lower()
    if low in ("true", "false"):
        return low == "true"
    raise ValueError("expected true or false (OpenTelemetry reads any other value as false)")


_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _http_methods(raw: str) -> frozenset:
    # Case-sensitive method names (RFC 9110 tokens), comma-separated: the whole list of known
    # methods, not additions to the default one.
    methods = frozenset(name.strip() for name in raw.split(",") if name.strip())
    if not methods or not all(set(name) <= _TOKEN_CHARS for name in methods):
        raise ValueError("expected HTTP method names, comma-separated")
    return methods


def _exporter_choice(signal: str) -> Callable[[str], str]:
    """OTEL_{signal}_EXPORTER as lambdawrap reads it: otlp (or the SDK's names of its OTLP
    exporters by protocol, otlp_proto_grpc and otlp_proto_http), or for metrics and logs none
    (that signal is not exported, as the SDK's none has it). Traces are the layer itself: no
    other value, LAMBDAWRAP_DISABLED switches it off."""
    choices = ("otlp", *EXPORTER_PROTOCOLS) if signal == "traces" else ("otlp", *EXPORTER_PROTOCOLS, "none")

    def convert(raw: str) -> str:
        value = raw.lower()
        if value not in choices:
            off = f"; {DISABLED}=true switches the layer off" if signal == "traces" else ""
            raise ValueError(f"expected {' or '.join(choices)}: lambdawrap exports over OTLP, by OTEL_EXPORTER_OTLP_[signal_]PROTOCOL{off}")
        return value

    return convert


def _nonempty(raw: str) -> str:
    return raw



def _socket_path(raw: str) -> str:
    # The companion listens there and the function connects there: a path neither can use
    # (a folder missing or read-only, as all but /tmp are on Lambda; too long for a socket;
    # relative, so each process's working folder would place it) would leave the companion
    # unable to start and every record of the function dropped.
    if not os.path.isabs(raw):
        raise ValueError("expected an absolute path")
    if len(os.fsencode(raw)) > MAX_SOCKET_PATH_BYTES:
        raise ValueError(f"expected a path of at most {MAX_SOCKET_PATH_BYTES} bytes")
    folder = os.path.dirname(raw)
    if not (os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)):
        raise ValueError("expected a path in an existing folder this process can write to")
    # The companion replaces what is there (a socket a killed environment left): a folder it
    # cannot, and it would not start; a file of the function's it would delete.
    try:
        mode = os.lstat(raw).st_mode
    except OSError:
        return raw  # nothing there yet
    if not stat.S_ISSOCK(mode):
        raise ValueError("expected a path where there is nothing yet, or a socket: it names a folder or a file")
    return raw


def _choice(choices: tuple, lower: bool = True) -> Callable[[str], str]:
    def convert(raw: str) -> str:
        value = raw.lower() if lower else raw
        if value not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return value

    return convert


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def convert(raw: str) -> int:
        return int(_number(raw, low, high, int, "a whole number"))

    return convert


def _float_range(low: float, high: float) -> Callable[[str], float]:
    def convert(raw: str) -> float:
        return float(_number(raw, low, high, float, "a number"))

    return convert


def _number(raw: str, low: float, high: float, kind: type, what: str) -> float:
    # Written in ASCII, without `_`: int() and float() read "２７７４", "٣" and "1_000" too, which a
    # port or a size is never written as (the endpoints' check refuses such a port, as URLs do).
    if not raw.isascii() or "_" in raw:
        raise ValueError(f"expected {what}")
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"expected {what}") from None
    if not low <= value <= high:  # NaN fails this too
        upper = "" if high == float("inf") else f" to {_plain(high)}"
        raise ValueError(f"expected {what} from {_plain(low)}{upper}")
    return value


def _plain(number: float) -> str:
    # A bound as the README writes it: 1000000, not the 1e+06 of "%g".
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _names(raw: str) -> tuple:
    return tuple(part.strip(BLANKS).lower() for part in raw.split(",") if part.strip(BLANKS))


def _hosts(raw: str) -> tuple:
    """`host` and `host:port` entries (LAMBDAWRAP_INSTRUMENT_EXCLUDE_HOSTS). One written
    otherwise (a URL, a wildcard, a path) would match no call's host, and exclude nothing: it
    is named, the others kept."""
    names = _names(raw)
    unknown = [name for name in names if not _host_entry(name)]
    if unknown:
        raise _PartlyValid(tuple(name for name in names if name not in unknown), unknown, "expected host or host:port entries")
    return names


_IPV6_CHARACTERS = frozenset("0123456789abcdef:.")


def _host_entry(entry: str) -> bool:
    def port_ok(port: str) -> bool:
        # One no call can be to (65536, 0), or written as no call's is (080), never matches:
        # written otherwise, it is named.
        return port.isascii() and port.isdigit() and len(port) <= 5 and port[0] != "0" and int(port) < 65536

    if entry.startswith("["):  # [IPv6]:port
        address, bracket, rest = entry[1:].partition("]")
        return bool(bracket and address) and set(address) <= _IPV6_CHARACTERS and (not rest or rest[0] == ":" and port_ok(rest[1:]))
    if entry.count(":") > 1:  # an IPv6 address, without a port
        return set(entry) <= _IPV6_CHARACTERS
    host, colon, port = entry.partition(":")
    return bool(host) and all(c.isalnum() or c in ".-_" for c in host) and (not colon or port_ok(port))


class _PartlyValid(ValueError):
    """A list setting with some unknown names: the known ones are used."""

    def __init__(self, known: tuple, unknown: list, expected: str) -> None:
        super().__init__(expected)
        self.known = known
        self.unknown = unknown
        self.expected = expected


def _names_of(choices: tuple, groups: dict) -> Callable[[str], tuple]:
    """A comma list of names out of `choices` (a group stands for its members); `none` alone is
    the empty list. Unknown names are reported, the known ones kept, in `choices` order."""

    def convert(raw: str) -> tuple:
        names = _names(raw)
        if names and set(names) == {"none"}:  # written twice, it still chooses nothing
            return ()
        expected = "expected none alone, or names out of " + ", ".join(tuple(groups) + choices)
        if not names:  # commas only: no choice of nothing (that is `none`), a bad value
            raise ValueError(expected)
        chosen, unknown = set(), []
        for name in names:
            if name in groups:
                chosen.update(groups[name])
            elif name in choices:
                chosen.add(name)
            else:
                unknown.append(name)
        known = tuple(c for c in choices if c in chosen)
        if unknown:
            # `none` among names is no name (as its own it is the empty list): said so, as it reads
            # as one of the choices.
            raise _PartlyValid(known, unknown, expected)
        return known

    return convert


def _propagators(raw: str) -> tuple:
    # As the OpenTelemetry API reads OTEL_PROPAGATORS (and so does the function's own code that
    # uses it): "none" anywhere in the list, in any case, is no propagator at all.
    if "none" in _names(raw):
        return ()
    return _names_of(PROPAGATOR_NAMES, PROPAGATOR_GROUPS)(raw)


def _xray_lambda_order(raw: str) -> tuple:
    names = _names(raw)
    if "xray-lambda" not in names or "none" in names:
        return ()
    return tuple(name for name in names if name in ("tracecontext", "xray", "xray-lambda"))


def host_port(address: str, default_port: int) -> str:
    """`host:port` of an address given as a URL, host:port or host; loopback names as one."""
    address = address.strip()
    if "://" in address:
        # A URL without a port is on its scheme's: `default_port` is for host[:port] forms.
        scheme, _, address = address.partition("://")
        default_port = {"https": 443, "http": 80}.get(scheme.lower(), default_port)
    address = address.split("/", 1)[0].rpartition("@")[2]
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or host.endswith(":") and not host.startswith("["):
        host, port = address, str(default_port)
    return f"{loopback_as_one(host.strip('[]').lower())}:{port}"


def loopback_as_one(host: str) -> str:
    """The one name lambdawrap compares loopback hosts by."""
    return "127.0.0.1" if host in ("localhost", "127.0.0.1", "::1", "0.0.0.0") else host


def _own_endpoints(env: Mapping[str, str], secrets_ports: tuple, ignored: set) -> tuple:
    """Where lambdawrap's own HTTP traffic goes (never a client span): the Runtime, Extensions
    and Telemetry APIs, the secrets API (on each of its ports), the X-Ray daemon and the collector."""
    found = [f"127.0.0.1:{port}" for port in dict.fromkeys(secrets_ports) if port is not None]
    runtime_api = env.get("AWS_LAMBDA_RUNTIME_API", "").strip()
    if runtime_api:
        found.append(host_port(runtime_api, 80))
    xray = env.get("AWS_XRAY_DAEMON_ADDRESS", "").strip()
    for address in xray.split() if xray else ():  # "host:port" or "tcp:host:port udp:host:port"
        found.append(host_port(address.partition(":")[2] if address[:4] in ("tcp:", "udp:") else address, 2000))
    endpoints = [env.get(name, "").strip() for name in OTLP_ENDPOINTS if name not in ignored]
    for endpoint in [e for e in endpoints if e] or [DEFAULT_OTLP_ENDPOINT]:
        found.append(host_port(endpoint, 4318))
    return tuple(dict.fromkeys(found))


def _flush(raw: str) -> FlushStrategy:
    mode, _, arg = raw.lower().partition(",")
    mode = mode.strip()
    if mode in ("end", "adaptive") and not arg:
        return FlushStrategy(mode)
    if mode == "periodic":
        interval = _int_range(1, 3_600_000)(arg.strip() or "1000")
        return FlushStrategy("periodic", interval)
    raise ValueError("expected end, periodic,<ms> or adaptive")


def _secrets(spec: str, warn: Callable[..., None]) -> tuple:
    """(sources, refused): the declared secrets, and one message per entry left out that the
    function will not get (not one repeating an earlier one word for word)."""
    refused: list = []
    sources, problems = parse_sources(spec.strip(), refused)
    if problems:  # one warning for the variable, however many entries are wrong
        warn("lambdawrap: %s", "; ".join(problems))
    return tuple(sources), tuple(refused)


def _resource_attributes(env: Mapping[str, str], warn: Callable[..., None]) -> tuple:
    """(pairs, corrections): OTEL_RESOURCE_ATTRIBUTES as the SDK's OTELResourceDetector reads
    it: `k=v` pairs split on commas, blanks around keys and values dropped, values
    percent-decoded; a later key wins. An item without "=" or without a key is left out.

    The SDK runs its detectors as its logs module is imported in the companion (the default
    resource of a log record, which lambdawrap never uses): they would warn about each such item
    a second time, in words of their own, and OTEL_EXPERIMENTAL_RESOURCE_DETECTORS would load
    detectors lambdawrap does not read (its resource is its own). The corrections leave both
    out of the companion's environment."""
    raw = env.get(RESOURCE_ATTRIBUTES, "")
    pairs: dict = {}
    bad, good = [], []
    for item in raw.split(",") if raw else ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            bad.append(repr(item))
            continue
        good.append(item)
        value = value.strip()
        if "%" in value:
            value = standard("urllib.parse").unquote(value)  # deferred: only escaped values need it
        pairs[key.strip()] = value
    corrections = []
    if bad:  # one warning for the variable, however many items are wrong
        warn("lambdawrap: ignoring %s items %s (expected key=value); the others are used", RESOURCE_ATTRIBUTES, ", ".join(bad))
        corrections.append((RESOURCE_ATTRIBUTES, ",".join(good) or None))
    if env.get(RESOURCE_DETECTORS, "").strip():
        corrections.append((RESOURCE_DETECTORS, None))
    return tuple(pairs.items()), tuple(corrections)


# Every variable named above that the user sets (read at the end: the names are all defined).
_SETTING_NAMES = frozenset(value for value in list(globals().values()) if isinstance(value, str) and value.startswith("LAMBDAWRAP_"))
_KNOWN_NAMES = _SETTING_NAMES | frozenset(_INTERNAL_NAMES)
