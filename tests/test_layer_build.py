"""The built layer: its layout, bytecode and zip, and — the real proof — that, built for each
Python version, it instruments a function on that version when nothing but the layer provides
lambdawrap and its dependencies, without compiling a module at cold start.

Building downloads wheels for the target platform from PyPI; the module is skipped when pip
cannot reach an index.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import os
import marshal
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import pytest

from conftest import wait_for, write_function
from lambdawrap.devtools import layer_build, pins
from lambdawrap.devtools.interpreters import Interpreter
from lambdawrap.devtools.layer_build import LayerBuild, build_layer
from support.python_versions import every_python

pytestmark = pytest.mark.timeout(420)  # a build per Python version, on a busy machine

LOCAL_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
WRAPT_PIN = layer_build._requirements("http")[0][0]  # e.g. "wrapt==2.5.2"
DEV_IMPORT = re.compile(r"^\s*(from|import)\s+lambdawrap\.devtools\b", re.MULTILINE)
DEVTOOLS = Path(layer_build.__file__).resolve().parent

APP = """
import importlib.util, sys

def handler(event, context):
    return {
        "lambdawrap": sys.modules["lambdawrap"].__file__,
        "wrapt_visible": importlib.util.find_spec("wrapt") is not None,
        "otel_visible": importlib.util.find_spec("opentelemetry") is not None,
        # called by lambdawrap's wrapper (the runtime's lookup hands the runtime the handler
        # wrapped; the module's name stays the function's own)
        "wrapped": "lambdawrap" in sys._getframe(1).f_code.co_filename,
        "python": "%d.%d" % sys.version_info[:2],
        "writes_bytecode": not sys.dont_write_bytecode,
    }
"""


def _pip(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def index_reachable(tmp_path_factory) -> None:
    # A quick platform-specific download: the same kind of request the build makes.
    try:
        result = _pip(
            "download", "--no-deps", "--only-binary=:all:", "--platform", "manylinux2014_x86_64",
            "--python-version", LOCAL_PYTHON, "--implementation", "cp", "--timeout", "15", "--retries", "1",
            "-d", str(tmp_path_factory.mktemp("probe")), WRAPT_PIN,
            timeout=60,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.skip("PyPI unreachable: pip download timed out")
    if result.returncode != 0:
        pytest.skip(f"PyPI unreachable: pip download failed: {result.stderr.strip().splitlines()[-1:]}")


@pytest.fixture(scope="module")
def built(index_reachable, tmp_path_factory) -> LayerBuild:
    """The default (http) layer for x86_64, for this interpreter's version so it can run here."""
    out = tmp_path_factory.mktemp("build") / "layer"
    return build_layer(out, arch="x86_64", python_version=LOCAL_PYTHON, variant="http")


def _zip_modes(archive: Path) -> dict[str, int]:
    with zipfile.ZipFile(archive) as zf:
        return {info.filename: info.external_attr >> 16 for info in zf.infolist()}


def test_layout(built):
    # GIVEN the built layer WHEN we look at what unzips into /opt THEN every part is in place
    out = built.out_dir
    assert (out / "wrapper.sh").read_bytes() == (layer_build._LAYER_SRC / "wrapper.sh").read_bytes()
    assert (out / "extensions" / "lambdawrap").is_file()
    assert (out / "python" / "lambdawrap_boot" / "sitecustomize.py").is_file()
    assert (out / "python" / "lambdawrap" / "handler" / "boot.py").is_file()
    handler_lib = out / "lambdawrap" / "handler-lib"
    assert list(handler_lib.glob("wrapt/_wrappers.cpython-*-x86_64-linux-gnu.so"))
    wrapt_version = WRAPT_PIN.partition("==")[2]
    assert (handler_lib / f"wrapt-{wrapt_version}.dist-info").is_dir()  # the version pinned in pyproject.toml
    assert not (out / "python" / "wrapt").exists()  # never on the function's sys.path
    companion = out / "lambdawrap" / "companion-lib"
    assert (companion / "lambdawrap" / "companion" / "__main__.py").is_file()
    for package in ("opentelemetry/sdk", "opentelemetry/exporter/otlp/proto/http", "opentelemetry/proto", "opentelemetry/semconv", "google/protobuf", "requests", "urllib3"):
        assert (companion / package).is_dir(), package
    # The handler side is stdlib + wrapt: no OpenTelemetry, no protobuf on the function's path.
    assert not (out / "python" / "opentelemetry").exists() and not (out / "python" / "google").exists()
    assert not (out / "python" / "lambdawrap" / "companion").exists()
    # The http layer has no gRPC.
    assert not (companion / "grpc").exists()
    # Licences stay.
    assert list(companion.glob("opentelemetry_sdk-*.dist-info/licenses/LICENSE"))


def test_ships_the_allow_list_only(built):
    # GIVEN the built layer THEN each side holds exactly the parts of the package it runs:
    # the function's process the handler side and the shared core, the companion its own
    # package and the shared core; no development tool anywhere.
    function_side = built.out_dir / "python" / "lambdawrap"
    companion_side = built.out_dir / "lambdawrap" / "companion-lib" / "lambdawrap"
    # (__pycache__ holds the bytecode of exactly the modules beside it: see the bytecode test.)
    assert sorted(p.name for p in function_side.iterdir()) == ["__init__.py", "__pycache__", "handler", "secrets.py", "shared"]
    assert sorted(p.name for p in companion_side.iterdir()) == ["__init__.py", "__pycache__", "companion", "shared"]
    tool_modules = {p.stem for p in DEVTOOLS.rglob("*.py")} - {"__init__", "__main__"}
    for copy in (function_side, companion_side):
        shipped = list(copy.rglob("*.py"))
        assert not [p for p in shipped if p.stem in tool_modules and "devtools" in p.parts], shipped
        assert not [p for p in copy.rglob("*") if p.name == "devtools"]
        for source in shipped:
            # Nothing shipped imports a development tool (they are not there to import).
            assert not DEV_IMPORT.search(source.read_text()), source


def test_no_boto_and_no_console_scripts(built):
    everything = [p.relative_to(built.out_dir).as_posix() for p in built.out_dir.rglob("*")]
    # The runtime has its own boto3; a copy in the layer would shadow it (our hook modules are
    # named after what they hook, and are no copy).
    assert not [p for p in everything if {"boto3", "botocore"} & set(p.split("/")) or p.split("/")[-1].startswith(("boto3-", "botocore-"))]
    assert not (built.out_dir / "lambdawrap" / "companion-lib" / "bin").exists()


def test_every_module_ships_with_bytecode_for_the_target_version_only(built):
    # GIVEN the layer built for this interpreter's version THEN each module has exactly one
    # .pyc beside it, of this version (magic number), hash-based and unchecked (no timestamp,
    # no look at the source), naming the file where it will be: under /opt
    sources = sorted(built.out_dir.rglob("*.py"))
    compiled = sorted(built.out_dir.rglob("*.pyc"))
    assert len(sources) > 100
    tag = sys.implementation.cache_tag
    # In python/, the function's process, also optimised (-O, -OO: PYTHONOPTIMIZE is the
    # function's choice); the companion's start ignores PYTHONOPTIMIZE.
    levels = {"": (f"{tag}",), "python": (f"{tag}", f"{tag}.opt-1", f"{tag}.opt-2")}
    expected = [p.parent / "__pycache__" / f"{p.stem}.{level}.pyc" for p in sources for level in levels.get(p.relative_to(built.out_dir).parts[0], levels[""])]
    assert sorted(expected) == compiled
    for pyc in compiled:
        header = pyc.read_bytes()[:16]
        assert header[:4] == importlib.util.MAGIC_NUMBER, pyc
        assert int.from_bytes(header[4:8], "little") == 0b01, pyc  # hash-based, source not checked (PEP 552)
    boot = built.out_dir / "python" / "lambdawrap" / "handler" / "__pycache__" / f"boot.{tag}.pyc"
    assert marshal.loads(boot.read_bytes()[16:]).co_filename == "/opt/python/lambdawrap/handler/boot.py"


def test_bytecode_is_reproducible(built, tmp_path):
    # GIVEN a copy of the layer without its bytecode WHEN it is compiled again THEN every .pyc
    # comes out byte for byte the same (so the zip stays reproducible)
    again = tmp_path / "again"
    shutil.copytree(built.out_dir, again, ignore=shutil.ignore_patterns("__pycache__"))
    layer_build._compile_bytecode(again, layer_build._bytecode_compiler(LOCAL_PYTHON))
    ours = {p.relative_to(built.out_dir): p.read_bytes() for p in built.out_dir.rglob("*.pyc")}
    theirs = {p.relative_to(again): p.read_bytes() for p in again.rglob("*.pyc")}
    assert ours.keys() == theirs.keys() and [k for k in ours if ours[k] != theirs[k]] == []


@every_python
def test_bytecode_is_the_same_from_one_build_to_the_next(python_version, interpreter, tmp_path):
    # GIVEN a module whose bytecode holds a set of strings (`name in {...}`, as lambdawrap's
    # own modules do): the compiler stores it as a frozenset, in the order of the strings'
    # hashes, which Python 3.10 draws anew in each process
    names = ", ".join(repr(f"name{i}") for i in range(40))
    builds = []
    for attempt in ("first", "second"):
        folder = tmp_path / attempt / "python"
        folder.mkdir(parents=True)
        (folder / "module.py").write_text(f"def known(name):\n    return name in {{{names}}}\n")
        # WHEN two builds compile it
        layer_build._compile_bytecode(folder.parent, interpreter)
        builds.append((folder / "__pycache__" / f"module.cpython-{python_version.replace('.', '')}.pyc").read_bytes())
    # THEN both give the same bytes (before: a different zip, and CodeSha256, each build on 3.10)
    assert builds[0] == builds[1]


def test_bytecode_is_compiled_by_an_interpreter_found_by_a_relative_path(tmp_path, monkeypatch):
    # GIVEN the target version's interpreter found on a PATH entry relative to where the build
    # runs (PATH=.venv/bin:..., where shutil.which answers a relative path)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / f"python{LOCAL_PYTHON}").symlink_to(sys.executable)
    monkeypatch.chdir(tmp_path)
    relative = Interpreter(path=f"bin/python{LOCAL_PYTHON}", version=LOCAL_PYTHON, full_version=LOCAL_PYTHON)
    layer = tmp_path / "layer"
    (layer / "python").mkdir(parents=True)
    (layer / "python" / "module.py").write_text("x = 1\n")
    # WHEN the layer's modules are compiled THEN they are (compileall runs in a folder of its own)
    layer_build._compile_bytecode(layer, relative)
    assert (layer / "python" / "__pycache__" / f"module.{sys.implementation.cache_tag}.pyc").is_file()


def test_bytecode_needs_an_interpreter_of_the_target_version(tmp_path, capsys):
    # GIVEN a version no interpreter here has WHEN the layer is built for it THEN one line
    # says that the bytecode needs that version's interpreter, and where it looked
    assert layer_build.main(["--out", str(tmp_path / "l"), "--python-version", "3.99"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "must be compiled by a Python 3.99 interpreter" in err and "no Python 3.99 interpreter found" in err
    assert not (tmp_path / "l").exists()


def test_zip_keeps_executable_bits_and_is_deterministic(built, tmp_path):
    modes = _zip_modes(built.zip_path)
    assert stat.S_IMODE(modes["wrapper.sh"]) == 0o755 and stat.S_ISREG(modes["wrapper.sh"])
    assert stat.S_IMODE(modes["extensions/lambdawrap"]) == 0o755
    assert stat.S_IMODE(modes["python/lambdawrap/handler/boot.py"]) == 0o644
    with zipfile.ZipFile(built.zip_path) as zf:
        names = zf.namelist()
        assert names == sorted(names)
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    # Zipping the same folder again gives the same bytes.
    again = tmp_path / "again.zip"
    layer_build.write_deterministic_zip(built.out_dir, again)
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(built.zip_path.read_bytes()).digest()


def test_every_package_s_record_names_only_files_the_layer_ships(built):
    # GIVEN the built layer, whose packages' console scripts the build removed THEN no RECORD
    # names a file that is not there (before: the scripts' lines stayed, hashing a first line
    # that names the interpreter pip ran under: the zip's bytes depended on the build machine)
    records = sorted(built.out_dir.rglob("*.dist-info/RECORD"))
    assert records
    for record in records:
        root = record.parent.parent
        for row in csv.reader(record.read_text(encoding="utf-8").splitlines()):
            path = Path(os.path.normpath(root / row[0]))
            assert root in path.parents and path.is_file(), (record, row[0])


def test_a_source_s_mode_in_the_checkout_does_not_reach_the_layer(tmp_path, monkeypatch):
    # GIVEN a checkout where one shipped module has its executable bit set (by hand, or a file
    # system without modes)
    package = tmp_path / "checkout" / "lambdawrap"
    shutil.copytree(layer_build._PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "handler" / "boot.py").chmod(0o755)
    monkeypatch.setattr(layer_build, "_PACKAGE_DIR", package)
    # WHEN the layer's copy of the package is made, and its modes settled as the build does
    out = tmp_path / "out"
    layer_build._copy_package(out / "lambdawrap", allowed=layer_build.HANDLER_SIDE)
    layer_build._normalise_modes(out)
    # THEN it ships as every other module (before: 0755, and the zip's bytes changed with it)
    assert stat.S_IMODE((out / "lambdawrap" / "handler" / "boot.py").stat().st_mode) == 0o644


def test_sizes_within_limits(built):
    assert built.zip_path == built.out_dir.with_name("layer.zip")
    assert built.zipped_bytes == built.zip_path.stat().st_size
    assert 0 < built.zipped_bytes < built.unzipped_bytes
    assert built.within_limits and built.limits_enforced, (built.zipped_bytes, built.unzipped_bytes)
    assert built.zipped_bytes <= 9 * 1024 * 1024 and built.unzipped_bytes <= 25 * 1024 * 1024


@pytest.fixture(scope="module")
def layer_for(built, tmp_path_factory) -> Callable[[str], LayerBuild]:
    """The http layer for x86_64 built for a Python version (once per version)."""
    builds = {LOCAL_PYTHON: built}

    def build(version: str) -> LayerBuild:
        if version not in builds:
            builds[version] = build_layer(tmp_path_factory.mktemp(f"build{version}") / "layer", arch="x86_64", python_version=version, variant="http")
        return builds[version]

    return build


@pytest.fixture(scope="module")
def bare_runtime(index_reachable, tmp_path_factory) -> Callable[[Interpreter], str]:
    """An interpreter of a version that sees none of the dev venv's packages: only
    awslambdaric, which plays the managed runtime's /var/runtime (once per version)."""
    made: dict = {}

    def make(interpreter: Interpreter) -> str:
        if interpreter.version in made:
            return made[interpreter.version]
        root = tmp_path_factory.mktemp(f"rt{interpreter.version}")
        venv = root / "rt"
        subprocess.run([interpreter.path, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True, timeout=120)
        python = venv / "bin" / "python"
        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True, text=True).stdout.strip()
        pin = " ".join(pins.pinned("dev", {"awslambdaric"}))
        result = _pip("install", "--quiet", "--no-compile", "--target", site, "--python-version", interpreter.version, "--implementation", "cp", "--only-binary=:all:", pin, timeout=300)
        assert result.returncode == 0, f"could not install {pin} for Python {interpreter.version}: {result.stderr.strip().splitlines()[-1:]}"
        # The proof is only worth something if the bare interpreter really cannot see our packages.
        probe = "import importlib.util as u; print([m for m in ('lambdawrap', 'wrapt', 'opentelemetry', 'google.protobuf', 'boto3') if u.find_spec(m.split('.')[0])])"
        assert subprocess.run([str(python), "-s", "-c", probe], check=True, capture_output=True, text=True, cwd=root).stdout.strip() == "[]"
        made[interpreter.version] = str(python)
        return made[interpreter.version]

    return make


def _files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def _cold_start(task: Path, layer: Path, python: str, endpoint: str, socket_dir: str, extra_env: dict | None = None):
    from lambdawrap.devtools.emulator import Emulator

    env = {
        "AWS_LAMBDA_EXEC_WRAPPER": "/opt/wrapper.sh",
        "LAMBDAWRAP_SOCKET": f"{socket_dir}/lw.sock",
        "NO_PROXY": "127.0.0.1,localhost",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": "built-layer",
        **(extra_env or {}),
    }
    # Not frozen: the span is awaited while the environment lives, and the companion may still
    # be exporting after its /next (tests/test_limits.py covers freezing).
    return Emulator(str(task), "app.handler", str(layer), env=env, python=python, invoke_port=None, freeze=False)


def _invocation_span(receiver, emu, result) -> dict:
    """The invocation's exported span, or the test failed with the environment's log."""
    try:
        return receiver.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id, timeout=90)[0]
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n" + "\n".join(f"{source}: {line}" for source, line in list(emu.logs)))


@every_python
def test_built_layer_instruments_a_function_on_its_own(python_version, interpreter, layer_for, bare_runtime, tmp_path):
    from lambdawrap.devtools.otlp_receiver import OtlpReceiver

    # GIVEN a trivial function, the layer built for this version as /opt (a writable copy:
    # the runtime would write bytecode there for any module it had to compile), and an
    # interpreter of this version with no dev packages
    built = layer_for(python_version)
    python = bare_runtime(interpreter)
    layer = tmp_path / "opt"
    shutil.copytree(built.out_dir, layer)
    before = _files(layer)
    task = write_function(tmp_path / "task", APP)
    socket_dir = tempfile.mkdtemp(prefix="lw")  # short: Unix socket paths are capped at 108 bytes
    try:
        with OtlpReceiver() as receiver:
            with _cold_start(task, layer, python, receiver.endpoint, socket_dir) as emu:
                # WHEN it is invoked
                result = emu.invoke({"hello": "layer"})
                logs = "\n".join(f"{source}: {line}" for source, line in list(emu.logs))
                assert result.status == 200 and result.function_error is None, logs
                body = result.json()
                # THEN lambdawrap came from the layer, its dependencies and the companion's stayed
                # out of the function's sight, and the handler was wrapped...
                assert body["lambdawrap"].startswith(str(layer / "python" / "lambdawrap")), body
                assert body["wrapt_visible"] is False and body["otel_visible"] is False and body["wrapped"] is True, body
                assert body["python"] == python_version and body["writes_bytecode"] is True, body
                # ...and the companion, running from its private folder, exported the span.
                span = _invocation_span(receiver, emu, result)
        assert span["resource"]["service.name"] == "built-layer"
        assert span["attributes"]["faas.coldstart"] is True
        # ...and neither process compiled a module: each came from its .pyc (the companion's
        # OpenTelemetry SDK and exporter included, imported for that export).
        assert sorted(set(_files(layer).items()) ^ set(before.items())) == []
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


PYTHONPATH_APP = """
import enum, os, re, sys

def handler(event, context):
    return {
        "lambdawrap": sys.modules["lambdawrap"].__file__,
        # called by lambdawrap's wrapper (the runtime's lookup hands the runtime the handler
        # wrapped; the module's name stays the function's own)
        "wrapped": "lambdawrap" in sys._getframe(1).f_code.co_filename,
        "pythonpath": os.environ.get("PYTHONPATH"),
        "own_sitecustomize_ran": os.environ.get("OWN_SITECUSTOMIZE_RAN"),
        "layer_on_sys_path": [p for p in sys.path if p.startswith(os.environ["LAYER"])],
        "enum": enum.__file__,
    }
"""


def test_built_layer_instruments_a_function_that_sets_its_own_pythonpath(layer_for, bare_runtime, tmp_path):
    from lambdawrap.devtools.interpreters import running_interpreter
    from lambdawrap.devtools.otlp_receiver import OtlpReceiver

    # GIVEN the built layer as /opt, and a function that sets PYTHONPATH to a folder with its
    # own sitecustomize: the runtime then leaves the layer's python/ off sys.path, where
    # lambdawrap's package lives in a built layer
    python = bare_runtime(running_interpreter())
    layer = tmp_path / "opt"
    shutil.copytree(layer_for(LOCAL_PYTHON).out_dir, layer)
    task = write_function(tmp_path / "task", PYTHONPATH_APP)
    # Another layer's module named as a standard one, in the python/ folder every layer shares
    # (an old enum34, say): the function never sees it without lambdawrap, and must not with it
    (layer / "python" / "enum.py").write_text("class Enum:\n    pass\n")
    vendor = tmp_path / "vendor"
    write_function(vendor, "import os\nos.environ['OWN_SITECUSTOMIZE_RAN'] = 'yes'\n", module="sitecustomize")
    # The function bundles lambdawrap of its own there too (an older release, installed to
    # import lambdawrap.secrets in its own tests): the layer's must boot, not that one
    # (before: "No module named 'lambdawrap.handler'", the function uninstrumented)
    (vendor / "lambdawrap").mkdir()
    (vendor / "lambdawrap" / "__init__.py").write_text('__version__ = "0.0.1"\n')
    socket_dir = tempfile.mkdtemp(prefix="lw")
    try:
        with OtlpReceiver() as receiver:
            with _cold_start(task, layer, python, receiver.endpoint, socket_dir, {"PYTHONPATH": str(vendor), "LAYER": str(layer)}) as emu:
                result = emu.invoke({})
                logs = "\n".join(f"{source}: {line}" for source, line in list(emu.logs))
                assert result.status == 200 and result.function_error is None, logs
                body = result.json()
                # THEN the function sees its own PYTHONPATH and sys.path, its sitecustomize ran...
                assert body["pythonpath"] == str(vendor) and body["own_sitecustomize_ran"] == "yes", body
                assert body["layer_on_sys_path"] == [] and not body["enum"].startswith(str(layer)), body
                # ...and it is instrumented from the layer, its span exported
                assert body["wrapped"] is True and body["lambdawrap"].startswith(str(layer / "python" / "lambdawrap")), body
                _invocation_span(receiver, emu, result)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)



def test_built_layer_boots_past_another_layer_s_module_named_as_a_standard_one(layer_for, bare_runtime, tmp_path):
    from lambdawrap.devtools.interpreters import running_interpreter
    from lambdawrap.devtools.otlp_receiver import OtlpReceiver

    # GIVEN the built layer as /opt, PYTHONPATH unset (as most functions leave it), and another
    # layer that brings an enum.py (an old enum34) and the function's own dependency into the
    # python/ folder every layer shares
    python = bare_runtime(running_interpreter())
    layer = tmp_path / "opt"
    shutil.copytree(layer_for(LOCAL_PYTHON).out_dir, layer)
    (layer / "python" / "enum.py").write_text("class Enum:\n    pass\n")
    (layer / "python" / "layerdep.py").write_text("FROM = 'a layer'\n")
    task = write_function(tmp_path / "task", PYTHONPATH_APP + "\nimport layerdep\n")
    socket_dir = tempfile.mkdtemp(prefix="lw")
    try:
        with OtlpReceiver() as receiver:
            with _cold_start(task, layer, python, receiver.endpoint, socket_dir, {"LAYER": str(layer)}) as emu:
                result = emu.invoke({})
                logs = "\n".join(f"{source}: {line}" for source, line in list(emu.logs))
                # THEN the function runs as without lambdawrap, the standard enum its own and the
                # layer's module found (before: the boot imported that enum.py, the runtime died
                # at every init with "module 'enum' has no attribute 'global_enum'")...
                assert result.status == 200 and result.function_error is None, logs
                body = result.json()
                assert not body["enum"].startswith(str(layer)) and str(layer / "python") in body["layer_on_sys_path"], body
                # ...instrumented, its span exported
                assert body["wrapped"] is True, body
                _invocation_span(receiver, emu, result)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_the_functions_python_variables_tune_the_functions_interpreter_not_the_companions(layer_for, bare_runtime, tmp_path):
    from lambdawrap.devtools.interpreters import running_interpreter
    from lambdawrap.devtools.otlp_receiver import OtlpReceiver

    # GIVEN the built layer as /opt (a writable copy), and a function whose environment tunes
    # its own interpreter: -OO (asserts and docstrings gone), a line on stderr per import, and
    # warnings as errors. The platform passes the function's variables to extensions too.
    python = bare_runtime(running_interpreter())
    layer = tmp_path / "opt"
    shutil.copytree(layer_for(LOCAL_PYTHON).out_dir, layer)
    before = _files(layer)
    task = write_function(tmp_path / "task", APP)
    tuning = {"PYTHONOPTIMIZE": "2", "PYTHONPROFILEIMPORTTIME": "1", "PYTHONWARNINGS": "error"}
    socket_dir = tempfile.mkdtemp(prefix="lw")
    try:
        with OtlpReceiver() as receiver:
            with _cold_start(task, layer, python, receiver.endpoint, socket_dir, tuning) as emu:
                # WHEN it is invoked
                result = emu.invoke({})
                assert result.status == 200 and result.function_error is None, emu.log_lines()
                # THEN the invocation is exported...
                _invocation_span(receiver, emu, result)
                extension_lines = emu.log_lines("extension")
        # ...by a companion that ran as the layer built it: from its shipped bytecode (before:
        # without an .opt-2.pyc it compiled the OpenTelemetry SDK, protobuf and requests at every
        # cold start, /opt being read-only), and without a line per import of its own in the
        # function's log; and the function's process, optimised as the function asks, found
        # lambdawrap's modules compiled that way too (before: it compiled them at every cold start)
        assert sorted(set(_files(layer).items()) ^ set(before.items()))[:3] == []
        assert [line for line in extension_lines if line.startswith("import time:")][:3] == []
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_grpc_asked_of_the_default_layer_is_a_bad_value_not_telemetry_off(layer_for, bare_runtime, tmp_path):
    from lambdawrap.devtools.interpreters import running_interpreter
    from lambdawrap.devtools.otlp_receiver import OtlpReceiver

    # GIVEN the default (http) layer, which has no OTLP/gRPC exporter, and a function configured
    # with OTEL_EXPORTER_OTLP_PROTOCOL=grpc (the README: gRPC needs the grpc variant)
    python = bare_runtime(running_interpreter())
    layer = tmp_path / "opt"
    shutil.copytree(layer_for(LOCAL_PYTHON).out_dir, layer)
    task = write_function(tmp_path / "task", APP)
    socket_dir = tempfile.mkdtemp(prefix="lw")
    try:
        with OtlpReceiver() as receiver:
            with _cold_start(task, layer, python, receiver.endpoint, socket_dir, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) as emu:
                # WHEN it is invoked
                result = emu.invoke({})
                assert result.status == 200 and result.function_error is None
                # THEN, as for any bad value, one warning names the variable and the default,
                # and the invocation is exported with it: the export pipeline did not fail to
                # start, leaving every invocation uncounted
                _invocation_span(receiver, emu, result)
                lines = [line for _, line in list(emu.logs)]
                assert [line for line in lines if "OTEL_EXPORTER_OTLP_PROTOCOL" in line] == ["lambdawrap: ignoring OTEL_EXPORTER_OTLP_PROTOCOL=grpc (this layer has no OTLP/gRPC exporter: build the grpc variant); using the default http/protobuf"]
                assert not any("pipeline failed" in line for line in lines)
            # WHEN the endpoint is written as gRPC's host:port, no OTLP/HTTP URL
            endpoint = receiver.endpoint.split("://", 1)[1]
            with _cold_start(task, layer, python, endpoint, socket_dir, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) as emu:
                assert emu.invoke({}).status == 200
                # THEN it is warned about too, once, as on http/protobuf (before: used as it
                # was, its every export failing without a word)
                wait_for(lambda: [line for _, line in list(emu.logs) if "OTEL_EXPORTER_OTLP_ENDPOINT" in line], timeout=60)
                lines = [line for _, line in list(emu.logs)]
                assert len([line for line in lines if "OTEL_EXPORTER_OTLP_PROTOCOL" in line]) == 1
                assert [line for line in lines if "OTEL_EXPORTER_OTLP_ENDPOINT" in line] == [f"lambdawrap: ignoring OTEL_EXPORTER_OTLP_ENDPOINT={endpoint!r} (expected an http:// or https:// URL); using the default http://localhost:4318"]
            # WHEN the traces' exporter is the SDK's gRPC one by name
            with _cold_start(task, layer, python, receiver.endpoint, socket_dir, {"OTEL_TRACES_EXPORTER": "otlp_proto_grpc"}) as emu:
                result = emu.invoke({})
                assert result.status == 200 and result.function_error is None
                # THEN that variable is the one named, and the invocation is exported over
                # http/protobuf (the variable set aside: read again, it would ask for gRPC)
                _invocation_span(receiver, emu, result)
                lines = [line for _, line in list(emu.logs)]
                assert [line for line in lines if "no OTLP/gRPC exporter" in line] == ["lambdawrap: ignoring OTEL_TRACES_EXPORTER=otlp_proto_grpc (this layer has no OTLP/gRPC exporter: build the grpc variant); using the default http/protobuf"], lines
                assert not any("pipeline failed" in line for line in lines)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_the_companion_takes_nothing_from_the_packages_its_interpreter_holds(layer_for, bare_runtime, tmp_path):
    from lambdawrap.devtools.interpreters import running_interpreter
    from lambdawrap.devtools.otlp_receiver import OtlpReceiver

    # GIVEN the default (http) layer, a function asking for gRPC, and an interpreter whose own
    # site-packages hold the function's OpenTelemetry gRPC exporter (an image that pip installed
    # its requirements there), of a version the companion's packages cannot import
    python = bare_runtime(running_interpreter())
    layer = tmp_path / "opt"
    shutil.copytree(layer_for(LOCAL_PYTHON).out_dir, layer)
    image = tmp_path / "image-python"
    subprocess.run([running_interpreter().path, "-m", "venv", "--without-pip", str(image)], check=True, capture_output=True, timeout=120)
    grpc = image / "lib" / f"python{LOCAL_PYTHON}" / "site-packages" / "opentelemetry" / "exporter" / "otlp" / "proto" / "grpc"
    grpc.mkdir(parents=True)
    (grpc / "__init__.py").write_text("raise ImportError('the function of its own, for another SDK')\n")
    task = write_function(tmp_path / "task", APP)
    socket_dir = tempfile.mkdtemp(prefix="lw")
    try:
        with OtlpReceiver() as receiver:
            env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "LAMBDAWRAP_PYTHON": str(image / "bin" / "python")}
            with _cold_start(task, layer, python, receiver.endpoint, socket_dir, env) as emu:
                result = emu.invoke({})
                assert result.status == 200 and result.function_error is None
                # THEN the companion sees its own folder's packages only: this layer has no gRPC
                # exporter, so it falls back to http/protobuf and the invocation is exported
                # (before: its opentelemetry/ merged with the interpreter's, it took that
                # exporter for its own, failed to import it, and telemetry was off)
                _invocation_span(receiver, emu, result)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


WHAT_IT_SEES = """
import os, sys

def handler(event, context):
    return {"event": event, "pythonpath": os.environ.get("PYTHONPATH", "").replace(os.environ["LAMBDA_RUNTIME_DIR"], "<runtime>")}
"""


def test_a_layer_whose_companion_is_missing_leaves_the_function_running(layer_for, bare_runtime, tmp_path):
    from lambdawrap.devtools.interpreters import running_interpreter

    # GIVEN the built layer as /opt without the companion's package (an image that copied the
    # layer's extensions/ and python/ but not its lambdawrap/ folder), on a runtime where no
    # other lambdawrap is to be found, and a setting of a bad value
    python = bare_runtime(running_interpreter())
    layer = tmp_path / "opt"
    shutil.copytree(layer_for(LOCAL_PYTHON).out_dir, layer)
    shutil.rmtree(layer / "lambdawrap")
    task = write_function(tmp_path / "task", WHAT_IT_SEES)
    socket_dir = tempfile.mkdtemp(prefix="lw")
    try:
        with _cold_start(task, layer, python, "http://127.0.0.1:9", socket_dir, {"LAMBDAWRAP_FLUSH": "bogus"}) as emu:
            # WHEN it is invoked, twice
            results = [emu.invoke({"n": n}) for n in range(2)]
            lines = [line for source, line in list(emu.logs) if source == "extension"]
            function_lines = [line for source, line in list(emu.logs) if source == "function"]
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    # THEN the function answers as without the layer (before: the companion could not start
    # after its launcher had registered, and the platform failed every invocation with
    # Extension.Crash), and one line says why nothing is exported
    assert [(r.status, r.function_error, r.json()) for r in results] == [(200, None, {"event": {"n": n}, "pythonpath": "<runtime>"}) for n in range(2)], lines
    assert [line for line in lines if line.startswith("lambdawrap:")] == ["lambdawrap: the companion's package is not in this layer (lambdawrap/companion-lib): nothing is exported"], lines
    # ... and the bad value is named once, by the function's process, the companion never
    # starting to (before: by nobody, the function's process leaving it to the companion)
    assert len([line for line in function_lines + lines if "LAMBDAWRAP_FLUSH" in line]) == 1, function_lines


@every_python
def test_a_module_without_its_bytecode_would_be_compiled_at_cold_start(python_version, interpreter, layer_for, bare_runtime, tmp_path):
    # The check above sees compiling by the files it leaves; here, that it would see them.
    # GIVEN the built layer with the handler side's bytecode removed
    built = layer_for(python_version)
    layer = tmp_path / "opt"
    shutil.copytree(built.out_dir, layer)
    pycache = layer / "python" / "lambdawrap" / "handler" / "__pycache__"
    shutil.rmtree(pycache)
    socket_dir = tempfile.mkdtemp(prefix="lw")
    try:
        # WHEN a function starts cold with it
        with _cold_start(write_function(tmp_path / "task", APP), layer, bare_runtime(interpreter), "http://127.0.0.1:9", socket_dir) as emu:
            assert emu.invoke({}).json()["wrapped"] is True
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    # THEN the runtime compiled those modules and wrote their bytecode back
    tag = f"cpython-{python_version.replace('.', '')}"
    assert (pycache / f"boot.{tag}.pyc").is_file() and (pycache / f"invocation.{tag}.pyc").is_file()


def test_cli_fails_over_budget_only_for_http(monkeypatch, tmp_path, capsys):
    def fake_build(out, *, arch, python_version, variant, zip_path):
        return LayerBuild(Path(out), Path(zip_path or f"{out}.zip"), arch, python_version, variant, zipped_bytes=10 * 1024 * 1024, unzipped_bytes=30 * 1024 * 1024)

    monkeypatch.setattr(layer_build, "build_layer", fake_build)
    assert layer_build.main(["--out", str(tmp_path / "l"), "--variant", "grpc"]) == 0
    assert "zipped: 10.00 MB  unzipped: 30.00 MB" in capsys.readouterr().out
    assert layer_build.main(["--out", str(tmp_path / "l")]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().count("\n") == 0 and "over its size budget" in captured.err and "Traceback" not in captured.err
    assert "zipped 10.00 MB > 9.00 MB" in captured.err and "unzipped 30.00 MB > 25.00 MB" in captured.err


def test_bad_arguments_are_one_line_errors(tmp_path, capsys, monkeypatch):
    assert layer_build.main(["--out", str(tmp_path / "l"), "--python-version", "three"]) == 1
    assert capsys.readouterr().err.startswith("lambdawrap build-layer: bad python version")
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(layer_build.LayerBuildError, match="refusing to replace"):
        build_layer(tmp_path / "precious")
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"
    # The layer's own sources look like an earlier build (wrapper.sh, python/): `--out layer`
    # from the repository's root removed them, then failed with a traceback.
    sources = tmp_path / "checkout" / "layer"
    shutil.copytree(layer_build._LAYER_SRC, sources, ignore=shutil.ignore_patterns("__pycache__"))
    before = sorted(p.relative_to(sources) for p in sources.rglob("*"))
    for out in (sources, sources / "build", tmp_path / "checkout"):
        with pytest.raises(layer_build.LayerBuildError, match="must not be, hold or be inside the sources"):
            build_layer(out, layer_src=sources)
    assert sorted(p.relative_to(sources) for p in sources.rglob("*")) == before
    monkeypatch.setattr(layer_build, "_LAYER_SRC", sources)
    assert layer_build.main(["--out", str(sources)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must not be, hold or be inside the sources" in err
