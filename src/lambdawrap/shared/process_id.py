"""This process's id, without a system call each time it is asked: os.getpid() is one (glibc
stopped caching it in 2.25), and the function's process asks on every invocation whether it is
still the process that started the invocation, since a fork hands the child all the parent had.

Kept true by os.register_at_fork, which every child Python forks runs (os.fork,
multiprocessing); a process that forks without telling Python cannot run Python code safely
anyway."""

from __future__ import annotations

import os

_current = [os.getpid()]


def _forked() -> None:
    _current[0] = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


def own_pid() -> int:
    return _current[0]
