"""What one execution environment could not export, carried to the next in the same sandbox.

An environment that ends (timeout, crash, spindown) while the collector is unreachable cannot
export its last metrics, drop counts among them; an environment that ends before its export
pipeline is loaded (a failed init, or a first invocation that timed out: the platform gives
SHUTDOWN 2 s, and importing the SDK takes longer at 128 MB) still holds every finished
invocation, span and log line. /tmp outlives a reset, so the companion leaves what it could not
send in a file beside its socket: the counters' unexported values, and the sink calls that
never reached the pipeline. The next environment's companion replays them into its own sink,
so the invocations are exported there, with their own ids and times. (Histograms are not
carried: only counts.) What does not fit in the file is counted as dropped instead, log lines
first, those an invocation or init holds included, then what they were held for.
"""

from __future__ import annotations

import collections
import json
import os

from lambdawrap.companion.correlator import InitFacts, Invocation, call_lost

SUFFIX = ".carryover.json"
_WRITING = ".writing"  # the next file, beside it until it is whole
MAX_BYTES = 4 * 1024 * 1024
# Log lines held weigh more than this (characters, and LINE_WEIGHT for each): a file without them
# is written first. What a kill at SHUTDOWN's deadline may cut short is encoding and writing the
# lines: 1,000 lines of 1 KiB a failed init holds take hundreds of milliseconds at 128 MB.
LINES_WEIGHT_SAVED_SECOND = 32 * 1024
LINE_WEIGHT = 100  # a line's own share of encoding it, its characters aside
# When the calls do not fit, these go, in order (the reason their loss is counted under; None:
# not counted, a platform report's histograms, which are not carried anyway). The log lines an
# invocation or init holds go with the loose ones, before the spans they were held for. The
# counts, and the calls that carry counts, go last: without them the loss of everything else is
# uncounted.
_HELD_LINES = "held lines"
_SHED_FIRST = (("log_line", "log_shutdown_deadline"), (_HELD_LINES, "log_shutdown_deadline"), ("user_spans", "shutdown_deadline"), ("invocation", "shutdown_deadline"), ("report", None), ("init_span", "shutdown_deadline"))
_HOLDERS = {"invocation": "invocation", "init_span": "init"}  # sink call: the object it holds lines on
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
    encoded = [_encoded(call) for call in held.calls + list(calls)]
    if _lines_weight(encoded) > LINES_WEIGHT_SAVED_SECOND:
        # Before the lines are encoded: that is the time a kill may come.
        lean, lost = _without_held_lines([call for call in encoded if call[0] != "log_line"], logs_exported)
        lost += _dropped(_shed("log_line", "log_shutdown_deadline", [call for call in encoded if call[0] == "log_line"], logs_exported))
        _write(_path(socket_path), _fitted(all_counts + lost, lean, logs_exported))
    _write(_path(socket_path), _fitted(all_counts, encoded, logs_exported))


def _encoded(call: tuple) -> list:
    name, args, kwargs = call
    return [name, [_encode(a) for a in args], kwargs]


def _without_logs(value: object) -> object:
    if isinstance(value, dict) and isinstance(value.get("data"), dict) and value["data"].get("logs"):
        return {**value, "data": {**value["data"], "logs": []}}
    return value


def _fitted(all_counts: list, encoded: list, logs_exported: bool) -> bytes:
    """The file's bytes, within MAX_BYTES: what does not fit shed, its loss counted."""
    data = _dump(all_counts, encoded)
    for name, reason in _SHED_FIRST:
        if len(data) <= MAX_BYTES:
            break
        if name == _HELD_LINES:
            encoded, lost = _without_held_lines(encoded, logs_exported)
            all_counts = all_counts + lost
        else:
            kept = [call for call in encoded if call[0] != name]
            if reason is not None:
                all_counts = all_counts + _dropped(_shed(name, reason, [call for call in encoded if call[0] == name], logs_exported))
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


def _held_lines(call: list) -> list:
    """The log lines an encoded invocation or init call holds for its span."""
    holder = _HOLDERS.get(call[0])
    first = call[1][0] if holder and call[1] else None
    if isinstance(first, dict) and first.get("__lambdawrap__") == holder and isinstance(first.get("data"), dict):
        logs = first["data"].get("logs")
        return logs if isinstance(logs, list) else []
    return []


def _lines_weight(encoded: list) -> int:
    weight = 0
    for call in encoded:
        if call[0] == "log_line":
            lines = call[1][:1]
        else:
            lines = [entry[0] for entry in _held_lines(call) if entry]
        weight += sum(LINE_WEIGHT + (len(line) if isinstance(line, str) else 0) for line in lines)
    return weight


def _without_held_lines(encoded: list, logs_exported: bool) -> tuple:
    """`encoded` with the log lines each invocation or init holds taken off it, which is kept;
    and the count of their loss, only where logs are exported (as call_lost counts them)."""
    kept, held = [], 0
    for call in encoded:
        lines = _held_lines(call)
        if lines:
            held += len(lines)
            call = [call[0], [_without_logs(call[1][0]), *call[1][1:]], call[2]]
        kept.append(call)
    return kept, _dropped([("log_shutdown_deadline", held)] if held and logs_exported else [])


def _dropped(lost: list) -> list:
    return [{"name": "lambdawrap.dropped", "attributes": {"reason": label}, "value": count} for label, count in lost]


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
