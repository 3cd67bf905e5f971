"""Loopback receivers for what the competitors send outside OTLP/HTTP: ADOT fast start's spans
(OTLP over UDP, the X-Ray daemon's format) and anything Datadog's library would send to
DogStatsD (UDP). Each binds a free port on 127.0.0.1 before it is handed out, counts what
arrives, and is always stopped."""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
from typing import Iterator

# ADOT's UDP exporter: one datagram = this header, then T1S/T1U (sampled or not) and base64 OTLP.
_UDP_OTLP_HEADER = b'{"format":"json","version":1}\n'


class UdpSink:
    """Counts datagrams, and the spans in those that carry OTLP traces over UDP."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.address = "127.0.0.1:%d" % self._sock.getsockname()[1]
        self.datagrams = 0
        self.spans = 0
        self.undecodable = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="bench-udp-sink", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            self.datagrams += 1
            if data.startswith(_UDP_OTLP_HEADER):
                self.spans += self._count_spans(data[len(_UDP_OTLP_HEADER) + 3 :])

    def _count_spans(self, payload: bytes) -> int:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        try:
            request = ExportTraceServiceRequest.FromString(base64.b64decode(payload))
        except Exception:  # noqa: BLE001 - a datagram we cannot read is counted, not fatal
            self.undecodable += 1
            return 0
        return sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(2)


@contextlib.contextmanager
def competitor_sinks() -> Iterator[dict]:
    """The sinks, stopped on exit: {"adot_udp", "datadog_statsd"}."""
    sinks: dict = {}
    try:
        sinks["adot_udp"] = UdpSink()
        sinks["datadog_statsd"] = UdpSink()
        yield sinks
    finally:
        for sink in sinks.values():
            sink.stop()
