"""own_stdlib.standard(): a standard module lambdawrap needs after the boot is the interpreter's,
and so is every module it imports, as it loads and later, whatever files of the same names the
function's folder holds; the function's own imports find what they find without the layer."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from conftest import ROOT
from support.python_versions import every_python

def _function_folder(tmp_path: Path, names: tuple) -> Path:
    """A function's folder holding a file of its own for each of `names`, saying when it runs."""
    task = tmp_path / "task"
    task.mkdir()
    for name in names:
        (task / f"{name}.py").write_text(f"import sys\nsys.stderr.write('the function s {name}.py ran\\n')\nOWN = {name!r}\n")
    return task


def _run(python: str, *args: str) -> subprocess.CompletedProcess:
    """A process of its own: what a process has imported decides what standard() loads."""
    return subprocess.run([python, *args], capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(ROOT / "src")})


FUNCTIONS_OWN = ("ipaddress", "unicodedata", "math", "socket", "calendar")  # it imports them last
SHADOWS = ("json", "ipaddress", "unicodedata", "math", "socket", "calendar", "email")

# Run in a process of its own: what a process has imported decides what standard() loads.
PROBE = textwrap.dedent(
    """
    import json as _json_module_of_the_probe, sys
    out = sys.stdout
    del sys.modules["json"]  # the function's process has not imported it
    for name in ("json.decoder", "json.scanner", "json.encoder", "_json"):
        sys.modules.pop(name, None)
    sys.path.insert(0, sys.argv[1])  # the function's folder, first on sys.path by now
    from lambdawrap.shared.own_stdlib import standard
    before = {name: sys.modules.get(name) for name in %(shadows)r}
    parse = standard("urllib.parse")
    host = parse.urlsplit("http://m\\u00e9triques.invalid:4317").hostname  # imports unicodedata
    json = standard("json")
    decoded = json.loads('{"a": [1, 2.5]}')
    dom = standard("xml.dom.minidom").parseString("<a><b/></a>")
    date = standard("email.utils").formatdate(0, usegmt=True)
    try:
        standard("no_such_module_anywhere")
        missing = None
    except ModuleNotFoundError as exc:
        missing = exc.name
    after = {name: sys.modules.get(name) for name in %(shadows)r}
    changed = [name for name in before if after[name] is not before[name]]
    import ipaddress, unicodedata, math, socket, calendar
    out.write(_json_module_of_the_probe.dumps({
        "host": host,
        "decoded": decoded,
        "decoder_bound": json.decoder.JSONDecodeError.__module__,
        "root": dom.documentElement.tagName + "/" + dom.documentElement.firstChild.tagName,
        "date": date,
        "missing": missing,
        "changed_in_sys_modules": changed,
        "functions_own": [getattr(module, "OWN", None) for module in (ipaddress, unicodedata, math, socket, calendar)],
    }) + "\\n")
    """
)


@every_python
def test_standard_modules_and_what_they_import_are_the_interpreter_s(tmp_path, interpreter):
    # GIVEN a function's folder holding files named like standard modules, each saying it ran
    task = _function_folder(tmp_path, SHADOWS)
    # WHEN lambdawrap has standard modules through standard(): urllib.parse (whose urlsplit
    # imports unicodedata for a host not in ASCII), a package the process had not imported
    # (json, with its relative imports), a package's module (xml.dom.minidom: `from xml.dom
    # import domreg`), one importing modules that look themselves up in sys.modules as they
    # load (email.utils: socket, calendar)
    done = _run(interpreter.path, "-c", PROBE % {"shadows": SHADOWS}, str(task))
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    ran = [line for line in done.stderr.splitlines() if line.endswith(".py ran")]
    # THEN each works as the standard one does, none of the function's files ran before the
    # function's own imports (before: urlsplit's `import unicodedata` ran the function's file,
    # and json's relative imports failed), nothing of those names was left in sys.modules, and
    # the function's imports then find its own files
    assert seen["host"] == "m\u00e9triques.invalid"
    assert seen["decoded"] == {"a": [1, 2.5]} and seen["decoder_bound"] == "json.decoder"
    assert seen["root"] == "a/b" and seen["date"] == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert seen["missing"] == "no_such_module_anywhere"
    assert seen["changed_in_sys_modules"] == []
    assert seen["functions_own"] == list(FUNCTIONS_OWN)
    assert ran == [f"the function s {name}.py ran" for name in FUNCTIONS_OWN], ran


# Threads started together, in a probe's process.
AT_ONCE = textwrap.dedent(
    """
    import threading

    def at_once(target, count):
        go = threading.Event()

        def run():
            go.wait()
            target()

        threads = [threading.Thread(target=run) for _ in range(count)]
        for thread in threads:
            thread.start()
        go.set()
        return threads
    """
)

# The function's threads import what standard() is loading, at the same moment.
RACE = AT_ONCE + textwrap.dedent(
    """
    import sys
    from lambdawrap.shared.own_stdlib import standard
    errors = []

    def function_thread():
        try:
            import calendar, socket
            assert calendar.month_name[1] == "January" and socket.AF_INET, "half made"
        except Exception as exc:
            errors.append(repr(exc))

    threads = at_once(function_thread, 4)
    try:
        assert standard("email.utils").formatdate(0, usegmt=True).endswith("1970 00:00:00 GMT")
        assert standard("calendar").month_name[1] == "January"
    except Exception as exc:
        errors.append("lambdawrap's: " + repr(exc))
    for thread in threads:
        thread.join()
    print(errors)
    """
)

def test_a_module_imported_while_lambdawrap_loads_it_is_whole_for_both():
    # GIVEN processes whose threads import calendar and socket as lambdawrap loads email.utils
    # (which imports both, and they stand in sys.modules as they load) WHEN run 20 times
    outcomes = [_run(sys.executable, "-c", RACE) for _ in range(20)]
    # THEN each thread's module and lambdawrap's are whole (lambdawrap's put in sys.modules
    # under its own name as it loaded: without the import system's lock of the name, 5 of 60
    # such processes failed, lambdawrap's re looked up in the place of a thread's, NameError
    # 'T'; with it, the review's forced timing gave a thread lambdawrap's urllib.parse, and a
    # `urllib` without `parse`)
    assert [(o.returncode, o.stdout.strip(), o.stderr[-300:]) for o in outcomes] == [(0, "[]", "")] * 20


DESCRIBES = textwrap.dedent(
    """
    import json, sys
    before = set(sys.modules)
    from lambdawrap.handler.invocation import describe_exception
    sys.path.insert(0, sys.argv[1])  # the function's folder, first on sys.path by now
    imported = set(sys.modules)

    def handler():
        return {"caf\u00e9": 1}["th\u00e9"] + 1  # carets under text not in ASCII

    try:
        handler()
    except KeyError as exc:
        stack = describe_exception(exc)["stack"]
    print(json.dumps({"stack_end": stack.splitlines()[-3:], "new": sorted(set(sys.modules) - imported)}))
    """
)


@every_python
def test_describing_an_exception_runs_none_of_the_function_s_files(tmp_path, interpreter):
    # GIVEN a function's folder holding files named like what formatting a stack imports
    # (ast and unicodedata from 3.11, linecache's tokenize from 3.13), none imported yet
    task = _function_folder(tmp_path, ("ast", "unicodedata", "tokenize"))
    script = tmp_path / "describes.py"  # a file: linecache reads the raising line from it
    script.write_text(DESCRIBES)
    # WHEN lambdawrap describes an exception raised in the function's code
    done = _run(interpreter.path, str(script), str(task))
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    # THEN the stack is as Python prints it, none of the function's files ran, and nothing was
    # left in sys.modules (before, on 3.13: linecache's `import tokenize` ran the function's
    # tokenize.py, left in sys.modules, and the stack came out empty)
    assert seen["stack_end"][-1:] == ["KeyError: 'th\u00e9'"] and any("[\"th\u00e9\"] + 1" in line for line in seen["stack_end"]), seen
    assert "ran" not in done.stderr, done.stderr
    assert [name for name in seen["new"] if name in ("ast", "unicodedata", "tokenize")] == [], seen["new"]


# Two threads of lambdawrap's (a handler's thread pool, each call's S3 key escaped) load the
# same module at once; then the function's own modules, imported first, stand in sys.modules.
TWO_LOADS = AT_ONCE + textwrap.dedent(
    """
    import json, random, sys, time
    sys.path.insert(0, sys.argv[1])  # the function's folder, first on sys.path by now
    import socket, calendar  # the function's own files, imported by its code
    import importlib.machinery, importlib.util  # standard()'s own, which the boot has loaded
    from lambdawrap.shared.own_stdlib import standard
    before = dict(sys.modules)
    got = []

    def load():
        time.sleep(random.random() * 0.008)
        try:
            got.append(standard("urllib.parse").unquote_plus("2024+Q1%20summary.csv"))
        except Exception as exc:
            got.append(repr(exc))

    for thread in at_once(load, 2):
        thread.join()
    private_socket, private_calendar = standard("socket"), standard("calendar")
    print(json.dumps({
        "got": got,
        # What a function's file can stand for: a top-level name (a standard package's module is
        # found in that package's folder), not an extension module of one phase (_socket),
        # which is put there as it is made, wherever made.
        "changed": sorted(name for name in set(before) | set(sys.modules) if before.get(name) is not sys.modules.get(name) and not name.startswith("_") and "." not in name),
        "functions_untouched": [sorted(vars(module)) == ["OWN", "__builtins__", "__cached__", "__doc__", "__file__", "__loader__", "__name__", "__package__", "__spec__", "sys"] for module in (socket, calendar)],
        "private_whole": [private_socket.AF_INET.name, private_calendar.month_name[1]],
    }))
    """
)


@every_python
def test_lambdawrap_s_threads_loading_one_module_at_once_each_get_it_whole(tmp_path, interpreter):
    # GIVEN a function's folder holding an `ipaddress.py` (urllib.parse imports ipaddress) and a
    # `socket.py` and `calendar.py` the function has imported
    task = _function_folder(tmp_path, ("ipaddress", "socket", "calendar"))
    # WHEN two of lambdawrap's threads load urllib.parse at once, and then the standard socket
    # and calendar, whose enums look their module up in sys.modules by its name as it loads;
    # 15 processes
    runs = [_run(interpreter.path, "-c", TWO_LOADS, str(task)) for _ in range(15)]
    # THEN each thread gets the key decoded, the function's ipaddress.py never runs (its socket
    # and calendar only as it imports them), nothing in sys.modules changes, the function's
    # modules get none of the standard ones' names, and lambdawrap's are whole (a module put
    # in sys.modules under its own name as it loads: a second thread's load ran the function's
    # ipaddress.py; under one name for both loads, re came out half made; run where the
    # function's module stood, socket's enums went into the function's module)
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert run.stderr.splitlines() == ["the function s socket.py ran", "the function s calendar.py ran"], run.stderr
        seen = json.loads(run.stdout)
        assert seen == {"got": ["2024 Q1 summary.csv"] * 2, "changed": [], "functions_untouched": [True, True], "private_whole": ["AF_INET", "January"]}, seen


# Source lines the function's code serves for code it generated: registered in linecache's
# cache (attrs, dataclass-style generators), or through a getlines of its own (doctest's, for
# its examples), in a process that had no linecache at lambdawrap's first description.
SERVED_LINES = textwrap.dedent(
    """
    import json, sys
    from lambdawrap.handler.invocation import describe_exception
    assert "linecache" not in sys.modules, "the probe's process had one already"
    try:
        {}["first"]
    except KeyError as exc:
        describe_exception(exc)  # before the process has a linecache
    import linecache, traceback

    def both(source, filename):
        namespace = {}
        exec(compile(source, filename, "exec"), namespace)
        try:
            namespace["generated"]({"a": {}})
        except KeyError as exc:
            printed = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            return [describe_exception(exc)["stack"], printed]

    registered = "def generated(d):\\n    return d['a']['registered']\\n"
    linecache.cache["<generated>"] = (len(registered), None, registered.splitlines(True), "<generated>")
    served = "def generated(d):\\n    return d['a']['served']\\n"
    process_getlines = linecache.getlines
    linecache.getlines = lambda filename, module_globals=None: served.splitlines(True) if filename == "<doctest example>" else process_getlines(filename, module_globals)
    print(json.dumps({"registered": both(registered, "<generated>"), "served": both(served, "<doctest example>")}))
    """
)


@every_python
def test_source_lines_the_function_s_code_serves_are_in_the_stack_as_python_prints_them(tmp_path, interpreter):
    # GIVEN a process without linecache when lambdawrap first describes an exception, whose code
    # then registers a generated function's source in linecache's cache, and serves another's
    # through a getlines of its own, as doctest does
    # WHEN lambdawrap describes the errors both raise
    script = tmp_path / "serves.py"  # a file: 3.13 loads linecache at start-up for `-c`
    script.write_text(SERVED_LINES)
    done = _run(interpreter.path, str(script))
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    # THEN each stack is the one Python prints, with the line of code (the review's: before, a
    # linecache of lambdawrap's own was kept from the first description, and the registered
    # line was missing; on 3.13 the served one too)
    for case, (described, printed) in seen.items():
        assert described == printed and f"return d['a']['{case}']" in printed, (case, described, printed)
