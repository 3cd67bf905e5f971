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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _imported(name: str) -> object:
    there = name in sys.modules
    module = __import__(name)
    if not there:
        del sys.modules[name]
    return module


binascii = _imported("binascii")
mmap = _imported("mmap")

_STANDARD: dict = {}
_LOADING = threading.local()  # name: the module this thread's standard() is executing


def standard(name: str) -> object:
    """The standard module `name`, for code that first needs it after the boot (the parser of a
    rare event, where importing it at boot would cost every cold start): looked up in the
    interpreter's own folders only, never the function's (first on `sys.path` by then), and
    left out of `sys.modules` where it was not there; so is every module it imports, as it
    loads and later. Raises ImportError if not found."""
    module = _STANDARD.get(name) or _LOADING.__dict__.get("modules", {}).get(name)
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
def _found_standard(name: str) -> object:
    import importlib.machinery  # the boot has imported it (bare_start)

    roots = tuple({sys.base_prefix.rstrip("/") + "/", sys.base_exec_prefix.rstrip("/") + "/"})
    there = sys.modules.get(name)
    if _is_standard(there, roots):
        if getattr(there.__spec__, "_initializing", False):
            # Another thread is importing it (the companion's export pipeline loading): the
            # import system waits for it to finish, where the module itself would be half made.
            import importlib

            return importlib.import_module(name)
        return there
    package, _, child = name.rpartition(".")
    parent = standard(package) if package else None
    if name in sys.builtin_module_names:
        spec = importlib.machinery.BuiltinImporter.find_spec(name)
    elif package:  # a package's module: in the standard package's own folder
        spec = importlib.machinery.PathFinder.find_spec(name, list(getattr(parent, "__path__", ())))
    else:
        spec = importlib.machinery.PathFinder.find_spec(name, [p for p in sys.path if isinstance(p, str) and p.startswith(roots)])
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"no standard module {name}", name=name)
    if there is not None:  # the function's own stands there
        module = _executed(name, spec, stands=False)
    else:
        from importlib import _bootstrap  # the import system's own: the boot has loaded it

        # Under the import system's lock of the name: a thread importing it meanwhile waits
        # for it to be made rather than take it half made, and one that did is seen.
        with _bootstrap._ModuleLockManager(name):
            there = sys.modules.get(name)
            if _is_standard(there, roots):
                return there
            module = _executed(name, spec, stands=there is None)
    if _private(parent):
        setattr(parent, child, module)  # as the import system binds a module in its package
    return module


def _is_standard(module: "Any", roots: tuple) -> bool:
    origin = getattr(getattr(module, "__spec__", None), "origin", None)
    return module is not None and isinstance(origin, str) and (origin in ("built-in", "frozen") or origin.startswith(roots))


def _executed(name: str, spec: "Any", stands: bool) -> object:
    """The module of `spec`, made as lambdawrap's own. `stands`: in sys.modules while it
    executes, marked as initializing as the import system marks its own (the caller holding
    the name's lock), where the process lacks a module of its name: some look themselves up
    there as they load (socket's and calendar's enums, by their module's name)."""
    import importlib.util

    module = importlib.util.module_from_spec(spec)
    # Its imports, as it loads and in its functions later (urlsplit's `import unicodedata` for a
    # host not in ASCII), are standard() too: never the function's `ipaddress.py`, and nothing
    # left in sys.modules for the function's own imports to find.
    module.__dict__["__builtins__"] = _standard_builtins()
    loading = _LOADING.__dict__.setdefault("modules", {})
    # A package's modules import it as it loads (json.decoder's `from json import scanner`):
    # they get it half made, as the import system gives them its own.
    loading[name] = module
    if stands:
        spec._initializing = True
        sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del loading[name]
        if stands:
            if sys.modules.get(name) is module:
                del sys.modules[name]
            spec._initializing = False
    return module


def _standard_import(name: str, globals: "dict | None" = None, locals: object = None, fromlist: "tuple | list | None" = (), level: int = 0) -> object:
    """`__import__` for the modules standard() loads: each name through standard()."""
    if level:
        package = (globals or {}).get("__package__") or ""
        base = package.rsplit(".", level - 1)[0] if level > 1 else package
        name = f"{base}.{name}" if name else base
    top = name.partition(".")[0]
    if standard(top) is sys.modules.get(top):
        # A standard package the process has: its modules are found in its own folder, as
        # the import system finds them (and may keep them, the standard ones).
        return _IMPORT(name, globals, locals, fromlist, 0)
    module = standard(name)  # a package's module is bound in it, as the import system does
    if not fromlist:
        return standard(top)  # `import a.b` binds `a`
    for item in fromlist:
        # `from xml.dom import minidom`: a submodule, not yet an attribute of its package.
        if item != "*" and not hasattr(module, item) and hasattr(module, "__path__"):
            try:
                standard(f"{name}.{item}")
            except ImportError:
                pass  # the name's absence then raises as the import system's would
    return module


def _private(module: object) -> bool:
    """Whether `module` is one standard() loaded, the process's import system never."""
    return _BUILTINS is not None and getattr(module, "__builtins__", None) is _BUILTINS


def _standard_builtins() -> dict:
    global _BUILTINS
    if _BUILTINS is None:
        import builtins

        _BUILTINS = {**builtins.__dict__, "__import__": _standard_import}
    return _BUILTINS


_BUILTINS: "dict | None" = None
_IMPORT = __import__
