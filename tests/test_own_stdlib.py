"""own_stdlib.standard(): a standard module lambdawrap needs after the boot is the interpreter's,
and so is every module it imports, as it loads and later, whatever files of the same names the
function's folder holds; the function's own imports find what they find without the layer."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from conftest import ROOT
from support.python_versions import every_python

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
    task = tmp_path / "task"
    task.mkdir()
    for name in SHADOWS:
        (task / f"{name}.py").write_text(f"import sys\nsys.stderr.write('the function s {name}.py ran\\n')\nOWN = {name!r}\n")
    # WHEN lambdawrap has standard modules through standard(): urllib.parse (whose urlsplit
    # imports unicodedata for a host not in ASCII), a package the process had not imported
    # (json, with its relative imports), a package's module (xml.dom.minidom: `from xml.dom
    # import domreg`), one importing modules that look themselves up in sys.modules as they
    # load (email.utils: socket, calendar)
    done = subprocess.run([interpreter.path, "-c", PROBE % {"shadows": SHADOWS}, str(task)], capture_output=True, text=True, timeout=120, cwd=tmp_path, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
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


# The function's threads import what standard() is loading, at the same moment.
RACE = textwrap.dedent(
    """
    import sys, threading
    from lambdawrap.shared.own_stdlib import standard
    errors = []
    go = threading.Event()

    def function_thread():
        go.wait()
        try:
            import calendar, socket
            assert calendar.month_name[1] == "January" and socket.AF_INET, "half made"
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=function_thread) for _ in range(4)]
    for thread in threads:
        thread.start()
    go.set()
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
    outcomes = [subprocess.run([sys.executable, "-c", RACE], capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(ROOT / "src")}) for _ in range(20)]
    # THEN each thread's module and lambdawrap's are whole (a module put in sys.modules as it
    # loads without the import system's lock of its name failed 5 of 60 such processes: a
    # thread's import put its own there meanwhile, and lambdawrap's re was looked up in its
    # place, NameError 'T')
    assert [(o.returncode, o.stdout.strip(), o.stderr[-300:]) for o in outcomes] == [(0, "[]", "")] * 20
