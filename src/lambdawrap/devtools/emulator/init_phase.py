"""The init phase (spec §1): launch the extensions and wait for them to register, start the
runtime through the managed bootstrap, and wait until the runtime and every extension are ready,
all within the init timeout; platform.init* records and the INIT_REPORT line tell how it went."""

from __future__ import annotations

import os
import secrets
import time
import uuid

from lambdawrap.devtools.emulator.environment import extension_environment, log_stream_name, runtime_environment
from lambdawrap.devtools.emulator.platform_reports import to_ms
from lambdawrap.devtools.emulator.processes import ManagedProcess
from lambdawrap.devtools.emulator.reset import reset_environment
from lambdawrap.devtools.emulator.sandbox_state import SandboxState
from lambdawrap.devtools.emulator.state import Extension, error_body
from lambdawrap.devtools.emulator.worker_logs import SOCKET_ENV as WORKER_LOG_SOCKET_ENV


class InitFailure(Exception):
    """Init failed: `body` is what the caller gets; `status` is "timeout" or "error"."""

    def __init__(self, error_type: str, body: bytes, status: str = "error") -> None:
        super().__init__(error_type)
        self.error_type = error_type
        self.body = body
        self.status = status


class InitPhase:
    """Brings the environment from nothing to ready, or fails with InitFailure."""

    def __init__(self, state: SandboxState, runtime_bootstrap: str, runtime_dir: str, runtime_version: str) -> None:
        self._state = state
        self._bootstrap = runtime_bootstrap
        self._runtime_dir = runtime_dir
        self._runtime_version = runtime_version
        self.api_address = ""  # set by the emulator once the API server listens
        self.worker_log_socket: str | None = None  # Managed Instances: where workers send their output

    def run_proactive(self) -> None:
        """Initialize eagerly (proactive init); raises InitFailure if it fails."""
        with self._state.invoke_lock:
            if not self._state.initialized:
                try:
                    self.run(str(uuid.uuid4()), run_again=False)
                except InitFailure:
                    reset_environment(self._state, "failure")
                    raise
                if not self._state.config.managed_instances:
                    self._state.freeze()  # ready, and waiting for its first event

    def run(self, request_id: str, run_again: bool = True) -> None:
        """Initialize for an invocation (or, not `run_again`, a proactive init: no invocation
        to run a failed one again in); raises InitFailure if it fails."""
        # An init that fails or overruns its 10 s is run again inside the invoke, bounded by the
        # function timeout (the platform's "suppressed init", spec §1; on Managed Instances,
        # whose init comes before any request is routed, only one that overran).
        phase = "invoke" if self._state.init_count else "init"
        try:
            self._attempt(phase, request_id)
        except InitFailure as failure:
            if not run_again or phase == "invoke" or (failure.status != "timeout" and self._state.config.managed_instances):
                raise
            reset_environment(self._state, "failure")
            self._attempt("invoke", request_id)

    def _attempt(self, phase: str, request_id: str) -> None:
        """One init attempt; `phase` is "init", or "invoke" when it runs inside an invocation."""
        state = self._state
        config = state.config
        state.init_count += 1
        started = time.monotonic()
        deadline = started + (config.init_limit_s if phase == "init" else config.timeout_s)
        state.instance_id = secrets.token_hex(16)
        runtime_env = runtime_environment(config, self.api_address, self._runtime_dir, log_stream_name())
        if self.worker_log_socket:
            runtime_env[WORKER_LOG_SOCKET_ENV] = self.worker_log_socket
        with state.cv:
            state.registration_open = True
            state.subscriptions_open = True
            state.runtime_ready = False
            state.init_error = None
            state.fatal = None
            state.launched = []
            state.extensions = {}
            state.runtime = None
            state.pool.clear()
        state.limits.environment_starting(state.note_out_of_memory)
        state.bus.start_init_replay()
        state.bus.platform(
            "initStart",
            {
                "initializationType": config.initialization_type,
                "phase": phase,
                "runtimeVersion": self._runtime_version,
                "functionName": config.function_name,
                "functionVersion": config.function_version,
                "instanceId": state.instance_id,
                "instanceMaxMemory": config.memory_mb * 1024 * 1024,
            },
        )
        try:
            self._launch_extensions(extension_environment(runtime_env), request_id)
            with state.cv:
                if not state.wait(lambda: all(e.id for e in state.launched) or self._crashed_extension() is not None, deadline):
                    raise InitFailure("Sandbox.Timedout", error_body("Sandbox.Timedout", f"RequestId: {request_id} Error: extensions did not register in time"), "timeout")
                self._check_extensions(request_id)
            with state.cv:
                # Held until `runtime` is set: a runtime that calls /next before it is (a busy
                # machine can hold this thread that long) would otherwise never end init.
                state.runtime_launched_at = time.monotonic()
                state.runtime = ManagedProcess(
                    [self._bootstrap],
                    env=runtime_env,
                    cwd=config.task_dir,
                    on_line=self.runtime_line,
                    on_exit=state.notify,
                    name="runtime",
                    placement=state.limits.placement(),
                    log_frames=config.telemetry_log_fd and not config.managed_instances,
                )
            with state.cv:
                state.wait(lambda: state.runtime_ready or state.runtime.exited() or state.fatal is not None or self._crashed_extension() is not None, deadline)
                state.registration_open = False
                self._check_runtime(request_id)
                self._check_extensions(request_id)
                if not state.runtime_ready:
                    raise InitFailure("Sandbox.Timedout", error_body("Sandbox.Timedout", f"RequestId: {request_id} Error: Init timed out after {deadline - started:.2f} seconds"), "timeout")
                ready = state.wait(
                    lambda: all(e.called_next for e in state.extensions.values()) or state.fatal is not None or self._crashed_extension() is not None or state.runtime.exited(),
                    deadline,
                )
                self._check_runtime(request_id)
                self._check_extensions(request_id)
                if not ready:
                    raise InitFailure("Sandbox.Timedout", error_body("Sandbox.Timedout", f"RequestId: {request_id} Error: extensions did not finish init in time"), "timeout")
                state.subscriptions_open = False
                state.initialized = True
        except InitFailure as failure:
            self._end(phase, started, failure.status, failure.error_type)
            raise
        self._end(phase, started, "success", None)
        state.limits.init_succeeded()
        state.pending_init_duration = to_ms(time.monotonic() - started)

    def _end(self, phase: str, started: float, status: str, error_type: str | None) -> None:
        """Report how an attempt ended: initRuntimeDone, the extensions, initReport, INIT_REPORT."""
        state = self._state
        with state.cv:
            state.subscriptions_open = False
            state.registration_open = False
            extensions = list(state.extensions.values()) + [e for e in state.launched if e.id is None]
            runtime_started = state.runtime is not None
        init_type = state.config.initialization_type
        done = {"initializationType": init_type, "phase": phase, "status": status}
        if error_type:
            done["errorType"] = error_type
        if runtime_started:
            # RAPID defers initRuntimeDone only once it has started the runtime: an init that
            # failed before (an extension that crashed or never registered, one that could not
            # be launched) reports its extensions and initReport, and no initRuntimeDone.
            state.bus.platform("initRuntimeDone", done)
        for ext in extensions:
            state.bus.platform("extension", ext.record())
            state.platform_line(f"EXTENSION\tName: {ext.name}\tState: {ext.state}\tEvents: [{','.join(sorted(ext.events))}]")
        duration = to_ms(time.monotonic() - started)
        state.bus.platform("initReport", {"initializationType": init_type, "phase": phase, "metrics": {"durationMs": duration}})
        line = f"INIT_REPORT Init Duration: {duration:.2f} ms\tPhase: {phase}\tStatus: {status}"
        state.platform_line(line + (f"\tError Type: {error_type}" if error_type else ""))
        state.bus.stop_init_replay()

    def _launch_extensions(self, env: dict, request_id: str) -> None:
        state = self._state
        folder = os.path.join(state.config.opt_dir, "extensions") if state.config.opt_dir else ""
        if not folder or not os.path.isdir(folder):
            return
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                continue  # directories are ignored, as the platform does
            ext = Extension(name=name, external=True, path=path)
            with state.cv:
                state.launched.append(ext)
            try:
                ext.process = ManagedProcess([path], env=env, cwd="/", on_line=self._extension_line, on_exit=state.notify, name=name, placement=state.limits.placement())
            except OSError as exc:
                ext.state = "LaunchError"
                ext.error_type = "PermissionDenied" if isinstance(exc, PermissionError) else "UnknownError"
                raise InitFailure("Extension.LaunchError", error_body("Extension.LaunchError", f"RequestId: {request_id} Error: fork/exec {path}: {exc.strerror}")) from None

    def _crashed_extension(self) -> Extension | None:
        return next((e for e in self._state.launched if e.process is not None and e.process.exited()), None)

    def _check_extensions(self, request_id: str) -> None:
        state = self._state
        if state.fatal is not None:
            raise InitFailure(state.fatal, error_body(state.fatal, f"RequestId: {request_id} Error: {state.fatal}"))
        crashed = self._crashed_extension()
        if crashed is not None:
            code = crashed.process.returncode
            detail = "exit code 0" if code == 0 else crashed.process.exit_description()
            crashed.state = "InitError"
            crashed.error_type = "Extension.Crash"
            raise InitFailure("Extension.Crash", error_body("Extension.Crash", f"RequestId: {request_id} Error: {detail}"))

    def _check_runtime(self, request_id: str) -> None:
        state = self._state
        if state.runtime_ready:
            return
        # RIC posts init/error and then exits; the posted body is what the caller gets.
        if state.init_error is not None:
            raise InitFailure(*state.init_error)
        if state.runtime.exited():
            detail = state.runtime.exit_description()
            raise InitFailure("Runtime.ExitError", error_body("Runtime.ExitError", f"RequestId: {request_id} Error: Runtime exited with error: {detail}"))

    def runtime_line(self, stream: str, line: str) -> None:
        """A line of the function's output: a `function` record and a log line."""
        self._state.bus.emit("function", "function", line)
        self._state.log("function", line)

    def _extension_line(self, stream: str, line: str) -> None:
        self._state.bus.emit("extension", "extension", line)
        self._state.log("extension", line)
