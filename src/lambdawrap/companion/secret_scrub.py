"""Declared secrets' values kept out of what the companion exports.

The function uses its secrets: it puts an API key in a URL's query (`?key=...`, a name no
redaction list can guess), a password in a connection string, and an error message or a stack
trace may quote either. The handler side records those texts as they are (url.full, the
exception's message and stack, a user span's attributes, a log line), and they would reach the
collector. The companion knows the values it fetched for LAMBDAWRAP_SECRETS, so every text it
receives from the function's side (records over the channel, the Telemetry API's log lines) is
searched for them before anything is built from it, and each occurrence replaced by REDACTED.

Only values of at least MIN_SCRUBBED_CHARS characters are searched for: a short value (a port,
a user name like "app") is rarely a credential, and replacing it everywhere would garble
unrelated text. Values seen before a rotation are kept: the function may still hold the old one
(os.environ is not changed after init).

A value is also searched for as the function's code writes it into the texts it exports: escaped
in a JSON string (a structured logger's line: a quote or a backslash, which generated passwords
hold, escaped; non-ASCII as \\uXXXX or not) and percent-encoded in a URL (a query built with
urllib.parse, or by requests, httpx or aiohttp from their params). Searching only the raw
value let exactly those values through.

A value of several lines (a PEM private key or certificate) is also searched for a line at a
time: the function's print() reaches the Telemetry API as one record per line.

A secret declared whole that holds a JSON object (an RDS secret: username, password, host...)
is injected as that JSON text, which the function parses and uses a field at a time: each of
its string values is searched for too, as if its key had been declared. Searching only the
whole text let the password through wherever the function wrote it alone.

The execution role's credentials, which Lambda puts in every process's environment, are searched
for too, declared or not: a function that prints its environment (a common first debugging step)
would otherwise send them to the collector, a wider audience than the function's own log group.
"""

from __future__ import annotations

import json
import threading
from urllib.parse import quote, quote_plus

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterable

REDACTED = "[REDACTED]"
MIN_SCRUBBED_CHARS = 8
MAX_VALUES = 256  # rotations add values; beyond this the oldest are forgotten
# A JSON secret with more string values than this (a list, a configuration document) is searched
# for whole only: its values would crowd the other secrets' out of MAX_VALUES, and each one
# searched for costs every exported text its search.
MAX_JSON_STRINGS = 32


# The execution role's secret parts (its access key id names the key, it is no secret).
ROLE_CREDENTIAL_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def role_credentials(environ: Any) -> list:
    """The values of the execution role's credentials in `environ`."""
    return [environ[name] for name in ROLE_CREDENTIAL_VARIABLES if environ.get(name)]


class SecretScrubber:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict = {}  # value -> None, in the order learned (a bounded, ordered set)
        # Longest first: a value that contains another is replaced whole. Read without the lock
        # (a tuple, replaced at once) by the threads that scrub.
        self._values: tuple = ()

    def learn(self, values: Iterable[str]) -> None:
        """Add values to search for (called by the secret store as it fetches)."""
        texts = [text for v in values if isinstance(v, str) for text in (v, *_json_strings(v))]
        forms = [form for v in texts if len(v) >= MIN_SCRUBBED_CHARS for form in _written_forms(v)]
        # Each line of a value that has several (a PEM key or certificate): printed, it reaches
        # the Telemetry API a line at a time, none of which holds the whole value.
        forms += [line for v in texts if "\n" in v or "\r" in v for line in v.splitlines() if len(line) >= MIN_SCRUBBED_CHARS]
        fresh = [v for v in dict.fromkeys(forms) if v not in self._known]
        if not fresh:
            return
        with self._lock:
            for value in fresh:
                self._known.pop(value, None)
                self._known[value] = None
            while len(self._known) > MAX_VALUES:
                del self._known[next(iter(self._known))]
            self._values = tuple(sorted(self._known, key=len, reverse=True))

    def text(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def scrub(self, item: Any) -> Any:
        """`item` with every declared value in its strings replaced: a string is returned
        changed, a dict or list (a record, a telemetry batch) is changed in place, keys too.
        Iterative: a record's depth is the function's to choose."""
        if not self._values:
            return item
        if isinstance(item, str):
            return self.text(item)
        pending = [item]
        while pending:
            node = pending.pop()
            if isinstance(node, dict):
                for key in list(node):
                    value = node[key]
                    if isinstance(value, str):
                        value = self.text(value)
                    elif isinstance(value, (dict, list)):
                        pending.append(value)
                    if isinstance(key, str):
                        clean_key = self.text(key)
                        if clean_key != key:
                            del node[key]
                            key = clean_key
                    node[key] = value
            elif isinstance(node, list):
                for index, value in enumerate(node):
                    if isinstance(value, str):
                        node[index] = self.text(value)
                    elif isinstance(value, (dict, list)):
                        pending.append(value)
        return item


def _json_strings(value: str) -> list:
    """The strings (of MIN_SCRUBBED_CHARS or more) a JSON object or array `value` holds, at any
    depth; none for other text, or for a document holding more than MAX_JSON_STRINGS."""
    if not value.lstrip().startswith(("{", "[")):
        return []
    try:
        document = json.loads(value)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to read: the whole text only
        return []
    found, pending = [], [document]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, str) and len(node) >= MIN_SCRUBBED_CHARS:
            found.append(node)
    return found if len(set(found)) <= MAX_JSON_STRINGS else []


# What yarl (aiohttp's URLs) leaves unescaped in a query's value, where it writes a blank as "+":
# a generated password's "!" or ":" beside a "#" is written neither as quote nor as quote_plus
# writes it.
_YARL_QUERY_SAFE = "!$'()*,/:?@"


def _written_forms(value: str) -> tuple:
    """`value` and the forms it takes once escaped in a JSON string or a URL (each the same as
    `value` when it holds nothing to escape: then no search is added)."""
    return (
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        quote(value),
        quote_plus(value, safe=""),
        quote_plus(value, safe=_YARL_QUERY_SAFE),
    )
