"""What the function's start keeps of a start without the layer: the runtime's environment
and sys.path put back as they were before the exec wrapper, and the sitecustomize ours shadows
run in its place.

Standard library only, and no other lambdawrap module: the boot trampoline
(layer/python/lambdawrap_boot/sitecustomize.py) calls it when the rest of lambdawrap failed to
import (a layer copied in part, a Python it does not support), so that the function then starts
exactly as without the layer, only uninstrumented.
"""

from __future__ import annotations

import logging
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Any, Mapping

logger = logging.getLogger("lambdawrap")


def in_the_runtime(environ: Mapping[str, str]) -> bool:
    """Whether this process runs the runtime's script, the one our wrapper was handed
    (LAMBDAWRAP_RUNTIME_SCRIPT). A Python process on the way to it (a next wrapper written in
    Python that execs the runtime, as OpenTelemetry's opentelemetry-instrument does, or a
    `python -c` a shell wrapper runs) must pass our variables on untouched: instrumenting it
    and restoring PYTHONPATH there left the runtime without lambdawrap."""
    script = environ.get("LAMBDAWRAP_RUNTIME_SCRIPT", "")
    if not script:
        return True  # not known (a wrapper of another version, a runtime started otherwise)
    try:
        return os.path.samefile(sys.argv[0], script)
    except (OSError, IndexError, TypeError, ValueError):  # "-c", "-m", no argv
        return False


def restore_python_path(environ: Any = None) -> None:
    """Put sys.path and PYTHONPATH back as they were before the exec wrapper (which added our
    boot folder, and the layer's folders when PYTHONPATH was unset): the runtime's bootstrap
    then builds the function's sys.path exactly as without the layer (its own layer paths,
    .pth files included), and the function's child processes inherit no trace of ours."""
    env = os.environ if environ is None else environ
    added = [p for p in env.pop("LAMBDAWRAP_ADDED_PATHS", "").split(os.pathsep) if p]
    unset = env.pop("LAMBDAWRAP_PYTHONPATH_UNSET", "") == "1"
    env.pop("LAMBDAWRAP_BOOT_DIR", None)
    env.pop("LAMBDAWRAP_RUNTIME_SCRIPT", None)
    # Our wrapper's own, for its second pass after a next wrapper: never the function's.
    env.pop("LAMBDAWRAP_CHAINED_INTERPRETER", None)
    env.pop("LAMBDAWRAP_CHAINED_WRAPPER", None)
    for path in added:
        for index, entry in enumerate(sys.path):
            if entry and os.path.abspath(entry) == os.path.abspath(path):
                del sys.path[index]
                break
    # Ours are taken out by value, not as the first entries: a wrapper chained after ours
    # (LAMBDAWRAP_NEXT_WRAPPER) may have put its own in front of them, and those stay.
    entries = env.get("PYTHONPATH", "").split(os.pathsep) if added else []
    for path in added:
        if path in entries:
            entries.remove(path)
    if unset and not [entry for entry in entries if entry]:
        env.pop("PYTHONPATH", None)
    elif added:
        env["PYTHONPATH"] = os.pathsep.join(entries)


def shadowed_sitecustomize(boot_dir: str) -> Any:
    """The spec of the sitecustomize that ours shadows (a user's or the runtime's), from the
    sys.path the interpreter would have searched without the layer; None if there is none."""
    import importlib.machinery

    ours = os.path.realpath(boot_dir)
    others = [p for p in sys.path if p and os.path.realpath(p) != ours]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", others)
    return None if spec is None or spec.loader is None else spec


def chain_sitecustomize(spec: Any) -> None:
    """Run the shadowed sitecustomize as `sitecustomize`, as the interpreter would have."""
    import importlib.util  # deferred: only when there is another sitecustomize

    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


def start_as_without_the_layer(sitecustomize_file: str) -> None:
    """In the runtime's process, PYTHONPATH and the wrapper's variables put back; in any, the
    shadowed sitecustomize run. Never raises but what that sitecustomize raises."""
    if in_the_runtime(os.environ):
        try:
            restore_python_path()
        except Exception:  # noqa: BLE001
            logger.warning("lambdawrap: could not restore PYTHONPATH", exc_info=True)
    try:
        spec = shadowed_sitecustomize(os.path.dirname(os.path.abspath(sitecustomize_file)))
    except Exception:  # noqa: BLE001 - looking for it failing must not stop the runtime
        logger.warning("lambdawrap: could not look for a sitecustomize to chain to", exc_info=True)
        return
    if spec is not None:
        # What theirs raises goes on to site.py, importing ours: it reports the error in its
        # two lines ("Error in sitecustomize ...") and importlib forgets the module, as
        # without the layer.
        chain_sitecustomize(spec)
