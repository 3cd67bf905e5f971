"""The ports the secrets API listens on, bound as the companion starts.

A function moved from AWS's Parameters and Secrets extension may call the API in its module's
code, as the runtime imports it. The platform starts the runtime as soon as the launcher has
registered, in bash, while the companion's Python is still starting: a port bound only when the
API starts, on the companion's startup thread, was sometimes not listening yet, and such a call
was refused. Bound in the companion's first milliseconds, with the other sockets, a client that
comes before the API serves waits in the socket's backlog instead.
"""

from __future__ import annotations

import os

from lambdawrap.companion.prebound_http import PreboundHttpServer
from lambdawrap.shared.log import get_logger
from lambdawrap.shared.settings import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Mapping

# AWS's Parameters and Secrets extension serves this API too, on its own port (2773 unless
# PARAMETERS_SECRETS_EXTENSION_HTTP_PORT says otherwise). Beside it (a function that keeps that
# layer with ours), whichever listens first would take the port and the other fail to: theirs
# would end the environment's init (Extension.Crash), and the function would get either at
# random. The port stays theirs.
AWS_EXTENSION = "AWSParametersAndSecretsLambdaExtension"
AWS_EXTENSION_DEFAULT_PORT = 2773
EXTENSIONS_DIR = "LAMBDAWRAP_EXTENSIONS_DIR"  # the launcher's folder, where the platform starts extensions from


def aws_extension_port(environ: Mapping[str, str], settings: Settings) -> int | None:
    """The port AWS's Parameters and Secrets extension listens on, when it is one of this
    environment's extensions; None when it is not."""
    folder = environ.get(EXTENSIONS_DIR)
    if not folder or not os.path.exists(os.path.join(folder, AWS_EXTENSION)):
        return None
    return settings.secrets_aws_port or AWS_EXTENSION_DEFAULT_PORT


def bind_ports(settings: Settings, environ: Mapping[str, str] = os.environ) -> list:
    """A PreboundHttpServer on each port the API serves (LAMBDAWRAP_SECRETS_PORT, the compat
    port, and PARAMETERS_SECRETS_EXTENSION_HTTP_PORT where that extension is not here: a
    function moved from it looks there), loopback only; a port that is taken is named in a
    warning and left out."""
    servers = []
    theirs = aws_extension_port(environ, settings)
    moved = settings.secrets_aws_port if theirs is None else None
    for port in dict.fromkeys(p for p in (settings.secrets_port, settings.secrets_compat_port, moved) if p is not None):
        if port == theirs:
            get_logger().warning("lambdawrap: the secrets API leaves port %d to the AWS Parameters and Secrets extension beside it (LAMBDAWRAP_SECRETS_PORT sets another)", port)
            continue
        try:
            # Loopback only: the function reaches it on localhost, nothing else may.
            servers.append(PreboundHttpServer("127.0.0.1", port))
        except OSError as exc:
            get_logger().warning("lambdawrap: the secrets API is not listening on port %d: %s", port, exc.strerror or exc)
    return servers
