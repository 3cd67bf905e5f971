"""OTLP export for the companion: exporters chosen from the standard OTEL_* variables, a worker
thread that flushes spans, metrics and logs in that priority order, and a budget so that
waiting on a slow collector never holds the invoke phase open longer than allowed.

While the environment runs and the collector takes a while to answer (a remote one), a flush
sends every signal at once, each on a thread of its own: the invoke phase (billed) waits for
one round trip, not one per signal. A collector that answers within AT_ONCE_LATENCY_S (one in
the environment, as an extension) gets them in turn: the threads would cost more than the wait
they save. The spans never wait on the metrics or the logs, though: a flush stops waiting for
their threads once a request of theirs fails (their exporters retry for seconds) or the next
flush is asked for, and while a signal's collector fails it goes on a thread no flush waits
for. At SHUTDOWN the order is strict: the spans first, then the metrics in the time kept for
them (they carry the drop counts), then the logs (beside the metrics where those fail).
"""

from __future__ import annotations

import collections
import importlib
import logging
import math
import os
import sys
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from typing import Any

from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider, TraceBasedExemplarFilter
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExporter, MetricExportResult, MetricsData, PeriodicExportingMetricReader, Sum
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from lambdawrap.companion.log_buffer import LogBuffer
from lambdawrap.companion.log_records import log_records
from lambdawrap.companion.collector_answers import REJECTED_REASONS, UNANSWERED_REASONS, PartialSuccessReader, RefusalLog, refusal, server_error
from lambdawrap.companion.signals import counter_key
from lambdawrap.companion.span_building import SpanBuffer
from lambdawrap.shared import otlp_variables
from lambdawrap.shared.settings import METRICS_TEMPORALITY, SIGNALS, Settings, host_port

logger = logging.getLogger("lambdawrap.companion")

SPAN_BATCH = 512
# The span text one request carries at most: encoding a request holds about twice its text
# again (the messages, then their bytes), in the memory the companion shares with the function,
# and a request of 512 long spans (16 MB) would exceed the collectors' limits (the OpenTelemetry
# Collector's gRPC 4 MiB) and be sent again in halves.
REQUEST_MAX_CHARS = 2 * 1024 * 1024
RETAINED_BATCHES = 64  # metric batches kept for retry when the collector is down
LOG_BATCH = 512
_FULL_BATCH = {"spans": SPAN_BATCH, "logs": LOG_BATCH}
# Exports in a row a collector may fail with an error of its own (a 500) before their batch is
# counted as rejected: the second sends it again at the next flush.
SERVER_ERROR_TRIES = 2
UNANSWERED_TRIES = 2  # exports in a row whose request went whole and was not answered in time
# Requests sent whole after a 413 before they may grow past half the size it refused: a limit
# is most often a fixed one (a proxy's body size), and requests that grew straight back had
# every other one refused, its bytes sent for nothing.
WHOLE_BEFORE_REGROWTH = 16
# What _refused says of a failed batch counted as dropped, and the reasons it is counted under
_COUNTED = {"refused": REJECTED_REASONS, "unanswered": UNANSWERED_REASONS}
MIN_METRICS_RESERVE_S = 0.3  # at SHUTDOWN, kept after the spans for the metrics (drop counts)
AT_ONCE_LATENCY_S = 0.002  # a collector slower than this to answer gets every signal at once
# Connections made while the function runs: behind the function where they share a CPU.
CONNECT_AHEAD_NICE = 10
# A collector whose last connection took less to make (plain HTTP in the environment) is
# connected in the flush: a thread would cost about what it saves.
CONNECT_AHEAD_MIN_S = 0.001


def make_exporters(settings: Settings, transports: Mapping[str, object] | None = None) -> tuple:
    """(span, metric, log) exporters for the protocols in the settings; each reads its
    connection settings (OTEL_EXPORTER_OTLP_* endpoint, headers, timeout...) itself. Only the
    protocol asked for is imported, and OTLP/HTTP goes over the standard library
    (otlp_transport), not requests: `transports` by signal where they were made already
    (early_connections), else new ones. A gRPC exporter comes as a `GrpcExporterToBuild`,
    imported but not made: see `built`."""
    # The exporter maps the preference to each instrument's temporality itself, from the
    # variable; ours has a different default (delta), so it gets the settled value.
    os.environ[METRICS_TEMPORALITY] = settings.metrics_temporality
    from lambdawrap.companion import metadata_on_demand

    metadata_on_demand.install()
    # None for a signal not exported (OTEL_METRICS_EXPORTER, OTEL_LOGS_EXPORTER=none): not even imported.
    exporters = tuple(_exporter(settings, signal, (transports or {}).get(signal)) if signal in settings.exported_signals else None for signal in SIGNALS)
    # Their encoders loaded: each distinct attribute is encoded once (attribute_encoding).
    from lambdawrap.companion import attribute_encoding

    attribute_encoding.install()
    return exporters


_EXPORTERS = {
    "traces": ("trace_exporter", "OTLPSpanExporter"),
    "metrics": ("metric_exporter", "OTLPMetricExporter"),
    "logs": ("_log_exporter", "OTLPLogExporter"),
}


class GrpcExporterToBuild:
    """A gRPC exporter's class, imported, to be made by `built` on another thread: making the
    first one starts gRPC's own threads (its timer, event engine, lifeguard), which carry every
    later export and keep the priority of the thread that made them. The thread that imports
    may have been given a low priority (lifecycle's startup wait); they must not inherit it."""

    def __init__(self, exporter_class: type, **arguments: object) -> None:
        self.exporter_class = exporter_class
        self.arguments = arguments


def _grpc_answers(exporters_by_signal: tuple) -> dict:
    """The answers of each signal exported over OTLP/gRPC (grpc_answers, imported only then)."""
    found = {}
    for signal, exporter in exporters_by_signal:
        if type(exporter).__module__.startswith("opentelemetry.exporter.otlp.proto.grpc."):
            from lambdawrap.companion import grpc_answers

            answers = grpc_answers.tap(exporter)
            if answers is not None:
                found[signal] = answers
    return found


def built(exporters: tuple) -> tuple:
    """The exporters with each gRPC one made, on the calling thread."""
    return tuple(_made(lambda e=e: e.exporter_class(**e.arguments), "GRPC", signal) if isinstance(e, GrpcExporterToBuild) else e for signal, e in zip(SIGNALS, exporters))


CREDENTIAL_PROVIDERS = ("OTEL_PYTHON_EXPORTER_OTLP_{protocol}_CREDENTIAL_PROVIDER", "OTEL_PYTHON_EXPORTER_OTLP_{protocol}_{signal}_CREDENTIAL_PROVIDER")


def _made(make: Callable[[], object], protocol: str, signal: str) -> object:
    """`make()`, made again without the credential provider the exporter was told to load when
    that failed: an entry point not installed in the layer, or one that raised, made the
    exporter raise, and the pipeline failed to start (telemetry off, nothing counted). Without
    it, the collector may refuse the exports, which are then counted as such."""
    try:
        return make()
    except Exception as error:  # noqa: BLE001 - any failure of a provider's own code too
        named = [name.format(protocol=protocol, signal=signal.upper()) for name in CREDENTIAL_PROVIDERS]
        named = [name for name in named if os.environ.get(name)]
        if not named:
            raise
        shown = ", ".join(f"{name}={os.environ[name]!r}" for name in named)
        logger.warning("lambdawrap: ignoring %s (%s: %s); using the default (none)", shown, type(error).__name__, error)
        for name in named:
            os.environ.pop(name)  # this process's environment only, as the exporters read it
        return make()


def _exporter(settings: Settings, signal: str, transport: object | None) -> object:
    module_name, class_name = _EXPORTERS[signal]
    if settings.protocol(signal) == "grpc":
        module = importlib.import_module(f"opentelemetry.exporter.otlp.proto.grpc.{module_name}")
        from grpc import Compression  # imported by the exporter's module already

        # Given, not read by the exporter: it takes only gzip from the variables and fails as it
        # is made on the specification's "none" (telemetry off, nothing counted).
        gzip = otlp_variables.compression(os.environ, signal) == "gzip"
        return GrpcExporterToBuild(getattr(module, class_name), compression=Compression.Gzip if gzip else Compression.NoCompression)
    module = importlib.import_module(f"opentelemetry.exporter.otlp.proto.http.{module_name}")
    from lambdawrap.companion.otlp_transport import transport_from_env

    # A transport made ahead (early_connections) is never one a credential provider replaces.
    return _made(lambda: getattr(module, class_name)(_transport=transport or transport_from_env(signal.upper())), "HTTP", signal)


class RetainingMetricExporter(MetricExporter):
    """Keeps batches the collector failed and sends them first next time (delta data would
    otherwise be lost for good). While one is kept, the pipeline does not collect: the SDK goes
    on aggregating, so an outage costs one kept batch, not one per flush.

    A batch the collector refused as it is (`refused()`: a 4xx) is not kept: sent again it would
    be refused at every flush, and hold back every batch after it. Its delta counters' values go
    to `count_again`, to be sent in the next batch (a refusal that lasts a while, a proxy's or a
    credential's, loses no count); its other points are lost, logged. One that went whole to
    the collector twice in a row without an answer in time (`refused()`: "unanswered") is
    dropped (`export_failed`) and taken as exported: a slow collector may hold it each time."""

    def __init__(self, inner: MetricExporter, on_drop, refused: Callable[[], str | None] = lambda: None, count_again: Callable[[list], None] = lambda counts: None, awaiting: Callable[[], bool] = lambda: False, forget: Callable[[], None] = lambda: None) -> None:
        super().__init__(preferred_temporality=inner._preferred_temporality, preferred_aggregation=inner._preferred_aggregation)
        self._inner = inner
        self._retained: list = []
        self._unanswered = 0  # failures in a row whose request went whole, not answered in time
        self._unanswered_logged = False
        self._on_drop = on_drop
        self._refused = refused
        self._count_again = count_again
        self._lock = threading.Lock()
        self.acknowledged: collections.Counter = collections.Counter()  # (name, attributes) -> value the collector took
        # Retained batches the collector may hold: one whose request went whole and was not
        # answered in time (by id), and the one being sent now. Never carried over (in_doubt).
        self._doubted: set = set()
        self._sending: MetricsData | None = None
        # Whether a request of the export under way went whole, its answer not read or not in
        # time; what went before an export is forgotten as it begins.
        self._awaiting = awaiting
        self._forget = forget

    @property
    def retained(self) -> int:
        return len(self._retained)

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        with self._lock:
            self._retained.append(metrics_data)
            return self._send_retained(timeout_millis)

    def resend(self, timeout_millis: float = 10_000) -> bool:
        """Send the kept batches; True if none is left."""
        with self._lock:
            return self._send_retained(timeout_millis) == MetricExportResult.SUCCESS

    def _send_retained(self, timeout_millis: float) -> MetricExportResult:
        while self._retained:
            self._forget()  # a new export: what went before it is known
            self._sending = self._retained[0]
            try:
                sent = self._inner.export(self._retained[0], timeout_millis=timeout_millis)
            except BaseException:
                self._sending = None
                raise
            if sent != MetricExportResult.SUCCESS:
                verdict = self._refused()
                if verdict == "refused":
                    self._unanswered = 0  # a run of unanswered exports ends with another outcome
                    self._sending = None
                    self._count_again([(key, value) for key, value, temporality in _counter_points(self._pop()) if temporality == AggregationTemporality.DELTA])
                    continue
                if verdict == "unanswered" or self._awaiting():
                    # (At SHUTDOWN too, where a request the deadline cut short is no verdict
                    # on the collector: it may hold it all the same.)
                    self._doubted.add(id(self._retained[0]))
                self._sending = None  # (after: in_doubt finds the batch in one or the other)
                self._unanswered = self._unanswered + 1 if verdict == "unanswered" else 0
                if self._unanswered >= UNANSWERED_TRIES:
                    # Went whole twice in a row, no answer in time: a slow collector may have
                    # stored it each time, and its delta counters would count again at every
                    # flush. Dropped, counted, not sent again; its counts may be in: taken as
                    # exported, not carried on either (unexported_counts).
                    self._unanswered = 0
                    self._acknowledge(self._retained[0])
                    self._pop()
                    self._on_drop("export_failed")
                    if not self._unanswered_logged:
                        self._unanswered_logged = True
                        logger.warning("lambdawrap: a metric batch went whole to the collector twice in a row and its answer did not come within the timeout: dropped (export_failed), not sent again (the collector may hold it); logged once")
                    return MetricExportResult.FAILURE
                while len(self._retained) > RETAINED_BATCHES:
                    self._pop()
                    self._on_drop("export_failed")
                return MetricExportResult.FAILURE
            self._unanswered = 0
            # Acknowledged before it leaves the retained and the sending: in_doubt and
            # unexported_counts, on another thread, must find it in one or the other.
            self._acknowledge(self._retained[0])
            self._pop()
            self._sending = None
        return MetricExportResult.SUCCESS

    def _pop(self) -> MetricsData:
        batch = self._retained.pop(0)
        self._doubted.discard(id(batch))
        return batch

    def in_doubt(self) -> tuple:
        """(delta counts, cumulative values) of the batches the collector may hold,
        unacknowledged: sent whole and not answered in time, or being sent now, whole, its
        answer not read yet (a SHUTDOWN's deadline may come meanwhile). Sent again by the next
        environment, a slow collector would count them twice. Read without the lock, which the
        sending thread holds."""
        deltas: collections.Counter = collections.Counter()
        cumulative: dict = {}
        sending = self._sending
        if not (self._awaiting() and sending is self._sending):
            sending = None  # (its state may be the batch's before, which has gone since)
        for batch in list(self._retained):
            if batch is sending or id(batch) in self._doubted:
                for key, value, temporality in _counter_points(batch):
                    if temporality == AggregationTemporality.DELTA:
                        deltas[key] += value
                    else:
                        cumulative[key] = max(cumulative.get(key, 0), value)
        return deltas, cumulative

    def _acknowledge(self, batch: MetricsData) -> None:
        """Count what the collector took, counter by counter (see Signals.counted)."""
        try:
            for key, value, temporality in _counter_points(batch):
                if temporality == AggregationTemporality.CUMULATIVE:
                    self.acknowledged[key] = max(self.acknowledged[key], value)
                else:
                    self.acknowledged[key] += value
        except Exception:  # noqa: BLE001 - bookkeeping must not fail an export
            logger.exception("lambdawrap: counting the exported metrics failed")

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis)


def _counter_points(batch: MetricsData) -> Iterator[tuple]:
    """(counter_key, value, temporality) of each point of a counter (a monotonic sum) in `batch`."""
    for resource_metrics in batch.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                data = metric.data
                if isinstance(data, Sum) and data.is_monotonic:
                    for point in data.data_points:
                        yield counter_key(metric.name, point.attributes), point.value, data.aggregation_temporality


class Pipeline:
    """Owns the SDK providers and exporters, and the one export worker thread."""

    def __init__(self, exporters: tuple, resource: Resource, on_drop, on_progress=None) -> None:
        span_exporter, metric_exporter, log_exporter = exporters  # see make_exporters
        self._on_progress = on_progress or (lambda: None)  # told when a flush completed (wakes the event loop)
        self.span_exporter: SpanExporter = span_exporter
        # No metric exporter (OTEL_METRICS_EXPORTER=none): no reader either, and the instruments
        # record nothing.
        self._metric_exporter = RetainingMetricExporter(metric_exporter, on_drop, self._metrics_refused, lambda counts: self.count_again(counts), lambda: self._awaiting("metrics"), lambda: self._forget_unanswered("metrics")) if metric_exporter is not None else None
        # Both given (the timeout is the SDK's default, used by the reader's timer only: the
        # flushes collect), so that the reader does not read OTEL_METRIC_EXPORT_*, which the
        # README says are not read: a value it could not read got a warning in its own words.
        self._metric_reader = PeriodicExportingMetricReader(self._metric_exporter, export_interval_millis=math.inf, export_timeout_millis=30_000) if metric_exporter is not None else None
        # The SDK's default filter, named: OTEL_METRICS_EXEMPLAR_FILTER is the function's, for its
        # own SDK, and a value ours does not know made this raise, and nothing was exported.
        self.meter_provider = MeterProvider(resource=resource, metric_readers=[self._metric_reader] if self._metric_reader is not None else [], exemplar_filter=TraceBasedExemplarFilter())
        self.log_exporter = log_exporter
        self.resource = resource
        self.spans: SpanBuffer | None = None
        self.logs: LogBuffer | None = None
        self.before_collect = lambda: None  # the signals' measurements settle into the SDK here
        self.count_again: Callable[[list], None] = lambda counts: None  # a refused batch's counter values, for the next
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._requested = 0
        self._completed = 0
        self._deadline = 0.0  # read live by the worker, so that SHUTDOWN can bring it forward
        self._stage = "run"  # "spans" then "final" once SHUTDOWN began (see close())
        self._metrics_share = True  # at SHUTDOWN, whether close() keeps the metrics a share of the time
        self.in_flight = 0  # spans in the export request under way
        self.logs_in_flight = 0  # log lines in export requests under way
        self._logs_settled = False  # close() has counted every line not yet exported
        self._logs_counted_late = False  # close()'s logs counted lines refused after its metrics went
        self._flight_lock = threading.Lock()
        # The items of the request this thread is sending: an answer's partial success is read
        # on the thread that sent it, and counts no more items than the request held.
        self._request = threading.local()
        # How long the collector took to answer the last span request (or to fail it): what a
        # request started now would likely take. The request's, not the export's, where the
        # transport tells: an export that retried after a back-off took seconds more than any
        # of its requests, and SHUTDOWN would not even start a request to a collector answering
        # in milliseconds again.
        self.latency_s = 0.0
        # The same of the metrics' and the logs' last requests, where they were timed: their
        # collector may be another (a healthy metrics endpoint beside a slow traces one, whose
        # latency skipped the metrics at SHUTDOWN, their drop counts carried over only).
        self._latency: dict = {}
        # The last span export failed unanswered or refused for now (the collector down, or
        # busy): its requests may have failed fast, but the exporters' retries wait seconds, each
        # signal's on a thread of its own rather than one after the other.
        self._failing = False
        # Metrics and logs whose last export failed (their collector down, or their endpoint
        # wrong while the spans' is right): each sent on a thread of its own that no flush waits
        # for, one at a time (see _export_at_once). Waited for, their exporters' retries (up to
        # 10 s each) held every later flush, and with it the spans of every invocation meanwhile:
        # under the freezer, until SHUTDOWN, and then past its deadline.
        self._side_failing: set = set()
        self._alone: dict = {}  # side signal -> the thread sending it alone
        self._working_on = 0  # the flush request the worker is on
        self._failed_threads: set = set()  # this flush's helpers a request failed on
        self._given_up: set = set()  # side signals whose exporter gives up its retries (see _side_request_failed)
        self.exports = 0
        self._logs_seen = False  # a flush had log lines: the function logs, the next flushes will too
        # The standard-library transport, loaded by make_exporters for OTLP/HTTP only (not
        # imported here for gRPC: ~8 ms for nothing).
        transports = sys.modules.get("lambdawrap.companion.otlp_transport")
        exporters_by_signal = (("spans", span_exporter), ("metrics", metric_exporter), ("logs", log_exporter))
        self._transports = [] if transports is None else [(signal, found) for signal, exporter in exporters_by_signal if (found := transports.http_transport_of(exporter)) is not None]
        self._answers_of = {signal: transport for signal, (transport, _, _) in self._transports}  # each signal's collector_answers.Answers
        self._answers_of.update(_grpc_answers(exporters_by_signal))
        self._collector_of = {signal: _collector(exporter) for signal, exporter in exporters_by_signal}
        for signal, answers in self._answers_of.items():
            answers.answered = PartialSuccessReader(signal, self._rejected_in_answer)
            if signal != "spans":
                answers.failed = lambda signal=signal: self._side_request_failed(signal)
        self._refusals = RefusalLog()
        self._batch = dict(_FULL_BATCH)  # items per request, by signal: halved by each 413
        self._too_large_at: dict = dict.fromkeys(_FULL_BATCH)  # the fewest items a 413 refused lately
        self._whole_since_too_large = dict.fromkeys(_FULL_BATCH, 0)
        self._server_errors = dict.fromkeys(_FULL_BATCH, 0)  # failed exports in a row, by signal
        self._unanswered = dict.fromkeys(_FULL_BATCH, 0)  # exports in a row sent whole, not answered in time
        # The batch size before a failed request's items were sent again alone (a first
        # unanswered request, a first server error): None when none is.
        self._before_retry: dict = dict.fromkeys(_FULL_BATCH)
        self._unanswered_logged: set = set()
        self.last_flush = 0.0
        self._thread = threading.Thread(target=self._run, name="lambdawrap-export", daemon=True)
        self._thread.start()

    def attach(self, signals: Any) -> None:
        """Export what `signals` (signals.Signals) buffer and measure."""
        self.spans, self.logs = signals.spans, signals.logs
        self.before_collect = signals.settle_measurements
        self.count_again = signals.count_again

    @property
    def holding(self) -> bool:
        """Whether items wait for a flush to send them: spans or log lines in their buffers,
        a metric batch kept after a failed export (the collector down, or holding us off)."""
        return (self.spans is not None and len(self.spans) > 0) or self._logs_waiting() or bool(getattr(self._metric_exporter, "retained", False))

    @property
    def busy(self) -> bool:
        """True while the worker is still on an earlier flush request."""
        with self._wake:
            return self._completed < self._requested

    def connect_ahead(self, run_s: float, spare_cpu_s: float) -> int:
        """At the start of an invocation whose end will flush, expected to run `run_s` and to
        leave `spare_cpu_s` of the environment's CPU unused (as the last did): open now, on
        threads of their own, the connections that flush will use and that are not open (ones
        the collector closed while the environment was idle, as collectors do after a minute or
        so), so that their round trips and TLS handshakes pass while the function runs, not
        after its response. Only as many as that spare CPU covers, by what each last took to
        make: at 128 MB the environment's quota is shared, and CPU the function would need
        delays its answer. And only those whose last set-up took at least CONNECT_AHEAD_MIN_S
        and at most twice `run_s`: a connection not half made by the response saves little.
        The logs' only for a function that logs. How many connections are being made."""
        if self._stage != "run" or self.busy:
            return 0
        logs = self._logs_seen or self._logs_waiting()
        started = 0
        for signal, (transport, endpoint, timeout) in self._transports:
            if signal == "logs" and not logs:
                continue
            try:
                set_up = transport.set_up(endpoint)
                if set_up is None or not CONNECT_AHEAD_MIN_S <= set_up[0] <= 2 * run_s or set_up[1] > spare_cpu_s:
                    continue
                if transport.connect_ahead(endpoint, timeout, CONNECT_AHEAD_NICE):
                    started += 1
                    spare_cpu_s -= set_up[1]
            except Exception:  # noqa: BLE001 - only a head start: the flush connects itself
                logger.debug("lambdawrap: connecting ahead for %s failed", signal, exc_info=True)
        return started

    def request_flush(self, deadline_s: float | None = None) -> int:
        """Ask the worker to export everything; the ticket `done` answers for."""
        with self._wake:
            self._requested += 1
            if self._stage == "run":
                self._deadline = time.monotonic() + (deadline_s if deadline_s is not None else 30.0)
            self._wake.notify_all()
            return self._requested

    def done(self, ticket: int) -> bool:
        """True once the flush that `request_flush` gave this ticket for is complete."""
        return self._completed >= ticket

    def flush(self, wait_s: float, deadline_s: float | None = None) -> bool:
        """Ask the worker to export everything; wait up to wait_s. True if it finished."""
        ticket = self.request_flush(deadline_s)
        with self._wake:
            return self._wait_for(ticket, time.monotonic() + wait_s)

    def _wait_for(self, ticket: int, until: float) -> bool:
        # Called with self._wake held.
        while self._completed < ticket:
            left = until - time.monotonic()
            if left <= 0:
                return False
            self._wake.wait(left)
        return True

    def close(self, budget_s: float) -> int:
        """At SHUTDOWN: export the spans that can go before the deadline, then the metrics
        (which carry the drop counts) and the logs. Returns within `budget_s`, whatever the
        collector does; returns the number of spans counted as not exported
        (`shutdown_deadline`, and `unanswered` for a request that went whole).

        A span is counted as dropped only once its fate is known: still in the buffer (never
        sent), or in a request that had not been answered when the deadline came. Spans counted
        late miss this environment's metrics; their count is carried to the next environment
        with the other unexported counts (see Signals.counted)."""
        deadline = time.monotonic() + max(0.0, budget_s)
        # The metrics' share of the time, kept after the spans; none where the whole budget
        # would not hold it: they could not go anyway (their counts are carried over), and a
        # span request under way may still be answered in the time they would have kept.
        reserve = self._metrics_reserve_s()
        if reserve >= budget_s:
            reserve = 0.0
        with self._wake:
            self._stage = "spans"
            self._metrics_share = reserve > 0
            self._deadline = deadline
            self._requested += 1
            spans_ticket = self._requested
            self._wake.notify_all()
            for exporter in (self.span_exporter, getattr(self._metric_exporter, "_inner", None), self.log_exporter):
                _end_back_off(exporter)
            # The worker stops by itself before the metrics' share of the time; if it is stuck
            # on the collector, stop waiting for it then.
            while self._completed < spans_ticket:
                left = deadline - reserve - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(min(left, 0.05))
            finished = self._completed >= spans_ticket
            idle = False  # the worker, once its final export is done
            self._stage = "final"
        if not finished:
            # Stuck on the collector: no retry may start now (a retry after the count below
            # would deliver what was counted as dropped); the request under way goes on.
            try:
                _stop_retries(self.span_exporter)
            except Exception:  # noqa: BLE001 - best effort, we are leaving
                pass
        with self._flight_lock:
            never_sent = len(self.spans.take(len(self.spans))) if self.spans is not None else 0
        if never_sent:
            self._on_drop("shutdown_deadline", never_sent)
        if finished:
            with self._wake:
                self._requested += 1
                ticket = self._requested
                self._wake.notify_all()
                idle = self._wait_for(ticket, deadline)
        else:
            # The worker is on the collector: send the metrics from a thread of their own, and
            # stop waiting at the deadline whatever happens to it.
            _until(deadline, self._export_metrics_and_logs, deadline)
            # The span request under way may still be answered in the time left (the metrics
            # may have needed none of it): its fate is then known, not guessed, which would
            # count as dropped what the collector stores.
            with self._wake:
                self._wait_for(spans_ticket, deadline)
        with self._flight_lock:
            # Whatever is still in flight (or came back unexported) now has a known fate.
            spans_in_request = self.in_flight
            left_behind = len(self.spans.take(len(self.spans))) if self.spans is not None else 0
            self.in_flight = 0
            may_hold = self._may_hold("spans", spans_in_request)
        self._drop_unsent("spans", may_hold, spans_in_request - may_hold + left_behind, "shutdown_deadline")
        # Log lines that did not go, those of a request still unanswered among them: counted
        # after the metrics went, so the count is carried to the next environment with the
        # other unexported counts. A request sent alone has until the deadline to be answered.
        self._alone_done("logs", deadline)
        with self._flight_lock:
            logs_in_request = self.logs_in_flight
            logs_left = logs_in_request + (len(self.logs.take(len(self.logs))) if self.logs is not None else 0)
            self.logs_in_flight = 0
            self._logs_settled = True
            logs_may_hold = self._may_hold("logs", logs_in_request)
        self._drop_unsent("logs", logs_may_hold, logs_left - logs_may_hold, "log_shutdown_deadline")
        if idle and (logs_left or self._logs_counted_late) and time.monotonic() + self._answer_time_s("metrics") < deadline:
            # Lines counted after the metrics went (a collector that refuses logs: a tracing
            # backend's endpoint answers 404) would be carried to the next environment, and
            # at a spindown none comes: the counts go now if a request still fits. The worker
            # is idle (its last ticket completed), so the metrics are sent from here, waited for
            # until the deadline only: the exporter's back-off and its own timeout know none,
            # and the process ends at it, with what it was to carry over.
            _until(deadline, self._export_metrics, deadline, "final")
        return never_sent + spans_in_request + left_behind

    def unexported_counts(self, counted: collections.Counter) -> list:
        """What of `counted` (the counters' totals, see Signals.counted) the collector has not
        acknowledged, as [{"name", "attributes", "value"}]: what an environment ending now
        would take with it."""
        if self._metric_exporter is None:
            return []  # metrics not exported (OTEL_METRICS_EXPORTER=none): nothing to carry over
        # What the collector took, and what it may hold (never sent again: counted twice).
        # Looked up key by key: the exporting thread may be adding to `acknowledged`.
        acknowledged = self._metric_exporter.acknowledged
        deltas, cumulative = self._metric_exporter.in_doubt()
        carried = []
        for key, value in list(counted.items()):
            taken = max(acknowledged[key], cumulative.get(key, 0)) + deltas[key]
            if value > taken:
                carried.append({"name": key[0], "attributes": dict(key[1]), "value": value - taken})
        return carried

    def _metrics_reserve_s(self) -> float:
        # Time kept at SHUTDOWN for the metrics after the spans: they carry the drop counts.
        if self._metric_exporter is None:
            return 0.0
        return max(MIN_METRICS_RESERVE_S, self._answer_time_s("metrics"))

    def _answer_time_s(self, signal: str) -> float:
        """How long a request of `signal` started now would take to be answered, with a margin:
        by its own last request where its collector is another than the spans', else by the
        longer of the two (the spans' most often the latest: SHUTDOWN sends them first, and a
        collector slowed since the signal's last request would not answer in its time)."""
        own = self._latency.get(signal)
        if own is None or self._collector_of.get(signal) == self._collector_of["spans"]:
            own = max(own or 0.0, self.latency_s)
        return 1.2 * own + 0.02

    def _note_latency(self, signal: str) -> None:
        # On the thread that sent the request: its answers are kept per thread.
        answers = self._answers_of.get(signal)
        request_s = answers.last_request_s if answers is not None else None
        if request_s is not None:
            self._latency[signal] = request_s

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._completed >= self._requested:
                    self._wake.wait()
                target = self._requested
                self._working_on = target
            _logging_failures(self._export_all)  # the worker must survive any exporter bug
            with self._wake:
                self._completed = target
                self.last_flush = time.monotonic()
                self._wake.notify_all()
            self._on_progress()

    def _time_for_a_batch(self) -> bool:
        now = time.monotonic()
        if self._stage == "run":
            return now < self._deadline
        # Shutting down: a request that would outlast the deadline is not started, so that
        # none is left with an unknown fate (delivered? dropped?) when the process ends, and
        # the metrics keep their share of the time, as the collector's latency makes it (none
        # where close() found the budget would not hold it: the spans then have all of it).
        reserve = self._metrics_reserve_s() if self._metrics_share else 0.0
        return now + 1.2 * self.latency_s + 0.02 + reserve < self._deadline

    def _refused(self, signal: str, sent: bool, count: int) -> str | None:
        """For a failed export of `count` items: "too_large" (the batch goes back, and the next
        requests are half as big), "refused" (to be counted as dropped: sending the same again
        would be refused again, and the batch would hold back all that follows) or None (worth
        sending again: the collector down, slow or busy)."""
        answers = self._answers_of.get(signal)
        if sent or answers is None:
            return None
        status = answers.last_status
        refused = refusal(status)
        if status is None and answers.unanswered:
            # Sent again once (a blip), the same items (not more come meanwhile: those would be
            # counted having gone once); twice in a row, counted: the collector may hold it,
            # and a slow one would store it again at every flush. A server error before it is
            # the first failure of the two (alternating, the batch went at every flush).
            self._unanswered[signal] += 1
            if self._unanswered[signal] + self._server_errors[signal] < UNANSWERED_TRIES:
                self._retry_alone(signal, count)
                return None
            self._server_errors[signal] = 0
            self._unanswered_run_over(signal)
            if signal not in self._unanswered_logged:
                self._unanswered_logged.add(signal)
                logger.warning("lambdawrap: a request of %d %s went whole to the collector twice in a row and its answer did not come within the timeout: counted as dropped (%s), not sent again (the collector may hold it); logged once", count, signal, UNANSWERED_REASONS[signal])
            return "unanswered"
        unanswered_before = self._unanswered[signal]
        self._unanswered_run_over(signal)
        if refused is None and server_error(status):
            # Sent again at the next flush (a blip), not at every one: a batch the collector
            # fails on every time came first at each, held back all that follows, and was
            # stored again wherever the collector took part of it. An unanswered try before it
            # is the first failure of the two.
            self._server_errors[signal] += 1
            if self._server_errors[signal] + unanswered_before >= SERVER_ERROR_TRIES:
                refused = "refused"
            else:
                # The same items alone: those that came since would be counted having gone once.
                self._retry_alone(signal, count)
        else:
            self._server_errors[signal] = 0  # in a row only: another failure, or a smaller batch
            self._retry_over(signal)
        if refused == "too_large" and count > 1:
            self._batch[signal] = count // 2
            self._too_large_at[signal] = min(count, self._too_large_at[signal] or count)
            self._whole_since_too_large[signal] = 0
            self._refusals(signal, status, count, f"sent again in requests of {count // 2}")
            return refused
        if refused is not None:
            if refused == "too_large":
                # One item too large by itself says nothing of the next: they go at full size.
                self._batch[signal] = _FULL_BATCH[signal]
                self._too_large_at[signal] = None
                self._before_retry[signal] = None
            else:
                self._retry_over(signal)  # as big as before the retry: a 413's limit stands
            tried = "sent again once" if self._server_errors[signal] or unanswered_before else "not sent again"
            self._server_errors[signal] = 0
            self._refusals(signal, status, count, f"counted as dropped ({REJECTED_REASONS[signal]}), {tried}")
            return "refused"
        return None

    def _may_hold(self, signal: str, in_request: int) -> int:
        """Of the `in_request` items of `signal` whose request is under way at SHUTDOWN's
        deadline, those the collector may hold: the request went whole and may be stored and
        answered after we are gone, counted as at a flush it goes unanswered, not as items that
        could not go (before: exported and counted `shutdown_deadline` both). Asked with the
        request's count taken (the flight lock held): its answer cannot land in between."""
        return in_request if in_request and self._awaiting(signal) else 0

    def _drop_unsent(self, signal: str, may_hold: int, unsent: int, reason: str) -> None:
        if may_hold:
            self._on_drop(UNANSWERED_REASONS[signal], may_hold)
        if unsent:
            self._on_drop(reason, unsent)

    def _awaiting(self, signal: str) -> bool:
        """Whether a request of the `signal` export under way went whole and its answer has not
        come (OTLP/HTTP only; not told over gRPC or through a proxy: taken as not sent)."""
        answers = getattr(self, "_answers_of", {}).get(signal)
        return bool(getattr(answers, "awaiting_answer", lambda: False)())

    def _forget_unanswered(self, signal: str) -> None:
        """An export of `signal` begins: the requests of those before it are done with."""
        answers = getattr(self, "_answers_of", {}).get(signal)
        getattr(answers, "forget_unanswered", lambda: None)()

    def _metrics_refused(self) -> str | None:
        """Why the metric batch whose export just failed failed: "refused" as it is (as _refused
        tells it of spans and logs; a 413 too: a metric batch is not split), "unanswered" (it
        went whole, no answer came in time, before SHUTDOWN), or None. A server error of the
        collector's own is not a refusal: unlike a span batch, a metric batch is kept until it
        goes."""
        answers = self._answers_of.get("metrics")
        if answers is None:
            return None
        status, unanswered = answers.last_status, answers.unanswered
        answers.last_status, answers.unanswered = None, False  # read once: the next failure must not read them
        if status is None and unanswered and self._stage == "run":
            # (At SHUTDOWN the time left, not the collector, may have cut it short.)
            return "unanswered"
        if refusal(status) is None:
            return None
        self._refusals("metrics", status, 1, "its counters' values go in the next batch, its other points are lost")
        return "refused"

    def _rejected_in_answer(self, signal: str, count: int) -> None:
        """Items an answer's partial success rejected (see _rejected): at most the request's,
        whatever the collector says (a count beyond them would be drops of nothing)."""
        with self._flight_lock:
            self._rejected(signal, min(count, getattr(self._request, "items", count)))

    def _rejected(self, signal: str, count: int, reasons: dict = REJECTED_REASONS) -> None:
        """Count items the collector refused (or, with UNANSWERED_REASONS, never answered for),
        unless close() counted their request already (its deadline came first: then they stay
        counted once). Called with the flight lock held, the request's items still in flight."""
        counted = self.in_flight == 0 if signal == "spans" else self._logs_settled
        if not counted:
            self._on_drop(reasons[signal], count)
            self._logs_counted_late = self._logs_counted_late or (signal == "logs" and self._stage == "final")

    def _forget_status(self, signal: str) -> None:
        # Before an export: a failure that comes before any answer must not read an older one.
        answers = self._answers_of.get(signal)
        if answers is not None:
            answers.last_status = None
            answers.last_request_s = None
            answers.unanswered = False

    def _sent_whole(self, signal: str) -> None:
        # Requests grow back after a 413 as they go through, past half the size it refused only
        # once WHOLE_BEFORE_REGROWTH have (a limit lifted since).
        grown = min(_FULL_BATCH[signal], 2 * self._batch[signal])
        refused_at = self._too_large_at[signal]
        if refused_at is not None:
            self._whole_since_too_large[signal] += 1
            if self._whole_since_too_large[signal] < WHOLE_BEFORE_REGROWTH:
                grown = min(grown, max(self._batch[signal], refused_at // 2))
            else:
                self._too_large_at[signal] = None
        self._batch[signal] = grown
        self._server_errors[signal] = 0
        self._unanswered[signal] = 0
        self._retry_over(signal)

    def _unanswered_run_over(self, signal: str) -> None:
        """A run of unanswered exports ended (counted, or another outcome came)."""
        if self._unanswered[signal]:
            self._unanswered[signal] = 0
            self._retry_over(signal)

    def _retry_alone(self, signal: str, count: int) -> None:
        """The `count` items of a failed request go again alone, at the next try."""
        if self._before_retry[signal] is None:
            self._before_retry[signal] = self._batch[signal]
        self._batch[signal] = min(self._batch[signal], count)

    def _retry_over(self, signal: str) -> None:
        """Requests hold as many items as before a retry again, or more where they grew back."""
        before = self._before_retry[signal]
        if before is not None:
            self._before_retry[signal] = None
            self._batch[signal] = max(self._batch[signal], before)

    def _export_all(self) -> None:
        self._logs_seen = self._logs_seen or self._logs_waiting()
        if self._stage == "run" and (self.exports == 0 or self.latency_s >= AT_ONCE_LATENCY_S or self._failing or self._side_failing or self._sending_alone()):
            self._export_at_once()
            return
        # In priority order: spans, then metrics, then logs.
        self._export_spans()
        if self._stage == "spans":
            return
        self._export_metrics_and_logs(None)

    def _export_at_once(self) -> None:
        """The spans on this thread; the metrics (always: they are collected now) and the logs
        there are, each on a thread of its own made for this flush; returns once all are done
        (but see _await_helpers). Made per flush, not kept: an idle thread is frozen and thawed
        with every invocation. A job no thread could be had for (memory, limits) runs here
        after the spans, in turn."""
        end = self._deadline
        has_spans = self.spans is not None and len(self.spans) > 0
        with self._wake:
            self._failed_threads.clear()
        side = [(signal, fn) for signal, fn, due in (("metrics", self._export_metrics, self._metric_exporter is not None), ("logs", self._export_logs, self._logs_waiting())) if due]
        helpers, in_turn = [], []
        for signal, fn in side:
            if signal in self._sending_alone():
                continue  # one export of a signal at a time: its items wait for a later flush
            if signal in self._side_failing:
                alone = _started(fn, end, "run")
                self._alone[signal] = alone
                if alone is None:
                    in_turn.append(fn)
            else:
                finished = threading.Event()
                helper = _started(fn, end, "run", done=lambda finished=finished: self._helper_done(finished))
                if helper is None:
                    in_turn.append(fn)
                else:
                    helpers.append((signal, helper, finished))
        try:
            if has_spans:
                self._export_spans()
            for fn in in_turn:
                fn(end, "run")
        finally:
            self._await_helpers(helpers)

    def _await_helpers(self, helpers: list) -> None:
        """Wait for this flush's helpers, unless a request of theirs failed (their exporter's
        retries take seconds), or a later flush is asked for (or SHUTDOWN comes) first: its
        spans must not wait on this flush's metrics or logs. A helper still under way then goes
        on alone (see _sending_alone)."""
        with self._wake:
            while not all(finished.is_set() or helper in self._failed_threads for _, helper, finished in helpers) and self._requested <= self._working_on and self._stage == "run":
                self._wake.wait()
        for signal, helper, finished in helpers:
            if finished.is_set():
                helper.join()  # ending now: gone when the flush is
            else:
                self._alone[signal] = helper

    def _side_request_failed(self, signal: str) -> None:
        """A request of `signal` (metrics, logs) failed in a way its exporter retries."""
        with self._wake:
            self._failed_threads.add(threading.current_thread())
            self._side_failing.add(signal)
            self._wake.notify_all()
        if threading.current_thread() is self._thread and self._stage == "run" and signal not in self._given_up:
            # On the worker (the signals sent in turn, to a collector in the environment): its
            # retries, seconds apart, would hold the spans of every later flush. Its exporter
            # gives up instead, the items kept, and the signal goes alone from the next flush.
            self._given_up.add(signal)
            for event in _back_off_events(self._side_exporter(signal)):
                event.set()

    def _retries_again(self, signal: str) -> None:
        """After an export of `signal` on the worker: its exporter retries again."""
        if signal in self._given_up:
            self._given_up.discard(signal)
            for event in _back_off_events(self._side_exporter(signal)):
                event.clear()

    def _side_exporter(self, signal: str) -> object:
        return getattr(self._metric_exporter, "_inner", None) if signal == "metrics" else self.log_exporter

    def _helper_done(self, finished: threading.Event) -> None:
        with self._wake:  # set and told at once: the worker checks between its waits
            finished.set()
            self._wake.notify_all()

    def _sending_alone(self) -> set:
        """The side signals an export is still under way for, on a thread no flush waits for."""
        return {signal for signal, sending in self._alone.items() if sending is not None and sending.is_alive()}

    def _alone_done(self, signal: str, until: float) -> bool:
        """Whether no export of `signal` sent alone is under way, waiting for it until `until`
        (monotonic): at SHUTDOWN one export of a signal at a time, its fate known before it is
        counted."""
        sending = self._alone.get(signal)
        if sending is not None:
            sending.join(max(0.0, until - time.monotonic()))
        return sending is None or not sending.is_alive()

    def _side_outcome(self, signal: str, failed: bool) -> None:
        if failed:
            self._side_failing.add(signal)
        else:
            self._side_failing.discard(signal)

    def _held_off(self, signal: str) -> bool:
        """Whether the collector asked not to be sent `signal` yet (Retry-After, RetryInfo; see
        collector_answers): while the environment runs its items wait in their buffer, at
        SHUTDOWN they go (the last chance)."""
        answers = self._answers_of.get(signal)
        return answers is not None and self._stage == "run" and answers.held_off()

    def _export_spans(self) -> None:
        # While the environment runs, the spans buffered when this flush reached them: those
        # that come meanwhile wait for the next flush, as log lines do. Invocations ending
        # faster than a slow collector answers kept one flush sending spans for as long as
        # they came (up to its 30 s), and its metrics, the drop counts among them, waited as
        # long: an environment that ended meanwhile had none of them exported.
        left = len(self.spans) if self.spans is not None else 0
        while self._stage != "final" and self.spans is not None and len(self.spans) and (left > 0 or self._stage != "run") and not self._held_off("spans") and self._time_for_a_batch():
            with self._flight_lock:
                batch = self.spans.take(self._batch["spans"], REQUEST_MAX_CHARS)
                self.in_flight = len(batch)
            left -= len(batch)
            started = time.monotonic()
            self._forget_status("spans")
            self._forget_unanswered("spans")
            self._request.items = len(batch)
            raised = False
            try:
                result = self.span_exporter.export(batch)
            except Exception:  # noqa: BLE001 - an exporter bug: keep the batch, count nothing twice
                logger.exception("lambdawrap: span export failed")
                result = SpanExportResult.FAILURE
                raised = True
            request_s = self._answers_of["spans"].last_request_s if "spans" in self._answers_of else None
            if result != SpanExportResult.SUCCESS and (raised or (request_s is None and "spans" in self._answers_of)):
                # Failed before any request (the exporters log an encoding failure and return):
                # a span that cannot be encoded, given back, would fail every batch it is in,
                # first at every flush, and no span would go again.
                unencodable = _unencodable(batch)
                with self._flight_lock:
                    if unencodable and self.in_flight:  # else close() counted the request
                        batch = [span for span in batch if id(span) not in unencodable]
                        self.in_flight = len(batch)
                        self._on_drop("malformed_span", len(unencodable))
            self.latency_s = request_s if request_s is not None else time.monotonic() - started
            refused = self._refused("spans", result == SpanExportResult.SUCCESS, len(batch))
            self._failing = result != SpanExportResult.SUCCESS and refused is None
            with self._flight_lock:
                # Atomic with close()'s count: a batch is either in flight or back in the buffer
                # (or counted: by close() once its deadline came, else here when refused).
                if refused in _COUNTED:
                    self._rejected("spans", len(batch), _COUNTED[refused])
                elif result != SpanExportResult.SUCCESS:
                    self.spans.give_back(batch)
                self.in_flight = 0
            if result != SpanExportResult.SUCCESS:
                if refused is None:
                    break
                if refused == "too_large":
                    left += len(batch)  # this one again, in smaller requests
                continue  # the next batch, or this one again in smaller requests
            self._sent_whole("spans")
            self.exports += 1

    def _export_metrics_and_logs(self, deadline: float | None) -> None:
        end = self._deadline if deadline is None else deadline
        if self._stage != "run" and "metrics" in self._side_failing:
            # Their collector failing, the metrics' retries would take the logs' time as well:
            # the logs go beside them.
            logs = _started(self._export_logs, end, self._stage)
            if logs is not None:
                self._export_metrics(end, self._stage)
                logs.join(max(0.0, end - time.monotonic()))
                return
        self._export_metrics(end, self._stage)
        self._export_logs(end, self._stage)

    def _logs_waiting(self) -> bool:
        return self.logs is not None and self.logs.ready()

    def _overtaken(self, stage: str) -> bool:
        """Whether SHUTDOWN began after a run-stage export started: it then starts nothing
        more, close() having taken over what is left (sent in order, or counted)."""
        return stage == "run" and self._stage != "run"

    def _export_metrics(self, end: float, stage: str) -> None:
        if self._metric_exporter is None or self._overtaken(stage) or self._held_off("metrics"):
            return  # held off: the SDK aggregates on meanwhile, losslessly
        if stage != "run" and not self._alone_done("metrics", end - self._answer_time_s("metrics")):
            return  # still on a failing collector: the counts are carried over (but those it may hold)
        if stage != "run" and time.monotonic() + self._answer_time_s("metrics") >= end:
            # Leaving, and a request would not be answered in time: better not sent at all than
            # sent with an unknown fate. What it would have carried is carried over instead.
            return
        left_ms = (end - time.monotonic()) * 1000
        if left_ms <= 0:
            return
        self._forget_status("metrics")
        try:
            if not self._metric_exporter.retained or self._metric_exporter.resend(timeout_millis=left_ms):
                # Collect only once nothing is kept: until then the SDK aggregates on, losslessly.
                self.before_collect()
                self._metric_reader.force_flush(timeout_millis=(end - time.monotonic()) * 1000)
        finally:
            self._retries_again("metrics")
        self._note_latency("metrics")
        self._side_outcome("metrics", failed=bool(self._metric_exporter.retained))

    def _export_logs(self, end: float, stage: str) -> None:
        """The log lines buffered when this flush reached them, in batches while time is left;
        a refused batch waits for the next flush. Lines that come meanwhile wait for the next
        one too: a flush still running when a flood begins (one that outlasted the flush budget,
        frozen with the environment) would otherwise export the flood as it arrives, most of
        50 MB where the buffer keeps 4 MB, inside the invocation's CPU share."""
        if stage != "run" and not self._alone_done("logs", end - self._answer_time_s("logs")):
            return  # still on a failing collector: close() counts what is left
        # Counted after that wait: a batch the alone export failed is back in the buffer.
        left = len(self.logs) if self.logs is not None else 0
        while left > 0 and not self._overtaken(stage) and not self._held_off("logs") and time.monotonic() + self._answer_time_s("logs") < end:
            with self._flight_lock:
                batch = self.logs.take(min(self._batch["logs"], left), max_bytes=REQUEST_MAX_CHARS, ready=True)
                self.logs_in_flight += len(batch)
            if not batch:
                return
            left -= len(batch)
            self._forget_status("logs")
            self._request.items = len(batch)
            try:
                result = self.log_exporter.export(log_records(batch, self.resource))
            except Exception:  # noqa: BLE001 - an exporter bug: keep the lines, count nothing twice
                logger.exception("lambdawrap: log export failed")
                result = LogRecordExportResult.FAILURE
            self._retries_again("logs")
            self._note_latency("logs")
            refused = self._refused("logs", result == LogRecordExportResult.SUCCESS, len(batch))
            with self._flight_lock:
                # Atomic with close()'s count: the lines are in flight or back in the buffer,
                # unless close() counted them already (then they stay counted, not given back).
                if refused in _COUNTED:
                    self._rejected("logs", len(batch), _COUNTED[refused])
                if not self._logs_settled:
                    self.logs_in_flight -= len(batch)
                    if result != LogRecordExportResult.SUCCESS and refused not in _COUNTED:
                        self.logs.give_back(batch)
            self._side_outcome("logs", failed=result != LogRecordExportResult.SUCCESS and refused is None)
            if refused == "too_large":
                left += len(batch)  # again at once, in smaller requests
            elif result != LogRecordExportResult.SUCCESS and refused is None:
                return
            elif result == LogRecordExportResult.SUCCESS:
                self._sent_whole("logs")


def _collector(exporter: object) -> str | None:
    """The host and port an exporter sends to, as settings compares them (None: not known)."""
    endpoint = getattr(exporter, "_endpoint", None)
    return host_port(endpoint, 4318) if isinstance(endpoint, str) else None


def _stop_retries(exporter: "Any") -> None:
    """No retry of `exporter` starts from now; the request under way goes on to its answer.
    OTLP/gRPC's shutdown() would close its channel, which cancels that request: the collector
    may have it, and store it, while it would be counted as dropped. There the two flags its
    shutdown sets are set alone (its retry loop gives up on either)."""
    waking = getattr(exporter, "_shutdown_in_progress", None)
    if isinstance(waking, threading.Event) and hasattr(exporter, "_channel"):
        exporter._shutdown = True
        waking.set()
        return
    exporter.shutdown()  # OTLP/HTTP's closes only the connections not in use


def _end_back_off(exporter: object) -> None:
    """End the back-off wait `exporter` is in, if any, so that it sends its request again now.
    Begun while the environment ran, a wait lasts seconds (1, 2, 4... within the exporter's 10 s):
    at SHUTDOWN it would outlast the time left, and the batch would be counted as dropped at the
    deadline even though the collector was back, answering in milliseconds. The event the
    exporter waits on is the one its shutdown() sets, so it is set and cleared at once: the
    waiting thread wakes (and gives up that retry: the batch goes back to the buffer and SHUTDOWN
    sends it again), later retries wait as before. A waiting thread wakes on the set even if
    the clear comes before it runs (Condition.wait returns True once notified)."""
    for event in _back_off_events(exporter):
        if not event.is_set():
            event.set()
            event.clear()


def _back_off_events(exporter: object) -> list:
    """The events an exporter's back-off waits on, which its shutdown() sets (and it gives up
    its retries on): OTLP/HTTP's client's, OTLP/gRPC's exporter's own. An exporter of another
    shape keeps its waits."""
    events = (getattr(getattr(exporter, "_client", None), "_shutdown_event", None), getattr(exporter, "_shutdown_in_progress", None))
    return [event for event in events if isinstance(event, threading.Event)]


def _started(fn, *args, done: Callable[[], None] | None = None) -> threading.Thread | None:
    """fn(*args) on a thread of its own, started, then done() there; None if no thread could
    be had (memory, limits)."""
    helper = threading.Thread(target=_logging_failures, args=(fn, *args), kwargs={"done": done}, name=f"lambdawrap{fn.__name__.replace('_', '-')}", daemon=True)
    try:
        helper.start()
    except RuntimeError:
        return None
    return helper


def _unencodable(batch: list) -> set:
    """The ids of the spans of `batch` the OTLP encoder fails on, each tried alone (only after
    the batch failed: a span at a time costs what the batch did)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    bad = set()
    for span in batch:
        try:
            encode_spans([span])
        except Exception:  # noqa: BLE001 - what fails it is what we look for
            bad.add(id(span))
    return bad


def _until(deadline: float, fn, *args) -> None:
    """fn(*args) on a thread of its own, waited for until `deadline` (monotonic) at most; not
    run at all where no thread could be had."""
    helper = _started(fn, *args)
    if helper is not None:
        helper.join(max(0.0, deadline - time.monotonic()))


def _logging_failures(fn, *args, done: Callable[[], None] | None = None) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - an exporter bug must not end the flush unlogged
        logger.exception("lambdawrap: export failed")
    finally:
        if done is not None:
            done()
