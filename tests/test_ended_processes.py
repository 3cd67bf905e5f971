"""What a function's process that ended before its companion listened leaves beside the socket
(`shared.unreported_drops`), and what the companion makes of it (`companion.ended_processes`):
the spans it held are delivered once, with the init span's ids only where the process was this
environment's; what cannot be read is counted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from lambdawrap.companion import ended_processes
from lambdawrap.shared import records, unreported_drops
from lambdawrap.shared.framing import encode

INIT_IDS = ["4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"]

# A function's process whose module makes a call as it loads, before the companion listens,
# and is then killed (an init that timed out, or ran out of memory): nothing of it runs after.
HOLDS_THEN_KILLED = """
import os, signal, sys
from lambdawrap.handler.channel import Channel
from lambdawrap.shared import records

channel = Channel(sys.argv[1])
assert channel.send(records.spans([{"name": "GET", "n": 1}], {init}))
assert channel.send(records.spans([{"name": "GET", "n": 2}], {init}))
os.kill(os.getpid(), signal.SIGKILL)
""".replace("{init}", repr(INIT_IDS))


@pytest.fixture
def socket_path():
    folder = tempfile.mkdtemp(prefix="lw")  # short: a socket's path is capped at 108 bytes
    yield os.path.join(folder, "s")
    shutil.rmtree(folder, ignore_errors=True)


def take(socket_path: str, environment_start: int | None) -> tuple:
    delivered, dropped = [], []
    ended_processes.take(socket_path, environment_start, delivered.append, lambda reason, count: dropped.append((reason, count)))
    return delivered, dropped


def killed_after_holding(socket_path: str) -> None:
    ended = subprocess.run([sys.executable, "-c", HOLDS_THEN_KILLED, socket_path], capture_output=True, text=True, timeout=60)
    assert ended.returncode == -9, ended.stderr


def test_spans_a_killed_process_held_for_its_companion_are_delivered_once(socket_path):
    # GIVEN a process of this environment that held two spans for a companion not yet
    # listening, and was killed
    killed_after_holding(socket_path)
    # WHEN the companion, started before it, takes what it left
    delivered, dropped = take(socket_path, environment_start=0)
    # THEN both spans come, with the init span's ids, none counted as dropped (before: counted
    # as dropped beside the socket, not exported), and once only
    assert [record["spans"] for record in delivered] == [[{"name": "GET", "n": 1}], [{"name": "GET", "n": 2}]]
    assert [records.init_span_ids(record) for record in delivered] == [tuple(INIT_IDS)] * 2
    assert dropped == [] and take(socket_path, environment_start=0) == ([], []) and os.listdir(os.path.dirname(socket_path)) == []


def test_spans_an_earlier_environment_s_process_held_come_without_its_init_span_ids(socket_path):
    # GIVEN what a process left, read by the companion of a later environment (the earlier
    # one's companion died before it took it)
    killed_after_holding(socket_path)
    (left,) = [unreported_drops.parse(open(os.path.join(os.path.dirname(socket_path), name), "rb").read()) for name in os.listdir(os.path.dirname(socket_path))]
    assert left.started is not None  # the process's start, read from /proc
    # WHEN taken by a companion started after that process
    delivered, dropped = take(socket_path, environment_start=left.started + 1)
    # THEN its spans still come, but do not make this environment's init their root
    assert [record["spans"][0]["n"] for record in delivered] == [1, 2] and dropped == []
    assert [records.init_span_ids(record) for record in delivered] == [None, None]


def test_what_cannot_be_read_is_counted(socket_path):
    # GIVEN files of ended processes: one whose frames stop short, one that is not a count
    pid = ended_pid()
    frames = encode(records.spans([{"name": "GET"}]))
    with open(unreported_drops.path_for(socket_path, pid), "wb") as f:
        f.write(b"2 -\n" + frames[:-3])
    with open(unreported_drops.path_for(socket_path, pid + 1000000), "wb") as f:
        f.write(b"several")
    # WHEN taken THEN nothing is delivered, and the two drops it counted, and one for each file,
    # are counted
    assert take(socket_path, environment_start=None) == ([], [("handler_channel", 4)])


def test_a_process_killed_as_it_wrote_leaves_the_file_it_wrote_before(socket_path):
    # GIVEN a process that kept one span whole, and was killed as it wrote the next
    pid = ended_pid()
    kept = records.spans([{"name": "first"}])
    assert unreported_drops.keep(socket_path, pid, 0, encode(kept), None)
    with open(unreported_drops.path_for(socket_path, pid) + unreported_drops.WRITING, "wb") as f:
        f.write(b"0 -\n\x00\x00")
    # WHEN taken THEN the whole file's span comes, and both files are gone
    assert take(socket_path, environment_start=None) == ([kept], [])
    assert os.listdir(os.path.dirname(socket_path)) == []


def ended_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout)
