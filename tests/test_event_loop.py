"""The companion's event loop: readers, their removal (closed sockets included), wake-ups from
other threads and timers, on real sockets."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from lambdawrap.companion.event_loop import EventLoop, receive


@pytest.fixture
def loop():
    loop = EventLoop()
    yield loop
    loop.close()


def _pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    return a, b


def test_a_reader_is_called_with_its_socket_once_data_waits(loop):
    # GIVEN a watched socket WHEN its peer writes THEN its callback gets that socket
    ours, peer = _pair()
    got = []
    loop.add_reader(ours, lambda sock: got.append((sock, receive(sock))))
    assert loop.run_once(0.0) == 0  # nothing waiting: nothing called
    peer.send(b"hello")
    assert loop.run_until(lambda: bool(got), time.monotonic() + 10)
    assert got == [(ours, b"hello")]
    ours.close(), peer.close()


def test_a_removed_reader_is_not_called_again(loop):
    ours, peer = _pair()
    got = []
    loop.add_reader(ours, lambda sock: got.append(receive(sock)))
    loop.remove_reader(ours)
    peer.send(b"x")
    loop.run_once(0.05)
    assert got == []
    loop.remove_reader(ours)  # a second removal is no error
    ours.close(), peer.close()


def test_a_socket_closed_before_its_removal_is_let_go_and_its_number_can_be_watched_again(loop):
    # GIVEN a watched socket closed by its owner before removal (its fileno() is now -1)
    ours, peer = _pair()
    loop.add_reader(ours, lambda sock: None)
    number = ours.fileno()
    ours.close()
    # WHEN it is removed, and a new socket gets its number THEN that one is watched (and
    # called) as any other
    loop.remove_reader(ours)
    reused, fresh_peer = _pair()
    if reused.fileno() != number:  # the kernel gave another number: move it to that one
        os.dup2(reused.fileno(), number)
        reused.close()
        reused = socket.socket(fileno=number)
    got = []
    loop.add_reader(reused, lambda sock: got.append(receive(sock)))
    fresh_peer.send(b"y")
    assert loop.run_until(lambda: bool(got), time.monotonic() + 10)
    assert got == [b"y"]
    loop.remove_reader(reused)
    for sock in (peer, reused, fresh_peer):
        sock.close()


def test_watching_a_socket_twice_or_a_closed_one_is_refused(loop):
    ours, peer = _pair()
    loop.add_reader(ours, lambda sock: None)
    with pytest.raises(KeyError):
        loop.add_reader(ours, lambda sock: None)
    gone, gone_peer = _pair()
    loop.add_reader(gone, lambda sock: None)
    gone.close()
    with pytest.raises(KeyError):  # still watched, though closed: as selectors answers
        loop.add_reader(gone, lambda sock: None)
    loop.remove_reader(gone)
    gone_peer.close()
    closed, closed_peer = _pair()
    closed.close()
    with pytest.raises(ValueError):
        loop.add_reader(closed, lambda sock: None)
    ours.close(), peer.close(), closed_peer.close()


def test_a_peer_that_closes_wakes_the_reader_with_nothing_to_read(loop):
    ours, peer = _pair()
    got = []
    loop.add_reader(ours, lambda sock: got.append(receive(sock)))
    peer.close()
    assert loop.run_until(lambda: bool(got), time.monotonic() + 10)
    assert got == [b""]
    ours.close()


def test_another_thread_wakes_the_loop_and_runs_its_callback_on_the_loops_thread(loop):
    ran_on = []
    thread = threading.Thread(target=lambda: loop.call_soon_threadsafe(lambda: ran_on.append(threading.get_ident())))
    started = time.monotonic()
    thread.start()
    # A wait with no deadline ends because of the wake-up, not a timeout.
    assert loop.run_until(lambda: bool(ran_on))
    thread.join()
    assert ran_on == [threading.get_ident()]
    assert time.monotonic() - started < 10


class _Stopped(BaseException):
    pass


def test_an_interrupt_ends_a_wait_not_yet_over_and_lets_a_met_one_return(loop):
    import signal

    # GIVEN a wait with no deadline, and a signal whose handler interrupts the loop
    ours, peer = _pair()
    got = []
    loop.add_reader(ours, lambda sock: got.append(receive(sock)))
    previous = signal.signal(signal.SIGUSR1, lambda number, frame: loop.interrupt(_Stopped()))
    try:
        threading.Timer(0.05, lambda: os.kill(os.getpid(), signal.SIGUSR1)).start()
        # WHEN the signal comes THEN the wait raises (before: only the check could end it)
        with pytest.raises(_Stopped):
            loop.run_until(lambda: bool(got))
        # ... and a wait whose check is met returns, with what it waited for, until interrupt(None)
        peer.send(b"event")
        assert _served(loop, got)
        assert loop.run_until(lambda: any(got)) is True
        with pytest.raises(_Stopped):
            loop.run_until(lambda: False, time.monotonic() + 10)
        loop.interrupt(None)
        assert loop.run_until(lambda: False, time.monotonic() + 0.01) is False
    finally:
        signal.signal(signal.SIGUSR1, previous)
        ours.close(), peer.close()


def _served(loop: EventLoop, got: list) -> bool:
    # What is waiting read without a wait (run_once is no wait: it does not raise).
    deadline = time.monotonic() + 10
    while not any(got) and time.monotonic() < deadline:
        loop.run_once(0.05)
    return any(got)


def test_a_wait_whose_time_has_passed_returns_at_once(loop):
    # GIVEN nothing to serve WHEN asked to wait a negative time THEN it returns at once (epoll
    # itself would wait forever)
    done = threading.Event()

    def wait():
        loop.run_once(-0.5)
        loop.run_once(float("-inf"))
        done.set()

    threading.Thread(target=wait, daemon=True).start()
    assert done.wait(10)


def test_timers_run_in_order_once_due_and_a_deadline_ends_the_wait(loop):
    ran = []
    now = time.monotonic()
    loop.call_at(now + 0.02, lambda: ran.append("second"))
    loop.call_at(now, lambda: ran.append("first"))
    assert loop.run_until(lambda: len(ran) == 2, now + 10)
    assert ran == ["first", "second"]
    assert loop.run_until(lambda: False, time.monotonic() + 0.01) is False


def test_a_failing_callback_is_reported_and_the_loop_goes_on():
    errors = []
    loop = EventLoop(on_error=errors.append)
    ours, peer = _pair()
    got = []

    def broken(sock):
        receive(sock)
        raise RuntimeError("bug")

    other, other_peer = _pair()
    loop.add_reader(ours, broken)
    loop.add_reader(other, lambda sock: got.append(receive(sock)))
    peer.send(b"1"), other_peer.send(b"2")
    assert loop.run_until(lambda: bool(got), time.monotonic() + 10)
    assert got == [b"2"] and len(errors) == 1 and "broken" in errors[0]
    loop.close()
    for sock in (ours, peer, other, other_peer):
        sock.close()


OUT_OF_DESCRIPTORS_PROBE = """
import json, resource, sys, threading, time
from lambdawrap.companion.channel_server import SocketServer
from lambdawrap.companion.event_loop import EventLoop

resource.setrlimit(resource.RLIMIT_NOFILE, (48, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
received = []
loop = EventLoop()
server = SocketServer(sys.argv[1], lambda record, *rest: received.append(record), lambda reason, what: None)
server.attach(loop)
print("ready", flush=True)
sys.stdin.readline()  # the peers are connected
started_cpu, ends = time.process_time(), time.monotonic() + 2.0
loop.run_until(lambda: False, ends)
spent = time.process_time() - started_cpu
print(json.dumps({"cpu_s": spent}), flush=True)
sys.stdin.readline()  # the peers are closed, but the last
loop.run_until(lambda: bool(received), time.monotonic() + 20)
print(json.dumps({"received": len(received)}), flush=True)
"""


def test_a_listener_with_no_descriptor_left_for_its_connections_does_not_spin(tmp_path):
    import json
    import subprocess
    import sys

    from lambdawrap.handler.channel import Channel

    # GIVEN the companion's channel in a process of 48 descriptors, and 80 connections waiting
    # (Managed Instances' workers each hold one)
    path = str(tmp_path / "lw.sock")
    probe = subprocess.Popen([sys.executable, "-c", OUT_OF_DESCRIPTORS_PROBE, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    peers = []
    try:
        assert probe.stdout.readline().strip() == "ready"
        for _ in range(80):
            peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            peer.connect(path)
            peers.append(peer)
        probe.stdin.write("\n")
        probe.stdin.flush()
        # THEN the loop waits for descriptors without spinning (before: ~1.9 s of CPU in 2 s,
        # the level-triggered wait waking it at once, for ever)
        spent = json.loads(probe.stdout.readline())["cpu_s"]
        assert spent < 0.5, spent
        # ... and once descriptors are free again, the connections still waiting are served
        channel = Channel(path)
        for peer in peers:
            peer.close()
        peers.clear()
        assert channel.send({"version": 2, "type": "spans", "spans": []})
        probe.stdin.write("\n")
        probe.stdin.flush()
        assert json.loads(probe.stdout.readline())["received"] >= 1
    finally:
        for peer in peers:
            peer.close()
        probe.kill()
        probe.wait(30)
