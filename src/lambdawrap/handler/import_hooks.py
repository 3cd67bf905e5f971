"""Post-import hooks that leave no frame of ours in the user's tracebacks.

A hook that wraps a module's loader (as wrapt's do) runs the module's code from a frame of its
own, so an error raised while the handler module loads carries that frame (and the importlib
frames around it) in the stack trace the runtime reports: the caller would see a different
error payload with the layer than without. Here the finder hands importlib the real loader and
the real spec, changed in one way: the spec's class gains an `_initializing` property. importlib
sets `spec._initializing = True` before it runs the module and `False` in a `finally` once it is
done (CPython 3.4 to 3.13, `importlib._bootstrap._load_unlocked`); when it turns False with the
module in sys.modules, the hooks run, the spec still saying it is initializing (so another thread
importing the module waits for them on its lock, as it would for wrapt's), then it says it is
done. The module's own code runs in importlib's frames only, and the spec's class is given back
before the hooks run.

A watched module loaded outside importlib's import (the LazyLoader recipe, a cold-start trick:
importlib.util.find_spec, then the spec's loader run on first use) never sets `_initializing`:
its hooks run at the next `catch_up()`, which the handler's wrapper calls as each invocation
starts, once the module is in sys.modules and loaded.

tests/test_import_hooks.py holds this to wrapt's `register_post_import_hook` behaviour.
"""

from __future__ import annotations

import os
import sys
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Callable

Hook = "Callable[[ModuleType], None]"

_hooks: dict = {}  # module name -> [hook, ...], until the module has loaded
_lock = threading.RLock()
_watched_classes: dict = {}  # spec class -> its watched subclass
_asked_outside_imports: set = set()  # watched names importlib.util.find_spec was answered for


def _new_lock() -> None:
    # A child forked while another thread held the lock (a first import of a watched module
    # under way) would wait for it forever at its own first import of one.
    global _lock
    _lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock)


def when_imported(name: str, hook: "Callable[[ModuleType], None]", on_error: "Callable[[str], None]") -> None:
    """Call `hook(module)` once module `name` has been imported, at once if it already is.
    A hook that raises is reported to `on_error(name)` and never reaches the importer."""
    with _lock:
        # Under the lock a module's hooks end under (_set_initializing): one registered while
        # they run is run with them, not filed after the last was taken.
        module = sys.modules.get(name)
        if module is None or _initializing(module):
            _hooks.setdefault(name, []).append((hook, on_error))
            if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
                sys.meta_path.insert(0, _Finder())
            return
    _run(hook, module, on_error)


def _run(hook: "Callable[[ModuleType], None]", module: "ModuleType", on_error: "Callable[[str], None]") -> None:
    try:
        hook(module)
    except Exception:  # noqa: BLE001 - the user's import must succeed whatever our hook does
        on_error(_name_of(module))


def _attribute(module: object, name: str, default: object) -> object:
    """`getattr(module, name, default)`, or `default` where the object answers with an error:
    what a module put in sys.modules in its place (a registry whose __getattr__ raises
    KeyError) answers as it likes, importlib never asks it, and an error here would be the
    import's."""
    try:
        return getattr(module, name, default)
    except Exception:  # noqa: BLE001
        return default


def _initializing(module: object) -> bool:
    return bool(_attribute(_attribute(module, "__spec__", None), "_initializing", False))


def _name_of(module: object) -> str:
    try:
        return str(_attribute(module, "__name__", "?"))
    except Exception:  # noqa: BLE001 - a __name__ that is no text, and says so with an error
        return "?"


def _loaded(name: str, module: "ModuleType", spec: object = None) -> None:
    """Run the module's hooks, those registered while they run too, then let its watched spec
    (if any) say the module is done initializing."""
    while True:
        with _lock:
            hooks = _hooks.pop(name, [])
            if not hooks:
                if spec is not None:
                    spec.__dict__["_initializing"] = False
                return
        for hook, on_error in hooks:
            _run(hook, module, on_error)


def catch_up() -> None:
    """Run the hooks of watched modules that were loaded without importlib's import: from a
    spec importlib.util.find_spec gave (LazyLoader's recipe), once they are in sys.modules and
    loaded. A lazy module not used yet is left unloaded (its type alone is read)."""
    if not _asked_outside_imports:
        return
    for name in list(_asked_outside_imports):
        module = sys.modules.get(name)
        if name not in _hooks:
            _asked_outside_imports.discard(name)  # imported the usual way, its hooks run
        elif issubclass(type(module), _MODULE) and type(module).__name__ != "_LazyModule" and not _initializing(module) and not _running_its_code(module):
            _asked_outside_imports.discard(name)
            _loaded(name, module)


# Not an object of the function's own that it put in sys.modules in its place: its type alone is
# read (isinstance would ask the object for its __class__).
_MODULE = type(sys)


def _running_its_code(module: object) -> bool:
    """Whether a thread runs the module's own code now: before 3.13 a lazy module stops being
    a `_LazyModule` as its code starts, and hooked then, half run, it would stay untraced."""
    namespace = object.__getattribute__(module, "__dict__")
    for frame in sys._current_frames().values():
        while frame is not None:
            if frame.f_globals is namespace and frame.f_code.co_name == "<module>":
                return True
            frame = frame.f_back
    return False


class _Finder:
    """First on sys.meta_path; answers only for the watched names, by asking the finders after
    it and returning their spec, watched."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> object:
        if fullname not in _hooks:
            return None  # every other import: one dict lookup
        if not _loading_now():
            # importlib.util.find_spec hands the spec back unloaded: watched, it would keep its
            # swapped class for good (its pickle fails); the finders after this one answer it.
            # Its module, if loaded from it, is caught up with (catch_up).
            _asked_outside_imports.add(fullname)
            return None
        finders = list(sys.meta_path)
        # Those ahead of this one have answered None already: asked again, a finder that
        # counts or logs what it is asked would see each watched import twice. Found by
        # identity: a finder's own __eq__ is its own.
        at = next((index for index, finder in enumerate(finders) if finder is self), -1)
        after = finders[at + 1 :]
        for finder in after:
            if isinstance(finder, _Finder):
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is not None:
                spec = find_spec(fullname, path, target)
            elif _ASKS_FIND_MODULE and getattr(finder, "find_module", None) is not None:
                spec = _legacy_spec(finder, fullname, path)
                if spec is not None and not hasattr(spec.loader, "exec_module"):
                    # importlib runs an old load_module() without _initializing: watched, the
                    # spec would keep its class and the hooks never run. Left as it is.
                    return spec
            else:
                continue
            if spec is not None:
                _watch(spec)
                return spec
        return None


def _loading_now() -> bool:
    """Whether importlib asks in order to load the module (`_find_and_load_unlocked`), not for
    `importlib.util.find_spec`'s answer alone. Read from the frames `_find_spec` is called from:
    a finder ahead of this one may ask through `importlib.util.find_spec` while it serves an
    import (wrapt's post-import hooks, ddtrace's and New Relic's watchdogs), and importlib loads
    that answer; a module's code asking while it loads (a probe for an optional package) is not
    that import."""
    frame = sys._getframe(2)
    asked = False  # through importlib.util.find_spec
    read = 0
    while frame is not None and (asked or read < _FRAMES_READ):
        read += 1
        name = frame.f_code.co_name
        if name == "_find_and_load_unlocked":
            return True
        if name == "find_spec" and frame.f_globals.get("__name__") == "importlib.util":
            asked = True
        elif asked and name in _LOADING_FRAMES:
            return False
        frame = frame.f_back
    return not asked


_FRAMES_READ = 16  # an import's own frames are read first; past importlib.util's, all of them
_LOADING_FRAMES = ("_call_with_frames_removed", "exec_module", "_load_unlocked")


# Before 3.12 importlib still asks a finder that has only the old find_module (a vendoring
# tool's, installed by a .pth file): skipped here, the module it serves would come from another.
_ASKS_FIND_MODULE = sys.version_info < (3, 12)


def _legacy_spec(finder: object, fullname: str, path: object) -> object:
    """The spec importlib makes of a find_module finder's answer (_bootstrap._find_spec_legacy)."""
    loader = finder.find_module(fullname, path)  # type: ignore[attr-defined]
    if loader is None:
        return None
    from importlib.util import spec_from_loader

    return spec_from_loader(fullname, loader)


def _watch(spec: object) -> None:
    original = type(spec)
    with _lock:
        watched = _watched_classes.get(original)
        if watched is None:
            watched = _watched_classes[original] = type(original.__name__, (original,), {"_initializing": property(_get_initializing, _set_initializing), "__module__": original.__module__})
    spec.__dict__["_lambdawrap_class"] = original
    spec.__class__ = watched


def _get_initializing(spec: object) -> bool:
    return spec.__dict__.get("_initializing", False)


def _set_initializing(spec: object, value: bool) -> None:
    if value:
        spec.__dict__["_initializing"] = True
        return
    # importlib is done with the module, loaded or failed: the spec becomes what it was.
    spec.__class__ = spec.__dict__.pop("_lambdawrap_class", type(spec).__mro__[1])
    try:
        module = sys.modules.get(spec.name)
        if module is not None and _attribute(module, "__spec__", None) is spec:
            # Still initializing while the hooks run, as wrapt's run inside the module's load:
            # another thread importing it waits on its lock (this thread holds it) until they
            # are done, rather than taking the module unpatched.
            _loaded(spec.name, module, spec)
    finally:
        spec.__dict__["_initializing"] = False
