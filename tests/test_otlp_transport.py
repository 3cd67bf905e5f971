"""The companion's OTLP/HTTP transport (its own connection to a collector reached directly,
http.client through a proxy), against the exporters' own (requests): the same exporter, the
same collector, the same requests and the same outcomes; responses chunked or kept alive as real
servers write them; proxies as requests chooses them; TLS with the configured CA and client
certificate; one connection kept for many exports; and a close that never waits for a collector
that hangs."""

from __future__ import annotations

import base64
import contextlib
import gzip
import itertools
import json
import logging
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterable, Iterator
from urllib.parse import urlsplit

import pytest
import requests.utils
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from conftest import wait_for, write_function
from lambdawrap.companion.collector_answers import rejected_in_cut_answer
from lambdawrap.companion.collector_connection import MAX_ANSWER_BYTES, CollectorConnection
from lambdawrap.companion.otlp_transport import StdlibHTTPTransport, proxy_for, transport_from_env
from lambdawrap.devtools.otlp_receiver import OtlpReceiver
from lambdawrap.devtools.otlp_receiver.certificates import make_test_pki
from support.local_servers import closed_port, content_length, read_body, read_head
from support.scripted_server import ScriptedServer
from support.stack import instrumented

SPAN = ReadableSpan(
    name="GET /orders",
    context=SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(1)),
    kind=SpanKind.SERVER,
    resource=Resource({"service.name": "orders"}),
    attributes={"http.request.method": "GET", "http.response.status_code": 200},
    start_time=1_700_000_000_000_000_000,
    end_time=1_700_000_000_100_000_000,
)


class Collector:
    """An OTLP/HTTP collector on loopback (TLS optional) that answers with the statuses of
    `script` in turn (then 200) and records each request and the connection it came on."""

    def __init__(self, script: list | None = None, tls: ssl.SSLContext | None = None, hang_s: float = 0.0) -> None:
        self.requests: list = []
        self.script = list(script or [])
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                collector.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body, "connection": self.client_address[1]})
                if hang_s:
                    time.sleep(hang_s)
                status, extra = collector.script.pop(0) if collector.script else (200, {})
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.endpoint = f"{scheme}://localhost:{self._httpd.server_address[1]}/v1/traces"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> "Collector":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class LoopbackProxy:
    """A proxy on loopback, each connection handled by `_handle` on a thread of its own."""

    def __init__(self, credentials: str = "") -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://{credentials}127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        raise NotImplementedError


class ForwardProxy(LoopbackProxy):
    """An HTTP proxy on loopback: CONNECT tunnels and absolute-URI requests; records each."""

    def __init__(self) -> None:
        super().__init__("user:p%40ss@")
        self.seen: list = []

    def _handle(self, client: socket.socket) -> None:
        with client:
            request = read_head(client)
            if request is None:
                return
            head, rest = request
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            self.seen.append((method, target, headers.get("proxy-authorization")))
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                upstream = socket.create_connection((host, int(port)))
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                address = target.split("/")[2]
                host, _, port = address.rpartition(":")
                upstream = socket.create_connection((host, int(port)))
                path = "/" + target.split("/", 3)[3]
                forwarded = [f"{method} {path} HTTP/1.1"] + [line for line in lines[1:] if not line.lower().startswith("proxy-")]
                upstream.sendall("\r\n".join(forwarded).encode("latin-1") + b"\r\n\r\n" + rest)
            with upstream:
                self._pipe(client, upstream)

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        # poll, not select: late in a long suite the descriptors pass select's 1024 limit.
        poller = select.poll()
        by_fd = {a.fileno(): a, b.fileno(): b}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        while not self._stop.is_set():
            for fd, _ in poller.poll(500):
                sock = by_fd[fd]
                data = sock.recv(65536)
                if not data:
                    return
                (b if sock is a else a).sendall(data)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict:
    """A CA, a server certificate for localhost and a client certificate, made with openssl."""
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def server_tls(pki: dict, require_client: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server.pem"], pki["server.key"])
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki["ca.pem"])
    return context


def export_with(transport: StdlibHTTPTransport | None, endpoint: str, **kwargs: object) -> SpanExportResult:
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=5, _transport=transport, **kwargs)
    try:
        return exporter.export([SPAN])
    finally:
        exporter.shutdown()


@contextlib.contextmanager
def environment(monkeypatch, values: dict) -> Iterator[None]:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    yield


PROXY_CASES = [
    ({}, "https://collector.example:4318/v1/traces"),
    ({"HTTPS_PROXY": "http://proxy:3128"}, "https://collector.example:4318/v1/traces"),
    ({"HTTPS_PROXY": "http://proxy:3128"}, "http://collector.example:4318/v1/traces"),
    ({"HTTP_PROXY": "http://upper:1", "http_proxy": "http://lower:2"}, "http://collector.example/v1/traces"),
    ({"ALL_PROXY": "http://all:3"}, "https://collector.example/v1/traces"),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "example"}, "https://collector.example/v1/traces"),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": ".example"}, "https://collector.example/v1/traces"),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "collector.example:4318"}, "https://collector.example:4318/v1/traces"),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "collector.example:9999"}, "https://collector.example:4318/v1/traces"),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "other.example, collector.example"}, "https://collector.example/v1/traces"),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "*"}, "https://collector.example/v1/traces"),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "10.0.0.0/8"}, "https://10.1.2.3:4318/v1/traces"),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "10.0.0.0/8"}, "https://11.1.2.3:4318/v1/traces"),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "10.1.2.3"}, "https://10.1.2.3/v1/traces"),
    ({"HTTPS_PROXY": "http://proxy:3128", "no_proxy": "", "NO_PROXY": "collector.example"}, "https://collector.example/v1/traces"),
    ({"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "xample"}, "https://collector.example/v1/traces"),
    # a lower-case variable set empty says none, whatever the upper-case one says
    ({"HTTPS_PROXY": "http://proxy:3128", "https_proxy": ""}, "https://collector.example/v1/traces"),
    ({"HTTP_PROXY": "http://proxy:3128", "http_proxy": "", "ALL_PROXY": "http://all:3"}, "http://collector.example/v1/traces"),
]


@pytest.mark.parametrize("env, url", PROXY_CASES)
def test_the_proxy_is_the_one_requests_would_use(monkeypatch, env, url):
    with environment(monkeypatch, env):
        expected = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
        target = urlsplit(url)
        assert proxy_for(target.scheme, target.hostname, target.port, os.environ) == expected


def test_the_collector_receives_what_the_requests_transport_sends(monkeypatch):
    # gzip, custom headers from the environment, the exporter's own user agent: what matters to
    # the collector is byte for byte the same.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-team=orders,authorization=Bearer%20t0ken")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    with Collector() as collector:
        assert export_with(None, collector.endpoint) == SpanExportResult.SUCCESS
        assert export_with(StdlibHTTPTransport(), collector.endpoint) == SpanExportResult.SUCCESS
    theirs, ours = collector.requests
    assert ours["path"] == theirs["path"] == "/v1/traces"
    assert gzip.decompress(ours["body"]) == gzip.decompress(theirs["body"])
    for header in ("content-type", "content-encoding", "user-agent", "x-team", "authorization", "content-length"):
        assert ours["headers"].get(header) == theirs["headers"].get(header), header


@pytest.mark.parametrize(
    "script, expected, requests_made",
    [
        ([(503, {"Retry-After": "0"}), (200, {})], SpanExportResult.SUCCESS, 2),
        ([(429, {"retry-after": "0"}), (502, {"Retry-After": "0"}), (200, {})], SpanExportResult.SUCCESS, 3),
        ([(400, {})], SpanExportResult.FAILURE, 1),
    ],
)
def test_statuses_retries_and_redirects_as_with_requests(script, expected, requests_made):
    for transport in (None, StdlibHTTPTransport()):
        with Collector(script=script) as collector:
            assert export_with(transport, collector.endpoint) == expected
            assert len(collector.requests) == requests_made, transport


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_a_failed_export_not_a_delivered_one(status, caplog):
    # The exporters take any status below 400 as delivered, and requests follows no redirect
    # for them: with their own transport, every batch would be lost without a word.
    with Collector(script=[(status, {"Location": "https://elsewhere.example/v1/traces"})] * 2) as collector:
        assert export_with(None, collector.endpoint) == SpanExportResult.SUCCESS  # theirs
        with caplog.at_level(logging.ERROR):
            assert export_with(StdlibHTTPTransport(), collector.endpoint) == SpanExportResult.FAILURE
    assert len(collector.requests) == 2  # not retried at once, not followed
    assert any(f"answered {status}" in r.getMessage() and "https://elsewhere.example/v1/traces" in r.getMessage() for r in caplog.records), caplog.text


def test_a_redirect_is_reported_without_the_credentials_of_the_collectors_url(caplog):
    # GIVEN credentials in the endpoint's userinfo and query (a vendor's `?api-key=`), and a
    # redirect to a signed URL
    with Collector(script=[(308, {"Location": "https://elsewhere.example/v1/traces?X-Amz-Signature=s1gn3d"})]) as collector:
        url = collector.endpoint.replace("http://", "http://user:s3cr3t-key@") + "?api-key=k3y-in-query"
        with caplog.at_level(logging.ERROR):
            assert export_with(StdlibHTTPTransport(), url) == SpanExportResult.FAILURE
    # THEN the failure names both places, and none of the secrets
    said = [r.getMessage() for r in caplog.records if "answered 308" in r.getMessage()]
    assert said and collector.endpoint.replace("http://", "http://***@") in said[0] and "https://elsewhere.example/v1/traces" in said[0], caplog.text
    assert not [r for r in caplog.records if any(secret in r.getMessage() for secret in ("s3cr3t", "k3y-in-query", "s1gn3d"))], caplog.text


def test_an_unreachable_collector_is_a_connection_error_for_both():
    endpoint = f"http://127.0.0.1:{closed_port()}/v1/traces"
    ours = StdlibHTTPTransport()
    result = ours.request("POST", endpoint, data=b"x", timeout=2)
    assert result.error is not None and ours.is_connection_error(result.error)
    from opentelemetry.exporter.http.transport._requests import RequestsHTTPTransport

    theirs = RequestsHTTPTransport()
    assert theirs.is_connection_error(theirs.request("POST", endpoint, data=b"x", timeout=2).error)


def test_one_connection_serves_many_exports():
    transport = StdlibHTTPTransport()
    with Collector() as collector:
        exporter = OTLPSpanExporter(endpoint=collector.endpoint, _transport=transport)
        for _ in range(5):
            assert exporter.export([SPAN]) == SpanExportResult.SUCCESS
        exporter.shutdown()
    assert len(collector.requests) == 5 and len({r["connection"] for r in collector.requests}) == 1


def test_through_the_proxy_of_the_environment_with_its_credentials(monkeypatch, pki):
    with ForwardProxy() as proxy, Collector() as plain, Collector(tls=server_tls(pki)) as secure:
        with environment(monkeypatch, {"HTTP_PROXY": proxy.url, "HTTPS_PROXY": proxy.url}):
            assert export_with(StdlibHTTPTransport(), plain.endpoint) == SpanExportResult.SUCCESS
            assert export_with(StdlibHTTPTransport(verify=pki["ca.pem"]), secure.endpoint) == SpanExportResult.SUCCESS
        with environment(monkeypatch, {"HTTP_PROXY": proxy.url, "NO_PROXY": "localhost"}):
            assert export_with(StdlibHTTPTransport(), plain.endpoint) == SpanExportResult.SUCCESS
    credentials = "Basic " + base64.b64encode(b"user:p@ss").decode()
    assert proxy.seen == [("POST", plain.endpoint, credentials), ("CONNECT", secure.endpoint.split("/")[2], credentials)]
    assert len(plain.requests) == 2 and len(secure.requests) == 1


class MisbehavingProxy(LoopbackProxy):
    """A proxy on loopback that answers every request itself: 200 with `size` bytes of body at
    once, or a byte every 0.2 s for ever (`drip`)."""

    def __init__(self, size: int = 0, drip: str = "") -> None:
        super().__init__()
        self._size, self._drip = size, drip  # drip: "" (none), "answer" (from its status line), "body"

    def _handle(self, client: socket.socket) -> None:
        with client:
            request = read_head(client)
            if request is None:
                return
            try:
                if self._drip:
                    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000
                    if self._drip == "body":
                        head, _, answer = answer.partition(b"\r\n\r\n")
                        client.sendall(head + b"\r\n\r\n")
                    for byte in answer:
                        if self._stop.wait(0.2):
                            return
                        client.sendall(bytes((byte,)))
                    return
                client.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self._size)
                chunk = b"\0" * 65536
                for _ in range(self._size // len(chunk)):
                    client.sendall(chunk)
            except OSError:
                return


@pytest.mark.parametrize("misbehaviour", ["a 20 MB answer", "an answer a byte at a time", "a body a byte at a time"])
def test_a_proxy_s_answer_is_read_within_the_timeout_and_the_answer_limit(monkeypatch, misbehaviour):
    # GIVEN the collector behind a proxy that answers with 20 MB, or a byte every 0.2 s from its
    # status line, or from its body
    with MisbehavingProxy(size=20 * 1024 * 1024, drip=misbehaviour.split()[1] if "byte" in misbehaviour else "") as proxy:
        with environment(monkeypatch, {"HTTP_PROXY": proxy.url}):
            transport = StdlibHTTPTransport()
            started = time.monotonic()
            # WHEN a request with a 2 s timeout goes through it
            result = transport.request("POST", "http://collector.example:4318/v1/traces", data=b"spans", timeout=2.0)
            took = time.monotonic() - started
    # THEN the answer is its status with its first 64 KiB, not 20 MB held in memory; or the
    # request ends at its timeout (before: http.client's timeout was each read's, and the export
    # waited as long as the proxy dripped)
    if misbehaviour == "a 20 MB answer":
        assert (result.status_code, result.error) == (200, None)
        assert result.body == b"\0" * MAX_ANSWER_BYTES
    elif misbehaviour == "an answer a byte at a time":
        assert isinstance(result.error, TimeoutError), result.error
        assert took < 30, took
    else:
        # ... and an answer whose status came is that status, its body empty, as a collector's
        # own (before: a timeout, and spans the collector had taken were sent again)
        assert (result.status_code, result.error, result.body) == (200, None, b""), result
        assert took < 30, took


def test_spans_a_collector_behind_a_proxy_accepted_are_not_sent_again_when_its_body_is_cut(monkeypatch):
    # GIVEN a collector behind a proxy that answers 200 and closes the connection inside the
    # answer's chunked body
    class CutProxy(LoopbackProxy):
        requests = 0

        def _handle(self, client: socket.socket) -> None:
            with client:
                if read_head(client) is not None:
                    CutProxy.requests += 1
                    client.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")

    with CutProxy() as proxy:
        with environment(monkeypatch, {"HTTP_PROXY": proxy.url}):
            # WHEN a request goes through it
            result = StdlibHTTPTransport().request("POST", "http://collector.example:4318/v1/traces", data=b"spans", timeout=5.0)
    # THEN the answer is its status (before: IncompleteRead, taken for no answer, and the spans
    # were sent again at every flush, then counted as dropped)
    assert (result.status_code, result.error, result.body, CutProxy.requests) == (200, None, b"", 1), result


class KeptAliveProxy(LoopbackProxy):
    """A proxy on loopback answering each request of a kept-alive connection itself, 200 with
    a body of two bytes, counting requests and connections."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = self.connections = 0

    def _handle(self, client: socket.socket) -> None:
        self.connections += 1
        pending = b""
        with client:
            while True:
                request = read_head(client, pending)
                if request is None:
                    return
                head, pending = request
                read = read_body(client, pending, content_length(head))
                if read is None:
                    return
                pending = read[1]
                self.requests += 1
                client.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")


def test_requests_through_a_proxy_go_once_each_on_one_connection(monkeypatch):
    # GIVEN a collector behind a proxy that keeps its connections alive
    with KeptAliveProxy() as proxy:
        with environment(monkeypatch, {"HTTP_PROXY": proxy.url}):
            transport = StdlibHTTPTransport()
            # WHEN three requests go through it
            results = [transport.request("POST", "http://collector.example:4318/v1/traces", data=b"spans", timeout=5.0) for _ in range(3)]
    # THEN each is answered, on the one connection, and went once (before: the answer's end was
    # never read, http.client took the next request on the connection for unanswered, and the
    # exporter sent it again on another: stored twice)
    assert [(r.status_code, r.error) for r in results] == [(200, None)] * 3
    assert (proxy.requests, proxy.connections) == (3, 1)


def test_requests_through_a_proxy_leave_no_thread_behind(monkeypatch):
    def timers() -> list:
        return [thread for thread in threading.enumerate() if isinstance(thread, threading.Timer)]

    # GIVEN a collector behind a proxy, and a long timeout
    with KeptAliveProxy() as proxy:
        with environment(monkeypatch, {"HTTP_PROXY": proxy.url}):
            transport = StdlibHTTPTransport()
            # WHEN fifty requests are answered at once
            results = [transport.request("POST", "http://collector.example:4318/v1/traces", data=b"spans", timeout=60.0) for _ in range(50)]
            # THEN no timer outlives its request (before: each request's watch waited out its
            # timeout, a thread per request: fifty here, past Lambda's 1,024 in a flood)
            deadline = time.monotonic() + 30
            while timers() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert timers() == []
    assert [r.error for r in results] == [None] * 50


def test_a_proxy_whose_connection_comes_late_is_still_cut_off_at_the_timeout(monkeypatch):
    # GIVEN a proxy answering a byte every 0.2 s, reached only after most of the timeout (a slow
    # name lookup: the request's socket does not exist yet when its deadline comes)
    import http.client

    connect = http.client.HTTPConnection.connect

    def late(self):
        time.sleep(1.5)
        connect(self)

    monkeypatch.setattr(http.client.HTTPConnection, "connect", late)
    with MisbehavingProxy(drip="answer") as proxy:
        with environment(monkeypatch, {"HTTP_PROXY": proxy.url}):
            started = time.monotonic()
            result = StdlibHTTPTransport().request("POST", "http://collector.example:4318/v1/traces", data=b"spans", timeout=1.0)
            took = time.monotonic() - started
    # THEN the request ends once its socket is made, as a timeout (before: the cut found no
    # socket and did nothing, and the request waited for the whole drip, 200 s)
    assert isinstance(result.error, TimeoutError), result.error
    assert took < 30, took


def test_a_proxy_reached_over_tls_is_not_used_in_the_clear(monkeypatch, caplog):
    # GIVEN the environment naming a proxy reached over TLS (https://), with credentials
    with ForwardProxy() as proxy, Collector() as collector:
        tls_proxy = proxy.url.replace("http://", "https://")
        with environment(monkeypatch, {"HTTP_PROXY": tls_proxy, "HTTPS_PROXY": tls_proxy}):
            # WHEN spans are exported to a plain-HTTP collector
            with caplog.at_level(logging.WARNING, logger="lambdawrap"):
                assert export_with(StdlibHTTPTransport(), collector.endpoint) == SpanExportResult.SUCCESS
    # THEN the proxy heard nothing (before: it was spoken to in the clear, on port 80 unless
    # named, the proxy's credentials and the collector's headers with it), and one line says so,
    # without the credentials
    assert proxy.seen == [] and len(collector.requests) == 1
    warned = [r.getMessage() for r in caplog.records if "HTTP_PROXY" in r.getMessage()]
    assert len(warned) == 1 and "over TLS is not supported" in warned[0] and "p%40ss" not in warned[0], warned


def test_credentials_in_the_collectors_url_go_as_requests_sends_them(monkeypatch):
    # GIVEN a collector URL holding Basic credentials (percent-encoded), and an Authorization
    # header from the environment, which requests replaces with them
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20other,x-team=orders")
    with Collector() as collector, ForwardProxy() as proxy:
        url = collector.endpoint.replace("http://", "http://us%40er:p%3Ass@")
        # WHEN both transports export to it, and ours through a plain-HTTP proxy too
        with environment(monkeypatch, {}):
            assert export_with(None, url) == SpanExportResult.SUCCESS
            assert export_with(StdlibHTTPTransport(), url) == SpanExportResult.SUCCESS
        with environment(monkeypatch, {"HTTP_PROXY": proxy.url}):
            assert export_with(StdlibHTTPTransport(), url) == SpanExportResult.SUCCESS
    # THEN the collector got the same credentials from each (before: none from ours, and every
    # export to such a collector was refused) ...
    expected = "Basic " + base64.b64encode(b"us@er:p:ss").decode()
    assert [r["headers"].get("authorization") for r in collector.requests] == [expected] * 3, collector.requests
    assert {r["headers"].get("x-team") for r in collector.requests} == {"orders"}
    # ... and the proxy was given the URL without them (before: in its request line)
    assert [target for _, target, _ in proxy.seen] == [collector.endpoint], proxy.seen


@pytest.mark.parametrize("userinfo", ["svc-user@", "svc-user:@", ":key@", "@"])
def test_a_url_s_user_name_without_a_password_sends_no_credentials_as_with_requests(monkeypatch, userinfo):
    # GIVEN a collector URL with a user name and no password (or no name), and an
    # Authorization header from the environment
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20configured")
    with Collector() as collector, environment(monkeypatch, {}):
        url = collector.endpoint.replace("http://", "http://" + userinfo)
        # WHEN the exporters' own transport (requests) and ours export to it
        assert export_with(None, url) == SpanExportResult.SUCCESS
        assert export_with(StdlibHTTPTransport(), url) == SpanExportResult.SUCCESS
    # THEN ours sent what requests sent: the configured header unless the URL holds a password
    # (before: "svc-user@" replaced it with Basic "svc-user:", and the collector refused every export)
    sent = [r["headers"].get("authorization") for r in collector.requests]
    assert len(sent) == 2 and sent[1] == sent[0], sent
    assert (sent[0] == "Bearer configured") == (":" not in userinfo), sent


@pytest.mark.parametrize("userinfo", ["svc-user@", "svc-user:@", ":key@"])
def test_a_proxy_url_s_user_name_without_a_password_sends_what_requests_sends(monkeypatch, userinfo):
    with Collector() as collector, ForwardProxy() as proxy:
        proxy_url = proxy.url.replace("user:p%40ss@", userinfo)
        with environment(monkeypatch, {"HTTP_PROXY": proxy_url}):
            assert export_with(None, collector.endpoint) == SpanExportResult.SUCCESS
            assert export_with(StdlibHTTPTransport(), collector.endpoint) == SpanExportResult.SUCCESS
    # THEN the proxy got the same credentials from each: none without a user name and a password
    # (before: ours sent "svc-user:" where requests sends none)
    assert len(proxy.seen) == 2 and proxy.seen[1][2] == proxy.seen[0][2], proxy.seen


def test_tls_with_the_configured_ca_and_client_certificate(monkeypatch, pki):
    with Collector(tls=server_tls(pki, require_client=True)) as collector, environment(monkeypatch, {}):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", pki["ca.pem"])
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", pki["client.pem"])
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY", pki["client.key"])
        assert export_with(transport_from_env("TRACES"), collector.endpoint) == SpanExportResult.SUCCESS
        assert export_with(None, collector.endpoint) == SpanExportResult.SUCCESS  # the exporter's own, for parity
        # The one difference: requests lets REQUESTS_CA_BUNDLE override the configured CA; the
        # OTLP setting is the one that says which collector to trust, and it wins here.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", pki["client.pem"])
        assert export_with(transport_from_env("TRACES"), collector.endpoint) == SpanExportResult.SUCCESS
        # Without the CA, the collector's certificate is refused: no request reaches it.
        monkeypatch.delenv("OTEL_EXPORTER_OTLP_CERTIFICATE")
        monkeypatch.delenv("REQUESTS_CA_BUNDLE")
        transport = transport_from_env("TRACES")
        result = transport.request("POST", collector.endpoint, data=b"", timeout=5)
        assert isinstance(result.error, ssl.SSLError) and transport.is_connection_error(result.error)
    assert len(collector.requests) == 3


def test_a_ca_folder_in_requests_ca_bundle_verifies_as_requests_verifies(monkeypatch, pki, tmp_path):
    # GIVEN REQUESTS_CA_BUNDLE naming a folder of hashed CA certificates (as c_rehash makes it),
    # which requests takes as a CA path, and no OTLP certificate of its own
    folder = tmp_path / "cas"
    folder.mkdir()
    shutil.copy(pki["ca.pem"], folder / "ca.pem")
    subprocess.run(["openssl", "rehash", str(folder)], check=True, capture_output=True, timeout=30)
    with Collector(tls=server_tls(pki)) as collector, environment(monkeypatch, {"REQUESTS_CA_BUNDLE": str(folder)}):
        # WHEN the exporters' own transport (requests) and ours export to a collector it signed
        assert export_with(None, collector.endpoint) == SpanExportResult.SUCCESS
        # THEN ours verifies with it too (before: read as a file, every export failed)
        assert export_with(transport_from_env("TRACES"), collector.endpoint) == SpanExportResult.SUCCESS
    assert len(collector.requests) == 2


def test_a_ca_bundle_variable_naming_no_certificates_is_a_bad_value(pki, tmp_path, caplog):
    from lambdawrap.shared.settings import Settings

    not_pem = tmp_path / "ca.der"
    not_pem.write_bytes(b"0\x82\x01\x0a")
    cases = {"/no/such/bundle.pem": True, str(not_pem): True, pki["ca.pem"]: False, str(ca_folder(tmp_path, pki)): False}
    for path, bad in cases.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="lambdawrap"):
            corrections = Settings.from_env({"REQUESTS_CA_BUNDLE": path, "CURL_CA_BUNDLE": pki["ca.pem"]}).sdk_corrections
        # THEN a path that is neither a PEM file nor a folder is named once, and the companion
        # verifies with the default (before: every export over https failed, naming nothing)
        warnings = [r.getMessage() for r in caplog.records]
        if bad:
            assert len(warnings) == 1 and f"ignoring REQUESTS_CA_BUNDLE={path!r}" in warnings[0] and "using the default (certifi's bundle)" in warnings[0], warnings
            assert {("REQUESTS_CA_BUNDLE", None), ("CURL_CA_BUNDLE", None)} <= set(corrections)
        else:
            assert warnings == [] and not [c for c in corrections if c[0].endswith("_CA_BUNDLE")], (path, warnings, corrections)


def test_the_signals_share_one_tls_context_per_set_of_tls_settings(monkeypatch, pki):
    # Each context reads its CA bundle (~25 ms of CPU for certifi's): once per set of settings.
    with Collector(tls=server_tls(pki)) as collector, environment(monkeypatch, {"OTEL_EXPORTER_OTLP_CERTIFICATE": pki["ca.pem"]}):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE", pki["client.pem"])
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY", pki["client.key"])
        transports = {signal: transport_from_env(signal) for signal in ("TRACES", "METRICS", "LOGS")}
        contexts = {}
        made = [threading.Thread(target=lambda s=s: contexts.__setitem__(s, transports[s]._tls())) for s in transports]
        for thread in made:
            thread.start()
        for thread in made:
            thread.join(30)
        assert contexts["TRACES"] is contexts["METRICS"]
        assert contexts["LOGS"] is not contexts["TRACES"]  # its own client certificate
        for transport in transports.values():
            assert export_with(transport, collector.endpoint) == SpanExportResult.SUCCESS
    assert len(collector.requests) == 3


def test_a_credential_provider_keeps_the_exporters_own_transport(monkeypatch):
    monkeypatch.setenv("OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER", "custom")
    assert transport_from_env("TRACES") is None
    assert transport_from_env("METRICS") is not None


def test_close_never_waits_for_a_collector_that_hangs():
    transport = StdlibHTTPTransport()
    with Collector(hang_s=10.0) as collector:
        worker = threading.Thread(target=lambda: transport.request("POST", collector.endpoint, data=b"x", timeout=20))
        worker.start()
        deadline = time.monotonic() + 10
        while not collector.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        transport.close()
        assert time.monotonic() - started < 3.0  # the collector hangs 10 s
        worker.join(25)


CHUNKED_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"


@pytest.fixture
def scripted():
    servers = []

    def make(scripts: list) -> ScriptedServer:
        servers.append(ScriptedServer(scripts))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


def test_chunked_answers_on_one_kept_alive_connection(scripted):
    # Collectors behind envoy or nginx answer chunked: the export succeeds, as with requests,
    # and the connection serves the next exports.
    server = scripted([[CHUNKED_OK] * 3, [CHUNKED_OK]])
    endpoint = f"http://127.0.0.1:{server.port}/v1/traces"
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=5, _transport=StdlibHTTPTransport(environ={}))
    try:
        for _ in range(3):
            assert exporter.export([SPAN]) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert server.connections == 1 and server.requests == [b"POST /v1/traces HTTP/1.1"] * 3
    assert export_with(None, endpoint) == SpanExportResult.SUCCESS  # requests, for parity


def test_a_kept_alive_connection_the_collector_closed_is_replaced_within_the_export(scripted, monkeypatch):
    from opentelemetry.exporter.otlp.common.http import _OTLPHTTPClient

    # The collector closes the idle connection after one answer; the next export goes out on a
    # new connection at once: within the exporter's one attempt, not after its back-off (~1 s).
    attempts = []
    compute_backoff = _OTLPHTTPClient._compute_backoff
    monkeypatch.setattr(_OTLPHTTPClient, "_compute_backoff", lambda self, retry: attempts.append(retry) or compute_backoff(self, retry))
    server = scripted([[CHUNKED_OK, None], [CHUNKED_OK]])
    transport = StdlibHTTPTransport(environ={})
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{server.port}/v1/traces", timeout=5, _transport=transport)
    try:
        assert exporter.export([SPAN]) == SpanExportResult.SUCCESS
        del attempts[:]
        assert exporter.export([SPAN]) == SpanExportResult.SUCCESS
        assert attempts == [0]  # the exporter made one attempt: no back-off waited for
    finally:
        exporter.shutdown()
    assert server.connections == 2


def protobuf_post(transport: StdlibHTTPTransport, endpoint: str, timeout: float = 5) -> object:
    """One request straight through the transport: no exporter to retry what fails."""
    return transport.request("POST", endpoint + "/v1/traces", headers={"Content-Type": "application/x-protobuf"}, data=b"", timeout=timeout)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_a_connection_the_collector_closed_while_idle_is_not_used(monkeypatch, pki, tls):
    # Collectors close idle connections; the next request must not be sent on one (it would
    # fail, to be retried by the exporter), but on a new one, and succeed at the first try.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", pki["ca.pem"])
    with OtlpReceiver(tls=(pki["server.pem"], pki["server.key"]) if tls else None, idle_timeout_s=0.3) as rx:
        transport = transport_from_env("TRACES")
        assert protobuf_post(transport, rx.endpoint).status_code == 200
        wait_for(lambda: rx.open_connections == 0, timeout=30, what="the collector to close the idle connection")
        result = protobuf_post(transport, rx.endpoint)
        assert (result.status_code, result.error) == (200, None)
        assert rx.connections_accepted == 2


def test_a_connection_made_ahead_is_the_one_the_next_request_takes(monkeypatch, pki):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", pki["ca.pem"])
    with OtlpReceiver(tls=(pki["server.pem"], pki["server.key"]), connect_delay_s=0.5) as rx:
        transport = transport_from_env("TRACES")
        url = rx.endpoint + "/v1/traces"
        assert transport.connect_ahead(url, 5)
        assert not transport.connect_ahead(url, 5)  # one is being made
        # Asked for while it is being made: the request waits for it rather than make another.
        assert protobuf_post(transport, rx.endpoint).status_code == 200
        assert not transport.connect_ahead(url, 5)  # one is idle, and open
        assert protobuf_post(transport, rx.endpoint).status_code == 200
        assert rx.connections_accepted == 1
        wall_s, cpu_s = transport.set_up(url)
        assert 0.5 <= wall_s < 30 and 0 < cpu_s < wall_s


def test_a_request_waits_for_a_connection_made_ahead_no_longer_than_its_timeout(monkeypatch, pki):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", pki["ca.pem"])
    with OtlpReceiver(tls=(pki["server.pem"], pki["server.key"]), connect_delay_s=3.0) as rx:
        transport = transport_from_env("TRACES")
        assert transport.connect_ahead(rx.endpoint + "/v1/traces", 10)
        started = time.monotonic()
        result = protobuf_post(transport, rx.endpoint, timeout=0.5)
        assert time.monotonic() - started < 2.5
        assert isinstance(result.error, TimeoutError) and transport.is_connection_error(result.error)


def test_a_thread_that_cannot_start_leaves_the_request_to_connect_itself(monkeypatch):
    def refused(self):
        raise MemoryError

    with OtlpReceiver() as rx:
        transport = StdlibHTTPTransport(environ={})
        # Not only RuntimeError: whatever stops the thread, no request may wait for it.
        monkeypatch.setattr(threading.Thread, "start", refused)
        assert not transport.connect_ahead(rx.endpoint + "/v1/traces", 5, nice=10)
        monkeypatch.undo()
        started = time.monotonic()
        assert protobuf_post(transport, rx.endpoint, timeout=5).status_code == 200
        assert time.monotonic() - started < 2.5


def test_a_connection_is_made_ahead_where_its_priority_cannot_be_lowered(monkeypatch):
    def refused(*args):
        raise PermissionError("not permitted")

    monkeypatch.setattr(os, "setpriority", refused)
    with OtlpReceiver(connect_delay_s=0.3) as rx:
        transport = StdlibHTTPTransport(environ={})
        assert transport.connect_ahead(rx.endpoint + "/v1/traces", 5, nice=10)
        wait_for(lambda: rx.connections_accepted == 1, timeout=30, what="the connection made ahead")
        assert protobuf_post(transport, rx.endpoint).status_code == 200
        assert rx.connections_accepted == 1


def readable_within(sock: socket.socket, timeout_s: float) -> bool:
    # poll, not select: a long test run has descriptors above select's 1,024.
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(timeout_s * 1000))


def test_a_new_tls_connection_with_its_session_tickets_waiting_is_not_taken_for_closed(pki):
    # A TLS 1.3 server sends session tickets after the handshake: the idle socket is readable
    # with no data for the application, and must not be discarded as one the collector closed.
    client = ssl.create_default_context(cafile=pki["ca.pem"])
    with OtlpReceiver(tls=(pki["server.pem"], pki["server.key"]), idle_timeout_s=0.5) as rx:
        conn = CollectorConnection("localhost", rx.port, client, 5)
        try:
            assert readable_within(conn.sock, 10), "no session ticket came"
            assert not conn.dropped()
            status, *_ = conn.request("POST", "/v1/traces", {"Content-Type": "application/x-protobuf"}, b"", 5)
            assert status == 200
            assert readable_within(conn.sock, 10)  # the collector closes it, idle
            assert conn.dropped()
        finally:
            conn.close()


def test_a_header_that_would_split_the_request_is_refused_before_anything_is_sent():
    transport = StdlibHTTPTransport(environ={})
    with Collector() as collector:
        result = transport.request("POST", collector.endpoint, headers={"x-team": "a\r\nX-Injected: 1"}, data=b"x", timeout=5)
        assert isinstance(result.error, ValueError) and not transport.is_connection_error(result.error)
        # The connection is not left half-used: the next request goes through.
        assert transport.request("POST", collector.endpoint, data=b"x", timeout=5).status_code == 200
    assert [r["body"] for r in collector.requests] == [b"x"]


def test_response_headers_are_looked_up_whatever_their_case():
    with Collector(script=[(503, {"Retry-After": "7"})]) as collector:
        result = StdlibHTTPTransport(environ={}).request("POST", collector.endpoint, data=b"x", timeout=5)
    assert result.status_code == 503 and result.reason == "Service Unavailable"
    assert result.headers().get("retry-after") == result.headers()["RETRY-AFTER"] == "7" and "Retry-After" in result.headers()


EXPORT_PROBE = """
import json, sys
from lambdawrap.companion import metadata_on_demand
metadata_on_demand.install()  # as make_exporters does
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from lambdawrap.companion.otlp_transport import StdlibHTTPTransport
exporter = OTLPSpanExporter(endpoint=sys.argv[1], timeout=5, _transport=StdlibHTTPTransport())
result = exporter.export([])
print(json.dumps({"result": result.name, "loaded": sorted(m for m in ("http.client", "ssl", "email.parser", "requests", "urllib3", "encodings.idna", "importlib.metadata") if m in sys.modules)}))
"""


def test_exporting_to_a_plain_http_collector_loads_neither_http_client_nor_ssl():
    # Their imports cost ~7 ms of CPU on a full core, ~100 ms of wall time at 128 MB; the IDNA
    # codec (getaddrinfo's for a str host) ~1 ms more.
    with Collector() as collector:
        out = subprocess.run([sys.executable, "-c", EXPORT_PROBE, collector.endpoint], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"result": "SUCCESS", "loaded": []}


@pytest.mark.parametrize(
    "host, port, default",
    [("collector.example", None, 443), ("collector.example", 4318, 443), ("collector.example", 443, 443), ("127.0.0.1", 80, 80), ("::1", 4318, 80), ("bücher.example", 4318, 443), ("例え.jp", None, 443)],
)
def test_the_host_header_is_the_one_http_client_writes(host, port, default):
    import http.client

    from lambdawrap.companion.collector_connection import host_header

    kind = http.client.HTTPSConnection if default == 443 else http.client.HTTPConnection
    connection = kind(host, port or default)  # never connected: putrequest only formats
    connection.putrequest("POST", "/v1/traces")
    written = next(line for line in connection._buffer if line.startswith(b"Host: "))  # type: ignore[attr-defined]
    assert host_header(host, port, default) == written[len(b"Host: ") :].decode("ascii")


@pytest.mark.parametrize("url", ["http://c:4318/v1/traces", "http://c:4318/v1/traces x", "http://c/a%20b/ü?x=1 2&y=é", "https://c/p;v=1?a=%2F&b=[1]"])
def test_the_request_path_is_the_one_requests_sends(url):
    from lambdawrap.companion.otlp_transport import _route

    assert _route(url, {})[1] == requests.Request("POST", url).prepare().path_url


def test_a_length_given_twice_is_read_at_once_and_a_garbled_answer_is_a_connection_error(scripted):
    twice = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n"
    server = scripted([[twice, b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n"]])
    transport = StdlibHTTPTransport(environ={})
    endpoint = f"http://127.0.0.1:{server.port}/v1/traces"
    assert transport.request("POST", endpoint, data=b"x", timeout=30).status_code == 200
    result = transport.request("POST", endpoint, data=b"x", timeout=30)
    # A connection error: the exporter retries it at once, on a new connection.
    assert result.error is not None and transport.is_connection_error(result.error)


@pytest.mark.parametrize("host", ["collector.example", "127.0.0.1", "::1", "", "localhost.", "a..b", ".a", "a." * 3, "x" * 63 + ".example", "x" * 64 + ".example", "example." + "x" * 64, "bücher.example"])
def test_a_name_is_looked_up_as_the_idna_codec_would_pass_it(host):
    # getaddrinfo puts a str through the IDNA codec; an ASCII name goes as bytes instead (no
    # codec import in init), with the codec's own check: a malformed one still fails at once.
    from lambdawrap.companion.collector_connection import _lookup_name

    try:
        expected = host.encode("idna")
    except UnicodeError as exc:
        with pytest.raises(UnicodeError):
            _lookup_name(host)
        assert host.isascii(), exc
        return
    looked_up = _lookup_name(host)
    assert (looked_up if isinstance(looked_up, bytes) else looked_up.encode("idna")) == expected
    assert isinstance(looked_up, bytes) == host.isascii()


def test_a_certificate_file_that_is_not_there_is_named_once_and_the_default_used(tmp_path, pki):
    # GIVEN an https collector of a private CA, configured for every signal, and a traces
    # certificate that names a file that is not there
    task = write_function(tmp_path / "task", "def handler(event, context):\n    return {'ok': True}\n")
    missing = str(tmp_path / "no-such-ca.pem")
    env = {"OTEL_EXPORTER_OTLP_CERTIFICATE": pki["ca.pem"], "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": missing}
    with OtlpReceiver(tls=(pki["server.pem"], pki["server.key"])) as rx, instrumented(task, env=env, receiver=rx) as (emu, _):
        # WHEN the function runs
        result = emu.invoke({})
        # THEN its span goes, verified with the general certificate (before: every export of
        # spans failed with "No such file or directory", retried as a failed connection for
        # the exporter's whole timeout, naming neither the file nor the variable)
        rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id, timeout=30)
        lines = emu.log_lines("extension") + emu.log_lines("function")
    said = [line for line in lines if "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE" in line]
    assert len(said) == 1 and repr(missing) in said[0] and "using the default from OTEL_EXPORTER_OTLP_CERTIFICATE" in said[0], said


def test_a_certificate_file_that_is_not_pem_is_named_once_and_the_default_used(tmp_path, pki):
    # GIVEN an https collector of a private CA, configured for every signal, and a traces
    # certificate that is the CA in DER (as a vendor's .crt often comes), which the exporters
    # cannot read: they read PEM only
    task = write_function(tmp_path / "task", "def handler(event, context):\n    return {'ok': True}\n")
    der = tmp_path / "ca.crt"
    subprocess.run(["openssl", "x509", "-in", pki["ca.pem"], "-outform", "der", "-out", str(der)], check=True, capture_output=True, timeout=60)
    env = {"OTEL_EXPORTER_OTLP_CERTIFICATE": pki["ca.pem"], "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": str(der)}
    with OtlpReceiver(tls=(pki["server.pem"], pki["server.key"])) as rx, instrumented(task, env=env, receiver=rx) as (emu, _):
        # WHEN the function runs
        result = emu.invoke({})
        # THEN its span goes, verified with the general certificate (before: every export of
        # spans failed with "[X509: NO_CERTIFICATE_OR_CRL_FOUND]", retried as a failed
        # connection, naming neither the file nor the variable)
        rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id, timeout=30)
        lines = emu.log_lines("extension") + emu.log_lines("function")
    said = [line for line in lines if "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE" in line]
    assert len(said) == 1 and repr(str(der)) in said[0] and "using the default from OTEL_EXPORTER_OTLP_CERTIFICATE" in said[0], said


def ca_folder(tmp_path, pki, hashed: bool = True):
    """A folder holding the test CA, with the hashed names OpenSSL looks a CA up by (as
    `openssl rehash` makes them) or without."""
    folder = tmp_path / ("cas" if hashed else "cas-unhashed")
    folder.mkdir()
    shutil.copy(pki["ca.pem"], folder / "ca.pem")
    if hashed:
        subprocess.run(["openssl", "rehash", str(folder)], check=True, capture_output=True, timeout=30)
    return folder


def test_a_ca_folder_in_the_otlp_certificate_verifies_over_http_and_the_grpc_signals_use_the_default(tmp_path, pki):
    # GIVEN OTEL_EXPORTER_OTLP_CERTIFICATE naming a folder of hashed CA certificates, an https
    # collector that CA signed for spans (OTLP/HTTP), and metrics over gRPC, whose exporter reads
    # one file (a folder failed its start), to an https endpoint that answers nothing
    folder = ca_folder(tmp_path, pki)
    task = write_function(tmp_path / "task", "def handler(event, context):\n    return {'ok': True}\n")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nobody = f"https://127.0.0.1:{closed.getsockname()[1]}"
    env = {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(folder), "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": nobody, "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "2"}
    with OtlpReceiver(tls=(pki["server.pem"], pki["server.key"])) as rx, instrumented(task, env=env, receiver=rx) as (emu, _):
        # WHEN the function runs THEN its span goes, verified with that folder as the OTLP/HTTP
        # exporter verifies with it (requests takes it as a CA path); before: ignored as "no
        # file", or, with a signal over gRPC, taken from every signal: the span never came
        result = emu.invoke({})
        rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id, timeout=30)
        lines = emu.log_lines("extension") + emu.log_lines("function")
    # ... and one line says the gRPC signal does not use it
    said = [line for line in lines if "OTEL_EXPORTER_OTLP_CERTIFICATE" in line]
    assert len(said) == 1 and f"not using OTEL_EXPORTER_OTLP_CERTIFICATE={str(folder)!r} over gRPC" in said[0] and "metrics" in said[0], said


@pytest.mark.parametrize("own", [False, "folder", "missing"])
@pytest.mark.parametrize("protocols", [{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/protobuf"}, {}])
def test_the_grpc_exporters_start_with_a_ca_folder_configured(monkeypatch, tmp_path, pki, caplog, protocols, own):
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    from lambdawrap.shared.settings import Settings

    # GIVEN a CA folder as the general certificate, and some signals over gRPC
    folder = str(ca_folder(tmp_path, pki))
    env = {"OTEL_EXPORTER_OTLP_CERTIFICATE": folder, "OTEL_EXPORTER_OTLP_ENDPOINT": "https://127.0.0.1:4317", **protocols}
    if own:  # ... and as the spans' own too (or a file that is not there), which unset would fall back to the general one
        env["OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"] = folder if own == "folder" else str(tmp_path / "no-such-ca.pem")
    with caplog.at_level(logging.WARNING, logger="lambdawrap"):
        settings = Settings.from_env(env)
    over_grpc = [signal for signal in ("traces", "metrics", "logs") if settings.protocol(signal) == "grpc"]
    # WHEN the companion corrects its environment as the settings say
    for variable, value in settings.sdk_corrections:
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, value)
    for variable, value in env.items():
        if not any(variable == corrected for corrected, _ in settings.sdk_corrections):
            monkeypatch.setenv(variable, value)
    # THEN the folder stays for the OTLP/HTTP signals, each gRPC exporter starts (before: a
    # folder raised IsADirectoryError as it was made), and one line names the gRPC signals
    assert os.environ["OTEL_EXPORTER_OTLP_CERTIFICATE"] == folder
    exporters = {"traces": OTLPSpanExporter, "metrics": OTLPMetricExporter, "logs": OTLPLogExporter}
    for signal in over_grpc:
        exporters[signal]().shutdown()
    said = [r.getMessage() for r in caplog.records]
    if own == "folder":
        own_said = [line for line in said if "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE" in line]
        assert own_said == ([f"lambdawrap: ignoring OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE={folder!r} (a folder: the gRPC exporter reads one PEM file); using the default (the system's CA certificates), and no client certificate"] if "traces" in over_grpc else []), said
        assert os.environ["OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"] == ("" if "traces" in over_grpc else folder)
    elif own:
        own_said = [line for line in said if "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE" in line]
        assert len(own_said) == 1 and ("using the default (the system's CA certificates)" if "traces" in over_grpc else "using the default from OTEL_EXPORTER_OTLP_CERTIFICATE") in own_said[0], said
        assert os.environ.get("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE") == ("" if "traces" in over_grpc else None)
    elif over_grpc:
        assert said == [f"lambdawrap: not using OTEL_EXPORTER_OTLP_CERTIFICATE={folder!r} over gRPC (a folder: the gRPC exporter reads one PEM file; {', '.join(over_grpc)}); using the default (the system's CA certificates) there, and no client certificate"], said
    else:
        assert said == []


def test_a_ca_folder_without_hashed_names_is_a_bad_value(tmp_path, pki, caplog):
    from lambdawrap.shared.settings import Settings

    # GIVEN a folder holding the CA as ca.pem only, with no hashed names: OpenSSL finds nothing
    # in it, and every export over https failed naming no variable
    folder = str(ca_folder(tmp_path, pki, hashed=False))
    for variable, default in [("OTEL_EXPORTER_OTLP_CERTIFICATE", "(the system's CA certificates)"), ("REQUESTS_CA_BUNDLE", "(certifi's bundle)")]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="lambdawrap"):
            corrections = Settings.from_env({variable: folder}).sdk_corrections
        # THEN it is named once, with the default used
        said = [r.getMessage() for r in caplog.records]
        assert said == [f"lambdawrap: ignoring {variable}={folder!r} (a folder without hashed certificate names, which `openssl rehash` makes); using the default {default}"], said
        assert (variable, None) in corrections


def test_tls_files_of_the_wrong_kind_are_named_once_and_the_default_used(tmp_path, pki):
    # GIVEN an https collector of a private CA, configured for every signal; a traces
    # certificate that is a private key, and a client certificate for metrics with no key set
    # and none in its file
    task = write_function(tmp_path / "task", "def handler(event, context):\n    return {'ok': True}\n")
    env = {"OTEL_EXPORTER_OTLP_CERTIFICATE": pki["ca.pem"], "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": pki["server.key"], "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE": pki["client.pem"]}
    with OtlpReceiver(tls=(pki["server.pem"], pki["server.key"])) as rx, instrumented(task, env=env, receiver=rx) as (emu, _):
        # WHEN the function runs
        result = emu.invoke({})
        # THEN its span goes, verified with the general certificate, and its metrics go too
        # (before: every export of spans and of metrics failed with "[SSL] PEM lib", retried
        # as a failed connection for seconds at every flush, naming neither file nor variable)
        rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id, timeout=30)
        wait_for(lambda: rx.metrics(), timeout=30, what="the environment's metrics")
        lines = emu.log_lines("extension") + emu.log_lines("function")
    # ... and each variable is named once, with what is wrong and the default used
    certificate = [line for line in lines if "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE" in line]
    assert len(certificate) == 1 and "holds no PEM certificate" in certificate[0] and "using the default from OTEL_EXPORTER_OTLP_CERTIFICATE" in certificate[0], certificate
    client = [line for line in lines if "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE" in line]
    assert len(client) == 1 and "no client key is set, and the file holds none" in client[0], client


def test_a_client_key_that_does_not_match_its_certificate_is_named_once_and_left_out(monkeypatch, pki, caplog):
    # GIVEN a client certificate configured with another certificate's key, for a collector
    # that asks for none
    with Collector(tls=server_tls(pki)) as collector, environment(monkeypatch, {}):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", pki["ca.pem"])
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", pki["client.pem"])
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", pki["server.key"])
        transport = transport_from_env("TRACES")
        # WHEN spans are exported twice
        with caplog.at_level(logging.WARNING):
            results = [export_with(transport, collector.endpoint) for _ in range(2)]
    # THEN both went, without the client certificate (before: each export failed after
    # seconds of retries, "[SSL: KEY_VALUES_MISMATCH]", the CA bundle read again at each)
    assert results == [SpanExportResult.SUCCESS] * 2 and len(collector.requests) == 2
    # ... and one line named the files and the variables
    said = [r.getMessage() for r in caplog.records if "CLIENT_CERTIFICATE" in r.getMessage()]
    assert len(said) == 1 and repr(pki["client.pem"]) in said[0] and repr(pki["server.key"]) in said[0], said


class StreamedAnswer:
    """A collector on loopback that answers one request with `pieces` (an iterable of
    bytes), `pause_s` apart; `sent` counts the bytes the client took, and `cut_off` is set
    when the client closed before all of them went."""

    def __init__(self, pieces: Iterable[bytes], pause_s: float = 0.0) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1/traces"
        self.sent = 0
        self.cut_off = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(pieces, pause_s), daemon=True)
        self._thread.start()

    def _serve(self, pieces: Iterable[bytes], pause_s: float) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        with conn:
            request = read_head(conn)
            if request is None:
                return
            body = request[1]
            while len(body) < content_length(request[0]):
                body += conn.recv(65536)
            try:
                for piece in pieces:
                    if self._stop.wait(pause_s):
                        return
                    conn.sendall(piece)
                    self.sent += len(piece)
            except OSError:
                self.cut_off.set()

    def __enter__(self) -> "StreamedAnswer":
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(30)


def test_an_answer_with_a_huge_body_is_not_read_whole():
    # GIVEN a collector (a wrong endpoint: a proxy's download, a file server) answering 200
    # with a 256 MiB body
    size = 256 * 1024 * 1024
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode()
    with StreamedAnswer(itertools.chain([head], itertools.repeat(b"a" * 65536, size // 65536))) as collector:
        # WHEN a request is answered so
        result = StdlibHTTPTransport(environ={}).request("POST", collector.url, data=b"x", timeout=60)
        # THEN the status is taken, and the connection closed after a bounded part of the body
        # (before, all of it was read into the companion's memory, shared with the function's)
        assert (result.status_code, result.error) == (200, None)
        assert collector.cut_off.wait(60), collector.sent
        assert collector.sent < size // 4, collector.sent


def test_a_2xx_whose_body_is_cut_short_is_delivered_not_sent_again(scripted):
    # GIVEN a collector that stores the request and answers 200 with a body it cuts short
    cut = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 40\r\n\r\nab"
    server = scripted([[cut], [CHUNKED_OK]])
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{server.port}/v1/traces", timeout=5, _transport=StdlibHTTPTransport(environ={}))
    try:
        # WHEN a span is exported
        assert exporter.export([SPAN]) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    # THEN it went once (before, the cut body was a connection error: the exporter sent the
    # span again, stored twice, and again at every retry)
    assert server.requests == [b"POST /v1/traces HTTP/1.1"], server.requests


@pytest.mark.parametrize("answered", ["its status line", "its body"])
def test_a_collector_sending_its_answer_a_byte_at_a_time_is_given_up_at_the_requests_timeout(answered):
    # GIVEN a collector that sends its status line, or its 40-byte body, a byte every 0.25 s
    # (10 s in all)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n"
    pieces = [head[i:i + 1] for i in range(len(head))] if answered == "its status line" else [head] + [b"a"] * 40
    with StreamedAnswer(pieces, pause_s=0.25) as collector:
        # WHEN a request with a 1 s timeout is sent
        started = time.monotonic()
        result = StdlibHTTPTransport(environ={}).request("POST", collector.url, data=b"x", timeout=1.0)
        took = time.monotonic() - started
    # THEN it ends once its 1 s is up (before, the timeout bounded each read: it waited for the
    # whole answer, however long the collector took): timed out without a status, delivered
    # with one (the collector took the request: sent again, it would be stored twice)
    assert took < 5, took
    if answered == "its status line":
        assert isinstance(result.error, TimeoutError), result.error
    else:
        assert (result.status_code, result.error) == (200, None)


def test_an_early_refusal_whose_body_is_cut_is_still_read_by_its_status():
    # GIVEN a collector that answers 413 as soon as it has a request's head, cuts the answer's
    # body short and resets the connection, the request's body unread
    import struct

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            read_head(conn)
            conn.sendall(b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 20\r\n\r\nabc")
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        # WHEN 8 MB are sent to it
        connection = CollectorConnection("127.0.0.1", port, None, 10)
        status = connection.request("POST", "/v1/traces", {}, b"x" * (8 * 1024 * 1024), 10)[0]
        connection.close()
    finally:
        server.join(10)
        listener.close()
    # THEN its status is the answer (before: a connection error, and the batch sent again
    # whole at every flush, where the 413 asks for smaller requests)
    assert status == 413


@pytest.mark.parametrize("signal", ["traces", "logs", "metrics"])
def test_the_rejected_count_of_a_cut_answer_is_read_as_protobuf_reads_the_whole(signal):
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    message_class, field = {"traces": (ExportTraceServiceResponse, "rejected_spans"), "logs": (ExportLogsServiceResponse, "rejected_log_records"), "metrics": (ExportMetricsServiceResponse, "rejected_data_points")}[signal]
    for count in (1, 127, 128, 300, 2**31, 2**62):
        for reason in ("", "quota", "x" * 100_000):
            answer = message_class()
            setattr(answer.partial_success, field, count)
            answer.partial_success.error_message = reason
            whole = answer.SerializeToString()
            # Cut anywhere after the count, the count is what protobuf reads from the whole
            # answer; cut before it, or in something that is no answer, there is none
            count_ends = len(whole) - len(answer.partial_success.SerializeToString()) + 1 + (count.bit_length() + 6) // 7
            for cut in {len(whole), len(whole) // 2, count_ends, 64 * 1024}:
                if cut >= count_ends:
                    assert rejected_in_cut_answer(whole[:cut]) == getattr(message_class.FromString(whole).partial_success, field), (count, len(reason), cut)
            assert rejected_in_cut_answer(whole[: count_ends - 1]) is None
    assert rejected_in_cut_answer(b"") is None
    assert rejected_in_cut_answer(b"<html>502 Bad Gateway</html>") is None
    assert rejected_in_cut_answer(b"\x0a\x05\x12\x03abc") is None  # a reason, no count
