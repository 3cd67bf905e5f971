"""lambdawrap's post-import hooks (handler.import_hooks) behave as wrapt's
register_post_import_hook does, and leave no frame of theirs in the importer's tracebacks.

Each case runs in a fresh interpreter: import hooks are process-wide state.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support.lazy_loading import LAZY_LOADER_RECIPE

SRC = str(Path(__file__).resolve().parent.parent / "src")

SCENARIO = """
import importlib, json, sys, traceback
sys.path[:0] = [{src!r}, {modules!r}]
calls = []
KIND = {kind!r}

def register(name, hook):
    if KIND == "ours":
        from lambdawrap.handler import import_hooks
        import_hooks.when_imported(name, hook, lambda module: calls.append(("hook failed", module)))
    elif KIND == "wrapt":
        import wrapt
        wrapt.register_post_import_hook(hook, name)

def frames(exc):
    return [(f.name, f.filename.rsplit("/", 1)[-1]) for f in traceback.extract_tb(exc.__traceback__)]

{lazy_loader_recipe}
out = {{}}
{body}
print(json.dumps(out))
"""


def run(tmp_path: Path, kind: str, body: str, modules: dict) -> dict:
    folder = tmp_path / "mods"
    folder.mkdir(exist_ok=True)
    for name, source in modules.items():
        path = folder / (name.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    code = SCENARIO.format(src=SRC, modules=str(folder), kind=kind, body=textwrap.dedent(body), lazy_loader_recipe=LAZY_LOADER_RECIPE)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["ours", "wrapt"])
def test_fires_once_after_the_module_has_run(tmp_path, kind):
    out = run(
        tmp_path,
        kind,
        """
        register("app", lambda m: calls.append(("hook", m.VALUE)))
        import app
        import app
        importlib.import_module("app")
        out["calls"] = calls
        out["spec_class"] = type(app.__spec__).__name__ + "." + type(app.__spec__).__module__
        out["initializing"] = app.__spec__._initializing
        """,
        {"app": "VALUE = 42\n"},
    )
    assert out["calls"] == [["hook", 42]]
    assert out["spec_class"] == "ModuleSpec._frozen_importlib" and out["initializing"] is False


@pytest.mark.parametrize("kind", ["ours", "wrapt"])
def test_fires_at_once_for_a_module_already_imported(tmp_path, kind):
    out = run(tmp_path, kind, 'import app\nregister("app", lambda m: calls.append(m.VALUE))\nout["calls"] = calls\n', {"app": "VALUE = 1\n"})
    assert out["calls"] == [1]


@pytest.mark.parametrize("kind", ["ours", "wrapt"])
def test_a_failed_import_fires_nothing_and_a_later_one_does(tmp_path, kind):
    out = run(
        tmp_path,
        kind,
        """
        import os
        register("flaky", lambda m: calls.append("hook"))
        os.environ["FAIL"] = "1"
        try:
            import flaky
        except RuntimeError:
            out["failed"] = "flaky" not in sys.modules
        os.environ["FAIL"] = ""
        import flaky
        out["calls"] = calls
        """,
        {"flaky": "import os\nif os.environ['FAIL']:\n    raise RuntimeError('boom')\n"},
    )
    assert out["failed"] is True and out["calls"] == ["hook"]


def test_a_hook_that_raises_never_fails_the_import(tmp_path):
    out = run(tmp_path, "ours", 'register("app", lambda m: 1 / 0)\nimport app\nout["value"] = app.VALUE\nout["calls"] = calls\n', {"app": "VALUE = 7\n"})
    assert out["value"] == 7 and out["calls"] == [["hook failed", "app"]]


SWAPPED_FOR_A_REGISTRY = """
import sys

class _Registry:
    def __init__(self):
        self._handlers = {"handler": lambda event, context: {"ok": True}}

    def __getattr__(self, name):
        return self._handlers[name]  # KeyError, not AttributeError, for any other name

sys.modules[__name__] = _Registry()
"""


def test_a_module_that_puts_an_object_of_its_own_in_sys_modules_imports_as_without_hooks(tmp_path):
    # GIVEN a watched module that replaces itself in sys.modules with an object whose
    # __getattr__ raises KeyError (importlib never asks it for anything)
    out = run(
        tmp_path,
        "ours",
        """
        register("swapped", lambda m: calls.append("hook"))
        import swapped
        out["handled"] = swapped.handler(None, None)
        register("swapped", lambda m: calls.append("hook, registered after"))
        out["calls"] = calls
        """,
        {"swapped": SWAPPED_FOR_A_REGISTRY},
    )
    # THEN it imports as it would without the hook (before: the hook's look at its __spec__
    # raised KeyError into the import, and the function's init failed)
    assert out["handled"] == {"ok": True}, out
    assert out["calls"] == ["hook, registered after"], out


def test_submodules_and_packages(tmp_path):
    out = run(
        tmp_path,
        "ours",
        'register("pkg.mod", lambda m: calls.append(m.__name__))\nregister("pkg", lambda m: calls.append(m.__name__))\nimport pkg.mod\nout["calls"] = calls\n',
        {"pkg.__init__": "", "pkg.mod": "X = 1\n"},
    )
    assert out["calls"] == ["pkg", "pkg.mod"]


@pytest.mark.parametrize("error", ["raise ValueError('at import')", "import no_such_module_anywhere", "1 / 0"])
@pytest.mark.parametrize("how", ["import_module", "import_statement"])
def test_no_frame_of_ours_in_an_import_error(tmp_path, error, how):
    # GIVEN a module that fails while it loads WHEN it is imported with and without the hook
    # registered THEN the traceback the importer sees is the same, frame for frame
    body = f"""
    register("broken", lambda m: None)
    try:
        {"importlib.import_module('broken')" if how == "import_module" else "import broken"}
    except BaseException as exc:
        out["frames"] = frames(exc)
        out["type"] = type(exc).__name__
    """
    bare = run(tmp_path, "none", body, {"broken": f"X = 1\n{error}\n"})
    hooked = run(tmp_path, "ours", body, {"broken": f"X = 1\n{error}\n"})
    assert hooked == bare
    wrapt = run(tmp_path, "wrapt", body, {"broken": f"X = 1\n{error}\n"})
    if how == "import_module":
        # (what wrapt's loader adds, for the record: the reason not to use it here)
        assert wrapt["frames"] != bare["frames"]


def test_a_child_forked_while_another_thread_registers_a_hook_can_import(tmp_path):
    # GIVEN a thread inside the hooks' registry (its lock held: a first import of a watched module
    # under way) at the moment the process forks
    out = run(
        tmp_path,
        "ours",
        """
        import os, threading, time
        from lambdawrap.handler import import_hooks

        inside, leave = threading.Event(), threading.Event()

        def busy():
            with import_hooks._lock:
                inside.set()
                leave.wait(30)

        threading.Thread(target=busy, daemon=True).start()
        inside.wait(30)
        pid = os.fork()
        if pid == 0:
            # WHEN the child imports a watched module of its own
            register("app", lambda m: calls.append(("hook", m.VALUE)))
            import app
            os._exit(0 if calls == [("hook", 42)] else 3)
        leave.set()
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        out["child"] = "hung" if status is None or not done else os.waitstatus_to_exitcode(status)
        """,
        {"app": "VALUE = 42\n"},
    )
    # THEN it does, and its hook runs (before: it waited forever for the lock its parent's
    # thread held at the fork)
    assert out["child"] == 0, out


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="importlib asks find_module finders before 3.12 only")
@pytest.mark.parametrize("kind", ["ours", "wrapt"])
def test_a_module_a_find_module_finder_serves_is_the_one_imported_and_hooked(tmp_path, kind):
    # GIVEN a finder with only the old find_module (a vendoring tool's) that serves `vend`, which
    # the path holds too
    out = run(
        tmp_path,
        kind,
        """
        import importlib.abc, importlib.machinery, warnings
        warnings.simplefilter("ignore", ImportWarning)

        class Vendored(importlib.abc.Loader):
            def create_module(self, spec):
                return None
            def exec_module(self, module):
                module.origin = "vendored"

        class OldFinder:
            def find_module(self, fullname, path=None):
                return Vendored() if fullname == "vend" else None

        sys.meta_path.insert(0, OldFinder())  # as a .pth file installs one, before the path
        register("vend", lambda module: calls.append(module.origin))
        import vend
        out["origin"], out["calls"] = vend.origin, calls
        """,
        {"vend": "origin = 'path'"},
    )
    # THEN importlib's choice stands: the vendored module, hooked (before: ours skipped the finder,
    # and the module on the path was imported)
    assert out == {"origin": "vendored", "calls": ["vendored"]}


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="importlib asks find_module finders before 3.12 only")
def test_a_module_an_old_load_module_loader_serves_is_imported_as_it_is(tmp_path):
    # GIVEN a find_module finder whose loader has only the old load_module (no exec_module)
    out = run(
        tmp_path,
        "ours",
        """
        import importlib.machinery, types, warnings
        warnings.simplefilter("ignore", ImportWarning)

        class OldLoader:
            def load_module(self, fullname):
                module = sys.modules.setdefault(fullname, types.ModuleType(fullname))
                module.origin = "vendored"
                return module

        class OldFinder:
            def find_module(self, fullname, path=None):
                return OldLoader() if fullname == "vend" else None

        sys.meta_path.insert(0, OldFinder())
        register("vend", lambda module: calls.append(module.origin))
        import vend
        out["origin"], out["spec"] = vend.origin, type(vend.__spec__) is importlib.machinery.ModuleSpec
        """,
        {"vend": "origin = 'path'"},
    )
    # THEN it is the vendored module, its spec as importlib made it (importlib runs such a
    # loader without telling the spec it is done: the hooks cannot run, and the module is not
    # instrumented)
    assert out == {"origin": "vendored", "spec": True}


@pytest.mark.parametrize("kind", ["ours", "wrapt"])
def test_another_thread_importing_the_module_waits_for_its_hooks(tmp_path, kind):
    out = run(
        tmp_path,
        kind,
        """
        import threading, time
        started = threading.Event()

        def hook(module):
            started.set()
            time.sleep(0.3)  # an instrumentation's first patch, which takes a moment
            module.PATCHED = True

        register("app", hook)

        def other():
            started.wait(30)
            import app
            out["other thread saw"] = app.PATCHED

        thread = threading.Thread(target=other)
        thread.start()
        import app
        thread.join(30)
        """,
        {"app": "PATCHED = False\n"},
    )
    # A thread importing the module while its hooks run gets it once they have run, as with
    # wrapt's hooks (before: at once, unpatched, its calls untraced)
    assert out["other thread saw"] is True


@pytest.mark.parametrize("kind", ["ours", "none"])
def test_a_finder_ahead_of_ours_is_asked_once_per_import(tmp_path, kind):
    out = run(
        tmp_path,
        kind,
        """
        register("app", lambda module: None)

        class Counting:
            asked = 0

            def find_spec(self, name, path=None, target=None):
                if name == "app":
                    Counting.asked += 1
                return None

        sys.meta_path.insert(0, Counting())
        import app
        out["asked"] = Counting.asked
        """,
        {"app": "VALUE = 1\n"},
    )
    # A finder of the function's that answers None is asked once, as without hooks (before:
    # twice, by importlib and again by ours)
    assert out["asked"] == 1


@pytest.mark.parametrize("kind", ["ours", "wrapt"])
def test_a_hook_registered_while_the_module_s_hooks_run_runs_too(tmp_path, kind):
    out = run(
        tmp_path,
        kind,
        """
        def first(module):
            calls.append("first")
            register("app", lambda module: calls.append("second"))

        register("app", first)
        import app
        out["calls"] = calls
        """,
        {"app": "VALUE = 1\n"},
    )
    # As wrapt's: the later hook runs once the module is there (before: it was filed after the
    # module's hooks were taken, and never ran)
    assert out["calls"] == ["first", "second"]


@pytest.mark.parametrize("kind", ["ours", "none"])
def test_a_finder_that_cannot_be_compared_ahead_of_ours_changes_nothing(tmp_path, kind):
    out = run(
        tmp_path,
        kind,
        """
        register("app", lambda module: calls.append("hook"))

        class Strict:
            def find_spec(self, name, path=None, target=None):
                return None

            def __eq__(self, other):
                raise TypeError("cannot compare")

            __hash__ = object.__hash__

        sys.meta_path.insert(0, Strict())
        import app
        out["value"] = app.VALUE
        out["calls"] = calls
        """,
        {"app": "VALUE = 1\n"},
    )
    assert out == {"value": 1, "calls": ["hook"] if kind == "ours" else []}


@pytest.mark.parametrize("kind", ["ours", "none"])
def test_importlib_util_find_spec_of_a_watched_module_gives_the_spec_it_gives_without_hooks(tmp_path, kind):
    out = run(
        tmp_path,
        kind,
        """
        import importlib.machinery, importlib.util, pickle
        register("app", lambda module: calls.append("hook"))

        class Counting:
            asked = 0

            def find_spec(self, name, path=None, target=None):
                if name in ("app", "absent"):
                    Counting.asked += 1
                return None

        sys.meta_path.append(Counting())
        spec = importlib.util.find_spec("app")
        out["class"] = type(spec) is importlib.machinery.ModuleSpec
        out["attributes"] = sorted(vars(spec))
        out["pickles"] = pickle.loads(pickle.dumps(spec)).name
        register("absent", lambda module: None)
        out["absent"] = importlib.util.find_spec("absent")
        out["asked"] = Counting.asked
        import app
        out["calls"] = calls
        """,
        {"app": "VALUE = 1\n"},
    )
    # Before: the spec handed back was of the watched class for good (its pickle failed), and a
    # finder after ours was asked twice for a name no finder serves.
    assert out["class"] is True and "_lambdawrap_class" not in out["attributes"]
    assert out["pickles"] == "app" and out["absent"] is None and out["asked"] == 1
    assert out["calls"] == (["hook"] if kind == "ours" else [])


def test_a_module_a_finder_ahead_of_ours_finds_through_the_meta_path_is_hooked(tmp_path):
    out = run(
        tmp_path,
        "ours",
        """
        register("app", lambda module: calls.append("hook"))

        class Delegating:
            def find_spec(self, name, path=None, target=None):
                if name != "app":
                    return None
                later = sys.meta_path[sys.meta_path.index(self) + 1 :]
                return next(spec for finder in later if (spec := finder.find_spec(name, path, target)) is not None)

        sys.meta_path.insert(0, Delegating())
        import app
        out["calls"] = calls
        """,
        {"app": "VALUE = 1\n"},
    )
    assert out["calls"] == ["hook"]


@pytest.mark.parametrize("kind", ["ours", "none"])
def test_a_finder_ahead_of_ours_that_asks_importlib_util_find_spec_imports_the_module_hooked(tmp_path, kind):
    out = run(
        tmp_path,
        kind,
        """
        import importlib.util
        register("app", lambda module: calls.append("hook"))

        class Watchdog:
            # As wrapt's post-import hook finder, ddtrace's and New Relic's watchdogs serve an
            # import: the spec importlib.util.find_spec gives, its loader wrapped
            busy = set()

            def find_spec(self, name, path=None, target=None):
                if name != "app" or name in self.busy:
                    return None
                self.busy.add(name)
                try:
                    return self.deep(name, 20)
                finally:
                    self.busy.discard(name)

            def deep(self, name, levels):
                # A watchdog's own frames between its finder and the lookup (wrappers, a cache)
                return self.deep(name, levels - 1) if levels else importlib.util.find_spec(name)

        sys.meta_path.insert(0, Watchdog())
        import prober
        out["probed"] = prober.FOUND
        out["calls_after_probe"] = list(calls)
        import app
        out["calls"] = calls
        """,
        {"app": "VALUE = 1\n", "prober": "import importlib.util\nFOUND = importlib.util.find_spec('app') is not None\n"},
    )
    # A module's probe while it loads finds the module and runs no hook; the import that the
    # watchdog serves runs them (before: it never did, the module imported untraced)
    assert out["probed"] is True and out["calls_after_probe"] == []
    assert out["calls"] == (["hook"] if kind == "ours" else [])


def test_a_module_wrapt_s_post_import_hook_also_waits_for_runs_both(tmp_path):
    out = run(
        tmp_path,
        "none",
        """
        import wrapt
        from lambdawrap.handler import import_hooks
        import_hooks.when_imported("app", lambda module: calls.append("ours"), lambda name: calls.append("failed"))
        # The function's (or aws_xray_sdk's) own: wrapt's finder goes ahead of ours
        wrapt.register_post_import_hook(lambda module: calls.append("wrapt"), "app")
        import app
        out["calls"] = sorted(calls)
        """,
        {"app": "VALUE = 1\n"},
    )
    assert out["calls"] == ["ours", "wrapt"]


@pytest.mark.parametrize("kind", ["ours", "wrapt"])
def test_a_module_loaded_lazily_from_importlib_util_find_spec_s_spec_is_hooked_once_used(tmp_path, kind):
    out = run(
        tmp_path,
        kind,
        """
        register("app", lambda module: calls.append(("hook", module.VALUE)))

        def caught_up():
            # lambdawrap's hooks run as the next invocation starts, wrapt's as the module runs
            if KIND == "ours":
                from lambdawrap.handler import import_hooks
                import_hooks.catch_up()
            return list(calls)

        module = lazy("app")
        out["unused"] = caught_up()
        out["ran_unused"] = "RAN" in sys.modules
        out["used"] = (module.VALUE, caught_up())
        out["again"] = caught_up()
        import app
        out["imported"] = caught_up()
        """,
        {"app": "import sys\nsys.modules['RAN'] = sys\nVALUE = 7\n"},
    )
    # GIVEN a watched module loaded lazily: its code runs at its first use
    # THEN nothing runs it before (the hooks wait for it), and its hooks run once after it ran
    # (before: lambdawrap's never ran, and its calls went untraced)
    assert out["unused"] == [] and out["ran_unused"] is False
    assert out["used"] == [7, [["hook", 7]]]
    assert out["again"] == out["imported"] == [["hook", 7]]


def test_a_lazy_module_another_thread_is_loading_is_hooked_once_it_has_loaded(tmp_path):
    out = run(
        tmp_path,
        "ours",
        """
        import builtins, threading
        from lambdawrap.handler import import_hooks
        builtins.STARTED, builtins.GO = threading.Event(), threading.Event()
        register("app", lambda module: calls.append(("hook", module.VALUE)))
        module = lazy("app")
        # A thread of the function's first uses it, its code still running as an invocation starts
        user = threading.Thread(target=lambda: module.VALUE)
        user.start()
        assert builtins.STARTED.wait(30)
        import_hooks.catch_up()
        out["while_loading"] = list(calls)
        builtins.GO.set()
        user.join(30)
        import_hooks.catch_up()
        out["loaded"] = list(calls)
        """,
        {"app": "import builtins\nbuiltins.STARTED.set()\nbuiltins.GO.wait(30)\nVALUE = 7\n"},
    )
    # THEN its hooks wait for its code to be done (before 3.13 it is no `_LazyModule` once its
    # code starts: hooked then, its classes not yet made, it stayed untraced for good)
    assert out == {"while_loading": [], "loaded": [["hook", 7]]}


def test_an_object_of_the_function_s_own_in_sys_modules_under_a_probed_name_is_left_alone(tmp_path):
    out = run(
        tmp_path,
        "ours",
        """
        import importlib.util
        from lambdawrap.handler import import_hooks

        class Guarded:
            def __getattribute__(self, name):
                raise KeyError(name)  # whatever it is asked, __class__ included

        register("app", lambda module: calls.append("hook"))
        out["probed"] = importlib.util.find_spec("app") is not None
        sys.modules["app"] = Guarded()
        import_hooks.catch_up()
        out["calls"] = calls
        """,
        {"app": "VALUE = 1\n"},
    )
    # GIVEN a watched name probed with importlib.util.find_spec, then an object of the function's
    # own put in sys.modules under it: THEN the next invocation's catch-up neither asks it
    # anything nor runs the hooks on it
    assert out == {"probed": True, "calls": []}
