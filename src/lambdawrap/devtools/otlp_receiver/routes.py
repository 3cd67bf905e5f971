"""The three OTLP/HTTP export paths, and the request and response messages each carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


@dataclass(frozen=True)
class Route:
    """One export path: its signal, the name of one item it carries, its message types."""

    signal: str  # "traces" / "metrics" / "logs"
    item_kind: str  # "span" / "metric" / "log": the JSONL "signal" field and CLI line prefix
    request_type: type
    response_type: type


ROUTES: Dict[str, Route] = {
    "/v1/traces": Route(
        "traces",
        "span",
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "/v1/metrics": Route(
        "metrics",
        "metric",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "/v1/logs": Route(
        "logs",
        "log",
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}

SIGNAL_ALIASES = {
    "traces": "traces",
    "trace": "traces",
    "spans": "traces",
    "span": "traces",
    "metrics": "metrics",
    "metric": "metrics",
    "logs": "logs",
    "log": "logs",
}
