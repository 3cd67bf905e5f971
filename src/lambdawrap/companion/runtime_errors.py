"""The error the runtime reported, read back from the line it logs.

When init fails, or an invocation fails after the handler returned (a result it cannot
serialize: Runtime.MarshalError), the platform's telemetry names only a status and, at best, a
generic error type. awslambdaric logs the error it posts as one record, either text
(`[ERROR] <type>: <message>` then the traceback) or, with AWS_LAMBDA_LOG_FORMAT=JSON, an object
with errorType, errorMessage and stackTrace; the platform turns it into a `function` log record,
which the companion receives. The caller got the same type and message in the error payload.
The text's lines are joined by carriage returns when it goes to stdout (one line), and by
newlines when it goes to the platform's log channel (_LAMBDA_TELEMETRY_LOG_FD, set by the
managed runtimes: one framed record). Either way the stack goes out as Python prints a
traceback, as the handler's own exceptions do: whatever the log format, the same error reads
the same.
"""

from __future__ import annotations

import json

from lambdawrap.shared.runtime_report import MAX_STACK_CHARS, described, traceback_text

_TEXT_PREFIX = "[ERROR] "
_LINE_BREAK = "\r"  # awslambdaric's ERROR_LOG_LINE_TERMINATE
_HEADER = "Traceback (most recent call last):"  # the line before the text's stack
_INDENT = "\u00a0"  # awslambdaric's ERROR_LOG_IDENT: the text's stack is indented with it


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
    # A framed record holds newlines (a line on stdout never does). The message may hold
    # anything, carriage returns or a traceback of its own: the runtime's stack starts at the
    # last traceback header, after which its frames are all indented.
    separator = "\n" if "\n" in text else _LINE_BREAK
    head, found, rest = text.rpartition(separator + _HEADER)
    if not found:
        head, rest = text, ""
    error_type, sep, message = head.partition(": ")
    if not error_type or " " in error_type or not (sep or found):
        # "[ERROR] some message": a log line of the function's, not the runtime's (whose
        # report of an error with no message, "[ERROR] AssertionError", has its stack after it)
        return None
    frames = "".join(_python_indentation(frame) + "\n" for frame in rest[-MAX_STACK_CHARS:].split(separator) if frame)
    return {"type": error_type, "message": message, "stack": traceback_text(error_type, message, frames)}


def _python_indentation(frame: str) -> str:
    # awslambdaric indents the text's stack with no-break spaces, Python with spaces.
    code = frame.lstrip(_INDENT)
    return " " * (len(frame) - len(code)) + code


def _from_json(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("errorType"), str) or "errorMessage" not in record:
        return None
    if "message" in record:
        # A `logging` record (awslambdaric's formatter always writes its message; a
        # logger.exception's also has errorType and errorMessage): the runtime's report has none.
        return None
    return described(record["errorType"], str(record.get("errorMessage")), record.get("stackTrace"))
