"""The shell launchers read lambdawrap's variables exactly as the settings object does.

layer/wrapper.sh (the exec wrapper) and layer/extensions/lambdawrap (the companion's launcher)
run before any Python of ours; each decision they take from a variable is compared here with
`Settings.from_env` on the same value, and a bad value must never stop the function.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from lambdawrap.shared.settings import FALSE_WORDS, TRUE_WORDS, Settings
from support.extensions_api import ExtensionsApi
from support.stub_runtimes import env_named_python, script_named_python

LAYER = Path(__file__).resolve().parent.parent / "layer"
WRAPPER = LAYER / "wrapper.sh"
LAUNCHER = LAYER / "extensions" / "lambdawrap"

# Every documented spelling, in other cases and with blanks around, and values that are none.
BOOLEAN_SPELLINGS = sorted(
    {w for word in TRUE_WORDS + FALSE_WORDS for w in (word, word.upper(), word.title(), f" {word}\t", f"\t{word.upper()} ")}
    | {"maybe", "2", "tru", "y", "enable", "true!", "o n", "-1", "nope"}
    # Blanks the shell's [:space:] does not hold (str.strip() drops them)
    | {"\u00a0true", "true\x1f", "\u2003ON", "yes\u3000", "\x1c1"}
)


def run_wrapper(env: dict) -> dict:
    """The environment the runtime would be exec'd with."""
    with tempfile.TemporaryDirectory() as folder:
        out = subprocess.run([str(WRAPPER), env_named_python(Path(folder))], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, check=True, timeout=30)
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


@pytest.mark.parametrize("value", BOOLEAN_SPELLINGS)
def test_wrapper_reads_disabled_as_the_settings_do(value):
    # GIVEN LAMBDAWRAP_DISABLED spelled some way WHEN the wrapper runs THEN it boots lambdawrap
    # exactly when the settings say lambdawrap is on
    env = run_wrapper({"LAMBDAWRAP_DISABLED": value})
    assert ("LAMBDAWRAP_BOOT_DIR" not in env) is Settings.from_env({"LAMBDAWRAP_DISABLED": value}, warn=False).disabled, value


# The wrapper runs under /bin/sh: bash on Lambda's images, dash on others.
SHELLS = [pytest.param(shell, marks=pytest.mark.skipif(shutil.which(shell) is None, reason=f"no {shell}")) for shell in ("bash", "dash")]
# A runtime that shows what it was started with; its arguments are the ones a shell could bend.
RUNTIME = '#!/bin/sh\nprintf "arg:%s\\n" "$@"\necho "boot:${LAMBDAWRAP_BOOT_DIR-}"\necho "chained:${CHAINED-}"\n'
RUNTIME_ARGS = ["two  words", "", "-e", "*", "a\tb"]
NEXT_BODY = 'export CHAINED=yes\nexec "$@"\n'


def run_with_next_wrapper(tmp_path: Path, shell: str, value: str) -> tuple[subprocess.CompletedProcess, list, list]:
    """The wrapper run by `shell` with LAMBDAWRAP_NEXT_WRAPPER=value: what the runtime printed, and the warnings."""
    runtime = script_named_python(tmp_path, RUNTIME)
    env = {"PATH": "/usr/bin:/bin", "LAMBDAWRAP_NEXT_WRAPPER": value}
    # A short timeout: some of these next wrappers exec env, which execs them again, for ever.
    out = subprocess.run([shell, str(WRAPPER), str(runtime), *RUNTIME_ARGS], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=10)
    warnings = [line for line in out.stderr.splitlines() if "LAMBDAWRAP_NEXT_WRAPPER" in line]
    return out, out.stdout.splitlines(), warnings


def runtime_lines(chained: bool) -> list:
    return [f"arg:{arg}" for arg in RUNTIME_ARGS] + [f"boot:{LAYER}/python/lambdawrap_boot", f"chained:{'yes' if chained else ''}"]


# Next wrappers that cannot run, or would never exec the runtime: (the file's text, its mode),
# None for no file. Before, the check passed those after "missing interpreter" and the runtime
# never started (the exit status of each in its comment).
CANNOT_RUN = {
    "missing": (None, 0o755),
    "not executable": ("#!/bin/sh\n" + NEXT_BODY, 0o644),
    "missing interpreter": ("#!/no/such/shell\n" + NEXT_BODY, 0o755),
    # A first line with no newline after it names its interpreter all the same.
    "missing interpreter, one line": ("#!/no/such/shell", 0o755),
    # Windows line ends: the kernel looks for "/bin/sh\r" (127), or hands sh "-e\r" (2).
    "CRLF": ("#!/bin/sh\r\n" + NEXT_BODY.replace("\n", "\r\n"), 0o755),
    "CRLF after an argument": ("#!/bin/sh -e\r\n" + NEXT_BODY.replace("\n", "\r\n"), 0o755),
    "a folder as interpreter": ("#!/usr/bin\n" + NEXT_BODY, 0o755),  # 126
    "env, command not found": ("#!/usr/bin/env no-such-interp-xyz\n" + NEXT_BODY, 0o755),  # 127
    "env -S, command not found": ("#!/usr/bin/env -S -u HOME FOO=1 no-such-interp-xyz -e\n" + NEXT_BODY, 0o755),  # 127
    # The kernel hands env the rest of the line as one argument: no command "sh -e" (127)...
    "env, options without -S": ("#!/usr/bin/env sh -e\n" + NEXT_BODY, 0o755),
    # ...and with no command, env runs the next wrapper again, which execs env again, for ever.
    "env, no command": ("#!/usr/bin/env\n" + NEXT_BODY, 0o755),
    "env, a variable without -S": ("#!/usr/bin/env FOO=1 sh\n" + NEXT_BODY, 0o755),
    # The shell runs an empty file as an empty script: 0, without the runtime.
    "empty": ("", 0o755),
}


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("shape", list(CANNOT_RUN))
def test_wrapper_ignores_a_next_wrapper_that_cannot_run(tmp_path, shell, shape):
    # GIVEN a next wrapper that cannot run, or would not start the runtime
    text, mode = CANNOT_RUN[shape]
    nxt = tmp_path / "next.sh"
    if text is not None:
        nxt.write_bytes(text.encode())
        nxt.chmod(mode)
    # WHEN the wrapper runs
    out, lines, warnings = run_with_next_wrapper(tmp_path, shell, str(nxt))
    # THEN one warning, and the runtime starts, instrumented, with its arguments as they were
    assert out.returncode == 0 and lines == runtime_lines(chained=False), out
    assert warnings == [f"lambdawrap: ignoring LAMBDAWRAP_NEXT_WRAPPER='{nxt}' (not an executable file); using the default (none)"], out.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_wrapper_ignores_a_next_wrapper_the_function_s_user_cannot_read(shell):
    # GIVEN a next wrapper script the function's user may run but not read (Lambda runs the
    # function as a user that owns none of its files): the shell its #! names cannot open it
    folder = Path(tempfile.mkdtemp(prefix="lw-unreadable-"))
    try:
        folder.chmod(0o755)
        runtime = script_named_python(folder, RUNTIME)
        nxt = folder / "next.sh"
        nxt.write_text("#!/bin/sh\n" + NEXT_BODY)
        nxt.chmod(0o111)
        # WHEN the wrapper runs as that user (as root: nobody, whom no mode bit stops otherwise)
        out = subprocess.run([shell, str(WRAPPER), str(runtime), *RUNTIME_ARGS], env={"PATH": "/usr/bin:/bin", "LAMBDAWRAP_NEXT_WRAPPER": str(nxt)}, cwd=folder, capture_output=True, text=True, timeout=30, user=65534 if os.getuid() == 0 else None)
    finally:
        shutil.rmtree(folder)
    # THEN one warning saying why, and the runtime starts, instrumented (before: the shell could
    # not open it, and the runtime never started)
    assert out.returncode == 0 and out.stdout.splitlines() == runtime_lines(chained=False), out
    assert out.stderr.splitlines() == [f"lambdawrap: ignoring LAMBDAWRAP_NEXT_WRAPPER='{nxt}' (not readable by this user); using the default (none)"], out.stderr


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("value", ["tools\\cnext.sh", "C:\\new\\wrap.sh"])
def test_a_warning_names_a_value_with_backslashes_as_it_is(tmp_path, shell, value):
    # GIVEN a next wrapper named with backslashes (a Windows path, a typo), which cannot run
    out, lines, warnings = run_with_next_wrapper(tmp_path, shell, value)
    # THEN the warning names it as it was written, on a line of its own (before, under dash,
    # echo read "\c" as "stop here" and "\n" as a line break)
    assert out.stderr.splitlines() == [f"lambdawrap: ignoring LAMBDAWRAP_NEXT_WRAPPER='{value}' (not an executable file); using the default (none)"], out.stderr
    assert out.returncode == 0 and lines == runtime_lines(chained=False), out


@pytest.mark.parametrize("shell", SHELLS)
def test_a_blank_next_wrapper_is_none(tmp_path, shell):
    out, lines, warnings = run_with_next_wrapper(tmp_path, shell, "   ")
    assert out.returncode == 0 and lines == runtime_lines(chained=False) and not warnings, out


def _env_splits() -> bool:
    return subprocess.run(["/usr/bin/env", "-S", "true"], capture_output=True).returncode == 0


# Next wrappers that run: the check must not turn them away.
RUNS = {
    "sh": "#!/bin/sh\n",
    "an argument": "#!/bin/sh -e\n",
    "blanks around": "#! \t/bin/sh -e \t\n",
    "env": "#!/usr/bin/env sh\n",
    "env -S": "#!/usr/bin/env -S -u HOME FOO=1 sh -e\n",
    "env -S with -C": "#!/usr/bin/env -S -C / sh\n",
    "no #! line": "",  # the shell runs it as a script of its own
}


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("shape", [pytest.param(shape, marks=pytest.mark.skipif("-S" in shape and not _env_splits(), reason="env without -S")) for shape in RUNS])
def test_wrapper_chains_to_a_next_wrapper_that_runs(tmp_path, shell, shape):
    # GIVEN a next wrapper that runs WHEN the wrapper runs THEN it chains to it, without a
    # warning, and the runtime starts with its arguments as they were
    nxt = tmp_path / "next.sh"
    nxt.write_text(RUNS[shape] + NEXT_BODY)
    nxt.chmod(0o755)
    out, lines, warnings = run_with_next_wrapper(tmp_path, shell, str(nxt))
    assert out.returncode == 0 and lines == runtime_lines(chained=True) and not warnings, out


@pytest.mark.parametrize("disabled", ["", "true"])
def test_wrapper_does_not_chain_to_itself(tmp_path, disabled):
    # GIVEN LAMBDAWRAP_NEXT_WRAPPER naming lambdawrap's own wrapper (through another spelling of
    # its path) WHEN the wrapper runs THEN one warning, and the runtime starts (it used to exec
    # itself until PYTHONPATH outgrew exec's limit, and the runtime exited with status 126)
    env = {"PATH": "/usr/bin:/bin", "LAMBDAWRAP_DISABLED": disabled, "LAMBDAWRAP_NEXT_WRAPPER": f"{LAYER}/./wrapper.sh"}
    out = subprocess.run([str(WRAPPER), env_named_python(tmp_path)], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and ("LAMBDAWRAP_BOOT_DIR=" in out.stdout) is not bool(disabled), out
    warnings = [line for line in out.stderr.splitlines() if "LAMBDAWRAP_NEXT_WRAPPER" in line]
    assert len(warnings) == 1 and "using the default (none)" in warnings[0], out.stderr


@pytest.mark.parametrize("disabled", ["", "true"])
def test_a_next_wrapper_named_without_a_folder_is_the_file_in_the_working_folder(tmp_path, disabled):
    # GIVEN LAMBDAWRAP_NEXT_WRAPPER=wrap.sh, a file in the working folder (/var/task on Lambda),
    # and a program of that name on PATH WHEN the wrapper runs THEN it chains to the file it
    # checked (before: exec looked the name up on PATH, so the runtime never started, exit 127,
    # or another program ran)
    task = tmp_path / "task"
    task.mkdir()
    (task / "wrap.sh").write_text('#!/bin/sh\nexport CHAINED=task\nexec "$@"\n')
    (task / "wrap.sh").chmod(0o755)
    elsewhere = tmp_path / "bin"
    elsewhere.mkdir()
    (elsewhere / "wrap.sh").write_text('#!/bin/sh\nexport CHAINED=path\nexec "$@"\n')
    (elsewhere / "wrap.sh").chmod(0o755)
    env = {"PATH": f"{elsewhere}:/usr/bin:/bin", "LAMBDAWRAP_DISABLED": disabled, "LAMBDAWRAP_NEXT_WRAPPER": "wrap.sh"}
    out = subprocess.run([str(WRAPPER), env_named_python(tmp_path)], env=env, cwd=task, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "CHAINED=task" in out.stdout.splitlines(), out
    assert "LAMBDAWRAP_NEXT_WRAPPER" not in out.stderr
    # ... and one the working folder does not hold is named as given in the one warning
    out = subprocess.run([str(WRAPPER), env_named_python(tmp_path)], env={**env, "LAMBDAWRAP_NEXT_WRAPPER": "other.sh"}, cwd=task, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "CHAINED" not in out.stdout
    assert [line for line in out.stderr.splitlines() if "LAMBDAWRAP_NEXT_WRAPPER" in line] == ["lambdawrap: ignoring LAMBDAWRAP_NEXT_WRAPPER='other.sh' (not an executable file); using the default (none)"]


# Other languages' runtimes as their bootstraps start them, some arguments naming Python.
OTHER_RUNTIMES = {
    "node": ["--expose-gc", "/var/runtime/index.mjs"],
    "java": ["-Dpython.home=/opt/python3", "-cp", "/var/runtime/lib/*", "python3.Handler::handleRequest"],
    # ... behind a command a wrapper of the user's put in front
    "env": ["FOO=1", "java", "-Dpython.home=/opt/python3", "python3.Handler::handleRequest"],
}


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("chained", [False, True])
@pytest.mark.parametrize("language", list(OTHER_RUNTIMES))
def test_another_language_s_runtime_starts_as_without_the_layer(tmp_path, shell, chained, language):
    # GIVEN the wrapper set for a function of another language (one setting for the functions
    # of several), whose runtime starts Python programs of its own: a runtime named as that
    # language's, that prints its arguments and the environment it was given
    node = tmp_path / language
    node.write_text('#!/bin/sh\nprintf "arg:%s\\n" "$@"\nenv\n')
    node.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": "/mine"}
    if chained:
        nxt = tmp_path / "next.sh"
        nxt.write_text("#!/bin/sh\n" + NEXT_BODY)
        nxt.chmod(0o755)
        env["LAMBDAWRAP_NEXT_WRAPPER"] = str(nxt)
    # WHEN the runtime starts through the wrapper
    out = subprocess.run([shell, str(WRAPPER), str(node), *OTHER_RUNTIMES[language]], env=env, capture_output=True, text=True, timeout=30)
    # THEN it gets its arguments and the environment it gets without the layer (the next wrapper
    # still runs, handed the runtime itself), and one line says why (before: PYTHONPATH led
    # every Python program it started to our boot, which took it for the function's runtime)
    lines = out.stdout.splitlines()
    started = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("arg:"))
    assert out.returncode == 0 and [line for line in lines if line.startswith("arg:")] == [f"arg:{arg}" for arg in OTHER_RUNTIMES[language]], out
    assert started["PYTHONPATH"] == "/mine" and not [k for k in started if k.startswith("LAMBDAWRAP_") and k != "LAMBDAWRAP_NEXT_WRAPPER"], started
    assert started.get("CHAINED") == ("yes" if chained else None)
    assert out.stderr.splitlines() == [f"lambdawrap: not instrumenting, the runtime '{node}' is not a Python interpreter (lambdawrap instruments Python functions)"], out.stderr


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("options", [[], ["-X", "importtime"]])
@pytest.mark.parametrize("front", [[], ["/usr/bin/env", "FOO=1", "PYTHONHOME_HINT=/opt/python3"], ["nice", "-n", "5"]])
def test_a_python_runtime_behind_a_command_of_a_user_s_wrapper_is_instrumented(tmp_path, shell, front, options):
    # GIVEN a wrapper of the user's, chained before ours, that puts a command in front of the
    # interpreter the runtime handed it (`exec /opt/wrapper.sh env FOO=1 "$@"`)
    runtime = script_named_python(tmp_path, RUNTIME + 'echo "script:${LAMBDAWRAP_RUNTIME_SCRIPT-}"\n')
    script = tmp_path / "bootstrap.py"
    script.write_text("")
    out = subprocess.run([shell, str(WRAPPER), *front, str(runtime), *options, str(script), *RUNTIME_ARGS], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=30)
    # THEN the Python runtime behind it is instrumented, without a word, its script known past
    # the interpreter's options (only the process that runs it is the function's runtime)
    expected = [f"arg:{option}" for option in options] + [f"arg:{script}", *runtime_lines(chained=False), f"script:{script}"]
    assert out.returncode == 0 and out.stdout.splitlines() == expected and out.stderr == "", out


@pytest.mark.parametrize("shell", SHELLS)
def test_another_copy_of_the_wrapper_chained_after_ours_says_nothing_of_the_runtime(tmp_path, shell):
    # GIVEN LAMBDAWRAP_NEXT_WRAPPER naming another copy of this wrapper (a second layer's)
    copy = tmp_path / "other-layer" / "wrapper.sh"
    copy.parent.mkdir()
    shutil.copy2(WRAPPER, copy)
    runtime = script_named_python(tmp_path, RUNTIME)
    out = subprocess.run([shell, str(WRAPPER), str(runtime), *RUNTIME_ARGS], env={"PATH": "/usr/bin:/bin", "LAMBDAWRAP_NEXT_WRAPPER": str(copy)}, capture_output=True, text=True, timeout=30)
    # THEN it takes the Python runtime it is handed for one (it is given ours, the interpreter
    # in our variable): the runtime starts, and no line calls it another language's
    assert out.returncode == 0 and "not a Python interpreter" not in out.stderr, out
    assert [line for line in out.stdout.splitlines() if line.startswith("arg:")] == [f"arg:{arg}" for arg in RUNTIME_ARGS], out


def test_wrapper_chains_when_disabled_too(tmp_path):
    # Another product's wrapper keeps working when lambdawrap is switched off.
    nxt = tmp_path / "next.sh"
    nxt.write_text('#!/bin/sh\nexport CHAINED=yes\nexec "$@"\n')
    nxt.chmod(0o755)
    env = run_wrapper({"LAMBDAWRAP_DISABLED": "true", "LAMBDAWRAP_NEXT_WRAPPER": f" {nxt} "})
    assert env["CHAINED"] == "yes" and "LAMBDAWRAP_BOOT_DIR" not in env


@pytest.fixture
def extensions_api():
    api = ExtensionsApi()
    yield api
    api.close()


def run_launcher(api: ExtensionsApi, tmp_path: Path, env: dict, launcher: Path = LAUNCHER, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The launcher with `python3` standing for a stub that prints how it was started (and, on
    a second line, where and with which PYTHONPATH)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "python3"
    stub.write_text('#!/bin/sh\ncase " $* " in *" -c "*) echo True; exit 0 ;; esac\necho "STARTED $0 $*"\necho "IN $(pwd) WITH ${PYTHONPATH-unset}"\n')
    stub.chmod(0o755)
    return subprocess.run([str(launcher)], env={"PATH": f"{bin_dir}:/usr/bin:/bin", "AWS_LAMBDA_RUNTIME_API": api.address, **env}, capture_output=True, text=True, timeout=30, cwd=cwd)


@pytest.mark.parametrize("built", [False, True], ids=["source layer", "built layer"])
def test_launcher_starts_the_companion_where_the_functions_packages_cannot_shadow_its_own(extensions_api, tmp_path, built):
    # GIVEN the extension started from the function's folder, which holds packages of the
    # function's own (an opentelemetry, a protobuf), called by a relative path
    task = tmp_path / "task"
    (task / "opentelemetry").mkdir(parents=True)
    layer = tmp_path / "layer"
    (layer / "extensions").mkdir(parents=True)
    shutil.copy(LAUNCHER, layer / "extensions" / "lambdawrap")
    if built:
        (layer / "lambdawrap" / "companion-lib").mkdir(parents=True)
    out = run_launcher(extensions_api, tmp_path, {}, launcher=Path(os.path.relpath(layer / "extensions" / "lambdawrap", task)), cwd=task)
    # THEN the companion starts (`python -m`, which puts its working folder first on sys.path)
    # in its own dependencies' folder, named absolutely, or at the root: never the function's;
    # ignoring the function's PYTHON* variables (-E), its PYTHONPATH among them
    started, where = out.stdout.splitlines()[-2:]
    private = (layer / "lambdawrap" / "companion-lib").resolve()
    assert where == (f"IN {private} WITH unset" if built else "IN / WITH unset"), out
    assert started.endswith(" -E -s -m lambdawrap.companion lambdawrap"), out


@pytest.mark.parametrize("link", ["absolute", "relative", "chained", "up-from-a-linked-folder"])
def test_launcher_reached_through_a_symlink_starts_the_companion_from_the_layer_it_links_to(extensions_api, tmp_path, link):
    # GIVEN the built layer copied somewhere else (a container image), and the platform's
    # extensions folder holding a symlink to its launcher (absolute, relative, a link to a link,
    # or to a relative link whose `..` climb out of a folder reached through a symlink: the
    # kernel climbs from the folder linked to, a path's text from the link)
    layer = tmp_path / "image" / "lambdawrap-layer"
    (layer / "extensions").mkdir(parents=True)
    shutil.copy(LAUNCHER, layer / "extensions" / "lambdawrap")
    (layer / "lambdawrap" / "companion-lib").mkdir(parents=True)
    extensions = tmp_path / "opt" / "extensions"
    extensions.mkdir(parents=True)
    target = layer / "extensions" / "lambdawrap"
    if link == "relative":
        (extensions / "lambdawrap").symlink_to(os.path.relpath(target, extensions))
    elif link == "chained":
        (tmp_path / "opt" / "hop").symlink_to(target)
        (extensions / "lambdawrap").symlink_to("../hop")
    elif link == "up-from-a-linked-folder":
        deeper = tmp_path / "image" / "stage" / "deeper"
        deeper.mkdir(parents=True)
        (deeper / "lambdawrap").symlink_to(os.path.relpath(target, deeper))
        (tmp_path / "opt" / "shortcut").symlink_to(deeper, target_is_directory=True)
        (extensions / "lambdawrap").symlink_to("../shortcut/lambdawrap")
        # where the path's text leads: another (older) copy of the layer
        (tmp_path / "lambdawrap-layer" / "extensions").mkdir(parents=True)
        (tmp_path / "lambdawrap-layer" / "lambdawrap" / "companion-lib").mkdir(parents=True)
    else:
        (extensions / "lambdawrap").symlink_to(target)
    # WHEN the platform starts it by the link's path
    out = run_launcher(extensions_api, tmp_path, {}, launcher=extensions / "lambdawrap", cwd=tmp_path)
    # THEN it registers under the link's name and starts the companion in the private folder of
    # the layer it links to (before: in "/", where no lambdawrap is: "No module named
    # 'lambdawrap'", the extension crashed and every invocation failed with it)
    ((name, _),) = extensions_api.registered
    private = (layer / "lambdawrap" / "companion-lib").resolve()
    assert name == "lambdawrap" and out.stdout.splitlines()[-1] == f"IN {private} WITH unset", out


@pytest.mark.parametrize("value", ["true", " ON ", "Yes", "1", "false", "maybe", "", "\u00a0true", "on\u2003"])
def test_launcher_reads_disabled_as_the_settings_do(extensions_api, tmp_path, value):
    # GIVEN LAMBDAWRAP_DISABLED spelled some way WHEN the launcher runs
    out = run_launcher(extensions_api, tmp_path, {"LAMBDAWRAP_DISABLED": value})
    disabled = Settings.from_env({"LAMBDAWRAP_DISABLED": value}, warn=False).disabled
    ((name, body),) = extensions_api.registered
    assert name == "lambdawrap"
    if disabled:
        # THEN switched off: registered for no event, waited in /next, and never started Python
        assert body == {"events": []} and extensions_api.next_called.is_set() and "STARTED" not in out.stdout
    else:
        # THEN on: registered for INVOKE and SHUTDOWN and handed over to the Python companion
        assert body == {"events": ["INVOKE", "SHUTDOWN"]} and "STARTED" in out.stdout and "-m lambdawrap.companion lambdawrap" in out.stdout


@pytest.mark.parametrize("declared", ["DB_PASSWORD=prod/db#password", " ,DB_PASSWORD=prod/db#password", " ", ",", " , ,", None], ids=["declared", "declared-after-a-comma", "blank", "comma", "commas", "unset"])
def test_a_switched_off_launcher_says_once_that_declared_secrets_are_not_fetched(extensions_api, tmp_path, declared):
    # GIVEN the layer switched off, with secrets declared or not
    env = {"LAMBDAWRAP_DISABLED": "true"} | ({"LAMBDAWRAP_SECRETS": declared} if declared is not None else {})
    # WHEN the launcher runs
    out = run_launcher(extensions_api, tmp_path, env)
    # THEN a function that needs them is told why they are missing, once, naming both variables
    # (before: nothing said so), and a launcher with none declared says nothing
    said = [line for line in out.stderr.splitlines() if "LAMBDAWRAP_SECRETS" in line]
    assert len(said) == (1 if declared and "DB_PASSWORD" in declared else 0), out
    assert all("LAMBDAWRAP_DISABLED" in line and "not fetched" in line for line in said), out
    assert extensions_api.registered == [("lambdawrap", {"events": []})] and "STARTED" not in out.stdout


# Lambda sets LANG=en_US.UTF-8; C.UTF-8 is the UTF-8 locale every glibc has. In a UTF-8
# locale bash's [:space:] holds Unicode spaces (U+2003, U+3000) that Settings does not strip.
UTF8_LOCALE = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
UNICODE_BLANKED = ["\u2003ON", "yes\u3000", "\u2003true\u2003", "\u00a0true"]


@pytest.mark.parametrize("value", UNICODE_BLANKED)
def test_launchers_read_disabled_as_the_settings_do_in_a_utf8_locale(extensions_api, tmp_path, value):
    # GIVEN LAMBDAWRAP_DISABLED with a Unicode space around "true", in the UTF-8 locale Lambda
    # sets, WHEN the wrapper (run by bash, Lambda's /bin/sh) and the launcher run
    # before: both trimmed U+2003/U+3000 and switched lambdawrap off, while Settings (the boot,
    # the companion) warned and kept it on: the companion never started, the boot waited for it
    disabled = Settings.from_env({"LAMBDAWRAP_DISABLED": value}, warn=False).disabled
    wrapped = subprocess.run(["bash", str(WRAPPER), env_named_python(tmp_path)], env={"PATH": "/usr/bin:/bin", "LAMBDAWRAP_DISABLED": value, **UTF8_LOCALE}, capture_output=True, text=True, check=True, timeout=30)
    out = run_launcher(extensions_api, tmp_path, {"LAMBDAWRAP_DISABLED": value, **UTF8_LOCALE})
    # THEN each switches lambdawrap off exactly when the settings do
    assert ("LAMBDAWRAP_BOOT_DIR=" not in wrapped.stdout) is disabled, value
    ((_, body),) = extensions_api.registered
    assert (body == {"events": []}) is disabled and ("STARTED" in out.stdout) is not disabled, (value, out)


@pytest.mark.parametrize("value", ["/no/such/python", "/bin/false", "echo", "  ", "python2.7"])
def test_launcher_falls_back_from_a_bad_python(extensions_api, tmp_path, value):
    # GIVEN LAMBDAWRAP_PYTHON naming something that is no Python 3.10+ WHEN the launcher runs
    out = run_launcher(extensions_api, tmp_path, {"LAMBDAWRAP_PYTHON": value})
    # THEN it warns once, naming the variable and the default, and starts the companion anyway
    warnings = [line for line in out.stderr.splitlines() if "LAMBDAWRAP_PYTHON" in line]
    assert len(warnings) == (1 if value.strip() else 0), out.stderr
    assert out.stdout.startswith(f"STARTED {tmp_path}/bin/python3 -E -s -m lambdawrap.companion"), out
    if value.strip():
        assert "using the default python3" in warnings[0]


def test_launcher_takes_a_good_python(extensions_api, tmp_path):
    custom = tmp_path / "custom-python"
    custom.write_text('#!/bin/sh\ncase " $* " in *" -c "*) echo True; exit 0 ;; esac\necho "CUSTOM $*"\n')
    custom.chmod(0o755)
    out = run_launcher(extensions_api, tmp_path, {"LAMBDAWRAP_PYTHON": str(custom)})
    assert out.stdout.startswith("CUSTOM -E -s -m lambdawrap.companion") and not out.stderr, out


@pytest.mark.parametrize("managed_instances", [False, True], ids=["on demand", "managed instances"])
def test_a_function_whose_path_has_no_python3_runs_as_without_the_layer(tmp_path, managed_instances):
    from conftest import write_function
    from support.stack import instrumented

    # GIVEN a function whose configuration sets PATH to folders of its own, without the runtime's
    # interpreter (the runtime's bootstrap names it by its full path and starts as without it)
    task = write_function(tmp_path / "task", "def handler(event, context):\n    return {'ok': event}\n")
    limits = {"max_concurrency": 2} if managed_instances else {}
    with instrumented(task, env={"PATH": f"{tmp_path / 'bin'}:/nowhere"}, **limits) as (emu, _):
        # WHEN it is invoked, twice (each once the workers are idle: Managed Instances refuse an
        # invoke that finds none)
        results = []
        for n in range(2):
            assert emu.wait_idle(30)
            results.append(emu.invoke({"n": n}))
        # THEN it answers as without the layer (before: the launcher's `exec python3` failed,
        # the extension crashed after registering, and every invocation failed with it)
        assert [(r.status, r.function_error, r.json()) for r in results] == [(200, None, {"ok": {"n": n}}) for n in range(2)], emu.log_lines()
        # ...and one line says why nothing is exported
        warnings = [line for line in emu.log_lines("extension") if "python3" in line]
        assert len(warnings) == 1 and "the companion cannot start" in warnings[0], emu.log_lines()


def test_a_python_that_cannot_find_the_companion_is_a_bad_value_not_a_crash(tmp_path):
    import sys
    import venv

    from conftest import write_function
    from support.stack import instrumented

    # GIVEN LAMBDAWRAP_PYTHON naming a Python 3.10+ that has no lambdawrap where the companion
    # starts (an interpreter of a container image, a virtual environment of its own)
    bare = tmp_path / "bare"
    venv.EnvBuilder(with_pip=False).create(bare)
    python = bare / "bin" / "python3"
    assert subprocess.run([str(python), "-c", f"import sys; assert sys.version_info[:2] == {tuple(sys.version_info[:2])}"], timeout=30).returncode == 0
    task = write_function(tmp_path / "task", "def handler(event, context):\n    return {'ok': event}\n")
    with instrumented(task, env={"LAMBDAWRAP_PYTHON": str(python)}) as (emu, rx):
        # WHEN it is invoked, twice
        results = [emu.invoke({"n": n}) for n in range(2)]
        # THEN it answers as without the layer (before: `python -m lambdawrap.companion` found no
        # lambdawrap, the extension exited after registering, and every invocation failed with
        # Extension.Crash), the companion running on the default python3 ...
        assert [(r.status, r.function_error, r.json()) for r in results] == [(200, None, {"ok": {"n": n}}) for n in range(2)], emu.log_lines()
        assert len(rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") in {r.request_id for r in results}, count=2)) == 2
    # ... and one line says why, naming the variable and the default
    warnings = [line for line in emu.log_lines("extension") if "LAMBDAWRAP_PYTHON" in line]
    assert len(warnings) == 1 and "using the default python3" in warnings[0], emu.log_lines("extension")


@pytest.mark.parametrize("chained", [False, True])
def test_a_layer_copied_without_its_boot_runs_the_function_as_without_it(tmp_path, chained):
    # GIVEN the wrapper copied without the layer's python/ folder (a layer copied in part)
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy2(WRAPPER, partial / "wrapper.sh")
    env = {"PATH": "/usr/bin:/bin"}
    if chained:
        nxt = tmp_path / "next.sh"
        nxt.write_text("#!/bin/sh\n" + NEXT_BODY)
        nxt.chmod(0o755)
        env["LAMBDAWRAP_NEXT_WRAPPER"] = str(nxt)
    # WHEN the runtime starts through it
    out = subprocess.run([str(partial / "wrapper.sh"), env_named_python(tmp_path)], env=env, capture_output=True, text=True, timeout=30)
    # THEN one warning, and the runtime (or the next wrapper) gets the environment it gets
    # without the layer (before: PYTHONPATH set and the boot's variables left, with no boot to
    # take them out)
    started = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert out.returncode == 0 and "PYTHONPATH" not in started and not [k for k in started if k.startswith("LAMBDAWRAP_") and k != "LAMBDAWRAP_NEXT_WRAPPER"], out
    assert started.get("CHAINED") == ("yes" if chained else None)
    assert out.stderr.splitlines() == [f"lambdawrap: not instrumenting, {partial}/python/lambdawrap_boot/sitecustomize.py is missing (a layer copied in part?)"]


@pytest.mark.parametrize("shell", SHELLS)
def test_a_next_wrapper_sees_the_environment_it_sees_without_the_layer_and_its_options_reach_the_interpreter(tmp_path, shell):
    # GIVEN a next wrapper that records what it was started with, extends PYTHONPATH as many
    # do (leaving an empty entry when it was unset), and puts an option of its own before the
    # runtime's script, as AWS's documented `-X importtime` wrapper does
    seen = tmp_path / "seen"
    nxt = tmp_path / "next.sh"
    nxt.write_text(
        "#!/bin/sh\n"
        f'env > "{seen}"\n'
        'export PYTHONPATH="$PYTHONPATH:/next/p"\n'
        'exec "$1" -X importtime "$2"\n'
    )
    nxt.chmod(0o755)
    script = tmp_path / "bootstrap.py"
    script.write_text("")
    runtime = script_named_python(tmp_path, '#!/bin/sh\nprintf "arg:%s\\n" "$@"\necho "pythonpath:${PYTHONPATH-unset}"\necho "boot:${LAMBDAWRAP_BOOT_DIR-}"\necho "script:${LAMBDAWRAP_RUNTIME_SCRIPT-}"\n')
    env = {"PATH": "/usr/bin:/bin", "LAMBDAWRAP_NEXT_WRAPPER": str(nxt)}
    out = subprocess.run([shell, str(WRAPPER), str(runtime), str(script)], env=env, capture_output=True, text=True, timeout=30)
    # THEN the next wrapper saw no PYTHONPATH and none of the boot's variables (only what
    # brings it back to us); the interpreter gets its option, its PYTHONPATH with ours in front
    # (the restore leaves ":/next/p", as without the layer), and the runtime's script is known
    before = dict(line.split("=", 1) for line in seen.read_text().splitlines() if "=" in line)
    assert "PYTHONPATH" not in before, before
    assert sorted(k for k in before if k.startswith("LAMBDAWRAP_")) == ["LAMBDAWRAP_CHAINED_INTERPRETER", "LAMBDAWRAP_CHAINED_WRAPPER", "LAMBDAWRAP_NEXT_WRAPPER", "LAMBDAWRAP_RUNTIME_SCRIPT"], before
    assert out.returncode == 0, out
    assert out.stdout.splitlines() == ["arg:-X", "arg:importtime", f"arg:{script}", f"pythonpath:{LAYER}/python/lambdawrap_boot::/next/p", f"boot:{LAYER}/python/lambdawrap_boot", f"script:{script}"], out


@pytest.mark.parametrize("shell", SHELLS)
def test_a_next_wrapper_handed_an_empty_interpreter_runs_once(tmp_path, shell):
    # GIVEN a runtime started as "" (an empty interpreter, a word a wrapper of the user's put in
    # front of Python's) through a chained next wrapper that counts its runs
    count = tmp_path / "count"
    nxt = tmp_path / "next.sh"
    nxt.write_text(f'#!/bin/sh\necho run >> "{count}"\n[ "$(wc -l < "{count}")" -lt 5 ] || exit 3\nexec "$@"\n')
    nxt.chmod(0o755)
    python = script_named_python(tmp_path, RUNTIME)
    out = subprocess.run([shell, str(WRAPPER), "", str(python), "script.py"], env={"PATH": "/usr/bin:/bin", "LAMBDAWRAP_NEXT_WRAPPER": str(nxt)}, capture_output=True, text=True, timeout=30)
    # THEN the next wrapper ran once, and the empty interpreter failed as it does without the
    # layer (before: the second pass took "" for no second pass, and chained again, for ever)
    assert count.read_text() == "run\n", (count.read_text(), out)
    assert out.returncode != 3, out


# The interpreter's options before its script: (options, whether they keep Python from starting
# lambdawrap). -E and -I ignore PYTHONPATH, -S skips sitecustomize; a letter inside an option's
# value (-Werror's E, -X's) is none of them, and the word after -W or -X is no script.
INTERPRETER_OPTIONS = [
    (["-I"], True),
    (["-E"], True),
    (["-S"], True),
    (["-sE"], True),
    (["-u", "-bS"], True),
    (["-Werror"], False),
    (["-W", "error"], False),
    (["-X", "importtime"], False),
    (["-XE"], False),
    (["-u"], False),
    (["--check-hash-based-pycs", "always"], False),
    ([], False),
]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("given_by", ["runtime", "next wrapper", "runtime behind env, through a next wrapper"])
@pytest.mark.parametrize("options, isolated", INTERPRETER_OPTIONS, ids=[" ".join(o) or "none" for o, _ in INTERPRETER_OPTIONS])
def test_an_interpreter_that_will_not_run_the_boot_runs_as_without_the_layer(tmp_path, shell, given_by, options, isolated):
    # GIVEN the runtime's interpreter started with options before its script: by the runtime
    # (maybe behind a command of a user's wrapper, env FOO=1), or by a next wrapper (a hardening
    # one adding -I), with files in the working folder named as the options' values are
    for name in ("error", "importtime", "always"):
        (tmp_path / name).write_text("")
    script = tmp_path / "bootstrap.py"
    script.write_text("")
    runtime = script_named_python(tmp_path, '#!/bin/sh\nprintf "arg:%s\\n" "$@"\nenv\n')
    env = {"PATH": "/usr/bin:/bin"}
    command = [str(runtime), *options, str(script)]
    if given_by != "runtime":
        nxt = tmp_path / "next.sh"
        added = " ".join(options) if given_by == "next wrapper" else ""
        nxt.write_text('#!/bin/sh\ni=$1\nshift\nexec "$i" ' + added + ' "$@"\n')
        nxt.chmod(0o755)
        env["LAMBDAWRAP_NEXT_WRAPPER"] = str(nxt)
    if given_by == "next wrapper":
        command = [str(runtime), str(script)]
    elif given_by != "runtime":
        command = ["/usr/bin/env", "FOO=1", *command]
    out = subprocess.run([shell, str(WRAPPER), *command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30)
    lines = out.stdout.splitlines()
    started = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("arg:"))
    assert out.returncode == 0 and [line for line in lines if line.startswith("arg:")] == [f"arg:{arg}" for arg in [*options, str(script)]], out
    ours = sorted(k for k in started if k.startswith("LAMBDAWRAP_") and k != "LAMBDAWRAP_NEXT_WRAPPER")
    if isolated:
        # THEN where the interpreter would never run the boot, which puts the environment back,
        # it gets the environment it gets without the layer, and one line says why (before:
        # PYTHONPATH was left set, and the runtime did not add the layers' folders)
        assert "PYTHONPATH" not in started and ours == [], out
        assert out.stderr.splitlines() == [f"lambdawrap: not instrumenting, the interpreter runs with {options[-1][:1]}{options[-1][-1]}, which keeps Python from starting lambdawrap (-E and -I ignore PYTHONPATH, -S skips sitecustomize)"], out
    else:
        # ... and elsewhere the boot is set up, for the runtime's script (not an option's value)
        assert started.get("PYTHONPATH") == f"{LAYER}/python/lambdawrap_boot" and started.get("LAMBDAWRAP_RUNTIME_SCRIPT") == str(script), out
        assert out.stderr == "", out
