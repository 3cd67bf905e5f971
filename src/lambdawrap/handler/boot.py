"""Handler-side boot: runs from sitecustomize before the runtime imports the handler module.

It reads the settings once, registers a post-import hook on the runtime's bootstrap that wraps
the handler its lookup hands the runtime, bridges the user's OpenTelemetry API usage if their code imports it, registers the
hooks that trace the function's outgoing calls (AWS SDK, HTTP clients) once it imports them, and then
chains to any sitecustomize that ours shadows. It imports nothing heavy and never raises into
the runtime (unless a test asks it to).
"""

from __future__ import annotations

import logging
import os
import sys
import time
TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Any, Callable, Mapping

from lambdawrap.handler.bare_start import in_the_runtime, start_as_without_the_layer
from lambdawrap.shared.settings import Settings, function_log_level
from lambdawrap.shared import semconv

logger = logging.getLogger("lambdawrap")
# How long a Managed Instances worker whose init failed waits for the companion to listen: its
# Python starts after the runtime's, about 0.1 s on the instances' full cores.
WORKER_FAILURE_WAIT_S = 5.0

_state: dict = {}  # what boot set up, for tests and for the secrets accessor


def handler_target(handler: str) -> tuple[str, str] | None:
    """(module, attribute) of a `_HANDLER` value in `pkg.mod.fn` or `dir/mod.fn` form, read as
    the runtime reads it: whatever importlib can import, `my-function.handler` too; None for a
    value it cannot (it reports that itself)."""
    module, sep, attribute = handler.strip().rpartition(".")
    module = module.replace("/", ".")
    if not sep or not attribute or "\x00" in handler or not all(module.split(".")):
        return None
    return module, attribute


def initialize(environ: Mapping[str, str] | None = None, swallow_exceptions: bool = True) -> Any:
    """Set up instrumentation for this process; returns the InvocationTracer, or None."""
    try:
        return _initialize(os.environ if environ is None else environ)
    except Exception:  # noqa: BLE001 - the function must run, instrumented or not
        if not swallow_exceptions:
            raise
        logger.warning("lambdawrap: boot failed; the function runs uninstrumented", exc_info=True)
        return None


def _initialize(environ: Mapping[str, str]) -> Any:
    booted_at = time.time()  # wall clock: see InvocationTracer.booted_at
    # Both processes parse the same variables; when our companion runs, it is the one that
    # warns about a bad value, so that each is reported once per environment.
    logger.setLevel(function_log_level(environ).upper())
    settings = Settings.from_env(environ, warn=not _companion_expected(environ))
    if settings.disabled:
        return None
    target = handler_target(environ.get("_HANDLER", ""))
    if target is None:
        # The runtime reports a malformed handler itself; nothing for us to wrap.
        return None
    from lambdawrap.handler import import_hooks
    from lambdawrap.handler.channel import Channel

    channel = Channel(settings.socket_path)
    module_name = target[0]
    # However far the boot goes from here (OTEL_SDK_DISABLED ends it below), `import
    # sitecustomize` finds what it finds without the layer: from the runtime's import on, so
    # that the handler's module (and its packages) importing it find nothing either, and from
    # the handler module's, for a runtime of another name.
    for name in ("awslambdaric.bootstrap", module_name):
        import_hooks.when_imported(name, _forget_our_sitecustomize, _forgetting_failed)
    if settings.secrets or settings.secrets_refused:
        _load_secrets(settings, channel, module_name, environ)
    if settings.sdk_disabled:
        return None  # OTEL_SDK_DISABLED: no telemetry at all; the function runs untouched
    from lambdawrap.handler import private_wrapt
    from lambdawrap.handler.invocation import FAILURES, STRIPS_BY_RERAISE, InvocationTracer

    try:
        function_wrapper = private_wrapt.load(environ.get("LAMBDAWRAP_BOOT_DIR", "")).FunctionWrapper
    except ImportError as exc:
        logger.warning("lambdawrap: not instrumenting: %s", exc)
        return None
    tracer = InvocationTracer(settings, channel, booted_at=booted_at, environ=environ, function_wrapper=function_wrapper)

    def hook_failed(module: str) -> None:
        FAILURES.record(f"a post-import hook on {module}")

    def handler_loaded(module: Any) -> None:
        tracer.handler_loaded()

    def loaded_and_wrapped(handler: Any) -> Any:
        # The runtime has its handler only now: a package whose __init__ imports the handler's
        # module before its own heavy work, a module __getattr__ that makes the handler, a
        # module that puts another object in sys.modules all load after the module's import.
        tracer.handler_loaded()
        return tracer.wrap(handler)

    def bridge_opentelemetry(module: Any) -> None:
        from lambdawrap.handler.otel_bridge import UserSpans

        tracer.bridge_loaded(UserSpans(channel, tracer.sampled, function_wrapper, settings.span_limits))

    def report_posts(module: Any) -> None:
        from lambdawrap.handler import response_posted

        response_posted.install(module, function_wrapper, tracer.after_post)

    import_hooks.when_imported(module_name, handler_loaded, hook_failed)
    # What the runtime's lookup hands it is wrapped, not the module's name: that stays the
    # function's own, as its code may use it (a class named in super(Handler, self), a handler
    # that calls itself, which would go through the wrapper at each call).
    failed = None
    if settings.managed_instances:
        # Waited for only where a companion of this layer runs: it starts after the runtime,
        # and a worker failing at once may fail before it listens.
        wait_s = WORKER_FAILURE_WAIT_S if _companion_expected(environ) else 0.0

        def failed(started_ns: int, error: dict) -> None:
            tracer.init_failed(started_ns, error, wait_s)

    import_hooks.when_imported("awslambdaric.bootstrap", lambda runtime: _wrap_looked_up_handler(runtime, loaded_and_wrapped, failed), hook_failed)
    import_hooks.when_imported("opentelemetry.trace", bridge_opentelemetry, hook_failed)
    import_hooks.when_imported("awslambdaric.lambda_runtime_client", report_posts, hook_failed)
    if not STRIPS_BY_RERAISE:  # 3.10: the wrapper's frames stay in tracebacks
        from lambdawrap.handler import runtime_reports

        import_hooks.when_imported("awslambdaric.bootstrap", runtime_reports.install, hook_failed)
    semconv.use_known_http_methods(settings.http_known_methods)
    if settings.instrument:
        from lambdawrap.handler import outgoing

        outgoing.install(settings, tracer.sampled, tracer.inflight, channel, function_wrapper, import_hooks.when_imported, hook_failed)
    _state.update(settings=settings, channel=channel, tracer=tracer)
    return tracer


def _wrap_looked_up_handler(runtime: Any, wrap: Callable[[Any], Any], failed: Callable[[int, dict], None] | None = None) -> None:
    """Have awslambdaric's handler lookup hand the runtime the handler wrapped (a runtime
    without that function leaves the handler uninstrumented, never changed), and tell
    `failed`, of a lookup that raised, when it began and the error as the runtime reports it."""
    lookup = getattr(runtime, "_get_handler", None)
    if not callable(lookup) or getattr(lookup, "_lambdawrap_wrapping", False):
        return
    told = None
    if failed is not None:

        def told(started_ns: int, error: BaseException) -> None:
            failed(started_ns, _as_reported_by(runtime, error))

    # callable() reads the type alone: no code of the handler's runs (a __getattr__ of its own).
    wrapping = _wrapping(lookup, lambda handler_name, found: callable(found), wrap, told)
    wrapping._lambdawrap_wrapping = True  # type: ignore[attr-defined]
    runtime._get_handler = wrapping


def _as_reported_by(runtime: Any, error: BaseException) -> dict:
    """An init's error as awslambdaric reports it, made by its own functions (what its `run`
    posts and logs: its own failures by the errorType and message it gives them, any other
    exception by its class's bare name, its frames but the runtime's); described as a handler's
    error is where the runtime has not those functions, or reports none (a SystemExit)."""
    from lambdawrap.handler.invocation import describe_exception, told_error
    from lambdawrap.shared.runtime_report import described

    try:
        fault = getattr(runtime, "FaultException", None)
        if isinstance(fault, type) and isinstance(error, fault):
            report = runtime.make_error(error.msg, error.exception_type, error.trace)
        elif isinstance(error, Exception):
            report = runtime.build_fault_result((type(error), error, error.__traceback__), None)
        else:
            report = None
        if isinstance(report, dict) and isinstance(report.get("errorType"), str) and report["errorType"] and isinstance(report.get("errorMessage"), str):
            return told_error(described(report["errorType"], report["errorMessage"], report.get("stackTrace")))
    except Exception:  # noqa: BLE001 - another runtime's functions: described as a handler's error
        pass
    return describe_exception(error)


def _wrapping(lookup: Callable, wanted: Callable[[Any, Any], bool], wrap: Callable, failed: Callable[[int, BaseException], None] | None = None) -> Callable:
    """`lookup`, with what it finds wrapped where `wanted(asked, found)` (a failed wrap leaves it
    as it is); what it raises passes through with the traceback it has without the layer: an
    init error's stack trace leaves out the runtime's leading frames, which one of ours among
    them would end."""
    import functools  # logging's import brought it

    from lambdawrap.handler.invocation import FAILURES, drop_own_frame, labelled_as_bootstrap

    @functools.wraps(lookup)
    def looked_up(asked: Any) -> Any:
        started_ns = time.time_ns()
        try:
            found = lookup(asked)
        except BaseException as exc:
            drop_own_frame(exc)
            if failed is not None:
                try:
                    failed(started_ns, exc)
                except Exception:  # noqa: BLE001 - instrumentation fails open
                    FAILURES.record("telling of a failed init")
            raise
        if wanted(asked, found):
            try:
                return wrap(found)
            except Exception:  # noqa: BLE001 - instrumentation fails open
                FAILURES.record("wrapping the handler")
        return found

    return labelled_as_bootstrap(looked_up)


class _RefuseImport:
    """A meta-path finder that fails the handler module's import with a SecretsError, which the
    runtime reports as an init error (fail-closed secrets)."""

    def __init__(self, module: str, message: str) -> None:
        self.module = module
        self.message = message

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        # Its packages too: their __init__ runs first, and would connect with the placeholder.
        if name == self.module or self.module.startswith(name + "."):
            from lambdawrap.shared.secret_sources import SecretsError

            raise SecretsError(self.message)
        return None


def _companion_expected(environ: Mapping[str, str]) -> bool:
    """True when our layer's companion runs in this environment (every file in
    <layer>/extensions is launched by the platform), and, in a built layer, its package is
    there for the launcher to start (it says so and idles otherwise)."""
    boot_dir = environ.get("LAMBDAWRAP_BOOT_DIR", "")
    if not boot_dir:
        return False
    layer = os.path.dirname(os.path.dirname(boot_dir.rstrip("/")))
    if not os.path.isfile(os.path.join(layer, "extensions", "lambdawrap")):
        return False
    # As the launcher tells a built layer (python/lambdawrap), and finds its companion there.
    built = os.path.isdir(os.path.join(layer, "python", "lambdawrap"))
    return not built or os.path.isfile(os.path.join(layer, "lambdawrap", "companion-lib", "lambdawrap", "companion", "__main__.py"))


def _load_secrets(settings: Settings, channel: Any, module_name: str, environ: Mapping[str, str]) -> None:
    try:
        from lambdawrap.handler import secret_cache

        failures = secret_cache.load_declared(settings, channel, _companion_expected(environ))
    except Exception as exc:  # noqa: BLE001 - the policy below decides what a failure means
        failures = [f"secrets could not be loaded ({type(exc).__name__})"]
    if settings.secrets_required:
        # An entry left out (malformed, a reserved name) is a secret the function asked for and
        # will not get, as a missing one; without the setting, the settings' warning named it.
        failures = list(settings.secrets_refused) + failures
    if not failures:
        return
    if settings.secrets_required:
        message = "LAMBDAWRAP_SECRETS_REQUIRED is true and " + "; ".join(failures)
        sys.meta_path.insert(0, _RefuseImport(module_name, message))
        logger.error("lambdawrap: %s", message)
        return
    for failure in failures:
        logger.warning("lambdawrap: %s; its variable is left as it was", failure)


def _forget_our_sitecustomize(handler_module: Any = None) -> None:
    # Without another sitecustomize to chain to, `import sitecustomize` must find nothing, as
    # without the layer. Not while site.py is still importing ours (a handler's module the
    # interpreter had imported already is wrapped then): importlib pops the entry when the
    # import ends, and a missing one is an "Error in sitecustomize" in the function's log.
    module = sys.modules.get("sitecustomize")
    if module is None or getattr(getattr(module, "__spec__", None), "_initializing", False):
        return
    if getattr(module, "__file__", "").endswith(os.path.join("lambdawrap_boot", "sitecustomize.py")):
        del sys.modules["sitecustomize"]


def _forgetting_failed(module_name: str) -> None:
    from lambdawrap.handler.invocation import FAILURES  # only then: not loaded with OTEL_SDK_DISABLED

    FAILURES.record(f"a post-import hook on {module_name}")


def function_s_own_lambdawrap(environ: Mapping[str, str]) -> str | None:
    """Where the function's folder holds a top-level `lambdawrap` of its own, not a copy of
    this package (which has our boot): the layer's, imported first, would stand in for it, and
    `import lambdawrap.app` find the layer's package, not the function's."""
    root = environ.get("LAMBDA_TASK_ROOT", "")
    if not root:
        return None
    package = os.path.join(root, "lambdawrap")
    if os.path.isdir(package):
        return None if os.path.isfile(os.path.join(package, "handler", "boot.py")) else package
    module = package + ".py"
    return module if os.path.isfile(module) else None


def _step_aside(own: str) -> None:
    """Leave the name `lambdawrap` to the function: uninstrumented, as without the layer."""
    logger.warning("lambdawrap: not instrumenting: the function has a lambdawrap of its own (%s), which the layer's package would stand in for; rename one to have both", own)
    for name in [name for name in sys.modules if name == "lambdawrap" or name.startswith("lambdawrap.")]:
        del sys.modules[name]


def run_sitecustomize(sitecustomize_file: str) -> None:
    """What layer/python/lambdawrap_boot/sitecustomize.py calls."""
    if in_the_runtime(os.environ):
        own = function_s_own_lambdawrap(os.environ)
        if own is not None:
            _step_aside(own)  # first: a sitecustomize of the function's may import its own
            start_as_without_the_layer(sitecustomize_file)
            return
        initialize()
    start_as_without_the_layer(sitecustomize_file)
