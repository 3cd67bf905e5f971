"""URLs as the HTTP client conventions record them: `url.full` without credentials and with the
redaction keys' query values replaced, `server.address` and `server.port`. String work only (no
urllib.parse on the per-request path)."""

from __future__ import annotations

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
CREDENTIALS = "REDACTED:REDACTED"  # as the conventions write it


def split_url(url: str) -> "tuple[str, str, int, str, str] | None":
    """(scheme, host, port, userinfo, rest) of an absolute URL; rest is what follows the
    authority (path, query, fragment). None when it is not absolute."""
    scheme, sep, remainder = url.partition("://")
    if not sep or not _is_scheme(scheme):  # a relative URL whose query holds one: "/?next=http://..."
        return None
    scheme = scheme.lower()
    end = len(remainder)
    for mark in "/?#":
        at = remainder.find(mark)
        if at != -1 and at < end:
            end = at
    authority, rest = remainder[:end], remainder[end:]
    userinfo, at_sign, hostport = authority.rpartition("@")
    host, port = split_hostport(hostport, DEFAULT_PORTS.get(scheme, 0))
    return scheme, host, port, userinfo if at_sign else "", rest


def _is_scheme(text: str) -> bool:
    """RFC 3986's scheme: a letter, then letters, digits, "+", "-" or "."."""
    return text[:1].isalpha() and text.isascii() and all(c.isalnum() or c in "+-." for c in text)


def split_hostport(hostport: str, default_port: int) -> "tuple[str, int]":
    if hostport.startswith("["):  # IPv6 literal
        host, _, after = hostport[1:].partition("]")
        port = after[1:] if after.startswith(":") else ""
    else:
        host, sep, port = hostport.rpartition(":")
        if not sep:
            host, port = hostport, ""
    return host.lower(), int(port) if port.isdigit() else default_port


def full_url(scheme: str, host: str, port: int, rest: str, keys: frozenset, userinfo: str = "") -> str:
    """The `url.full` value: credentials replaced, redaction keys' query values replaced, the
    default port left out."""
    authority = f"[{host}]" if ":" in host else host
    if port and port != DEFAULT_PORTS.get(scheme):
        authority = f"{authority}:{port}"
    if userinfo:
        authority = f"{CREDENTIALS}@{authority}"
    if "?" in rest:
        path, _, query = rest.partition("?")
        query, hash_mark, fragment = query.partition("#")
        from lambdawrap.handler.redact import redact_query  # loaded with the invocation wrapper

        rest = f"{path}?{redact_query(query, keys, 'REDACTED')}{hash_mark}{fragment}"
    return f"{scheme}://{authority}{rest}"
