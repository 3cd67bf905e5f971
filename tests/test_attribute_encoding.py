"""The companion's caching of encoded attributes (attribute_encoding): spans, log records and
metric points encode to exactly the bytes the SDK's own encoders give, repeated attributes and
values that compare equal across types (True and 1, 0.0 and -0.0) included."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, logging, math, sys
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind

from lambdawrap.companion import attribute_encoding

class Text(str):
    pass

failures = []
logging.getLogger("opentelemetry.exporter.otlp.proto.common._internal").addHandler(type("H", (logging.Handler,), {"emit": lambda self, record: failures.append(record.getMessage())})())
resource = Resource({"service.name": "orders", "faas.max_memory": 134217728})
values = [True, 1, 1.0, 0.0, -0.0, math.nan, "1", Text("1"), [1, 2], ["a", True], 2**64, b"x", None, {"k": "v"}]

def items():
    spans, logs = [], []
    for i in range(3):
        attributes = {"faas.trigger": "http", "faas.invocation_id": f"id-{i}"}
        attributes.update({f"value.{n}": value for n, value in enumerate(values)})
        context = SpanContext(1, 2 + i, is_remote=False)
        spans.append(ReadableSpan(name="GET /orders", context=context, resource=resource, attributes=attributes, events=(Event("exception", {"exception.type": "ValueError", "flag": i % 2 == 0}, timestamp=5),), kind=SpanKind.SERVER, start_time=1, end_time=2))
        logs.append(ReadableLogRecord(LogRecord(timestamp=3, observed_timestamp=4, body="line", attributes=attributes), resource=resource))
    return spans, logs

def metrics():
    reader = InMemoryMetricReader()
    counter = MeterProvider(resource=resource, metric_readers=[reader]).get_meter("probe").create_counter("probe.count")
    for labels in ({"faas.trigger": "http"}, {"faas.trigger": "http", "flag": True}, {"faas.trigger": "http", "flag": 1}, {"faas.trigger": "other"}):
        counter.add(1, labels)
    return reader.get_metrics_data()

spans, logs = items()
points = metrics()

def encoded():
    return [encode_spans(spans).SerializeToString().hex(), encode_logs(logs).SerializeToString().hex(), encode_metrics(points).SerializeToString().hex()]

sdk = encoded() + encoded()
sdk_failures, failures[:] = list(failures), []
installed = attribute_encoding.install()
again = attribute_encoding.install()
cached = encoded() + encoded()
print(json.dumps({"installed": installed, "again": again, "same": sdk == cached, "failures": failures == sdk_failures and len(failures) > 0}))
"""


def test_cached_attributes_encode_to_the_sdks_bytes():
    # GIVEN spans, log records and metric points whose attributes repeat, hold values that
    # compare equal across types, and one the SDK cannot encode (an int beyond int64)
    # WHEN they are encoded by the SDK's encoders, then again with the cache installed (twice)
    found = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    # THEN the bytes are the same, and the attribute the SDK leaves out is left out and logged
    # as the SDK logs it, every time
    assert json.loads(found.stdout) == {"installed": True, "again": True, "same": True, "failures": True}
