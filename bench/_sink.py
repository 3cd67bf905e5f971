"""A minimal counting OTLP/HTTP receiver for the throughput and shutdown-flush figures.

The project's OtlpReceiver flattens every span into dicts (and deep-copies them for
listeners), which is right for tests but would make the receiver, not the companion, the
bottleneck when 10,000+ spans arrive at once. This sink only decodes the protobuf (C upb),
counts spans whose `bench.id` (or `faas.invocation_id`) starts with a watched prefix, notes when they arrived,
and sums the `lambdawrap.dropped` counter by reason (the companion exports it with delta
temporality). It answers every export with 200. Callers wait on its arrivals (`wait_for`), not
on fixed sleeps.
"""

from __future__ import annotations

import collections
import gzip
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

_EMPTY = b""  # an empty Export*ServiceResponse


class CountingSink:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # notified after every export it counted
        self.spans_by_prefix: collections.Counter = collections.Counter()
        self.last_arrival: dict[str, float] = {}
        self.first_arrival: dict[str, float] = {}
        self.total_spans = 0
        self.dropped: collections.Counter = collections.Counter()
        self.requests = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # noqa: D401 - quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                try:
                    if self.path.endswith("/v1/traces"):
                        sink._traces(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
                    elif self.path.endswith("/v1/metrics"):
                        sink._metrics(metrics_service_pb2.ExportMetricsServiceRequest.FromString(body))
                except Exception:  # noqa: BLE001 - a bench sink never fails the exporter
                    pass
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(_EMPTY)))
                self.end_headers()
                self.wfile.write(_EMPTY)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="counting-sink", daemon=True)
        self.watched: tuple = ()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> "CountingSink":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def watch(self, *prefixes: str) -> None:
        self.watched = tuple(prefixes)

    def count(self, prefix: str) -> int:
        with self._lock:
            return self.spans_by_prefix[prefix]

    def dropped_total(self) -> int:
        """The `lambdawrap.dropped` counter so far, every reason."""
        with self._lock:
            return sum(self.dropped.values())

    def wait_for(self, prefix: str, expected: int, timeout_s: float, dropped_before: int | None = None) -> bool:
        """Wait until `expected` spans tagged with prefix arrived, or, with `dropped_before`,
        until those spans plus the drops counted since (`lambdawrap.dropped` above
        dropped_before) make `expected`; False if timeout_s passed first."""

        def reached() -> bool:
            counted = self.spans_by_prefix[prefix]
            if dropped_before is not None:
                counted += sum(self.dropped.values()) - dropped_before
            return counted >= expected

        with self._arrived:
            return self._arrived.wait_for(reached, timeout_s)

    def _traces(self, request) -> None:
        now = time.monotonic()
        counts: collections.Counter = collections.Counter()
        total = 0
        watched = self.watched
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    total += 1
                    if not watched:
                        continue
                    for kv in span.attributes:
                        if kv.key in ("bench.id", "faas.invocation_id"):
                            rid = kv.value.string_value
                            for prefix in watched:
                                if rid.startswith(prefix):
                                    counts[prefix] += 1
                            break
        with self._lock:
            self.requests += 1
            self.total_spans += total
            for prefix, n in counts.items():
                self.spans_by_prefix[prefix] += n
                self.last_arrival[prefix] = now
                self.first_arrival.setdefault(prefix, now)
            self._arrived.notify_all()

    def _metrics(self, request) -> None:
        found: collections.Counter = collections.Counter()
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name != "lambdawrap.dropped":
                        continue
                    for point in metric.sum.data_points:
                        reason = next((kv.value.string_value for kv in point.attributes if kv.key == "reason"), "?")
                        found[reason] += point.as_int or int(point.as_double)
        with self._lock:
            self.requests += 1
            self.dropped.update(found)
            self._arrived.notify_all()
