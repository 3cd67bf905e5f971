"""A function that brings the OpenTelemetry SDK and sets its own tracer provider, at import
time or inside its handler (EVENT["when"])."""
import os

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

EXPORTER = InMemorySpanExporter()
if os.environ.get("SET_PROVIDER") == "import":
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)

tracer = trace.get_tracer("orders")  # before any provider: a proxy tracer


def handler(event, context):
    if os.environ.get("SET_PROVIDER") == "handler" and not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    with tracer.start_as_current_span("orders.lookup") as span:
        span.set_attribute("order.id", "42")
        with trace.get_tracer("db").start_as_current_span("db.query"):
            pass
    return {"exported_by_the_function": sorted(s.name for s in EXPORTER.get_finished_spans()), "provider": type(trace.get_tracer_provider()).__name__}
