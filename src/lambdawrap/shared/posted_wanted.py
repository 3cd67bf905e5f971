"""Whether the companion wants the runtime's posts reported (handler/response_posted.py): a file
beside the socket (`<socket>.posted-wanted`), there while it does.

A `posted` record (for an invocation whose record went before the post: a held record carries
the verdict itself) spares a wait only for an invocation exported at its own end. While
invocations come often the companion exports once a second, and the record would be work for
both processes for nothing (measured: a few hundred µs of CPU an invocation). The function's
process looks for the file after such a post (one stat, nothing read); the companion makes or
removes it when its way of flushing changes. A file left by an environment before only makes
records that are not needed, never a wrong span.
"""

from __future__ import annotations

import os

SUFFIX = ".posted-wanted"


def flag_path(socket_path: str) -> str:
    return socket_path + SUFFIX


def is_wanted(flag: str) -> bool:
    """The function's side: whether to report a post (never raises)."""
    return os.path.exists(flag)


def set_wanted(socket_path: str, wanted: bool) -> bool:
    """The companion's side: make or remove the file; False if that failed (it then gets the
    records, or not, as before: only the wait they spare is at stake)."""
    path = flag_path(socket_path)
    try:
        if wanted:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        else:
            os.unlink(path)
    except FileNotFoundError:
        return not wanted
    except OSError:
        return False
    return True
