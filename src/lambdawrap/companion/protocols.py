"""The OTLP protocols this layer can speak. The default layer has no OTLP/gRPC exporter (it is in
the grpc variant): a signal configured for gRPC there would fail the export pipeline on its
import, telemetry off and every invocation uncounted. Such a value is a bad value like any
other: one warning naming the variable(s), and the default, http/protobuf.

Decided before the companion builds the settings it runs with: the early connections, the
endpoint checks (otlp_variables: a gRPC endpoint written host:port is no OTLP/HTTP URL, and is
warned about as such) and the exporters then agree."""

from __future__ import annotations

import os
from importlib.util import find_spec

from lambdawrap.shared.settings import BLANKS, PROTOCOL, SIGNAL_EXPORTER, SIGNAL_PROTOCOL, Settings

GRPC_EXPORTER = "opentelemetry.exporter.otlp.proto.grpc"


def fall_back_from_grpc(settings: Settings) -> None:
    """Where `settings` ask for gRPC and this layer cannot speak it, this process's environment
    is corrected to http/protobuf (the function's is left as it is)."""
    grpc_signals = [signal for signal in settings.exported_signals if settings.protocol(signal) == "grpc"]
    if not grpc_signals or find_spec(GRPC_EXPORTER) is not None:
        return
    # What made each signal's gRPC: the SDK's exporter name, else its own protocol variable
    # where that says grpc (a bad value there falls back to the general one, which said it).
    chosen = {}
    for signal in grpc_signals:
        exporter = SIGNAL_EXPORTER.format(signal=signal.upper())
        own = SIGNAL_PROTOCOL.format(signal=signal.upper())
        if os.environ.get(exporter, "").strip(BLANKS).lower() == "otlp_proto_grpc":
            chosen[exporter] = ("otlp_proto_grpc", "otlp_proto_http")
        elif os.environ.get(own, "").strip(BLANKS) == "grpc":
            chosen[own] = ("grpc", "http/protobuf")
        else:
            chosen[PROTOCOL] = ("grpc", "http/protobuf")
    import logging

    named = ", ".join(f"{name}={value}" for name, (value, _) in chosen.items())
    logging.getLogger("lambdawrap").warning("lambdawrap: ignoring %s (this layer has no OTLP/gRPC exporter: build the grpc variant); using the default http/protobuf", named)
    for name, (_, instead) in chosen.items():
        os.environ[name] = instead
