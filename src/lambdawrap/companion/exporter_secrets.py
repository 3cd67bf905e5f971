"""The collector's credentials kept as a secret: an `OTEL_EXPORTER_OTLP_*HEADERS` variable
declared in `LAMBDAWRAP_SECRETS` configures the companion's exporters too, as an API key in
Secrets Manager does for the vendors' extensions. The exporters read this process's
environment when they are made, so the value is read once, as the pipeline is built."""

from __future__ import annotations

import os
from typing import Any, Callable, MutableMapping

from lambdawrap.shared.otlp_variables import HEADER_RULE, HEADER_VARIABLES, header_entries, read_over_grpc


def declared(sources: list) -> list:
    """The declared secrets that name exporter headers."""
    return [source for source in sources if source.env_name in HEADER_VARIABLES]


def apply(store: Any, sources: list, timeout_s: float, warn: Callable[..., None], environ: MutableMapping[str, str] = os.environ, protocols: tuple = (), ignored: frozenset = frozenset()) -> None:
    """Put each declared header secret's value into `environ`, waiting up to `timeout_s` for the
    store's first fetch; one that cannot be read leaves the variable as configured, warned of
    (by name: a value is a credential). A value a signal over gRPC reads (`protocols`, as in
    the settings) is held to what gRPC can send, as the variable's own value is. `ignored`:
    signals' header variables whose own endpoint was ignored (their headers are not sent to
    the general one)."""
    for source in [s for s in sources if s.env_name in ignored]:
        warn("lambdawrap: ignoring %s from secret %s (its endpoint was ignored: they are not sent to another)", source.env_name, source.describe())
    sources = [s for s in sources if s.env_name not in ignored]
    if not sources:
        return
    answer = store.snapshot(timeout_s) if store is not None else {"values": {}, "errors": {}}
    found = []
    for source in sources:
        name = source.env_name
        value = answer["values"].get(name)
        if value is None:
            reason = answer["errors"].get(name) or "the secret store did not start"
            warn("lambdawrap: exporting without %s from secret %s: %s", name, source.describe(), reason)
            continue
        try:
            environ[name] = value  # all in first: which variable a gRPC signal reads depends on them
        except (ValueError, UnicodeError):
            # A NUL or an unpaired surrogate, which the environment refuses: set all the same
            # (an entry holding one is refused next, by name), or telemetry would be off.
            environ[name] = ","
        found.append((source, value))
    for source, value in found:
        name = source.env_name
        grpc = read_over_grpc(environ, protocols, name[len("OTEL_EXPORTER_OTLP_") : -len("HEADERS")], "HEADERS")
        kept, refused = header_entries(value, grpc=grpc)
        if refused:
            warn("lambdawrap: ignoring %s entries %s from secret %s (%s); %s", name, ", ".join(refused), source.describe(), HEADER_RULE, "the others are sent" if kept else "none is sent")
        if kept:
            environ[name] = kept
        elif refused and name != "OTEL_EXPORTER_OTLP_HEADERS":
            environ[name] = ","  # none kept: unset, the general headers would go to this signal's endpoint
        else:
            environ.pop(name, None)  # blank: unset, as the variable's own blank value is
