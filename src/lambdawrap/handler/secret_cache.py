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

_cache: dict[str, tuple[str, float]] = {}  # env name -> (value, fetched at, monotonic)
_config: dict[str, Any] = {}
_refreshing = threading.Event()


def get(name: str, default: str | None = None) -> str | None:
    """The current value of a declared secret (by its env name), or `default`."""
    entry = _cache.get(name)
    if entry is None:
        return default
    value, fetched_at = entry
    if time.monotonic() - fetched_at >= _config.get("ttl", 300.0):
        _refresh_in_background()
    return value


def _store(values: Mapping[str, str]) -> None:
    now = time.monotonic()
    for name, value in values.items():
        _cache[name] = (value, now)


def _refresh_in_background() -> None:
    if _refreshing.is_set() or not _config:
        return
    _refreshing.set()
    threading.Thread(target=_refresh, name="lambdawrap-secrets-refresh", daemon=True).start()


def _refresh() -> None:
    try:
        answer = _load(_config["sources"], _config["channel"], _config["timeout_s"], _config["companion"], _config["region"])
        _store(answer["values"])
    except Exception:  # noqa: BLE001 - keep serving the cached values
        get_logger().warning("lambdawrap: refreshing secrets failed; serving cached values", exc_info=True)
    finally:
        _refreshing.clear()


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
    _store({k: v for k, v in answer["values"].items() if isinstance(v, str)})
    failures.extend(str(error) for error in answer.get("errors", {}).values())
    for source in sources:
        name = source.env_name
        if name not in answer["values"] and name not in answer.get("errors", {}):
            failures.append(f"secret {source.describe()} was not loaded")
    return failures

