"""A function whose folder holds files named like standard modules imports with the layer what
it imports without it: lambdawrap, whose code in the function's process needs some of those
modules after the boot (the function's folder first on sys.path by then) or at boot (before
it is), never runs the function's file and never leaves the standard module in sys.modules for
the function's own import to find. Each case is one of the red team's findings."""

from __future__ import annotations

import base64
import json

import pytest

from conftest import write_function
from support.python_versions import every_python
from support.stack import EVENTS, instrumented
from lambdawrap.devtools.emulator import Emulator

# What the function's process holds under each name after the invocation: the function's own
# file, the standard module, or nothing.
REPORTS = """
import os, sys

def handler(event, context):
    if os.environ.get("PICKLE_A_METHOD"):
        import http.client, pickle, urllib.request
        for method in (urllib.request.OpenerDirector.open, http.client.HTTPConnection.request):
            pickle.loads(pickle.dumps(method))
    names = os.environ["SHADOWS"].split(",")
    return {name: "own" if hasattr(sys.modules.get(name), "OWN") else "standard" if name in sys.modules else "absent" for name in names}
"""


def _api_gateway_base64_body() -> dict:
    event = json.loads((EVENTS / "apigw-rest.json").read_text())
    return {**event, "isBase64Encoded": True, "body": base64.b64encode(b'{"order": 7}').decode()}


CASES = {
    # redact._body's base64_text: `import base64` (and its `import struct`) after the boot
    "a base64 body, payload captured": ({"LAMBDAWRAP_CAPTURE_PAYLOAD": "true"}, ("base64", "binascii"), lambda: [_api_gateway_base64_body(), json.loads((EVENTS / "kinesis.json").read_text())]),
    "a base64 body, payload captured, a struct.py": ({"LAMBDAWRAP_CAPTURE_PAYLOAD": "true"}, ("struct",), lambda: [json.loads((EVENTS / "kinesis.json").read_text())]),
    # settings' `from difflib import get_close_matches` at boot, for a misspelt setting
    "an unknown LAMBDAWRAP_ variable": ({"LAMBDAWRAP_FLUSHH": "1"}, ("difflib",), lambda: [{}]),
    # the channel's _socket and the ids' _random, extension modules imported at boot
    "the boot's extension modules": ({}, ("_socket", "_random"), lambda: [{}]),
    # the HTTP hooks' recorder: `from _contextvars import ContextVar`; a wrapped method pickled
    # by pkgutil.resolve_name, whose import imported typing
    "an HTTP library's hook, a wrapped method pickled": ({"PICKLE_A_METHOD": "1"}, ("_contextvars", "pkgutil", "typing"), lambda: [{}]),
    # the first standard() load (an escaped S3 key; escaped settings at boot): importlib.util,
    # which on 3.10 imports contextlib
    "an escaped S3 key and escaped settings": ({"OTEL_RESOURCE_ATTRIBUTES": "team=caf%C3%A9"}, ("contextlib",), lambda: [json.loads((EVENTS / "s3.json").read_text())]),
}


@every_python
@pytest.mark.parametrize("case", list(CASES))
def test_the_function_imports_its_own_files_as_without_the_layer(tmp_path, runtime_python, case):
    env, shadows, events = CASES[case]
    # GIVEN a function whose folder holds files named like the standard modules lambdawrap needs
    # in this case, each saying when it runs
    task = write_function(tmp_path / "task", REPORTS)
    for name in shadows:
        (task / f"{name}.py").write_text(f"print('the function s {name}.py ran')\nOWN = {name!r}\n")
    env = {**env, "SHADOWS": ",".join(shadows)}
    # WHEN it is invoked without the layer and with it
    with Emulator(str(task), "app.handler", env=env, invoke_port=None, python=runtime_python) as bare:
        without = [bare.invoke(event).json() for event in events()]
        ran_without = [line for line in bare.log_lines("function") if ".py ran" in line]
    with instrumented(task, env=env, python=runtime_python) as (emu, rx):
        with_layer = [emu.invoke(event).json() for event in events()]
        assert emu.wait_idle(30)
        ran = [line for line in emu.log_lines("function") if ".py ran" in line]
        problems = [line for line in emu.log_lines("function") if "lambdawrap" in line and ("Traceback" in line or "failed" in line or "recognising" in line)]
    # THEN its process holds under each name what it holds without the layer, and its files run
    # as often (before: each was the standard module with the layer, or the function's file ran
    # as lambdawrap imported it, and the function's import then got what lambdawrap had left)
    assert all(isinstance(seen, dict) and sorted(seen) == sorted(shadows) and all(value in ("absent", "standard") for value in seen.values()) for seen in without), without
    assert with_layer == without, (with_layer, without)
    assert ran == ran_without, (ran, ran_without)
    assert problems == [], problems
