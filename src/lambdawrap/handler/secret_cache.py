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
from lambdawrap.shared.secret_sources import OutOfTime, SecretsError, call, error_code, fetch_failed, make_clients, source_key, value_of

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Any, Mapping

__all__ = ["SecretsError", "get"]

CONNECT_RETRY_S = 0.005
# How soon a value the companion handed over already at its TTL (its own refresh still running)
# is asked for again: doubling while it stays so (AWS failing), up to RETRY_FAILED_S.
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
# Where this process fetches from AWS itself, the least time between two fetches of a secret (a
# TTL of 0 would fetch at every refresh, four times a second), as the companion keeps.
DIRECT_MIN_REFRESH_S = 1.0
# Where the boot fetched by itself, how long a refresh waits for the companion before it does
# too: one that runs answers in milliseconds, and one that never started is polled meanwhile.
COMPANION_PROBE_S = 0.25
# The boot's tries of a call AWS throttles, and the wait before the second (doubling): within its
# budget, as botocore's standard retry mode would, which its one-attempt clients do not.
BOOT_TRIES = 3
BOOT_RETRY_WAIT_S = 0.1
# The error codes Secrets Manager and Parameter Store throttle with (botocore's standard retry
# mode retries these too).
THROTTLED_CODES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded", "RequestThrottledException"})
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
# The companion's answers in a row that held a value already at its TTL.
_stale_answers = 0
# The companion's refreshes in a row that got no answer from it (busy, frozen while asked, gone).
_unanswered = 0


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
    if not _config.get("companion", True):
        ttl_s = max(ttl_s, DIRECT_MIN_REFRESH_S)
    for name, value in values.items():
        age = (ages if isinstance(ages, dict) else {}).get(name)
        if not isinstance(age, (int, float)) or not 0 <= age < 86400 * 365:
            age = 0.0
        _cache[name] = (value, now - age + ttl_s)


def _refresh() -> float | None:
    """Refresh the values due; how soon to run again unasked (None: at the next due read)."""
    global _stale_answers, _unanswered
    values: dict = {}
    asked = None  # the names asked of AWS, where this process fetches itself; else all
    unanswered = False
    try:
        answer = None
        if _config["companion"] or _config.get("companion_expected"):
            # The companion is the one cache: when it does not answer (busy, or this process was
            # frozen while waiting), keep the values and ask it again later. Asked also where
            # the boot fetched by itself (the companion slow to start): once it answers whole,
            # it is asked from then on, not AWS from the function's process at every TTL.
            # A refresh runs on its own thread: it waits at least the probe's time, whatever
            # init's wait (LAMBDAWRAP_SECRETS_TIMEOUT_MS=0 would never ask it).
            waited_s = max(_config["timeout_s"], COMPANION_PROBE_S) if _config["companion"] else COMPANION_PROBE_S
            # After an ask it did not answer, one connect: a companion gone for good would
            # otherwise be tried every 5 ms for the whole wait, at every one of these asks.
            answer = _ask_companion(_config["channel"], waited_s, retry_connect=not _unanswered)
            if answer is not None and not answer.get("unavailable"):
                _config["companion"] = True
        if _config["companion"]:
            unanswered = answer is None
            answer = answer or {}
        else:
            # Only those due: one held back after a failure (or fresh) is not asked again with
            # the others, at each refresh a secret with a short TTL makes.
            now = time.time()
            due = [source for source in _config["sources"] if _cache.get(source.env_name, (None, 0.0))[1] <= now]
            asked = {source.env_name for source in due}
            answer = _fetch_directly(due, _config["region"])
            _warn_new_failures(answer["errors"])
            if _config.get("companion_expected") and answer.get("values"):
                _tell_companion(_config["channel"], answer["values"], TELL_TIMEOUT_S)
        values = {k: v for k, v in (answer.get("values") or {}).items() if isinstance(k, str) and isinstance(v, str)}
        _store(values, answer.get("ages"))
    except Exception:  # noqa: BLE001 - keep serving the cached values
        get_logger().warning("lambdawrap: refreshing secrets failed; serving cached values", exc_info=True)
    now = time.time()
    for name in list(_cache):
        if asked is not None and name not in asked:
            continue
        if name in values:
            _failures.pop(name, None)
        else:
            _cache[name] = (_cache[name][0], now + _retry_in_s(name))
    stale = [name for name in values if _cache[name][1] <= now]
    ttl_s = _config.get("ttl", 300.0)
    _unanswered = _unanswered + 1 if unanswered else 0
    if unanswered and ttl_s >= DIRECT_MIN_REFRESH_S:
        # The companion did not answer (busy, or gone): asked again on the timer, as a value
        # handed over stale is, not at the next read, which would be served the old value once
        # more; after 5 s (or the TTL, if shorter), the wait doubling while it stays so, up to
        # the TTL or 5 s, whichever is longer (one gone for good costs a failed connect now and
        # then, and only while the environment runs).
        return min(min(ttl_s, RETRY_FAILED_S) * 2 ** min(_unanswered - 1, 10), max(ttl_s, RETRY_FAILED_S))
    # Under the companion's least time between two refreshes (1 s), almost every answer is past
    # the TTL: asked again at the reads, as before, not on a timer of its own.
    if not stale or ttl_s < DIRECT_MIN_REFRESH_S:
        _stale_answers = 0
        return None
    # Handed over at its TTL, the companion's refresh of it under way (or failing): asked again
    # soon, not at the next read, which would be served it once more (minutes later, in a
    # function invoked every few minutes); the wait doubling while it stays so, reads or not.
    _stale_answers += 1
    wait_s = min(RETRY_STALE_S * 2 ** min(_stale_answers - 1, 10), RETRY_FAILED_S)
    for name in stale:
        _cache[name] = (_cache[name][0], now + wait_s)
    return wait_s


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
    if _config.get("companion", True):
        return min(ttl_s, RETRY_FAILED_S)
    # From AWS, RETRY_FAILED_S at least, whatever the TTL: with a TTL of 0 a secret denied for
    # good was asked for four times a second, every declared secret with it.
    failures = _failures[name] = _failures.get(name, 0) + 1
    return min(RETRY_FAILED_S * 2 ** min(failures - 1, 20), max(RETRY_FAILED_S, ttl_s))


_worker = RefreshWorker("lambdawrap-secrets-refresh", _refresh, RETRY_STALE_S)


def _ask_companion(channel: Any, timeout_s: float, retry_connect: bool = True) -> dict | None:
    """The companion's answer, retrying the connection while it starts (`unavailable` when its
    first load had not ended: what it has so far); None if it never answers."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            answer = channel.request(records.secrets_request(int(max(0.0, left - ANSWER_MARGIN_S) * 1000)), left)
        except (FileNotFoundError, ConnectionRefusedError):
            if not retry_connect:
                return None
            time.sleep(CONNECT_RETRY_S)  # the companion registered but is still opening its socket
            continue
        except OSError:
            return None
        # An answer the companion marks unavailable (its first load not done in time) holds the
        # secrets it has so far: the caller fetches the rest itself.
        if isinstance(answer, dict) and isinstance(answer.get("values"), dict):
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
    if not sources:
        return {"values": values, "errors": errors}  # nothing to ask: no boto3 imported for it
    try:
        if budget_s is None:
            client = _refresh_clients(region)
            fetch = call
        else:
            deadline = time.monotonic() + budget_s
            client = make_clients("boot", region, deadline=deadline)
            fetch = lambda key, client: _call_again_if_throttled(key, client, deadline)  # noqa: E731
    except Exception as exc:  # noqa: BLE001 - no boto3 this process can import (a broken one bundled): each secret named, asked again later
        return {"values": values, "errors": {s.env_name: str(fetch_failed(s, exc)) for s in sources}}
    by_request: dict = {}
    for source in sources:
        by_request.setdefault(source_key(source), []).append(source)
    with quiet_own_calls():
        for key, declared in by_request.items():
            try:
                answer = fetch(key, client)
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


def _call_again_if_throttled(key: tuple, client: Any, deadline: float) -> Any:
    """`call`, made again while AWS answers "not now" (throttling, its own 5xx) and the boot's
    budget has room: its clients make one attempt each, to keep within it, and the boot fetches
    when AWS is busiest (many environments starting at once), so one throttled call made the
    secret fail, with most of the budget unspent."""
    for attempt in range(BOOT_TRIES):
        try:
            return call(key, client)
        except OutOfTime:
            raise
        except Exception as exc:  # noqa: BLE001 - botocore's errors: only "not now" is tried again
            wait_s = BOOT_RETRY_WAIT_S * 2**attempt
            if attempt + 1 == BOOT_TRIES or not _not_now(exc) or time.monotonic() + wait_s >= deadline:
                raise
            time.sleep(wait_s)
    raise AssertionError("unreachable")


def _not_now(exc: BaseException) -> bool:
    """Whether AWS answered "not now": throttled, or an error of its own (a 5xx)."""
    status = ((getattr(exc, "response", None) or {}).get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return error_code(exc) in THROTTLED_CODES or (isinstance(status, int) and status >= 500)


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
    # What the companion has already (a slow secret held back its first load) is not asked of
    # AWS again: a throttled or slow AWS is when this fallback runs.
    have = {k: v for k, v in (answer or {}).get("values", {}).items() if isinstance(k, str) and isinstance(v, str)}
    missing = [source for source in sources if source.env_name not in have]
    if answer is not None and (not answer.get("unavailable") or not missing):
        return answer, True
    direct_s = DIRECT_FETCH_BUDGET_S
    if budget_s is not None:
        direct_s = min(direct_s, budget_s - (time.monotonic() - started))
        if direct_s < ANSWER_MARGIN_S:
            reason = f"init's {budget_s:.0f} s for secrets were spent waiting for the companion"
            return {"values": have, "errors": {s.env_name: f"secret {s.describe()} was not fetched: {reason}" for s in missing}}, False
    if companion:
        get_logger().warning("lambdawrap: %d of %d secrets from the companion within %.0f ms; fetching the rest directly", len(have), len(have) + len(missing), timeout_s * 1000)
    with _functions_sys_path():
        fetched = _fetch_directly(missing, region, direct_s)
    fetched["values"].update(have)
    if have:
        fetched["ages"] = {name: age for name, age in ((answer or {}).get("ages") or {}).items() if name in have}
    return fetched, False


class _functions_sys_path:
    """While in it, the folders the runtime's bootstrap puts first on sys.path before the
    handler module loads are there: the function's (LAMBDA_TASK_ROOT) and, where PYTHONPATH was
    unset, the layers' (python/lib/pythonX.Y/site-packages, python/). The boot runs before that:
    without them, the boto3 it imports (and botocore, urllib3...) would be the runtime's, and
    stay in sys.modules, so the function's own `import boto3` would get those instead of the
    ones it bundles or a layer of its brings."""

    def __enter__(self) -> "_functions_sys_path":
        env = os.environ
        folders = [env.get("LAMBDA_TASK_ROOT", "")]
        boot_dir = env.get("LAMBDAWRAP_BOOT_DIR", "")
        if boot_dir and env.get("LAMBDAWRAP_PYTHONPATH_UNSET") == "1":
            # Every layer unzips beside ours: the wrapper's python/lambdawrap_boot names it.
            layers = os.path.dirname(boot_dir.rstrip("/"))
            folders += [os.path.join(layers, "lib", "python%d.%d" % sys.version_info[:2], "site-packages"), layers]
        self._added = [folder for folder in folders if folder and folder not in sys.path]
        sys.path[0:0] = self._added
        # The standard modules boto3 loads first (decimal, say) are looked up past them: the
        # runtime has imported those before it adds the folders, where a layer's decimal.py
        # would otherwise stand in for the standard one, for the function too.
        from importlib.machinery import PathFinder  # imported before the finder is asked

        self._finder = _StandardFirst(self._added, PathFinder)
        sys.meta_path.insert(0, self._finder)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)
        for folder in self._added:
            if folder in sys.path:
                sys.path.remove(folder)


class _StandardFirst:
    """A meta path finder for the standard library's top-level modules that skips `folders`."""

    def __init__(self, folders: list, path_finder: Any) -> None:
        self._folders = folders
        self._path_finder = path_finder

    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        if path is not None or name not in sys.stdlib_module_names:
            return None
        return self._path_finder.find_spec(name, [entry for entry in sys.path if entry not in self._folders])


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
    configured = os.environ.get(name)
    # The function's configuration set the variable too (not TZ as Lambda sets it where the
    # configuration does not): the declared secret wins.
    configured = None if configured == value or (name, configured) == _PLATFORM_TZ else configured
    try:
        os.environ[name] = value
        _injected.append(value)
    except (UnicodeEncodeError, ValueError) as exc:
        # The configured value (a placeholder, maybe) must not stand for the secret.
        removed = "; the value the function's configuration gave it is removed" if configured is not None and os.environ.pop(name, None) is not None else ""
        if isinstance(exc, UnicodeEncodeError):
            return f"secret {described} holds text the environment cannot (an unpaired surrogate, as JSON's \\ud800 escape makes): read it with secrets.get{removed}"
        return f"secret {described} holds a character the environment cannot (NUL): read it with secrets.get{removed}"
    if configured is not None:
        get_logger().warning("lambdawrap: secret %s replaces the value %s had in the function's configuration", described, name)
    if name == "TZ" and hasattr(time, "tzset"):
        # The C library read the zone as the process started: a configured TZ is in effect from
        # there, a declared one only once it is read again.
        time.tzset()
    if len(name) + 1 + len(value.encode("utf-8", "surrogatepass")) >= MAX_VARIABLE_BYTES:
        get_logger().warning("lambdawrap: secret %s is 128 KiB or more with its name: with it in the environment, starting a child process fails (Argument list too long)", described)
    return None
