"""The texts a secret's value becomes in what the function's side records: what the companion
searches for to replace (companion/secret_scrub.py), and what the function's side must not cut
in two (handler/secret_cuts.py), since a part of a value is found by no search.

Values shorter than MIN_SCRUBBED_CHARS are left alone (a port, a user name like "app"): rarely a
credential, and replacing them everywhere would garble unrelated text. Standard library only,
and json and urllib.parse imported where asked: the handler's side asks only as it cuts a text.
"""

from __future__ import annotations

from lambdawrap.shared.own_stdlib import standard

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterable

MIN_SCRUBBED_CHARS = 8
# A JSON secret with more string values than this (a list, a configuration document) is searched
# for whole only: its values would crowd the other secrets' out of the scrubber's bound, and each
# one searched for costs every exported text its search.
MAX_JSON_STRINGS = 32
# Top-level fields of the database secrets Secrets Manager rotates that are no credential, whose
# string value is a word exported spans hold: "postgres" (8 characters) replaced in every
# `db.system.name` and connection string made "[REDACTED]ql" of "postgresql".
NOT_SECRET_FIELDS = frozenset({"engine"})
# The execution role's secret parts (its access key id names the key, it is no secret).
ROLE_CREDENTIAL_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# What yarl (aiohttp's URLs) leaves unescaped in a query's value, where it writes a blank as "+":
# a generated password's "!" or ":" beside a "#" is written neither as quote nor as quote_plus
# writes it.
_YARL_QUERY_SAFE = "!$'()*,/:?@"


def role_credentials(environ: Any) -> list:
    """The values of the execution role's credentials in `environ`."""
    return [environ[name] for name in ROLE_CREDENTIAL_VARIABLES if environ.get(name)]


def searched_forms(values: Iterable[str]) -> list:
    """Every text to search for, for `values`, without repeats: each value of MIN_SCRUBBED_CHARS
    or more; of one that is a JSON object or array, its string values too; each without the
    blanks and line breaks around it (a key kept from a file ends in a line break, which the
    function strips before it uses the key); each as written escaped in a JSON string or a URL;
    and each line of a value of several (a PEM key or certificate: printed, it reaches the
    Telemetry API a line at a time)."""
    texts = [text for v in values if isinstance(v, str) for text in (v, *_json_strings(v))]
    texts += [text.strip() for text in texts if text.strip() != text]
    forms = [form for v in texts if len(v) >= MIN_SCRUBBED_CHARS for form in _written_forms(v)]
    forms += [line for v in texts if "\n" in v or "\r" in v for line in v.splitlines() if len(line) >= MIN_SCRUBBED_CHARS]
    return list(dict.fromkeys(forms))


def _json_strings(value: str) -> list:
    """The strings (of MIN_SCRUBBED_CHARS or more) a JSON object or array `value` holds, at any
    depth; none for other text, or for a document holding more than MAX_JSON_STRINGS."""
    if not value.lstrip().startswith(("{", "[")):
        return []
    import json

    try:
        document = json.loads(value)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to read: the whole text only
        return []
    # The words a database secret's top-level fields that are no credential hold (its engine's
    # name), and any other field holding just that word (RDS PostgreSQL's default user name and
    # database name are "postgres" too): not searched for.
    words = {v for k, v in document.items() if k in NOT_SECRET_FIELDS and isinstance(v, str)} if isinstance(document, dict) else set()
    found, pending = [], [document]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, str) and len(node) >= MIN_SCRUBBED_CHARS and node not in words:
            found.append(node)
    return found if len(set(found)) <= MAX_JSON_STRINGS else []


def _written_forms(value: str) -> tuple:
    """`value` and the forms it takes once escaped in a JSON string (once, or twice: a JSON
    body held in a string, as an HTTP event's is), as Python's repr writes it (its UTF-8
    bytes' too) or a JSON string
    holding it (a printed dict, os.environ, an exception's message; a printed event whose body
    is JSON), that repr escaped in a JSON string (a printed dict a JSON logger writes), or in a
    URL (each the same as `value` when it holds nothing to escape: then no search is added)."""
    import json
    parse = standard("urllib.parse")
    quote, quote_plus = parse.quote, parse.quote_plus

    in_json, in_json_unicode = json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]
    in_repr = repr(value)[1:-1]
    in_bytes_repr = repr(value.encode("utf-8", "surrogatepass"))[2:-1]
    return (
        value,
        in_json,
        in_json_unicode,
        json.dumps(in_json)[1:-1],
        json.dumps(in_json_unicode)[1:-1],
        json.dumps(in_json_unicode, ensure_ascii=False)[1:-1],
        in_repr,
        _in_quoted_repr(value),
        _in_quoted_repr(in_json),
        _in_quoted_repr(in_json_unicode),
        json.dumps(in_repr)[1:-1],
        # As repr writes its UTF-8 bytes (a value encoded to send, printed): the same as the
        # text's repr for ASCII, escapes (\xc3\xa9) for anything else.
        in_bytes_repr,
        json.dumps(in_bytes_repr)[1:-1],  # ... and that, written by a JSON logger
        # A lone surrogate (JSON's "\ud800" escape makes one) as its three bytes, not an error
        # that left every value unsearched.
        quote(value, safe="", errors="surrogatepass"),
        quote(value, errors="surrogatepass"),
        quote_plus(value, safe="", errors="surrogatepass"),
        quote_plus(value, safe=_YARL_QUERY_SAFE, errors="surrogatepass"),
    )


def _in_quoted_repr(text: str) -> str:
    """`text` as repr writes it inside a string that also holds a '"' (a JSON document always
    does): between single quotes, its own "'" escaped. repr(text) alone writes a text holding
    "'" and no '"' between double quotes, its "'" as it is."""
    return repr('"' + text)[2:-1]
