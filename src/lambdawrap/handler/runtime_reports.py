"""Python 3.10 only: the runtime's error reports (the caller's `stackTrace`, the error it logs)
without the wrapper's frames.

On 3.10 an exception raised through the handler's wrapper keeps the wrapper's traceback entry
(invocation.py, STRIPS_BY_RERAISE). Labelled as bootstrap code, that entry is left out of the
report while it leads the traceback, as awslambdaric leaves out its own leading frames. It does
not lead where code of the function's sits above the wrapper: an integration that wraps the
handler the runtime calls (Sentry's AWS Lambda integration patches awslambdaric's
`handle_event_request` to do so), whose frame then came first, and the wrapper's line after it,
in every stack trace the caller got. awslambdaric reads a traceback's frames in one function,
`extract_traceback`; the frames it returns here are those of the traceback without the
wrapper's.

Set by a post-import hook when the runtime imports its bootstrap module; a runtime without that
function is left as it is.
"""

from __future__ import annotations

from lambdawrap.handler.invocation import FAILURES, WRAPPER_FILENAME

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, Callable

_MARKER = "_lambdawrap_frames_hidden"


def install(module: ModuleType) -> bool:
    """Have the runtime's `extract_traceback` leave the wrapper's frames out (once); False when
    the module has no such function."""
    extract = getattr(module, "extract_traceback", None)
    if not callable(extract):
        return False
    if not getattr(extract, _MARKER, False):
        module.extract_traceback = _without_wrapper_frames(extract)
    return True


def _without_wrapper_frames(extract: Callable[[Any], list]) -> Callable[[Any], list]:
    def extract_traceback(tb: Any) -> list:
        frames = extract(tb)
        try:
            return [frame for frame in frames if frame[0] != WRAPPER_FILENAME]
        except Exception:  # noqa: BLE001 - instrumentation fails open: the runtime's own frames
            FAILURES.record("leaving the wrapper's frames out of the runtime's report")
            return frames

    setattr(extract_traceback, _MARKER, True)
    return extract_traceback
