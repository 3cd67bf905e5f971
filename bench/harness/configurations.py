"""What bare, lambdawrap (its built layer), otel, adot-fast-start, datadog and the diagnostic
configurations are, and how an environment is set up for each: the files, the layer, the
environment variables, and the emulator that runs it under Lambda's limits."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from lambdawrap.devtools.emulator import Emulator
from lambdawrap.devtools.otlp_receiver.certificates import make_test_pki

from harness.layers import ADOT, DATADOG, OTEL

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
EXAMPLE = ROOT / "examples" / "hello" / "app.py"
EVENT = ROOT / "examples" / "events" / "apigw-rest.json"
FUNCTIONS = BENCH / "functions"
# Side by side, in this order: bare first (every ratio is to bare), then lambdawrap, then the
# competitors (each runs only when its layer is installed).
CONFIGS = ("bare", "lambdawrap", "otel", "adot-fast-start", "datadog")
COMPETITOR_CONFIGS = CONFIGS[2:]
MEMORY_SIZES = (128, 512, 1769)  # MB: the smallest Lambda, a common size, one full vCPU
FULL_CORE_MB = 1769
NOOP_EXT = "bare+noop-ext"  # diagnostic: bare plus an external extension that does nothing
LW_RUNTIME_ONLY = "lambdawrap: runtime side only"  # diagnostic (cold start): exec wrapper + boot, no companion
LW_COMPANION_ONLY = "lambdawrap: companion only"  # diagnostic (cold start): companion, no exec wrapper
# diagnostic (cold start): the companion does not hold init's end for its exporters (the default
# below one vCPU of memory is 500 ms); what it has not loaded by then loads behind the function
LW_NO_STARTUP_WAIT = "lambdawrap: LAMBDAWRAP_STARTUP_WAIT_MS=0"
COLD_DIAGNOSTICS = (LW_RUNTIME_ONLY, LW_COMPANION_ONLY, LW_NO_STARTUP_WAIT)
# Every environment: /opt and /var/task are read-only on Lambda, so nothing the function or an
# extension imports can leave bytecode behind for the next cold start; a layer is only as fast
# as the bytecode it ships.
# The launcher's line that starts the companion (layer/extensions/lambdawrap).
COMPANION_START = '"$python" -E -s -m lambdawrap.companion'
COMMON_ENV = {"NO_PROXY": "127.0.0.1,localhost", "PYTHONDONTWRITEBYTECODE": "1"}
DATADOG_HANDLER = "datadog_lambda.handler.handler"
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


class Stack:
    """Scratch space, the task folder, the layers, the competitors' sinks and a factory of
    emulators for each configuration.

    `python` is the interpreter the function's runtime (and its extensions, and the in-process
    workers) run on, None: the bench's own; `lambdawrap_layer` must be built for its version."""

    def __init__(self, configs: list, lambdawrap_layer: Path, sinks: dict | None = None, python: str | None = None) -> None:
        self.configs = configs
        self.layer = lambdawrap_layer
        self.sinks = sinks or {}
        self.python = python or sys.executable
        self.scratch = Path(tempfile.mkdtemp(prefix="lwbench-"))
        self.task = self.scratch / "task"
        self.task.mkdir()
        self._pki: dict | None = None
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
        shutil.copytree(lambdawrap_layer, self.layer_without_companion, symlinks=True, ignore=shutil.ignore_patterns("extensions"))

    def test_pki(self) -> dict:
        """A throwaway CA and the https receiver's certificate (made once per stack)."""
        if self._pki is None:
            self._pki = make_test_pki(self.scratch / "pki")
        return self._pki

    def socket_path(self) -> str:
        """A fresh path for a lambdawrap Unix socket."""
        # Unix socket paths are capped at 108 bytes: a short folder of its own under /tmp.
        folder = tempfile.mkdtemp(prefix="lwb", dir="/tmp")
        return os.path.join(folder, "lw.sock")

    def importtime_layer(self) -> Path:
        """A copy of lambdawrap's layer whose companion starts under `-X importtime`: the
        launcher starts it with -E, so PYTHONPROFILEIMPORTTIME does not reach it."""
        folder = self.scratch / "layer-importtime"
        if not folder.exists():
            shutil.copytree(self.layer, folder, symlinks=True)
            launcher = folder / "extensions" / "lambdawrap"
            text = launcher.read_text()
            profiled = text.replace(COMPANION_START, COMPANION_START.replace(" -E ", " -X importtime -E "))
            if profiled == text:
                raise RuntimeError(f"the companion's start ({COMPANION_START!r}) is not in {launcher}: the bench's importtime copy needs updating")
            launcher.write_text(profiled)
        return folder

    def emulator(self, config: str, handler: str, endpoint: str, extra_env: dict | None = None, timeout_s: float = 6.0, memory_mb: int = FULL_CORE_MB, init_cpu: str = "unthrottled", freeze: bool = True, layer_folder: Path | None = None) -> Emulator:
        """An emulator (not started) running handler under config's layer and environment at
        memory_mb, with Lambda's limits (CPU share, memory, freezing), exporting to endpoint.
        `layer_folder` replaces lambdawrap's layer (a copy of it)."""
        env = dict(COMMON_ENV)
        layer = None
        if config in ("lambdawrap", LW_RUNTIME_ONLY, LW_COMPANION_ONLY, LW_NO_STARTUP_WAIT):
            layer = str(self.layer_without_companion if config == LW_RUNTIME_ONLY else (layer_folder or self.layer))
            env.update({"LAMBDAWRAP_SOCKET": self.socket_path(), "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
            if config != LW_COMPANION_ONLY:
                env["AWS_LAMBDA_EXEC_WRAPPER"] = "/opt/wrapper.sh"
            if config == LW_NO_STARTUP_WAIT:
                env["LAMBDAWRAP_STARTUP_WAIT_MS"] = "0"
        elif config == NOOP_EXT:
            layer = str(self.noop_layer)
        elif config == "otel":
            layer = str(OTEL.folder)
            env.update({"AWS_LAMBDA_EXEC_WRAPPER": "/opt/otel-instrument", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
        elif config == "adot-fast-start":
            layer = str(ADOT.folder)
            # Spans go as OTLP over UDP to the X-Ray daemon's address, here a loopback sink.
            env.update({"AWS_LAMBDA_EXEC_WRAPPER": "/opt/otel-instrument", "OTEL_AWS_LAMBDA_FAST_START": "true", "AWS_XRAY_DAEMON_ADDRESS": self.sinks["adot_udp"].address})
        elif config == "datadog":
            layer = str(DATADOG.folder)
            env.update(datadog_env(handler, self.sinks))
            handler = DATADOG_HANDLER
        env.update(extra_env or {})
        # The init limit is raised from Lambda's 10 s: at 128 MB with init throttled like an
        # invocation, some configurations take longer, and the bench wants the figure.
        return Emulator(str(self.task), handler, layer, env=env, invoke_port=None, timeout_s=timeout_s, memory_mb=memory_mb, init_cpu=init_cpu, freeze=freeze, init_timeout_s=120.0, python=self.python)

    def close(self) -> None:
        """Remove the scratch space."""
        shutil.rmtree(self.scratch, ignore_errors=True)


def datadog_env(handler: str, sinks: dict) -> dict:
    """Datadog's library without its extension (a closed binary the bench cannot run), set up
    so that it never waits on the missing extension or agent. Everything else is its default."""
    return {
        # Handler redirection, as Datadog's layer documents it: the runtime loads Datadog's
        # handler, which imports and wraps the user's.
        "DD_LAMBDA_HANDLER": handler,
        # The Forwarder set-up, Datadog's documented alternative to the extension: metrics are
        # written to stdout instead of being posted to Datadog's API at the end of every
        # invocation (which, with no network here, would wait on a connection each time).
        # Without /opt/extensions/datadog-agent, ddtrace itself writes traces to stdout, at the
        # end of each trace (its LogWriter). No agent URL is set: that would switch ddtrace to
        # a background HTTP writer, a set-up Datadog does not ship in Lambda.
        "DD_FLUSH_TO_LOG": "true",
        # A safety net: anything that still goes to DogStatsD lands on a loopback sink, counted.
        "DD_DOGSTATSD_URL": "udp://" + sinks["datadog_statsd"].address,
    }
