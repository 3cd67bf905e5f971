"""The companion's main loop: per INVOKE, wait for the invocation to be complete, export
(after the response has gone back), then call /next; at SHUTDOWN, flush within the deadline.

Start-up: everything stdlib (channel, telemetry listener, subscription) happens before the
first /next; the OpenTelemetry SDK is imported and the export pipeline built on a background
thread, from the start. Below one vCPU's worth of memory the first /next waits for it (up to
LAMBDAWRAP_STARTUP_WAIT_MS): init runs at full speed, invocations at a fraction of a core
(7 % at 128 MB), so the import costs a fraction in init of what it costs after a response.

The main thread runs the event loop (event_loop.py): while it waits for the platform's next
event, and while an invocation runs, it serves the function's records and the Telemetry API
from the same selector, so an invocation wakes one thread, not four."""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

from lambdawrap.companion import ended_processes, init_gc
from lambdawrap.companion.channel_server import SocketServer
from lambdawrap.companion.correlator import RECORD_GRACE_S, Correlator
from lambdawrap.companion.deferred import DeferredSink
from lambdawrap.companion.event_loop import EventLoop
from lambdawrap.companion.extension_api import INIT_FAILED_BY_LAUNCHER, ExtensionApiError, ExtensionClient, SubscriptionClosed
from lambdawrap.companion.flush_policy import FlushPolicy
from lambdawrap.companion.function_cpu import RunMeter
from lambdawrap.companion.record_router import RecordRouter
from lambdawrap.companion.secret_scrub import SecretScrubber
from lambdawrap.companion.telemetry_listener import TelemetryListener
from lambdawrap.shared import inflight, posted_wanted, records, unreported_drops
from lambdawrap.shared.log import configure_process_logging, get_logger
from lambdawrap.shared.otlp_variables import headers_of_ignored_endpoints
from lambdawrap.shared.sampling import make_sampler
from lambdawrap.shared.secret_forms import role_credentials
from lambdawrap.shared.settings import FULL_VCPU_MB, Settings

DEADLINE_MARGIN_S = 0.05  # call /next this long before the invoke deadline at the latest
# How long a flush waits for the invocation's verdict ("end": the platform's runtimeDone), and
# the first one for the init's report.
RUNTIME_DONE_WAIT_S = 0.3
SHUTDOWN_MARGIN_S = 0.15
SHUTDOWN_DRAIN_S = 0.05  # at most this long reading what was sent before SHUTDOWN
CRASH_POLL_S = 0.2  # while a handler runs: how often the companion asks whether its process died
# When told to go other than by SHUTDOWN (the Extensions API failing /next: "the extension should
# exit"; a local supervisor's SIGTERM, a terminal's Ctrl-C), the time taken to leave as at a
# SHUTDOWN: none is given, and the environment ends soon.
UNANNOUNCED_SHUTDOWN_S = 1.0
MAX_UNREADABLE_EVENTS = 3  # /next answers that are no JSON object, in a row, before leaving
SHUTDOWN_WORD_WAIT_S = 1.0  # at most this long for the platform's word on invocations made from a post
SECRETS_LOAD_WAIT_S = 2.0  # the startup thread's wait for the secret store before it takes what ended processes left
TAKE_WAIT_S = 1.0  # SHUTDOWN's wait for the startup thread to deliver what it took (of its 2 s)
BACKGROUND_NICE = 10  # the SDK import once init is over: behind the function, not idle
# The margins above are for a full core. Below it the environment runs in slices of its CPU
# share (at 128 MB about 7 ms of each 100), and the loop's thread may wait for the GIL from the
# one still importing the SDK: a wake-up comes that much later. Scaled by the share, up to this.
MAX_THROTTLED_MARGIN_S = 0.5
LOADED_MARGIN_S = 0.15  # the invoke margin's cap once the SDK is loaded: about one throttle period
MANAGED_FLUSH_MS = 1000  # Managed Instances export on this timer (unless LAMBDAWRAP_FLUSH=periodic,N)


class Terminated(BaseException):
    """A SIGTERM or SIGINT, raised by the loop's waits (never inside a callback, which would
    leave a record half read). A BaseException: the guards that keep one event's bug from
    ending the companion must let it through."""


class Companion:
    """Before the first /next only sockets are bound and the subscription made (stdlib, a few
    ms); the loop serves them from then on. Secrets and the OpenTelemetry pipeline start on
    background threads; records that come before the pipeline is ready wait in the sink."""

    def __init__(self, client: ExtensionClient, settings: Settings | None = None) -> None:
        self.client = client
        self.settings = settings or Settings.from_env()
        if self.settings.log_level in ("debug", "info"):
            # Asked for lambdawrap's lines below warning: configured before anything logs one.
            # The startup thread configures it otherwise, off init's path, and a busy machine
            # may run that thread late: such a line logged before would be dropped (a warning
            # still goes out, through logging's last resort).
            configure_process_logging(self.settings.log_level)
        self._problems_logged: set = set()
        # When this environment began: the launcher execs this process, so its start is the
        # extension's launch, before the platform started the runtime (see ended_processes).
        self._environment_start = unreported_drops.process_start()
        # The startup thread and SHUTDOWN may both take what ended processes left: SHUTDOWN
        # waits for what the thread took to be delivered before the failed init is made.
        self._taking_left = threading.Lock()
        self._spans_seen = ended_processes.SpansSeen()
        self.sink = DeferredSink(logs_exported="logs" in self.settings.exported_signals)
        # What the function's side sends is searched for the declared secrets' values (learned
        # by the secret store) before anything is built from it: see secret_scrub.
        self.scrubber = SecretScrubber(permanent=role_credentials(os.environ))
        sampled = make_sampler(self.settings.sampler, self.settings.sampler_ratio)
        self.correlator = Correlator(self.sink, self._problem, self.settings.socket_path, on_init_failed=self._ensure_pipeline, on_finished=self._finished, managed_instances=self.settings.managed_instances, sampled=sampled, proactive_init_ms=self.settings.proactive_init_ms, scrub=self.scrubber.scrub, platform_parents=bool(self.settings.propagators or self.settings.xray_lambda_order))
        self.correlator.environment_start = self._environment_start
        self._shutting_down = False
        self._activity = 0  # invocations finished and records received: what a timed flush is for
        self._activity_flushed: tuple = (0, 0)
        self._flush_when_finished: str | None = None  # a flush that came before its span was made
        self.policy = FlushPolicy(self.settings.flush)
        self._posted_wanted: bool | None = None  # what the flag file beside the socket says
        self.pipeline: Any = None
        self.signals: Any = None
        self._ready = threading.Event()
        self._pipeline_started = threading.Lock()
        self._pipeline_thread: threading.Thread | None = None
        self._flush_missed = False
        self._startup_wait_s = 0.0  # set in run(): how long init may wait for the pipeline
        share = min(1.0, self.settings.memory_mb / FULL_VCPU_MB) if self.settings.memory_mb > 0 else 1.0
        self._deadline_margin_s = min(MAX_THROTTLED_MARGIN_S, DEADLINE_MARGIN_S / share)
        self._shutdown_margin_s = min(MAX_THROTTLED_MARGIN_S, SHUTDOWN_MARGIN_S / share)
        self.run_meter = RunMeter(self.settings.memory_mb)
        self.router = RecordRouter(self._dropped, learn=self._learn_fetched)
        # Declared names whose values the function's process fetched itself, told before the
        # secret store exists too (a companion slow to start is when it fetches them).
        self._fetched_by_function: set = set()
        self._fetched_lock = threading.Lock()
        self.loop = EventLoop(on_error=lambda what: self.sink.internal_errors("companion"))
        self.socket = SocketServer(self.settings.socket_path, self.router, self._problem)
        self._secrets_servers: list | None = []
        self.listener: TelemetryListener | None = None
        try:
            self.socket.attach(self.loop)
            # The secrets API's ports, bound now: the function's module may call it as it loads
            # (see secrets_ports); the API serves them once its store has started.
            self._secrets_servers = _bind_secrets_ports(self.settings)
            self.listener = TelemetryListener(self._on_telemetry, self._problem)
            if not self.settings.sdk_disabled:
                # OTEL_SDK_DISABLED: nothing is exported, so nothing is listened to (secrets still are).
                self.listener.attach(self.loop)
                try:
                    # Not "extension": other extensions' lines (and this process's own) are nothing
                    # it exports, and each would cost a JSON decode of the function's CPU share.
                    client.subscribe_telemetry(self.listener.address[1], ["platform", "function"], managed_instances=self.settings.managed_instances)
                except SubscriptionClosed:
                    # The runtime's init failed while this process was starting: nothing of it
                    # will be told, but the failed init still counts and becomes a span (named
                    # by its cause where the launcher failed it: required secrets unloaded).
                    why = os.environ.get(INIT_FAILED_BY_LAUNCHER, "")
                    self.correlator.init_failed_unseen(time.time_ns(), {"type": "Extension.InitError", "message": why, "stack": ""} if why else None)
        except BaseException:
            # The caller takes part in the lifecycle idle: nothing may listen for what it will
            # not handle. A channel left listening took the function's records, which were then
            # neither exported nor counted; refused, they are counted on the function's side and
            # carried to the next environment (its invocations too: the companion is gone).
            self.abandon()
            raise

    def abandon(self) -> None:
        """Stop listening on everything this process opened (its start failed)."""
        self.socket.stop(wait_s=0.5, keep_file=True)
        if self.listener is not None:
            self.listener.stop()
        for server in self._secrets_servers or ():
            try:
                server.stop()
            except Exception:  # noqa: BLE001 - best effort: we are leaving
                pass

    def _learn_fetched(self, values: dict) -> None:
        """Values of declared secrets the function's process fetched itself: kept out of what is
        exported from now on, as those the secret store fetches are."""
        declared = {source.env_name for source in self.settings.secrets}
        held = [name for name, value in values.items() if name in declared and isinstance(value, str)]
        self.scrubber.learn([values[name] for name in held])
        # The function serves these: a refresh that can no longer give one is said, as for the
        # values the store handed over itself.
        with self._fetched_lock:
            self._fetched_by_function.update(held)
            store = self.router.store
        if store is not None:
            store.held_by_function(held)

    def _start_up(self) -> None:
        configure_process_logging(self.settings.log_level)
        self.router.attach(self._on_record)
        self._report_earlier_drops()
        self._start_secrets()
        # After the secret store's first load (bounded): the spans are searched for the values
        # it learns, as those that come on the channel are.
        store = self.router.store
        if self.settings.secrets and store is not None:
            store.loaded(SECRETS_LOAD_WAIT_S)
        self._take_what_ended_processes_left()

    def _take_what_ended_processes_left(self) -> None:
        """The drops the function's processes that have ended counted and could not report,
        and the spans they held for a companion that did not listen yet (kept beside the
        socket): as the companion starts, an earlier environment's, and this one's where its
        runtime ended first (an init that failed at once); at SHUTDOWN, the runtime stopped by
        then, this one's, where no later environment may come (a spindown). They go to the
        correlator straight, not through the router, which holds records until the startup
        thread has attached it."""
        if not self._taking_left.acquire(timeout=TAKE_WAIT_S):
            self._internal_error("waiting for the startup thread to deliver what ended processes left")
            return
        try:
            ended_processes.take(self.settings.socket_path, self._environment_start, self._on_record, self.sink.dropped, self._spans_seen)
        except Exception:  # noqa: BLE001 - fail open
            self._internal_error("reading what the function's ended processes left")
        finally:
            self._taking_left.release()

    def _report_earlier_drops(self) -> None:
        """What earlier environments in this sandbox could not report, left beside the socket
        (/tmp outlives a reset): records the function's process dropped when its companion had
        died, the counters of a companion that ended while the collector was unreachable, and
        what a companion that ended before its pipeline was loaded still held (the spans and
        drops its processes left are taken once the secret store has loaded)."""
        try:
            from lambdawrap.companion import carryover

            carried = carryover.take(self.settings.socket_path)
            if carried.counts:
                self.sink.restore_counts(carried.counts)
            for name, args, kwargs in carried.calls:
                getattr(self.sink, name)(*args, **kwargs)
        except Exception:  # noqa: BLE001 - fail open
            self._internal_error("reading what earlier environments left")
            return
        if carried.calls:
            # An earlier environment ended before it could export; this one may be as
            # short-lived: the pipeline loads now (only in this case, never on a healthy init).
            self._ensure_pipeline()

    def _start_secrets(self) -> None:
        try:
            from lambdawrap.companion.secret_store import SecretStore

            store = SecretStore(self.settings, scrubber=self.scrubber)
            store.start()
            with self._fetched_lock:
                self.router.store = store
                held = list(self._fetched_by_function)
            store.held_by_function(held)
        except Exception:  # noqa: BLE001 - fail open
            get_logger().exception("lambdawrap: the secret store failed to start")
            self._close_secrets_ports()
            return
        finally:
            self.router.store_ready.set()
        try:
            from lambdawrap.companion.secrets_api import SecretsHttpApi

            # A port that is taken was reported as it was bound; the other one still serves.
            SecretsHttpApi(store, os.environ.get("AWS_SESSION_TOKEN", ""), self.settings, self.loop, servers=self._secrets_servers)
        except Exception:  # noqa: BLE001 - fail open: the declared secrets still reach the handler side
            get_logger().exception("lambdawrap: the secrets HTTP API failed to start")
            self._close_secrets_ports()

    def _close_secrets_ports(self) -> None:
        # Bound but never to be served: a client would wait in the backlog for ever. Closed,
        # it is refused, as where nothing listens.
        for server in self._secrets_servers or ():
            server.stop()

    def _ensure_pipeline(self) -> None:
        """Start building the export pipeline (once)."""
        if self.settings.sdk_disabled:
            return  # OTEL_SDK_DISABLED: nothing is exported, the SDK never loads
        with self._pipeline_started:
            if self._pipeline_thread is None:
                self._pipeline_thread = threading.Thread(target=self._build_pipeline, name="lambdawrap-pipeline", daemon=True)
                self._pipeline_thread.start()

    def _build_pipeline(self) -> None:
        """On its own thread: the imports, the bulk of the work."""
        try:
            # First, and from the standard library only: the connections' round trips pass
            # while the SDK imports, not after the first response.
            from lambdawrap.companion.early_connections import connect_early

            # The variables the exporters and the SDK would fail on (warned about with the
            # settings) are corrected in this process's environment, which they read.
            # Read before the corrections unset them: a signal's own endpoint ignored takes its
            # headers from a secret with it, as from its variable.
            ignored_headers = headers_of_ignored_endpoints(self.settings.sdk_corrections, os.environ)
            for variable, value in self.settings.sdk_corrections:
                if value is None:
                    os.environ.pop(variable, None)
                else:
                    os.environ[variable] = value
            self._headers_from_secrets(ignored_headers)
            transports = connect_early([s for s in self.settings.exported_signals if self.settings.protocol(s) != "grpc"], os.environ)
            import lambdawrap.companion.signals  # noqa: F401 - imported here, used by _assemble_pipeline
            from lambdawrap.companion.exporting import make_exporters
            from lambdawrap.companion.resource import build_resource

            exporters = make_exporters(self.settings, transports)
            resource = build_resource(self.settings, self.client.info.get("accountId"))
            self.scrubber.prepare()  # here the exporters have imported what it needs
        except Exception:  # noqa: BLE001 - fail open: the function keeps running without export
            get_logger().exception("lambdawrap: the export pipeline failed to start; telemetry is off")
            exporters = resource = None
        if exporters is not None and self._startup_wait_s > 0:
            # Only where init holds for the pipeline (below one vCPU, the sandbox's first
            # init): there the rehearsal runs at init's speed. An init inside an invoke (after
            # a reset) is throttled like the invocation, so rehearsing would cost what it saves.
            try:
                from lambdawrap.companion.rehearsal import prepare_transports, rehearse_export

                started = time.monotonic()
                size = rehearse_export(resource)
                prepare_transports(exporters)
                get_logger().debug("lambdawrap: export rehearsed in init (%d bytes encoded, none sent) in %.1f ms", size, (time.monotonic() - started) * 1000)
            except Exception:  # noqa: BLE001 - only a head start: the real export pays its own way
                get_logger().debug("lambdawrap: the export rehearsal failed", exc_info=True)
        # The rest starts the export threads, which must not inherit the idle priority: the
        # invoke phase waits for them. The loop's thread does it.
        self.loop.call_soon_threadsafe(lambda: self._assemble_pipeline(exporters, resource))

    def _headers_from_secrets(self, ignored: frozenset = frozenset()) -> None:
        from lambdawrap.companion import exporter_secrets

        sources = exporter_secrets.declared(self.settings.secrets)
        if sources:
            # Waits for the store's first fetch (the collector would refuse every export without
            # its credentials), as long as the function's boot would for the same secrets.
            deadline = time.monotonic() + self.settings.secrets_timeout_ms / 1000
            self.router.store_ready.wait(self.settings.secrets_timeout_ms / 1000)
            exporter_secrets.apply(self.router.store, sources, max(0.0, deadline - time.monotonic()), get_logger().warning, protocols=self.settings.protocols, ignored=ignored)

    def _assemble_pipeline(self, exporters: tuple | None, resource: Any) -> None:
        try:
            if exporters is None:
                self.sink.abandon()
                return
            from lambdawrap.companion.exporting import Pipeline, built
            from lambdawrap.companion.signals import Signals

            pipeline = Pipeline(built(exporters), resource, self._dropped, on_progress=self.loop.call_soon_threadsafe)
            signals = Signals(self.settings, resource, pipeline.meter_provider)
            pipeline.attach(signals)
            self.pipeline, self.signals = pipeline, signals
            self.sink.attach(signals)
            # From now on straight to the signals (this runs on the loop's thread, the
            # correlator's only caller): no proxy and no lock per call.
            self.correlator.sink = signals
            if self._flush_missed:
                # A flush asked for while the SDK was still importing gave up waiting; without
                # this, what it was for would wait for the next invocation (or SHUTDOWN).
                pipeline.request_flush()
        except Exception:  # noqa: BLE001 - fail open: the function keeps running without export
            get_logger().exception("lambdawrap: the export pipeline failed to start; telemetry is off")
            self.sink.abandon()
        finally:
            self._ready.set()
            self._end_init_gc()

    def _end_init_gc(self) -> None:
        # Init's heavy work is over: its objects are frozen (init_gc.py).
        frozen = init_gc.resume()
        if frozen:
            get_logger().debug("lambdawrap: garbage collection resumed, %d objects of init frozen", frozen)

    def _finished(self, request_id: str) -> None:
        # Called by the correlator (its lock held): only ask, never wait.
        self._activity += 1
        if request_id == self._flush_when_finished and self.pipeline is not None:
            self._flush_when_finished = None
            self.pipeline.flush(wait_s=0.0)

    def _dropped(self, reason: str, count: int = 1) -> None:
        self.sink.dropped(reason, count)

    def _problem(self, reason: str, detail: str) -> None:
        """Input from outside that made no sense (a record, a telemetry batch): counted as
        dropped, logged once per reason."""
        self.sink.dropped(reason)
        if reason not in self._problems_logged:
            self._problems_logged.add(reason)
            get_logger().warning("lambdawrap: %s (logged once)", detail)

    def _on_telemetry(self, batch: list) -> None:
        self._activity += 1
        if self.settings.managed_instances:
            # No INVOKE to listen again at: a worker's platform.start or line says the function
            # runs, and may have emptied /tmp; its workers not yet connected need the file
            # before their records come (one stat a batch), not at the next tick.
            self.socket.rebind_if_removed()
        self.correlator.on_telemetry(self.scrubber.scrub(batch))

    def _on_record(self, record: dict) -> Any:
        self._activity += 1
        if record.get("version") != records.VERSION:
            self._problem("malformed_record", f"a record of version {record.get('version')!r} (this companion reads {records.VERSION})")
            return None
        if record.get("type") == records.SPANS:
            self._spans_seen.note(record.get("spans"))
        self.correlator.on_record(self.scrubber.scrub(record))
        return None

    def run(self) -> int:
        self._watch_termination()
        try:
            return self._run()
        except Terminated as exc:
            get_logger().warning("lambdawrap: %s received; leaving as at a shutdown", exc)
            return self._leave_unannounced()

    def _run(self) -> int:
        threading.Thread(target=self._start_up, name="lambdawrap-startup", daemon=True).start()
        first_start = _first_start_in_sandbox(self.settings.socket_path)
        self._startup_wait_s = self.settings.startup_wait_ms / 1000 if first_start else 0.0
        if not first_start:
            self.correlator.init.phase = "invoke"  # a re-init runs inside an invoke (until initStart says)
        self._ensure_pipeline()
        self._finish_start_in_init()
        if self._pipeline_thread is None:
            self._end_init_gc()  # OTEL_SDK_DISABLED: no pipeline will be built
        self._update_posted_wanted()
        if self.settings.managed_instances and not self.settings.sdk_disabled:
            self.loop.call_at(time.monotonic() + self._tick_s(), self._tick)
        budget_s = self.settings.flush_budget_ms / 1000
        unreadable = 0
        while True:
            asked = time.monotonic()
            try:
                event = self.client.next_event(self.loop)
            except (ExtensionApiError, OSError) as exc:
                if isinstance(exc, ExtensionApiError) and exc.status == 200 and unreadable < MAX_UNREADABLE_EVENTS:
                    unreadable += 1  # an event that is no JSON object: a glitch, asked again
                    continue
                # The platform says to go (a 500), or cannot be reached: what this environment
                # holds is exported or carried over, as at a SHUTDOWN, not lost. As at a spindown:
                # an invocation without its word is counted, no crash made up for it (the
                # runtime may be running still).
                get_logger().warning("lambdawrap: the Extensions API failed (%s); leaving as at a shutdown", exc)
                return self._leave_unannounced()
            unreadable = 0
            kind = event.get("eventType")
            if kind == "SHUTDOWN":
                return self._shutdown(event)
            if kind == "INVOKE" and not self.settings.sdk_disabled:
                try:
                    self.correlator.paused(time.monotonic() - asked)
                    self._invoke(event, budget_s)
                except Exception:  # noqa: BLE001 - one event's bug must not end the extension (and the environment)
                    self._internal_error("handling an INVOKE event")

    def _leave_unannounced(self) -> int:
        return self._shutdown({"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": (time.time() + UNANNOUNCED_SHUTDOWN_S) * 1000})

    def _watch_termination(self) -> None:
        """Lambda ends an extension with SHUTDOWN, then SIGKILL; a local supervisor (or a
        terminal's Ctrl-C) signals instead, and the default action would lose what this
        environment holds, and the carry-over."""

        def on_signal(number: int, frame: Any) -> None:
            if not self._shutting_down:
                self.loop.interrupt(Terminated(signal.Signals(number).name))

        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, on_signal)

    def _update_posted_wanted(self) -> None:
        """Tell the function's process whether to report the runtime's posts: only while they
        save a wait (shared/posted_wanted.py). One system call when that changes, none else."""
        settings = self.settings
        wanted = not settings.managed_instances and not settings.sdk_disabled and self.policy.exports_at_each_end()
        if wanted != self._posted_wanted and posted_wanted.set_wanted(settings.socket_path, wanted):
            self._posted_wanted = wanted

    def _internal_error(self, what: str) -> None:
        self.sink.internal_errors("companion")
        if what not in self._problems_logged:
            self._problems_logged.add(what)
            get_logger().exception("lambdawrap: internal error while %s (logged once); the function is unaffected", what)

    def _flush(self, wait_s: float) -> bool:
        until = time.monotonic() + max(0.0, wait_s)
        self._ensure_pipeline()
        if not self.loop.run_until(self._ready.is_set, until) or self.pipeline is None:
            self._flush_missed = True
            return False
        pipeline = self.pipeline
        if pipeline.busy:
            # An earlier export is still held up by the collector (slow or down): waiting the
            # budget again would only hold the invoke phase open, and bill it, for nothing.
            # The worker goes on in the background; SHUTDOWN flushes what is left.
            until = time.monotonic()
        ticket = pipeline.request_flush()
        return self.loop.run_until(lambda: pipeline.done(ticket), until)

    def _finish_start_in_init(self) -> None:
        """Hold the first /next (init) until the export pipeline is built, up to the startup
        wait; what is left then goes on at low priority, behind the function's own work. Not
        for an init inside an invoke (after a reset, or one Lambda ran late): there the caller
        waits, and the function's timeout runs."""
        wait_s = self._startup_wait_s
        if self.settings.sdk_disabled or self._pipeline_thread is None:
            return
        if wait_s > 0 and self.loop.run_until(lambda: self._ready.is_set() or self.correlator.init.phase == "invoke", time.monotonic() + wait_s) and self._ready.is_set():
            return
        thread_id = self._pipeline_thread.native_id
        if thread_id is None or self._ready.is_set():
            return
        try:
            # A thread's nice value may be raised, never lowered back: the import only.
            os.setpriority(os.PRIO_PROCESS, thread_id, BACKGROUND_NICE)
        except (AttributeError, OSError):
            pass

    def _tick_s(self) -> float:
        strategy = self.settings.flush
        return (strategy.interval_ms if strategy.mode == "periodic" else MANAGED_FLUSH_MS) / 1000

    def _tick(self) -> None:
        """Lambda Managed Instances: no INVOKE events, so no invoke phase to export in, and the
        environment is never frozen: export on a timer, when something happened."""
        now = time.monotonic()
        try:
            self.socket.rebind_if_removed()
            self.correlator.finish_overdue(now)
            # What finish_overdue accounted for by itself (a record missing, lines held under
            # an id never announced) is activity too: else it waits for the next request.
            activity = (self._activity, self.correlator.handed_over)
            pipeline = self.pipeline
            # Or items an export left waiting (the collector down, or holding us off for a
            # while): nothing else would send them before the next request, or SHUTDOWN.
            if pipeline is not None and (activity != self._activity_flushed or (pipeline.holding and not pipeline.busy)):
                self._activity_flushed = activity
                pipeline.request_flush()
        finally:
            self.loop.call_at(now + self._tick_s(), self._tick)

    def _record_or_crash(self, rid: str, watch: dict) -> bool | float | None:
        """For run_until: the invocation's record came (or it is accounted for), or the process
        running it has died. A crash sends no record, and the platform's word on it may come
        only after the reset's SHUTDOWN (Lambda does not promise to flush first): waiting for
        it until the function's deadline would leave SHUTDOWN's 2 s to pass unanswered
        (SIGKILL, and all this environment held lost). Asked every CRASH_POLL_S from then on
        (an invocation answered sooner costs nothing)."""
        verdict = self.correlator.settled(rid, record_grace_s=RECORD_GRACE_S)
        if verdict is True:
            return True
        now = time.monotonic()
        if now >= watch.setdefault("at", now + CRASH_POLL_S):
            if self._crashed(rid, watch):
                return True
            watch["at"] = now + CRASH_POLL_S
        return min(verdict, watch["at"]) if isinstance(verdict, float) else watch["at"]

    def _crashed(self, rid: str, watch: dict) -> bool:
        if "pid" not in watch:
            pid = inflight.holder(self.settings.socket_path, rid)
            if pid is None:
                return False  # no slot (yet, or none could be made): the record or SHUTDOWN tells
            watch["pid"] = pid
        watch["ended"] = inflight.ended(watch["pid"])
        return watch["ended"]

    def _invoke(self, event: dict, budget_s: float) -> None:
        now = time.monotonic()
        rid = str(event.get("requestId", ""))
        self.socket.rebind_if_removed()  # before the handler can send its record
        self.correlator.function_arn = event.get("invokedFunctionArn") or self.correlator.function_arn
        self.correlator.on_invoke(event)
        self.correlator.finish_overdue(now)
        self.policy.on_invoke()
        self._update_posted_wanted()
        meter = self.run_meter
        if self.pipeline is not None and meter.spare_cpu_s > 0 and self.policy.should_flush():
            # With the CPU the last invocation left unused, this one's flush connections are
            # made while it runs: a computing function would answer later by their CPU.
            self.pipeline.connect_ahead(meter.run_s, meter.spare_cpu_s)
        meter.started(self.socket.peer_pid)
        # The whole scaled margin while the SDK still imports (the GIL's wait); once it is
        # loaded, a throttle period's: a handler that ends inside the margin has no export of
        # its own, and every flush has that much less time.
        margin_s = self._deadline_margin_s if not self._ready.is_set() else min(self._deadline_margin_s, LOADED_MARGIN_S)
        deadline = now + max(0.0, _epoch_ms_left(event.get("deadlineMs")) - margin_s)
        if not self.correlator.expects_records():
            # Its record will not come: the invocation is accounted for when the platform's
            # outcome does (finish_overdue), and this phase ends now, unbilled.
            return
        # The init span goes in the first invocation's export: its initReport comes before the
        # invocation's platform.start, but a batch read late would leave it to the next export
        # (the next invocation's, or SHUTDOWN's, minutes or hours later).
        init_awaited = not self.settings.sdk_disabled and self.correlator.serving_first() and self.correlator.init_unreported()
        # The handler's record arrives before the runtime asks for its next event.
        watch: dict = {}  # the process running it (its in-flight slot names it): has it ended?
        if not self.loop.run_until(lambda: self._record_or_crash(rid, watch), deadline):
            self.correlator.read_slot_at_deadline(rid)  # before the reset's SIGTERM
            return  # timed out: the platform resets us and SHUTDOWN reports it
        if watch.get("ended"):
            return  # crashed: the platform resets us and SHUTDOWN reports it
        meter.ended(self.socket.peer_pid)
        if not self.policy.should_flush():
            return
        # The span is made once the invocation's verdict is known: the runtime's post of what
        # the handler's record announces (response_posted), else the platform's runtimeDone.
        # A flush waits for it, briefly; if it is late the span goes out by itself as soon as
        # it is made. With `end`, the flush also waits for runtimeDone, which the invocation's
        # log lines come before, so that they go out in the same export.
        if self.settings.flush.mode == "end":
            settled = lambda: self.correlator.settled(rid, finished=True) and self.correlator.platform_reported(rid)  # noqa: E731
        else:
            settled = lambda: self.correlator.settled(rid, finished=True)  # noqa: E731
        ready = (lambda: settled() and not self.correlator.init_unreported()) if init_awaited else settled  # noqa: E731
        # The budget bounds the whole phase after the function's part: the wait for the verdict
        # too (with a budget of 0, the function's own setting, none at all).
        phase_end = min(deadline, time.monotonic() + max(0.0, budget_s))
        if not self.loop.run_until(ready, min(phase_end, time.monotonic() + RUNTIME_DONE_WAIT_S)) and not settled():
            self._flush_when_finished = rid
        self._flush(wait_s=max(0.0, phase_end - time.monotonic()))
        self.policy.flushed()

    def _shutdown(self, event: dict) -> int:
        started = time.monotonic()
        self._shutting_down = True  # a signal from now on changes nothing
        self.loop.interrupt(None)
        # What the function sent before the startup thread attached the router (a busy
        # machine may run it late) comes before anything is made of the init: attached here.
        self.router.attach(self._on_record)
        budget_s = _epoch_ms_left(event.get("deadlineMs")) - self._shutdown_margin_s
        try:
            # What the platform and the function sent before SHUTDOWN came is read first.
            self.loop.drain(started + min(SHUTDOWN_DRAIN_S, budget_s))
            # Invocations made from the runtime's post before their platform word, and an init the
            # reset ended before its report came: their log lines come with it, which a platform
            # that held its batch while frozen, or did not flush before SHUTDOWN, delivers now.
            # Up to half the budget; the rest is for the export.
            self.loop.run_until(lambda: self.settings.sdk_disabled or not self.correlator.awaiting_platform_words(), started + min(SHUTDOWN_WORD_WAIT_S, budget_s / 2))
            # The spans a runtime that ended before this companion listened held for it come
            # before the init it failed is made: they name its ids.
            self._take_what_ended_processes_left()
            try:
                self.correlator.finish_unreported(str(event.get("shutdownReason", "spindown")).lower())
            except Exception:  # noqa: BLE001 - what was built and counted before it still goes
                self._internal_error("finishing what the platform did not report")
            self._ensure_pipeline()
            if self.settings.sdk_disabled:
                pass
            elif self.loop.run_until(self._ready.is_set, started + max(0.0, budget_s)) and self.pipeline is not None:
                # Whatever the collector does, close() returns by the deadline: the platform
                # SIGKILLs an extension that overstays it.
                left_over = self.pipeline.close(budget_s - (time.monotonic() - started))
                if left_over:
                    get_logger().warning("lambdawrap: shutdown deadline reached with %d spans the collector did not acknowledge", left_over)
                if self.signals is not None:
                    self._carry_over(self.pipeline.unexported_counts(self.signals.counted))
            else:
                self._carry_deferred()
        except Exception:  # noqa: BLE001 - leave cleanly whatever happened
            self._internal_error("shutting down")
        # No waiting for the socket thread here (it could take the time left): the runtime is
        # gone already, and the process ends at once.
        self.socket.stop(wait_s=0.0)
        import logging

        logging.shutdown()
        # Exporter threads may still be blocked on a dead collector; they must not hold us.
        os._exit(0)

    def _carry_deferred(self) -> None:
        """SHUTDOWN came before the export pipeline was loaded (a failed init, or a first
        invocation that timed out, leaves 2 s at most): what waited for it goes to the next
        environment in this sandbox, which exports it."""
        counts: collections.Counter = collections.Counter()
        calls = []
        for name, args, kwargs in self.sink.take_calls():
            if name in ("dropped", "internal_errors"):
                label = {"reason": args[0]} if name == "dropped" else {"lambdawrap.process": args[0]}
                counts[("lambdawrap." + name, tuple(label.items()))] += args[1] if len(args) > 1 else kwargs.get("count", 1)
            else:
                calls.append((name, args, kwargs))
        get_logger().warning("lambdawrap: shutdown came before the export pipeline was ready; what it held goes to the next environment")
        self._carry_over([{"name": name, "attributes": dict(attributes), "value": value} for (name, attributes), value in counts.items()], calls)

    def _carry_over(self, counts: list, calls: list = ()) -> None:
        # What the collector did not take: the next environment's companion reports it, if
        # this sandbox gets one.
        if not counts and not calls:
            return
        try:
            from lambdawrap.companion import carryover

            carryover.save(self.settings.socket_path, counts, calls, logs_exported="logs" in self.settings.exported_signals)
            if counts:
                get_logger().warning("lambdawrap: this environment's last metrics were not exported (the collector did not take them, or SHUTDOWN's deadline came first); they are kept for the next one")
        except Exception:  # noqa: BLE001 - we are leaving: best effort
            get_logger().exception("lambdawrap: keeping what was not exported failed")


def _first_start_in_sandbox(socket_path: str) -> bool:
    """Whether no companion started in this sandbox before (/tmp outlives a reset, so a marker
    there tells a re-init, which runs inside an invoke, from the sandbox's first)."""
    try:
        os.close(os.open(socket_path + ".started", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    except OSError:
        pass  # no marker possible: treat as the first
    return True


def _epoch_ms_left(deadline_ms: object) -> float:
    if not isinstance(deadline_ms, (int, float)):
        return 3.0
    return deadline_ms / 1000 - time.time()


def _bind_secrets_ports(settings: Settings) -> list | None:
    """The secrets API's ports bound (secrets_ports.bind_ports); None when binding failed
    otherwise than on a taken port: the API then binds them itself as it starts."""
    try:
        from lambdawrap.companion.secrets_ports import bind_ports

        return bind_ports(settings)
    except Exception:  # noqa: BLE001 - fail open
        get_logger().exception("lambdawrap: binding the secrets API's ports failed")
        return None
