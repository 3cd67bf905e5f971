"""Child processes of the emulator: launch in their own group, capture output line by line,
signal the whole group, and read the group's peak memory."""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import threading
import time
from typing import Callable, Iterator, Mapping, Sequence

logger = logging.getLogger(__name__)

LineSink = Callable[[str, str], None]  # (stream name, line)
# What is left to read when the runtime posts is at most a pipe's worth (a writer blocks on a
# full pipe), but a busy machine can take this long to hand it on; an idle reader ends the
# wait at once.
DRAIN_TIMEOUT_S = 1.0
# The managed runtimes' log channel (spec §7): awslambdaric writes `logging` output and its
# error reports there as frames (type, length, timestamp, message), one telemetry record each,
# however many lines the message holds.
TELEMETRY_LOG_FD_ENV = "_LAMBDA_TELEMETRY_LOG_FD"
FRAME_HEADER_BYTES = 16


def deliver_line(on_line: LineSink, stream_name: str, raw: bytes) -> None:
    """Hand one captured line on, decoded."""
    try:
        on_line(stream_name, raw.decode("utf-8", "replace"))
    except Exception:  # noqa: BLE001 - a failing sink must not stop the capture
        logger.exception("emulator: log sink failed")


class ManagedProcess:
    """A process started in a new session, so that signals reach everything it started."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        on_line: LineSink,
        on_exit: Callable[["ManagedProcess"], None] | None = None,
        name: str = "",
        placement: Sequence[str] = (),
        log_frames: bool = False,
    ) -> None:
        self.name = name or os.path.basename(argv[0])
        env = dict(env)
        frame_read = frame_write = None
        if log_frames:
            frame_read, frame_write = os.pipe()
            env[TELEMETRY_LOG_FD_ENV] = str(frame_write)
        try:
            self._popen = subprocess.Popen(
                [*placement, *argv],  # e.g. entering the sandbox's cgroup before the program runs
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                pass_fds=(frame_write,) if frame_write is not None else (),
            )
        except BaseException:
            if frame_read is not None:
                os.close(frame_read)
            raise
        finally:
            if frame_write is not None:
                os.close(frame_write)  # the child's now: the pipe ends when the child's copies do
        self.pid = self._popen.pid
        self.started = time.monotonic()
        self._on_exit = on_exit
        self._peak_rss_kb = 0
        self._exited = threading.Event()
        # For drain_output(): which readers wait for the pipe with every line handed on.
        self._io_lock = threading.Lock()
        self._waiting = {"stdout": False, "stderr": False}
        self._readers = [
            threading.Thread(target=self._pump, args=(self._popen.stdout, "stdout", on_line), daemon=True, name=f"{self.name}-stdout"),
            threading.Thread(target=self._pump, args=(self._popen.stderr, "stderr", on_line), daemon=True, name=f"{self.name}-stderr"),
        ]
        self._frames = os.fdopen(frame_read, "rb", buffering=0) if frame_read is not None else None
        if self._frames is not None:
            self._waiting["frames"] = False
            self._readers.append(threading.Thread(target=self._pump, args=(self._frames, "frames", on_line), daemon=True, name=f"{self.name}-frames"))
        for reader in self._readers:
            reader.start()
        threading.Thread(target=self._wait, daemon=True, name=f"{self.name}-wait").start()

    def _pump(self, stream, stream_name: str, on_line: LineSink) -> None:
        # Lines, not chunks: the platform turns every line into one telemetry record. The
        # reader says it is busy before it takes anything from the pipe, so that what was
        # written is always either still in the pipe or with a busy reader (drain_output).
        fd = stream.fileno()
        pending = b""
        for chunk in busy_chunks(fd, lambda: os.read(fd, 65536), lambda idle: self._mark(stream_name, idle)):
            if stream_name == "frames":
                pending = _deliver_frames(on_line, pending + chunk)
                continue
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                deliver_line(on_line, stream_name, raw)
        if pending and stream_name != "frames":  # a frame cut short is lost, as on the platform
            deliver_line(on_line, stream_name, pending)
        self._mark(stream_name, True)  # finished: nothing more will come
        stream.close()

    def _mark(self, stream_name: str, idle: bool) -> None:
        with self._io_lock:
            self._waiting[stream_name] = idle

    def drain_output(self, timeout: float = DRAIN_TIMEOUT_S) -> bool:
        """Wait until every line the process has written so far has been handed on: the
        platform's runtimeDone must not overtake the log lines printed before it. Written
        data is in the pipe or with a busy reader, so an empty pipe seen before idle readers
        means it has all been handed on."""
        deadline = time.monotonic() + timeout
        fds = []
        for stream in (self._popen.stdout, self._popen.stderr, self._frames):
            if stream is None:
                continue
            try:
                fds.append(stream.fileno())
            except (ValueError, OSError):
                pass


        def drained() -> bool:
            try:
                readable = _readable(fds)
            except (ValueError, OSError):
                return True  # closed: the readers are done
            with self._io_lock:
                return all(self._waiting.values()) and not readable

        return wait_drained(drained, deadline)

    def _wait(self) -> None:
        self._popen.wait()
        # The pipes close when the last writer exits; wait for the readers so that every
        # line is delivered before anyone learns the process is gone.
        for reader in self._readers:
            reader.join(timeout=2)
        self._exited.set()
        if self._on_exit is not None:
            self._on_exit(self)

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode if self._exited.is_set() else None

    def exited(self) -> bool:
        return self._exited.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the exit (and the last output line); True if it has exited."""
        return self._exited.wait(timeout)

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def kill_group(self) -> None:
        self.signal_group(signal.SIGKILL)

    def stop(self, grace: float) -> None:
        """SIGTERM the group, wait up to `grace` seconds, then SIGKILL it."""
        if not self.exited():
            self.signal_group(signal.SIGTERM)
            self.wait(grace)
        self.kill_group()
        self.wait(2)

    def exit_description(self) -> str:
        """How the process ended, in the words the platform uses."""
        code = self._popen.returncode
        if code is None:
            return "still running"
        if code < 0:
            # Worded as the platform (Go's os.ProcessState) words it.
            words = {signal.SIGKILL: "killed", signal.SIGTERM: "terminated", signal.SIGSEGV: "segmentation fault", signal.SIGABRT: "aborted", signal.SIGINT: "interrupt"}
            try:
                return f"signal: {words.get(signal.Signals(-code), signal.Signals(-code).name.lower())}"
            except ValueError:
                return f"signal: {-code}"
        return f"exit status {code}"

    def sample_peak_rss_kb(self) -> int:
        """Peak RSS (VmHWM) summed over the live processes of the group, kept as a running max."""
        total = 0
        for pid in _group_members(self.pid):
            total += _read_vmhwm_kb(pid)
        self._peak_rss_kb = max(self._peak_rss_kb, total)
        return self._peak_rss_kb


def _deliver_frames(on_line: LineSink, data: bytes) -> bytes:
    """Hand on every whole frame in `data` (its message, one record however many lines it
    holds, less the newline a log line ends with); returns what is left of a frame to come."""
    while len(data) >= FRAME_HEADER_BYTES:
        length = int.from_bytes(data[4:8], "big")
        if len(data) < FRAME_HEADER_BYTES + length:
            break
        message = data[FRAME_HEADER_BYTES : FRAME_HEADER_BYTES + length]
        deliver_line(on_line, "frames", message[:-1] if message.endswith(b"\n") else message)
        data = data[FRAME_HEADER_BYTES + length :]
    return data


def busy_chunks(fd: int, read: Callable[[], bytes], mark: Callable[[bool], None]):
    """The chunks `read` takes from `fd` until its end. The reader is marked idle while it waits
    and busy before it takes anything, so that what was written is always either still in the
    source or with a busy reader: all is handed on once the source is empty and the reader idle
    (wait_drained)."""
    ready = select.poll()
    ready.register(fd, select.POLLIN)
    while True:
        mark(True)
        try:
            ready.poll()  # data or the end, left in the source
        except OSError:
            pass
        mark(False)
        try:
            chunk = read()
        except OSError:
            chunk = b""
        if not chunk:
            return
        yield chunk


def wait_drained(drained: Callable[[], bool], deadline: float) -> bool:
    """Whether `drained()` came true before `deadline` (monotonic), asked every half millisecond."""
    while not drained():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.0005)
    return True


def _readable(fds: list) -> list:
    """The descriptors with data waiting, now (poll, not select: no limit on their numbers)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    events = poller.poll(0)
    if any(mask & select.POLLNVAL for _, mask in events):
        raise OSError("a stream was closed")
    return [fd for fd, mask in events if mask & (select.POLLIN | select.POLLHUP)]


def _stat_fields() -> Iterator[tuple]:
    """(pid, the fields of its /proc/<pid>/stat after the command name) of each process now."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces or parentheses; fields start after the last ')'.
        yield int(entry), stat[stat.rfind(b")") + 2 :].split()


def _group_members(pgid: int) -> list[int]:
    return [pid for pid, fields in _stat_fields() if len(fields) > 2 and int(fields[2]) == pgid]


def live_children(pid: int) -> int:
    """How many processes `pid` started are alive: on Managed Instances, the runtime's workers
    (awslambdaric forks them from its main process). A child that ended but is not yet reaped
    (a zombie) does not count."""
    return sum(1 for _, fields in _stat_fields() if len(fields) > 1 and int(fields[1]) == pid and fields[0] not in (b"Z", b"X"))


def still_forking(pid: int) -> bool | None:
    """Whether the runtime's main process on Managed Instances is still starting its workers:
    once all are forked it waits on them (awslambdaric joins each), in the kernel's do_wait.
    None where the kernel does not say (a wait channel hidden as "0", no /proc)."""
    try:
        with open(f"/proc/{pid}/wchan", "rb") as f:
            channel = f.read().strip()
    except OSError:
        return None
    if channel in (b"", b"0"):
        return None
    return channel != b"do_wait"


def _read_vmhwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0
