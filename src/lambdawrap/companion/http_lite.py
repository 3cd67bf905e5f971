"""One HTTP/1.1 exchange over a plain socket, for the Extensions and Telemetry APIs.

http.client costs ~20 ms of imports (the email package); the companion's calls before its
first /next sit on the function's cold-start path, so they use this instead."""

from __future__ import annotations

import json
import socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def request(host: str, port: int, method: str, path: str, *, headers: dict | None = None, body: Any = None, timeout: float | None = 5.0) -> tuple:
    """(status, lowercased headers, decoded JSON body or text); `Connection: close` each time."""
    payload = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close", f"Content-Length: {len(payload)}"]
    if body is not None:
        lines.append("Content-Type: application/json")
    lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return parse_response(b"".join(chunks))


def parse_response(raw: bytes) -> tuple:
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split() if lines else []
    # isascii(): str.isdigit() also accepts digits int() refuses ("²", from a latin-1 byte).
    status = int(parts[1]) if len(parts) > 1 and parts[1].isascii() and parts[1].isdigit() else 0
    headers = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    length = headers.get("content-length")
    if length is not None and length.isascii() and length.isdigit():
        payload = payload[: int(length)]
    try:
        decoded = json.loads(payload) if payload else None
    except ValueError:
        decoded = payload.decode("utf-8", "replace")
    return status, headers, decoded
