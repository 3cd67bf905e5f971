"""Build the lambdawrap Lambda layer: a folder laid out as it unzips into /opt, and its zip.

Layout of a built layer::

    wrapper.sh                       the exec wrapper (AWS_LAMBDA_EXEC_WRAPPER=/opt/wrapper.sh)
    extensions/lambdawrap            the companion's launcher (an external extension)
    python/lambdawrap_boot/          the sitecustomize trampoline, first on the runtime's PYTHONPATH
    python/lambdawrap/               what runs in the function's process (handler/, shared/)
                                     and the public accessor (lambdawrap.secrets)
    lambdawrap/handler-lib/wrapt/    wrapt, for the target platform, loaded privately by the
                                     boot (only its compiled proxies, never `import wrapt`)
    lambdawrap/companion-lib/        the companion's private sys.path: its package (companion/,
                                     shared/) and the OpenTelemetry SDK, exporters, protobuf...

`python/` is on the function's sys.path, so only lambdawrap's own modules live there; the
dependencies sit in folders the function never sees, so they can never shadow the function's
own packages (and the function's never shadow ours). boto3 and
botocore are not shipped: the managed runtime provides them.

Every module ships with its bytecode (`__pycache__/*.cpython-XY.pyc`), compiled by an
interpreter of the target version with unchecked-hash invalidation: a cold start reads no
source and compiles nothing (the real /opt is read-only, so the runtime could never keep
bytecode it made), and the files hold no timestamp.

The zip is deterministic: sorted entries, fixed timestamps, normalised modes (0755 for
executables and folders, 0644 otherwise).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

from lambdawrap.devtools.interpreters import Interpreter, InterpreterNotFound, find_interpreter
from lambdawrap.devtools.pins import PinsError, declared_dependencies, requirement_name

__all__ = ["DEFAULT_PYTHON_VERSION", "LayerBuild", "LayerBuildError", "build_layer", "layer_python_version", "write_deterministic_zip", "main", "MAX_ZIPPED_BYTES", "MAX_UNZIPPED_BYTES"]

_logger = logging.getLogger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/lambdawrap
_SOURCE_ROOT = _PACKAGE_DIR.parents[1]  # the repository: src/lambdawrap -> repo
_LAYER_SRC = _SOURCE_ROOT / "layer"

MB = 1024 * 1024
# The size budget of the default (http) layer; the grpc variant is reported, never failed.
MAX_ZIPPED_BYTES = 9 * MB
MAX_UNZIPPED_BYTES = 25 * MB
ENFORCED_VARIANTS = frozenset({"http"})

PLATFORMS = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
DEFAULT_PYTHON_VERSION = "3.12"  # the runtime template.yaml deploys
VARIANTS = ("http", "grpc")

# What of the package each side ships, by allow-list: a module added anywhere else (devtools/
# above all) never reaches a layer by accident.
HANDLER_SIDE = ("__init__.py", "secrets.py", "handler", "shared")
COMPANION_SIDE = ("__init__.py", "companion", "shared")
_HANDLER_DEPENDENCIES = frozenset({"wrapt"})
# Test suites and console scripts of dependencies: dead weight (scripts even carry the build
# machine's interpreter path in their shebang).
_DEPENDENCY_JUNK_DIRS = frozenset({"tests", "testdata"})
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
# Where the layer unzips: the file names compiled into the bytecode (the build folder's
# would make two builds differ, and tell nothing at run time).
_OPT = "/opt"


class LayerBuildError(Exception):
    """The layer could not be built (bad argument, missing source, pip failure)."""


@dataclasses.dataclass(frozen=True)
class LayerBuild:
    """The result of `build_layer`."""

    out_dir: Path
    zip_path: Path
    arch: str
    python_version: str
    variant: str
    zipped_bytes: int
    unzipped_bytes: int
    compiled_by: str = ""  # the interpreter that made the bytecode: "path (X.Y.Z)"
    max_zipped_bytes: int = MAX_ZIPPED_BYTES
    max_unzipped_bytes: int = MAX_UNZIPPED_BYTES

    @property
    def within_limits(self) -> bool:
        return self.zipped_bytes <= self.max_zipped_bytes and self.unzipped_bytes <= self.max_unzipped_bytes

    @property
    def limits_enforced(self) -> bool:
        """Whether this variant must fit the budget (only the default http layer must)."""
        return self.variant in ENFORCED_VARIANTS

    def limit_problem(self) -> str:
        """One line naming the exceeded limit(s); empty when within limits."""
        problems = []
        if self.zipped_bytes > self.max_zipped_bytes:
            problems.append(f"zipped {_mb(self.zipped_bytes)} > {_mb(self.max_zipped_bytes)}")
        if self.unzipped_bytes > self.max_unzipped_bytes:
            problems.append(f"unzipped {_mb(self.unzipped_bytes)} > {_mb(self.max_unzipped_bytes)}")
        return ", ".join(problems)


def build_layer(
    out_dir: str | os.PathLike[str],
    *,
    arch: str = "x86_64",
    python_version: str = DEFAULT_PYTHON_VERSION,
    variant: str = "http",
    zip_path: str | os.PathLike[str] | None = None,
    layer_src: str | os.PathLike[str] | None = None,
    pip_args: Sequence[str] = (),
) -> LayerBuild:
    """Build the layer into `out_dir` (replacing a previous build there) and zip it.

    Dependencies are installed with pip for `arch` and `python_version` (binary wheels only),
    at the versions pinned in pyproject.toml. The zip goes to `zip_path`, or `<out_dir>.zip`.
    `layer_src` is the folder holding wrapper.sh and extensions/ (default: the repository's
    `layer/`); `pip_args` are passed on to every `pip install`.
    """
    if arch not in PLATFORMS:
        raise LayerBuildError(f"unknown architecture {arch!r}: expected one of {', '.join(PLATFORMS)}")
    if variant not in VARIANTS:
        raise LayerBuildError(f"unknown variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    if not re.fullmatch(r"3\.\d{1,2}", python_version):
        raise LayerBuildError(f"bad python version {python_version!r}: expected e.g. 3.12")
    compiler = _bytecode_compiler(python_version)
    src = Path(layer_src) if layer_src is not None else _LAYER_SRC
    for needed in ("wrapper.sh", "extensions/lambdawrap", "python/lambdawrap_boot/sitecustomize.py"):
        if not (src / needed).is_file():
            raise LayerBuildError(f"layer source incomplete: {src / needed} not found")

    out = Path(out_dir).resolve()
    for source in (src.resolve(), _PACKAGE_DIR.resolve()):
        # `--out layer` from the repository's root would replace the layer's own sources (they
        # look like an earlier build) before copying them.
        if out == source or source in out.parents or out in source.parents:
            raise LayerBuildError(f"the layer folder {out} must not be, hold or be inside the sources it is built from ({source})")
    archive = Path(zip_path).resolve() if zip_path is not None else out.with_name(out.name + ".zip")
    if archive == out or out in archive.parents:
        raise LayerBuildError(f"the zip {archive} must not be inside the layer folder {out}")
    _prepare_out_dir(out)

    handler_reqs, companion_reqs = _requirements(variant)
    target = _TargetPlatform(PLATFORMS[arch], python_version, tuple(pip_args))

    # Runtime side: the files the platform and the runtime use, then python/.
    _copy_file(src / "wrapper.sh", out / "wrapper.sh", mode=0o755)
    _copy_file(src / "extensions" / "lambdawrap", out / "extensions" / "lambdawrap", mode=0o755)
    _copy_file(src / "python" / "lambdawrap_boot" / "sitecustomize.py", out / "python" / "lambdawrap_boot" / "sitecustomize.py")
    python_dir = out / "python"
    _copy_package(python_dir / "lambdawrap", allowed=HANDLER_SIDE)
    # The function side's dependencies (wrapt) are private too: python/ is on the function's
    # sys.path, where they would shadow (or be shadowed by) the function's own.
    handler_lib = out / "lambdawrap" / "handler-lib"
    target.install(handler_reqs, handler_lib)
    _strip_dependencies(handler_lib, keep=set())

    # Companion side: a private folder, put on PYTHONPATH by extensions/lambdawrap only.
    companion_dir = out / "lambdawrap" / "companion-lib"
    _copy_package(companion_dir / "lambdawrap", allowed=COMPANION_SIDE)
    target.install(companion_reqs, companion_dir)
    _strip_dependencies(companion_dir, keep={"lambdawrap"})
    _close_namespaces(companion_dir)

    _compile_bytecode(out, compiler)
    _normalise_modes(out)
    archive.parent.mkdir(parents=True, exist_ok=True)
    write_deterministic_zip(out, archive)
    return LayerBuild(
        out_dir=out,
        zip_path=archive,
        arch=arch,
        python_version=python_version,
        variant=variant,
        zipped_bytes=archive.stat().st_size,
        unzipped_bytes=_tree_bytes(out),
        compiled_by=f"{compiler.path} ({compiler.full_version})",
    )


def layer_python_version(layer_dir: str | os.PathLike[str]) -> str | None:
    """The Python version a built layer is for (the tag of its wrapt extension), or None for
    a layer without one (the development layer, whose packages come from the interpreter's
    environment)."""
    for path in sorted((Path(layer_dir) / "lambdawrap" / "handler-lib" / "wrapt").glob("_wrappers.cpython-*")):
        found = re.match(r"_wrappers\.cpython-3(\d+)", path.name)
        if found:
            return f"3.{found.group(1)}"
    return None


def write_deterministic_zip(folder: Path, archive: Path) -> None:
    """Zip `folder`'s contents: sorted entries, fixed timestamps, Unix modes kept."""
    # Entry names as stored (folders end with "/"), sorted bytewise.
    entries = sorted((path.relative_to(folder).as_posix() + ("/" if path.is_dir() else ""), path) for path in _walk(folder))
    partial = archive.with_name(archive.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, path in entries:
            mode = path.stat().st_mode
            if path.is_dir():
                info = zipfile.ZipInfo(name, date_time=_FIXED_ZIP_TIME)
                info.external_attr = ((stat.S_IFDIR | 0o755) << 16) | 0x10  # 0x10: MS-DOS directory flag
                info.create_system = 3  # Unix, so unzip honours the mode bits
                zf.writestr(info, b"")
            else:
                info = zipfile.ZipInfo(name, date_time=_FIXED_ZIP_TIME)
                info.external_attr = (stat.S_IFREG | (0o755 if mode & 0o111 else 0o644)) << 16
                info.create_system = 3
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    os.replace(partial, archive)


# build steps -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _TargetPlatform:
    platform: str
    python_version: str
    pip_args: tuple[str, ...]

    def install(self, requirements: Iterable[str], target: Path) -> None:
        requirements = list(requirements)
        if not requirements:
            return
        command = [
            sys.executable, "-m", "pip", "install",
            "--disable-pip-version-check", "--no-input", "--quiet", "--no-compile",
            "--target", str(target),
            "--platform", self.platform,
            "--python-version", self.python_version,
            "--implementation", "cp",
            "--only-binary=:all:",
            *self.pip_args,
            *requirements,
        ]  # fmt: skip
        _logger.info("installing %s into %s", " ".join(requirements), target)
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
            tail = detail[-1] if detail else f"exit code {result.returncode}"
            raise LayerBuildError(f"pip could not install {' '.join(requirements)} for {self.platform} python {self.python_version}: {tail}")


def _requirements(variant: str) -> tuple[list[str], list[str]]:
    """(handler-side, companion-side) pinned requirements, from pyproject.toml."""
    try:
        dependencies, extras = declared_dependencies()
    except PinsError as exc:
        raise LayerBuildError(str(exc)) from None
    handler = [r for r in dependencies if requirement_name(r) in _HANDLER_DEPENDENCIES]
    companion = [r for r in dependencies if requirement_name(r) not in _HANDLER_DEPENDENCIES]
    if variant == "grpc":
        companion += extras.get("grpc", [])
    if not handler:
        raise LayerBuildError("pyproject.toml pins no wrapt: the handler side needs it")
    return handler, companion


def _bytecode_compiler(python_version: str) -> Interpreter:
    """An interpreter of the target version: bytecode is only valid for the version that made it."""
    try:
        return find_interpreter(python_version)
    except InterpreterNotFound as exc:
        raise LayerBuildError(f"the layer's bytecode for Python {python_version} must be compiled by a Python {python_version} interpreter, and {exc}") from None


def _compile_bytecode(out: Path, compiler: Interpreter) -> None:
    """Byte-compile every module of the layer for the compiler's version (unchecked-hash
    invalidation: no timestamps, and no look at the source at import); python/ also at
    optimisation levels 1 and 2."""
    _compileall(compiler, out, out, ())
    # PYTHONOPTIMIZE is the function's to set, and then its process looks for .opt-N.pyc files
    # only: without them it would compile lambdawrap's modules at every cold start (~55 ms of
    # CPU on a full core). ~1 MB unzipped. (The companion's start ignores PYTHONOPTIMIZE.)
    if (out / "python").is_dir():
        _compileall(compiler, out, out / "python", ("-o", "1", "-o", "2"))


def _compileall(compiler: Interpreter, out: Path, folder: Path, levels: Sequence[str]) -> None:
    command = [
        os.path.abspath(compiler.path), "-s", "-m", "compileall", "-q",  # run from another folder
        "--invalidation-mode", "unchecked-hash",
        *levels,
        "-s", str(out), "-p", _OPT,
        str(folder),
    ]  # fmt: skip
    # Isolated as -I would (no PYTHON* variable, no user site, an empty working folder first on
    # sys.path), but with a fixed hash seed, which -I would ignore: Python 3.10 stores a set
    # constant (`x in {"a", "b"}`) in the order of its strings' hashes, drawn anew per process.
    environ = {name: value for name, value in os.environ.items() if not name.startswith("PYTHON")}
    environ["PYTHONHASHSEED"] = "0"
    # One process, no -j: a file compiled in a worker that compiled others before could
    # marshal differently, and the zip would no longer be reproducible.
    with tempfile.TemporaryDirectory(prefix="lambdawrap-compile-") as empty:
        result = subprocess.run(command, capture_output=True, text=True, check=False, env=environ, cwd=empty)
    if result.returncode != 0:
        detail = (result.stdout.strip() or result.stderr.strip()).splitlines()
        raise LayerBuildError(f"{compiler.path} could not compile the layer's modules: {detail[-1] if detail else f'exit code {result.returncode}'}")


def _prepare_out_dir(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise LayerBuildError(f"{out} exists and is not a folder")
        # Replace only an earlier layer build (or an empty folder), never an arbitrary folder.
        if any(out.iterdir()) and not ((out / "wrapper.sh").is_file() and (out / "python").is_dir()):
            raise LayerBuildError(f"refusing to replace {out}: it is not empty and holds no earlier layer build")
        shutil.rmtree(out)
    out.mkdir(parents=True)


def _copy_file(source: Path, destination: Path, *, mode: int = 0o644) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)
    destination.chmod(mode)


def _copy_package(destination: Path, *, allowed: Sequence[str]) -> None:
    """Copy the allowed top-level entries of the lambdawrap package (sources only)."""
    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n == "__pycache__" or not n.endswith(".py") and not (Path(folder) / n).is_dir()}

    destination.mkdir(parents=True)
    for name in allowed:
        source = _PACKAGE_DIR / name
        if source.is_dir():
            # Contents only: a mode would come from the checkout (an executable bit set by hand,
            # a file system without them), and the zip's bytes with it.
            shutil.copytree(source, destination / name, ignore=ignore, copy_function=shutil.copyfile)
        elif source.is_file():
            shutil.copyfile(source, destination / name)
        else:
            raise LayerBuildError(f"the package has no {name} to ship")


def _strip_dependencies(folder: Path, *, keep: set[str]) -> None:
    """Remove bytecode (compiled again later, for the target), console scripts and test
    suites from pip-installed packages."""
    shutil.rmtree(folder / "bin", ignore_errors=True)
    for path in sorted(folder.rglob("*"), reverse=True):
        if not path.exists():
            continue
        top = path.relative_to(folder).parts[0]
        if path.is_dir() and (path.name == "__pycache__" or (path.name in _DEPENDENCY_JUNK_DIRS and top not in keep)):
            shutil.rmtree(path)
        elif path.is_file() and path.suffix in (".pyc", ".pyo"):
            path.unlink()
    for record in sorted(folder.glob("*.dist-info/RECORD")):
        _forget_removed(record, folder)


def _close_namespaces(folder: Path) -> None:
    """Make each top-level namespace package (opentelemetry/, google/: no __init__.py) a
    regular one. The companion's interpreter keeps its own site-packages on sys.path (the
    runtime's boto3 is there): a namespace would merge with the one there (an image that pip
    installed the function's OpenTelemetry packages into it), and the companion would import
    the function's modules beside its own, of other versions."""
    for path in sorted(folder.iterdir()):
        if path.is_dir() and path.name.isidentifier() and path.name != "__pycache__" and not (path / "__init__.py").exists():
            (path / "__init__.py").write_text("")


def _forget_removed(record: Path, folder: Path) -> None:
    """Take the files the build removed out of a package's RECORD: its console scripts' lines
    hash scripts whose first line names the interpreter pip ran under, and the zip's bytes
    would depend on the machine that built it."""
    kept = []
    for line in record.read_text(encoding="utf-8").splitlines(keepends=True):
        name = (next(csv.reader([line]), None) or [""])[0]
        path = Path(os.path.normpath(folder / name))
        if name and folder in path.parents and path.is_file():
            kept.append(line)
    record.write_text("".join(kept), encoding="utf-8")


def _normalise_modes(folder: Path) -> None:
    for path in _walk(folder):
        mode = path.stat().st_mode
        path.chmod(0o755 if path.is_dir() or mode & 0o111 else 0o644)


def _walk(folder: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(folder):
        base = Path(root)
        for name in dirs + files:
            yield base / name


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in _walk(folder) if p.is_file())


def _mb(size: int) -> str:
    return f"{size / MB:.2f} MB"


# command line ----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lambdawrap build-layer", description="Build the lambdawrap Lambda layer (a folder that unzips into /opt, and its zip).")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to build the layer into (an earlier build there is replaced)")
    parser.add_argument("--arch", choices=sorted(PLATFORMS), default="x86_64", help="target architecture (default: x86_64)")
    parser.add_argument("--python-version", default=DEFAULT_PYTHON_VERSION, metavar="X.Y", help=f"the Python runtime the layer is for; its bytecode is compiled by a Python of that version found on this machine (default: {DEFAULT_PYTHON_VERSION})")
    parser.add_argument("--variant", choices=VARIANTS, default="http", help="http (default): OTLP/HTTP only; grpc: adds the OTLP/gRPC exporter and grpcio")
    parser.add_argument("--zip", metavar="FILE", help="where to write the zip (default: <DIR>.zip)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`lambdawrap build-layer`: build, print the sizes; exit 1 when the http layer is over budget."""
    args = _parser().parse_args(argv)
    try:
        build = build_layer(args.out, arch=args.arch, python_version=args.python_version, variant=args.variant, zip_path=args.zip)
    except (LayerBuildError, OSError) as exc:
        sys.stderr.write(f"lambdawrap build-layer: {exc}\n")
        return 1
    sys.stdout.write(
        f"layer {build.variant} {build.arch} python{build.python_version}: {build.out_dir}\n"
        f"bytecode: compiled by {build.compiled_by}\n"
        f"zip: {build.zip_path}\n"
        f"zipped: {_mb(build.zipped_bytes)}  unzipped: {_mb(build.unzipped_bytes)}\n"
    )
    if build.limits_enforced and not build.within_limits:
        sys.stderr.write(f"lambdawrap build-layer: the {build.variant} layer is over its size budget: {build.limit_problem()}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
