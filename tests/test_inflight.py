"""The in-flight slot: what a process has under way, readable after the process is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from lambdawrap.shared import inflight

SRC = str(Path(__file__).resolve().parent.parent / "src")


def start(rid: str) -> bytes:
    return json.dumps({"request_id": rid, "trace_id": "1" * 32, "span_id": "2" * 16}).encode()


def test_hold_read_clear(tmp_path):
    socket_path = str(tmp_path / "lw.sock")
    slot = inflight.InflightSlot(socket_path)
    # GIVEN nothing under way THEN nothing is found
    assert inflight.read(socket_path, "a") is None
    # WHEN an invocation starts THEN its start record is found by its request id, only
    assert slot.hold(start("a"))
    assert inflight.read(socket_path, "a")["request_id"] == "a"
    assert inflight.read(socket_path, "b") is None
    # WHEN the next one starts (a shorter record over a longer one) THEN that one is found
    assert slot.hold(start("b"))
    assert inflight.read(socket_path, "b")["request_id"] == "b" and inflight.read(socket_path, "a") is None
    # WHEN it ends THEN the slot is empty, and the file is private
    slot.clear()
    assert inflight.read(socket_path, "b") is None
    (path,) = tmp_path.glob("lw.sock.inflight.*")
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_record_too_big_for_the_slot_is_refused(tmp_path):
    slot = inflight.InflightSlot(str(tmp_path / "lw.sock"))
    assert not slot.hold(b"x" * inflight.SIZE)


def test_the_slot_of_a_killed_process_is_read_and_removed(tmp_path):
    # GIVEN a process SIGKILLed in the middle of an invocation
    socket_path = str(tmp_path / "lw.sock")
    code = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {SRC!r})
        from lambdawrap.shared.inflight import InflightSlot
        slot = InflightSlot({socket_path!r})
        slot.hold({start("killed")!r})
        print("held", flush=True)
        time.sleep(60)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "held"
        # WHILE it lives THEN its slot is readable and kept
        assert inflight.read(socket_path, "killed")["request_id"] == "killed"
        assert list(tmp_path.glob("lw.sock.inflight.*"))
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        # WHEN it is gone THEN what it held is still there, read once, and the file removed
        assert inflight.read(socket_path, "killed")["request_id"] == "killed"
        assert not list(tmp_path.glob("lw.sock.inflight.*"))
    finally:
        if process.poll() is None:
            process.kill()


def test_a_forked_child_writes_a_slot_of_its_own(tmp_path):
    socket_path = str(tmp_path / "lw.sock")
    slot = inflight.InflightSlot(socket_path)
    slot.hold(start("parent"))
    pid = os.fork()
    if pid == 0:
        try:
            slot.hold(start("child"))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    # The parent's slot still holds the parent's invocation; the child's is its own.
    assert inflight.read(socket_path, "parent")["request_id"] == "parent"
    assert inflight.read(socket_path, "child")["request_id"] == "child"


def test_the_cached_process_id_follows_a_fork():
    # own_pid() answers without a system call; a forked child must still get its own id.
    from lambdawrap.shared.process_id import own_pid

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write_end, f"{own_pid()} {os.getpid()}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    cached, real = os.read(read_end, 100).decode().split()
    os.close(read_end)
    assert int(cached) == int(real) == pid
    assert own_pid() == os.getpid() != pid
