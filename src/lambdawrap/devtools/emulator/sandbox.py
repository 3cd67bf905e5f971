"""The execution environment's lifecycle: init, invoke, reset and shutdown (spec §1, §8).

One condition variable guards all state. API handler threads block on it (the runtime's and
the extensions' `/next`), the invoke path waits on it for outcomes, and a reset bumps a
generation counter so that every blocked thread of the old environment lets go.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import threading
import time
import uuid
from typing import Callable

from lambdawrap.devtools.emulator.environment import FunctionConfig, extension_environment, log_stream_name, runtime_environment
from lambdawrap.devtools.emulator.api_server import ApiError
from lambdawrap.devtools.emulator.processes import ManagedProcess
from lambdawrap.devtools.emulator.state import (
    MAX_EXTENSIONS,
    MAX_PAYLOAD_BYTES,
    Extension,
    Invocation,
    InvokeResult,
    Outcome,
    error_body,
    sanitize_error_type,
)
from lambdawrap.devtools.emulator.telemetry import Subscription, TelemetryBus, utc_timestamp

logger = logging.getLogger(__name__)

SHUTDOWN_BUDGET_S = 2.0  # overall reset/shutdown deadline with external extensions
RUNTIME_SHARE = 0.3  # the runtime's share of it before SIGKILL, as RIE does
TELEMETRY_FLUSH_S = 0.3
MEMORY_SAMPLE_S = 0.01

LogSink = Callable[[str, str], None]  # (source: function|extension|platform, line)


class InitFailure(Exception):
    def __init__(self, error_type: str, body: bytes, status: str = "error") -> None:
        super().__init__(error_type)
        self.error_type = error_type
        self.body = body
        self.status = status


class Sandbox:
    """One execution environment; at most one invocation at a time."""

    def __init__(self, config: FunctionConfig, bus: TelemetryBus, log: LogSink, runtime_bootstrap: str, runtime_dir: str) -> None:
        self.config = config
        self.bus = bus
        self._log = log
        self._bootstrap = runtime_bootstrap
        self._runtime_dir = runtime_dir
        self.api_address = ""
        self.runtime_version = ""
        self._cv = threading.Condition()
        self._invoke_lock = threading.Lock()
        self._runtime_gen = 0
        self._env_gen = 0
        self._initialized = False
        self._init_count = 0
        self._instance_id = ""
        self._runtime: ManagedProcess | None = None
        self._runtime_ready = False
        self._init_error: tuple[str, bytes] | None = None
        self._fatal: str | None = None
        self._registration_open = False
        self._subscriptions_open = False
        self._launched: list[Extension] = []
        self._extensions: dict[str, Extension] = {}
        self._current: Invocation | None = None
        self._pending_runtime: Invocation | None = None
        self._pending_init_duration: float | None = None
        self._runtime_peak_kb = 0
        self._out_of_memory: str | None = None  # request id whose runtime exceeded the memory size
        self.resets: list[str] = []  # reasons, in order, for tests and the CLI

    # ------------------------------------------------------------------ helpers

    def _wait(self, predicate: Callable[[], bool], deadline: float) -> bool:
        """Wait on the condition (held by the caller) until predicate() or the deadline."""
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._cv.wait(left)
        return True

    def _notify(self, *_: object) -> None:
        with self._cv:
            self._cv.notify_all()

    def _registered(self) -> list[Extension]:
        return [e for e in self._extensions.values()]

    def _runtime_dead(self) -> bool:
        return self._runtime is not None and self._runtime.exited()

    def _platform_line(self, line: str) -> None:
        self._log("platform", line)

    # ------------------------------------------------------------ runtime API

    def runtime_next(self) -> Invocation:
        runtime, current = self._runtime, self._current
        if runtime is not None and current is not None and current.response is not None and current.runtime_done_at is None:
            # Lines the function printed before its response come before runtimeDone, as on
            # the platform: let the pipe readers catch up first.
            runtime.drain_output()
        with self._cv:
            gen = self._runtime_gen
            inv = self._current
            if not self._runtime_ready and self._runtime is not None and not self._initialized:
                self._runtime_ready = True
                self._registration_open = False
                self._cv.notify_all()
            elif inv is not None and inv.response is not None and inv.runtime_done_at is None:
                inv.runtime_done_at = time.monotonic()
                self._emit_runtime_done(inv, *self._response_status(inv))
                self._cv.notify_all()
            elif inv is not None and inv.response is None and self._pending_runtime is None:
                raise ApiError(403, "InvalidStateTransition", "State transition from Running to Ready failed: no response was sent")
            while self._pending_runtime is None:
                if self._runtime_gen != gen:
                    raise ApiError(500, "Runtime.Reset", "the execution environment was reset")
                self._cv.wait()
            inv, self._pending_runtime = self._pending_runtime, None
            return inv

    def runtime_respond(self, request_id: str, outcome: Outcome) -> None:
        with self._cv:
            inv = self._current
            if inv is None or inv.request_id != request_id:
                raise ApiError(400, "InvalidRequestID", f"Invalid request ID: {request_id}")
            if inv.response is not None:
                raise ApiError(403, "InvalidStateTransition", "State transition from ResponseSent to ResponseSent failed")
            inv.response_at = time.monotonic()
            if len(outcome.body) > MAX_PAYLOAD_BYTES:
                size = len(outcome.body)
                inv.response = Outcome(
                    error_body("Function.ResponseSizeTooLarge", f"Response payload size ({size} bytes) exceeded maximum allowed payload size ({MAX_PAYLOAD_BYTES} bytes)."),
                    function_error=True,
                    error_type="Function.ResponseSizeTooLarge",
                )
                self._cv.notify_all()
                raise ApiError(413, "RequestEntityTooLarge", f"Exceeded maximum allowed payload size ({MAX_PAYLOAD_BYTES} bytes).")
            inv.response = outcome
            self._cv.notify_all()

    def runtime_init_error(self, error_type: str | None, body: bytes) -> None:
        with self._cv:
            if self._initialized or self._runtime_ready or self._runtime is None:
                raise ApiError(403, "InvalidStateTransition", "init/error is only valid during init")
            self._init_error = (sanitize_error_type(error_type), body)

    # ---------------------------------------------------------- extensions API

    def extension_register(self, name: str, events: list, account_id_feature: bool) -> tuple[str, dict]:
        with self._cv:
            if not self._registration_open:
                raise ApiError(403, "Extension.RegistrationClosed", "Extension registration closed already")
            ext = next((e for e in self._launched if e.name == name), None)
            if ext is None:
                # A name matching no launched file is an internal extension (spec §3).
                if any(e.name == name for e in self._extensions.values()):
                    raise ApiError(403, "Extension.InvalidExtensionState", f"extension {name} is already registered")
                if "SHUTDOWN" in events:
                    raise ApiError(403, "Extension.InvalidEventType", "internal extensions cannot subscribe to SHUTDOWN")
                ext = Extension(name=name, external=False)
            elif ext.id is not None:
                raise ApiError(403, "Extension.InvalidExtensionState", f"extension {name} is already registered")
            if len(self._extensions) >= MAX_EXTENSIONS:
                raise ApiError(403, "Extension.TooManyExtensions", f"at most {MAX_EXTENSIONS} extensions can register")
            ext.id = str(uuid.uuid4())
            ext.events = frozenset(events)
            ext.state = "Registered"
            self._extensions[ext.id] = ext
            self._cv.notify_all()
            body = {"functionName": self.config.function_name, "functionVersion": self.config.function_version, "handler": self.config.handler}
            if account_id_feature:
                body["accountId"] = self.config.account_id
            return ext.id, body

    def extension(self, identifier: str | None) -> Extension:
        """The registered extension behind an identifier header, or the API's 403."""
        if not identifier:
            raise ApiError(403, "Extension.MissingExtensionIdentifier", "Missing Lambda-Extension-Identifier header")
        try:
            uuid.UUID(identifier)
        except ValueError:
            raise ApiError(403, "Extension.InvalidExtensionIdentifier", "Invalid Lambda-Extension-Identifier") from None
        with self._cv:
            ext = self._extensions.get(identifier)
        if ext is None:
            raise ApiError(403, "Extension.UnknownExtensionIdentifier", "Unknown extension " + identifier)
        return ext

    def extension_next(self, identifier: str | None) -> dict:
        ext = self.extension(identifier)
        with self._cv:
            gen = self._env_gen
            if ext.state == "ShutdownSent":
                raise ApiError(403, "Extension.InvalidExtensionState", "no events after SHUTDOWN")
            ext.called_next = True
            ext.state = "Ready"
            inv = self._current
            if inv is not None and ext.id in inv.ext_pending and ext.last_invoke_id == inv.request_id:
                inv.ext_pending.discard(ext.id)
            self._cv.notify_all()
            while not ext.queue:
                if self._env_gen != gen:
                    raise ApiError(500, "Extension.Reset", "the execution environment was reset")
                self._cv.wait()
            event = ext.queue.popleft()
            if event["eventType"] == "INVOKE":
                ext.last_invoke_id = event["requestId"]
                ext.state = "Running"
            else:
                ext.state = "ShutdownSent"
            return event

    def extension_error(self, identifier: str | None, kind: str, error_type: str | None) -> None:
        """init/error (kind 'Init') or exit/error (kind 'Exit') from an extension."""
        ext = self.extension(identifier)
        if not error_type:
            raise ApiError(403, "Extension.MissingHeader", "Missing Lambda-Extension-Function-Error-Type header")
        with self._cv:
            if ext.fatal_reported:
                raise ApiError(403, "Extension.InvalidExtensionState", "an error was already reported")
            if kind == "Init" and ext.called_next:
                raise ApiError(403, "Extension.InvalidExtensionState", "init/error is only valid before the first /next")
            ext.fatal_reported = True
            ext.error_type = error_type
            self._fatal = f"Extension.{kind}Error"
            self._cv.notify_all()

    def telemetry_subscribe(self, identifier: str | None, body: object) -> None:
        ext = self.extension(identifier)
        with self._cv:
            if not self._subscriptions_open:
                raise ApiError(403, "Telemetry.SubscriptionClosed", "subscriptions are closed after init")
        subscription = Subscription.parse(body)
        self.bus.subscribe(ext.name, subscription)
        self.bus.platform("telemetrySubscription", {"name": ext.name, "state": "Subscribed", "types": list(subscription.types)})

    # ----------------------------------------------------------------- invoke

    def invoke(self, payload: bytes, *, trace_header: str | None = None, client_context: str | None = None, tenant_id: str | None = None) -> InvokeResult:
        """Run one invocation; returns as soon as the caller would have its answer."""
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        if len(payload) > MAX_PAYLOAD_BYTES:
            message = f"Request payload size ({len(payload)} bytes) exceeded maximum allowed payload size ({MAX_PAYLOAD_BYTES} bytes)."
            return self._result(request_id, started, 413, error_body("RequestEntityTooLarge", message), function_error=False)
        self._invoke_lock.acquire()
        handed_over = False
        try:
            if self._initialized and self._runtime_dead():
                self._reset("failure")  # the runtime died between invocations
            if not self._initialized:
                try:
                    self._init_with_retry(request_id)
                except InitFailure as failure:
                    self._reset("failure")
                    return self._result(request_id, started, 200, failure.body)
            inv = self._dispatch(request_id, payload, trace_header, client_context, tenant_id)
            threading.Thread(target=self._enforce_memory, args=(inv, self._runtime), name="memory-limit", daemon=True).start()
            with self._cv:
                self._wait(lambda: inv.response is not None or self._runtime_dead() or self._fatal is not None, inv.deadline)
            if inv.response is not None:
                outcome = inv.response
                result = self._result(request_id, started, 200, outcome.body, function_error=outcome.function_error, content_type=outcome.content_type)
                mode = "respond"
            elif self._runtime_dead():
                message = f"RequestId: {request_id} Error: Runtime exited with error: {self._runtime.exit_description()}"
                if self._runtime.returncode == 0:
                    message = f"RequestId: {request_id} Error: Runtime exited without providing a reason"
                error_type = "Runtime.OutOfMemory" if self._out_of_memory == request_id else "Runtime.ExitError"
                result = self._result(request_id, started, 200, error_body(error_type, message))
                mode = "crash"
            elif self._fatal is not None:
                result = self._result(request_id, started, 200, error_body(self._fatal, f"RequestId: {request_id} Error: {self._fatal}"))
                mode = "crash"
            else:
                message = f"RequestId: {request_id} Error: Task timed out after {self.config.timeout_s:.2f} seconds"
                result = self._result(request_id, started, 200, error_body("Sandbox.Timedout", message))
                mode = "timeout"
            # The caller has its answer; the rest of the phase (extensions, report, reset)
            # runs on, holding the invoke lock so that the next invocation waits for it.
            threading.Thread(target=self._finish, args=(inv, mode), name="invoke-finisher", daemon=True).start()
            handed_over = True
            return result
        finally:
            if not handed_over:
                self._invoke_lock.release()

    def _result(self, request_id: str, started: float, status: int, body: bytes, *, function_error: bool = True, content_type: str = "application/json") -> InvokeResult:
        headers = {"Content-Type": content_type, "X-Amzn-RequestId": request_id, "X-Amz-Executed-Version": self.config.function_version}
        if function_error and status == 200:
            headers["X-Amz-Function-Error"] = "Unhandled"
        return InvokeResult(request_id, status, body, headers, (time.monotonic() - started) * 1000)

    def _dispatch(self, request_id: str, payload: bytes, trace_header: str | None, client_context: str | None, tenant_id: str | None) -> Invocation:
        now = time.time()
        inv = Invocation(
            request_id=request_id,
            payload=payload,
            deadline_ms=int((now + self.config.timeout_s) * 1000),
            deadline=time.monotonic() + self.config.timeout_s,
            trace_header=trace_header or _new_xray_header(now),
            client_context=client_context,
            tenant_id=tenant_id,
            init_duration_ms=self._pending_init_duration,
        )
        self._pending_init_duration = None
        event = {"eventType": "INVOKE", "deadlineMs": inv.deadline_ms, "requestId": request_id, "invokedFunctionArn": self.config.function_arn, "tracing": inv.tracing()}
        with self._cv:
            self._current = inv
            start = {"requestId": request_id, "version": self.config.function_version, "tracing": inv.tracing()}
            self.bus.platform("start", start)
            self._platform_line(f"START RequestId: {request_id} Version: {self.config.function_version}")
            for ext in self._extensions.values():
                if "INVOKE" in ext.events:
                    inv.ext_pending.add(ext.id)
                    ext.queue.append(dict(event))
            self._pending_runtime = inv
            self._cv.notify_all()
        return inv

    def _response_status(self, inv: Invocation) -> tuple[str, str | None]:
        outcome = inv.response
        if outcome is None or not outcome.function_error:
            return "success", None
        return "error", outcome.error_type or "Runtime.Unknown"

    def _emit_runtime_done(self, inv: Invocation, status: str, error_type: str | None) -> None:
        now = time.monotonic()
        done_at = inv.runtime_done_at or now
        response_at = inv.response_at or done_at
        record = {
            "requestId": inv.request_id,
            "status": status,
            "metrics": {"durationMs": _ms(done_at - inv.started), "producedBytes": len(inv.response.body) if inv.response else 0},
            "spans": [
                {"name": "responseLatency", "start": _stamp(inv.started_epoch), "durationMs": _ms(response_at - inv.started)},
                {"name": "responseDuration", "start": _stamp(inv.started_epoch + (response_at - inv.started)), "durationMs": 0.0},
            ],
            "tracing": inv.tracing(),
        }
        if error_type:
            record["errorType"] = error_type
        self.bus.platform("runtimeDone", record)

    def _emit_report(self, inv: Invocation, status: str, error_type: str | None) -> None:
        end = time.monotonic()
        duration = _ms(end - inv.started)
        if self._runtime is not None:
            self._runtime_peak_kb = max(self._runtime_peak_kb, self._runtime.sample_peak_rss_kb())
        metrics = {
            "durationMs": duration,
            "billedDurationMs": max(1, math.ceil(duration)),
            "memorySizeMB": self.config.memory_mb,
            "maxMemoryUsedMB": math.ceil(self._runtime_peak_kb / 1024),
        }
        if inv.init_duration_ms is not None:
            metrics["initDurationMs"] = inv.init_duration_ms
        record = {"requestId": inv.request_id, "status": status, "metrics": metrics, "tracing": inv.tracing()}
        if inv.runtime_done_at is not None:
            overhead = _ms(end - inv.runtime_done_at)
            record["spans"] = [{"name": "extensionOverhead", "start": _stamp(inv.started_epoch + (inv.runtime_done_at - inv.started)), "durationMs": overhead}]
        if error_type:
            record["errorType"] = error_type
        self.bus.platform("report", record)
        self._platform_line(f"END RequestId: {inv.request_id}")
        line = f"REPORT RequestId: {inv.request_id}\tDuration: {duration:.2f} ms\tBilled Duration: {metrics['billedDurationMs']} ms\tMemory Size: {self.config.memory_mb} MB\tMax Memory Used: {metrics['maxMemoryUsedMB']} MB"
        if inv.init_duration_ms is not None:
            line += f"\tInit Duration: {inv.init_duration_ms:.2f} ms"
        if status != "success":
            line += f"\tStatus: {status}" + (f"\tError Type: {error_type}" if error_type else "")
        self._platform_line(line)

    def _finish(self, inv: Invocation, mode: str) -> None:
        try:
            if mode == "respond":
                with self._cv:
                    completed = self._wait(
                        lambda: (inv.runtime_done_at is not None and not inv.ext_pending) or self._runtime_dead() or self._fatal is not None or self._pending_ext_died(inv),
                        inv.deadline,
                    )
                    runtime_done = inv.runtime_done_at is not None
                if completed and runtime_done and not inv.ext_pending and self._fatal is None:
                    self._emit_report(inv, *self._response_status(inv))
                    with self._cv:
                        self._current = None
                    return
                if not completed:
                    status, error_type, reason = "timeout", "Sandbox.Timedout", "timeout"
                elif self._runtime_dead() and not runtime_done:
                    status, error_type, reason = "error", "Runtime.ExitError", "failure"
                else:
                    status, error_type, reason = "error", self._fatal or "Extension.Crash", "failure"
                if not runtime_done:
                    self._emit_runtime_done(inv, status, error_type)
                self._emit_report(inv, status, error_type)
                self._reset(reason)
            elif mode == "timeout":
                self._emit_runtime_done(inv, "timeout", "Sandbox.Timedout")
                self._emit_report(inv, "timeout", "Sandbox.Timedout")
                self._reset("timeout")
            else:
                error_type = self._fatal or ("Runtime.OutOfMemory" if self._out_of_memory == inv.request_id else "Runtime.ExitError")
                self._emit_runtime_done(inv, "error", error_type)
                self._emit_report(inv, "error", error_type)
                self._reset("failure")
        except Exception:  # noqa: BLE001 - the lock must be released whatever happened
            logger.exception("emulator: finishing invocation %s failed", inv.request_id)
        finally:
            self._invoke_lock.release()

    def _enforce_memory(self, inv: Invocation, runtime: ManagedProcess | None) -> None:
        """SIGKILL the runtime when its process tree outgrows the memory size, as the platform
        does; the invocation then fails with Runtime.OutOfMemory."""
        limit_kb = self.config.memory_mb * 1024
        while runtime is not None and not runtime.exited():
            with self._cv:
                if self._current is not inv or inv.response is not None:
                    return
            if runtime.sample_peak_rss_kb() > limit_kb:
                with self._cv:
                    self._out_of_memory = inv.request_id
                runtime.kill_group()
                return
            time.sleep(MEMORY_SAMPLE_S)

    def _pending_ext_died(self, inv: Invocation) -> bool:
        return any(e.process is not None and e.process.exited() for e in self._extensions.values() if e.id in inv.ext_pending)

    # ------------------------------------------------------------------- init

    def init(self) -> None:
        """Initialize eagerly (proactive init); raises InitFailure if it fails."""
        with self._invoke_lock:
            if not self._initialized:
                try:
                    self._init_with_retry(str(uuid.uuid4()))
                except InitFailure:
                    self._reset("failure")
                    raise

    def _init_with_retry(self, request_id: str) -> None:
        # An init that overruns its 10 s is retried inside the invoke, bounded by the function
        # timeout (the platform's "suppressed init").
        phase = "invoke" if self._init_count else "init"
        try:
            self._init(phase, request_id)
        except InitFailure as failure:
            if failure.status != "timeout" or phase == "invoke":
                raise
            self._reset("failure")
            self._init("invoke", request_id)

    def _init(self, phase: str, request_id: str) -> None:
        config = self.config
        self._init_count += 1
        started = time.monotonic()
        deadline = started + (config.init_timeout_s if phase == "init" else config.timeout_s)
        self._instance_id = secrets.token_hex(16)
        runtime_env = runtime_environment(config, self.api_address, self._runtime_dir, log_stream_name())
        with self._cv:
            self._registration_open = True
            self._subscriptions_open = True
            self._runtime_ready = False
            self._init_error = None
            self._fatal = None
            self._launched = []
            self._extensions = {}
            self._runtime = None
            self._runtime_peak_kb = 0
        self.bus.start_init_replay()
        self.bus.platform(
            "initStart",
            {
                "initializationType": "on-demand",
                "phase": phase,
                "runtimeVersion": self.runtime_version,
                "functionName": config.function_name,
                "functionVersion": config.function_version,
                "instanceId": self._instance_id,
                "instanceMaxMemory": config.memory_mb * 1024 * 1024,
            },
        )
        try:
            self._launch_extensions(extension_environment(runtime_env), request_id)
            with self._cv:
                if not self._wait(lambda: all(e.id for e in self._launched) or self._crashed_extension() is not None, deadline):
                    raise InitFailure("Sandbox.Timedout", error_body("Sandbox.Timedout", f"RequestId: {request_id} Error: extensions did not register in time"), "timeout")
                self._check_extensions(request_id)
            self._runtime = ManagedProcess(
                [self._bootstrap], env=runtime_env, cwd=config.task_dir, on_line=self._runtime_line, on_exit=self._notify, name="runtime"
            )
            with self._cv:
                self._wait(lambda: self._runtime_ready or self._runtime.exited() or self._fatal is not None or self._crashed_extension() is not None, deadline)
                self._registration_open = False
                self._check_runtime(request_id)
                self._check_extensions(request_id)
                if not self._runtime_ready:
                    raise InitFailure("Sandbox.Timedout", error_body("Sandbox.Timedout", f"RequestId: {request_id} Error: Init timed out after {deadline - started:.2f} seconds"), "timeout")
                ready = self._wait(
                    lambda: all(e.called_next for e in self._extensions.values()) or self._fatal is not None or self._crashed_extension() is not None or self._runtime.exited(),
                    deadline,
                )
                self._check_runtime(request_id)
                self._check_extensions(request_id)
                if not ready:
                    raise InitFailure("Sandbox.Timedout", error_body("Sandbox.Timedout", f"RequestId: {request_id} Error: extensions did not finish init in time"), "timeout")
                self._subscriptions_open = False
                self._initialized = True
        except InitFailure as failure:
            self._end_init(phase, started, failure.status, failure.error_type)
            raise
        self._end_init(phase, started, "success", None)
        self._pending_init_duration = _ms(time.monotonic() - started)

    def _end_init(self, phase: str, started: float, status: str, error_type: str | None) -> None:
        with self._cv:
            self._subscriptions_open = False
            self._registration_open = False
            extensions = list(self._extensions.values()) + [e for e in self._launched if e.id is None]
        done = {"initializationType": "on-demand", "phase": phase, "status": status}
        if error_type:
            done["errorType"] = error_type
        self.bus.platform("initRuntimeDone", done)
        for ext in extensions:
            self.bus.platform("extension", ext.record())
            self._platform_line(f"EXTENSION\tName: {ext.name}\tState: {ext.state}\tEvents: [{','.join(sorted(ext.events))}]")
        duration = _ms(time.monotonic() - started)
        self.bus.platform("initReport", {"initializationType": "on-demand", "phase": phase, "metrics": {"durationMs": duration}})
        line = f"INIT_REPORT Init Duration: {duration:.2f} ms\tPhase: {phase}\tStatus: {status}"
        self._platform_line(line + (f"\tError Type: {error_type}" if error_type else ""))
        self.bus.stop_init_replay()

    def _launch_extensions(self, env: dict, request_id: str) -> None:
        folder = os.path.join(self.config.opt_dir, "extensions") if self.config.opt_dir else ""
        if not folder or not os.path.isdir(folder):
            return
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                continue  # directories are ignored, as the platform does
            ext = Extension(name=name, external=True, path=path)
            with self._cv:
                self._launched.append(ext)
            try:
                ext.process = ManagedProcess([path], env=env, cwd="/", on_line=self._extension_line, on_exit=self._notify, name=name)
            except OSError as exc:
                ext.state = "LaunchError"
                ext.error_type = "PermissionDenied" if isinstance(exc, PermissionError) else "UnknownError"
                raise InitFailure("Extension.LaunchError", error_body("Extension.LaunchError", f"RequestId: {request_id} Error: fork/exec {path}: {exc.strerror}")) from None

    def _crashed_extension(self) -> Extension | None:
        return next((e for e in self._launched if e.process is not None and e.process.exited()), None)

    def _check_extensions(self, request_id: str) -> None:
        if self._fatal is not None:
            raise InitFailure(self._fatal, error_body(self._fatal, f"RequestId: {request_id} Error: {self._fatal}"))
        crashed = self._crashed_extension()
        if crashed is not None:
            code = crashed.process.returncode
            detail = "exit code 0" if code == 0 else crashed.process.exit_description()
            crashed.state = "InitError"
            crashed.error_type = "Extension.Crash"
            raise InitFailure("Extension.Crash", error_body("Extension.Crash", f"RequestId: {request_id} Error: {detail}"))

    def _check_runtime(self, request_id: str) -> None:
        if self._runtime_ready:
            return
        # RIC posts init/error and then exits; the posted body is what the caller gets.
        if self._init_error is not None:
            raise InitFailure(*self._init_error)
        if self._runtime.exited():
            detail = self._runtime.exit_description()
            raise InitFailure("Runtime.ExitError", error_body("Runtime.ExitError", f"RequestId: {request_id} Error: Runtime exited with error: {detail}"))

    def _runtime_line(self, stream: str, line: str) -> None:
        self.bus.emit("function", "function", line)
        self._log("function", line)

    def _extension_line(self, stream: str, line: str) -> None:
        self.bus.emit("extension", "extension", line)
        self._log("extension", line)

    # ------------------------------------------------------------ reset/stop

    def spindown(self) -> None:
        """Shut the environment down as idle spindown does."""
        with self._invoke_lock:
            if self._initialized or self._runtime is not None or self._launched:
                self._reset("spindown")

    def _reset(self, reason: str) -> None:
        """SIGTERM/SIGKILL the runtime, SHUTDOWN the extensions, clear registrations."""
        started = time.monotonic()
        deadline = started + SHUTDOWN_BUDGET_S
        deadline_ms = int((time.time() + SHUTDOWN_BUDGET_S) * 1000)
        self.resets.append(reason)
        with self._cv:
            runtime = self._runtime
            has_extensions = bool(self._extensions)
            self._initialized = False
        if runtime is not None:
            if has_extensions:
                runtime.stop(grace=SHUTDOWN_BUDGET_S * RUNTIME_SHARE)
            else:
                runtime.kill_group()
                runtime.wait(2)
        with self._cv:
            self._runtime_gen += 1
            self._pending_runtime = None
            self._cv.notify_all()
        # Subscribers get what happened (runtimeDone, report) before SHUTDOWN, as the
        # managed-instances platform flushes telemetry after the runtime stops.
        self.bus.flush(TELEMETRY_FLUSH_S)
        with self._cv:
            subscribed = [e for e in self._launched if e.id and "SHUTDOWN" in e.events and e.process and not e.process.exited()]
            for ext in subscribed:
                ext.queue.append({"eventType": "SHUTDOWN", "shutdownReason": reason, "deadlineMs": deadline_ms})
            others = [e for e in self._launched if e not in subscribed and e.process is not None]
            self._cv.notify_all()
        for ext in others:
            ext.process.kill_group()
        for ext in subscribed:
            if not ext.process.wait(max(0.0, deadline - time.monotonic())):
                self._platform_line(f"EXTENSION\tName: {ext.name}\tkilled at the shutdown deadline")
                ext.state = "ShutdownFailed"
            elif ext.process.returncode != 0:
                ext.state = "ShutdownFailed"
            ext.process.kill_group()
        for ext in others:
            ext.process.wait(1)
        self.bus.close_all()
        with self._cv:
            self._env_gen += 1
            self._extensions = {}
            self._launched = []
            self._current = None
            self._runtime = None
            self._runtime_ready = False
            self._registration_open = False
            self._subscriptions_open = False
            self._cv.notify_all()


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _stamp(epoch_s: float) -> str:
    return utc_timestamp(epoch_s)


def _new_xray_header(now: float) -> str:
    # The platform hands every invocation a trace header, Sampled=0 when tracing is off.
    root = f"1-{int(now):08x}-{secrets.token_hex(12)}"
    return f"Root={root};Parent={secrets.token_hex(8)};Sampled=0"
