"""Secrets declared in LAMBDAWRAP_SECRETS, on the handler side.

At boot (before the handler module is imported) the values come from the companion over the
local channel and are injected into os.environ, so module-level code can read them. Only if the
companion is absent does the boot fetch them itself with boto3. Afterwards, `get(name)` returns
the cached value at once; a value fetched longer than LAMBDAWRAP_SECRETS_TTL ago is refreshed
in the background (stale-while-revalidate) by one worker thread, never on the caller's path.

    from lambdawrap import secrets
    password = secrets.get("DB_PASSWORD")
"""

from __future__ import annotations

import os
import sys
import time
from _thread import get_ident

from lambdawrap.shared import records
from lambdawrap.shared.framing import MAX_RECORD_BYTES, encode
from lambdawrap.shared.log import get_logger
from lambdawrap.shared.refresh_worker import RefreshWorker
from lambdawrap.shared.secret_sources import OutOfTime, SecretsError, call, fetch_failed, make_clients, source_key, value_of

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Any, Mapping

__all__ = ["SecretsError", "get"]

CONNECT_RETRY_S = 0.005
# How soon a value the companion handed over already at its TTL (its own refresh still running)
# is asked for again.
RETRY_STALE_S = 0.25
# How soon a refresh that got no answer is tried again (at most; a shorter TTL wins). Not at
# once: a companion that is gone would be polled without end.
RETRY_FAILED_S = 5.0
# What the boot may spend fetching the secrets itself when the companion did not answer: the
# init phase has 10 s, and a Secrets Manager that accepts and never answers must not take them.
DIRECT_FETCH_BUDGET_S = 3.0
# All the boot may spend on secrets (the wait for the companion and its own fetch together)
# outside Managed Instances, whose init may take minutes: init has 10 s, and an init that
# outlasts them is timed out and run again inside the first invocation, each cold start then
# costing both (a LAMBDAWRAP_SECRETS_TIMEOUT_MS of 10 s or more, and a slow or unreachable
# Secrets Manager, as from a VPC without a route to it).
INIT_SECRETS_BUDGET_S = 8.0
# The companion is asked to answer this much before the boot stops waiting: an answer made at
# the very deadline comes too late, and the boot would fetch again what the companion could not.
ANSWER_MARGIN_S = 0.1
# How long the boot waits for the companion to take the values it fetched itself (see
# _tell_companion): one round trip on a live companion, or its start on a busy machine.
TELL_TIMEOUT_S = 1.0
# Linux refuses to start a process whose environment holds one `name=value` of this many bytes
# or more (E2BIG: MAX_ARG_STRLEN counts the NUL that ends it): a value this large breaks every
# child process the function starts.
MAX_VARIABLE_BYTES = 128 * 1024
# What Lambda sets where the function's configuration sets no TZ: a declared TZ replaces nothing
# of the configuration's.
_PLATFORM_TZ = ("TZ", ":UTC")

# env name -> (value, when its refresh is due, epoch seconds: the monotonic clock may not advance
# while the environment is frozen, and a TTL is about real time). A declared secret that has no
# value yet (it failed at boot) is here with None, so that reading it asks again.
_cache: dict[str, tuple[str | None, float]] = {}
_config: dict[str, Any] = {}
# The values put in os.environ at boot (a refresh does not replace them there).
_injected: list = []
# env name -> fetches from AWS by this process that failed in a row (the boot fetched the secrets
# itself): each doubles the wait before the next, up to the TTL, as the companion's store does.
_failures: dict[str, int] = {}


def get(name: str, default: str | None = None) -> str | None:
    """The current value of a declared secret (by its env name), or `default`."""
    entry = _cache.get(name)
    if entry is None:
        return default
    value, due_at = entry
    if _config and time.time() >= due_at:
        _worker.wake()
    return default if value is None else value


def held_values() -> list:
    """The declared secrets' values this process holds: the current ones, and those put in
    os.environ at boot, which stay there after a rotation (and in what the function prints)."""
    current = [value for value, _ in list(_cache.values()) if value]
    return current + [value for value in _injected if value not in current]


def _store(values: Mapping[str, str], ages: Any = None) -> None:
    # A value is due for refresh one TTL after its fetch from AWS, not after its arrival here:
    # counted from here, the companion's cache and this one in a row would let a value be two
    # TTLs old.
    now = time.time()
    ttl_s = _config.get("ttl", 300.0)
    for name, value in values.items():
        age = (ages if isinstance(ages, dict) else {}).get(name)
        if not isinstance(age, (int, float)) or not 0 <= age < 86400 * 365:
            age = 0.0
        _cache[name] = (value, now - age + ttl_s)


def _refresh() -> None:
    values: dict = {}
    try:
        if _config["companion"]:
            # The companion is the one cache: when it does not answer (busy, or this process was
            # frozen while waiting), keep the values and ask it again later.
            answer = _ask_companion(_config["channel"], _config["timeout_s"]) or {}
        else:
            answer = _fetch_directly(_config["sources"], _config["region"])
            _warn_new_failures(answer["errors"])
            if _config.get("companion_expected") and answer.get("values"):
                _tell_companion(_config["channel"], answer["values"], TELL_TIMEOUT_S)
        values = {k: v for k, v in (answer.get("values") or {}).items() if isinstance(k, str) and isinstance(v, str)}
        _store(values, answer.get("ages"))
    except Exception:  # noqa: BLE001 - keep serving the cached values
        get_logger().warning("lambdawrap: refreshing secrets failed; serving cached values", exc_info=True)
    now = time.time()
    for name in list(_cache):
        if name in values:
            _failures.pop(name, None)
        else:
            _cache[name] = (_cache[name][0], now + _retry_in_s(name))


def _warn_new_failures(errors: Mapping[str, str]) -> None:
    """One warning for each secret whose refresh from AWS failed where the last one had not (the
    messages name the secret and the error, never a value). Not again while it keeps failing: its
    refreshes back off (_retry_in_s) but go on for the environment's life, and the log is the
    function's; the companion, too, says each failure once. A secret that failed at boot was
    named there."""
    for name, error in errors.items():
        if not _failures.get(name):
            get_logger().warning("lambdawrap: refreshing a secret failed (%s); serving the cached value", error)


def _retry_in_s(name: str) -> float:
    """How soon a secret that has no fresh value is asked for again: RETRY_FAILED_S (a shorter
    TTL wins). Fetched from AWS by this process, the wait doubles with each failure in a row, up
    to the TTL: a secret deleted or denied for good, read at every invocation, must not cost a
    GetSecretValue of every declared secret each 5 s all day. The companion holds its own
    failures so (it is asked, not AWS)."""
    ttl_s = _config.get("ttl", 300.0)
    retry_s = min(ttl_s, RETRY_FAILED_S)
    if _config.get("companion", True):
        return retry_s
    failures = _failures[name] = _failures.get(name, 0) + 1
    return min(retry_s * 2 ** min(failures - 1, 20), max(retry_s, ttl_s))


_worker = RefreshWorker("lambdawrap-secrets-refresh", _refresh, RETRY_STALE_S)


def _ask_companion(channel: Any, timeout_s: float) -> dict | None:
    """The companion's answer, retrying the connection while it starts; None if it never answers."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            answer = channel.request(records.secrets_request(int(max(0.0, left - ANSWER_MARGIN_S) * 1000)), left)
        except (FileNotFoundError, ConnectionRefusedError):
            time.sleep(CONNECT_RETRY_S)  # the companion registered but is still opening its socket
            continue
        except OSError:
            return None
        # An answer the companion marks unavailable (its first load not done in time) gives no
        # secrets: the boot then fetches them itself, as when the companion does not answer.
        if isinstance(answer, dict) and isinstance(answer.get("values"), dict) and not answer.get("unavailable"):
            return answer
        return None


def _tell_companion(channel: Any, values: dict, timeout_s: float) -> None:
    """Give the companion the values this process fetched itself, waiting up to timeout_s for it
    to take them: it keeps them out of what it exports, as it does those it fetches, and its own
    fetch may end long after the function's module has logged one. One value a request: a
    secret may be 64 KB, and the companion reads no record over MAX_RECORD_BYTES."""
    deadline = time.monotonic() + timeout_s
    for name, value in values.items():
        request = records.secrets_fetched({name: value})
        if len(encode(request)) > MAX_RECORD_BYTES:
            continue  # over 256 KB: no secret's value is, nor a JSON key's of one
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                channel.request(request, left)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                time.sleep(CONNECT_RETRY_S)  # the companion is still opening its socket
            except Exception:  # noqa: BLE001 - its own fetch still teaches it, later
                return


def _fetch_directly(sources: list, region: str, budget_s: float | None = None) -> dict:
    """Fetch with boto3 in this process, within `budget_s` in all when given (at boot); what
    botocore logs of these calls is dropped (see quiet_own_calls): its debug lines show the
    values. One call per request (`source_key`), as the companion makes: declarations of one
    secret's keys (a user name and its password) fetched apart would, across a rotation,
    pair the old one's with the new one's."""
    values, errors = {}, {}
    if budget_s is None:
        client = _refresh_clients(region)
    else:
        client = make_clients("boot", region, deadline=time.monotonic() + budget_s)
    by_request: dict = {}
    for source in sources:
        by_request.setdefault(source_key(source), []).append(source)
    with quiet_own_calls():
        for key, declared in by_request.items():
            try:
                answer = call(key, client)
            except OutOfTime:
                errors.update((s.env_name, f"secret {s.describe()} was not fetched within the boot's {round(budget_s, 1):g} s") for s in declared)
                continue
            except Exception as exc:  # noqa: BLE001 - botocore's errors are many; each becomes one message a secret
                errors.update((s.env_name, str(fetch_failed(s, exc))) for s in declared)
                continue
            for source in declared:
                try:
                    values[source.env_name] = value_of(source, answer)
                except SecretsError as exc:
                    errors[source.env_name] = str(exc)
    return {"values": values, "errors": errors}


def _refresh_clients(region: str) -> Any:
    """The refreshes' AWS clients, made once (on the worker's thread, the only one that uses
    them): a session and its clients cost ~70 ms of CPU, a second beside the handler at 128 MB,
    at every TTL."""
    clients = _config.get("clients")
    if clients is None:
        clients = _config["clients"] = make_clients("boot", region)
    return clients


def _forget_clients() -> None:
    _config.pop("clients", None)  # a forked child makes its own: their connections are the parent's


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_clients)


# The libraries whose debug lines would show what this process fetches (botocore logs each
# response's body), and the threads whose records in them are dropped: the boot's, and the
# refresh worker's while it fetches. The function's own calls log as it configured.
_QUIET_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")
# Made here first when botocore has not made them yet (it makes some only with a first client):
# the response bodies are logged by botocore.parsers.
_QUIET_MADE_FIRST = ("botocore.parsers", "botocore.endpoint", "botocore.hooks", "botocore.httpsession", "botocore.retryhandler", "botocore.auth", "urllib3.connectionpool")
_quiet_threads: set = set()


class _OwnCallsFilter:
    """A logging filter (duck-typed: logging calls `filter`) dropping our threads' records."""

    def filter(self, record: Any) -> bool:
        # The thread logging is the one calling: a logger's filters run on it. Not record.thread,
        # which is None where the function set logging.logThreads = False.
        return get_ident() not in _quiet_threads


_OWN_CALLS_FILTER = _OwnCallsFilter()


def making_own_calls() -> bool:
    """Whether this thread is fetching secrets for lambdawrap (its calls are not the function's);
    asked for every outgoing call the function makes."""
    return bool(_quiet_threads) and get_ident() in _quiet_threads


class quiet_own_calls:
    """While in it, what the libraries log on this thread is dropped. A filter applies to its
    own logger's records only (not to its children's), so it goes on every logger of those
    libraries, each time: botocore makes some of them as it goes."""

    def __enter__(self) -> "quiet_own_calls":
        import logging

        # list(): copied in one step, as the function's threads may make loggers meanwhile (a
        # refresh runs beside the handler; iterated as it grew, the dict raised).
        names = {n for n in list(logging.Logger.manager.loggerDict) if n.split(".", 1)[0] in _QUIET_LOGGERS}
        for name in names.union(_QUIET_MADE_FIRST):
            logger = logging.getLogger(name)
            if _OWN_CALLS_FILTER not in logger.filters:
                logger.addFilter(_OWN_CALLS_FILTER)
        self._thread = get_ident()
        _quiet_threads.add(self._thread)
        return self

    def __exit__(self, *exc: object) -> None:
        _quiet_threads.discard(self._thread)


def _load(sources: list, channel: Any, timeout_s: float, companion: bool, region: str, budget_s: float | None = None) -> tuple:
    """(answer, whether the companion gave it), within `budget_s` in all when given."""
    started = time.monotonic()
    if budget_s is not None:
        timeout_s = min(timeout_s, budget_s)
    answer = _ask_companion(channel, timeout_s) if companion else None
    if answer is not None:
        return answer, True
    direct_s = DIRECT_FETCH_BUDGET_S
    if budget_s is not None:
        direct_s = min(direct_s, budget_s - (time.monotonic() - started))
        if direct_s < ANSWER_MARGIN_S:
            reason = f"init's {budget_s:.0f} s for secrets were spent waiting for the companion"
            return {"values": {}, "errors": {s.env_name: f"secret {s.describe()} was not fetched: {reason}" for s in sources}}, False
    if companion:
        get_logger().warning("lambdawrap: no secrets from the companion within %.0f ms; fetching them directly", timeout_s * 1000)
    with _functions_sys_path():
        return _fetch_directly(sources, region, direct_s), False


class _functions_sys_path:
    """While in it, the function's folder (LAMBDA_TASK_ROOT) is first on sys.path, as the
    runtime's bootstrap puts it before the handler module loads. The boot runs before that:
    without it, the boto3 it imports (and botocore, urllib3...) would be the runtime's, and stay
    in sys.modules, so the function's own `import boto3` would get those instead of the ones it
    bundles."""

    def __enter__(self) -> "_functions_sys_path":
        root = os.environ.get("LAMBDA_TASK_ROOT", "")
        self._added = root if root and root not in sys.path else ""
        if self._added:
            sys.path.insert(0, self._added)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._added and self._added in sys.path:
            sys.path.remove(self._added)


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
    _config.update(sources=sources, channel=channel, timeout_s=timeout_s, region=settings.region, ttl=settings.secrets_ttl_s, companion_expected=companion_expected)
    budget_s = None if settings.managed_instances else INIT_SECRETS_BUDGET_S
    started = time.monotonic()
    answer, from_companion = _load(sources, channel, timeout_s, companion_expected, settings.region, budget_s)
    if companion_expected and not from_companion and answer["values"]:
        # Within init's budget for secrets, which the wait and the fetch may have spent.
        left_s = TELL_TIMEOUT_S if budget_s is None else budget_s - (time.monotonic() - started)
        _tell_companion(channel, answer["values"], min(TELL_TIMEOUT_S, left_s))
    # Refreshes go where this answer came from: boto3 enters this process only if boot needed it.
    _config["companion"] = from_companion
    by_name = {source.env_name: source for source in sources}
    for name, value in answer["values"].items():
        if isinstance(name, str) and isinstance(value, str):
            left_out = _inject(name, value, by_name.get(name))
            if left_out:
                # Loaded, and served by secrets.get: no failure, even where secrets are required.
                get_logger().warning("lambdawrap: %s; it is not in os.environ", left_out)
    _store({k: v for k, v in answer["values"].items() if isinstance(v, str)}, answer.get("ages"))
    _await_missing(sources)
    failures.extend(str(error) for error in answer.get("errors", {}).values())
    for source in sources:
        name = source.env_name
        if name not in answer["values"] and name not in answer.get("errors", {}):
            failures.append(f"secret {source.describe()} was not loaded")
    return failures


def _await_missing(sources: list) -> None:
    """Mark the declared secrets the boot got no value for: `get` asks for them again (a
    throttled or briefly denied secret must not stay missing for the environment's life when
    no other secret's refresh happens to bring it)."""
    now = time.time()
    for source in sources:
        if source.env_name not in _cache:
            _cache[source.env_name] = (None, now + _retry_in_s(source.env_name))


def _inject(name: str, value: str, source: Any) -> str | None:
    """Put one secret into os.environ; the failure, naming it (never its value), if it cannot
    go there (`secrets.get` still has it)."""
    described = source.describe() if source is not None else name
    if name in os.environ and os.environ[name] != value and (name, os.environ[name]) != _PLATFORM_TZ:
        # The function's configuration set the variable too: the declared secret wins. (Not
        # TZ as Lambda sets it where the configuration does not.)
        get_logger().warning("lambdawrap: secret %s replaces the value %s had in the function's configuration", described, name)
    try:
        os.environ[name] = value
        _injected.append(value)
    except UnicodeEncodeError:
        return f"secret {described} holds text the environment cannot (an unpaired surrogate, as JSON's \\ud800 escape makes): read it with secrets.get"
    except ValueError:
        return f"secret {described} holds a character the environment cannot (NUL): read it with secrets.get"
    if name == "TZ" and hasattr(time, "tzset"):
        # The C library read the zone as the process started: a configured TZ is in effect from
        # there, a declared one only once it is read again.
        time.tzset()
    if len(name) + 1 + len(value.encode("utf-8", "surrogatepass")) >= MAX_VARIABLE_BYTES:
        get_logger().warning("lambdawrap: secret %s is 128 KiB or more with its name: with it in the environment, starting a child process fails (Argument list too long)", described)
    return None
