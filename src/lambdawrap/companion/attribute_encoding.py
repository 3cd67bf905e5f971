"""The OTLP encoders' attributes, each distinct one made once.

The SDK's encoders (spans, log records, metric points) make two protobuf messages for every
attribute of every item they encode, a KeyValue and its AnyValue: ~2.5 µs an attribute, about
half of the CPU of a span's export, ~40 µs a warm invocation's two spans. Most of those attributes
repeat from one item to the next (the trigger, the method, the route, the host, the ARNs...), and
an encoded attribute is copied into the message that holds it (the encoders pass lists of them
to the messages' constructors), so a KeyValue made once serves every later item that carries the
same key and value, at a quarter of the cost. `install` puts a caching `_encode_attributes` in
the encoder modules in place of theirs; an SDK whose encoders look otherwise is left as it is.
"""

from __future__ import annotations

import importlib
import logging
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

INTERNAL = "opentelemetry.exporter.otlp.proto.common._internal"
ENCODERS = (INTERNAL, INTERNAL + ".trace_encoder", INTERNAL + "._log_encoder", INTERNAL + ".metrics_encoder")
# Distinct (key, type, value) kept; when full the cache starts over: a flush's items bring a few
# values that never repeat (request ids, times), the rest come back at their next use.
MAX_CACHED = 1024
# Values cached by their exact type: the type is part of the key (True == 1, and a str subclass
# may encode otherwise). Floats are not: -0.0 == 0.0, and NaN never equals itself.
_CACHED_TYPES = (str, bool, int)
# Text longer than this is not kept: the values that repeat are short (a route, a host, an ARN, a
# user agent), and a long one rarely repeats (an exception's message and stack, a payload), while
# each kept holds its text twice (the key and the encoded copy). 1,024 values of 100 KB kept 200 MB
# in the companion, whose memory is the function's: a 128 MB function raising exceptions with
# long messages was killed for it. Kept this short, the cache holds at most ~2 MB.
MAX_CACHED_CHARS = 1024

_installed = threading.Lock()


def install() -> bool:
    """Put the caching encoder in place of the SDK's `_encode_attributes` in each encoder module
    (once); False if the SDK's encoders are not the ones it was written for (nothing changed)."""
    with _installed:
        internal = importlib.import_module(INTERNAL)
        original = getattr(internal, "_encode_attributes", None)
        if getattr(original, "_lambdawrap_cached", False):
            return True
        encode_key_value = getattr(internal, "_encode_key_value", None)
        sdk_logger = getattr(internal, "_logger", None)
        modules = [importlib.import_module(name) for name in ENCODERS]
        if encode_key_value is None or not isinstance(sdk_logger, logging.Logger) or any(getattr(module, "_encode_attributes", None) is not original for module in modules):
            return False
        cached = _caching_encoder(encode_key_value, sdk_logger)
        for module in modules:
            module._encode_attributes = cached
        return True


def _caching_encoder(encode_key_value: Callable[[str, Any], Any], sdk_logger: logging.Logger) -> Callable[[Any], list]:
    made: dict = {}

    def _encode_attributes(attributes: Any) -> list:
        # The SDK's own loop (its empty answer, its log line for an attribute it cannot encode),
        # with the made KeyValues kept by (key, type, value).
        if not attributes:
            return []
        encoded = []
        for key, value in attributes.items():
            kind = type(value)
            entry = (key, kind, value) if kind in _CACHED_TYPES and (kind is not str or len(value) <= MAX_CACHED_CHARS) else None
            key_value = made.get(entry) if entry is not None else None
            if key_value is None:
                try:
                    key_value = encode_key_value(key, value)
                except Exception as error:  # noqa: BLE001 - as the SDK's loop: logged, the attribute left out
                    sdk_logger.exception("Failed to encode key %s: %s", key, error)
                    continue
                if entry is not None:
                    if len(made) >= MAX_CACHED:
                        made.clear()
                    made[entry] = key_value
            encoded.append(key_value)
        return encoded

    _encode_attributes._lambdawrap_cached = True  # type: ignore[attr-defined]
    return _encode_attributes
