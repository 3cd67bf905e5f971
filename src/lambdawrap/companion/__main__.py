"""Entry point of the companion: register with the platform first, import the heavy parts after."""

from __future__ import annotations

import os
import sys

from lambdawrap.companion import init_gc
from lambdawrap.companion.extension_api import ExtensionApiError, ExtensionClient, registration_events


def main(argv: list) -> int:
    init_gc.pause()
    name = argv[1] if len(argv) > 1 else "lambdawrap"
    client = ExtensionClient(os.environ["AWS_LAMBDA_RUNTIME_API"])
    # Registration comes before anything else: the runtime cannot start until every extension
    # has registered. The launcher usually did it already, in bash.
    if not client.adopt_registration(os.environ):
        client.register(name, registration_events(os.environ))
    from lambdawrap.companion.protocols import fall_back_from_grpc
    from lambdawrap.shared.log import get_logger
    from lambdawrap.shared.settings import Settings

    asked = Settings.from_env(warn=False)
    # lambdawrap's level before anything warns: the settings' warnings keep to it, as in the
    # function's process (logging itself is configured later, off init's path).
    get_logger().setLevel(asked.log_level.upper())
    if not (asked.disabled or asked.sdk_disabled):
        fall_back_from_grpc(asked)
    # Read again, warning now: each bad value once, as it reads where the protocol fell back.
    settings = Settings.from_env()
    if settings.disabled:
        init_gc.resume()
        return _idle(client)
    try:
        from lambdawrap.companion.lifecycle import Companion

        companion = Companion(client, settings)
    except Exception:  # noqa: BLE001 - fail open: the function must run even if we cannot export
        from lambdawrap.shared.log import configure_process_logging, get_logger

        configure_process_logging(settings.log_level)
        get_logger().exception("lambdawrap: companion failed to start; telemetry is off for this environment")
        init_gc.resume()
        return _idle(client)
    return companion.run()


def _idle(client: ExtensionClient) -> int:
    """Take part in the lifecycle without doing anything, until SHUTDOWN (or until the platform
    fails /next: it then says to go, and there is nothing to keep)."""
    try:
        while client.next_event().get("eventType") != "SHUTDOWN":
            pass
    except (ExtensionApiError, OSError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
