"""The error the runtime reported, read back from the line it logs.

When init fails, or an invocation fails after the handler returned (a result it cannot
serialize: Runtime.MarshalError), the platform's telemetry names only a status and, at best, a
generic error type. awslambdaric logs the error it posts as one record, either text
(`[ERROR] <type>: <message>` then the traceback) or, with AWS_LAMBDA_LOG_FORMAT=JSON, an object
with errorType, errorMessage and stackTrace; the platform turns it into a `function` log record,
which the companion receives. The caller got the same type and message in the error payload.
The text's lines are joined by carriage returns when it goes to stdout (one line), and by
newlines when it goes to the platform's log channel (_LAMBDA_TELEMETRY_LOG_FD, set by the
managed runtimes: one framed record).
"""

from __future__ import annotations

import json

_TEXT_PREFIX = "[ERROR] "
_LINE_BREAK = "\r"  # awslambdaric's ERROR_LOG_LINE_TERMINATE
_TRACEBACK = "\nTraceback (most recent call last):"  # where a framed record's stack starts
MAX_STACK_CHARS = 32768


def runtime_error(lines: list) -> dict | None:
    """{"type", "message", "stack"} of the last runtime error line among `lines` (strings)."""
    for line in reversed(lines):
        if not isinstance(line, str):
            continue
        found = _from_json(line) if line.startswith("{") else _from_text(line)
        if found is not None:
            return found
    return None


def _from_text(line: str) -> dict | None:
    if not line.startswith(_TEXT_PREFIX):
        return None
    text = line[len(_TEXT_PREFIX) :]
    if _LINE_BREAK in text:
        head, _, rest = text.partition(_LINE_BREAK)
        stack = rest.replace(_LINE_BREAK, "\n")
    else:
        # A framed record: its lines are joined by newlines, the message's own included.
        head, found, rest = text.partition(_TRACEBACK)
        stack = (_TRACEBACK[1:] + rest) if found else ""
    error_type, sep, message = head.partition(": ")
    if not sep or not error_type or " " in error_type:
        return None  # "[ERROR] some message": a log line of the function's, not the runtime's
    return {"type": error_type, "message": message, "stack": stack[-MAX_STACK_CHARS:]}


def _from_json(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("errorType"), str) or "errorMessage" not in record:
        return None
    stack = record.get("stackTrace")
    return {
        "type": record["errorType"],
        "message": str(record.get("errorMessage")),
        "stack": "".join(s for s in stack if isinstance(s, str))[-MAX_STACK_CHARS:] if isinstance(stack, list) else "",
    }
