"""Reading an HTTP request out of the shapes services hand it over in, and describing it with the
HTTP server attributes, span name and response status the conventions define.

Every HTTP-shaped source (API Gateway, ALB, function URLs, VPC Lattice, CloudFront) ends in
`http_trigger`, so the attributes are named and filled in one place.
"""

from __future__ import annotations

from itertools import islice

from lambdawrap.handler import secret_cuts
from lambdawrap.handler.trace_context import MAX_SCANNED_NAMES
from lambdawrap.handler.triggers.trigger import MAX_ATTRIBUTE_CHARS, MAX_PARSED_CHARS, Trigger
from lambdawrap.shared.own_stdlib import standard
from lambdawrap.shared.semconv import KNOWN_HTTP_METHODS

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Dict, Optional, Tuple

# Real requests carry a few dozen headers and parameters; a forged event with a million of
# them is read only this far.
MAX_FIELDS = MAX_SCANNED_NAMES
_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"


def _joined(values: object) -> Optional[str]:
    """A header or parameter value that may be a list of values (repeats are joined with ", ",
    as HTTP combines repeated fields), joined only until it is longer than an attribute keeps:
    what is read of a header (a trace context, a host, a client address) is at its start."""
    if isinstance(values, str):
        return values
    if not isinstance(values, list):
        return None
    kept = []
    room = MAX_ATTRIBUTE_CHARS + 1
    for value in values[:MAX_FIELDS]:
        if isinstance(value, str):
            kept.append(value[:room])
            room -= len(value) + 2
            if room <= 0:
                break
    return ", ".join(kept) or None


# The W3C Trace Context fields a client may send in more than one header line: repeated
# tracestate (and baggage) lines are one list, combined; a repeated traceparent is invalid.
_TRACE_FIELDS = frozenset(("traceparent", "tracestate", "baggage"))
_CONTEXT_FIELDS = (*sorted(_TRACE_FIELDS), "x-amzn-trace-id")


def request_headers(single: object, multi: object = None) -> Dict[str, str]:
    """Request headers with lowercased names, from ``{name: value}`` (values may be lists), or
    from ``{name: [values]}`` when the single-value map is empty (ALB multi-value mode).

    Where both are given (API Gateway payload 1.0), the single-value map holds only the last
    line of a repeated header: the trace context fields are then read from the multi-value one,
    their lines joined as HTTP combines them (looked at only when a traceparent or a baggage
    came: baggage goes on without a parent)."""
    headers = _headers(single, multi)
    if ("traceparent" in headers or "baggage" in headers) and single and isinstance(multi, dict) and multi:
        for name, values in _bounded_items(multi):
            if isinstance(values, list) and len(values) > 1 and isinstance(name, str) and name.lower() in _TRACE_FIELDS:
                value = _joined(values)
                if value:
                    headers[name.lower()] = value
    return headers


def _headers(single: object, multi: object) -> Dict[str, str]:
    if isinstance(single, dict) and single:
        if len(single) <= MAX_FIELDS:
            try:
                # The usual case, in one fast pass: string names and string values.
                fast = {name.lower(): value for name, value in single.items() if value.__class__ is str}
                if len(fast) == len(single):
                    return fast
            except AttributeError:
                pass  # a name that is not a string: take the careful path below
        source = single
    elif isinstance(multi, dict):
        source = multi
    else:
        return {}
    out: Dict[str, str] = {}
    for name, values in _bounded_items(source):
        value = _joined(values)
        if isinstance(name, str) and value:
            out[name.lower()] = value
    if len(source) > MAX_FIELDS:
        # Beyond the fields read, the trace context is still looked up (as a client writes its
        # name): a request with many headers (an ALB's) keeps its parent.
        for field in _CONTEXT_FIELDS:
            if field not in out:
                for spelling in (field, field.title()):
                    value = _joined(source.get(spelling))
                    if value:
                        out[field] = value
                        break
    return out


def _bounded_items(mapping: dict):
    return mapping.items() if len(mapping) <= MAX_FIELDS else islice(mapping.items(), MAX_FIELDS)


def query_from_parameters(single: object, multi: object, encode: bool, limit: int = MAX_ATTRIBUTE_CHARS) -> Optional[str]:
    """A raw query string rebuilt from ``{key: value}`` or ``{key: [values]}`` parameters, built
    only until it is longer than ``limit`` (the attribute keeps no more): its first ``limit``
    characters are those of the whole query.

    ``encode``: whether the service decoded the values (API Gateway REST does, so they are
    percent-encoded again); otherwise they are used as received (ALB).
    """
    source = multi if isinstance(multi, dict) and multi else single
    if not isinstance(source, dict):
        return None
    pairs = []
    size = -1  # the query's length so far: each pair adds its own and an "&"
    for key, values in _bounded_items(source):
        if not isinstance(key, str):
            continue
        if isinstance(values, str):
            values = (values,)
        elif not isinstance(values, list):
            continue
        name = None  # encoded once per key, at its first value: a key without one is never read
        for value in values[:MAX_FIELDS]:
            if isinstance(value, str):
                # Encoding never shortens a text, so a text cut to the room left still fills
                # it: a 6 MB event costs what a 4 KB query does.
                room = limit - size
                if name is None:
                    name = key[: room + secret_cuts.slack()] if len(key) > room else key
                    if encode:
                        name = quote(name)
                if len(value) > room:
                    value = value[: room + secret_cuts.slack()]  # a secret the cut splits, whole
                pair = name + "=" + (quote(value) if encode else value)
                pairs.append(pair)
                size += len(pair) + 1
                if size > limit:
                    return secret_cuts.head("&".join(pairs), limit)
    return "&".join(pairs) if pairs else None


def quote(text: str) -> str:
    """Percent-encode a query component; most need nothing, and str.strip checks that in C."""
    if not text.strip(_UNRESERVED):
        return text
    # Imported here: only values that need escaping pay for it.
    percent_encode = standard("urllib.parse").quote

    # A lone surrogate (a JSON escape such as \ud800, which no UTF-8 encoder takes) is encoded
    # as its three bytes: the query keeps it, and the request keeps its description.
    return percent_encode(text, safe="", errors="surrogatepass")


def first_hop(forwarded_for: Optional[str]) -> Optional[str]:
    """The original client in an ``X-Forwarded-For`` list (its first entry)."""
    if not forwarded_for:
        return None
    return forwarded_for[:MAX_PARSED_CHARS].split(",", 1)[0].strip() or None


def server_authority(headers: Dict[str, str]) -> Tuple[Optional[str], Optional[int]]:
    """(``server.address``, ``server.port``) as the HTTP server conventions determine them: from
    the first of ``Forwarded``'s host, ``X-Forwarded-Host``, ``:authority`` and ``Host`` that
    names a host, each parsed into host and port (the port ``None`` when the header has none)."""
    if "forwarded" not in headers and "x-forwarded-host" not in headers and ":authority" not in headers:
        # The usual request (a Host header alone): this runs on every HTTP invocation.
        host = headers.get("host")
        return split_authority(host) if host else (None, None)
    forwarded = headers.get("forwarded")
    for value in (forwarded and _forwarded_host(forwarded), headers.get("x-forwarded-host"), headers.get(":authority"), headers.get("host")):
        if value:
            host, port = split_authority(value)
            if host:
                return host, port
    return None, None


def _forwarded_host(forwarded: str) -> Optional[str]:
    # RFC 7239: "for=192.0.2.60;proto=https;host=example.com, for=..." - the first element is the
    # request as the first proxy received it; a value may be a quoted string ("[::1]:8443").
    for pair in forwarded[:MAX_PARSED_CHARS].split(",", 1)[0].split(";"):
        name, equals, value = pair.partition("=")
        if equals and name.strip().lower() == "host":
            value = value.strip()
            return value[1:-1] if len(value) > 1 and value[0] == value[-1] == '"' else value
    return None


_BLANKS = " \t"
_OPENING = " \t["


def split_authority(authority: str) -> Tuple[Optional[str], Optional[int]]:
    """(host, port) of a ``Host``-style value: ``example.com``, ``example.com:8080``,
    ``[2001:db8::1]:8443`` (the address without its brackets); of a repeated header, the first."""
    if ":" not in authority and "," not in authority and authority[:1] not in _OPENING and authority[-1:] not in _BLANKS and len(authority) <= MAX_PARSED_CHARS:
        return authority, None  # a name alone, as most requests have it
    authority = authority[:MAX_PARSED_CHARS].split(",", 1)[0].strip()
    if authority.startswith("["):
        host, bracket, after = authority[1:].partition("]")
        if not bracket:
            return None, None
        return host or None, (port_number(after[1:]) if after.startswith(":") else None)
    host, colon, port = authority.rpartition(":")
    if not colon:
        return authority or None, None
    if ":" in host:  # an IPv6 address without brackets: no port can be told from it
        return authority, None
    return host or None, port_number(port)


def port_number(text: Optional[str]) -> Optional[int]:
    """A TCP port from its decimal text (ASCII digits only), else ``None``."""
    if text and len(text) <= 5 and text.isascii() and text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    return None


def protocol_version(protocol: object) -> Optional[str]:
    """``network.protocol.version`` from ``HTTP/1.1`` or ``HTTP/2.0`` ("1.1", "2")."""
    if not isinstance(protocol, str) or not protocol.upper().startswith("HTTP/"):
        return None
    version = protocol[5:20]
    return version[:-2] if version in ("2.0", "3.0") else version or None


def http_trigger(
    kind: str,
    headers: Dict[str, str],
    method: Optional[str],
    path: Optional[str],
    query: Optional[str],
    scheme: Optional[str],
    route: Optional[str] = None,
    domain: Optional[str] = None,
    client: Optional[str] = None,
    user_agent: Optional[str] = None,
    protocol: Optional[str] = None,
    status_without_code: Optional[int] = None,
) -> Trigger:
    """An HTTP server span: attributes of the HTTP conventions, named ``{method} {route}``
    (``{method}`` without a route; ``HTTP`` for methods the conventions do not know).

    ``domain``: the service's own name for the host (API Gateway's ``domainName``), the server's
    address when no header names one. ``status_without_code``: what the service answers for a
    response that names no status, where it documents one."""
    attributes: Dict[str, object] = {"faas.trigger": "http"}
    name_method = "HTTP"
    if method:
        if method in KNOWN_HTTP_METHODS:
            attributes["http.request.method"] = name_method = method
        else:
            attributes["http.request.method"] = "_OTHER"
            attributes["http.request.method_original"] = method
    server, port = server_authority(headers)
    # One loop instead of a call per attribute: this runs on every HTTP invocation.
    for key, value in (
        ("url.path", path),
        ("url.query", query),  # redacted by the invocation wrapper, with the configured keys
        ("url.scheme", scheme),
        ("http.route", route),
        ("server.address", server or domain),
        ("client.address", client or first_hop(headers.get("x-forwarded-for"))),
        ("user_agent.original", headers.get("user-agent") or user_agent),
        ("network.protocol.version", protocol_version(protocol)),
    ):
        if value.__class__ is str and value:
            attributes[key] = value
    if "server.address" in attributes:
        # The load balancer's or API Gateway's listener port, when the header named none.
        port = port or port_number(headers.get("x-forwarded-port"))
        if port:
            attributes["server.port"] = port
    return Trigger(kind, attributes, headers, span_name=name_method + " " + route if route else name_method, status_without_code=status_without_code)


def status_from(value: object) -> Optional[int]:
    """An HTTP status code from an int, an integral float or Decimal, or a string of digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        code = value
    elif isinstance(value, float):
        if not value.is_integer():
            return None
        code = int(value)
    elif isinstance(value, str):
        value = value.strip()
        # isdecimal() alone would accept non-ASCII digits such as "２００".
        if not value or len(value) > 3 or not value.isascii() or not value.isdecimal():
            return None
        code = int(value)
    else:
        # A Decimal (the numbers boto3 reads from DynamoDB): the runtime writes it as the number
        # it is. Its class is found on the value (decimal is not imported here), and its base
        # methods used, not a subclass's.
        number = next((base for base in type(value).__mro__ if base.__name__ == "Decimal" and base.__module__ in ("decimal", "_pydecimal")), None)
        if number is None:
            return None
        if not number.is_finite(value) or not number.__eq__(number.to_integral_value(value), value):
            return None
        code = number.__int__(value)
    return code if 100 <= code <= 999 else None
