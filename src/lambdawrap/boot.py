"""Handler-side boot: runs from sitecustomize before the runtime imports the handler module.

It reads the settings once, registers a post-import hook on the `_HANDLER` module that wraps
the handler, bridges the user's OpenTelemetry API usage if their code imports it, and then
chains to any sitecustomize that ours shadows. It imports nothing heavy and never raises into
the runtime (unless a test asks it to).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import os
import sys
import time
from typing import Any, Mapping

from .settings import Settings

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
    settings = Settings.from_env(environ)
    logger.setLevel(settings.log_level.upper())
    if settings.disabled:
        return None
    target = handler_target(environ.get("_HANDLER", ""))
    if target is None:
        # The runtime reports a malformed handler itself; nothing for us to wrap.
        return None
    import wrapt  # deferred: the post-import hook machinery is needed only from here on

    from ._channel import Channel
    from ._invocation import FAILURES, InvocationTracer

    channel = Channel(settings.socket_path)
    tracer = InvocationTracer(settings, channel, booted_at=booted_at, environ=environ)
    module_name, attribute = target

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
            from ._otel_bridge import UserSpans

            tracer.user_spans = UserSpans(channel)
        except Exception:  # noqa: BLE001
            FAILURES.record("bridging OpenTelemetry")

    wrapt.register_post_import_hook(wrap_handler, module_name)
    wrapt.register_post_import_hook(bridge_opentelemetry, "opentelemetry.trace")
    _state.update(settings=settings, channel=channel, tracer=tracer)
    return tracer


def _strip_boot_dir(boot_dir: str) -> None:
    # Child processes the user starts must not boot lambdawrap again.
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.realpath(p) != os.path.realpath(boot_dir)]
    os.environ["PYTHONPATH"] = os.pathsep.join(parts)


def chain_sitecustomize(boot_dir: str) -> None:
    """Run the sitecustomize that ours shadows (a user's or the runtime's), if there is one."""
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
