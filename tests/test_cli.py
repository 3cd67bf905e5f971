"""The `lambdawrap` command, as a newcomer runs it (README), through real processes."""

from __future__ import annotations

import json
import queue
import threading
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lambdawrap.devtools.local.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def lambdawrap(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lambdawrap.devtools.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def code_blocks() -> list:
    blocks, current = [], None
    for line in README.splitlines():
        if line.startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def readme_commands() -> list:
    """Every `lambdawrap ...` line in the README's code blocks."""
    lines = [line.split("  #")[0].strip() for block in code_blocks() for line in block.splitlines()]
    return [line for line in lines if line.startswith("lambdawrap ")]


def test_readme_starts_with_the_two_commands():
    blocks = code_blocks()
    assert "lambdawrap local invoke --example hello" in blocks[0]
    assert "-m pytest" in blocks[1]
    assert (ROOT / ".ci" / "run").read_text().count("-m pytest") >= 1


def test_main_job_shows_waterfall_metrics_logs_and_timings():
    out = lambdawrap("local", "invoke", "--example", "hello", "-n", "3")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.count("invocation ") >= 3 and "cold start" in text
    assert "GET /pets/{petId}" in text and "orders.lookup" in text and "init" in text
    assert "faas.invocations             3" in text
    assert "looking up order 42" in text and "trace=" in text
    assert "caller waited" in text and "export after the response" in text
    assert "lambdawrap's messages" not in text  # a clean run has nothing to say
    assert "Traceback" not in out.stderr


def test_a_bad_setting_is_shown_once_without_verbose():
    # The companion's warning is in the extension's output, which only -v prints as it comes.
    out = lambdawrap("local", "invoke", "--example", "hello", "-n", "1", "--env", "LAMBDAWRAP_MAX_SPANS_PER_INVOCATION=abc")
    assert out.returncode == 0, out.stderr
    assert "lambdawrap's messages (-v prints all output, tracebacks included):" in out.stdout
    assert out.stdout.count("[extension] lambdawrap: ignoring LAMBDAWRAP_MAX_SPANS_PER_INVOCATION='abc' (expected a whole number); using the default 1000\n") == 1


def test_own_messages_are_listed_once_each_and_capped():
    from lambdawrap.devtools.local.render import MAX_OWN_MESSAGES, own_messages

    # Every environment's companion warns again (after a timeout's reset, say): one line, counted.
    repeated = [("extension", "lambdawrap: ignoring X='y'")] * 3 + [("function", "lambdawrap: boot failed"), ("platform", "lambdawrap: not ours"), ("function", "lambdawrapper: not ours")]
    assert own_messages(repeated) == [
        "lambdawrap's messages (-v prints all output, tracebacks included):",
        "    [extension] lambdawrap: ignoring X='y' (x3)",
        "    [function] lambdawrap: boot failed",
    ]
    many = own_messages([("extension", f"lambdawrap: problem {i}") for i in range(MAX_OWN_MESSAGES + 5)])
    assert len(many) == MAX_OWN_MESSAGES + 2 and many[-1] == "    ... and 5 more"
    assert own_messages([("function", "START"), ("extension", "other")]) == []


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_parses(command):
    from lambdawrap.devtools.cli import build_parser

    argv = command.split()[1:]
    if argv[0] == "build-layer":
        from lambdawrap.devtools.layer_build import _parser

        _parser().parse_args(argv[1:])  # building itself is tested in test_layer_build.py
        return
    build_parser().parse_args(argv)


def test_secrets_example_runs_with_moto_and_never_prints_the_value():
    out = lambdawrap("local", "invoke", "--example", "secrets", "-n", "2", "-v")
    assert out.returncode == 0, out.stderr
    assert "database password loaded: True current: True" in out.stdout + out.stderr
    assert "example-only-password" not in out.stdout + out.stderr


def test_any_function_event_file_env_and_no_layer(tmp_path):
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "main.py").write_text("import os\ndef go(event, context):\n    print('mode', os.environ['MODE'], event['n'])\n    return event['n'] * 2\n")
    event = tmp_path / "event.json"
    event.write_text('{"n": 21}')
    out = lambdawrap("local", "invoke", "--function", str(tmp_path / "fn"), "--handler", "main.go", "--event", str(event), "-n", "2", "--env", "MODE=test", "--timeout", "5", "--memory", "256")
    assert out.returncode == 0, out.stderr
    assert "mode test 21" in out.stdout and "status 200" in out.stdout
    bare = lambdawrap("local", "invoke", "--function", str(tmp_path / "fn"), "--handler", "main.go", "--event", str(event), "-n", "1", "--env", "MODE=x", "--no-layer")
    assert bare.returncode == 0 and "no layer" in bare.stdout


def test_export_to_an_external_collector():
    from lambdawrap.devtools.otlp_receiver import OtlpReceiver

    with OtlpReceiver() as rx:
        out = lambdawrap("local", "invoke", "--example", "hello", "-n", "1", "--otlp-endpoint", rx.endpoint)
        assert out.returncode == 0, out.stderr
        assert f"exported to {rx.endpoint}" in out.stdout
        rx.wait_for_spans(lambda s: s["name"] == "GET /pets/{petId}")


@pytest.mark.parametrize(
    "args, message",
    [
        (["local", "invoke", "--example", "nope"], "unknown example 'nope'; choose from: hello, secrets"),
        (["local", "invoke", "--example", "hello", "--event", "/no/such/file.json"], "is neither a file nor a sample event"),
        (["local", "invoke", "--example", "hello", "--layer", "/no/such/layer"], "no layer at /no/such/layer: build one with `lambdawrap build-layer"),
        (["local", "invoke"], "give --example NAME, or --function DIR and --handler"),
    ],
)
def test_bad_input_is_one_clear_line(args, message):
    out = lambdawrap(*args)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and message in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_event_json_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    out = lambdawrap("local", "invoke", "--example", "hello", "--event", str(bad))
    assert out.returncode == 2 and "is not valid JSON" in out.stderr and "Traceback" not in out.stderr


def test_serve_answers_curl_and_stops_cleanly():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lambdawrap.devtools.cli", "local", "serve", "--example", "hello", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        first = proc.stdout.readline()
        assert first.strip() == f"invoke endpoint: http://127.0.0.1:{port}/2015-03-31/functions/function/invocations"
        request = urllib.request.Request(first.split(": ", 1)[1].strip(), data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["statusCode"] == 200
        # THEN what the companion exported is printed as it arrives (the invocation's span)
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
        reader.start()
        deadline = time.monotonic() + 60
        seen = []
        while not any(line.startswith("[exported span] ") for line in seen):
            try:
                seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"no exported span printed within 60 s: {seen[-20:]}")
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        reader.join(15)
        out = "".join(seen + list(lines.queue))
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stopped" in out and "Traceback" not in err
    pids = subprocess.run(["pgrep", "-f", "lambdawrap.companion"], capture_output=True, text=True).stdout.split()
    assert not [p for p in pids if Path(f"/proc/{p}/environ").exists() and f"{port}".encode() in Path(f"/proc/{p}/cmdline").read_bytes()]


def test_serve_on_a_busy_port_is_one_clear_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        out = lambdawrap("local", "serve", "--example", "hello", "--port", str(busy.getsockname()[1]), timeout=60)
    assert out.returncode == 2 and "cannot start the emulator" in out.stderr and "Traceback" not in out.stderr
