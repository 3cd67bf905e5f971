"""Secrets declared in LAMBDAWRAP_SECRETS, as the function reads them (public API).

Their values are in os.environ before the handler module is imported; `get(name)` returns the
current value, refreshed in the background after LAMBDAWRAP_SECRETS_TTL:

    from lambdawrap import secrets
    password = secrets.get("DB_PASSWORD")
"""

from lambdawrap.handler.secret_cache import SecretsError, get

__all__ = ["SecretsError", "get"]
