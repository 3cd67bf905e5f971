"""``OtlpReceiver``: the public face of the receiver, which binds the server, keeps what it is
sent in a store, and hands queries, waits and fault injection on to the modules that do them."""

from __future__ import annotations

import copy
import ipaddress
import logging
import socket
import ssl
import threading
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

from google.protobuf.message import Message

from lambdawrap.devtools.otlp_receiver.decoding import Item
from lambdawrap.devtools.otlp_receiver.faults import Behaviour, FaultInjector
from lambdawrap.devtools.otlp_receiver.jsonl import JsonlWriter
from lambdawrap.devtools.otlp_receiver.routes import Route
from lambdawrap.devtools.otlp_receiver.server import IDLE_CONNECTION_TIMEOUT_S, ReceiverHttpServer
from lambdawrap.devtools.otlp_receiver.store import Predicate, ReceivedStore

logger = logging.getLogger(__name__)

ItemListener = Callable[[str, Item], None]


class OtlpReceiver:
    """An in-process OTLP/HTTP receiver bound to loopback, with queryable, waitable storage.

    Use as a context manager (``with OtlpReceiver() as receiver: ...``) or call ``start()`` and
    ``stop()``. Point exporters at ``receiver.endpoint + "/v1/traces"`` (etc.).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        jsonl_path: Optional[str] = None,
        *,
        on_item: Optional[ItemListener] = None,
        tls: Optional[Tuple[str, str]] = None,
        idle_timeout_s: float = IDLE_CONNECTION_TIMEOUT_S,
        connect_delay_s: float = 0.0,
    ) -> None:
        """Configure the receiver; nothing is bound until ``start()``.

        ``host`` must be a loopback address ("127.0.0.1", "::1" or "localhost"); ``port`` 0
        picks a free port. ``on_item(kind, item)`` is called for every span/metric point/log
        stored, with kind "span", "metric" or "log".

        As a collector outside the environment: ``tls=(certificate file, key file)`` serves
        https; ``idle_timeout_s`` closes a connection idle that long, as collectors and load
        balancers do; ``connect_delay_s`` makes each new connection wait that long before its
        TLS handshake (or its first request), as the round trips of setting one up would.
        """
        if host == "localhost":
            host = "127.0.0.1"
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"host must be a loopback IP address, got {host!r}") from None
        if not address.is_loopback:
            raise ValueError(f"the OTLP receiver only binds loopback addresses, got {host!r}")
        if not 0 <= port <= 65535:
            raise ValueError(f"invalid port {port}")
        self._host = host
        self._family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        self._requested_port = port
        self._jsonl = JsonlWriter(jsonl_path) if jsonl_path is not None else None
        self._on_item = on_item
        if idle_timeout_s <= 0 or connect_delay_s < 0:
            raise ValueError("idle_timeout_s must be > 0 and connect_delay_s >= 0")
        self._tls = tls
        self._idle_timeout_s = float(idle_timeout_s)
        self._connect_delay_s = float(connect_delay_s)

        self._server: Optional[ReceiverHttpServer] = None
        self._thread: Optional[threading.Thread] = None
        self._lifecycle_lock = threading.Lock()
        self._stopped = False
        self._stopping = threading.Event()
        self._store = ReceivedStore()
        self._faults = FaultInjector()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        """Bind and start serving; returns once the socket listens and the loop runs."""
        with self._lifecycle_lock:
            if self._stopped:
                raise RuntimeError("a stopped OtlpReceiver cannot be restarted; create a new one")
            if self._server is not None:
                return self
            tls = None
            if self._tls is not None:
                tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                tls.load_cert_chain(*self._tls)
            server = ReceiverHttpServer(
                (self._host, self._requested_port),
                self._family,
                self._faults,
                self._stopping,
                self._on_request,
                tls,
                self._idle_timeout_s,
                self._connect_delay_s,
            )
            serving = threading.Event()

            def serve() -> None:
                serving.set()
                server.serve_forever(poll_interval=0.05)

            thread = threading.Thread(target=serve, name=f"otlp-receiver-{server.server_port}", daemon=True)
            thread.start()
            # The socket already listens (connections queue in the backlog); also wait for the
            # accept loop so that start() really means "serving".
            serving.wait()
            self._server = server
            self._thread = thread
        logger.debug("OTLP receiver listening on %s", self.endpoint)
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections and close the socket; safe to call repeatedly."""
        with self._lifecycle_lock:
            self._stopped = True
            server, thread = self._server, self._thread
            self._server = None
            self._thread = None
            if server is None:
                return
            self._stopping.set()
            server.shutdown()
            server.server_close()
            server.close_connections(join_timeout=5.0)
            if thread is not None:
                thread.join(timeout=5.0)
        logger.debug("OTLP receiver on port %s stopped", server.server_port)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (raises RuntimeError before ``start()``)."""
        server = self._server
        if server is None:
            raise RuntimeError("OtlpReceiver is not running")
        return int(server.server_address[1])

    @property
    def server_address(self) -> Tuple[str, int]:
        """The (host, port) the listening socket is bound to."""
        server = self._server
        if server is None:
            raise RuntimeError("OtlpReceiver is not running")
        return (str(server.server_address[0]), int(server.server_address[1]))

    @property
    def endpoint(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:4318``; append ``/v1/traces`` etc. for exporters.
        With TLS, ``https://localhost:PORT``: the name the server certificate is for."""
        if self._tls is not None:
            return f"https://localhost:{self.port}"
        host = f"[{self._host}]" if self._family == socket.AF_INET6 else self._host
        return f"http://{host}:{self.port}"

    @property
    def connections_accepted(self) -> int:
        """How many connections clients have opened so far."""
        server = self._server
        if server is None:
            raise RuntimeError("OtlpReceiver is not running")
        return server.connections_accepted

    @property
    def open_connections(self) -> int:
        """How many connections are open now (idle keep-alives, and new ones still in their
        connect delay or TLS handshake, included)."""
        server = self._server
        if server is None:
            raise RuntimeError("OtlpReceiver is not running")
        return server.open_connections()

    # -- queries ---------------------------------------------------------------------------

    def spans(self) -> List[Item]:
        """Every span received so far, one flat dict each, in arrival order."""
        return self._store.items("traces")

    def metrics(self) -> List[Item]:
        """Every metric data point received so far, one flat dict each."""
        return self._store.items("metrics")

    def logs(self) -> List[Item]:
        """Every log record received so far, one flat dict each."""
        return self._store.items("logs")

    def requests(self) -> List[Item]:
        """A summary of every HTTP request answered (or dropped), in arrival order."""
        return self._store.requests()

    def raw(self, signal: str) -> List[Message]:
        """The decoded Export*ServiceRequest messages for "traces", "metrics" or "logs"."""
        return self._store.raw(signal)

    def clear(self) -> None:
        """Forget everything received so far (behaviour is left as is)."""
        self._store.clear()

    def wait_for_spans(
        self, predicate: Optional[Predicate] = None, count: int = 1, timeout: float = 10.0
    ) -> List[Item]:
        """Block until at least ``count`` spans match ``predicate``; return the matches.

        Raises TimeoutError, listing what was received, when ``timeout`` seconds pass first.
        """
        return self._store.wait("traces", predicate, count, timeout)

    def wait_for_metrics(
        self, predicate: Optional[Predicate] = None, count: int = 1, timeout: float = 10.0
    ) -> List[Item]:
        """Block until at least ``count`` metric data points match ``predicate``."""
        return self._store.wait("metrics", predicate, count, timeout)

    def wait_for_logs(
        self, predicate: Optional[Predicate] = None, count: int = 1, timeout: float = 10.0
    ) -> List[Item]:
        """Block until at least ``count`` log records match ``predicate``."""
        return self._store.wait("logs", predicate, count, timeout)

    # -- fault injection -------------------------------------------------------------------

    def set_behaviour(
        self,
        delay_s: float = 0.0,
        status: int = 200,
        retry_after: Optional[Union[float, str]] = None,
        close_connection: bool = False,
        remaining: Optional[int] = None,
        reject: Optional[str] = None,
        max_spans: Optional[int] = None,
    ) -> None:
        """Change how export requests are answered, from the next request on.

        ``delay_s`` delays every answer; ``status`` != 200 answers that status without storing
        the data (``retry_after`` adds a ``Retry-After`` header); ``close_connection`` drops the
        connection without answering; ``reject="traces"`` (or "metrics", "logs") answers that
        signal's requests 200 with an OTLP partial success that rejects every item, storing
        none; ``max_spans=N`` answers 413 to a span request of more than N spans, storing
        none; ``remaining=N`` limits this to the next N export requests, after which the
        receiver behaves normally again.
        """
        if reject not in (None, "traces", "metrics", "logs"):
            raise ValueError(f"reject must be None, traces, metrics or logs, not {reject!r}")
        if delay_s < 0:
            raise ValueError("delay_s must be >= 0")
        if not 100 <= status <= 599:
            raise ValueError(f"invalid HTTP status {status}")
        if remaining is not None and remaining < 1:
            raise ValueError("remaining must be None or >= 1")
        if retry_after is None:
            header = None
        elif isinstance(retry_after, float) and retry_after.is_integer():
            header = str(int(retry_after))
        else:
            header = str(retry_after)
        if max_spans is not None and max_spans < 1:
            raise ValueError("max_spans must be None or >= 1")
        self._faults.install(Behaviour(float(delay_s), int(status), header, bool(close_connection), remaining, reject, max_spans))

    def reset_behaviour(self) -> None:
        """Answer every request normally again."""
        self._faults.reset()

    # -- internals -------------------------------------------------------------------------

    def _on_request(
        self,
        summary: Item,
        route: Optional[Route],
        message: Optional[Message],
        items: Sequence[Item],
    ) -> None:
        """Keep one request, then append its items to the JSONL file and hand them to on_item."""
        self._store.add(summary, route, message, items)
        if route is None or not items:
            return
        if self._jsonl is not None:
            self._jsonl.append(route.item_kind, items)
        if self._on_item is not None:
            for item in items:
                try:
                    self._on_item(route.item_kind, copy.deepcopy(item))
                except Exception:  # a listener bug must not break the receiver
                    logger.exception("OTLP receiver on_item listener failed")
