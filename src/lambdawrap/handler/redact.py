"""Request/response payloads as short, redacted JSON text, for LAMBDAWRAP_CAPTURE_PAYLOAD.

Runs inside the invocation (only when capture is on), so it is standard library only, does
work bounded by the output size rather than the payload's (a 6 MB event costs no more than a
small one), runs none of the user's code (no repr() of their objects) and never raises.

Redaction: the value under any key whose lowercased name is in the key set is replaced by
"[REDACTED]", at any depth, including inside a JSON document carried as a string (an API
Gateway or SQS `body`, also one base64-encoded, also newline-delimited JSON) and in the `k=v&...`
pairs of a raw query string or a form body. Header names Authorization,
Proxy-Authorization, X-Amz-Security-Token, Cookie and Set-Cookie are always in the set, and
`cookies`, where payload 2.0 (HTTP APIs, function URLs) puts the request's Cookie header and the
response's Set-Cookie headers, and authorizer events' `authorizationToken` and `identitySource`;
in a query string, a URL's query anywhere and an event's map of query parameters, url.query's
keys (URL_QUERY_KEYS: a presigned URL's credentials) too. A record's base64 data (Kinesis,
Firehose, Amazon MQ, Kafka) is read as the text it encodes, as a base64 body is.
"""

from __future__ import annotations

import json

from lambdawrap.handler import secret_cuts
from lambdawrap.shared.own_stdlib import standard

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Any, Callable, Iterable

REDACTED = "[REDACTED]"
# The credential headers, where payload 2.0 puts cookies, and what authorizer events carry the
# caller's credential in: a TOKEN authorizer's and AppSync's `authorizationToken`, an HTTP API
# authorizer's `identitySource` (a copy of the Authorization header's value).
ALWAYS_REDACTED = frozenset(("authorization", "proxy-authorization", "x-amz-security-token", "cookie", "set-cookie", "cookies", "authorizationtoken", "identitysource"))
MAX_PAYLOAD_CHARS = 4096
TRUNCATED = "...[truncated]"
MAX_DEPTH = 32
_QUERY_KEYS = frozenset(("rawquerystring", "querystring"))
# The events' maps of query parameters (API Gateway, ALB, VPC Lattice): their names are query keys.
_PARAMETER_MAPS = frozenset(("querystringparameters", "multivaluequerystringparameters", "query_string_parameters"))
_encode_str = json.encoder.encode_basestring_ascii  # the C encoder json.dumps uses for strings
_JSON_BLANKS = " \t\r\n"  # what JSON allows before a document
_BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


class _Full(Exception):
    """The output reached its limit: stop walking."""


def redaction_keys(configured: Iterable[str] = ()) -> frozenset:
    """The lowercased key names to redact: the configured ones plus the always-redacted headers."""
    return ALWAYS_REDACTED | frozenset(k.strip().lower() for k in configured if isinstance(k, str) and k.strip())


def payload_text(value: Any, keys: frozenset = ALWAYS_REDACTED, limit: int = MAX_PAYLOAD_CHARS) -> str | None:
    """`value` as compact JSON with the keys redacted, cut to `limit` characters (marked with
    TRUNCATED); None if it cannot be described at all."""
    try:
        if isinstance(value, (bytes, bytearray, memoryview)):
            # As plain bytes first: a subclass's methods are the function's code.
            view = memoryview(value)
            value = _decode_bytes(bytes(view[: limit * 4 + 1]), view.nbytes)
        return _Writer(keys, limit).dump(value)
    except Exception:  # noqa: BLE001 - capture is side instrumentation: fail open, quietly
        return None


def _decode_bytes(data: bytes, size: int) -> Any:
    # A non-JSON event (RIC hands bytes over unless the Content-Type is exactly JSON): keep it
    # only if it is JSON after all (then it can be redacted), else say what it was.
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return f"<{size} bytes>"


class _Writer:
    def __init__(self, keys: frozenset, limit: int) -> None:
        self.keys = keys
        # A query's credentials (url.query's keys) are redacted in the payload's query too.
        self.query_keys = keys | URL_QUERY_KEYS
        self.limit = max(0, limit)
        self.parts: list = []
        self.size = 0

    def dump(self, value: Any) -> str:
        try:
            self._walk(value, 0)
        except _Full:
            return secret_cuts.head("".join(self.parts), self.limit) + TRUNCATED
        return "".join(self.parts)

    def _emit(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        if self.size > self.limit:
            raise _Full

    def _string(self, text: str) -> None:
        # Slice before encoding: a multi-megabyte string costs only what is written, and what
        # keeps a secret the cut would split there whole.
        room = self.limit - self.size + 1
        self._emit(_encode_str(text[: room + secret_cuts.slack()] if len(text) > room else text))

    def _walk(self, value: Any, depth: int) -> None:
        # The base types' own methods throughout: a subclass's overrides are the user's code.
        if value is None or value is True or value is False:
            self._emit("null" if value is None else "true" if value else "false")
        elif isinstance(value, str):
            value = str.__str__(value)
            if depth < MAX_DEPTH and _may_be_json(value):
                self._embedded_json(value, depth)
            else:
                self._text(value)
        elif isinstance(value, int):
            self._emit(int.__repr__(value) if -(10**30) < value < 10**30 else f'"<{int.bit_length(value)}-bit int>"')
        elif isinstance(value, float):
            self._emit(float.__repr__(value) if value == value and abs(value) != float("inf") else '"' + float.__repr__(value) + '"')
        elif depth >= MAX_DEPTH:
            self._emit('"<nested too deeply>"')
        elif isinstance(value, dict):
            self._dict(value, depth)
        elif isinstance(value, (list, tuple)):
            self._emit("[")
            for index, item in enumerate(list.__iter__(value) if isinstance(value, list) else tuple.__iter__(value)):
                if index:
                    self._emit(",")
                self._walk(item, depth + 1)
            self._emit("]")
        elif isinstance(value, (bytes, bytearray)):
            self._emit(f'"<{len(value)} bytes>"')
        else:
            # Never repr() the user's object: it could run (or leak through) their code.
            self._emit(_encode_str(f"<{type(value).__name__}>"))

    def _text(self, text: str) -> None:
        """A string value, the query of each URL or path in it (`/p?...`, Lattice's raw_path)
        redacted by url.query's keys and the configured ones, wherever it is: a CloudFormation
        custom resource's ResponseURL, S3 Object Lambda's inputS3Url, a redirect's Location are
        presigned URLs, live credentials."""
        if "?" in text and "=" in text:
            self._redacted_head(text, self._urls_redacted)
        else:
            self._string(text)  # most texts hold no query: nothing to redact

    def _urls_redacted(self, text: str) -> str:
        return urls_redacted(text, self.query_keys)

    def _redacted_head(self, text: str, redact: Callable[[str], str]) -> None:
        """`text` written with `redact` run over the head of it the output can hold: a long
        text costs what is written, not its length. When redaction shortened a cut head, the
        output is said to be cut, not filled from a tail that was never read."""
        room = self.limit - self.size + 1
        cut = len(text) > room
        if cut:  # the slack is worked out only for a text the output cannot hold whole
            room += secret_cuts.slack()
            cut = len(text) > room
        head = text[:room] if cut else text
        redacted = redact(head)
        if redacted == head:
            self._string(text)
            return
        self._string(redacted)
        if cut:
            raise _Full

    def _room(self) -> int:
        # What the output can still hold, and what keeps a secret the cut would split whole.
        return self.limit - self.size + 1 + secret_cuts.slack()

    def _dict(self, value: dict, depth: int) -> None:
        self._emit("{")
        first = True
        # An HTTP event's or response's body sent base64-encoded (API Gateway, ALB, function
        # URLs do so for binary media types): read as the text it encodes, or its JSON redacted
        # inside would be there for anyone to decode.
        encoded = dict.get(value, "isBase64Encoded") is True
        for key, item in dict.items(value):
            if not first:
                self._emit(",")
            first = False
            name = str.__str__(key) if isinstance(key, str) else _scalar_key(key)
            self._string(urls_redacted(name, self.query_keys))
            self._emit(":")
            low = name.lower()
            if low in self.keys:
                self._emit('"' + REDACTED + '"')
            elif low in _QUERY_KEYS and isinstance(item, str):
                self._string(redact_query(item, self.query_keys))
            elif low == "body" and isinstance(item, str) and depth + 1 < MAX_DEPTH:
                self._body(str.__str__(item), depth + 1, encoded)
            elif (low == "data" or low == "value") and isinstance(item, str) and depth + 1 < MAX_DEPTH and _record_data(low, value) and _looks_base64(item):
                self._body(str.__str__(item), depth + 1, True)
            elif low in _PARAMETER_MAPS and isinstance(item, dict) and self.keys is not self.query_keys:
                keys, self.keys = self.keys, self.query_keys
                try:
                    self._walk(item, depth + 1)
                finally:
                    self.keys = keys
            else:
                self._walk(item, depth + 1)
        self._emit("}")

    def _body(self, text: str, depth: int, encoded: bool) -> None:
        """An HTTP or queue message's body: a JSON document (one per line too) redacted inside,
        a form's `k=v&...` pairs by key, anything else as it came. One sent base64-encoded is
        read as the text it encodes when that text has something to redact, else kept as it came
        (an image); one too long to read, named (its first bytes decode as any base64's)."""
        if not encoded:
            self._plain_body(text, depth)
            return
        if len(text) > self.limit * 6:
            self._emit(_encode_str(f"<{len(text)} characters of base64, not captured>"))
            return
        from lambdawrap.shared.base64_text import base64_text  # deferred: only for a base64 body

        decoded = base64_text(text)
        head = None if decoded is None else decoded[: self._room()]
        if head is not None and (_may_be_json(decoded) or self._form(head) != head):
            self._plain_body(decoded, depth)
        else:
            # Text that is no base64 though marked so is read as any body.
            self._plain_body(text, depth)

    def _plain_body(self, text: str, depth: int) -> None:
        if _may_be_json(text):
            self._embedded_json(text, depth)
        else:
            self._redacted_head(text, self._form)

    def _form(self, text: str) -> str:
        """`text` with the queries of the URLs in it and a form's
        (application/x-www-form-urlencoded) pairs redacted by key. A name comes whole before
        its value, so a cut never leaves a value whose name went unread."""
        if "=" not in text:
            return text
        return redact_query(urls_redacted(text, self.query_keys), self.query_keys)

    def _embedded_json(self, text: str, depth: int) -> None:
        """A JSON document inside a string (e.g. an HTTP body): redacted inside, kept a string.
        One too long to read within the output's bound is named, not kept: cut, its first
        characters would hold the keys it was to redact."""
        if len(text) > self.limit * 4:
            self._emit(_encode_str(f"<{len(text)} characters of JSON, not captured>"))
            return
        try:
            documents = [json.loads(text)]
        except (ValueError, RecursionError):
            documents = _json_lines(text)
        if documents is None:
            # Looks like JSON but is not (cut short, hand-written): kept unless it could hold a
            # key to redact, which no parse can find in it.
            low = text.lower()
            if any(key in low for key in self.keys):
                self._emit(_encode_str(f"<{len(text)} characters of JSON that does not parse, not captured>"))
            else:
                self._string(text)
            return
        writer = _Writer(self.keys, self.limit - self.size)
        cut = False
        try:
            for index, inner in enumerate(documents):
                if index:
                    writer._emit("\n")
                writer._walk(inner, depth + 1)
        except _Full:
            cut = True
        self._string("".join(writer.parts))
        if cut:
            raise _Full  # what it holds was cut (maybe within the room left): say the output is cut


def _record_data(low: str, record: dict) -> bool:
    """Whether a key holds a record's data, which the event source sends base64-encoded:
    Kinesis's, Firehose's, Amazon MQ's (ActiveMQ, RabbitMQ) `data`, a Kafka record's `value`
    (MSK, self-managed Kafka). Read as the text it encodes, or the keys redacted inside would be
    there for anyone to decode."""
    return low == "data" or low == "value" and dict.__contains__(record, "topic")


def _looks_base64(text: str) -> bool:
    # From its head and length only: a long text costs what a short one does. What is no
    # base64 after all is written as it came.
    return len(text) >= 8 and len(text) % 4 == 0 and not text[:64].strip(_BASE64_ALPHABET)


def _json_lines(text: str) -> list | None:
    """The documents of newline-delimited JSON (one per line, blank lines between allowed);
    None unless every line is one and there are two or more."""
    try:
        # Lines end at "\n" only: JSON strings may hold U+2028 and the like, which splitlines() cuts at.
        documents = [json.loads(line) for line in text.split("\n") if line.strip(_JSON_BLANKS)]
    except (ValueError, RecursionError):
        return None
    return documents if len(documents) > 1 else None


def _may_be_json(text: str) -> bool:
    """Whether `text` begins as a JSON object or array does ("[INFO] ..." does not): what is
    parsed, or named when too long to (read from its first characters only)."""
    head = text[:64].lstrip(_JSON_BLANKS)
    if head[:1] == "{":
        return head[1:].lstrip(_JSON_BLANKS)[:1] in ('"', "}", "")
    if head[:1] == "[":
        return head[1:].lstrip(_JSON_BLANKS)[:1] in tuple('"{[]-0123456789tfn') + ("",)
    return False


def _scalar_key(key: Any) -> str:
    # The names json.dumps would give (a dict's keys may be any hashable in Python).
    if key is None or key is True or key is False:
        return "null" if key is None else "true" if key else "false"
    if isinstance(key, int):
        return int.__repr__(key) if -(10**30) < key < 10**30 else "<int>"
    if isinstance(key, float):
        return float.__repr__(key)
    return f"<{type(key).__name__}>"


# The HTTP semantic conventions (url.query, url.full) of the version followed: values of these
# keys are redacted by default (SigV4 presigned URLs, Azure SAS, Google signed URLs). The keys
# of earlier versions (SigV2's AWSAccessKeyId and Signature) stay: OpenTelemetry Python's own
# instrumentations still redact them, and redacting a key too many leaks nothing. Matched without
# regard to case (the conventions match case-sensitively): a parameter sent as x-amz-signature
# is no less a credential.
URL_QUERY_KEYS = frozenset(
    ("x-amz-signature", "x-amz-credential", "x-amz-security-token", "sig", "x-goog-signature", "awsaccesskeyid", "signature")
)


def url_query_keys(configured: Iterable[str]) -> frozenset:
    """The keys redacted in url.query and url.full: url.query's defaults and the configured
    ones (LAMBDAWRAP_REDACT_KEYS, lowercased by the settings)."""
    return URL_QUERY_KEYS | frozenset(configured)


def redact_query(query: str, keys: frozenset, marker: str = REDACTED, blank_ends: bool = False) -> str:
    """A `k=v&...` query string with the values of the keys in `keys` (lowercased names,
    matched after percent-decoding) replaced by `marker`; `blank_ends`: a value ends at a blank
    or closing mark too (a query read to its line's end, the text after it kept)."""
    low = query.lower()
    # Cheap first: most queries name none of the keys and need no decoding.
    if "=" not in query or "%" not in low and "+" not in low and not (blank_ends and "amp;" in low) and keys.isdisjoint([part.partition("=")[0] for part in low.split("&")]):
        return query
    parts = query.split("&")
    for index, part in enumerate(parts):
        name, sep, value = part.partition("=")
        if sep and _query_name(name, blank_ends) in keys:
            parts[index] = name + "=" + marker + (_after_blank(value) if blank_ends else "")
    return "&".join(parts)


def _query_name(name: str, in_text: bool) -> str:
    """A query parameter's name as matched: percent-decoded, lowercased; in a URL in a text,
    without the rest of an HTML-escaped separator (`&amp;`, as a template writes a link's `&`
    in an href)."""
    low = _unquote(name).lower()
    return low[4:] if in_text and low.startswith("amp;") else low


def _after_blank(value: str) -> str:
    """What follows a value that ends at its first blank or closing mark (no credential holds
    one unescaped): that character on."""
    ends = [at for at in map(value.find, _VALUE_ENDS) if at >= 0]
    return value[min(ends) :] if ends else ""


# Where a value read to its line's end ends: a blank, a quote, a bracket closing around the URL.
_VALUE_ENDS = (" ", "\t", '"', "'", "<", ">", ")", "`")


# Each run of non-blank characters of a text holding a query: matched by a pattern that cannot
# backtrack (a run ends at the first blank), so that a long text costs one pass. Compiled when
# first needed: the module loads with the invocation wrapper, at every cold start.
_RUN_PATTERN = r"\S+"
_runs: list = []
_OPENERS = "\"'(<["


def urls_redacted(text: str, keys: frozenset, marker: str = REDACTED) -> str:
    """`text` with the query of each URL (a scheme's `...://...?`) or path (`/p?...`, Lattice's
    raw_path) in it redacted, the values of `keys` replaced by `marker`, up to a blank or a
    fragment; `text` itself when none was."""
    if "?" not in text or "=" not in text:
        return text  # the cheap test: most texts hold no query
    if not _runs:
        import re

        _runs.append(re.compile(_RUN_PATTERN))
    whole = _lines_redacted(text, keys, marker)
    redacted = _runs[0].sub(lambda run: _run_redacted(run.group(0), keys, marker), whole)
    return text if redacted == text else redacted


def _lines_redacted(text: str, keys: frozenset, marker: str) -> str:
    """Each line of `text` with the query of each URL or path in it redacted: from each '?'
    that a '/' comes before (since the line's or the last '?') to the next such '?', a '#' or
    the line's end, a value ending at a blank too. A URL's path or query may hold a blank ("my
    report.pdf?...", "filename=a b.pdf&sig=..."), which the runs part. Bounded by the line: in
    a stack trace, a key's value would otherwise run on to the next '&' of a later line."""
    lines = text.splitlines(keepends=True) if "\n" in text or "\r" in text else [text]
    changed = False
    for index, line in enumerate(lines):
        if "?" not in line or "=" not in line:
            continue
        starts = _query_starts(line)
        if not starts:
            continue
        end = len(line.rstrip("\r\n"))
        pieces, done = [], 0
        for at, query in enumerate(starts):
            stop = starts[at + 1] if at + 1 < len(starts) else end
            fragment = line.find("#", query, stop)
            stop = stop if fragment < 0 else fragment
            pieces += [line[done : query + 1], redact_query(line[query + 1 : stop], keys, marker, blank_ends=True)]
            done = stop
        redacted = "".join(pieces) + line[done:]
        if redacted != line:
            lines[index], changed = redacted, True
    return "".join(lines) if changed else text


def _query_starts(line: str) -> list:
    """The '?' of `line` that begin a URL's or a path's query: a '/' before each since the
    line's start or the '?' before it."""
    starts, last = [], -1
    at = line.find("?")
    while at >= 0:
        if line.find("/", last + 1, at) >= 0:
            starts.append(at)
        last = at
        at = line.find("?", at + 1)
    return starts


def _run_redacted(run: str, keys: frozenset, marker: str) -> str:
    query = run.find("?")
    if query < 0 or "=" not in run:
        return run
    lead = run.lstrip(_OPENERS)
    if lead[:1] != "/" and "://" not in run[:query]:
        return run
    return _query_redacted(run, query, len(run), keys, marker)


def _query_redacted(text: str, query: int, end: int, keys: frozenset, marker: str) -> str:
    """`text` with its query (from the '?' at `query` to a '#' or `end`) redacted."""
    fragment = text.find("#", query, end)
    stop = end if fragment < 0 else fragment
    part = text[query + 1 : stop]
    redacted = redact_query(part, keys, marker)
    return text if redacted == part else text[: query + 1] + redacted + text[stop:]


def _unquote(text: str) -> str:
    if "%" not in text and "+" not in text:
        return text
    # Deferred: only escaped names need it; the standard one, never a file of the function's.
    return standard("urllib.parse").unquote_plus(text)
