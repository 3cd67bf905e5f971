"""A minimal real OTLP/gRPC trace receiver for tests (loopback only, free port)."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, store: "GrpcTraceReceiver") -> None:
        self._store = store

    def Export(self, request, context):  # noqa: N802 - gRPC method name
        with self._store.cv:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self._store.spans.append({"name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(), "attributes": {a.key: a.value for a in span.attributes}})
            self._store.cv.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()


class GrpcTraceReceiver:
    def __init__(self) -> None:
        self.spans: list = []
        self.cv = threading.Condition()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "GrpcTraceReceiver":
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None).wait(5)

    def wait_for(self, count: int, timeout: float = 15.0) -> list:
        with self.cv:
            if not self.cv.wait_for(lambda: len(self.spans) >= count, timeout):
                raise TimeoutError(f"expected {count} spans over gRPC, got {len(self.spans)}")
            return list(self.spans)
