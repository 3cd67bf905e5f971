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
