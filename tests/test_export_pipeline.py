"""The companion's export pipeline, in a process of its own, against the real OTLP receiver."""

from __future__ import annotations

import json
import subprocess
import sys

from lambdawrap.devtools.otlp_receiver import OtlpReceiver

PIPELINE_PROBE = """
import json, os, sys, threading
os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sys.argv[1]
os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "orders"
from lambdawrap.companion.exporting import Pipeline, make_exporters
from lambdawrap.companion.resource import build_resource
from lambdawrap.shared.settings import Settings
settings = Settings.from_env()
pipeline = Pipeline(make_exporters(settings), build_resource(settings, "012345678912"), lambda *args: None)
pipeline.meter_provider.get_meter("probe").create_counter("probe.count").add(3)
flushed = pipeline.flush(wait_s=60)
print(json.dumps({"threads": sorted(t.name for t in threading.enumerate()), "flushed": flushed}))
"""


def test_metrics_go_with_each_flush_and_no_thread_waits_to_collect_them():
    # GIVEN the pipeline, a metric recorded and a flush asked for
    with OtlpReceiver() as rx:
        out = subprocess.run([sys.executable, "-c", PIPELINE_PROBE, rx.endpoint], capture_output=True, text=True, timeout=120, check=True)
        found = json.loads(out.stdout.strip().splitlines()[-1])
        # THEN the flush exported it, and the pipeline runs its export worker alone: no SDK
        # ticker thread, which the freezer would stop and restart with every invocation
        assert found == {"threads": ["MainThread", "lambdawrap-export"], "flushed": True}
        assert [p["value"] for p in rx.metrics() if p["name"] == "probe.count"] == [3]


def test_each_log_record_carries_its_own_invocations_ids_in_a_mixed_batch():
    from opentelemetry.sdk.resources import Resource

    from lambdawrap.companion.log_records import log_records

    first, second = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"), ["4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"]
    # The second invocation's ids as an earlier environment carried them over (JSON: a list).
    entries = [("a", 1, first, "r1"), ("b", 2, second, "r2"), ("c", 3, first, "r1"), ("d", 4, None, None), ("e", 5, ("", ""), "r3")]
    found = [(r.log_record.body, r.log_record.trace_id, r.log_record.span_id, dict(r.log_record.attributes or {})) for r in log_records(entries, Resource({}))]
    assert found == [
        ("a", int(first[0], 16), int(first[1], 16), {"faas.invocation_id": "r1"}),
        ("b", int(second[0], 16), int(second[1], 16), {"faas.invocation_id": "r2"}),
        ("c", int(first[0], 16), int(first[1], 16), {"faas.invocation_id": "r1"}),
        ("d", 0, 0, {}),
        ("e", 0, 0, {"faas.invocation_id": "r3"}),
    ]


FLOOD_PROBE = """
import json, os, sys
os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sys.argv[1]
os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "orders"
from lambdawrap.companion.exporting import Pipeline, make_exporters
from lambdawrap.companion.log_buffer import LogBuffer
from lambdawrap.companion.resource import build_resource
from lambdawrap.shared.settings import Settings
settings = Settings.from_env()
drops = []
pipeline = Pipeline(make_exporters(settings), build_resource(settings, "012345678912"), lambda reason, count=1: drops.append((reason, count)))
pipeline.logs = LogBuffer(lambda reason, count: drops.append((reason, count)))
for i in range(1500):
    pipeline.logs.add(f"before {i}", i, None, "r1")
export = pipeline.log_exporter.export
def export_while_the_function_prints(batch, *args, **kwargs):
    for i in range(600):  # the function goes on printing while each batch is on its way
        pipeline.logs.add(f"during {i}", i, None, "r1")
    return export(batch, *args, **kwargs)
pipeline.log_exporter.export = export_while_the_function_prints
first = pipeline.flush(wait_s=60)
waiting = len(pipeline.logs)
pipeline.log_exporter.export = export
second = pipeline.flush(wait_s=60)
pipeline.logs.report_drops()
print(json.dumps({"flushed": [first, second], "waiting_after_first": waiting, "left": len(pipeline.logs), "drops": drops}))
"""


def test_a_flush_exports_the_lines_buffered_when_it_began_not_those_printed_meanwhile():
    # GIVEN 1,500 buffered lines, and a function that prints 600 more while each batch is sent
    with OtlpReceiver() as rx:
        out = subprocess.run([sys.executable, "-c", FLOOD_PROBE, rx.endpoint], capture_output=True, text=True, timeout=120, check=True)
        found = json.loads(out.stdout.strip().splitlines()[-1])
        bodies = [item["body"] for item in rx.logs()]
    # THEN the first flush sent the 1,500 lines it found (3 batches, 1,800 lines printed
    # meanwhile), not what kept coming, which waited for the next flush: a flush's cost is
    # bounded by the buffer, whatever the function prints while it runs
    assert found["flushed"] == [True, True] and found["waiting_after_first"] == 1800
    assert bodies[:1500] == [f"before {i}" for i in range(1500)]
    assert len(bodies) == 3300 and found["left"] == 0 and found["drops"] == []
