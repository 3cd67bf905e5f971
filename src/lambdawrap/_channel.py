"""The handler side of the local channel to the companion: a Unix stream socket carrying
length-prefixed, versioned JSON records.

Sending never blocks an invocation: the socket is non-blocking, a record that does not fit in
the kernel's buffer is dropped and counted, and when the companion is absent the channel
drops, counts, warns once, and tries to reconnect at most once a second. Only `request()` (used
once at boot, for secrets) waits, and only up to its timeout.

Each drop is counted exactly once, by whoever can still count it. An invocation record that a
live companion could not take is its to count (it saw the INVOKE: `record_missing`). Every
other drop is counted here and reported with the next record that goes through; until then the
count is also kept in a small file beside the socket, because a companion that died takes the
environment with it, and only the next environment's companion can report it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Any

logger = logging.getLogger("lambdawrap")

RECORD_VERSION = 1
HEADER_BYTES = 4  # big-endian frame length
MAX_RECORD_BYTES = 256 * 1024
RECONNECT_INTERVAL_S = 1.0
DROPPED_SUFFIX = ".dropped."  # <socket>.dropped.<pid>: drops not yet reported, for the next companion


def dropped_counts_path(socket_path: str, pid: int) -> str:
    return f"{socket_path}{DROPPED_SUFFIX}{pid}"


def encode(record: dict) -> bytes:
    """One frame: 4-byte big-endian length, then compact JSON."""
    body = json.dumps(record, separators=(",", ":"), default=repr).encode("utf-8", "replace")
    return len(body).to_bytes(HEADER_BYTES, "big") + body


class FrameReader:
    """Splits a byte stream into decoded records; shared by both ends of the channel."""

    def __init__(self, max_bytes: int = MAX_RECORD_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_bytes

    def feed(self, data: bytes) -> list:
        """Returns the complete records; raises ValueError on a corrupt stream."""
        self._buffer += data
        records = []
        while len(self._buffer) >= HEADER_BYTES:
            length = int.from_bytes(self._buffer[:HEADER_BYTES], "big")
            if length > self._max:
                raise ValueError(f"frame of {length} bytes exceeds {self._max}")
            if len(self._buffer) < HEADER_BYTES + length:
                break
            body = bytes(self._buffer[HEADER_BYTES : HEADER_BYTES + length])
            del self._buffer[: HEADER_BYTES + length]
            try:
                records.append(json.loads(body))
            except RecursionError:  # nesting too deep for the decoder: as corrupt as bad JSON
                raise ValueError("record nested too deeply") from None
        return records


class Channel:
    """A lazily connected, fork-aware, never-blocking sender of records."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.dropped = 0
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._pending = b""
        self._next_connect = 0.0
        self._warned = False
        self._persisted = False
        if hasattr(os, "register_at_fork"):
            # A forked worker must not share the parent's connection: interleaved frames
            # from two processes would corrupt the stream.
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._sock = None
        self._pending = b""
        self._next_connect = 0.0
        self.dropped = 0  # the parent reports its own drops; the child starts from none
        self._persisted = False

    def _connect(self) -> socket.socket | None:
        now = time.monotonic()
        if now < self._next_connect:
            return None
        self._next_connect = now + RECONNECT_INTERVAL_S
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            self._warn_once(f"companion not reachable at {self.path} ({exc.strerror or exc}); telemetry records are dropped and counted")
            return None
        sock.setblocking(False)
        self._sock = sock
        return sock

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("lambdawrap: %s", message)

    def send(self, record: dict) -> bool:
        """Queue one record for the companion without waiting; False if it was dropped."""
        try:
            if self.dropped:
                record["dropped"] = self.dropped
            frame = encode(record)
        except Exception:  # noqa: BLE001 - an unencodable record is dropped, never raised
            self._count_drop(record, connected=self._sock is not None)
            return False
        with self._lock:
            sock = self._sock or self._connect()
            if sock is None:
                self._count_drop(record, connected=False)
                return False
            if len(frame) > MAX_RECORD_BYTES:
                self._count_drop(record, connected=True)
                return False
            try:
                if self._pending:
                    sent = sock.send(self._pending)
                    self._pending = self._pending[sent:]
                    if self._pending:
                        self._count_drop(record, connected=True)
                        return False
                sent = sock.send(frame)
                # The rest of a half-sent frame must go first next time, or the stream breaks.
                self._pending = frame[sent:]
            except BlockingIOError:
                self._count_drop(record, connected=True)
                return False
            except OSError as exc:
                self._close()
                self._count_drop(record, connected=False)
                if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                    self._warn_once(f"sending to the companion failed: {exc}")
                return False
            if record.get("dropped"):
                self.dropped = 0
                self._forget_persisted()
            return True

    def _count_drop(self, record: dict, connected: bool) -> None:
        if connected and record.get("type") == "invocation":
            # The live companion saw this invocation's INVOKE and accounts for it itself
            # (record_missing); counting it here too would count it twice.
            return
        self.dropped += 1
        self._persist()

    def _persist(self) -> None:
        # Only on the failure path: one small write, never raised.
        try:
            fd = os.open(dropped_counts_path(self.path, os.getpid()), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, str(self.dropped).encode())
            finally:
                os.close(fd)
            self._persisted = True
        except OSError:
            pass

    def _forget_persisted(self) -> None:
        if self._persisted:
            self._persisted = False
            try:
                os.unlink(dropped_counts_path(self.path, os.getpid()))
            except OSError:
                pass

    def request(self, record: dict, timeout_s: float) -> Any:
        """Send a request on a connection of its own and wait up to timeout_s for the answer."""
        deadline = time.monotonic() + timeout_s
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(max(timeout_s, 0.001))
            sock.connect(self.path)
            sock.sendall(encode(record))
            reader = FrameReader(max_bytes=16 * 1024 * 1024)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no answer from the companion within {timeout_s * 1000:.0f} ms")
                sock.settimeout(left)
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("the companion closed the connection")
                records = reader.feed(data)
                if records:
                    return records[0]

    def _close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._pending = b""


def collect_persisted_drops(socket_path: str) -> int:
    """Drops that handler processes of earlier environments could not report (companion side):
    the sum of the counts left beside the socket; the files are removed."""
    folder, name = os.path.split(socket_path)
    prefix = name + DROPPED_SUFFIX
    total = 0
    try:
        entries = os.listdir(folder or ".")
    except OSError:
        return 0
    for entry in entries:
        if not entry.startswith(prefix) or not entry[len(prefix) :].isascii() or not entry[len(prefix) :].isdigit():
            continue
        path = os.path.join(folder, entry)
        try:
            with open(path, "rb") as f:
                text = f.read(32).strip()
            os.unlink(path)
        except OSError:
            continue
        if text.isdigit():
            total += int(text)
    return total
