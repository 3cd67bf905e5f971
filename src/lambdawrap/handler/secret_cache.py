"""Secrets declared in LAMBDAWRAP_SECRETS, on the handler side.

At boot (before the handler module is imported) the values come from the companion over the
local channel and are injected into os.environ, so module-level code can read them. Only if the
companion is absent does the boot fetch them itself with boto3. Afterwards, `get(name)` returns
the cached value at once; a value older than LAMBDAWRAP_SECRETS_TTL is refreshed in the
background (stale-while-revalidate), never on the caller's path.

    from lambdawrap import secrets
    password = secrets.get("DB_PASSWORD")
"""

from __future__ import annotations

import os
import threading
import time

from lambdawrap.shared import records
from lambdawrap.shared.log import get_logger
from lambdawrap.shared.secret_sources import SecretsError, fetch, make_clients

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Any, Mapping

__all__ = ["SecretsError", "get"]

CONNECT_RETRY_S = 0.005

# env name -> (value, when it was fetched from AWS, epoch seconds: the monotonic clock may not
# advance while the environment is frozen, and a TTL is about real time).
_cache: dict[str, tuple[str, float]] = {}
_config: dict[str, Any] = {}


class _Refresher:
    """One background thread for the whole process, woken when a value is stale (never the
    caller's wait), and rebuilt in a forked child, where threads do not survive."""

    def __init__(self) -> None:
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._wake = threading.Event()
        self._thread = None
        self._lock = threading.Lock()

    def wake(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lambdawrap-secrets-refresh", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                answer = _load(_config["sources"], _config["channel"], _config["timeout_s"], _config["companion"], _config["region"])
                _store(answer["values"], answer.get("ages"))
            except Exception:  # noqa: BLE001 - keep serving the cached values
                get_logger().warning("lambdawrap: refreshing secrets failed; serving cached values", exc_info=True)


_refresher = _Refresher()


def get(name: str, default: str | None = None) -> str | None:
    """The current value of a declared secret (by its env name), or `default`."""
    entry = _cache.get(name)
    if entry is None:
        return default
    value, fetched_at = entry
    if _config and time.time() - fetched_at >= _config.get("ttl", 300.0):
        _refresher.wake()
    return value


def _store(values: Mapping[str, str], ages: Any = None) -> None:
    """Cache values; `ages` (seconds, by name) say how old the companion's copies already were,
    so that a value is never served for longer than one TTL after it was fetched."""
    now = time.time()
    ages = ages if isinstance(ages, dict) else {}
    for name, value in values.items():
        age = ages.get(name)
        _cache[name] = (value, now - (age if isinstance(age, (int, float)) and 0 <= age < 86400 * 365 else 0.0))


def _ask_companion(channel: Any, timeout_s: float) -> dict | None:
    """The companion's answer, retrying the connection while it starts; None if it never answers."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            answer = channel.request(records.secrets_request(int(left * 1000)), left)
        except (FileNotFoundError, ConnectionRefusedError):
            time.sleep(CONNECT_RETRY_S)  # the companion registered but is still opening its socket
            continue
        except OSError:
            return None
        if isinstance(answer, dict) and isinstance(answer.get("values"), dict):
            return answer
        return None


def _fetch_directly(sources: list, region: str) -> dict:
    values, errors = {}, {}
    client = make_clients("boot", region)
    for source in sources:
        try:
            values[source.env_name] = fetch(source, client)
        except SecretsError as exc:
            errors[source.env_name] = str(exc)
    return {"values": values, "errors": errors}


def _load(sources: list, channel: Any, timeout_s: float, companion: bool, region: str) -> dict:
    answer = _ask_companion(channel, timeout_s) if companion else None
    if answer is None:
        if companion:
            get_logger().warning("lambdawrap: no secrets from the companion within %.0f ms; fetching them directly", timeout_s * 1000)
        answer = _fetch_directly(sources, region)
    return answer


def load_declared(settings: Any, channel: Any, companion_expected: bool) -> list:
    """Fetch the declared secrets and inject them into os.environ.

    Returns the failures (messages naming the secret, never a value); with
    LAMBDAWRAP_SECRETS_REQUIRED the caller turns them into an init error.
    """
    sources = settings.secrets
    failures: list = []
    if not sources:
        return failures
    timeout_s = settings.secrets_timeout_ms / 1000
    _config.update(sources=sources, channel=channel, timeout_s=timeout_s, companion=companion_expected, region=settings.region, ttl=settings.secrets_ttl_s)
    answer = _load(sources, channel, timeout_s, companion_expected, settings.region)
    for name, value in answer["values"].items():
        if isinstance(name, str) and isinstance(value, str):
            os.environ[name] = value
    _store({k: v for k, v in answer["values"].items() if isinstance(v, str)}, answer.get("ages"))
    failures.extend(str(error) for error in answer.get("errors", {}).values())
    for source in sources:
        name = source.env_name
        if name not in answer["values"] and name not in answer.get("errors", {}):
            failures.append(f"secret {source.describe()} was not loaded")
    return failures

