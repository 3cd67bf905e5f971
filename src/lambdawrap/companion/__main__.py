"""Entry point of the companion: register with the platform first, import the heavy parts after."""

from __future__ import annotations

import os
import sys

from ._extension_api import ExtensionClient


def main(argv: list) -> int:
    name = argv[1] if len(argv) > 1 else "lambdawrap"
    client = ExtensionClient(os.environ["AWS_LAMBDA_RUNTIME_API"])
    # Registration comes before anything else, even logging: the runtime cannot start until
    # every extension has registered. The launcher usually did it already, in bash.
    if not client.adopt_registration(os.environ):
        client.register(name, ["INVOKE", "SHUTDOWN"])
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logger = logging.getLogger("lambdawrap.companion")
    from ..settings import Settings

    settings = Settings.from_env()
    if settings.disabled:
        return _idle(client)
    try:
        channel = _start_channel(settings)
    except Exception:  # noqa: BLE001 - fail open
        logger.exception("lambdawrap: the local channel failed to start")
        channel = None
    try:
        from ._companion import Companion

        companion = Companion(client, settings, channel)
    except Exception:  # noqa: BLE001 - fail open: the function must run even if we cannot export
        logger.exception("lambdawrap: companion failed to start; telemetry is off for this environment")
        return _idle(client)
    return companion.run()


def _start_channel(settings):  # noqa: ANN001
    """The local channel now (the handler's boot may ask for secrets at once); the secret
    store and its 2773 HTTP API on a background thread, since boto3 and http.server are slow
    to import and must not delay our first /next."""
    import threading

    from ._router import RecordRouter
    from ._socket_server import SocketServer

    router = RecordRouter()
    server = SocketServer(settings.socket_path, router)
    server.start()
    threading.Thread(target=_start_secrets, args=(settings, router), name="lambdawrap-secrets-start", daemon=True).start()
    return server, router


def _start_secrets(settings, router) -> None:  # noqa: ANN001
    import logging

    logger = logging.getLogger("lambdawrap.companion")
    try:
        from ._secret_store import SecretStore

        store = SecretStore(settings)
        store.start()
        router.store = store
    except Exception:  # noqa: BLE001 - fail open
        logger.exception("lambdawrap: the secret store failed to start")
        return
    finally:
        router.store_ready.set()
    try:
        from ._secrets_http import SecretsHttpApi

        SecretsHttpApi(store, os.environ.get("AWS_SESSION_TOKEN", ""), settings.secrets_port)
    except OSError as exc:
        logger.warning("lambdawrap: the secrets HTTP API is off: port %d is not available (%s)", settings.secrets_port, exc.strerror or exc)


def _idle(client: ExtensionClient) -> int:
    """Take part in the lifecycle without doing anything, until SHUTDOWN."""
    while client.next_event().get("eventType") != "SHUTDOWN":
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
