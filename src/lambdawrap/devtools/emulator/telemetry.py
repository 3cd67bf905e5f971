"""The Telemetry API's delivery side: records, init replay, per-subscriber batching and POST."""

from __future__ import annotations

import collections
import http.client
import json
import logging
import select
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from lambdawrap.devtools.emulator.api_server import ApiError

logger = logging.getLogger(__name__)

# 2025-01-29 is the Managed Instances schema, documented as also serving default functions.
SCHEMA_VERSIONS = ("2022-07-01", "2022-12-13", "2025-01-29")
MANAGED_INSTANCES_SCHEMA_VERSIONS = ("2025-01-29",)
TYPES = ("platform", "function", "extension")
SANDBOX_HOSTS = ("sandbox", "sandbox.localdomain")
# (min, max, default) from the Telemetry API reference.
BUFFERING_LIMITS = {
    "maxItems": (1000, 10000, 10000),
    "maxBytes": (262144, 1048576, 262144),
    "timeoutMs": (25, 30000, 1000),
}
# A lagging subscriber keeps at most this many batches' worth; beyond it records are dropped
# and reported with platform.logsDropped, as the real service does.
BACKLOG_BATCHES = 10
POST_TIMEOUT_S = 5.0
RETRY_BACKOFF_S = (0.05, 0.1, 0.2, 0.4, 0.8)
_RESPONSE_POLL_S = 0.05


class DeliveryGate:
    """Closed while the environment is frozen: a frozen listener cannot answer, so deliveries
    wait for the thaw, and time spent frozen never counts towards a POST's timeout.

    `min_buffer_s`: the least time a batch is buffered, whatever the subscription's timeoutMs
    (0: as subscribed). Lambda documents delivery as buffered up to timeoutMs, at best; tests
    raise it to see what a subscriber does when the platform's records come late.

    `flush_before_shutdown`: deliver what is buffered before SHUTDOWN (as Managed Instances
    do, spec §3); off, a batch held while frozen comes due after SHUTDOWN went out, which
    Lambda does not promise against."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()
        self._closings = 0
        self.min_buffer_s = 0.0
        self.flush_before_shutdown = True

    def close(self) -> None:
        self._closings += 1
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def wait_open(self) -> None:
        self._open.wait()

    def running_since(self, closings: int) -> bool:
        """Whether the environment ran throughout since `closings` was read."""
        return self._open.is_set() and self._closings == closings

    @property
    def closings(self) -> int:
        return self._closings


def utc_timestamp(epoch_s: float | None = None) -> str:
    """The Telemetry API's time format: UTC with millisecond precision."""
    moment = datetime.fromtimestamp(time.time() if epoch_s is None else epoch_s, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class Subscription:
    """One validated subscription body."""

    def __init__(self, types: tuple[str, ...], max_items: int, max_bytes: int, timeout_ms: int, host: str, port: int, path: str):
        self.types = types
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.timeout_ms = timeout_ms
        self.host = host
        self.port = port
        self.path = path

    @classmethod
    def parse(cls, body: Any, schema_versions: tuple[str, ...] = SCHEMA_VERSIONS) -> "Subscription":
        """Validate a subscription request, raising the API's 400 ValidationError."""

        def invalid(message: str) -> ApiError:
            return ApiError(400, "ValidationError", message)

        if not isinstance(body, dict):
            raise invalid("request body must be a JSON object")
        if body.get("schemaVersion") not in schema_versions:
            raise invalid(f"schemaVersion must be one of {', '.join(schema_versions)}")
        types = body.get("types")
        if not isinstance(types, list) or not types or any(t not in TYPES for t in types):
            raise invalid(f"types must be a non-empty array of {', '.join(TYPES)}")
        buffering = body.get("buffering") or {}
        if not isinstance(buffering, dict):
            raise invalid("buffering must be an object")
        values = {}
        for field, (low, high, default) in BUFFERING_LIMITS.items():
            value = buffering.get(field, default)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise invalid(f"buffering.{field} must be an integer between {low} and {high}")
            values[field] = value
        destination = body.get("destination")
        if not isinstance(destination, dict) or destination.get("protocol") != "HTTP":
            raise invalid("destination.protocol must be HTTP")
        uri = destination.get("URI")
        if not isinstance(uri, str):
            raise invalid("destination.URI is required")
        parts = urlsplit(uri)
        if parts.scheme != "http":
            raise invalid("destination.URI must use http")
        if parts.hostname not in SANDBOX_HOSTS:
            raise invalid("destination.URI host must be sandbox.localdomain or sandbox")
        try:
            port = parts.port
        except ValueError:
            port = None
        if not port:
            raise invalid("URI port is not provided")
        return cls(tuple(types), values["maxItems"], values["maxBytes"], values["timeoutMs"], "127.0.0.1", port, parts.path or "/")


class Subscriber:
    """Batches records for one extension and POSTs them to its listener on a named thread."""

    def __init__(self, extension_name: str, subscription: Subscription, gate: DeliveryGate | None = None, on_drop: Callable[[str], None] | None = None) -> None:
        self.extension_name = extension_name
        self.subscription = subscription
        self._gate = gate or DeliveryGate()
        self._on_drop = on_drop or (lambda record_type: None)  # told each record's type it drops
        self._cv = threading.Condition()
        self._queue: collections.deque[tuple[dict, int]] = collections.deque()
        self._queued_bytes = 0
        self._in_flight = False
        self._closed = False
        self._flush_requested = False
        self._dropped_records = 0
        self._dropped_bytes = 0
        self._connection: http.client.HTTPConnection | None = None  # used by the sender thread only
        self.delivered = 0
        self._thread = threading.Thread(target=self._run, name=f"telemetry-{extension_name}", daemon=True)
        self._thread.start()

    def put(self, event: dict) -> None:
        size = len(json.dumps(event))
        with self._cv:
            if self._closed:
                return
            limit = self.subscription.max_bytes * BACKLOG_BATCHES
            if self._queued_bytes + size > limit:
                self._dropped_records += 1
                self._dropped_bytes += size
                self._on_drop(event.get("type"))
                return
            self._queue.append((event, size))
            self._queued_bytes += size
            self._cv.notify_all()

    def flush(self, timeout: float) -> bool:
        """Deliver everything queued now; True if the queue drained within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cv:
            self._flush_requested = True
            self._cv.notify_all()
            while self._queue or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
            return True

    def close(self, timeout: float = 0.5) -> None:
        self.flush(timeout)
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=timeout + POST_TIMEOUT_S)
        if self._connection is not None and not self._thread.is_alive():
            self._connection.close()

    def _take_batch(self) -> list[dict] | None:
        sub = self.subscription
        with self._cv:
            while not self._queue and not self._closed:
                self._cv.wait()
            if not self._queue:
                return None
            first_at = time.monotonic()
            while not self._closed and not self._flush_requested:
                if len(self._queue) >= sub.max_items or self._queued_bytes >= sub.max_bytes:
                    break
                left = first_at + max(sub.timeout_ms / 1000, self._gate.min_buffer_s) - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            if self._dropped_records:
                # Tell the subscriber what it lost, in the stream itself.
                record = {"droppedBytes": self._dropped_bytes, "droppedRecords": self._dropped_records, "reason": "Consumer seems to have fallen behind as it has not acknowledged receipt of logs."}
                self._queue.appendleft(({"time": utc_timestamp(), "type": "platform.logsDropped", "record": record}, 200))
                self._dropped_records = self._dropped_bytes = 0
            batch, size = [], 0
            while self._queue and len(batch) < sub.max_items and (size < sub.max_bytes or not batch):
                event, event_size = self._queue.popleft()
                batch.append(event)
                size += event_size
                self._queued_bytes -= event_size
            if not self._queue:
                self._flush_requested = False
            self._in_flight = True
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            body = json.dumps(batch).encode()
            for attempt, backoff in enumerate((0.0,) + RETRY_BACKOFF_S):
                if backoff:
                    time.sleep(backoff)
                self._gate.wait_open()
                if self._post(body):
                    self.delivered += len(batch)
                    break
                with self._cv:
                    if self._closed:
                        break
            else:
                # Dropped, as the platform drops a batch its retries could not deliver: told in
                # the stream, as a lagging subscriber's losses are (spec §4).
                logger.warning("emulator: telemetry for %s dropped after %d attempts (%d records)", self.extension_name, attempt + 1, len(batch))
                told = [e["record"] for e in batch if e.get("type") == "platform.logsDropped" and isinstance(e.get("record"), dict)]
                lost = [e for e in batch if e.get("type") != "platform.logsDropped"]
                with self._cv:
                    # A logsDropped among them tells of records lost before: told again.
                    self._dropped_records += len(lost) + sum(r.get("droppedRecords", 0) for r in told)
                    self._dropped_bytes += len(json.dumps(lost)) + sum(r.get("droppedBytes", 0) for r in told)
                for event in lost:
                    self._on_drop(event.get("type"))
            with self._cv:
                self._in_flight = False
                self._cv.notify_all()

    def _post(self, body: bytes) -> bool:
        # One connection, kept alive between batches, as the platform's HTTP client does; one
        # the listener closed while idle is replaced once at once.
        sub = self.subscription
        for _ in range(2):
            reused = self._connection is not None
            conn = self._connection or http.client.HTTPConnection(sub.host, sub.port, timeout=POST_TIMEOUT_S)
            try:
                conn.request("POST", sub.path, body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._connection = None
                if reused:
                    continue
                return False
            if response.will_close:
                conn.close()
                self._connection = None
            else:
                self._connection = conn
            return 200 <= response.status < 300
        return False


class TelemetryBus:
    """Fans records out to subscribers and remembers what was emitted during init for replay."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Subscriber] = []
        self._init_buffer: list[tuple[str, dict]] | None = None
        self.gate = DeliveryGate()
        self.history: list[dict] = []  # every record emitted, for tests and the CLI
        # What subscribers lost by lagging, by record type: platform.logsDropped counts every
        # record (a platform event too), where a test tells lines from the rest.
        self._dropped_types: collections.Counter = collections.Counter()
        self._drops_lock = threading.Lock()  # its own: subscribe() replays (puts) under _lock

    def emit(self, kind: str, record_type: str, record: Any) -> dict:
        event = {"time": utc_timestamp(), "type": record_type, "record": record}
        with self._lock:
            self.history.append(event)
            if self._init_buffer is not None:
                self._init_buffer.append((kind, event))
            subscribers = list(self._subscribers)
        for sub in subscribers:
            if kind in sub.subscription.types:
                sub.put(event)
        return event

    def platform(self, record_type: str, record: dict) -> dict:
        return self.emit("platform", "platform." + record_type, record)

    def start_init_replay(self) -> None:
        with self._lock:
            self._init_buffer = []

    def stop_init_replay(self) -> None:
        with self._lock:
            self._init_buffer = None

    def subscribe(self, extension_name: str, subscription: Subscription) -> Subscriber:
        sub = Subscriber(extension_name, subscription, self.gate, self._count_drop)
        with self._lock:
            # Replay first, under the lock: no record emitted meanwhile may overtake the
            # init records it follows.
            for kind, event in self._init_buffer or []:
                if kind in subscription.types:
                    sub.put(event)
            # Replace a previous subscription of the same extension.
            old = [s for s in self._subscribers if s.extension_name == extension_name]
            self._subscribers = [s for s in self._subscribers if s.extension_name != extension_name]
            self._subscribers.append(sub)
        for stale in old:
            stale.close(0)
        return sub

    def subscribers(self) -> Iterable[Subscriber]:
        with self._lock:
            return list(self._subscribers)

    def _count_drop(self, record_type: str) -> None:
        with self._drops_lock:
            self._dropped_types[record_type] += 1

    def dropped_types(self) -> collections.Counter:
        """Records every subscription of this bus lost to a lagging subscriber, by type."""
        with self._drops_lock:
            return collections.Counter(self._dropped_types)

    def flush(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for sub in self.subscribers():
            sub.flush(max(0.0, deadline - time.monotonic()))

    def close_all(self, timeout: float = 0.3) -> None:
        with self._lock:
            subscribers, self._subscribers = self._subscribers, []
        for sub in subscribers:
            sub.close(timeout)
