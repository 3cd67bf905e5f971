"""Secrets in the companion: one cache of AWS answers, keyed by the request that fetched them
(`secret_sources.secret_key` / `parameter_key`), with one TTL.

A declared secret, the same secret asked for by its id or through any path of the HTTP API,
and the handler side's copy are all read from one entry, fetched once. Declared secrets are
fetched concurrently right after registration and refreshed as they reach the TTL; any other
entry is refreshed when it is asked for after the TTL, the stale answer being served meanwhile
(stale-while-revalidate). Every refresh runs on one worker thread. A failed refresh keeps the
last good answer, at its true age, and is tried again after ERROR_HOLD_S, doubling with each
failure in a row up to the TTL; a name with no good answer keeps its failure for as long
before AWS is asked again."""

from __future__ import annotations

import datetime
import threading
import time

from lambdawrap.shared.log import get_logger
from lambdawrap.shared.refresh_worker import RefreshWorker
from lambdawrap.shared.secret_forms import searched_forms
from lambdawrap.shared.secret_sources import SSM, SecretsError, SecretSource, call, error_code, fetch_failed, make_clients, source_key, value_of
from lambdawrap.shared.settings import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    from lambdawrap.companion.secret_scrub import SecretScrubber

MAX_PARALLEL_FETCHES = 8
MIN_REFRESH_S = 1.0  # a TTL of 0 refreshes declared secrets once a second, not in a busy loop
MAX_ENTRIES = 1000  # answers for undeclared names beyond this evict the oldest of them
FLIGHT_WAIT_S = 30.0  # longer than one boto3 call with its retries (3 x (2 s + 5 s))
# A failure is answered from the cache this long before AWS is asked again: a function retrying
# in a loop (or a forged request repeated) must not spend the role's API quota, which the
# refresh of the declared secrets shares.
ERROR_HOLD_S = 5.0
# The searched forms of the texts the secrets API served, kept so that a secret served at each
# request is not made into its forms at each (a PEM's, a large JSON secret's take milliseconds).
MAX_SERVED_FORM_CHARS = 256 * 1024


def _now() -> float:
    # Ages and holds are counted on the wall clock: Lambda's monotonic clock is reported not to
    # advance while the environment is frozen, where a rarely invoked function spends its TTL.
    # (Waits that last while this process runs, a fetch's flight, stay on the monotonic clock.)
    return time.time()


class _Entry:
    __slots__ = ("answer", "error", "fetched_at", "failures", "retry_at")

    def __init__(self, answer: Any = None, error: BaseException | None = None, fetched_at: float = 0.0) -> None:
        self.answer = answer
        self.error = error
        self.fetched_at = fetched_at
        self.failures = 1 if error is not None else 0  # failed fetches in a row
        self.retry_at = 0.0  # a good answer whose refresh failed: not refreshed before this


class _Flight:
    """A fetch in progress: callers asking for the same key wait for it instead of fetching."""

    __slots__ = ("done", "entry")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.entry: _Entry | None = None


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, bytes):
        import base64  # deferred: only binary secrets need it

        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


class SecretStore:
    def __init__(self, settings: Settings, clients: Callable[[str], Any] | None = None, scrubber: SecretScrubber | None = None) -> None:
        self.ttl_s = settings.secrets_ttl_s
        # Told every declared value fetched, so that the companion exports none of them.
        self._scrubber = scrubber
        self._region = settings.region
        self.sources = list(settings.secrets)
        self._declared_keys = list(dict.fromkeys(source_key(s) for s in self.sources))
        self._clients = clients
        self._clients_lock = threading.Lock()
        self._entries: dict[tuple, _Entry] = {}
        self._flights: dict[tuple, _Flight] = {}
        self._due: set = set()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._worker = RefreshWorker("lambdawrap-secrets-refresh", self._refresh, MIN_REFRESH_S)
        self.fetches = 0
        self._served: dict = {}  # text the secrets API handed out -> its searched forms, least recent first
        self._given: set = set()  # declared names the last snapshot gave a value, or the function fetched
        # The last value each declared secret gave out, by its request and JSON key (declared
        # by one name, it may be asked for by its id): see value().
        self._last_values: dict[tuple, str] = {}
        self._served_chars = 0
        if not self.sources:
            self._ready.set()

    def client(self, service: str, region: str | None = None) -> Any:
        # Under a lock: the first fetches run in parallel, and a boto3 session must not build
        # two clients at once.
        with self._clients_lock:
            if self._clients is None:
                self._clients = make_clients("companion", self._region)
            return self._clients(service, region) if region else self._clients(service)

    def start(self) -> None:
        """Fetch everything declared now (in parallel), then keep it fresh, on the worker."""
        if self.sources:
            self._worker.start()

    def stop(self) -> None:
        self._worker.stop()

    # the worker ---------------------------------------------------------------------

    def _refresh(self) -> float | None:
        if not self._ready.is_set():
            self._load_declared()
        else:
            with self._lock:
                now = _now()
                # Asked for while a refresh ran that failed since: held off like the others.
                held = {k for k in self._due if (e := self._entries.get(k)) is not None and e.error is None and not self._stale(e, now)}
                due = (self._due - held) | {k for k in self._declared_keys if self._stale(self._entries.get(k), now)}
                self._due.clear()
            for key in due:
                self._fetch(key)
        return self._next_declared_refresh_s()

    def _load_declared(self) -> None:
        try:
            from concurrent.futures import ThreadPoolExecutor  # deferred: only with declared secrets

            with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_FETCHES, len(self._declared_keys)), thread_name_prefix="lambdawrap-secret") as pool:
                list(pool.map(self._fetch, self._declared_keys))
        finally:
            self._ready.set()

    def _next_declared_refresh_s(self) -> float | None:
        with self._lock:
            due = [max(e.fetched_at + max(self.ttl_s, MIN_REFRESH_S), e.retry_at) for e in map(self._entries.get, self._declared_keys) if e is not None]
        if not due:
            return None
        return max(0.0, min(due) - _now())

    def _stale(self, entry: _Entry | None, now: float) -> bool:
        """Whether `entry` is to be refreshed now: past its TTL, and not held off by a failed
        refresh. A wall clock set back (before the fetch) makes it stale too, not fresh for that
        long."""
        if entry is None:
            return True
        if 0.0 <= now - entry.fetched_at < self.ttl_s:
            return False
        return not 0.0 < entry.retry_at - now <= self._hold_s(entry.failures)

    # fetching -----------------------------------------------------------------------

    def _fetch(self, key: tuple) -> _Entry:
        """Fetch `key` now, or wait for the fetch of it already running; the entry that stands."""
        with self._lock:
            flight = self._flights.get(key)
            leading = flight is None
            if leading:
                flight = self._flights[key] = _Flight()
        if not leading:
            if flight.done.wait(FLIGHT_WAIT_S) and flight.entry is not None:
                return flight.entry
            return _Entry(error=TimeoutError("an earlier fetch of this secret did not finish"), fetched_at=_now())
        try:
            entry = _Entry(answer=_jsonable(call(key, self.client)), fetched_at=_now())
        except Exception as exc:  # noqa: BLE001 - botocore's errors (and a missing boto3) are kept, never raised here
            entry = _Entry(error=exc, fetched_at=_now())
        with self._lock:
            self.fetches += 1
            entry = self._keep(key, entry)
            del self._flights[key]
        flight.entry = entry
        try:
            if self._scrubber is not None and entry.error is None:
                if key in self._declared_keys:
                    self._scrubber.learn(self._declared_values(key, entry.answer), source=key)
                else:
                    # Not kept for good: the oldest are forgotten past the scrubber's bound,
                    # however many names a function asks for.
                    self._scrubber.learn(_served_values(key, entry.answer))
        finally:
            flight.done.set()  # whatever learning did: the callers waiting have their answer
        return entry

    def served(self, key: tuple, answer: Any, value: str | None = None) -> None:
        """The secrets API handed the function `value` of the answer to `key` (None: the whole
        answer): searched for from then on, as what the fetch taught the scrubber may be less.
        A secret declared by one JSON key gives the function the others when served whole by
        its id; left unsearched, they went out where the function wrote them."""
        if self._scrubber is None:
            return
        texts = _served_values(key, answer)
        if value is not None and texts:
            texts = [value]
        # At each serve, not once: learned again, a text is the scrubber's most recent, and a
        # value the function keeps asking for is not the one forgotten past its bound. Its forms
        # are made once (a PEM's or a large JSON secret's take milliseconds).
        for text in texts:
            with self._lock:
                forms = self._served.pop(text, None)
                if forms is not None:
                    self._served_chars -= sum(map(len, forms))
            if forms is None:
                forms = searched_forms([text])
            with self._lock:
                self._served[text] = forms
                # Bounded by the characters held, not the texts: a large JSON secret makes a
                # thousand forms, and this memory is the function's. Forgotten, forms are made
                # again at the next serve.
                self._served_chars += sum(map(len, forms))
                while self._served_chars > MAX_SERVED_FORM_CHARS and len(self._served) > 1:
                    self._served_chars -= sum(map(len, self._served.pop(next(iter(self._served)))))
            self._scrubber.learn_forms(forms)

    def _declared_values(self, key: tuple, answer: Any) -> list:
        """The values the declared secrets fetched with `key` give the function: their last
        where this answer gives none (a rotation took it away), which the function still holds."""
        values = []
        for source in self.sources:
            if source_key(source) == key:
                try:
                    values.append(self.value(source, answer))
                except SecretsError:
                    pass  # binary, or no such JSON key, and never a value: none the function has
        return values

    def _keep(self, key: tuple, entry: _Entry) -> _Entry:
        """Store what a fetch brought (lock held) and return the entry that now stands."""
        previous = self._entries.get(key)
        if entry.error is not None:
            if previous is not None and previous.error is None:
                # Keep serving the last good answer, its age the true one (the function's process
                # asks again while it is past the TTL), and try again after the hold a failure
                # has: one throttled call must not keep a rotated-away value for one more TTL.
                # Said once while it keeps failing; the message names the secret's id, never
                # its value.
                if not previous.failures:
                    get_logger().warning("lambdawrap: refreshing %s:%s failed (%s); serving the cached value", key[0], key[1], error_code(entry.error))
                previous.failures += 1
                previous.retry_at = entry.fetched_at + self._hold_s(previous.failures)
                return previous
        if entry.error is not None and previous is not None and previous.error is not None:
            entry.failures = previous.failures + 1
        if previous is None and key not in self._declared_keys and len(self._entries) >= MAX_ENTRIES:
            oldest = min((k for k in self._entries if k not in self._declared_keys), key=lambda k: self._entries[k].fetched_at, default=None)
            if oldest is not None:
                del self._entries[oldest]
        self._entries[key] = entry
        return entry

    def _error_held(self, entry: _Entry, now: float) -> bool:
        """Whether a failed answer still stands: ERROR_HOLD_S after a first failure, doubling with
        each failure in a row, up to the TTL (a secret that stays missing or denied, asked for at
        each invocation, is not asked of AWS every few seconds all day)."""
        return 0.0 <= now - entry.fetched_at < self._hold_s(entry.failures)

    def _hold_s(self, failures: int) -> float:
        return min(ERROR_HOLD_S * 2 ** min(failures - 1, 20), max(ERROR_HOLD_S, self.ttl_s))

    # readers ------------------------------------------------------------------------

    def answer(self, key: tuple) -> dict:
        """The AWS answer to the request `key` names: cached within the TTL; after it, served
        while the worker refreshes it; fetched now (the caller waits) the first time. Raises the
        fetch's error (a botocore error) when there is no good answer."""
        with self._lock:
            entry = self._entries.get(key)
            stale = entry is not None and entry.error is None and self._stale(entry, _now())
            if stale:
                self._due.add(key)
        if stale:
            self._worker.wake()
        if entry is None or (entry.error is not None and not self._error_held(entry, _now())):
            entry = self._fetch(key)
        if entry.error is not None:
            # The one cached error is raised to every caller while it is held: raised as it is,
            # its traceback would grow by each caller's frames (and keep them) until the hold ends.
            raise entry.error.with_traceback(None)
        return entry.answer

    def value(self, source: SecretSource, answer: Any) -> str:
        """The value `answer` gives `source`; for a declared secret it no longer gives one (a
        rotation renamed its JSON key, or made it binary), the last it gave: the function's
        process keeps that one (snapshot), and every way of reading the secret serves the same.
        Raises SecretsError where there is none."""
        try:
            return self._given_out(source, value_of(source, answer))
        except SecretsError:
            with self._lock:
                last = self._last_values.get((source_key(source), source.json_key))
            if last is None:
                raise
            return last

    def _given_out(self, source: SecretSource, value: str) -> str:
        key = source_key(source)
        if key in self._declared_keys:
            with self._lock:
                self._last_values[(key, source.json_key)] = value
        return value

    def held_by_function(self, names: list) -> None:
        """Declared names whose values the function's process fetched itself and serves: a
        snapshot that can no longer give one warns, as for one it gave."""
        with self._lock:
            self._given.update(names)

    def loaded(self, timeout_s: float) -> bool:
        """Whether the declared secrets' first load is done, waiting up to timeout_s for it."""
        return self._ready.wait(timeout_s)

    def snapshot(self, timeout_s: float) -> dict:
        """Values, errors and ages (seconds since fetched) of the declared secrets, waiting up
        to timeout_s for the first load. The handler side counts its copy's age from the fetch,
        so that two caches in a row never make a value older than one TTL."""
        deadline = time.monotonic() + timeout_s
        ready = self._ready.wait(timeout_s)
        values: dict = {}
        errors: dict = {}
        ages: dict = {}
        now = _now()
        with self._lock:
            entries = {source.env_name: self._entries.get(source_key(source)) for source in self.sources}
            # A declared secret with no good answer (throttled, denied for a moment or created
            # late at init) is asked of AWS again when the function asks for it, once per
            # ERROR_HOLD_S, not only after the TTL: else it stays missing for the TTL (5 min).
            failed = {source_key(s) for s in self.sources if entries[s.env_name] is not None and entries[s.env_name].error is not None and not self._error_held(entries[s.env_name], now)}
            # One past its TTL is refreshed now too: the worker's own timer runs on the monotonic
            # clock, which may have stood still while the environment was frozen.
            stale = {source_key(s) for s in self.sources if entries[s.env_name] is not None and entries[s.env_name].error is None and self._stale(entries[s.env_name], now)}
            self._due |= stale
        if stale:
            self._worker.wake()
        if failed:
            # Fetched now, as the secrets API does (answer): there is no value to serve
            # meanwhile, and the asker is a thread of the function's that waits for it (its
            # background refresh), not the function. Fetched later, it came only with the ask
            # after next, minutes later in a function invoked now and then. Each on a thread of
            # its own, waited for within the ask's time: one slow or unreachable holds neither
            # the others nor the answer (it goes on, for the next ask).
            fetches = []
            for key in failed:
                with self._lock:
                    flight = self._flights.get(key)
                if flight is not None:  # under way (a slow AWS, asked again): waited for, not doubled
                    fetches.append(flight.done)
                    continue
                fetch = threading.Thread(target=self._fetch, args=(key,), name="lambdawrap-secret", daemon=True)
                try:
                    fetch.start()
                except RuntimeError:  # no thread to be had: asked again at the next ask
                    continue
                fetches.append(fetch)
            for fetch in fetches:
                left = max(0.0, deadline - time.monotonic())
                fetch.wait(left) if isinstance(fetch, threading.Event) else fetch.join(left)
            with self._lock:
                entries = {source.env_name: self._entries.get(source_key(source)) for source in self.sources}
            now = _now()
        for source in self.sources:
            entry = entries[source.env_name]
            if entry is None:
                if not ready:
                    errors[source.env_name] = f"secret {source.describe()} was not fetched within {timeout_s * 1000:.0f} ms"
                continue
            try:
                if entry.error is not None:
                    raise fetch_failed(source, entry.error)
                values[source.env_name] = self._given_out(source, value_of(source, entry.answer))
                ages[source.env_name] = max(0.0, now - entry.fetched_at)
                with self._lock:
                    self._given.add(source.env_name)
            except SecretsError as exc:
                errors[source.env_name] = str(exc)
                with self._lock:
                    lost = entry.error is None and source.env_name in self._given
                    self._given.discard(source.env_name)
                if lost:
                    # A rotation or an edit took the value away (its JSON key renamed, the
                    # secret made binary): the function keeps the last one, and would fail
                    # with it unwarned. Said once while it lasts, as a failed fetch is (_keep).
                    get_logger().warning("lambdawrap: refreshing %s failed (%s); serving the cached value", source.env_name, exc)
        # Not ready: the first load has not ended, and the function's process fetches them itself.
        return {"values": values, "errors": errors, "ages": ages, "ttl": self.ttl_s, "unavailable": not ready}


def _served_values(key: tuple, answer: Any) -> list:
    """The secret value an undeclared name the function asked the secrets API for gives it: a
    secret's whole SecretString or its SecretBinary, or a SecureString parameter's value (a plain
    parameter, a table name or a host, is no secret: replaced, it would garble every span that
    names it)."""
    try:
        if key[0] == SSM and answer["Parameter"].get("Type") != "SecureString":
            return []
        binary = answer.get("SecretBinary") if key[0] != SSM else None
        if isinstance(binary, str):
            # A binary secret (a key, a certificate, a keystore) goes to the function as base64:
            # searched for so, and as the text it encodes, if it is text (a PEM's lines).
            from lambdawrap.shared.base64_text import base64_text  # deferred: only binary secrets need it

            text = base64_text(binary)
            return [binary] if text is None else [binary, text]
        return [value_of(SecretSource("", key[0], key[1]), answer)]
    except (SecretsError, KeyError, TypeError, AttributeError):
        return []

