"""wrapt's compiled proxy types, loaded privately.

The function's own `import wrapt` must find the function's wrapt (or none), exactly as without
the layer; and importing the wrapt package runs its decorators module, which imports inspect,
ast and dis (about 10 ms on a full core, fourteen times that at 128 MB). lambdawrap needs only
the C extension's FunctionWrapper, so it loads that one file under a name of its own
(`_lambdawrap_wrapt._wrappers`), from the layer's private folder (built layers) or, in a source
checkout, from the wrapt installed beside it. The name must end in `_wrappers`: CPython finds
an extension's init function by the last part of its name.
"""

from __future__ import annotations

import os
import sys

PRIVATE_NAME = "_lambdawrap_wrapt._wrappers"
_loaded: list = []


def handler_lib(boot_dir: str) -> str:
    """The layer's private folder for the function side's dependencies."""
    layer = os.path.dirname(os.path.dirname(boot_dir.rstrip("/")))
    return os.path.join(layer, "lambdawrap", "handler-lib")


def load(boot_dir: str = "") -> object:
    """The private `_wrappers` module; raises ImportError if there is none for this Python."""
    if _loaded:
        return _loaded[0]
    from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader, ModuleSpec, PathFinder

    private = handler_lib(boot_dir) if boot_dir else ""
    if private and os.path.isdir(private):
        # A built layer: its own copy only. One found on the path (another layer's, the
        # function's) may be a wrapt whose extension imports its package as it loads, which
        # would then be the function's `wrapt`, before the function's own is on the path.
        folders = [os.path.join(private, "wrapt")]
    else:
        spec = PathFinder.find_spec("wrapt", [p for p in sys.path if p])
        folders = list(spec.submodule_search_locations) if spec is not None and spec.submodule_search_locations else []
    for folder in folders:
        for suffix in EXTENSION_SUFFIXES:
            path = os.path.join(folder, "_wrappers" + suffix)
            if os.path.isfile(path):
                loader = ExtensionFileLoader(PRIVATE_NAME, path)
                module = loader.create_module(ModuleSpec(PRIVATE_NAME, loader, origin=path))
                loader.exec_module(module)
                # Not left in sys.modules, where nothing could import or reload it (it has no
                # parent package): kept here.
                if sys.modules.get(PRIVATE_NAME) is module:
                    del sys.modules[PRIVATE_NAME]
                _loaded.append(module)
                return module
    raise ImportError(f"no compiled wrapt for this Python in {folders}")
