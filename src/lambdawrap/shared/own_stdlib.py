"""Standard modules lambdawrap uses whose names a function's own files may take (a `mmap.py`, a
`binascii.py` in its folder), imported at boot, before the function's folder is first on
`sys.path`, and left out of `sys.modules` where they were not there already: the function's
imports then find what they find without the layer (its own file, or the standard module),
and lambdawrap keeps the standard one.

Each is used from here (`from lambdawrap.shared.own_stdlib import mmap`): an import of the name
after the boot would find the function's file. One needed rarely is had through `standard()`."""

from __future__ import annotations

import sys
import threading


def _imported(name: str) -> object:
    there = name in sys.modules
    module = __import__(name)
    if not there:
        del sys.modules[name]
    return module


binascii = _imported("binascii")
mmap = _imported("mmap")

_STANDARD: dict = {}


def standard(name: str) -> object:
    """The standard module `name`, for code that first needs it after the boot (the parser of a
    rare event, where importing it at boot would cost every cold start): looked up in the
    interpreter's own folders only, never the function's (first on `sys.path` by then), and
    left out of `sys.modules` where it was not there. Raises ImportError if not found."""
    module = _STANDARD.get(name)
    if module is None:
        # One module for all threads, whichever loaded first: lend() tells its own by identity.
        module = _STANDARD.setdefault(name, _found_standard(name))
    return module


def lend(names: tuple) -> list:
    """Put the standard modules `names` in `sys.modules` while lambdawrap runs standard code that
    imports them lazily (traceback's formatting of a stack: `ast`, `unicodedata`, from 3.11):
    the function's own `ast.py`, first on `sys.path` by then, is neither run nor used. The names
    lent, for take_back(); never raises (a name not had is left as it is). Counted per name:
    threads formatting at once, or one formatting within another, lend once, and the last to
    take back puts back what stood there before the first."""
    lent = []
    for name in names:
        try:
            module = standard(name)
        except Exception:  # noqa: BLE001 - the code that imports it meets what it meets
            continue
        with _LENDING:
            loan = _LOANS.get(name)
            if loan is None:
                _LOANS[name] = [1, module, sys.modules.get(name, _ABSENT)]
                sys.modules[name] = module
            else:
                loan[0] += 1
        lent.append(name)
    return lent


def take_back(lent: list) -> None:
    """Put back what stood in `sys.modules` before the first lend() of each name, once the last
    is taken back: the function's imports then find what they find without the layer (its own
    file, or the standard module loaded anew)."""
    for name in lent:
        with _LENDING:
            loan = _LOANS[name]
            loan[0] -= 1
            if loan[0]:
                continue
            del _LOANS[name]
            _, module, before = loan
            if sys.modules.get(name) is module:
                if before is _ABSENT:
                    del sys.modules[name]
                else:
                    sys.modules[name] = before


_ABSENT = object()
_LENDING = threading.Lock()
_LOANS: dict = {}  # name: [borrowers, the standard module, what stood in sys.modules before]
# What a standard module had through standard() imports as it loads that the process may not
# have loaded yet, lent while it does: `urllib.parse` imports `ipaddress` (3.11 on) and `math`
# (3.12 on), which a function's own `ipaddress.py` would otherwise be (run by lambdawrap, and
# left in sys.modules for the function's own imports).
_IMPORTS_AS_IT_LOADS = {"urllib.parse": ("ipaddress", "math")}


def _found_standard(name: str) -> object:
    import importlib.machinery  # the boot has imported it (bare_start)
    import importlib.util

    roots = tuple({sys.base_prefix.rstrip("/") + "/", sys.base_exec_prefix.rstrip("/") + "/"})
    there = sys.modules.get(name)
    origin = getattr(getattr(there, "__spec__", None), "origin", None)
    if there is not None and isinstance(origin, str) and (origin in ("built-in", "frozen") or origin.startswith(roots)):
        if getattr(there.__spec__, "_initializing", False):
            # Another thread is importing it (the companion's export pipeline loading): the
            # import system waits for it to finish, where the module itself would be half made.
            import importlib

            return importlib.import_module(name)
        return there
    package, _, _ = name.rpartition(".")
    if name in sys.builtin_module_names:
        spec = importlib.machinery.BuiltinImporter.find_spec(name)
    elif package:  # a package's module: in the standard package's own folder
        spec = importlib.machinery.PathFinder.find_spec(name, list(getattr(standard(package), "__path__", ())))
    else:
        spec = importlib.machinery.PathFinder.find_spec(name, [p for p in sys.path if isinstance(p, str) and p.startswith(roots)])
    if spec is None or spec.loader is None:
        raise ImportError(f"no standard module {name}")
    module = importlib.util.module_from_spec(spec)
    lent = lend(_IMPORTS_AS_IT_LOADS.get(name, ()))
    try:
        spec.loader.exec_module(module)
    finally:
        take_back(lent)
    return module
