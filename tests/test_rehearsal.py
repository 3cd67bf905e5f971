"""The companion's export rehearsal: during the pipeline's build it pays the first export's
one-time costs (the OTLP encoders' first run, the IDNA codec a connection needs) and sends
nothing. That nothing reaches the collector is checked end to end in test_pipeline."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
from opentelemetry.sdk.resources import Resource
from lambdawrap.companion.rehearsal import rehearse_export
before = "encodings.idna" in sys.modules
size = rehearse_export(Resource({"service.name": "orders"}))
print(json.dumps({"idna_before": before, "idna_after": "encodings.idna" in sys.modules, "size": size}))
"""


def test_the_rehearsal_encodes_every_signal_and_loads_the_idna_codec():
    # A fresh interpreter: what the rehearsal loads is not already loaded by the test run.
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["idna_before"] is False and found["idna_after"] is True
    assert found["size"] > 100  # a span, a log record and a metrics batch, encoded


def test_the_rehearsal_leaves_the_real_meters_alone():
    from opentelemetry import metrics
    from opentelemetry.sdk.resources import Resource

    from lambdawrap.companion.rehearsal import rehearse_export

    provider_before = metrics.get_meter_provider()
    rehearse_export(Resource({}))
    assert metrics.get_meter_provider() is provider_before
