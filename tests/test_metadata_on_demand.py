"""The companion's stand-in for OpenTelemetry's importlib.metadata wrapper (metadata_on_demand):
the OTLP exporter loads without importlib.metadata, and what it looks up through the wrapper
when asked (a credential provider) comes out exactly as without the stand-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import json, sys
from lambdawrap.companion import metadata_on_demand
if sys.argv[1] == "stand-in":
    metadata_on_demand.install()
from opentelemetry.exporter.otlp.proto.http import _common
loaded_at_import = "importlib.metadata" in sys.modules
try:
    session = _common._load_session_from_envvar("OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER")
    found = type(session).__name__ + ":" + str(getattr(session, "marker", None))
except Exception as exc:
    found = type(exc).__name__ + ": " + str(exc)
from opentelemetry.util._importlib_metadata import EntryPoints, version
print(json.dumps({"loaded_at_import": loaded_at_import, "found": found, "sdk": version("opentelemetry-sdk"), "entry_points": EntryPoints.__module__}))
"""

PROVIDER = """
import requests


def make_session():
    session = requests.Session()
    session.marker = "from the entry point"
    return session
"""


@pytest.fixture(scope="module")
def provider_path(tmp_path_factory) -> Path:
    """A distribution on the path with a credential provider entry point, as a user installs one."""
    root = tmp_path_factory.mktemp("provider")
    (root / "test_credential_provider.py").write_text(PROVIDER)
    info = root / "test_credential_provider-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: test-credential-provider\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[opentelemetry_otlp_credential_provider]\ntest-session = test_credential_provider:make_session\n")
    return root


def probe(mode: str, provider_path: Path, provider: str | None) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(provider_path), os.environ.get("PYTHONPATH", "")]))
    env.pop("OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER", None)
    if provider is not None:
        env["OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER"] = provider
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("provider", [None, "test-session", "no-such-provider"])
def test_the_exporter_loads_without_importlib_metadata_and_finds_what_it_is_asked_for(provider_path, provider):
    real = probe("real", provider_path, provider)
    stand_in = probe("stand-in", provider_path, provider)
    assert real["loaded_at_import"] is True and stand_in["loaded_at_import"] is False
    real.pop("loaded_at_import"), stand_in.pop("loaded_at_import")
    assert stand_in == real
    expected = {None: "NoneType:None", "test-session": "Session:from the entry point"}.get(provider, "RuntimeError: Requested component 'no-such-provider' not found in entry point 'opentelemetry_otlp_credential_provider'")
    assert real["found"] == expected


def test_the_stand_in_steps_aside_for_a_module_already_loaded():
    code = """
import sys
import opentelemetry.util._importlib_metadata as real
from lambdawrap.companion import metadata_on_demand
metadata_on_demand.install()
print(sys.modules[metadata_on_demand.NAME] is real)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "True"


def test_the_stand_in_answers_the_import_system_and_loads_the_real_module_on_use():
    code = """
import importlib.util, json, sys
from lambdawrap.companion import metadata_on_demand
metadata_on_demand.install()
import opentelemetry.util._importlib_metadata as found
spec = importlib.util.find_spec(metadata_on_demand.NAME)
quiet = "importlib.metadata" not in sys.modules and spec is not None
version = found.version("opentelemetry-sdk")
names = {}
exec("from opentelemetry.util._importlib_metadata import *", names)
real = sys.modules[metadata_on_demand.NAME]
print(json.dumps({"quiet": quiet, "version": version, "names": sorted(k for k in names if not k.startswith("__")), "all": sorted(real.__all__), "dir": set(real.__all__) <= set(dir(found))}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    from importlib.metadata import version

    assert found["quiet"] is True and found["version"] == version("opentelemetry-sdk")
    assert found["names"] == found["all"] and found["dir"] is True
