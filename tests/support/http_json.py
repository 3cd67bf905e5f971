"""One HTTP exchange with a JSON answer, for tests that read what a local server says."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def json_exchange(request: urllib.request.Request | str, timeout: float = 10.0) -> tuple[int, Any]:
    """(status, decoded JSON body), for error statuses as for success."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
