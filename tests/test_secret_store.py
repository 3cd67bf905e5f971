"""The companion's secret cache: one entry per secret whatever name or path asks for it, one TTL,
refreshes on one worker thread, and a handler-side copy that expires with the companion's.

Real parts in one process: the companion's SecretStore, its HTTP API and its socket server, the
handler side's channel and cache, real boto3 clients, and a real moto server."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
import time
import urllib.request
from typing import Iterator

import pytest

from conftest import wait_for
from lambdawrap.companion.channel_server import SocketServer
from lambdawrap.companion.record_router import RecordRouter
from lambdawrap.companion import prebound_http
from lambdawrap.companion.secret_store import ERROR_HOLD_S, MIN_REFRESH_S, SecretStore
from lambdawrap.companion.secrets_api import TOKEN_HEADER, SecretsHttpApi
from lambdawrap.devtools.local.moto_server import MotoServer
from lambdawrap.devtools.local.stack import seed_moto
from lambdawrap.handler import secret_cache
from lambdawrap.handler.channel import Channel
from lambdawrap.shared.secret_sources import make_clients, parse_sources, secret_key
from lambdawrap.shared.settings import Settings
from support.http_json import json_exchange

DB_PASSWORD = "store-DB-value-1e77"
DB_SECRET = json.dumps({"password": DB_PASSWORD, "user": "app"})
ROTATED_PASSWORD = "store-rotated-value-90c4"
ROTATED_SECRET = json.dumps({"password": ROTATED_PASSWORD, "user": "app"})
API_KEY = "store-API-value-3a5b"
SESSION_TOKEN = "store-test-session-token"


class FetchThreads:
    """The real boto3 client factory, noting the thread each fetch runs on."""

    def __init__(self) -> None:
        self._clients = make_clients("test", "us-east-1")
        self.threads: list = []

    def __call__(self, service: str):
        self.threads.append(threading.current_thread())
        return self._clients(service)


@pytest.fixture
def moto():
    with MotoServer() as server:
        seed_moto(server, {"secrets": {"prod/db": DB_SECRET}, "parameters": {"/prod/api/key": API_KEY}})
        yield server


@pytest.fixture
def clients(moto, monkeypatch) -> FetchThreads:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return FetchThreads()


def store_settings(declared: str, ttl_s: float = 300.0, **extra) -> Settings:
    sources, problems = parse_sources(declared)
    assert not problems
    return Settings(secrets=tuple(sources), secrets_ttl_s=ttl_s, region="us-east-1", secrets_port=0, **extra)


def get(port: int, path: str) -> tuple:
    return json_exchange(urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={TOKEN_HEADER: SESSION_TOKEN}))


def aws_calls(moto: MotoServer) -> list:
    return [(c["target"], json.loads(c["body"])) for c in moto.requests()]


@contextlib.contextmanager
def serving_the_api(settings: Settings, clients, scrubber=None) -> Iterator[tuple]:
    """(the companion's store, started; its secrets API over it), both stopped at the end."""
    store = SecretStore(settings, clients, scrubber=scrubber)
    store.start()
    api = SecretsHttpApi(store, SESSION_TOKEN, settings)
    try:
        yield store, api
    finally:
        api.stop()
        store.stop()


def test_the_secrets_port_takes_as_many_waiting_connections_as_the_kernel_allows():
    import select

    # GIVEN the secrets API's port, bound, its server not yet serving (as at the cold start,
    # or while it waits for CPU)
    server = prebound_http.PreboundHttpServer("127.0.0.1")
    with open("/proc/sys/net/core/somaxconn") as f:
        count = min(200, int(f.read()) - 1)
    clients = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        # WHEN that many workers connect at once
        for client in clients:
            client.setblocking(False)
            client.connect_ex(server.address)
        # THEN each connection is made at once, waiting to be served (before: past 64 the
        # handshake was dropped, and the worker waited a second or more to try again)
        # (poll, not select: in a long run this process's descriptors pass select's 1,024)
        poller, waiting = select.poll(), {client.fileno() for client in clients}
        for fd in waiting:
            poller.register(fd, select.POLLOUT)
        deadline = time.monotonic() + 10
        while waiting and time.monotonic() < deadline:
            for fd, _ in poller.poll(500):
                poller.unregister(fd)
                waiting.discard(fd)
        assert not waiting, f"{len(waiting)} of {count} not connected"
        assert all(client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 for client in clients)
    finally:
        for client in clients:
            client.close()
        server.listening_socket.close()


def test_one_entry_per_secret_whatever_the_name_or_path_asks_for_it(moto, clients):
    # GIVEN two declared secrets from one Secrets Manager secret, and a parameter
    settings = store_settings("DB_PASSWORD=secretsmanager:prod/db#password,DB_USER=secretsmanager:prod/db#user,API_KEY=ssm:/prod/api/key")
    store = SecretStore(settings, clients)
    store.start()
    api = SecretsHttpApi(store, SESSION_TOKEN, settings)
    port = api.ports[0]
    try:
        assert store.snapshot(10)["values"] == {"DB_PASSWORD": DB_PASSWORD, "DB_USER": "app", "API_KEY": API_KEY}
        # WHEN the function asks for them by env name, by id, in every shape of the API
        assert get(port, "/secrets/DB_PASSWORD") == (200, {"value": DB_PASSWORD})
        assert get(port, "/secrets/DB_USER") == (200, {"value": "app"})
        assert get(port, "/secrets/prod/db") == (200, {"value": DB_SECRET})
        assert get(port, "/?name=prod/db") == (200, {"value": DB_SECRET})
        assert get(port, "/?name=API_KEY") == (200, {"value": API_KEY})
        assert get(port, "/?name=/prod/api/key") == (200, {"value": API_KEY})
        for path in ("/secretsmanager/get?secretId=prod%2Fdb", "/secretsmanager/get?secretId=prod%2Fdb&versionStage=AWSCURRENT"):
            status, body = get(port, path)
            assert status == 200 and body["SecretString"] == DB_SECRET and body["Name"] == "prod/db"
        status, body = get(port, "/systemsmanager/parameters/get?name=%2Fprod%2Fapi%2Fkey&withDecryption=true")
        assert status == 200 and body["Parameter"]["Value"] == API_KEY
        # THEN AWS was asked once per secret: one entry, fetched by the preload
        expected = [("AmazonSSM.GetParameter", {"Name": "/prod/api/key", "WithDecryption": True}), ("secretsmanager.GetSecretValue", {"SecretId": "prod/db"})]
        assert sorted(aws_calls(moto), key=str) == expected
        assert store.fetches == 2
    finally:
        api.stop()
        store.stop()


def test_after_the_ttl_the_cached_value_is_served_while_one_worker_thread_refreshes(moto, clients):
    # GIVEN a secret the API fetched once (on the asking thread: the first use waits for it)
    store = SecretStore(store_settings("", ttl_s=0.3), clients)
    key = secret_key("prod/db")
    try:
        assert store.answer(key)["SecretString"] == DB_SECRET
        assert clients.threads == [threading.current_thread()]
        # WHEN it is rotated, and asked for again and again after the TTL
        moto.client("secretsmanager").put_secret_value(SecretId="prod/db", SecretString=ROTATED_SECRET)
        slowest = 0.0

        def rotated_seen() -> bool:
            nonlocal slowest
            started = time.monotonic()
            value = store.answer(key)["SecretString"]
            slowest = max(slowest, time.monotonic() - started)
            assert value in (DB_SECRET, ROTATED_SECRET)
            return value == ROTATED_SECRET

        wait_for(rotated_seen, timeout=15, interval=0.01, what="the rotated secret")
        # THEN no caller waited for AWS: the stale answer was served while it was refreshed
        assert slowest < 0.25, slowest
        # WHEN it goes stale again and many callers ask at once
        # Past the TTL and the worker's minimum interval, counted from the last refresh: the
        # asks above may have made one more, up to a minimum interval after the one that
        # brought the rotated value (counted from that one, the 20 askers below could come
        # within the TTL of the last, and rightly make none).
        time.sleep(0.3 + 2 * MIN_REFRESH_S + 0.5)
        before = store.fetches
        askers = [threading.Thread(target=store.answer, args=(key,)) for _ in range(20)]
        for asker in askers:
            asker.start()
        for asker in askers:
            asker.join(10)
        wait_for(lambda: store.fetches > before, timeout=15, what="the background refresh")
        # THEN one refresh ran for all of them, and every refresh ran on the one worker thread
        time.sleep(MIN_REFRESH_S / 2)
        assert store.fetches == before + 1
        refreshers = set(clients.threads[1:])
        assert len(refreshers) == 1 and next(iter(refreshers)).name == "lambdawrap-secrets-refresh"
    finally:
        store.stop()


def test_a_failed_refresh_keeps_the_last_good_value_and_never_logs_it(moto, clients, caplog):
    # GIVEN a declared secret, loaded
    store = SecretStore(store_settings("DB_PASSWORD=secretsmanager:prod/db#password", ttl_s=0.2), clients)
    store.start()
    try:
        assert store.snapshot(10)["values"] == {"DB_PASSWORD": DB_PASSWORD}
        # WHEN it disappears from AWS and its refresh fails
        moto.client("secretsmanager").delete_secret(SecretId="prod/db", ForceDeleteWithoutRecovery=True)
        with caplog.at_level(logging.WARNING, logger="lambdawrap"):
            before = store.fetches
            wait_for(lambda: store.fetches > before, timeout=15, what="a refresh")
            # THEN the last good value is still served, to the handler side and to the API
            assert store.snapshot(1)["values"] == {"DB_PASSWORD": DB_PASSWORD}
            assert json.loads(store.answer(secret_key("prod/db"))["SecretString"])["password"] == DB_PASSWORD
        # ... and the warning names the secret and the error, never the value
        warnings = [r.getMessage() for r in caplog.records if "refreshing" in r.getMessage()]
        assert warnings and all("prod/db" in w and DB_PASSWORD not in w for w in warnings)
    finally:
        store.stop()


@pytest.fixture
def handler_cache(monkeypatch):
    """The handler side's cache module, emptied again after the test (it is process-wide), and
    the variables load_declared injected taken out of os.environ again."""
    from lambdawrap.shared.refresh_worker import RefreshWorker

    monkeypatch.delenv("DB_PASSWORD", raising=False)
    # A worker of the test's own: one that reschedules itself would run on into the next test.
    worker = RefreshWorker("lambdawrap-secrets-refresh", secret_cache._refresh, secret_cache.RETRY_STALE_S)
    monkeypatch.setattr(secret_cache, "_worker", worker)
    before = set(os.environ)
    yield secret_cache
    worker.stop()
    # Its run under way ends before the module's state is cleared: one that ran on into the
    # next test read its cleared settings (a KeyError, logged there) or left it its state.
    thread = worker._thread
    if thread is not None:
        thread.join(30)
    for name in set(os.environ) - before:  # monkeypatch restores no variable that was absent
        del os.environ[name]
    secret_cache._config.clear()
    secret_cache._cache.clear()
    secret_cache._failures.clear()
    secret_cache._stale_answers = 0
    secret_cache._unanswered = 0


@contextlib.contextmanager
def serving_the_handler_side(settings: Settings, clients) -> Iterator[SecretStore]:
    """The companion's store, started, serving the function's process over the real local socket."""
    store = SecretStore(settings, clients)
    store.start()
    router = RecordRouter(lambda reason, count: None)
    router.store = store
    router.store_ready.set()
    router.attach(lambda record: None)
    server = SocketServer(settings.socket_path, router, lambda reason, detail: None)
    server.start()
    try:
        yield store
    finally:
        server.stop()
        store.stop()


def test_the_handler_sides_copy_expires_one_ttl_after_the_fetch_not_after_it_arrived(moto, clients, handler_cache, tmp_path):
    ttl_s = 12.0
    # GIVEN the companion's store, serving the handler side over the real local socket
    settings = store_settings("DB_PASSWORD=secretsmanager:prod/db#password", ttl_s=ttl_s, socket_path=str(tmp_path / "lw.sock"))
    with serving_the_handler_side(settings, clients) as store:
        age = store.snapshot(10)["ages"]["DB_PASSWORD"]
        fetched_at = time.monotonic() - age
        # ... and a function's process that gets the value when it is already 0.6 TTL old
        time.sleep(max(0.0, fetched_at + 0.6 * ttl_s - time.monotonic()))
        assert handler_cache.load_declared(settings, Channel(settings.socket_path), companion_expected=True) == []
        assert os.environ["DB_PASSWORD"] == DB_PASSWORD and handler_cache.get("DB_PASSWORD") == DB_PASSWORD
        # WHEN the secret is rotated
        moto.client("secretsmanager").put_secret_value(SecretId="prod/db", SecretString=ROTATED_SECRET)
        # THEN the function sees it soon after one TTL from the fetch; counted from its arrival
        # in the function's process (two caches in a row), not before 1.6 TTL
        deadline = fetched_at + 1.4 * ttl_s
        while handler_cache.get("DB_PASSWORD") != ROTATED_PASSWORD:
            assert time.monotonic() < deadline, "the rotated value did not reach the handler side within one TTL of the fetch"
            time.sleep(0.05)
        # ... fetched by the companion only: the function's process never called AWS itself
        reads = [c for c in moto.requests() if c["target"] == "secretsmanager.GetSecretValue"]
        assert len(reads) >= 2 and all("lambdawrap/test" in c["user_agent"] for c in reads)


@pytest.mark.parametrize("rotated_to, said", [
    (json.dumps({"Password": ROTATED_PASSWORD}), "has no JSON key 'password'"),
    (ROTATED_PASSWORD, "is not JSON, so it has no key 'password'"),
])
def test_a_rotation_that_takes_a_declared_key_away_is_said_once_and_the_last_value_served(moto, clients, handler_cache, tmp_path, caplog, rotated_to, said):
    # GIVEN the companion's store serving the handler side a declared JSON key, with a short TTL
    settings = store_settings("DB_PASSWORD=secretsmanager:prod/db#password", ttl_s=1.0, socket_path=str(tmp_path / "lw.sock"))
    with serving_the_handler_side(settings, clients) as store:
        assert handler_cache.load_declared(settings, Channel(settings.socket_path), companion_expected=True) == []
        assert handler_cache.get("DB_PASSWORD") == DB_PASSWORD
        # WHEN a rotation renames the key, or makes the secret plain text
        moto.client("secretsmanager").put_secret_value(SecretId="prod/db", SecretString=rotated_to)
        with caplog.at_level(logging.WARNING, logger="lambdawrap"):
            before = store.fetches
            # ... and the function reads it across several refreshes
            deadline = time.monotonic() + 30
            while store.fetches < before + 3:
                assert time.monotonic() < deadline, "the companion did not refresh the secret"
                assert handler_cache.get("DB_PASSWORD") == DB_PASSWORD  # THEN the last value is served
                time.sleep(0.1)
            handler_cache.get("DB_PASSWORD")
            wait_for(lambda: [r for r in caplog.records if "refreshing" in r.getMessage()], timeout=15, what="the warning")
            time.sleep(1.5)  # more refreshes and reads, which must say nothing more
            handler_cache.get("DB_PASSWORD")
        # ... and one warning says why, naming the secret, never a value (before: none at all,
        # where the function's own fetch said it)
        warnings = [r.getMessage() for r in caplog.records if "refreshing" in r.getMessage()]
        assert len(warnings) == 1 and said in warnings[0] and "DB_PASSWORD" in warnings[0], warnings
        assert DB_PASSWORD not in warnings[0] and ROTATED_PASSWORD not in warnings[0]


def test_after_a_rotation_that_takes_a_declared_value_away_the_api_serves_the_last_value_as_the_function_s_process_does(moto, clients):
    # GIVEN a declared JSON key and a declared whole secret, each read once through the API
    moto.client("secretsmanager").create_secret(Name="prod/cert", SecretString='{"cn": "cert-text-41a2"}')
    # (the certificate declared by one of its keys first: asked for by its id, it is the whole)
    settings = store_settings("DB_PASSWORD=secretsmanager:prod/db#password,CERT_CN=secretsmanager:prod/cert#cn,CERT=secretsmanager:prod/cert", ttl_s=1.0)
    with serving_the_api(settings, clients) as (store, api):
        port = api.ports[0]
        assert store.snapshot(10)["values"] == {"DB_PASSWORD": DB_PASSWORD, "CERT_CN": "cert-text-41a2", "CERT": '{"cn": "cert-text-41a2"}'}
        assert get(port, "/secrets/DB_PASSWORD") == (200, {"value": DB_PASSWORD})
        # WHEN a rotation renames the key, and another makes the whole secret binary
        moto.client("secretsmanager").put_secret_value(SecretId="prod/db", SecretString=json.dumps({"Password": ROTATED_PASSWORD}))
        moto.client("secretsmanager").put_secret_value(SecretId="prod/cert", SecretBinary=b"\x00\x01")
        before = store.fetches
        wait_for(lambda: get(port, "/secrets/DB_PASSWORD") and store.fetches >= before + 2, timeout=30, what="the refreshes")
        # THEN every shape of the API serves the last value, as the function's process keeps it
        # (before: 500 InvalidSecretValue, while its own read served the last value)
        for path in ("/secrets/DB_PASSWORD", "/?name=DB_PASSWORD"):
            assert get(port, path) == (200, {"value": DB_PASSWORD}), path
        for path in ("/secrets/CERT", "/secrets/prod/cert", "/?name=prod/cert"):
            assert get(port, path) == (200, {"value": '{"cn": "cert-text-41a2"}'}), path
        # ... and the snapshot the function's process reads still says the value went
        assert "DB_PASSWORD" in store.snapshot(10)["errors"] and "CERT" in store.snapshot(10)["errors"]


def test_a_value_the_function_still_holds_after_a_rotation_took_it_away_stays_scrubbed(moto, clients):
    from lambdawrap.companion.secret_scrub import MAX_VALUES, REDACTED, SecretScrubber

    # GIVEN a declared JSON key, rotated once: the function holds the second value
    scrubber = SecretScrubber()
    aws = moto.client("secretsmanager")
    settings = store_settings("DB_PASSWORD=secretsmanager:prod/db#password", ttl_s=1.0)
    with serving_the_api(settings, clients, scrubber=scrubber) as (store, _):
        assert store.snapshot(10)["values"] == {"DB_PASSWORD": DB_PASSWORD}
        aws.put_secret_value(SecretId="prod/db", SecretString=ROTATED_SECRET)
        wait_for(lambda: store.snapshot(10)["values"].get("DB_PASSWORD") == ROTATED_PASSWORD, timeout=30, what="the rotation")
        # WHEN a rotation renames the key (the function keeps the second value), and the
        # scrubber learns many other values since
        aws.put_secret_value(SecretId="prod/db", SecretString=json.dumps({"Password": "store-third-value-77aa"}))
        wait_for(lambda: "DB_PASSWORD" in store.snapshot(10)["errors"], timeout=30, what="the key taken away")
        for n in range(MAX_VALUES):
            scrubber.learn([f"other-secret-value-{n:05d}"])
        # THEN the value the function holds is still searched for (before: the secret's current
        # values were none, and it was forgotten as others came, then exported)
        assert scrubber.text(f"pw={ROTATED_PASSWORD}") == f"pw={REDACTED}"


def test_a_secret_created_after_init_reaches_the_function_with_the_refresh_its_first_read_asks_for(moto, clients, handler_cache, tmp_path):
    # GIVEN a declared secret that does not exist yet when the function's process boots
    settings = store_settings("LATE=secretsmanager:prod/late", socket_path=str(tmp_path / "lw.sock"))
    with serving_the_handler_side(settings, clients):
        problems = handler_cache.load_declared(settings, Channel(settings.socket_path), companion_expected=True)
        booted = time.monotonic()  # the failure held from here on, here and in the companion
        assert problems and handler_cache.get("LATE") is None
        # WHEN it is created, and the function reads it once the failure's hold is over
        moto.client("secretsmanager").create_secret(Name="prod/late", SecretString="late-value-7d1")
        time.sleep(max(0.0, booted + max(ERROR_HOLD_S, handler_cache.RETRY_FAILED_S) + 0.5 - time.monotonic()))
        assert handler_cache.get("LATE") is None  # served at once, as it stands; a refresh asked for
        # THEN that refresh brings it, for the next read, a while later (before: the companion
        # answered with its held failure and fetched it afterwards, and only the refresh the
        # read after next asked for brought it: in a function invoked now and then, minutes on)
        # (read here without a read of the function's, which would ask for another refresh)
        wait_for(lambda: handler_cache._cache.get("LATE", (None, 0))[0] == "late-value-7d1", timeout=20, interval=0.05, what="the created secret in the function's process")
        assert handler_cache.get("LATE") == "late-value-7d1"


def test_an_ask_that_fetches_missing_secrets_is_answered_within_its_time(moto, monkeypatch):
    from support.aws_front import AwsFront

    # GIVEN three declared secrets missing at init beside one that is there, and AWS slow (2 s)
    # to answer each of the next calls
    with AwsFront(moto.endpoint, {"secretsmanager.GetSecretValue": ["pass"] * 4 + [2.0] * 3}) as front:
        monkeypatch.setenv("AWS_ENDPOINT_URL", front.endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
        settings = store_settings("DB_PASSWORD=secretsmanager:prod/db#password,A=secretsmanager:prod/a,B=secretsmanager:prod/b,C=secretsmanager:prod/c")
        store = SecretStore(settings, FetchThreads())
        store.start()
        try:
            first = store.snapshot(10)
            assert first["values"] == {"DB_PASSWORD": DB_PASSWORD} and sorted(first["errors"]) == ["A", "B", "C"]
            time.sleep(ERROR_HOLD_S + 0.5)
            # WHEN the function's process asks, the failures' hold over, with 1.5 s to wait
            asked = time.monotonic()
            answer = store.snapshot(1.5)
            # THEN it is answered within them, with what there is (before: the missing ones were
            # fetched one after another, 6 s, and the asker had given up: no answer at all)
            assert time.monotonic() - asked < 4.5
            assert answer["values"] == {"DB_PASSWORD": DB_PASSWORD} and sorted(answer["errors"]) == ["A", "B", "C"]
            # ... and asked again and again while those fetches hang, it waits for them rather
            # than starting more (before: a thread per missing secret per ask)
            for _ in range(5):
                store.snapshot(0.1)
            assert len([t for t in threading.enumerate() if t.name == "lambdawrap-secret"]) <= 3
        finally:
            store.stop()


# The function's process, as it runs beside the companion: its secrets loaded at boot over the
# channel, then read ("read", which may ask for a refresh) or looked at ("held": its cache and its
# refresh worker, without a read) as the test says on stdin.
FUNCTION_PROCESS = """
import json, sys, time
from lambdawrap.handler import secret_cache
from lambdawrap.handler.channel import Channel
from lambdawrap.shared.secret_sources import parse_sources
from lambdawrap.shared.settings import Settings

declared, ttl_s, socket_path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
sources, _ = parse_sources(declared)
settings = Settings(secrets=tuple(sources), secrets_ttl_s=ttl_s, region="us-east-1", secrets_port=0, socket_path=socket_path)
print(json.dumps(secret_cache.load_declared(settings, Channel(socket_path), companion_expected=True)), flush=True)
for line in sys.stdin:
    if line.strip() == "read":
        print(json.dumps(secret_cache.get("DB_PASSWORD")), flush=True)
    else:
        value, due = secret_cache._cache["DB_PASSWORD"]
        worker = secret_cache._worker._thread
        print(json.dumps({"value": value, "due_in": round(due - time.time(), 2), "worker_alive": worker is not None and worker.is_alive(), "stale_answers": secret_cache._stale_answers, "unanswered": secret_cache._unanswered, "companion": secret_cache._config.get("companion")}), flush=True)
"""


def test_a_value_the_companion_handed_over_while_refreshing_it_is_asked_for_again_unread(moto, tmp_path, monkeypatch):
    import subprocess
    import sys

    from support.aws_front import AwsFront

    ttl_s = 3.0
    # GIVEN AWS slow (1.5 s) on the companion's refresh of a secret, which has been rotated
    with AwsFront(moto.endpoint, {"secretsmanager.GetSecretValue": ["pass", 1.5]}) as front:
        monkeypatch.setenv("AWS_ENDPOINT_URL", front.endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
        settings = store_settings("DB_PASSWORD=secretsmanager:prod/db#password", ttl_s=ttl_s, socket_path=str(tmp_path / "lw.sock"))
        with serving_the_handler_side(settings, FetchThreads()) as store, open(tmp_path / "function.err", "w+") as errors:
            fetched_at = time.monotonic() - store.snapshot(10)["ages"]["DB_PASSWORD"]
            # ... and a function's process of its own (as on Lambda: not this one, whose many
            # threads and sockets of earlier tests it would share), booted with it
            function = subprocess.Popen([sys.executable, "-c", FUNCTION_PROCESS, "DB_PASSWORD=secretsmanager:prod/db#password", str(ttl_s), settings.socket_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True)

            def ask(command: str) -> object:
                function.stdin.write(command + "\n")
                function.stdin.flush()
                return json.loads(function.stdout.readline())

            try:
                assert json.loads(function.stdout.readline()) == []
                moto.client("secretsmanager").put_secret_value(SecretId="prod/db", SecretString=ROTATED_SECRET)
                rotated_at = time.monotonic()
                # WHEN the function reads it past the TTL, while the companion's refresh is
                # under way (served as it is: stale-while-revalidate), and not again for a while
                # (past the TTL as the function counts it: from the answer's arrival less its
                # age, a little after the fetch; read before, it asked for nothing, as three
                # fresh-clone runs found, the worker never started)
                time.sleep(max(0.0, fetched_at + ttl_s - time.monotonic(), ask("held")["due_in"]) + 0.3)
                read_at = time.monotonic()
                assert ask("read") == DB_PASSWORD

                # THEN the function's process asks again by itself, and its next read is the
                # rotated value (before: the value handed over at its TTL was kept until that
                # read, which was served it once more). Watched without a read of the
                # function's, which would ask for a refresh itself.
                def stalled() -> str:
                    errors.seek(0)
                    times = f"{time.monotonic() - fetched_at:.1f} s after the first fetch, rotated at {rotated_at - fetched_at:.1f} s, read at {read_at - fetched_at:.1f} s"
                    return f"the rotated value in the function's process ({times}; {ask('held')}; AWS calls {[(target, turn) for target, _, turn in front.calls]}; its stderr {errors.read()[-2000:]!r})"

                wait_for(lambda: ask("held")["value"] == ROTATED_PASSWORD, timeout=30, interval=0.05, what=stalled)
                assert ask("read") == ROTATED_PASSWORD
            finally:
                function.stdin.close()
                try:
                    function.wait(timeout=30)
                finally:
                    function.kill()
                    function.stdout.close()


def test_a_boot_the_companion_answers_in_part_fetches_only_the_rest_and_refreshes_from_the_companion(moto, handler_cache, tmp_path, monkeypatch):
    from support.aws_front import AwsFront

    # GIVEN AWS slow on the companion's first call for a parameter (3 s), quick on the rest
    with AwsFront(moto.endpoint, {"AmazonSSM.GetParameter": [3.0]}) as front:
        monkeypatch.setenv("AWS_ENDPOINT_URL", front.endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
        settings = store_settings("DB_PASSWORD=secretsmanager:prod/db#password,API_KEY=ssm:/prod/api/key", ttl_s=4.0, socket_path=str(tmp_path / "lw.sock"), secrets_timeout_ms=1500)
        with serving_the_handler_side(settings, FetchThreads()):
            # WHEN the function's process boots, waiting 1.5 s for the companion (its first
            # client made in that time: under 0.8 s on a busy machine, it had nothing yet)
            assert handler_cache.load_declared(settings, Channel(settings.socket_path), companion_expected=True) == []
            # THEN it has both, having asked AWS only for the one the companion did not have yet
            # (before: the companion's were thrown away, and every secret fetched again)
            assert (os.environ["DB_PASSWORD"], os.environ["API_KEY"]) == (DB_PASSWORD, API_KEY)
            boot_calls = [(target, turn) for target, agent, turn in front.calls if "lambdawrap/boot" in agent]
            assert boot_calls == [("AmazonSSM.GetParameter", "pass")], front.calls
            # WHEN the secret is rotated, and refreshed a TTL later
            moto.client("secretsmanager").put_secret_value(SecretId="prod/db", SecretString=ROTATED_SECRET)
            wait_for(lambda: handler_cache.get("DB_PASSWORD") == ROTATED_PASSWORD, timeout=20, what="the rotated value in the function's process")
            # THEN it came from the companion, the one cache, not from AWS by the function's
            # process at every TTL for the environment's life
            assert not [call for call in front.calls if "lambdawrap/boot" in call[1] and call[0] == "secretsmanager.GetSecretValue"], front.calls


def test_a_value_the_companion_keeps_handing_over_past_its_ttl_is_asked_for_less_and_less_often_however_often_it_is_read(handler_cache):
    class StaleChannel:  # a companion whose refresh keeps failing: the value's true age, past the TTL
        asked = 0

        def request(self, record, timeout_s):
            StaleChannel.asked += 1
            return {"values": {"DB_PASSWORD": DB_PASSWORD}, "errors": {}, "ages": {"DB_PASSWORD": 400.0}, "ttl": 300.0}

    settings = store_settings("DB_PASSWORD=secretsmanager:prod/db#password")
    assert handler_cache.load_declared(settings, StaleChannel(), companion_expected=True) == []
    # WHEN the function reads it every 10 ms for 3 s
    ended = time.monotonic() + 3.0
    while time.monotonic() < ended:
        assert handler_cache.get("DB_PASSWORD") == DB_PASSWORD
        time.sleep(0.01)
    # THEN the companion is asked again after 0.25, 0.5, 1, 2 s...: a handful of times, not at
    # every read's wake (before: four times a second for the environment's life)
    assert 2 <= StaleChannel.asked <= 6, StaleChannel.asked


def test_a_refresh_the_companion_did_not_answer_is_asked_again_unread(handler_cache):
    class BusyCompanion:  # answers the boot, not the first refresh (busy), then the rotated value
        asked = 0

        def request(self, record, timeout_s):
            BusyCompanion.asked += 1
            if BusyCompanion.asked == 2:
                raise TimeoutError("timed out")  # what the channel raises when the wait ends unanswered
            value = DB_PASSWORD if BusyCompanion.asked == 1 else ROTATED_PASSWORD
            return {"values": {"DB_PASSWORD": value}, "errors": {}, "ages": {"DB_PASSWORD": 0.0}, "ttl": 1.0}

    settings = store_settings("DB_PASSWORD=secretsmanager:prod/db#password", ttl_s=1.0)
    assert handler_cache.load_declared(settings, BusyCompanion(), companion_expected=True) == []
    # WHEN the function reads it past its TTL (served as it is), its refresh unanswered, and
    # does not read it again for a while
    time.sleep(1.1)
    assert handler_cache.get("DB_PASSWORD") == DB_PASSWORD
    wait_for(lambda: BusyCompanion.asked >= 2, timeout=30, what="the refresh")
    # THEN the function's process asks again by itself, and its next read is the rotated value
    # (before: nothing was asked until that read, which was served the old value once more)
    wait_for(lambda: handler_cache._cache["DB_PASSWORD"][0] == ROTATED_PASSWORD, timeout=30, interval=0.05, what="the rotated value in the function's process")
    assert handler_cache.get("DB_PASSWORD") == ROTATED_PASSWORD


def test_a_companion_gone_for_good_is_asked_with_one_connect_once_an_ask_went_unanswered(handler_cache):
    class GoneCompanion:  # answered the boot, then went: its socket is no more
        connects = 0

        def request(self, record, timeout_s):
            GoneCompanion.connects += 1
            if GoneCompanion.connects == 1:
                return {"values": {"DB_PASSWORD": DB_PASSWORD}, "errors": {}, "ages": {"DB_PASSWORD": 0.0}, "ttl": 1.0}
            raise FileNotFoundError(2, "No such file or directory")

    settings = store_settings("DB_PASSWORD=secretsmanager:prod/db#password", ttl_s=1.0, secrets_timeout_ms=300)
    assert handler_cache.load_declared(settings, GoneCompanion(), companion_expected=True) == []
    # WHEN the function reads it past its TTL: the refresh tries to connect for its whole wait
    # (the companion may be opening its socket), and goes unanswered
    time.sleep(1.1)
    assert handler_cache.get("DB_PASSWORD") == DB_PASSWORD
    wait_for(lambda: handler_cache._unanswered == 1, timeout=30, what="the first refresh")
    first = GoneCompanion.connects
    # THEN the two asks the timer makes next try one connect each (before: one every 5 ms for
    # the whole wait, each time), and the value is still served
    wait_for(lambda: handler_cache._unanswered >= 3, timeout=30, what="two more asks")
    assert handler_cache._unanswered == 3 and GoneCompanion.connects - first == 2 and first > 3, (first, GoneCompanion.connects)
    assert handler_cache.get("DB_PASSWORD") == DB_PASSWORD


def test_with_a_ttl_under_the_companion_s_least_refresh_time_values_are_asked_for_at_the_reads(handler_cache):
    class StaleChannel:  # a TTL of 0.5 s, under the companion's 1 s between refreshes: past it
        def request(self, record, timeout_s):
            return {"values": {"DB_PASSWORD": DB_PASSWORD}, "errors": {}, "ages": {"DB_PASSWORD": 0.7}, "ttl": 0.5}

    settings = store_settings("DB_PASSWORD=secretsmanager:prod/db#password", ttl_s=0.5)
    assert handler_cache.load_declared(settings, StaleChannel(), companion_expected=True) == []
    # WHEN a refresh gets the value past its TTL THEN it sets no timer of its own and leaves
    # the value due: the next read asks again, as with a TTL of 0 (before: backed off to 5 s)
    assert handler_cache._refresh() is None
    assert handler_cache._cache["DB_PASSWORD"][1] <= time.time()


def test_a_companion_answer_marked_unavailable_that_holds_every_secret_is_taken_whole(moto, clients, handler_cache, caplog):
    class AnsweringChannel:  # the companion's answer as its socket server sends it
        def request(self, record, timeout_s):
            return {"values": {"DB_PASSWORD": DB_PASSWORD, "API_KEY": API_KEY}, "errors": {}, "ages": {}, "ttl": 300.0, "unavailable": True}

    # GIVEN a companion whose first load ended as it answered: marked unavailable, every
    # declared secret in it
    settings = store_settings("DB_PASSWORD=secretsmanager:prod/db#password,API_KEY=ssm:/prod/api/key")
    with caplog.at_level(logging.WARNING, logger="lambdawrap"):
        # WHEN the function's process boots
        assert handler_cache.load_declared(settings, AnsweringChannel(), companion_expected=True) == []
    # THEN it has them, and neither asks AWS nor says it will (before: it made boto3 clients
    # for nothing and warned it fetched the rest, then refreshed from AWS)
    assert (os.environ["DB_PASSWORD"], os.environ["API_KEY"]) == (DB_PASSWORD, API_KEY)
    assert not [r for r in caplog.records if "fetching the rest" in r.getMessage()], caplog.text
    assert aws_calls(moto) == []


def test_a_secret_the_function_s_process_cannot_fetch_is_asked_for_no_more_than_every_5_s_whatever_the_ttl(moto, clients, handler_cache, tmp_path):
    # GIVEN no companion, a TTL of 0, and a declared secret AWS does not have
    settings = store_settings("DB_PASSWORD=secretsmanager:prod/db#password,GONE=secretsmanager:prod/gone", ttl_s=0.0, socket_path=str(tmp_path / "none.sock"))
    failures = handler_cache.load_declared(settings, Channel(settings.socket_path), companion_expected=False)
    assert len(failures) == 1 and "GONE" in failures[0], failures
    # WHEN the function reads them at every moment for 3 s
    started = time.monotonic()
    while time.monotonic() - started < 3.0:
        handler_cache.get("GONE")
        handler_cache.get("DB_PASSWORD")
        time.sleep(0.01)
    # THEN its process asked AWS for the missing one at most once more (a 5 s hold, doubling;
    # before: four times a second, every declared secret with it)
    asked = [body.get("SecretId") for target, body in aws_calls(moto) if target == "secretsmanager.GetSecretValue"]
    assert asked.count("prod/gone") <= 2 and asked.count("prod/db") <= 5, asked


def test_a_ttl_spent_frozen_counts_though_the_monotonic_clock_stood_still(moto, clients, handler_cache, tmp_path, monkeypatch):
    ttl_s = 300.0
    # GIVEN the companion's store serving the handler side over the real local socket and the
    # API, with the default TTL, the declared secret loaded
    settings = store_settings("DB_PASSWORD=secretsmanager:prod/db#password", ttl_s=ttl_s, socket_path=str(tmp_path / "lw.sock"))
    with serving_the_handler_side(settings, clients) as store:
        api = SecretsHttpApi(store, SESSION_TOKEN, settings)
        try:
            assert handler_cache.load_declared(settings, Channel(settings.socket_path), companion_expected=True) == []
            assert get(api.ports[0], "/secrets/prod/db") == (200, {"value": DB_SECRET})
            moto.client("secretsmanager").put_secret_value(SecretId="prod/db", SecretString=ROTATED_SECRET)
            # WHEN the environment stays frozen for two TTLs between invocations: Lambda's wall
            # clock moves on, its monotonic clock is reported not to (spec §10), which a cgroup
            # freeze cannot reproduce: here the wall clock alone moves
            real_time = time.time
            monkeypatch.setattr(time, "time", lambda: real_time() + 2 * ttl_s)
            # THEN the function's next reads refresh it, through secrets.get and through the API
            # (before: its age counted on the monotonic clock, it was still fresh; the rotated
            # value came one TTL of running time later, after days of rare invocations)
            wait_for(lambda: handler_cache.get("DB_PASSWORD") == ROTATED_PASSWORD, timeout=30, what="the rotated value in secrets.get")
            wait_for(lambda: get(api.ports[0], "/secrets/prod/db") == (200, {"value": ROTATED_SECRET}), timeout=30, what="the rotated value from the API")
        finally:
            api.stop()


def test_where_the_boot_fetched_itself_a_secret_that_stays_missing_is_asked_of_aws_less_and_less_often(moto, clients, handler_cache, tmp_path, monkeypatch):
    # GIVEN a function's process that fetched its declared secrets itself (no companion
    # answered at boot), one of them missing, and a function reading it at every invocation
    settings = store_settings("API_KEY=secretsmanager:never-created,DB_PASSWORD=secretsmanager:prod/db#password", ttl_s=300, socket_path=str(tmp_path / "no-companion.sock"))
    failures = handler_cache.load_declared(settings, Channel(settings.socket_path), companion_expected=False)
    assert len(failures) == 1 and "never-created" in failures[0]
    assert handler_cache.get("DB_PASSWORD") == DB_PASSWORD

    def fetches() -> int:
        return sum(1 for target, body in aws_calls(moto) if target == "secretsmanager.GetSecretValue" and body["SecretId"] == "never-created")

    # (the wall clock moved by the test, as days of invocations would move it)
    offset = 0.0
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + offset)
    for failure, hold_s in enumerate((5, 10, 20, 40, 80, 160, 300, 300), start=1):
        assert fetches() == failure
        # WHEN it is read again once this failure's hold has passed
        wait_s = handler_cache._cache["API_KEY"][1] - time.time()
        # THEN the hold doubled with each failure in a row, up to the TTL (before: AWS asked for
        # every declared secret each 5 s, all day long, from the function's process)
        assert hold_s - 2 < wait_s <= hold_s, (failure, wait_s)
        offset += wait_s + 0.1
        assert handler_cache.get("API_KEY") is None
        wait_for(lambda: fetches() == failure + 1 and handler_cache._cache["API_KEY"][1] > time.time(), timeout=30, what=f"the fetch after failure {failure}")
    # ... and the secret is served once it can be read
    moto.client("secretsmanager").create_secret(Name="never-created", SecretString="created-late-value-5b2e")
    offset += handler_cache._cache["API_KEY"][1] - time.time() + 0.1
    wait_for(lambda: handler_cache.get("API_KEY") == "created-late-value-5b2e", timeout=30, what="the secret created late")


def refresh_when_due(cache) -> None:
    """The handler side's refresh, once each secret is due (its TTL, or its hold after a
    failure, spent): where the function's process fetches itself, it asks AWS for those only."""
    for name, (value, _) in list(cache._cache.items()):
        cache._cache[name] = (value, 0.0)
    cache._refresh()


def test_where_the_boot_fetched_itself_the_keys_of_one_secret_come_from_one_answer(moto, clients, handler_cache, tmp_path):
    # GIVEN a user name and its password declared from one secret, and no companion answering
    settings = store_settings("DB_USER=secretsmanager:prod/db#user,DB_PASSWORD=secretsmanager:prod/db#password", socket_path=str(tmp_path / "no-companion.sock"))

    def reads() -> list:
        return [body["SecretId"] for target, body in aws_calls(moto) if target == "secretsmanager.GetSecretValue"]

    # WHEN the function's process fetches them itself at boot
    assert handler_cache.load_declared(settings, Channel(settings.socket_path), companion_expected=False) == []
    # THEN the secret is asked for once, both values read from the one answer (before: once a
    # declaration, and a rotation between the two calls paired the old user with the new password)
    assert reads() == ["prod/db"]
    assert (handler_cache.get("DB_USER"), handler_cache.get("DB_PASSWORD")) == ("app", DB_PASSWORD)
    # ... and so are they refreshed, after a rotation of both
    moto.client("secretsmanager").put_secret_value(SecretId="prod/db", SecretString=json.dumps({"password": ROTATED_PASSWORD, "user": "app2"}))
    refresh_when_due(handler_cache)
    assert reads() == ["prod/db", "prod/db"]
    assert (handler_cache.get("DB_USER"), handler_cache.get("DB_PASSWORD")) == ("app2", ROTATED_PASSWORD)


def test_where_the_boot_fetched_itself_a_refresh_that_fails_names_the_secret_once(moto, clients, handler_cache, tmp_path, caplog):
    # GIVEN a function's process that fetched its declared secret itself (no companion answered)
    settings = store_settings("DB_PASSWORD=secretsmanager:prod/db#password", socket_path=str(tmp_path / "no-companion.sock"))
    assert handler_cache.load_declared(settings, Channel(settings.socket_path), companion_expected=False) == []

    def warnings() -> list:
        return [r.getMessage() for r in caplog.records if r.name == "lambdawrap" and "refreshing" in r.getMessage()]

    with caplog.at_level(logging.WARNING, logger="lambdawrap"):
        # WHEN the secret is deleted, and its refresh fails again and again
        moto.client("secretsmanager").delete_secret(SecretId="prod/db", ForceDeleteWithoutRecovery=True)
        for _ in range(3):
            refresh_when_due(handler_cache)
        # THEN the last good value is still served, and one warning names the secret and the
        # error, never the value (before: nothing was said, the old value served for good)
        assert handler_cache.get("DB_PASSWORD") == DB_PASSWORD
        assert len(warnings()) == 1
        assert "DB_PASSWORD=secretsmanager:prod/db#password" in warnings()[0] and "ResourceNotFoundException" in warnings()[0]
        # ... and once more when it fails again after it could be read
        moto.client("secretsmanager").create_secret(Name="prod/db", SecretString=ROTATED_SECRET)
        refresh_when_due(handler_cache)
        assert handler_cache.get("DB_PASSWORD") == ROTATED_PASSWORD and len(warnings()) == 1
        moto.client("secretsmanager").delete_secret(SecretId="prod/db", ForceDeleteWithoutRecovery=True)
        refresh_when_due(handler_cache)
        refresh_when_due(handler_cache)
    assert len(warnings()) == 2 and not any(value in w for w in warnings() for value in (DB_PASSWORD, ROTATED_PASSWORD))


def test_by_its_id_a_declared_secret_is_served_at_its_declared_stage_only(moto, clients):
    # GIVEN a secret declared at its previous version, after a rotation
    moto.client("secretsmanager").put_secret_value(SecretId="prod/db", SecretString=ROTATED_SECRET)
    settings = store_settings("OLD_PASSWORD=secretsmanager:prod/db#password@AWSPREVIOUS")
    store = SecretStore(settings, clients)
    store.start()
    api = SecretsHttpApi(store, SESSION_TOKEN, settings)
    try:
        assert store.snapshot(10)["values"] == {"OLD_PASSWORD": DB_PASSWORD}
        # WHEN the function asks for it by its id THEN it gets the declared version, whole
        assert get(api.ports[0], "/secrets/prod/db") == (200, {"value": DB_SECRET})
        assert get(api.ports[0], "/?name=prod/db") == (200, {"value": DB_SECRET})
        # ... and the version no declaration names was never fetched
        fetched = [body for target, body in aws_calls(moto) if target == "secretsmanager.GetSecretValue"]
        assert fetched == [{"SecretId": "prod/db", "VersionStage": "AWSPREVIOUS"}]
    finally:
        api.stop()
        store.stop()


@pytest.mark.parametrize("current", ["", "@AWSCURRENT"])
def test_by_its_id_a_secret_declared_at_its_current_version_and_another_is_served_current(moto, clients, current):
    # GIVEN a secret during a rotation (its AWSPENDING version set), declared at its pending
    # version first and at its current one, the current stage named or not
    aws = moto.client("secretsmanager")
    aws.put_secret_value(SecretId="prod/db", SecretString=ROTATED_SECRET, VersionStages=["AWSPENDING"])
    settings = store_settings(f"NEXT_PASSWORD=secretsmanager:prod/db#password@AWSPENDING,PASSWORD=secretsmanager:prod/db#password{current}")
    with serving_the_api(settings, clients) as (store, api):
        assert store.snapshot(10)["values"] == {"NEXT_PASSWORD": ROTATED_PASSWORD, "PASSWORD": DB_PASSWORD}
        # WHEN the function asks for it by its id
        # THEN it gets the current version, as the README says, however the current one was
        # declared (before: with @AWSCURRENT written out, the pending version, not yet valid)
        assert get(api.ports[0], "/secrets/prod/db") == (200, {"value": DB_SECRET})


def test_a_secret_holding_an_unpaired_surrogate_is_searched_for_and_so_are_the_others(moto, clients):
    # GIVEN a JSON secret one of whose values holds an unpaired surrogate (JSON's "\ud800"
    # escape), declared by two keys, the scrubber learning what the store fetches
    from lambdawrap.companion.secret_scrub import REDACTED, SecretScrubber

    moto.client("secretsmanager").create_secret(Name="prod/mixed", SecretString=json.dumps({"password": "pa55\ud800word-xyz", "apikey": "AKIA-apikey-0123456789"}))
    scrubber = SecretScrubber()
    settings = store_settings("DB=secretsmanager:prod/mixed#password,API=secretsmanager:prod/mixed#apikey")
    with serving_the_api(settings, clients, scrubber=scrubber) as (store, api):
        assert store.snapshot(10)["values"]["API"] == "AKIA-apikey-0123456789"
        # WHEN the function writes both, and asks for the secret by its id
        scrubbed = scrubber.text("connecting with key=AKIA-apikey-0123456789 password=pa55\ud800word-xyz")
        served = get(api.ports[0], "/secrets/prod/mixed")
    # THEN neither value is left in what is exported, and the secret is served (before: the
    # URL forms of the surrogate's value failed, and nothing of the secret was searched for)
    assert "AKIA-apikey" not in scrubbed and "word-xyz" not in scrubbed and REDACTED in scrubbed, scrubbed
    assert served[0] == 200, served


def test_a_secret_nested_too_deep_for_json_fails_its_key_alone(moto, clients):
    # GIVEN a secret whose JSON nests deeper than json reads, declared whole and by a key, with
    # the scrubber learning what the store fetches
    from lambdawrap.companion.secret_scrub import SecretScrubber

    deep = '{"nested": ' + "[" * 100_000 + "]" * 100_000 + ', "password": "deep-value-7c1f"}'
    moto.client("secretsmanager").create_secret(Name="prod/deep", SecretString=deep)
    settings = store_settings("DEEP_PASSWORD=secretsmanager:prod/deep#password,DEEP_RAW=secretsmanager:prod/deep,API_KEY=ssm:/prod/api/key")
    store = SecretStore(settings, clients, scrubber=SecretScrubber())
    store.start()
    try:
        # WHEN the function's process asks for them
        snapshot = store.snapshot(10)
        # THEN the key it cannot read is an error naming the secret, and the others are served
        # (before: json's RecursionError escaped the fetch, and the snapshot never came ready)
        assert snapshot["values"] == {"DEEP_RAW": deep, "API_KEY": API_KEY}
        assert snapshot["errors"] == {"DEEP_PASSWORD": "secret DEEP_PASSWORD=secretsmanager:prod/deep#password is JSON nested too deep to read its key 'password'"}
        assert not snapshot["unavailable"]
    finally:
        store.stop()


def test_a_name_no_service_has_is_asked_of_aws_once_per_hold_however_often_it_is_requested(moto, clients):
    # GIVEN undeclared names allowed, and a function asking for a name that exists nowhere
    settings = store_settings("API_KEY=ssm:/prod/api/key", secrets_allow_undeclared=True)
    store = SecretStore(settings, clients)
    store.start()
    api = SecretsHttpApi(store, SESSION_TOKEN, settings)
    try:
        store.snapshot(10)
        before = len(aws_calls(moto))
        # WHEN it asks 20 times in a row, then 20 times at once
        for _ in range(20):
            assert get(api.ports[0], "/secrets/no/such/name")[0] == 404
        threads = [threading.Thread(target=get, args=(api.ports[0], "/secrets/no/such/name")) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        # THEN AWS was asked once in each service (the hold is far longer than these requests)
        assert ERROR_HOLD_S >= 5.0
        assert sorted(target for target, _ in aws_calls(moto)[before:]) == ["AmazonSSM.GetParameter", "secretsmanager.GetSecretValue"]
    finally:
        api.stop()
        store.stop()


def test_a_failure_answered_again_and_again_from_the_cache_holds_no_more_memory(moto, clients):
    import gc
    import tracemalloc

    # GIVEN a declared secret that does not exist, its failure held (not asked of AWS again)
    settings = store_settings("GONE=secretsmanager:does/not/exist")
    store = SecretStore(settings, clients)
    store.start()
    api = SecretsHttpApi(store, SESSION_TOKEN, settings)
    try:
        store.snapshot(10)
        for _ in range(20):  # the first requests fill the standard library's caches: not measured
            assert get(api.ports[0], "/secrets/GONE")[0] == 404
        # WHEN the function asks for it in a loop (by its name, and as the AWS extension's path)
        tracemalloc.start()
        try:
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(300):
                assert get(api.ports[0], "/secrets/GONE")[0] == 404
                assert get(api.ports[0], "/secretsmanager/get?secretId=does%2Fnot%2Fexist")[0] >= 400
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        # THEN the companion (whose memory is the function's) holds next to nothing more for it
        # (before: each answer raised the one cached error again, whose traceback kept every
        # request's frames, 5 MB for these 600, for as long as the failure was held: up to the TTL)
        assert held < 1_000_000, held
    finally:
        api.stop()
        store.stop()


def test_a_declared_secret_that_stays_missing_is_asked_of_aws_less_and_less_often(moto, clients):
    from lambdawrap.shared.secret_sources import source_key

    # GIVEN a declared secret that does not exist, and a function asking for it at every
    # invocation (secrets.get asks the companion again after each failure's hold)
    settings = store_settings("API_KEY=secretsmanager:never-created", ttl_s=300)
    key = source_key(settings.secrets[0])
    store = SecretStore(settings, clients)
    store.start()

    def fetches() -> int:
        return sum(1 for target, _ in aws_calls(moto) if target == "secretsmanager.GetSecretValue")

    try:
        wait_for(lambda: key in store._entries and store._entries[key].error is not None, timeout=30, what="the first fetch")
        for failures, hold_s in ((1, 5), (2, 10), (3, 20), (4, 40), (5, 80), (6, 160), (7, 300), (8, 300)):
            entry = store._entries[key]
            assert entry.failures == failures
            # WHEN it asks just before this failure's hold has passed THEN AWS is not asked...
            entry.fetched_at -= hold_s - 1.0
            before = fetches()
            store.snapshot(10)
            assert fetches() == before, f"asked again within the hold of failure {failures}"
            # ...and once it has passed, asked once more (before: every 5 s, all day long)
            entry.fetched_at -= 2.0
            store.snapshot(10)
            wait_for(lambda: fetches() == before + 1 and store._entries[key].failures == failures + 1, timeout=30, what=f"the fetch after failure {failures}")
    finally:
        store.stop()


def test_a_client_that_hangs_up_before_its_answer_leaves_no_traceback(capfd):
    answered = threading.Event()

    class SlowStore:  # our own store's interface; the answer is ready after the client has gone
        sources = []

        def answer(self, key):
            time.sleep(0.3)
            answered.set()
            return {"Name": "x", "SecretString": "never-sent"}

        def served(self, key, answer, value=None):
            pass

    def request_threads() -> set:
        return {t for t in threading.enumerate() if "process_request_thread" in t.name}

    earlier = request_threads()  # other servers' (an earlier test's keep-alive connections)
    api = SecretsHttpApi(SlowStore(), SESSION_TOKEN, Settings(secrets_port=0))
    failures = prebound_http._FAILURES.count
    try:
        # WHEN clients ask and hang up at once (a short urlopen timeout), with a reset
        for _ in range(5):
            client = socket.create_connection(("127.0.0.1", api.ports[0]))
            client.sendall(f"GET /secretsmanager/get?secretId=x HTTP/1.1\r\nHost: localhost\r\n{TOKEN_HEADER}: {SESSION_TOKEN}\r\n\r\n".encode())
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
        assert answered.wait(10)
        wait_for(lambda: not request_threads() - earlier, timeout=10, what="the request threads to finish")
        # THEN the API serves on, nothing was printed, nothing counted as our failure
        assert get(api.ports[0], "/secretsmanager/get?secretId=x")[0] == 200
        assert "Traceback" not in capfd.readouterr().err
        assert prebound_http._FAILURES.count == failures
    finally:
        api.stop()


def test_with_the_companions_loop_no_thread_waits_for_a_first_client(moto, clients):
    # GIVEN the API started as the companion starts it, its ports watched by the event loop
    from lambdawrap.companion.event_loop import EventLoop

    settings = store_settings("DB_PASSWORD=secretsmanager:prod/db#password")
    store = SecretStore(settings, clients)
    store.start()
    loop = EventLoop()
    stopped = threading.Event()
    serving = threading.Thread(target=loop.run_until, args=(stopped.is_set,), name="test-event-loop", daemon=True)
    serving.start()
    before = set(threading.enumerate())
    api = SecretsHttpApi(store, SESSION_TOKEN, settings, loop)
    try:
        # THEN no thread of the API's exists until a client comes (the freezer would stop and
        # restart it around every invocation)
        assert not [t.name for t in set(threading.enumerate()) - before if t.name.startswith("lambdawrap-secrets-api")]
        # WHEN the function asks
        assert get(api.ports[0], "/secrets/DB_PASSWORD") == (200, {"value": DB_PASSWORD})
        assert get(api.ports[0], "/secrets/DB_PASSWORD") == (200, {"value": DB_PASSWORD})
        # THEN it is answered, by the one server thread the first request started
        assert [t.name for t in set(threading.enumerate()) - before if t.name.startswith("lambdawrap-secrets-api")] == [f"lambdawrap-secrets-api-{api.ports[0]}"]
    finally:
        api.stop()
        store.stop()
        stopped.set()
        loop.call_soon_threadsafe()
        serving.join(10)


def test_a_client_that_comes_before_the_api_serves_waits_and_is_answered(moto, clients, tmp_path):
    from lambdawrap.companion.lifecycle import Companion
    from lambdawrap.companion.secrets_ports import bind_ports
    from lambdawrap.devtools.local.ports import free_port

    # GIVEN a companion made, not yet run: its startup thread, which starts the secret store
    # and the API, has not begun (at 128 MB it begins well after the function's runtime, which
    # the platform starts once the launcher has registered)
    port = free_port()
    sources, _ = parse_sources("DB_PASSWORD=secretsmanager:prod/db#password")
    settings = Settings(secrets=tuple(sources), region="us-east-1", secrets_port=port, sdk_disabled=True, socket_path=str(tmp_path / "lw.sock"))
    companion = Companion(None, settings)
    try:
        # THEN the API's port listens already: a function calling it as its module loads is
        # not refused (before: bound only as the API started, on that thread)
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        companion._close_secrets_ports()
        companion.socket.stop()
        companion.loop.close()
    # ... and a client that connected before the API existed is answered once it serves
    store = SecretStore(settings, clients)
    store.start()
    servers = bind_ports(settings)
    early = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        early.sendall(f"GET /secrets/DB_PASSWORD HTTP/1.1\r\nHost: localhost\r\n{TOKEN_HEADER}: {SESSION_TOKEN}\r\nConnection: close\r\n\r\n".encode())
        api = SecretsHttpApi(store, SESSION_TOKEN, settings, servers=servers)
        answer = b""
        while chunk := early.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(json.dumps({"value": DB_PASSWORD}).encode()), answer
        assert api.ports == [port]
    finally:
        early.close()
        for server in servers:
            server.stop()
        store.stop()


def test_exporter_headers_from_secrets_never_send_another_endpoint_s_credentials(moto, clients):
    # GIVEN the traces' headers kept as a secret whose every entry is refused ("name: value"),
    # and the metrics' headers as a secret, for a metrics endpoint that was ignored
    from lambdawrap.companion import exporter_secrets

    secrets = moto.client("secretsmanager")
    secrets.create_secret(Name="otlp/traces", SecretString="x-traces-key: T0KEN")
    secrets.create_secret(Name="otlp/metrics", SecretString="x-metrics-key=M0KEN")
    secrets.create_secret(Name="otlp/logs", SecretString=" ")  # blank: unset, as the variable's blank value is
    settings = store_settings("OTEL_EXPORTER_OTLP_TRACES_HEADERS=secretsmanager:otlp/traces,OTEL_EXPORTER_OTLP_METRICS_HEADERS=secretsmanager:otlp/metrics,OTEL_EXPORTER_OTLP_LOGS_HEADERS=secretsmanager:otlp/logs")
    store = SecretStore(settings, clients)
    store.start()
    environ = {"OTEL_EXPORTER_OTLP_HEADERS": "x-general-key=G"}
    warnings: list = []
    try:
        # WHEN the companion puts them in its environment for its exporters
        exporter_secrets.apply(store, exporter_secrets.declared(list(settings.secrets)), 10, lambda message, *args: warnings.append(message % args), environ, ignored=frozenset({"OTEL_EXPORTER_OTLP_METRICS_HEADERS"}))
    finally:
        store.stop()
    # THEN the traces send no header rather than the general ones (before: the variable was
    # unset, so the general key went to the traces' endpoint), and the metrics' key does not go
    # to the general endpoint; each is warned about, by name only
    assert environ == {"OTEL_EXPORTER_OTLP_HEADERS": "x-general-key=G", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": ","}, environ
    assert len(warnings) == 2 and not [w for w in warnings if "0KEN" in w], warnings
    assert any("OTEL_EXPORTER_OTLP_METRICS_HEADERS" in w and "endpoint was ignored" in w for w in warnings), warnings


def test_undeclared_secrets_the_api_served_are_searched_for_within_the_scrubber_s_bound(moto, clients):
    from lambdawrap.companion import secret_scrub
    from lambdawrap.companion.secret_scrub import SecretScrubber

    # GIVEN undeclared names allowed, and a function asking for more secrets than the scrubber
    # keeps texts for (a tenant's each)
    for n in range(secret_scrub.MAX_VALUES + 40):
        moto.client("secretsmanager").create_secret(Name=f"tenants/{n}", SecretString=f"tenant-key-{n:04d}-value")
    scrubber = SecretScrubber()
    settings = store_settings("API_KEY=ssm:/prod/api/key", secrets_allow_undeclared=True)
    with serving_the_api(settings, clients, scrubber) as (store, api):
        store.snapshot(10)
        # WHEN each is served
        for n in range(secret_scrub.MAX_VALUES + 40):
            assert get(api.ports[0], f"/secrets/tenants/{n}")[0] == 200
        # THEN the latest are searched for, the declared one too, and no more texts than the
        # bound (before: every undeclared value was kept for good, a search each per text)
        last = secret_scrub.MAX_VALUES + 39
        assert scrubber.text(f"key tenant-key-{last:04d}-value, {API_KEY}") == "key [REDACTED], [REDACTED]"
        assert len(scrubber._known) <= secret_scrub.MAX_VALUES



def test_a_value_past_its_ttl_is_served_where_no_thread_can_be_started(handler_cache, monkeypatch, caplog):
    from lambdawrap.shared.refresh_worker import RefreshWorker

    # GIVEN a value past its TTL, its refresh thread not started yet, and a process that can
    # start no thread (an atexit callback at the interpreter's exit; the limit of threads)
    monkeypatch.setattr(handler_cache, "_worker", RefreshWorker("lambdawrap-secrets-refresh", lambda: None))
    handler_cache._config.update(ttl=1.0, companion=True)
    handler_cache._cache["DB_PASSWORD"] = (DB_PASSWORD, 0.0)

    def no_thread(self):
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    # WHEN the function reads it, twice
    with caplog.at_level(logging.WARNING, logger="lambdawrap"):
        values = [handler_cache.get("DB_PASSWORD"), handler_cache.get("DB_PASSWORD")]
    # THEN it gets the value it holds (before: RuntimeError, raised into the function), and the
    # failure is logged once
    assert values == [DB_PASSWORD, DB_PASSWORD]
    assert sum("no thread could be started" in r.getMessage() for r in caplog.records) == 1


class Refusing:
    """The real boto3 clients, but Secrets Manager's GetSecretValue fails with `code`: always,
    or the next `times` calls."""

    def __init__(self, clients, code: str, times: int | None = None) -> None:
        self._clients, self._code, self.times = clients, code, times

    def __call__(self, service: str, region: str | None = None):
        client = self._clients(service)
        if service == "secretsmanager":
            from botocore.exceptions import ClientError

            read = client.get_secret_value

            def refused(**params):
                if self.times is not None:
                    if self.times <= 0:
                        return read(**params)
                    self.times -= 1
                raise ClientError({"Error": {"Code": self._code, "Message": "refused by the test"}}, "GetSecretValue")

            client.get_secret_value = refused
        return client


def test_after_a_refresh_that_failed_once_the_rotated_value_comes_within_the_hold_not_a_ttl_later(moto, clients, monkeypatch):
    from lambdawrap.companion import secret_store

    ttl_s = 8.0
    monkeypatch.setattr(secret_store, "ERROR_HOLD_S", 2.0)
    # GIVEN a declared secret, loaded, and rotated since
    refusing = Refusing(clients, "ThrottlingException", times=0)
    store = SecretStore(store_settings("DB_PASSWORD=secretsmanager:prod/db#password", ttl_s=ttl_s), refusing)
    store.start()
    try:
        fetched_at = time.monotonic() - store.snapshot(10)["ages"]["DB_PASSWORD"]
        moto.client("secretsmanager").put_secret_value(SecretId="prod/db", SecretString=ROTATED_SECRET)
        # WHEN its refresh at the TTL is throttled, once
        refusing.times = 1
        before = store.fetches
        wait_for(lambda: store.fetches > before, timeout=15, what="the refresh at the TTL")
        # THEN the old value is served with its true age, past the TTL (the function's process
        # asks again while it is so) ...
        after_failure = store.snapshot(1)
        assert after_failure["values"] == {"DB_PASSWORD": DB_PASSWORD} and after_failure["ages"]["DB_PASSWORD"] >= ttl_s - 0.1, after_failure
        # ... and the rotated value comes once the failure's hold is over (before: the failure
        # made the old value new again, served one TTL more, ages 0)
        wait_for(lambda: store.snapshot(1)["values"] == {"DB_PASSWORD": ROTATED_PASSWORD}, timeout=30, interval=0.05, what="the rotated value")
        assert time.monotonic() - fetched_at < ttl_s + 6.0  # one TTL more: 2 TTLs
        assert refusing.times == 0
    finally:
        store.stop()


@pytest.mark.parametrize("code, served", [("ThrottlingException", None), ("InternalServiceError", None), ("AccessDeniedException", "value-in-parameter-store"), ("ResourceNotFoundException", "value-in-parameter-store")])
def test_a_name_secrets_manager_fails_to_read_is_looked_for_in_parameter_store_only_if_it_is_not_there(moto, clients, code, served):
    # GIVEN undeclared names allowed, and a name both services hold
    moto.client("secretsmanager").create_secret(Name="stripe-key", SecretString="value-in-secrets-manager")
    moto.client("ssm").put_parameter(Name="stripe-key", Value="value-in-parameter-store", Type="SecureString")
    settings = store_settings("API_KEY=ssm:/prod/api/key", secrets_allow_undeclared=True)
    with serving_the_api(settings, Refusing(clients, code), None) as (store, api):
        store.snapshot(10)
        # WHEN Secrets Manager, asked first, fails to read it
        status, body = get(api.ports[0], "/?name=stripe-key")
    # THEN Parameter Store's value is served only where Secrets Manager does not have it or may
    # not give it; a passing failure is the answer (before: Parameter Store's value was served
    # while Secrets Manager was throttled, and Secrets Manager's again after)
    if served is None:
        assert (status, body["error"]) == (500, code), body
    else:
        assert (status, body) == (200, {"value": served})


def test_a_secret_the_function_keeps_asking_for_stays_searched_for_among_many_others(moto, clients):
    from lambdawrap.companion import secret_scrub
    from lambdawrap.companion.secret_scrub import SecretScrubber

    # GIVEN undeclared names allowed, and a function that asks for its own key at every request
    # and for one tenant's each time, more tenants than the scrubber keeps texts for
    moto.client("secretsmanager").create_secret(Name="service/key", SecretString="hot-key-5e6f7a8b-value")
    for n in range(secret_scrub.MAX_VALUES):
        moto.client("secretsmanager").create_secret(Name=f"tenants/{n}", SecretString=f"tenant-key-{n:04d}-value")
    scrubber = SecretScrubber()
    settings = store_settings("API_KEY=ssm:/prod/api/key", secrets_allow_undeclared=True)
    with serving_the_api(settings, clients, scrubber) as (store, api):
        store.snapshot(10)
        for n in range(secret_scrub.MAX_VALUES):
            assert get(api.ports[0], "/secrets/service/key")[0] == 200
            assert get(api.ports[0], f"/secrets/tenants/{n}")[0] == 200
        # THEN the key it keeps asking for is still searched for (before: served again, it was
        # not learned again, and it was the first forgotten though the most used)
        assert scrubber.text("key hot-key-5e6f7a8b-value") == "key [REDACTED]"


@pytest.mark.parametrize("path", ["/secrets/billing/keys", "/?name=billing/keys", "/secretsmanager/get?secretId=billing%2Fkeys"])
def test_a_secret_declared_by_one_key_and_served_whole_is_searched_for_whole(moto, clients, path):
    from lambdawrap.companion.secret_scrub import SecretScrubber

    # GIVEN a secret of two keys, one declared, and a plain parameter, not declared, that the
    # function also reads
    signing, webhook = "sign-key-0a1b2c3d4e", "hook-token-9f8e7d6c5b"
    moto.client("secretsmanager").create_secret(Name="billing/keys", SecretString=json.dumps({"signing": signing, "webhook": webhook}))
    moto.client("ssm").put_parameter(Name="/billing/table", Value="billing-ledger-table", Type="String")
    scrubber = SecretScrubber()
    settings = store_settings("SIGNING_KEY=secretsmanager:billing/keys#signing", secrets_allow_undeclared=True)
    with serving_the_api(settings, clients, scrubber) as (store, api):
        store.snapshot(10)
        # the declared key is searched for, the other not yet (the function has not got it)
        assert scrubber.text(f"{signing} {webhook}") == f"[REDACTED] {webhook}"
        # WHEN the function asks the secrets API for the whole secret by its id, and for the
        # parameter by its name
        status, body = get(api.ports[0], path)
        assert status == 200 and webhook in json.dumps(body), body
        assert get(api.ports[0], "/?name=/billing/table") == (200, {"value": "billing-ledger-table"})
        # THEN the key its declaration left out is searched for too (before: declaring one key
        # left the others unsearched, where a secret not declared at all was searched for whole);
        # a plain parameter, no secret, still is not
        assert scrubber.text(f"{signing} {webhook} billing-ledger-table") == "[REDACTED] [REDACTED] billing-ledger-table"


def test_a_secret_served_again_and_again_has_its_searched_forms_made_once(moto, clients, monkeypatch):
    from lambdawrap.companion import secret_store
    from lambdawrap.companion.secret_scrub import SecretScrubber

    made = []

    def counted(values):
        made.append(list(values))
        return searched_forms(values)

    from lambdawrap.shared.secret_forms import searched_forms

    monkeypatch.setattr(secret_store, "searched_forms", counted)
    # GIVEN a function that asks the AWS extension's path for a secret at every request
    scrubber = SecretScrubber()
    with serving_the_api(store_settings("API_KEY=ssm:/prod/api/key"), clients, scrubber) as (store, api):
        store.snapshot(10)
        for _ in range(20):
            assert get(api.ports[0], "/secretsmanager/get?secretId=prod%2Fdb")[0] == 200
    # THEN its forms were made once, not at each request (a PEM's or a large JSON secret's take
    # milliseconds), and it is searched for
    assert made == [[DB_SECRET]], made
    assert scrubber.text(f"x {DB_PASSWORD}") == "x [REDACTED]"


def test_the_forms_kept_of_served_secrets_are_bounded_by_their_size(moto, clients):
    from lambdawrap.companion import secret_store
    from lambdawrap.companion.secret_scrub import SecretScrubber

    # GIVEN 30 secrets of 30 fields each, read through the AWS extension's path (a tenant's each)
    for n in range(30):
        moto.client("secretsmanager").create_secret(Name=f"tenants/{n}", SecretString=json.dumps({f"field{k}": f"tenant-{n}-value-{k}-" + "v" * 600 for k in range(30)}))
    scrubber = SecretScrubber()
    with serving_the_api(store_settings("API_KEY=ssm:/prod/api/key"), clients, scrubber) as (store, api):
        store.snapshot(10)
        for n in [*range(30), 29, 29]:
            assert get(api.ports[0], f"/secretsmanager/get?secretId=tenants%2F{n}")[0] == 200
        # THEN the forms kept to serve them again hold no more than their bound (before: all
        # of them, some 4 MB here, 390 MB for 256 secrets of 63 KB, in the function's memory)
        held = sum(len(form) for forms in store._served.values() for form in forms)
        assert held == store._served_chars <= secret_store.MAX_SERVED_FORM_CHARS, held
        # ... and the last served is still searched for
        assert scrubber.text("tenant-29-value-3-" + "v" * 600) == "[REDACTED]"


def test_a_binary_secret_the_api_served_is_searched_for_as_base64_and_as_its_text(moto, clients):
    import base64

    from lambdawrap.companion.secret_scrub import SecretScrubber

    # GIVEN a private key kept as a binary secret, and a function that reads it through the AWS
    # extension's path (served whatever LAMBDAWRAP_SECRETS declares)
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----\n"
    moto.client("secretsmanager").create_secret(Name="tls/key", SecretBinary=pem.encode())
    scrubber = SecretScrubber()
    with serving_the_api(store_settings("API_KEY=ssm:/prod/api/key"), clients, scrubber) as (store, api):
        store.snapshot(10)
        status, body = get(api.ports[0], "/secretsmanager/get?secretId=tls%2Fkey")
    encoded = base64.b64encode(pem.encode()).decode()
    assert status == 200 and body["SecretBinary"] == encoded, body
    # THEN what the function may write of it is searched for: its base64 text, and each line of
    # the key it decodes (before: neither, a binary secret was no value to search for)
    assert scrubber.text(f"loaded {encoded}") == "loaded [REDACTED]"
    assert scrubber.text("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC") == "[REDACTED]"


def test_a_value_learned_past_the_bound_the_declared_secrets_fill_is_still_searched_for():
    from lambdawrap.companion import secret_scrub
    from lambdawrap.companion.secret_scrub import SecretScrubber

    # GIVEN declared secrets whose texts alone fill the scrubber's bound
    scrubber = SecretScrubber()
    for n in range(secret_scrub.MAX_VALUES + 10):
        scrubber.learn([f"declared-value-{n:04d}"], source=("secretsmanager", f"s{n}", None, None))
    # WHEN a value the secrets API served is learned (no source: not kept for good)
    scrubber.learn(["tenant/Key+With=Specials"])
    # THEN it is searched for, raw and escaped (before: forgotten as it was learned)
    assert scrubber.text("using tenant/Key+With=Specials and tenant%2FKey%2BWith%3DSpecials") == "using [REDACTED] and [REDACTED]"
