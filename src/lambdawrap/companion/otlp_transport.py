"""The transport of the companion's OTLP/HTTP exporters, on the standard library.

The exporters' own default is requests, which brings urllib3, idna, charset_normalizer (and
simplejson, where installed): ~45 ms more to import and a heavier path per request, and at
128 MB the environment pays for each at 14 times the wall time. The OpenTelemetry exporters
take any `BaseHTTPTransport`; this one does what their requests transport does for an OTLP
POST: connections kept alive per server, proxies from the environment as requests reads them
(`https_proxy`, `http_proxy`, `all_proxy`, `no_proxy`, lower case first), TLS verified against
the OTLP certificate settings (else `REQUESTS_CA_BUNDLE`/`CURL_CA_BUNDLE`, else certifi's bundle,
else the system's), client certificates, Basic credentials from the collector URL
(`https://user:key@host`), and no redirects followed. The retries, back-off and
compression stay the exporters' own. tests/test_otlp_transport.py compares the two. One
difference: a redirect is a failed export, not a delivered one as the exporters take it.

A collector reached directly goes over companion/collector_connection.py (a socket, TLS when the
scheme asks); one behind a proxy over http.client, imported then, for its CONNECT tunnel.
"""

from __future__ import annotations

import base64
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from opentelemetry.exporter.http.transport._base import BaseHTTPResult, BaseHTTPTransport

from lambdawrap.companion.collector_answers import RETRY_AFTER_STATUSES, Answers, retry_after_s
from lambdawrap.companion.collector_connection import MAX_ANSWER_BYTES, CollectorConnection
from lambdawrap.shared import otlp_variables
from lambdawrap.shared.log import get_logger

_URL_SAFE = "!#$%&'()*+,/:;=?@~"  # what requests leaves as it is in a path or query

TYPE_CHECKING = False
if TYPE_CHECKING:
    import http.client
    import ssl
    from collections.abc import Callable, Mapping
    from typing import Any


class CollectorRedirected(Exception):
    """The collector answered a redirect: the export failed, and is not retried at once."""


@dataclass(frozen=True, slots=True)
class StdlibHTTPResult(BaseHTTPResult):
    body: bytes = b""
    header_map: Any = field(default=None, hash=False, compare=False)

    def content(self) -> bytes:
        return self.body

    def headers(self) -> Mapping[str, str]:
        # Lookups ignore case, as the base class asks (http.client's message object does too).
        return self.header_map if self.header_map is not None else {}


class _Headers(dict):
    """Response headers by lowercased name, looked up whatever the case asked."""

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


class StdlibHTTPTransport(BaseHTTPTransport, Answers):
    def __init__(self, *, verify: bool | str = True, cert: str | tuple | None = None, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._verify = verify
        self._cert = cert
        self._context: ssl.SSLContext | None = None
        # Idle kept-alive connections by (scheme, host, port, proxy). A request takes one out
        # for its duration: the export worker and, at SHUTDOWN, a thread of its own may export
        # at once, and close() must never wait for a request a hanging collector holds up.
        self._idle: dict = {}
        # Each URL's parts and proxy: reading the proxy walks the whole environment, which does
        # not change under the companion, so once per collector URL, not per request.
        self._routes: dict = {}
        # Connections being made ahead of a request (connect_ahead), by the same keys: a
        # request with none idle waits for that one rather than making a second.
        self._connecting: dict = {}
        self._set_up: dict = {}  # (wall s, CPU s) the last connection took to make, by the same keys
        Answers.__init__(self)  # told the body of each answer in the 2xx range
        self._requesting: set = set()  # the connections requests are out on (awaiting_answer)
        self._timed_out_whole = False  # a request since forget_unanswered() went whole, unanswered in time
        self._closed = False
        self._lock = threading.Lock()

    def request(self, method: str, url: str, *, headers: dict | None = None, timeout: float | None = None, data: bytes | None = None) -> BaseHTTPResult:
        started = time.monotonic()
        try:
            return self._request(method, url, headers, timeout, data)
        finally:
            self.last_request_s = time.monotonic() - started

    def _request(self, method: str, url: str, headers: dict | None, timeout: float | None, data: bytes | None) -> BaseHTTPResult:
        conn = None
        self.last_status = None
        try:
            target, path, proxy, key = self._route(url)
            if target.password is not None:  # requests takes none from a URL with no password
                headers = _with_url_credentials(headers, target)
            conn = self._take(key)
            if conn is None:
                conn, timeout = self._made_ahead(key, timeout)
            if conn is None:
                conn = self._connect(key, target, proxy, timeout)
            if isinstance(conn, CollectorConnection):
                conn.sent_whole = False  # a kept-alive connection's is its last request's
                self._requesting.add(conn)
                try:
                    status, reason, response_headers, body = conn.request(method, path, headers or {}, data or b"", timeout)
                except TimeoutError:
                    # Told before it leaves the requests under way: awaiting_answer() reads both.
                    self._timed_out_whole = self._timed_out_whole or conn.sent_whole
                    raise
                finally:
                    self._requesting.discard(conn)
                keep = conn.keep_alive
                response_headers = _Headers(response_headers)
            else:
                status, reason, response_headers, body, keep = _through_proxy(conn, method, path, url, headers, data, timeout, proxy, target.scheme)
            if keep:
                self._give_back(key, conn)
            else:
                conn.close()
            self.last_status = status
            if 300 <= status < 400:
                # The exporters take any status below 400 as delivered: a redirect (a load
                # balancer moving http to https, a path that moved) would lose every batch
                # without a word. Not followed, as with requests (the headers may hold a key).
                return StdlibHTTPResult(error=CollectorRedirected(f"the collector answered {status} {reason} to {otlp_variables.shown_url(url)} (Location: {otlp_variables.shown_url(response_headers.get('location') or 'none')}); OTLP exporters do not follow redirects: set the endpoint to the address the collector names"))
            if 200 <= status < 300:
                self.hold_off(0.0)
                if body and self.answered is not None:
                    self.answered(body)
            elif status in RETRY_AFTER_STATUSES:  # the statuses the exporters retry
                wait_s = retry_after_s(response_headers.get("retry-after"))
                if wait_s is not None:
                    self.hold_off(wait_s)
                self.tell_failed()
            return StdlibHTTPResult(status_code=status, reason=reason, body=body, header_map=response_headers)
        except Exception as error:  # noqa: BLE001 - reported to the exporter, which decides on retry
            if conn is not None:
                conn.close()
                if isinstance(error, TimeoutError) and getattr(conn, "sent_whole", False):
                    self.unanswered = True
            if self.is_connection_error(error):  # the errors the exporters retry
                self.tell_failed()
            return StdlibHTTPResult(error=error)

    def awaiting_answer(self) -> bool:
        """Whether a request since forget_unanswered() went whole and its answer has not been
        read, or did not come in time: the collector may hold it (an exporter's retries of one
        batch are one export). Read from any thread (a SHUTDOWN's deadline may come meanwhile)."""
        return self._timed_out_whole or any(conn.sent_whole for conn in list(self._requesting))

    def forget_unanswered(self) -> None:
        self._timed_out_whole = False

    def prepare(self, url: str) -> None:
        """Set up what the first request to `url` would: its route, for https the TLS context
        (ssl imported, the CA bundle read), and the IDNA codec where the name will go through
        it, so that the first export does none of it."""
        target, _, proxy, _ = self._route(url)
        if target.scheme == "https":
            self._tls()
        if target.scheme == "https" or proxy or not (target.hostname or "").isascii():
            # ssl passes the server name through the IDNA codec, and so does a name looked
            # up as str (a proxy's, through http.client, or a non-ASCII one): its import too.
            "collector.invalid".encode("idna")

    def set_up(self, url: str) -> tuple | None:
        """(seconds, CPU seconds) the last connection to `url`'s collector took to make (TCP,
        TLS); None before the first."""
        return self._set_up.get(self._route(url)[3])

    def connect_ahead(self, url: str, timeout: float | None, nice: int = 0) -> bool:
        """Open a connection to `url`'s collector on a thread of its own, at `nice`, unless one
        is idle and still open or one is being made; the next request takes it. Its round trips
        and TLS handshake then pass while the function runs, not in the flush after its
        response. Whether a connection is being made. Not for a collector behind a proxy.

        A lowered priority yields the CPU the thread shares with the function, not the
        environment's quota (another vCPU runs it): whether the function leaves CPU to spare is
        the caller's to judge. Not SCHED_IDLE: starved while holding the GIL, such a thread held
        up the companion's every thread, and the flush waiting for it, for hundreds of ms."""
        target, _, proxy, key = self._route(url)
        if proxy is not None:
            return False
        with self._lock:
            if self._closed or key in self._connecting:
                return False
            idle = self._idle.get(key)
            if idle and not idle[-1].readable():
                return False  # open: nothing came since its last answer (the common case, cheap)
            made = self._connecting[key] = threading.Event()
        started = False
        try:
            threading.Thread(target=self._connect_ahead, args=(key, target, timeout, nice, made), name="lambdawrap-connect", daemon=True).start()
            started = True
        except Exception:  # noqa: BLE001 - no thread to be had (memory, limits): the request connects itself
            pass
        finally:
            if not started:  # whatever stopped it (MemoryError too), no request may wait for it
                with self._lock:
                    self._connecting.pop(key, None)
                made.set()
        return started

    def _connect_ahead(self, key: tuple, target: Any, timeout: float | None, nice: int, made: threading.Event) -> None:
        conn = None
        try:
            if nice:
                try:
                    # For this thread only, which ends: behind the function where they share a CPU.
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
                except (AttributeError, OSError):
                    pass
            # What came on the idle connection is read here, off the loop's thread: a closed
            # TLS connection costs a read and a close (~0.4 ms), session tickets leave it open.
            with self._lock:
                if self._closed or self._has_idle(key):
                    return
            conn = self._connect(key, target, None, timeout)
        except Exception:  # noqa: BLE001 - the request will connect itself, and report what fails
            pass
        finally:
            with self._lock:
                self._connecting.pop(key, None)
                if conn is not None and not self._closed:
                    self._idle.setdefault(key, []).append(conn)
                    conn = None
            if conn is not None:
                conn.close()
            made.set()

    def _made_ahead(self, key: tuple, timeout: float | None) -> tuple:
        """(the connection being made ahead for `key` once made, or None; what is left of
        `timeout`). Raises TimeoutError when nothing is left."""
        made = self._connecting.get(key)
        if made is None:
            return None, timeout
        started = time.monotonic()
        made.wait(timeout)
        if timeout is not None:
            timeout -= time.monotonic() - started
            if timeout <= 0:
                raise TimeoutError("timed out waiting for the connection made ahead")
        return self._take(key), timeout

    def _has_idle(self, key: tuple) -> bool:
        # Called with the lock held.
        connections = self._idle.get(key)
        while connections:
            conn = connections[-1]
            if not isinstance(conn, CollectorConnection) or not conn.dropped():
                # http.client's (through a proxy) is not checked: one its proxy closed fails,
                # and the exporter retries it at once, as before.
                return True
            connections.pop().close()
        return False

    def _route(self, url: str) -> tuple:
        route = self._routes.get(url)
        if route is None:
            route = self._routes[url] = _route(url, self._environ)
        return route

    def is_connection_error(self, exception: Exception | None) -> bool:
        # What requests reports as a connection error: socket, TLS, timeout and protocol
        # failures (a kept-alive connection the server closed meanwhile among them).
        client = sys.modules.get("http.client")  # imported only for a proxied collector
        return isinstance(exception, OSError) or (client is not None and isinstance(exception, client.HTTPException))

    def close(self) -> None:
        """Close the idle connections; one in use is closed when its request is over."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for conn in connections:
                conn.close()

    def _take(self, key: tuple) -> Any:
        """An idle connection the collector has not closed meanwhile, if there is one."""
        with self._lock:
            if not self._has_idle(key):
                return None
            return self._idle[key].pop()

    def _give_back(self, key: tuple, conn: Any) -> None:
        with self._lock:
            if not self._closed:
                self._idle.setdefault(key, []).append(conn)
                return
        conn.close()

    def _connect(self, key: tuple, target: Any, proxy: str | None, timeout: float | None) -> Any:
        host, port = target.hostname or "", target.port
        if proxy is None:
            started, cpu_started = time.monotonic(), time.thread_time()
            conn = CollectorConnection(host, port, self._tls() if target.scheme == "https" else None, timeout)
            self._set_up[key] = (time.monotonic() - started, time.thread_time() - cpu_started)
            return conn
        import http.client  # only for a collector behind a proxy

        via = urlsplit(proxy if "://" in proxy else "http://" + proxy)
        if target.scheme == "https":
            # Through the proxy's tunnel (CONNECT), TLS with the collector itself.
            conn = http.client.HTTPSConnection(via.hostname or "", via.port or 80, timeout=timeout, context=self._tls())
            conn.set_tunnel(host, port or 443, headers=_proxy_auth(proxy))
            return conn
        return http.client.HTTPConnection(via.hostname or "", via.port or 80, timeout=timeout)

    def _tls(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = _tls_context(self._verify, self._cert, self._environ)
        return self._context


def http_transport_of(exporter: object) -> tuple | None:
    """(transport, endpoint, timeout in seconds) of an OTLP/HTTP exporter that sends through a
    StdlibHTTPTransport; None for any other (gRPC, a credential provider's session)."""
    # The exporter keeps them as its own attributes; a version without them only loses the
    # head starts (tests/test_rehearsal.py checks the pinned one has them).
    client = getattr(exporter, "_client", None)
    transport = getattr(client, "_transport", None)
    endpoint = getattr(exporter, "_endpoint", None)
    if not isinstance(transport, StdlibHTTPTransport) or not isinstance(endpoint, str):
        return None
    timeout = getattr(client, "_timeout", None)
    return transport, endpoint, timeout if isinstance(timeout, (int, float)) else 10.0


def _route(url: str, environ: Mapping[str, str]) -> tuple:
    """(parts, request path, proxy, key of the idle connections) of a collector URL."""
    target = urlsplit(url)
    proxy = proxy_for(target.scheme, target.hostname or "", target.port, environ)
    # Characters a request line cannot carry (a space, non-ASCII) are percent-encoded, as
    # requests does with the same URL; what is already encoded stays as it is.
    path = quote(target.path or "/", safe=_URL_SAFE)
    if target.query:
        path += "?" + quote(target.query, safe=_URL_SAFE)
    return target, path, proxy, (target.scheme, target.hostname, target.port, proxy)


def _through_proxy(conn: http.client.HTTPConnection, method: str, path: str, url: str, headers: dict | None, data: bytes | None, timeout: float | None, proxy: str, scheme: str) -> tuple:
    """(status, reason, headers, body, keep the connection) of one request through a proxy,
    within `timeout` as a whole (http.client's counts each read: a proxy sending a byte at a
    time held the export for ever), its answer read up to MAX_ANSWER_BYTES (one over it is
    its status, its body empty, as a collector's own: a proxy's 200 MB would end a 128 MB
    function)."""
    conn.timeout = timeout
    if conn.sock is not None:
        conn.sock.settimeout(timeout)
    request_headers = dict(headers or {})
    if scheme == "http":
        path = _without_userinfo(url)  # a plain-HTTP proxy takes the whole URL, not its credentials
        request_headers.update(_proxy_auth(proxy))
    cut = _Cut(conn, timeout)
    try:
        conn.request(method, path, body=data, headers=request_headers)
        response = conn.getresponse()
    except Exception:
        if cut.over():
            raise TimeoutError("the proxy's answer did not come within the timeout") from None
        raise
    # Once its status has come, the answer is that status, whatever becomes of its body (cut
    # short, or not whole within the timeout), as a collector's own is (collector_connection):
    # a 2xx taken for a failure would be sent again, and stored twice.
    try:
        body, whole = _bounded_body(response)
    except Exception:  # noqa: BLE001 - IncompleteRead, a reset, the cut
        response.close()
        body, whole = b"", False
    if cut.over():  # the connection is not kept; a body the cut came inside is not the answer's
        response.close()
        body, whole = body if whole else b"", False
    return response.status, response.reason, response.headers, body, whole and not response.will_close


class _Cut:
    """Ends a proxied request at its deadline: its socket is shut, and its reads return at once
    (a socket not made yet, its name still being looked up, is shut once it is). Without a
    thread to spare, http.client's timeout of each read is all there is."""

    RETRY_S = 0.05

    def __init__(self, conn: http.client.HTTPConnection, timeout: float | None) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._ended = False  # the request is over: nothing to cut any more
        self._cut = False
        self._timer: threading.Timer | None = None
        if timeout is not None:
            self._arm(timeout)

    def _arm(self, seconds: float) -> None:
        timer = threading.Timer(seconds, self._fire)
        timer.daemon = True
        with self._lock:
            if self._ended:
                return
            self._timer = timer
            try:
                timer.start()
            except RuntimeError:  # no thread to be had
                pass

    def _fire(self) -> None:
        with self._lock:
            if self._ended:
                return
            self._cut = True
            sock = self._conn.sock
            if sock is not None:
                try:
                    sock.shutdown(2)  # socket.SHUT_RDWR
                except OSError:
                    pass
        if sock is None:
            self._arm(self.RETRY_S)

    def over(self) -> bool:
        """Ends the watch; whether the deadline came first. The timer's thread ends now: one
        left to wait out each request's timeout would pile up (a thread, and its stack, in the
        function's memory and its limit of threads, per request)."""
        with self._lock:
            self._ended = True
            if self._timer is not None:
                self._timer.cancel()
            return self._cut


def _bounded_body(response: http.client.HTTPResponse) -> tuple:
    """(body, whether it was read whole): cut at MAX_ANSWER_BYTES. read(n), which closes the
    response once its length is read: one left open makes http.client take the next request
    on the connection for unanswered, and the exporter send it again, stored twice."""
    body = response.read(MAX_ANSWER_BYTES + 1)
    if len(body) > MAX_ANSWER_BYTES or not response.isclosed():
        response.close()
        return body[:MAX_ANSWER_BYTES], False
    return body, True


# One TLS context per set of TLS settings in the process: the three signals' transports
# usually share theirs, and reading a CA bundle (certifi's, the system's: ~150 certificates)
# takes ~25 ms of CPU, which a 128 MB function's init pays, or its first flush at 14 times the
# wall time. A context is safe to share between threads; none is changed once made.
_TLS_CONTEXTS: dict = {}
_TLS_LOCK = threading.Lock()


def _tls_context(verify: bool | str, cert: str | tuple | None, environ: Mapping[str, str]) -> ssl.SSLContext:
    import ssl  # only for https collectors

    cafile = None if verify is False else verify if isinstance(verify, str) else _default_ca_bundle(environ)
    key = (verify is False, cafile, cert)
    # Held while one is made: the others of the same settings wait for it, not make their own.
    with _TLS_LOCK:
        context = _TLS_CONTEXTS.get(key)
        if context is None:
            context = _verifying_context(verify is not False, cafile)
            if cert:
                files = cert if isinstance(cert, tuple) else (cert,)
                try:
                    context.load_cert_chain(*files)
                except OSError as exc:  # ssl.SSLError too
                    context = _verifying_context(verify is not False, cafile)  # none of a half-loaded chain
                    # A key that does not match its certificate (or one the checks of the files'
                    # forms let by): built again and refused at every attempt, as a failed
                    # connection retried for the exporter's whole timeout, the variables unnamed.
                    get_logger().warning(
                        "lambdawrap: ignoring the client certificate and key %s (OTEL_EXPORTER_OTLP_[signal_]CLIENT_CERTIFICATE, _CLIENT_KEY; %s); using the default (none)",
                        " and ".join(repr(each) for each in files),
                        getattr(exc, "reason", None) or exc,
                    )
            _TLS_CONTEXTS[key] = context
    return context


def _verifying_context(verify: bool, cafile: str | None) -> ssl.SSLContext:
    import ssl

    # A folder of hashed certificates (REQUESTS_CA_BUNDLE may name one, as requests takes it)
    # is a CA path: read as a file, it failed every export.
    folder = verify and cafile is not None and os.path.isdir(cafile)
    context = ssl.create_default_context(cafile=cafile if verify and not folder else None, capath=cafile if folder else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _default_ca_bundle(environ: Mapping[str, str]) -> str | None:
    """The CA bundle requests would verify with: its environment variables, else certifi's."""
    bundle = environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE")
    if bundle:
        return bundle
    try:
        import certifi
    except ImportError:
        return None  # the system's store
    return certifi.where()


def _with_url_credentials(headers: dict | None, target: Any) -> dict:
    """`headers` with the Basic credentials a collector URL holds (https://user:key@host/...),
    as requests sends them, in place of any Authorization header: the exporters' default
    transport does, and a collector that authenticates so refused every export without it."""
    credentials = f"{unquote(target.username or '')}:{unquote(target.password or '')}".encode("latin-1")
    kept = {name: value for name, value in (headers or {}).items() if name.lower() != "authorization"}
    kept["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
    return kept


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl() if "@" in parts.netloc else url


def _proxy_auth(proxy: str) -> dict:
    parts = urlsplit(proxy if "://" in proxy else "http://" + proxy)
    if not parts.username or parts.password is None:  # as requests: a user name and a password, or none
        return {}
    credentials = f"{unquote(parts.username)}:{unquote(parts.password)}".encode("latin-1")
    return {"Proxy-Authorization": "Basic " + base64.b64encode(credentials).decode("ascii")}


def proxy_for(scheme: str, host: str, port: int | None, environ: Mapping[str, str]) -> str | None:
    """The proxy requests would use for scheme://host:port, from the environment; None for
    a direct connection."""
    proxies: dict = {}
    names: dict = {}
    for lower_case in (False, True):  # lower-case variables win, as in requests and curl
        for name, value in environ.items():
            if name.lower().endswith("_proxy") and (name == name.lower()) == lower_case:
                if value:
                    proxies[name[:-6].lower()], names[name[:-6].lower()] = value, name
                elif lower_case and name != "no_proxy":
                    proxies.pop(name[:-6], None)  # set empty, it says none (urllib's and requests' reading)
    key = scheme if proxies.get(scheme) else "all"
    proxy = proxies.get(key)
    if not proxy or not host or _bypassed(host.lower(), port, proxies.get("no", "")):
        return None
    if proxy.strip().lower().startswith("https://"):
        _refuse_tls_proxy(names[key], proxy)
        return None
    return proxy


_tls_proxies_refused: set = set()


def _refuse_tls_proxy(name: str, proxy: str) -> None:
    """A proxy spoken to over TLS: http.client would speak to it in the clear (its credentials,
    and an http:// collector's headers and data, across the network), on port 80. Not used."""
    if name not in _tls_proxies_refused:
        _tls_proxies_refused.add(name)
        get_logger().warning("lambdawrap: ignoring %s=%s (a proxy reached over TLS is not supported: its credentials and the collector's headers would go in the clear); exporting without a proxy", name, otlp_variables.shown_url(proxy))


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    entries = [entry for entry in no_proxy.replace(" ", "").split(",") if entry]
    if "*" in entries:
        return True
    if _is_ipv4(host):
        return any(_in_network(host, entry) if "/" in entry else host == entry for entry in entries)
    host_with_port = f"{host}:{port}" if port else host
    for entry in entries:
        name = entry.lstrip(".").lower()
        if name in (host, host_with_port) or host.endswith("." + name) or host_with_port.endswith("." + name):
            return True
    return False


def _is_ipv4(host: str) -> bool:
    parts = host.split(".")
    return len(parts) == 4 and all(part.isdigit() and int(part) < 256 for part in parts)


def _in_network(host: str, cidr: str) -> bool:
    import ipaddress  # only when no_proxy names a network

    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def transport_from_env(signal: str, environ: Mapping[str, str] | None = None) -> StdlibHTTPTransport | None:
    """The transport for one signal ("TRACES", "METRICS", "LOGS"), with the TLS settings the
    exporter itself would read (OTEL_EXPORTER_OTLP_[signal_]CERTIFICATE, _CLIENT_KEY,
    _CLIENT_CERTIFICATE); None when a credential provider is configured, which hands the
    exporter a requests session of its own."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER") or env.get(f"OTEL_PYTHON_EXPORTER_OTLP_HTTP_{signal}_CREDENTIAL_PROVIDER"):
        return None

    def setting(name: str) -> str | None:
        return env.get(f"OTEL_EXPORTER_OTLP_{signal}_{name}") or env.get(f"OTEL_EXPORTER_OTLP_{name}") or None

    key, certificate = setting("CLIENT_KEY"), setting("CLIENT_CERTIFICATE")
    return StdlibHTTPTransport(verify=setting("CERTIFICATE") or True, cert=(certificate, key) if certificate and key else certificate, environ=env)
