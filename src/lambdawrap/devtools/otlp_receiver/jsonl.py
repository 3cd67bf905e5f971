"""JSONL output: every received item appended to a file as one JSON line."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Sequence

from lambdawrap.devtools.otlp_receiver.decoding import Item

logger = logging.getLogger(__name__)


class JsonlWriter:
    """Appends items to one file; safe to call from many request handler threads."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()

    def append(self, kind: str, items: Sequence[Item]) -> None:
        """Append one line per item, tagged ``"signal": kind``; a write error is logged."""
        lines = "".join(
            json.dumps({"signal": kind, **item}, default=_json_default, sort_keys=False) + "\n" for item in items
        )
        with self._lock:
            try:
                with open(self._path, "a", encoding="utf-8") as handle:
                    handle.write(lines)
                    handle.flush()
            except OSError:
                logger.exception("OTLP receiver cannot append to %s", self._path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    return repr(value)
