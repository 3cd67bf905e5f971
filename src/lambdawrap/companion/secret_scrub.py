"""Declared secrets' values kept out of what the companion exports.

The function uses its secrets: it puts an API key in a URL's query (`?key=...`, a name no
redaction list can guess), a password in a connection string, and an error message or a stack
trace may quote either. The handler side records those texts as they are (url.full, the
exception's message and stack, a user span's attributes, a log line), and they would reach the
collector. The companion knows the values it fetched for LAMBDAWRAP_SECRETS, so every text it
receives from the function's side (records over the channel, the Telemetry API's log lines) is
searched for them before anything is built from it, and each occurrence replaced by REDACTED.

What is searched for is shared/secret_forms' `searched_forms`: only values of at least
MIN_SCRUBBED_CHARS characters (a short value, a port or a user name like "app", is rarely a
credential, and replacing it everywhere would garble unrelated text). Values seen before a
rotation are kept: the function may still hold the old one (os.environ is not changed after
init).

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

A bytes attribute of the function's own span (a request body) crosses the channel as base64,
which no search finds a value in: its bytes are searched as UTF-8 text.

A part of a value is found by no search: where the function's side cuts a long text (a message,
a URL, a stack), it cuts clear of every value (handler/secret_cuts.py).
"""

from __future__ import annotations

import threading

from lambdawrap.shared.attribute_values import BYTES_TAG
from lambdawrap.shared.secret_forms import searched_forms

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterable

REDACTED = "[REDACTED]"
PREFIX_CHARS = 8  # of a value, the part searched for first (values have 8 characters or more)
# Rotations add texts to search for; beyond this many the oldest are forgotten, never one of a
# secret's first value (os.environ keeps it) or its current one (however many texts the declared
# secrets make: each is the function's).
MAX_VALUES = 256


class SecretScrubber:
    def __init__(self, permanent: Iterable[str] = ()) -> None:
        """`permanent`: values searched for for good (the role's credentials), which no number of
        secrets learned later pushes out of the MAX_VALUES kept. Their forms are made at the
        first use, or `prepare()`: escaping imports urllib.parse, some 5 ms that the companion's
        start must not spend before it subscribes to the Telemetry API."""
        self._lock = threading.Lock()
        self._pending = tuple(v for v in permanent if isinstance(v, str))
        self._permanent: tuple = ()
        self._known: dict = {}  # value -> None, in the order last learned (a bounded, ordered set)
        # What a source (a secret's request) gave first (the value injected at boot, which
        # os.environ keeps for good) and last (its current value): never forgotten.
        self._first: dict = {}
        self._current: dict = {}
        # (values, groups): the values longest first (a value that contains another is replaced
        # whole), and their positions grouped by their first PREFIX_CHARS characters: a text is
        # searched for each group's prefix, and for its values only where it holds it. A value's
        # written forms share their beginning, so hundreds of values (two JSON secrets of 32
        # fields) make a few dozen groups, and a text holding none (most) costs a search per
        # group: 5 µs a 1 KB line where each value's search cost 94. Read without the lock (a
        # tuple, replaced at once) by the threads that scrub.
        self._search: tuple = ((), None)

    def prepare(self) -> None:
        """Make the permanent values' forms now, if not made yet."""
        if not self._pending:
            return
        with self._lock:
            if self._pending:
                self._permanent = tuple(searched_forms(self._pending))
                self._pending = ()
                self._search = _searched(self._known, self._permanent)

    def learn(self, values: Iterable[str], source: Any = None) -> None:
        """Add values to search for (called by the secret store as it fetches): `source`'s
        current values (a secret's request). Its first and current values are kept for good;
        those between (rotations that came and went) are forgotten first, oldest first."""
        self.learn_forms(searched_forms(values), source)

    def learn_forms(self, forms: Iterable[str], source: Any = None) -> None:
        """learn(), given the values' searched forms already made."""
        self.prepare()
        forms = [v for v in forms if v not in self._permanent]
        with self._lock:
            if source is not None:
                self._first.setdefault(source, forms)
                self._current[source] = forms
            fresh = [v for v in forms if v not in self._known]
            for value in forms:  # learned again: the most recent
                self._known.pop(value, None)
                self._known[value] = None
            if not fresh:
                return
            excess = len(self._known) - MAX_VALUES
            if excess > 0:
                # Never what was just learned: past the bound the declared secrets' texts alone
                # make, a value served now would otherwise be forgotten as it is learned.
                kept = {v for forms_kept in (*self._first.values(), *self._current.values(), forms) for v in forms_kept}
                for value in [v for v in self._known if v not in kept][:excess]:
                    del self._known[value]
            self._search = _searched(self._known, self._permanent)

    def text(self, text: str) -> str:
        if self._pending:
            self.prepare()
        values, groups = self._search
        if groups is None:
            for value in values:
                if value in text:
                    text = text.replace(value, REDACTED)
            return text
        found = [at for prefix, positions in groups if prefix in text for at in positions]
        if not found:
            return text
        found.sort()  # longest first, as in `values`
        for at in found:
            value = values[at]
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def scrub(self, item: Any) -> Any:
        """`item` with every declared value in its strings replaced: a string is returned
        changed, a dict or list (a record, a telemetry batch) is changed in place, keys too.
        Iterative: a record's depth is the function's to choose."""
        if self._pending:
            self.prepare()
        if not self._search[0]:
            return item
        if isinstance(item, str):
            return self.text(item)
        # (node, whether its numbers are read): a function's log record (a telemetry event of
        # type "function") is, the platform's and the channel's protocol numbers are not.
        pending = [(item, False)]
        while pending:
            node, numbers = pending.pop()
            if isinstance(node, dict):
                if len(node) == 1 and isinstance(node.get(BYTES_TAG), str):
                    node[BYTES_TAG] = self._bytes(node[BYTES_TAG])
                    continue
                logged = numbers or node.get("type") == "function"
                for key in list(node):
                    value = node[key]
                    if isinstance(value, str):
                        value = self.text(value)
                    elif isinstance(value, (dict, list)):
                        pending.append((value, numbers or (logged and key == "record")))
                    elif numbers and isinstance(value, (int, float)):
                        value = self._number(value)
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
                        pending.append((value, numbers))
                    elif numbers and isinstance(value, (int, float)):
                        node[index] = self._number(value)
        return item

    def _number(self, value: Any) -> Any:
        """A number of a function's log record as it is, or REDACTED where it is a declared
        value (a PIN, an account number logged as a number), as its text in a line would be.
        The whole number only: one whose digits merely hold a value's (a time in nanoseconds)
        is no secret of the function's."""
        if type(value) is bool:
            return value
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
            value_text = repr(int(value))
        else:
            value_text = repr(value)
        return REDACTED if self.text(value_text) == REDACTED else value

    def _bytes(self, encoded: str) -> str:
        """A bytes attribute's base64 text with every declared value in its bytes replaced, read
        as UTF-8 (bytes that are no text kept as they are): the function's request bodies and
        payloads carry its keys so, and their base64 text hides them from a search."""
        from binascii import Error, a2b_base64, b2a_base64

        try:
            text = a2b_base64(encoded).decode("utf-8", "surrogateescape")
        except (Error, ValueError):
            return encoded  # refused when the span is built, as it was
        clean = self.text(text)
        return encoded if clean == text else b2a_base64(clean.encode("utf-8", "surrogateescape"), newline=False).decode("ascii")


def _searched(known: dict, permanent: tuple) -> tuple:
    """(values longest first, ((prefix, positions of the values that start with it), ...)), the
    groups None where they are not half as many as the values: each search of a text costs about
    the same, and grouping then saves too few of them to pay for itself."""
    values = tuple(sorted((*known, *permanent), key=len, reverse=True))
    groups: dict = {}
    for at, value in enumerate(values):
        groups.setdefault(value[:PREFIX_CHARS], []).append(at)
    if 2 * len(groups) > len(values):
        return values, None
    return values, tuple((prefix, tuple(positions)) for prefix, positions in groups.items())
