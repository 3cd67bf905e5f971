"""OpenTelemetry's importlib.metadata wrapper, loaded when something first uses it.

The OTLP exporters import `entry_points` from `opentelemetry.util._importlib_metadata` at module
level, for a credential provider they look up only when one is configured
(OTEL_PYTHON_EXPORTER_OTLP_*_CREDENTIAL_PROVIDER). Importing importlib.metadata brings zipfile,
email and csv with it: ~10 ms of the companion's CPU in init, on the critical path of every cold
start (and ~14 times that in wall time where init runs at the function's CPU share). Until
something asks, a stand-in answers for the module; its first use loads the real one, which from
then on answers everything."""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import threading
import types

NAME = "opentelemetry.util._importlib_metadata"


def install() -> None:
    """Put the stand-in in place, unless the real module (or the stand-in) is loaded already."""
    if NAME in sys.modules:
        return
    stand_in = types.ModuleType(NAME, __doc__)
    loading = threading.RLock()  # two threads' first uses load it once

    def real() -> types.ModuleType:
        with loading:
            module = sys.modules.get(NAME)
            if module is None or module is stand_in:
                sys.modules.pop(NAME, None)
                try:
                    module = importlib.import_module(NAME)
                except BaseException:
                    sys.modules.setdefault(NAME, stand_in)
                    raise
            return module

    def entry_points(**params):  # noqa: ANN003, ANN202 - the wrapped function's own signature
        return real().entry_points(**params)

    def attribute(name: str) -> object:
        if name.startswith("__") and name != "__all__":
            # The import system's own questions (is it a package: __path__?) are not a use.
            raise AttributeError(name)
        return getattr(real(), name)

    # `from ... import entry_points` takes this function at import time; any other name
    # (EntryPoints, version, distributions..., `import *`, dir()) loads the real module.
    stand_in.entry_points = entry_points  # type: ignore[attr-defined]
    stand_in.__getattr__ = attribute  # type: ignore[method-assign]
    stand_in.__dir__ = lambda: dir(real())  # type: ignore[method-assign]
    stand_in.__spec__ = importlib.machinery.ModuleSpec(NAME, None)
    import opentelemetry.util as parent

    sys.modules[NAME] = stand_in
    parent._importlib_metadata = stand_in  # `import a.b as m; m.x` finds it as a real one is found
