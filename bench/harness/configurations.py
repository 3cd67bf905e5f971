"""What bare, lambdawrap, otel and the diagnostic configurations are, and how an environment is
set up for each: the files, the layer, the environment variables, and the emulator that runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lambdawrap.devtools.emulator import Emulator

from harness.measure import log

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
LAYER = ROOT / "layer"
EXAMPLE = ROOT / "examples" / "hello" / "app.py"
EVENT = ROOT / "examples" / "events" / "apigw-rest.json"
FUNCTIONS = BENCH / "functions"
OTEL_LAYER_SRC = BENCH / "otel_layer"
OTEL_LAYER = BENCH / ".otel-layer"
OTEL_PKGS = OTEL_LAYER / "python"
OTEL_REQUIREMENTS = BENCH / "otel-layer-requirements.txt"
CONFIGS = ("bare", "lambdawrap", "otel")
NOOP_EXT = "bare+noop-ext"  # diagnostic: bare plus an external extension that does nothing
LW_RUNTIME_ONLY = "lambdawrap: runtime side only"  # diagnostic (cold start): exec wrapper + boot, no companion
LW_COMPANION_ONLY = "lambdawrap: companion only"  # diagnostic (cold start): companion, no exec wrapper
COLD_DIAGNOSTICS = (LW_RUNTIME_ONLY, LW_COMPANION_ONLY)
NOOP_EXTENSION = """#!{python} -S
# A no-op external extension: registers for INVOKE and SHUTDOWN and calls /next at once.
# It measures what merely having an external extension costs on this platform (emulator).
import http.client, json, os
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
conn = http.client.HTTPConnection(host, int(port))
conn.request("POST", "/2020-01-01/extension/register", body=json.dumps({{"events": ["INVOKE", "SHUTDOWN"]}}), headers={{"Lambda-Extension-Name": "noop"}})
reply = conn.getresponse()
ident = reply.getheader("Lambda-Extension-Identifier")
reply.read()
while True:
    conn.request("GET", "/2020-01-01/extension/event/next", headers={{"Lambda-Extension-Identifier": ident}})
    if json.loads(conn.getresponse().read()).get("eventType") == "SHUTDOWN":
        break
"""


def otel_available() -> tuple[bool, str]:
    """Whether the otel layer's packages are installed, and if not, what to run."""
    if not (OTEL_PKGS / "bin" / "opentelemetry-instrument").exists() or not (OTEL_PKGS / "opentelemetry" / "instrumentation" / "aws_lambda").is_dir():
        return False, f"the OpenTelemetry layer packages are not installed in {OTEL_PKGS.relative_to(ROOT)} (run: python bench/run.py --install-otel)"
    return True, ""


def assemble_otel_layer() -> None:
    """Put our otel-instrument wrapper and otel_wrapper.py next to the installed packages."""
    shutil.copy2(OTEL_LAYER_SRC / "otel-instrument", OTEL_LAYER / "otel-instrument")
    os.chmod(OTEL_LAYER / "otel-instrument", 0o755)
    shutil.copy2(OTEL_LAYER_SRC / "otel_wrapper.py", OTEL_PKGS / "otel_wrapper.py")


def install_otel() -> int:
    """pip-install the otel layer's pinned packages into bench/.otel-layer/python; pip's exit code."""
    OTEL_PKGS.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "install", "--upgrade", "--target", str(OTEL_PKGS), "-r", str(OTEL_REQUIREMENTS)]
    log("installing the OpenTelemetry layer packages: " + " ".join(cmd))
    return subprocess.call(cmd)


class Stack:
    """Scratch space, the task folder and a factory of emulators for each configuration.

    `python` is the interpreter the function's runtime (and the in-process workers) run on;
    None: the bench's own."""

    def __init__(self, configs: list, python: str | None = None) -> None:
        self.configs = configs
        self.python = python or sys.executable
        self.scratch = Path(tempfile.mkdtemp(prefix="lwbench-"))
        self.task = self.scratch / "task"
        self.task.mkdir()
        shutil.copy2(EXAMPLE, self.task / "app.py")
        for path in FUNCTIONS.glob("*.py"):
            shutil.copy2(path, self.task / path.name)
        self.event = json.loads(EVENT.read_text())
        self.event_file = str(EVENT)
        self.noop_layer = self.scratch / "noop-layer"
        (self.noop_layer / "extensions").mkdir(parents=True)
        script = self.noop_layer / "extensions" / "noop"
        script.write_text(NOOP_EXTENSION.format(python=self.python))
        script.chmod(0o755)
        self.layer_without_companion = self.scratch / "layer-no-companion"
        shutil.copytree(LAYER, self.layer_without_companion, symlinks=True, ignore=shutil.ignore_patterns("extensions", "__pycache__"))

    def socket_path(self) -> str:
        """A fresh path for a lambdawrap Unix socket."""
        # Unix socket paths are capped at 108 bytes: a short folder of its own under /tmp.
        folder = tempfile.mkdtemp(prefix="lwb", dir="/tmp")
        return os.path.join(folder, "lw.sock")

    def emulator(self, config: str, handler: str, endpoint: str, extra_env: dict | None = None, timeout_s: float = 6.0) -> Emulator:
        """An emulator (not started) running handler under config's layer and environment, exporting to endpoint."""
        env = {"NO_PROXY": "127.0.0.1,localhost"}
        layer = None
        if config in ("lambdawrap", LW_RUNTIME_ONLY, LW_COMPANION_ONLY):
            layer = str(self.layer_without_companion if config == LW_RUNTIME_ONLY else LAYER)
            env.update({"LAMBDAWRAP_SOCKET": self.socket_path(), "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
            if config != LW_COMPANION_ONLY:
                env["AWS_LAMBDA_EXEC_WRAPPER"] = "/opt/wrapper.sh"
        elif config == NOOP_EXT:
            layer = str(self.noop_layer)
        elif config == "otel":
            layer = str(OTEL_LAYER)
            env.update({"AWS_LAMBDA_EXEC_WRAPPER": "/opt/otel-instrument", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
        env.update(extra_env or {})
        return Emulator(str(self.task), handler, layer, env=env, invoke_port=None, timeout_s=timeout_s, python=self.python)

    def close(self) -> None:
        """Remove the scratch space."""
        shutil.rmtree(self.scratch, ignore_errors=True)
