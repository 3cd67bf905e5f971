"""The OpenTelemetry semantic conventions version lambdawrap's spans follow, and the span kinds.

The handler side names attributes, span names and span kinds as this version says; the
companion puts its schema URL on the instrumentation scope, so a backend can translate the
names when the conventions move on. docs/semantic-conventions.md lists the choices taken
where the conventions leave one.
"""

from __future__ import annotations

SEMCONV_VERSION = "1.44.0"
SCHEMA_URL = "https://opentelemetry.io/schemas/" + SEMCONV_VERSION

# Span kinds as the invocation record carries them: the numbering of the OpenTelemetry Python
# API's SpanKind, which the companion builds from them (and which user spans use too).
INTERNAL = 0
SERVER = 1
CLIENT = 2
PRODUCER = 3
CONSUMER = 4

# The HTTP methods the conventions know (RFC 9110's, PATCH, and QUERY): http.request.method holds
# only these exact (case-sensitive) names, on server and client spans alike; any other method is
# "_OTHER", with the original in http.request.method_original, and names its span "HTTP".
HTTP_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"))
# The methods known in this process: HTTP_METHODS, unless OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS
# replaces them (the conventions require a way to, named so, a full override). One set object,
# filled by the boot from the settings: the recognisers and the HTTP hooks read it as is.
KNOWN_HTTP_METHODS = set(HTTP_METHODS)


def use_known_http_methods(methods: frozenset) -> None:
    """Make `methods` the known HTTP methods of this process (from Settings.http_known_methods)."""
    if methods != KNOWN_HTTP_METHODS:
        KNOWN_HTTP_METHODS.clear()
        KNOWN_HTTP_METHODS.update(methods)
