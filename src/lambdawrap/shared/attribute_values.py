"""How the records carry attribute values JSON has no form for.

The function's spans made through the OpenTelemetry API may hold any of OTLP's AnyValue, as the
SDK's spans do: None, bytes, sequences and mappings of them, nested. JSON carries all of them
but bytes, which travel as a mapping of one key, BYTES_TAG, to their base64 text (a key with a
NUL, which no attribute name has). Nesting is bounded: the record's encoder and the companion's
decoder would refuse a whole record nested deeper than Python's recursion limit allows.
"""

BYTES_TAG = "\x00bytes:base64"
MAX_NESTING = 32
