"""The in-flight slot: what a process has under way, readable after the process is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest

from conftest import wait_for, write_function
from support.python_versions import every_python
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


def with_a_slot(interpreter, tmp_path: Path, body: str) -> tuple:
    """(what `body` printed last, as JSON; the end of its stderr), run by `interpreter` after a
    slot beside tmp_path/lw.sock (`slot`) held an invocation, with `empty_tmp()` at hand: what
    a function that empties /tmp does."""
    code = textwrap.dedent(f"""
        import json, os, sys
        sys.path.insert(0, {SRC!r})
        from lambdawrap.shared import inflight
        slot = inflight.InflightSlot({str(tmp_path / "lw.sock")!r})
        assert slot.hold(b'{{"request_id": "a"}}', now_ns=1)

        def empty_tmp():
            for path in os.listdir({str(tmp_path)!r}):
                if ".inflight." in path:
                    os.unlink({str(tmp_path)!r} + "/" + path)
    """) + textwrap.dedent(body)
    out = subprocess.run([interpreter.path, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip(), out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr[-2000:]


@every_python
def test_a_slot_made_again_leaves_the_function_s_files_open(tmp_path, interpreter):
    # GIVEN a slot in use, then a function that closes every descriptor by number (as
    # daemonising code does), opens files of its own, and empties /tmp
    found, stderr = with_a_slot(interpreter, tmp_path, f"""
        os.closerange(3, 1024)
        files = [open({str(tmp_path)!r} + f"/own-{{n}}", "w") for n in range(4)]
        empty_tmp()
        # WHEN the next invocation makes the slot again
        made = slot.hold(b'{{"request_id": "b"}}', now_ns=1 + inflight.CHECK_INTERVAL_NS)
        broken = []
        for n, own in enumerate(files):
            try:
                own.write("kept")
                own.flush()
            except OSError as exc:
                broken.append((n, exc.errno))
        print(json.dumps({{"made": made, "broken": broken}}))
    """)
    # THEN every file of the function's is still open, and the slot is made (before: closing the
    # old map closed the descriptor number it had kept, now one of the function's files)
    assert found == {"made": True, "broken": []}, (found, stderr)
    assert inflight.read(str(tmp_path / "lw.sock"), "b") is not None


@every_python
def test_a_slot_made_again_and_again_holds_one_descriptor(tmp_path, interpreter):
    # GIVEN a function that empties /tmp at every invocation, each second
    found, stderr = with_a_slot(interpreter, tmp_path, """
        before = len(os.listdir("/proc/self/fd"))
        for n in range(1, 200):
            empty_tmp()
            assert slot.hold(b'{"request_id": "a"}', now_ns=1 + n * inflight.CHECK_INTERVAL_NS)
        print(json.dumps({"before": before, "after": len(os.listdir("/proc/self/fd"))}))
    """)
    # WHEN the slot is made again 199 times THEN the process holds as many descriptors as
    # before (before: one more each time, until the function's own open() failed with EMFILE)
    assert found["after"] == found["before"], (found, stderr)


def test_a_record_too_big_for_the_slot_is_refused_and_leaves_no_earlier_one_held(tmp_path):
    socket_path = str(tmp_path / "lw.sock")
    slot = inflight.InflightSlot(socket_path)
    assert slot.hold(json.dumps({"request_id": "r", "span_id": "1" * 16}).encode())
    # A retry of the same request whose start is too big: the slot no longer says the first
    # attempt is under way (its ids would be taken for the retry's)
    assert not slot.hold(b"x" * inflight.SIZE)
    assert inflight.read(socket_path, "r") is None


def holding_process(socket_path: str, request_id: str, then: str) -> subprocess.Popen:
    """A process whose slot holds `request_id`'s start, then runs `then` (`slot` is its slot)."""
    code = textwrap.dedent(
        f"""
        import json, sys, threading, time
        sys.path.insert(0, {SRC!r})
        from lambdawrap.shared.inflight import CALLS, InflightSlot
        slot = InflightSlot({socket_path!r})
        slot.hold({start(request_id)!r})
        """
    )
    return subprocess.Popen([sys.executable, "-c", code + textwrap.dedent(then)], stdout=subprocess.PIPE, text=True)


def told_then_killed(process: subprocess.Popen, while_alive: Callable[[], bool], socket_path: str, request_id: str) -> tuple:
    """(the JSON line `process` printed, its slot's `request_id` as read once it was SIGKILLed),
    `while_alive` asserted between the two."""
    try:
        told = json.loads(process.stdout.readline())
        assert while_alive()
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        return told, inflight.read(socket_path, request_id)
    finally:
        if process.poll() is None:
            process.kill()


def test_the_slot_of_a_killed_process_is_read_and_removed(tmp_path):
    # GIVEN a process SIGKILLed in the middle of an invocation
    socket_path = str(tmp_path / "lw.sock")
    process = holding_process(socket_path, "killed", """
        print('"held"', flush=True)
        time.sleep(60)
        """)
    # WHILE it lives THEN its slot is readable and kept
    told, found = told_then_killed(process, lambda: inflight.read(socket_path, "killed")["request_id"] == "killed" and bool(list(tmp_path.glob("lw.sock.inflight.*"))), socket_path, "killed")
    # WHEN it is gone THEN what it held is still there, read once, and the file removed
    assert told == "held" and found["request_id"] == "killed"
    assert not list(tmp_path.glob("lw.sock.inflight.*"))


def test_the_calls_a_killed_process_had_under_way_are_read_with_its_slot(tmp_path):
    # GIVEN a process holding an invocation that started two calls more than there are places,
    # from threads, and ended some of them, then SIGKILLed
    socket_path = str(tmp_path / "lw.sock")
    process = holding_process(socket_path, "killed", """
        tokens = {}
        def begin(i):
            tokens[i] = slot.call_started(i, json.dumps({"name": "call %d" % i}).encode())
        threads = [threading.Thread(target=begin, args=(i,)) for i in range(CALLS + 2)]
        for t in threads: t.start()
        for t in threads: t.join()
        kept = sorted(i for i, token in tokens.items() if token[1] >= 0)
        slot.call_ended(kept[0], tokens[kept[0]])  # a call that ended frees its place ...
        slot.call_ended(kept[1], tokens[kept[1]])
        again = slot.call_started("again", b'{"name": "again"}')  # ... for the next
        slot.call_ended(kept[0], tokens[kept[0]])  # (a copy of an ended call's span ending frees nothing)
        unkept = [i for i, token in tokens.items() if token[1] < 0]
        slot.call_ended(unkept[0], tokens[unkept[0]])  # one no place took ended too
        print(json.dumps({"kept": kept, "again": again[1] >= 0}), flush=True)
        time.sleep(60)
        """)
    # WHILE it lives THEN no call is read (its own end may yet come)
    told, found = told_then_killed(process, lambda: inflight.OPEN_CALLS not in inflight.read(socket_path, "killed"), socket_path, "killed")
    # THEN as many calls as there are places were kept, and those still under way when it was
    # killed are read with its slot, the ended ones not; the one no place took and that had
    # not ended is counted
    assert len(told["kept"]) == inflight.CALLS and told["again"], told
    assert found[inflight.UNKEPT_CALLS] == 1, found
    ended = {f"call {i}" for i in told["kept"][:2]}
    under_way = {f"call {i}" for i in told["kept"][2:]} | {"again"}
    assert sorted(call["name"] for call in found[inflight.OPEN_CALLS]) == sorted(under_way)
    assert not ended & {call["name"] for call in found[inflight.OPEN_CALLS]}


def test_an_invocation_s_start_empties_the_places_an_earlier_one_left(tmp_path):
    # GIVEN a process whose invocation left calls in every place and one counted (requests
    # dropped unanswered: never ended), then the next invocation, which makes a call and has
    # two too big for a place, one of which ends twice (a copy of its span ending too)
    socket_path = str(tmp_path / "lw.sock")
    process = holding_process(socket_path, "first", f"""
        earlier = [slot.call_started(i, json.dumps({{"name": "earlier %d" % i}}).encode()) for i in range(CALLS + 1)]
        slot.hold({start("second")!r})
        call = slot.call_started("new", b'{{"name": "new"}}')
        slot.call_ended(0, earlier[0])  # an earlier invocation's call ending frees nothing of the new
        big = [slot.call_started(name, b"x" * 5000) for name in ("big0", "big1")]
        slot.call_ended("big0", big[0])
        slot.call_ended("big0", big[0])
        print(json.dumps({{"earlier_unkept": earlier[-1][1] < 0, "new": call[1], "big": [token[1] for token in big]}}), flush=True)
        time.sleep(60)
        """)
    told, found = told_then_killed(process, lambda: True, socket_path, "second")
    # THEN the killed process's slot holds the new invocation's call only, and counts the one
    # too big that had not ended, once (before: the earlier calls stayed in their places for
    # the process's life, to be ended with any later invocation, and a second end of a counted
    # call took one off the count)
    assert told == {"earlier_unkept": True, "new": 0, "big": [-1, -1]}, told
    assert [call["name"] for call in found[inflight.OPEN_CALLS]] == ["new"]
    assert found[inflight.UNKEPT_CALLS] == 1


def test_the_slot_of_a_process_its_parent_has_not_reaped_is_removed_once_read(tmp_path):
    # GIVEN a process SIGKILLed in the middle of an invocation, not yet reaped by its parent (a
    # Managed Instances worker: a zombie, which a signal 0 still finds)
    socket_path = str(tmp_path / "lw.sock")
    code = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {SRC!r})
        from lambdawrap.shared.inflight import InflightSlot
        InflightSlot({socket_path!r}).hold({start("zombie")!r})
        print("held", flush=True)
        time.sleep(60)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "held"
        os.kill(process.pid, signal.SIGKILL)
        wait_for(lambda: inflight.ended(process.pid), what="the process to die")
        # WHEN what it held is read
        assert inflight.read(socket_path, "zombie")["request_id"] == "zombie"
        # THEN its file is removed (before: kept for good, 64 KB of /tmp for each crash)
        assert not list(tmp_path.glob("lw.sock.inflight.*"))
    finally:
        process.kill()
        process.wait(10)


FORKS_WITH_A_SLOT = """
import os, sys
from lambdawrap.shared import inflight
from lambdawrap.shared.process_id import own_pid

socket_path = sys.argv[1]
slot = inflight.InflightSlot(socket_path)
slot.hold(sys.argv[2].encode())
read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        slot.hold(sys.argv[3].encode())
        os.write(write_end, f"{own_pid()} {os.getpid()}".encode())
    finally:
        os._exit(0)
os.close(write_end)
os.waitpid(pid, 0)
cached, real = os.read(read_end, 100).decode().split()
print(inflight.read(socket_path, "parent")["request_id"], inflight.read(socket_path, "child")["request_id"], cached, real, pid, own_pid() == os.getpid())
"""


def test_a_forked_child_writes_a_slot_of_its_own_and_knows_its_own_process_id(tmp_path):
    # GIVEN a function's process holding an invocation in its slot, which forks (in a process
    # of its own: a fork of the test runner's, its threads and their locks, may hang) WHEN the
    # child holds one
    done = subprocess.run([sys.executable, "-c", FORKS_WITH_A_SLOT, str(tmp_path / "lw.sock"), start("parent").decode(), start("child").decode()], capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": SRC})
    parent, child, cached, real, pid, parent_knows = done.stdout.split()
    # THEN the parent's slot still holds the parent's invocation, and the child's is its own
    assert (parent, child) == ("parent", "child"), done.stderr
    # ... and own_pid(), which answers without a system call, gave the child its own id
    assert cached == real == pid and parent_knows == "True"


# A /tmp the function filled --------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 256 KiB tmpfs: a /tmp the function can fill (mounting needs root, as CI runs)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a small tmpfs cannot be mounted here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield folder
    finally:
        # Lazily: a runtime process the emulator has not reaped yet may still hold a file.
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, prefix: str = "fill") -> int:
    """Write 4 KiB files into `folder` until it is full, as a download that ran out of space."""
    count = 0
    try:
        while True:
            (folder / f"{prefix}{count}").write_bytes(b"x" * 4096)
            count += 1
    except OSError:
        return count


def empty(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()


def hold_in_a_process(socket_path: str, first: bytes | None, fill_folder: str, second: bytes) -> subprocess.CompletedProcess:
    """In a process of its own (a SIGBUS kills only it): hold `first`, fill the folder, then
    hold `second`; prints what the second hold answered."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {SRC!r})
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        from pathlib import Path
        from lambdawrap.shared.inflight import InflightSlot
        from test_inflight import fill
        slot = InflightSlot({socket_path!r})
        first = {first!r}
        if first is not None:
            assert slot.hold(first)
        fill(Path({fill_folder!r}))
        print(slot.hold({second!r}), flush=True)
        """
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def big_start(rid: str) -> bytes:
    # Longer than the first page of the slot: it reaches blocks a sparse file had not allocated.
    return json.dumps({"request_id": rid, "trace_id": "1" * 32, "span_id": "2" * 16, "attributes": {"user_agent.original": "u" * 9000}}).encode()


OUT_OF_DESCRIPTORS_FOR_A_MOMENT = """
import os, resource, sys
from lambdawrap.shared import inflight

slot = inflight.InflightSlot(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
taken = []
try:
    while True:
        taken.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
now = 10**18
held = [slot.hold(b'{"request_id": "r1"}', now)]
for fd in taken:
    os.close(fd)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
held += [slot.hold(b'{"request_id": "r2"}', now + 10**8), slot.hold(b'{"request_id": "r3"}', now + 2 * 10**9)]
print(held, inflight.read(sys.argv[1], "r3") is not None, flush=True)
"""


def test_a_slot_not_made_for_want_of_a_descriptor_is_made_a_second_later(tmp_path):
    # GIVEN a function's process out of descriptors for a moment (its own files) at an
    # invocation's start WHEN the next invocations start, the descriptors free again
    done = subprocess.run([sys.executable, "-c", OUT_OF_DESCRIPTORS_FOR_A_MOMENT, str(tmp_path / "lw.sock")], capture_output=True, text=True, timeout=60)
    # THEN the slot is not made then, nor tried again at once, and is made a second on (before:
    # never again in that process's life, each timeout and crash after it without its trace)
    assert done.stdout.split() == ["[False,", "False,", "True]", "True"], (done.stdout, done.stderr)


def test_a_full_filesystem_costs_only_the_slot(small_tmpfs):
    # GIVEN /tmp full before the first invocation WHEN the slot is made THEN it is refused
    # (no SIGBUS) and nothing of it is left behind
    socket_path = str(small_tmpfs / "lw.sock")
    done = hold_in_a_process(socket_path, None, str(small_tmpfs), start("a"))
    assert (done.returncode, done.stdout.strip()) == (0, "False"), done.stderr
    assert not list(small_tmpfs.glob("lw.sock.inflight.*"))


def test_a_slot_made_before_the_filesystem_filled_holds_records_of_any_size_it_accepts(small_tmpfs):
    # GIVEN a slot that held a small record, then /tmp filled WHEN a record longer than the
    # pages written so far is held THEN it lands in the space reserved at open, readable
    socket_path = str(small_tmpfs / "lw.sock")
    done = hold_in_a_process(socket_path, start("small"), str(small_tmpfs), big_start("big"))
    assert (done.returncode, done.stdout.strip()) == (0, "True"), done.stderr
    assert inflight.read(socket_path, "big")["attributes"]["user_agent.original"] == "u" * 9000


FILLS_TMP = """
    import json, os

    FOLDER = os.environ["FILL_FOLDER"]


    def fill(prefix):
        # A download that ran out of space: the function copes.
        count = 0
        try:
            while True:
                with open(os.path.join(FOLDER, f"{prefix}{count}"), "wb") as f:
                    f.write(b"x" * 4096)
                count += 1
        except OSError:
            return count


    if os.environ.get("FILL_AT") == "import":
        fill("import")


    def handler(event, context):
        if event.get("fill"):
            fill("invoke")
        return {"ok": 1, "agent": len((event.get("headers") or {}).get("user-agent", ""))}
    """


def long_http_event() -> dict:
    # A start record over 4 KiB: past the slot's first page.
    from support.stack import EVENTS

    event = json.loads((EVENTS / "apigw-http.json").read_text())
    event["headers"]["user-agent"] = "a" * 3000
    event["rawQueryString"] = "q=" + "b" * 3000
    return event


@pytest.mark.parametrize("fill_at", ["import", "invoke"])
def test_a_function_that_fills_tmp_answers_as_without_the_layer(tmp_path, small_tmpfs, fill_at):
    from lambdawrap.devtools.emulator import Emulator
    from support.stack import instrumented

    task = write_function(tmp_path / "task", FILLS_TMP)
    env = {"FILL_FOLDER": str(small_tmpfs), "FILL_AT": fill_at, "LAMBDAWRAP_SOCKET": str(small_tmpfs / "lw.sock")}
    # GIVEN a function that fills the /tmp holding the layer's socket, at import or in an
    # invocation, and then gets an event whose start record needs more of the slot
    events = [{}, {"fill": fill_at == "invoke"}, long_http_event(), {}]

    def answers(emu) -> list:
        return [(r.status, r.function_error, r.json()) for r in map(emu.invoke, events)]

    empty(small_tmpfs)
    with Emulator(str(task), "app.handler", env=env) as bare:
        without = answers(bare)
    empty(small_tmpfs)
    with instrumented(task, env=env) as (emu, rx):
        with_layer = answers(emu)
        emu.wait_idle()
        function_lines = emu.log_lines("function")
    # THEN the caller gets the same answers (no "signal: sigbus"), and every invocation still
    # has its span
    assert with_layer == without, function_lines
    assert all(status == 200 and error is None for status, error, _ in with_layer)
    rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"], count=len(events), timeout=30)
