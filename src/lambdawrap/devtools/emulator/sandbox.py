"""The execution environment's lifecycle (spec §1, §8), as the one object the emulator and the
API routes talk to.

`Sandbox` wires the phases, each in a module of its own, around one `SandboxState` and its
condition variable (`sandbox_state`): init (`init_phase`), invoke (`invoke_phase`), reset and
shutdown (`reset`), and what the Runtime, Extensions and Telemetry APIs do to the environment
(`api_calls`). The limits the platform enforces (CPU, memory, freezing) follow the phases
(`limits`). In Managed Instances mode invocations run concurrently (`concurrent_invoke`) on
runtime workers that the Runtime API parks and routes to (`concurrent_runtime_api`).
"""

from __future__ import annotations

import os
import time

from lambdawrap.devtools.emulator.api_calls import ApiCalls
from lambdawrap.devtools.emulator.concurrent_invoke import ConcurrentInvokePhase
from lambdawrap.devtools.emulator.concurrent_runtime_api import ConcurrentRuntimeCalls
from lambdawrap.devtools.emulator.environment import FunctionConfig
from lambdawrap.devtools.emulator.init_phase import InitPhase
from lambdawrap.devtools.emulator.invoke_phase import InvokePhase
from lambdawrap.devtools.emulator.limits import LimitSettings, Limits
from lambdawrap.devtools.emulator.processes import DRAIN_TIMEOUT_S
from lambdawrap.devtools.emulator.reset import spin_down
from lambdawrap.devtools.emulator.sandbox_state import LogSink, SandboxState
from lambdawrap.devtools.emulator.state import Extension, Invocation, InvokeResult, Outcome
from lambdawrap.devtools.emulator.telemetry import TelemetryBus
from lambdawrap.devtools.emulator.worker_logs import WorkerLogSocket


class Sandbox:
    """One execution environment; at most one invocation at a time (N in Managed Instances mode).

    `state` and `init_phase` are public so that tests and the benchmark can look at the
    environment's processes and time its init.
    """

    def __init__(
        self,
        config: FunctionConfig,
        bus: TelemetryBus,
        log: LogSink,
        runtime_bootstrap: str,
        runtime_dir: str,
        runtime_version: str,
        limits: LimitSettings = LimitSettings(),
    ) -> None:
        self.config = config
        self.state = SandboxState(config, bus, log, Limits(limits, config.memory_mb, config.managed_instances))
        self.init_phase = InitPhase(self.state, runtime_bootstrap, runtime_dir, runtime_version)
        self._api_calls = ApiCalls(self.state)
        self._invoke_phase: InvokePhase | ConcurrentInvokePhase
        self._runtime_calls: ApiCalls | ConcurrentRuntimeCalls
        self._worker_logs: WorkerLogSocket | None = None
        if config.managed_instances:
            self._worker_logs = WorkerLogSocket(os.path.join(runtime_dir, "worker-logs.sock"), self.init_phase.runtime_line)
            self.init_phase.worker_log_socket = self._worker_logs.path
            self._invoke_phase = ConcurrentInvokePhase(self.state, self.init_phase, self._worker_logs.drain)
            self._runtime_calls = ConcurrentRuntimeCalls(self.state)
        else:
            self._invoke_phase = InvokePhase(self.state, self.init_phase)
            self._runtime_calls = self._api_calls

    @property
    def api_address(self) -> str:
        """host:port of the Runtime, Extensions and Telemetry APIs (AWS_LAMBDA_RUNTIME_API)."""
        return self.init_phase.api_address

    @api_address.setter
    def api_address(self, value: str) -> None:
        self.init_phase.api_address = value

    @property
    def resets(self) -> list[str]:
        """Why the environment was reset, in order ("timeout", "failure", "spindown")."""
        return self.state.resets

    # ------------------------------------------------------------------ lifecycle

    def init(self) -> None:
        """Initialize eagerly (proactive init); raises InitFailure if it fails."""
        self.init_phase.run_proactive()

    def invoke(self, payload: bytes, *, trace_header: str | None = None, client_context: str | None = None, tenant_id: str | None = None, request_id: str | None = None) -> InvokeResult:
        """Run one invocation; returns as soon as the caller would have its answer (`request_id`:
        an asynchronous invocation's retry, which keeps its id)."""
        return self._invoke_phase.invoke(payload, trace_header=trace_header, client_context=client_context, tenant_id=tenant_id, request_id=request_id)

    def drain_output(self, timeout: float = DRAIN_TIMEOUT_S) -> bool:
        """Wait until every line the environment's processes have written so far has been
        handed on (a line printed before a response can still be in its pipe when the caller
        has the response); False if a process kept its reader busy for `timeout` in all (one
        that writes without pause)."""
        deadline = time.monotonic() + timeout
        drained = True
        for process in self.state.processes():
            if not process.exited():
                drained = process.drain_output(max(0.0, deadline - time.monotonic())) and drained
        if self._worker_logs is not None:
            drained = self._worker_logs.drain(max(0.0, deadline - time.monotonic())) and drained
        return drained

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the invoke phase has ended (Managed Instances: no invocation in flight and
        every worker still alive idle); False at the timeout."""
        return self._invoke_phase.wait_idle(timeout)

    def spindown(self) -> None:
        """Shut the environment down as idle spindown does, and remove its cgroup."""
        spin_down(self.state)
        self.state.limits.environment_ended()
        if self._worker_logs is not None:
            self._worker_logs.close()

    # ------------------------------------------------------------------ API calls

    def runtime_next(self, connected_at: float = float("inf")) -> Invocation:
        """Runtime API invocation/next; blocks until the next invocation. `connected_at`: when
        the request's connection was made (a runtime process makes its own, once started)."""
        return self._runtime_calls.runtime_next(connected_at)

    def runtime_respond(self, request_id: str, outcome: Outcome) -> None:
        """Runtime API invocation/{id}/response or /error."""
        self._runtime_calls.runtime_respond(request_id, outcome)

    def runtime_init_error(self, error_type: str | None, body: bytes) -> None:
        """Runtime API init/error."""
        self._api_calls.runtime_init_error(error_type, body)

    def extension_register(self, name: str, events: list, account_id_feature: bool) -> tuple[str, dict]:
        """Extensions API register: (identifier, the function's details)."""
        return self._api_calls.extension_register(name, events, account_id_feature)

    def extension(self, identifier: str | None) -> Extension:
        """The registered extension behind an identifier header, or the API's 403."""
        return self._api_calls.extension(identifier)

    def extension_next(self, identifier: str | None) -> dict:
        """Extensions API event/next; blocks until the extension's next event."""
        return self._api_calls.extension_next(identifier)

    def extension_error(self, identifier: str | None, kind: str, error_type: str | None) -> None:
        """Extensions API init/error (kind 'Init') or exit/error (kind 'Exit')."""
        self._api_calls.extension_error(identifier, kind, error_type)

    def telemetry_subscribe(self, identifier: str | None, body: object) -> None:
        """Telemetry API subscribe."""
        self._api_calls.telemetry_subscribe(identifier, body)
