"""What one execution environment could not export, carried to the next in the same sandbox.

An environment that ends (timeout, crash, spindown) while the collector is unreachable cannot
export its last metrics, drop counts among them; an environment that ends before its export
pipeline is loaded (a failed init, or a first invocation that timed out: the platform gives
SHUTDOWN 2 s, and importing the SDK takes longer at 128 MB) still holds every finished
invocation, span and log line. /tmp outlives a reset, so the companion leaves what it could not
send in a file beside its socket: the counters' unexported values, and the sink calls that
never reached the pipeline. The next environment's companion replays them into its own sink,
so the invocations are exported there, with their own ids and times. (Histograms are not
carried: only counts.) What does not fit in the file is counted as dropped instead.
"""

from __future__ import annotations

import collections
import json
import os

from lambdawrap.companion.correlator import InitFacts, Invocation, call_lost

SUFFIX = ".carryover.json"
_WRITING = ".writing"  # the next file, beside it until it is whole
MAX_BYTES = 4 * 1024 * 1024
LINES_SAVED_SECOND = 256  # more log lines held than this: a file without them is written first
# When the calls do not fit, these go, in order (the reason their loss is counted under; None:
# not counted, a platform report's histograms, which are not carried anyway). The counts, and the
# calls that carry counts, go last: without them the loss of everything else is uncounted.
_SHED_FIRST = (("log_line", "log_shutdown_deadline"), ("user_spans", "shutdown_deadline"), ("invocation", "shutdown_deadline"), ("report", None), ("init_span", "shutdown_deadline"))
_OBJECTS = {"invocation": Invocation, "init": InitFacts}
# The sink's methods a kept call may name (the file is ours, but it is read back as data).
SINK_CALLS = frozenset({"invocation", "init_span", "report", "log_line", "user_spans", "dropped", "internal_errors", "restore_counts"})


class Carried:
    """What earlier environments left: counter values and sink calls (name, args, kwargs)."""

    def __init__(self, counts: list, calls: list) -> None:
        self.counts = counts
        self.calls = calls

    @property
    def failed_inits(self) -> int:
        return sum(1 for name, args, _ in self.calls if name == "init_span" and args and isinstance(args[0], InitFacts) and args[0].failed)

    @property
    def request_ids(self) -> set:
        return {args[0].request_id for name, args, _ in self.calls if name == "invocation" and args and isinstance(args[0], Invocation)}


def _path(socket_path: str) -> str:
    return socket_path + SUFFIX


def save(socket_path: str, counts: list = (), calls: list = (), logs_exported: bool = True) -> None:
    """Add `counts` ([{"name", "attributes", "value"}]) and sink `calls` ((name, args, kwargs))
    to what the file already holds. The file is replaced whole, once the new one is written: the
    platform's SIGKILL may come while a large one is encoded or written (at 128 MB, hundreds of
    milliseconds), and must leave the earlier one, not none or half of one. Where many log
    lines are held, a file without them (each counted as lost) is written first: a kill while
    the lines are encoded and written then still leaves every invocation accounted for."""
    held = _read(_path(socket_path))
    all_counts = held.counts + list(counts)
    every = held.calls + list(calls)
    lines = [call for call in every if call[0] == "log_line"]
    if len(lines) > LINES_SAVED_SECOND:
        # Before the lines are encoded: that is the time a kill may come.
        lost = _shed("log_line", "log_shutdown_deadline", lines, logs_exported)
        shed = [{"name": "lambdawrap.dropped", "attributes": {"reason": label}, "value": count} for label, count in lost]
        _write(_path(socket_path), _fitted(all_counts + shed, [_encoded(call) for call in every if call[0] != "log_line"], logs_exported))
    _write(_path(socket_path), _fitted(all_counts, [_encoded(call) for call in every], logs_exported))


def _encoded(call: tuple) -> list:
    name, args, kwargs = call
    return [name, [_encode(a) for a in args], kwargs]


def _fitted(all_counts: list, encoded: list, logs_exported: bool) -> bytes:
    """The file's bytes, within MAX_BYTES: what does not fit shed, its loss counted."""
    data = _dump(all_counts, encoded)
    for name, reason in _SHED_FIRST:
        if len(data) <= MAX_BYTES:
            break
        kept = [call for call in encoded if call[0] != name]
        if reason is not None:
            all_counts = all_counts + [{"name": "lambdawrap.dropped", "attributes": {"reason": label}, "value": count} for label, count in _shed(name, reason, [call for call in encoded if call[0] == name], logs_exported)]
        encoded = kept
        data = _dump(all_counts, encoded)
    if len(data) > MAX_BYTES:
        # One count per counter; then, if need be, without the calls that count (the rest are
        # shed by now): a file not written would lose every count uncounted.
        all_counts = _summed(all_counts)
        data = _dump(all_counts, encoded)
        if len(data) > MAX_BYTES:
            data = _dump(all_counts, [])
    return data


def _write(path: str, data: bytes) -> None:
    written = path + _WRITING
    _remove(written)  # what a companion killed meanwhile left (a link, even)
    fd = os.open(written, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(written, path)
    except OSError:
        _remove(written)  # a disk full: no half-file left in /tmp
        raise


def _shed(name: str, reason: str, calls: list, logs_exported: bool = True) -> list:
    """(reason, count) of what shedding the encoded `calls` of `name` loses (correlator.call_lost),
    their held log lines as `log_shutdown_deadline`."""
    totals: collections.Counter = collections.Counter()
    for call in calls:
        first = call[1][0] if call[1] else None
        if isinstance(first, dict) and "__lambdawrap__" in first:
            first = first.get("data")
        for label, count in call_lost(name, first, reason, "log_shutdown_deadline" if logs_exported else None):
            totals[label] += count
    return [(label, count) for label, count in totals.items() if count]


def take(socket_path: str) -> Carried:
    """What earlier environments left (the file is removed); whatever cannot be read is ignored."""
    path = _path(socket_path)
    held = _read(path)
    _remove(path)
    _remove(path + _WRITING)
    return held


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _read(path: str) -> Carried:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError:
        return Carried([], [])
    try:
        held = json.loads(data)
    except (ValueError, RecursionError):
        return Carried([], [])
    if not isinstance(held, dict):
        return Carried([], [])
    counts, calls = held.get("counts"), held.get("calls")
    decoded = []
    for call in calls if isinstance(calls, list) else ():
        try:
            name, args, kwargs = call
            if name in SINK_CALLS:
                decoded.append((name, [_decode(a) for a in args], {str(k): v for k, v in dict(kwargs or {}).items()}))
        except (TypeError, ValueError, KeyError, AttributeError):
            continue
    return Carried([c for c in counts if isinstance(c, dict)] if isinstance(counts, list) else [], decoded)


def _summed(counts: list) -> list:
    """`counts` with one entry per counter (name and attributes), its values added up."""
    totals: dict = {}
    for count in counts:
        try:
            key = json.dumps([count["name"], count["attributes"]], sort_keys=True, default=repr)
            if key in totals:
                totals[key]["value"] += count["value"]
            else:
                totals[key] = dict(count)
        except (KeyError, TypeError):  # not a count we wrote: nothing to add it to
            continue
    return list(totals.values())


def _dump(counts: list, calls: list) -> bytes:
    return json.dumps({"counts": counts, "calls": calls}, separators=(",", ":"), default=repr).encode()


def _encode(value: object) -> object:
    for tag, kind in _OBJECTS.items():
        if isinstance(value, kind):
            return {"__lambdawrap__": tag, "data": value.to_dict()}
    return value


def _decode(value: object) -> object:
    if isinstance(value, dict) and value.get("__lambdawrap__") in _OBJECTS:
        return _OBJECTS[value["__lambdawrap__"]].from_dict(value["data"])
    return value
