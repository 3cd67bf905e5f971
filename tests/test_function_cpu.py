"""What the companion knows of how the function's last invocation ran (companion/function_cpu.py):
the CPU the function's process used, read from outside it through its CPU clock, and whose
process that is: the sender of the channel's last bytes (SO_PEERCRED), which a forked child of
the function can be; a run whose end comes from another process than its start is not judged."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import wait_for
from lambdawrap.companion.channel_server import SocketServer
from lambdawrap.companion.function_cpu import RunMeter, process_cpu_s
from lambdawrap.handler.channel import Channel

SRC = str(Path(__file__).resolve().parent.parent / "src")
COMPUTES_THEN_WAITS = "import time, sys\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\nprint('computed', flush=True)\nsys.stdin.read()\n"


def test_another_process_cpu_time_is_read_and_a_gone_one_is_none():
    child = subprocess.Popen([sys.executable, "-c", COMPUTES_THEN_WAITS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "computed"
        assert process_cpu_s(child.pid) >= 0.3
    finally:
        child.communicate("")
    assert process_cpu_s(child.pid) is None  # reaped: no such process
    assert process_cpu_s(None) is None


@pytest.mark.parametrize("memory_mb", [128, 1769])
def test_a_run_that_waits_leaves_its_share_and_one_that_computes_none(memory_mb):
    share = memory_mb / 1769
    meter = RunMeter(memory_mb)
    # A run that waits: a process of its own (this one's other threads, an earlier test's
    # servers, take CPU meanwhile, and the fresh-clone run on bfd9142 judged it so at 128 MB)
    waiting = subprocess.Popen([sys.executable, "-c", "import sys\nprint('ready', flush=True)\nsys.stdin.read()\n"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert waiting.stdout.readline().strip() == "ready"
        meter.started(waiting.pid)
        time.sleep(0.2)
        meter.ended(waiting.pid)
    finally:
        waiting.communicate("")
    assert meter.run_s >= 0.2
    assert 0.5 * share * meter.run_s < meter.spare_cpu_s <= share * meter.run_s
    # A run that computes throughout: on a busy machine this process may get a third of a core,
    # and the run be judged to have left some; the best of a few tries is judged.
    ratios = []
    for _ in range(5):
        meter.started(os.getpid())
        ends = time.process_time() + 0.2
        while time.process_time() < ends:
            pass
        meter.ended(os.getpid())
        ratios.append(meter.spare_cpu_s / (share * meter.run_s))
        if ratios[-1] < 0.25:
            break
    assert min(ratios) < 0.25, ratios


def test_a_run_ended_by_another_process_is_not_judged():
    meter = RunMeter(memory_mb=1769)
    meter.started(os.getpid())
    time.sleep(0.05)
    meter.ended(os.getppid())
    assert meter.spare_cpu_s == 0


SENDS_THEN_FORKS = """
import os, sys, time
from lambdawrap.handler.channel import Channel

channel = Channel(sys.argv[1])
channel.send({"type": "log", "n": 1})
print(os.getpid(), flush=True)
sys.stdin.readline()
# A forked child of the function reports on a connection of its own...
child = os.fork()
if child == 0:
    try:
        channel.send({"type": "log", "n": 2})
        time.sleep(0.5)
    finally:
        os._exit(0)
print(child, flush=True)
sys.stdin.readline()
# ...and the function's next record, on its own connection, makes it the peer again.
channel.send({"type": "log", "n": 3})
os.waitpid(child, 0)
sys.stdin.readline()
"""


def test_the_peer_is_the_process_whose_bytes_came_last(tmp_path):
    server = SocketServer(str(tmp_path / "lw.sock"), lambda record: None, lambda *args: None)
    server.start()
    # The function's process is one of its own: a fork of the test runner's (its threads and
    # their locks) may hang.
    function = subprocess.Popen([sys.executable, "-c", SENDS_THEN_FORKS, str(tmp_path / "lw.sock")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SRC})
    try:
        parent = int(function.stdout.readline())
        wait_for(lambda: server.peer_pid == parent, timeout=30, what="the function's record")
        function.stdin.write("fork\n")
        function.stdin.flush()
        child = int(function.stdout.readline())
        wait_for(lambda: server.peer_pid == child, timeout=30, what="the child's record")
        function.stdin.write("again\n")
        function.stdin.flush()
        wait_for(lambda: server.peer_pid == parent, timeout=30, what="the function's record")
        function.stdin.write("done\n")
        function.stdin.flush()
        function.wait(30)
    finally:
        if function.poll() is None:
            function.kill()
        server.stop()
