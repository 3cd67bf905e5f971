"""Entry point of the companion: register with the platform first, import the heavy parts after."""

from __future__ import annotations

import logging
import os
import sys

from ._extension_api import ExtensionClient

logger = logging.getLogger("lambdawrap.companion")


def main(argv: list) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    name = argv[1] if len(argv) > 1 else "lambdawrap"
    client = ExtensionClient(os.environ["AWS_LAMBDA_RUNTIME_API"])
    # Registration comes before anything else: the runtime cannot start until we have registered.
    client.register(name, ["INVOKE", "SHUTDOWN"])
    from ..settings import Settings

    settings = Settings.from_env()
    if settings.disabled:
        return _idle(client)
    try:
        channel, secrets_api = _start_secrets(settings)
    except Exception:  # noqa: BLE001 - fail open
        logger.exception("lambdawrap: secrets service failed to start")
        channel = secrets_api = None
    try:
        from ._companion import Companion

        companion = Companion(client, settings, channel)
    except Exception:  # noqa: BLE001 - fail open: the function must run even if we cannot export
        logger.exception("lambdawrap: companion failed to start; telemetry is off for this environment")
        return _idle(client)
    return companion.run()


def _start_secrets(settings):
    """Secrets first: their fetch runs while the runtime starts and the SDK is imported."""
    from ._router import RecordRouter
    from ._secret_store import SecretStore
    from ._socket_server import SocketServer

    store = SecretStore(settings)
    store.start()
    router = RecordRouter(store)
    server = SocketServer(settings.socket_path, router)
    server.start()
    secrets_api = None
    try:
        from ._secrets_http import SecretsHttpApi

        secrets_api = SecretsHttpApi(store, os.environ.get("AWS_SESSION_TOKEN", ""), settings.secrets_port)
    except OSError as exc:
        logger.warning("lambdawrap: the secrets HTTP API is off: port %d is not available (%s)", settings.secrets_port, exc.strerror or exc)
    return (server, router), secrets_api


def _idle(client: ExtensionClient) -> int:
    """Take part in the lifecycle without doing anything, until SHUTDOWN."""
    while client.next_event().get("eventType") != "SHUTDOWN":
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
