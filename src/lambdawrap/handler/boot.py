"""Handler-side boot: runs from sitecustomize before the runtime imports the handler module.

It reads the settings once, registers a post-import hook on the `_HANDLER` module that wraps
the handler, bridges the user's OpenTelemetry API usage if their code imports it, and then
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
    from typing import Any, Mapping

from lambdawrap.shared.settings import Settings

logger = logging.getLogger("lambdawrap")

_state: dict = {}  # what boot set up, for tests and for the secrets accessor


def handler_target(handler: str) -> tuple[str, str] | None:
    """(module, attribute) of a `_HANDLER` value in `pkg.mod.fn` or `dir/mod.fn` form."""
    module, sep, attribute = handler.strip().rpartition(".")
    if not sep or not module or not attribute or not attribute.isidentifier():
        return None
    module = module.replace("/", ".")
    if not all(part.isidentifier() for part in module.split(".")):
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
    booted_at = time.monotonic()
    # Both processes parse the same variables; when our companion runs, it is the one that
    # warns about a bad value, so that each is reported once per environment.
    settings = Settings.from_env(environ, warn=not _companion_expected(environ))
    logger.setLevel(settings.log_level.upper())
    if settings.disabled:
        return None
    target = handler_target(environ.get("_HANDLER", ""))
    if target is None:
        # The runtime reports a malformed handler itself; nothing for us to wrap.
        return None
    import wrapt  # deferred: the post-import hook machinery is needed only from here on

    from lambdawrap.handler.channel import Channel
    from lambdawrap.handler.invocation import FAILURES, InvocationTracer

    channel = Channel(settings.socket_path)
    module_name, attribute = target
    if settings.secrets:
        _load_secrets(settings, channel, module_name, environ)
    tracer = InvocationTracer(settings, channel, booted_at=booted_at, environ=environ)

    def wrap_handler(module: Any) -> None:
        # An exception here would fail the user's import: wrapt runs hooks inside it.
        try:
            handler = getattr(module, attribute, None)
            if callable(handler):
                setattr(module, attribute, tracer.wrap(handler))
        except Exception:  # noqa: BLE001
            FAILURES.record("wrapping the handler")

    def bridge_opentelemetry(module: Any) -> None:
        try:
            from lambdawrap.handler.otel_bridge import UserSpans

            tracer.user_spans = UserSpans(channel)
        except Exception:  # noqa: BLE001
            FAILURES.record("bridging OpenTelemetry")

    wrapt.register_post_import_hook(wrap_handler, module_name)
    wrapt.register_post_import_hook(bridge_opentelemetry, "opentelemetry.trace")
    _state.update(settings=settings, channel=channel, tracer=tracer)
    return tracer


class _RefuseImport:
    """A meta-path finder that fails the handler module's import with a SecretsError, which the
    runtime reports as an init error (fail-closed secrets)."""

    def __init__(self, module: str, message: str) -> None:
        self.module = module
        self.message = message

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == self.module:
            from lambdawrap.shared.secret_sources import SecretsError

            raise SecretsError(self.message)
        return None


def _companion_expected(environ: Mapping[str, str]) -> bool:
    """True when our layer's companion runs in this environment (every file in
    <layer>/extensions is launched by the platform)."""
    boot_dir = environ.get("LAMBDAWRAP_BOOT_DIR", "")
    if not boot_dir:
        return False
    layer = os.path.dirname(os.path.dirname(boot_dir.rstrip("/")))
    return os.path.isfile(os.path.join(layer, "extensions", "lambdawrap"))


def _load_secrets(settings: Settings, channel: Any, module_name: str, environ: Mapping[str, str]) -> None:
    try:
        from lambdawrap.handler import secret_cache

        failures = secret_cache.load_declared(settings, channel, _companion_expected(environ))
    except Exception as exc:  # noqa: BLE001 - the policy below decides what a failure means
        failures = [f"secrets could not be loaded ({type(exc).__name__})"]
    if not failures:
        return
    if settings.secrets_required:
        message = "LAMBDAWRAP_SECRETS_REQUIRED is true and " + "; ".join(failures)
        sys.meta_path.insert(0, _RefuseImport(module_name, message))
        logger.error("lambdawrap: %s", message)
        return
    for failure in failures:
        logger.warning("lambdawrap: %s; its variable is left unset", failure)


def _strip_boot_dir(boot_dir: str) -> None:
    # Child processes the user starts must not boot lambdawrap again.
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.realpath(p) != os.path.realpath(boot_dir)]
    os.environ["PYTHONPATH"] = os.pathsep.join(parts)


def chain_sitecustomize(boot_dir: str) -> None:
    """Run the sitecustomize that ours shadows (a user's or the runtime's), if there is one."""
    import importlib.machinery
    import importlib.util

    ours = os.path.realpath(boot_dir)
    others = [p for p in sys.path if p and os.path.realpath(p) != ours]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


def run_sitecustomize(sitecustomize_file: str) -> None:
    """What layer/python/lambdawrap_boot/sitecustomize.py calls."""
    boot_dir = os.path.dirname(os.path.abspath(sitecustomize_file))
    initialize()
    try:
        _strip_boot_dir(boot_dir)
    except Exception:  # noqa: BLE001
        logger.warning("lambdawrap: could not restore PYTHONPATH", exc_info=True)
    try:
        chain_sitecustomize(boot_dir)
    except Exception:  # noqa: BLE001 - their sitecustomize failing must not stop the runtime
        logger.warning("lambdawrap: the shadowed sitecustomize raised", exc_info=True)
