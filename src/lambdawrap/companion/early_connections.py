"""Connections to the collector opened while the companion starts, before the OpenTelemetry SDK
is imported.

The first flush after a cold start otherwise opens them after the first response: a TCP and a
TLS round trip and the handshake's CPU, billed, at 128 MB at 14 times the wall time. Opened at
the start, their round trips pass while the SDK imports (in init, where the first /next waits
for it below one vCPU's worth of memory) and the first flush finds them open. The exporters
are then made with these transports (exporting.make_exporters), whose connections they are.
"""

from __future__ import annotations

import logging

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from lambdawrap.companion.otlp_transport import StdlibHTTPTransport

logger = logging.getLogger("lambdawrap.companion")

# The OTLP/HTTP exporters' defaults (opentelemetry-exporter-otlp-proto-http); the parity test in
# tests/test_early_connections.py holds these to the pinned exporters.
DEFAULT_ENDPOINT = "http://localhost:4318"
CONNECT_TIMEOUT_S = 10.0


def exporter_endpoint(signal: str, environ: Mapping[str, str]) -> str:
    """The URL the OTLP/HTTP exporter of `signal` ("traces", "metrics", "logs") sends to, read
    from the environment as that exporter reads it."""
    own = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    if own:
        return own
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_ENDPOINT
    return f"{base.removesuffix('/')}/v1/{signal}"


def connect_early(signals: Iterable[str], environ: Mapping[str, str]) -> dict[str, StdlibHTTPTransport]:
    """{signal: its exporter's transport}, each with a connection to its collector being made on
    a thread of its own (not through a proxy; not for a signal whose exporter brings its own
    session). Never raises: whatever fails here, the first request connects itself."""
    from lambdawrap.companion.otlp_transport import transport_from_env

    transports: dict = {}
    for signal in signals:
        try:
            transport = transport_from_env(signal.upper(), environ)
            if transport is not None:
                transport.connect_ahead(exporter_endpoint(signal, environ), CONNECT_TIMEOUT_S)
                transports[signal] = transport
        except Exception:  # noqa: BLE001 - only a head start: the exporter makes its own
            logger.debug("lambdawrap: connecting early for %s failed", signal, exc_info=True)
    return transports
