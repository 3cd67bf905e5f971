"""Secrets in the companion: fetched concurrently with boto3 right after registration, kept
with a TTL, refreshed in the background (stale-while-revalidate), and served to the handler
side over the local channel and to the function over the 2773 HTTP API."""

from __future__ import annotations

import threading
import time

from lambdawrap.shared.log import get_logger
from lambdawrap.shared.secret_sources import SecretsError, SecretSource, fetch, make_clients
from lambdawrap.shared.settings import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

MAX_PARALLEL_FETCHES = 8
MIN_REFRESH_S = 1.0


class _Entry:
    __slots__ = ("value", "error", "fetched_at")

    def __init__(self, value: Any = None, error: str | None = None, fetched_at: float = 0.0) -> None:
        self.value = value
        self.error = error
        self.fetched_at = fetched_at


class SecretStore:
    """Declared secrets by env name, plus raw API answers cached for the 2773 API."""

    def __init__(self, settings: Settings, clients: Callable[[str], Any] | None = None) -> None:
        self.ttl_s = settings.secrets_ttl_s
        self._region = settings.region
        self.sources = list(settings.secrets)
        self._clients = clients
        self._declared: dict[str, _Entry] = {}
        self._api_cache: dict[tuple, _Entry] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._refreshing: set = set()
        self.fetches = 0
        if not self.sources:
            self._ready.set()

    def client(self, service: str) -> Any:
        if self._clients is None:
            self._clients = make_clients("companion", self._region)
        return self._clients(service)

    def start(self) -> None:
        """Fetch everything declared now (in parallel), then keep it fresh, on named threads."""
        if self.sources:
            threading.Thread(target=self._load_then_refresh, name="lambdawrap-secrets", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _fetch_declared(self, source: SecretSource) -> None:
        entry = _Entry(fetched_at=time.monotonic())
        try:
            entry.value = fetch(source, self.client)
        except SecretsError as exc:
            entry.error = str(exc)
        with self._lock:
            self.fetches += 1
            previous = self._declared.get(source.env_name)
            if entry.error and previous is not None and previous.error is None:
                # Keep serving the last good value when a refresh fails; say so once.
                get_logger().warning("lambdawrap: refreshing %s failed, keeping the cached value: %s", source.env_name, entry.error)
                previous.fetched_at = entry.fetched_at
                return
            self._declared[source.env_name] = entry

    def _load_then_refresh(self) -> None:
        try:
            from concurrent.futures import ThreadPoolExecutor  # deferred: only with declared secrets

            with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_FETCHES, len(self.sources)), thread_name_prefix="lambdawrap-secret") as pool:
                list(pool.map(self._fetch_declared, self.sources))
        except Exception:  # noqa: BLE001 - e.g. boto3 missing: every secret reports the failure
            get_logger().exception("lambdawrap: fetching secrets failed")
            with self._lock:
                for source in self.sources:
                    self._declared.setdefault(source.env_name, _Entry(error=f"secret {source.describe()} could not be fetched: boto3 unavailable"))
        finally:
            self._ready.set()
        while not self._stop.wait(max(self.ttl_s, MIN_REFRESH_S)):
            for source in self.sources:
                if self._stop.is_set():
                    return
                self._fetch_declared(source)

    def snapshot(self, timeout_s: float) -> dict:
        """Values and errors of the declared secrets, waiting up to timeout_s for the first load."""
        ready = self._ready.wait(timeout_s)
        with self._lock:
            values = {k: e.value for k, e in self._declared.items() if e.error is None}
            errors = {k: e.error for k, e in self._declared.items() if e.error is not None}
        if not ready:
            for source in self.sources:
                if source.env_name not in values and source.env_name not in errors:
                    errors[source.env_name] = f"secret {source.describe()} was not fetched within {timeout_s * 1000:.0f} ms"
        return {"values": values, "errors": errors, "ttl": self.ttl_s}

    # 2773 API ---------------------------------------------------------------------

    def cached_call(self, key: tuple, call: Callable[[], Any]) -> Any:
        """A cached AWS answer: fresh within the TTL; stale ones are served while one refresh runs."""
        now = time.monotonic()
        with self._lock:
            entry = self._api_cache.get(key)
        if entry is not None and entry.error is None:
            if now - entry.fetched_at >= self.ttl_s:
                self._refresh_in_background(key, call)
            return entry.value
        value = call()  # first use: the caller asked for it, so it waits for it
        with self._lock:
            self.fetches += 1
            self._api_cache[key] = _Entry(value=value, fetched_at=time.monotonic())
        return value

    def _refresh_in_background(self, key: tuple, call: Callable[[], Any]) -> None:
        with self._lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)

        def refresh() -> None:
            try:
                value = call()
                with self._lock:
                    self.fetches += 1
                    self._api_cache[key] = _Entry(value=value, fetched_at=time.monotonic())
            except Exception:  # noqa: BLE001 - keep serving the cached answer
                get_logger().warning("lambdawrap: background refresh of %s failed; serving the cached value", key[0])
            finally:
                with self._lock:
                    self._refreshing.discard(key)

        threading.Thread(target=refresh, name="lambdawrap-secret-refresh", daemon=True).start()
