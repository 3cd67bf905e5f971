"""A minimal real OTLP/gRPC trace receiver for tests (loopback only, free port), which can be
told to refuse requests with a gRPC code, to answer with a partial success or late, and to take
messages only up to a size (as a collector's max_recv_msg_size does)."""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, store: "GrpcTraceReceiver") -> None:
        self._store = store

    def Export(self, request, context):  # noqa: N802 - gRPC method name
        store = self._store
        spans = [span for resource_spans in request.resource_spans for scope_spans in resource_spans.scope_spans for span in scope_spans.spans]
        with store.cv:
            refuse = store.refuse_next > 0
            rejected = min(store.reject_per_request, len(spans))
            store.requests.append({"spans": len(spans), "refused": refuse, "span_ids": [s.span_id.hex() for s in spans]})
            if refuse:
                store.refuse_next -= 1
            else:
                # Rejected items (a partial success) are not accepted: the last ones of the request.
                for span in spans[: len(spans) - rejected]:
                    store.spans.append({"name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(), "attributes": {a.key: a.value for a in span.attributes}})
            store.cv.notify_all()
        if refuse:
            if store.retry_after_s is not None:
                from google.rpc.error_details_pb2 import RetryInfo

                advice = RetryInfo()
                advice.retry_delay.FromTimedelta(__import__("datetime").timedelta(seconds=store.retry_after_s))
                context.set_trailing_metadata((("google.rpc.retryinfo-bin", advice.SerializeToString()),))
            context.abort(store.refuse_code, "refused by the test receiver")
        answer = trace_service_pb2.ExportTraceServiceResponse()
        if rejected:
            answer.partial_success.rejected_spans = rejected
            answer.partial_success.error_message = "over the test receiver's quota"
        time.sleep(store.delay_s)  # a collector slow to answer what it has stored
        return answer


class GrpcTraceReceiver:
    def __init__(self, max_receive_bytes: int | None = None) -> None:
        self.spans: list = []
        self.requests: list = []  # {"spans": n, "refused": bool, "span_ids": [...]} per request that reached the service
        self.refuse_next = 0  # requests to refuse, from the next one on
        self.refuse_code = grpc.StatusCode.INVALID_ARGUMENT
        self.retry_after_s: float | None = None  # a RetryInfo trailer with the refusals
        self.reject_per_request = 0  # spans each accepted request rejects in a partial success
        self.delay_s = 0.0  # how long each answer takes, after the request is stored
        self.cv = threading.Condition()
        options = [] if max_receive_bytes is None else [("grpc.max_receive_message_length", max_receive_bytes)]
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=options)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def refuse(self, count: int, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT, retry_after_s: float | None = None) -> None:
        with self.cv:
            self.refuse_next, self.refuse_code, self.retry_after_s = count, code, retry_after_s

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
