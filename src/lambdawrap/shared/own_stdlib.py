"""Standard modules lambdawrap uses whose names a function's own files may take (a `mmap.py`, a
`binascii.py` in its folder), imported at boot, before the function's folder is first on
`sys.path`, and left out of `sys.modules` where they were not there already: the function's
imports then find what they find without the layer (its own file, or the standard module),
and lambdawrap keeps the standard one.

Each is used from here (`from lambdawrap.shared.own_stdlib import mmap`): an import of the name
after the boot would find the function's file. One needed rarely is had through `standard()`;
one whose functions import as lambdawrap calls them, through `own_copy()`."""

from __future__ import annotations

import itertools
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
_random = _imported("_random")  # ids
_socket = _imported("_socket")  # the channel

# Those above are what standard() gives for their names too.
_STANDARD: dict = {"binascii": binascii, "mmap": mmap, "_random": _random, "_socket": _socket}
_LOADING = threading.local()  # name: the module this thread's standard() is executing
ALIAS_PREFIX = "lambdawrap-standard:"  # not a name an import can ask for
_LOADS = itertools.count()


def standard(name: str) -> object:
    """The standard module `name`, for code that first needs it after the boot (the parser of a
    rare event, where importing it at boot would cost every cold start): looked up in the
    interpreter's own folders only, never the function's (first on `sys.path` by then), and
    left out of `sys.modules` where it was not there; so is every module it imports, as it
    loads and later. Raises ImportError if not found."""
    # This thread's, half made, first: a package's module binds in the package it loads with.
    module = _LOADING.__dict__.get("modules", {}).get(name) or _STANDARD.get(name)
    if module is None:
        # One module for all threads, whichever loaded first.
        module = _STANDARD.setdefault(name, _found_standard(name))
    return module


def own_copy(name: str) -> object:
    """The standard module `name` loaded anew as lambdawrap's own, the process's left as it is:
    for one whose functions import as lambdawrap calls them (traceback's `import ast` as it
    formats a stack, 3.13's linecache's `import tokenize`), where the process's would import
    through the process's imports, find a function's `ast.py` first on `sys.path`, and leave
    what it found in `sys.modules`; its own imports go through standard(). One for all threads.
    Raises ImportError if not found."""
    module = _COPIES.get(name)
    if module is None:
        module = _COPIES.setdefault(name, _found_standard(name, anew=True))
    return module


_COPIES: dict = {}


def _found_standard(name: str, anew: bool = False) -> object:
    import importlib.machinery  # the boot has imported it (bare_start)

    package, _, child = name.rpartition(".")
    parent = standard(package) if package else None
    # The module of a package of lambdawrap's own is its own too, whatever the process has.
    there = None if anew or _private(parent) else process_standard(name)
    if there is not None:
        if getattr(there.__spec__, "_initializing", False):
            # Another thread is importing it (the companion's export pipeline loading): the
            # import system waits for it to finish, where the module itself would be half made.
            import importlib

            return importlib.import_module(name)
        return there
    if name in sys.builtin_module_names:
        spec = importlib.machinery.BuiltinImporter.find_spec(name)
    elif package:  # a package's module: in the standard package's own folder
        spec = importlib.machinery.PathFinder.find_spec(name, list(getattr(parent, "__path__", ())))
    else:
        spec = importlib.machinery.PathFinder.find_spec(name, [p for p in sys.path if isinstance(p, str) and p.startswith(_roots())])
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"no standard module {name}", name=name)
    module = _executed(name, spec)
    if _private(parent):
        setattr(parent, child, module)  # as the import system binds a module in its package
    return module


def process_standard(name: str) -> "Any":
    """The process's module `name` where it is the standard one (built in, frozen, or from the
    interpreter's folders), not a function's file of that name; else None."""
    there = sys.modules.get(name)
    origin = getattr(getattr(there, "__spec__", None), "origin", None)
    if isinstance(origin, str) and (origin in ("built-in", "frozen") or origin.startswith(_roots())):
        return there
    return None


def _roots() -> tuple:
    return tuple({sys.base_prefix.rstrip("/") + "/", sys.base_exec_prefix.rstrip("/") + "/"})


def _executed(name: str, spec: "Any") -> "Any":
    """The module of `spec`, made as lambdawrap's own, never under its name in sys.modules:
    a thread of the function's importing that name meanwhile gets what it would without the
    layer, never this one half made."""
    from importlib._bootstrap import module_from_spec  # importlib.util's own, without its imports

    module = module_from_spec(spec)
    # Its imports, as it loads and in its functions later (urlsplit's `import unicodedata` for a
    # host not in ASCII), are standard() too: never the function's `ipaddress.py`, and nothing
    # left in sys.modules for the function's own imports to find.
    module.__dict__["__builtins__"] = _standard_builtins()
    get_code = getattr(spec.loader, "get_code", None)
    code = get_code(name) if get_code is not None else None  # None: an extension's, built in
    # Some look themselves up in sys.modules by their name as they load (socket's and
    # calendar's enums): they find it under a name of lambdawrap's, there while it executes.
    alias = f"{ALIAS_PREFIX}{next(_LOADS)}:{name}"  # one per load: two threads may load it at once
    loading = _LOADING.__dict__.setdefault("modules", {})
    # A package's modules import it as it loads (json.decoder's `from json import scanner`):
    # they get it half made, as the import system gives them its own.
    loading[name] = sys.modules[alias] = module
    try:
        if code is None:
            spec.loader.exec_module(module)
        else:
            module.__name__ = alias
            exec(code, module.__dict__)
    finally:
        del loading[name]
        # What stands under its name once it ran, as the import system takes it: 3.13's
        # collections.abc puts another module there.
        module = sys.modules.pop(alias, module)
    if getattr(module, "__name__", None) == alias:
        module.__name__ = name
        _named_as_standard(module, alias, name)
    return module


def _named_as_standard(module: "Any", alias: str, name: str) -> None:
    """Its classes and functions say the module's own name (a traceback's `json.decoder.
    JSONDecodeError`, pickling by reference), not the one it ran under."""
    for value in list(module.__dict__.values()):
        for item in (value, *(vars(value).values() if isinstance(value, type) else ())):
            if getattr(item, "__module__", None) == alias:
                try:
                    item.__module__ = name
                except (AttributeError, TypeError):  # a built-in type's is fixed
                    pass


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
    if not fromlist:  # `import a.b` binds `a`, with `b` reached from it
        package = top_module = standard(top)
        for depth in range(2, name.count(".") + 2):
            package = _submodule(package, ".".join(name.split(".")[:depth]))
        return top_module
    module = standard(name)
    for item in fromlist:
        # `from xml.dom import minidom`: a submodule, not yet an attribute of its package.
        if item != "*" and not hasattr(module, item) and hasattr(module, "__path__"):
            try:
                _submodule(module, f"{name}.{item}")
            except ImportError:
                pass  # the name's absence then raises as the import system's would
    return module


def _submodule(package: "Any", name: str) -> "Any":
    """The module `name` of `package`, bound in it where it is lambdawrap's own (another
    thread's load of it may be the one standard() keeps)."""
    module = standard(name)
    child = name.rpartition(".")[2]
    if _private(package) and not hasattr(package, child):
        setattr(package, child, module)
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
