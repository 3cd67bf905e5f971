"""awslambdaric's report of an error, as a span records it.

The runtime reports an error it posts (an init's, or one after the handler returned) as an
object with errorType, errorMessage and stackTrace (a list of formatted frames), and logs the
same. The companion reads it back from that log line (companion/runtime_errors.py); a Managed
Instances worker whose init failed has its runtime make it (handler/boot.py), as the platform
refuses that worker's post. Either way it becomes {"type", "message", "stack"}, the stack as
Python prints a traceback, so that the same error reads the same wherever it was told.
"""

from __future__ import annotations

MAX_STACK_CHARS = 32768


def described(error_type: str, message: str, stack_trace: object) -> dict:
    """{"type", "message", "stack"} of a report's errorType, errorMessage and stackTrace."""
    frames = "".join(s if s.endswith("\n") else s + "\n" for s in stack_trace if isinstance(s, str) and s)[-MAX_STACK_CHARS:] if isinstance(stack_trace, list) else ""
    return {"type": error_type, "message": message, "stack": traceback_text(error_type, message, frames)}


def traceback_text(error_type: str, message: str, frames: str) -> str:
    """As Python prints it: the header, the frames, `Type: message`; none without frames (a
    Runtime.MarshalError's, or a module that could not be imported, whose stackTrace is empty)."""
    if not frames:
        return ""
    last = f"{error_type}: {message}" if message else error_type
    return f"Traceback (most recent call last):\n{frames}{last}\n"[-MAX_STACK_CHARS:]
