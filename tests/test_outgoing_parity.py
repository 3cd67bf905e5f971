"""Parity with OpenTelemetry's own instrumentations: the same calls, run once under lambdawrap and
once under the library's `opentelemetry-instrumentation-*` package (stable HTTP conventions,
OTEL_SEMCONV_STABILITY_OPT_IN=http), against the same real servers (an HTTP server on loopback,
a moto server, a fake Bedrock Runtime: moto has no `Converse`). Span names, kinds, parentage,
status, events and attributes are compared call by call; every difference must be one
docs/outgoing-calls.md lists (with its reason), and every difference listed there must still
occur. The library's own answers must be the same in both.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from lambdawrap.devtools.local.moto_server import MotoServer
from support.fake_bedrock import FakeBedrockRuntime
from support.local_servers import closed_port, recording_server
from support.pip_target import installed

ROOT = Path(__file__).resolve().parent.parent
CALLS = Path(__file__).resolve().parent / "support" / "outgoing_calls.py"
DOC = ROOT / "docs" / "outgoing-calls.md"
LIBRARIES = ["botocore", "requests", "urllib3", "urllib", "httpx", "httpx-async", "aiohttp"]
# Values that differ between any two runs (ids the server makes up): compared by presence only.
VOLATILE = {"aws.request_id", "aws.extended_request_id", "messaging.message.id", "aws.secretsmanager.secret.arn", "server.port", "url.full", "network.peer.port"}


@pytest.fixture(scope="module")
def contrib_path() -> str:
    """The folder holding the instrumentations without a release on the project's train."""
    return installed("contrib-requirements.txt", "lambdawrap-contrib-0.66b1")


@pytest.fixture(scope="module")
def servers():
    with MotoServer() as moto, recording_server() as http, FakeBedrockRuntime() as bedrock:
        yield moto, http, bedrock


def run_calls(mode: str, library: str, servers, contrib_path: str) -> dict:
    moto, http, bedrock = servers
    urllib.request.urlopen(urllib.request.Request(moto.endpoint + "/moto-api/reset", method="POST"), timeout=10).read()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LAMBDAWRAP_"))}
    env["PYTHONPATH"] = os.pathsep.join([contrib_path, str(ROOT / "tests")])
    env["NO_PROXY"] = "127.0.0.1,localhost"
    proc = subprocess.run([sys.executable, str(CALLS), mode, library, http.url, str(closed_port()), moto.endpoint, bedrock.url], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def differences(ours: list, theirs: list) -> set:
    """What differs, call by call, as the doc's table names it: a span field, or `attribute <key>`."""
    found = set()
    for mine, other in zip(ours, theirs):
        for field in ("name", "kind", "parent", "status", "events"):
            if mine[field] != other[field]:
                found.add(field)
        for key in set(mine["attributes"]) | set(other["attributes"]):
            a, b = mine["attributes"].get(key), other["attributes"].get(key)
            same = (a is None) == (b is None) if key in VOLATILE else a == b
            if not same:
                found.add(f"attribute {key}")
    return found


def documented(library: str) -> set:
    """The differences docs/outgoing-calls.md lists for a library (its parity table)."""
    rows = re.findall(r"^\| *`?([\w-]+)`? *\| *([^|]+?) *\|", DOC.read_text(), re.MULTILINE)
    return {what.replace("`", "").strip() for lib, what in rows if lib == library}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("library", LIBRARIES)
def test_spans_match_the_opentelemetry_instrumentation(library, servers, contrib_path):
    ours = run_calls("lambdawrap", library, servers, contrib_path)
    theirs = run_calls("contrib", library, servers, contrib_path)
    bare = run_calls("bare", library, servers, contrib_path)
    # The library answered (or raised) the same in all three runs.
    assert ours["outcomes"] == theirs["outcomes"] == bare["outcomes"]
    # As many spans as theirs (one per call; urllib3's PoolManager follows a redirect with a
    # second request of its own), each a child of the invocation (or root) span.
    extra = 1 if library == "urllib3" else 0
    assert len(ours["spans"]) == len(theirs["spans"]) == len(ours["outcomes"]) + extra, (ours["spans"], theirs["spans"])
    assert {s["parent"] for s in ours["spans"]} == {"invocation"}
    found = differences(ours["spans"], theirs["spans"])
    listed = documented(library)
    assert found == listed, f"not documented: {sorted(found - listed)}; documented but gone: {sorted(listed - found)}\n" + json.dumps([[a, b] for a, b in zip(ours["spans"], theirs["spans"])], indent=1)[:20000]
    if library == "botocore":
        # The S3 attributes the conventions recommend, as the call named them (the copy's
        # source as botocore sends it).
        s3 = {label: span["attributes"] for (label, *_), span in zip(ours["outcomes"], ours["spans"]) if label.startswith("s3 ")}
        assert (s3["s3 put"]["aws.s3.bucket"], s3["s3 put"]["aws.s3.key"]) == ("files", "a.txt")
        assert s3["s3 copy"]["aws.s3.copy_source"] == "files/a.txt" and s3["s3 copy"]["aws.s3.key"] == "b.txt"
        assert s3["s3 part"]["aws.s3.part_number"] == 2 and s3["s3 part"]["aws.s3.upload_id"]
        assert "aws.s3.key" not in s3["s3 bucket"]
