"""An example function that reads a database password declared in LAMBDAWRAP_SECRETS.

The value is in os.environ before this module is imported, so module-level code can use it;
`lambdawrap.handler.secret_cache.get` returns the current value after rotations."""

import os

DB_PASSWORD_AT_IMPORT = os.environ.get("DB_PASSWORD")


def handler(event, context):
    try:
        from lambdawrap import secrets  # present when the lambdawrap layer is installed

        current = secrets.get("DB_PASSWORD")
    except ImportError:
        current = os.environ.get("DB_PASSWORD")
    # Never print a secret: say only whether it is there.
    print("database password loaded:", bool(DB_PASSWORD_AT_IMPORT), "current:", bool(current))
    return {"statusCode": 200, "body": "connected" if current else "no password"}
