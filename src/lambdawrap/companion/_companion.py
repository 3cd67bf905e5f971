"""The companion's main loop: per INVOKE, wait for the invocation to be complete, export
(after the response has gone back), then call /next; at SHUTDOWN, flush within the deadline."""

from __future__ import annotations

import collections
import logging
import os
import statistics
import time

from opentelemetry.sdk.trace.sampling import _get_from_env_or_default

from ..settings import FlushStrategy, Settings
from ._correlator import Correlator
from ._exporting import Pipeline
from ._extension_api import ExtensionClient
from ._signals import Signals, build_resource
from ._socket_server import SocketServer
from ._telemetry_listener import TelemetryListener

logger = logging.getLogger("lambdawrap.companion")

DEADLINE_MARGIN_S = 0.05  # call /next this long before the invoke deadline at the latest
RUNTIME_DONE_WAIT_S = 0.15  # how long "end" flushing waits for the invocation's log lines
SHUTDOWN_MARGIN_S = 0.15
ADAPTIVE_INTERVAL_MS = 1000
ADAPTIVE_BUSY_GAP_S = 1.0


class FlushPolicy:
    """Decides, per invocation, whether to export now."""

    def __init__(self, strategy: FlushStrategy) -> None:
        self.strategy = strategy
        self._gaps: collections.deque = collections.deque(maxlen=8)
        self._last_invoke: float | None = None
        self._last_flush = 0.0

    def on_invoke(self, now: float) -> None:
        if self._last_invoke is not None:
            self._gaps.append(now - self._last_invoke)
        self._last_invoke = now

    def busy(self) -> bool:
        return len(self._gaps) >= 4 and statistics.median(self._gaps) < ADAPTIVE_BUSY_GAP_S

    def should_flush(self, now: float) -> tuple[bool, bool]:
        """(flush now, wait for the invocation's log lines first)."""
        mode = self.strategy.mode
        if mode == "adaptive":
            if not self.busy():
                return True, True
            interval_ms = ADAPTIVE_INTERVAL_MS
        elif mode == "periodic":
            interval_ms = self.strategy.interval_ms
        else:
            return True, True
        return (now - self._last_flush) * 1000 >= interval_ms, False

    def flushed(self, now: float) -> None:
        self._last_flush = now


class Companion:
    def __init__(self, client: ExtensionClient, settings: Settings | None = None, channel: tuple | None = None) -> None:
        self.client = client
        self.settings = settings or Settings.from_env()
        resource = build_resource(self.settings, client.info.get("accountId"))
        self.pipeline = Pipeline(self.settings, resource, self._dropped)
        self.signals = Signals(self.settings, resource, self.pipeline.meter_provider, self.pipeline.logger_provider, _get_from_env_or_default())
        self.pipeline.spans = self.signals.spans
        self.correlator = Correlator(self.signals)
        self.policy = FlushPolicy(self.settings.flush)
        if channel is not None:
            self.socket, router = channel
            router.attach(self._on_record)
        else:
            self.socket = SocketServer(self.settings.socket_path, self._on_record)
            self.socket.start()
        self.listener = TelemetryListener(self.correlator.on_telemetry)
        self.listener.start()
        client.subscribe_telemetry(self.listener.address[1], ["platform", "function", "extension"])

    def _dropped(self, reason: str, count: int = 1) -> None:
        self.signals.dropped(reason, count)

    def _on_record(self, record: dict):
        if record.get("v") != 1:
            self.socket.malformed += 1
            return None
        if record.get("type") == "spans":
            self.signals.user_spans(record.get("spans") or [])
            return None
        self.correlator.on_record(record)
        return None

    def run(self) -> int:
        budget_s = self.settings.flush_budget_ms / 1000
        while True:
            event = self.client.next_event()
            kind = event.get("eventType")
            if kind == "INVOKE":
                self._invoke(event, budget_s)
            elif kind == "SHUTDOWN":
                return self._shutdown(event)

    def _invoke(self, event: dict, budget_s: float) -> None:
        now = time.monotonic()
        rid = str(event.get("requestId", ""))
        self.signals.function_arn = event.get("invokedFunctionArn") or self.signals.function_arn
        self.correlator.on_invoke(event)
        self.policy.on_invoke(now)
        deadline = now + max(0.0, _epoch_ms_left(event.get("deadlineMs")) - DEADLINE_MARGIN_S)
        # The handler's record arrives as it returns, before its response goes out.
        if not self.correlator.wait_for(rid, deadline, need_runtime_done=False):
            return  # timed out or crashed: the platform resets us and SHUTDOWN reports it
        flush, wait_for_logs = self.policy.should_flush(time.monotonic())
        if not flush:
            return
        if wait_for_logs:
            self.correlator.wait_for(rid, min(deadline, time.monotonic() + RUNTIME_DONE_WAIT_S), need_runtime_done=True)
        self.pipeline.flush(wait_s=max(0.0, min(budget_s, deadline - time.monotonic())))
        self.policy.flushed(time.monotonic())

    def _shutdown(self, event: dict) -> int:
        reason = str(event.get("shutdownReason", "spindown")).lower()
        self.correlator.finish_unreported(reason)
        left = _epoch_ms_left(event.get("deadlineMs")) - SHUTDOWN_MARGIN_S
        finished = self.pipeline.flush(wait_s=max(0.0, left), deadline_s=max(0.0, left))
        if not finished:
            left_over = len(self.signals.spans)
            if left_over:
                self._dropped("shutdown_deadline", left_over)
            logger.warning("lambdawrap: shutdown deadline reached with %d spans unexported", left_over)
        self.socket.stop()
        logging.shutdown()
        # Exporter threads may still be blocked on a dead collector; they must not hold us.
        os._exit(0)


def _epoch_ms_left(deadline_ms: object) -> float:
    if not isinstance(deadline_ms, (int, float)):
        return 3.0
    return deadline_ms / 1000 - time.time()
