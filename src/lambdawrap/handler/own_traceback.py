"""The standard `traceback` module as lambdawrap formats the stacks spans record with it.

From 3.11 traceback imports as it formats (`ast` and `unicodedata`, for a frame's carets), and
from 3.13 linecache too (`tokenize`, for a source file's encoding). After the boot, with the
function's folder first on `sys.path`, the process's modules' imports would run the function's
own `ast.py` and leave what they found in `sys.modules`, and a thread of the function's
importing `ast` meanwhile would be handed it. lambdawrap formats with copies of its own, whose
imports go through own_stdlib, and the process's are left as they are, for the function.
Loaded at the first exception described, not at the boot: most environments never describe one.
"""

from __future__ import annotations

import sys

from lambdawrap.shared import own_stdlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_LINECACHE_IMPORTS = sys.version_info >= (3, 13)


def traceback() -> Any:
    """The `traceback` lambdawrap formats with: its own copy (on 3.10 too, whose traceback
    imports nothing as it formats: one path for every version), with no search for a "Did you
    mean" (Python 3.12+ finds one by running the function's code: its __dir__, its properties,
    its imports; the runtime, which formats no exception, runs none of it), reading source
    lines as the process's linecache does now (linecache()). Raises ImportError if the
    interpreter has none."""
    global _TRACEBACK
    module = _TRACEBACK
    if module is None:
        module = own_stdlib.own_copy("traceback")
        if hasattr(module, "_compute_suggestion_error"):
            module._compute_suggestion_error = _no_suggestion
        _TRACEBACK = module
    module.linecache = linecache()
    return module


def linecache() -> Any:
    """The linecache the stack's source lines are read with: the process's, with its cache (the
    lines the function's code registers for code it generated) and any function of it the
    function's code replaced (doctest's `getlines`, serving its examples' lines); on 3.13+,
    where the process's own functions import `tokenize` as they read a file, lambdawrap's copy
    of them, on the process's cache. lambdawrap's own where the process has none yet."""
    process = own_stdlib.process_standard("linecache")
    if process is None:
        return own_stdlib.own_copy("linecache")
    if not _LINECACHE_IMPORTS:
        return process
    copy: Any = own_stdlib.own_copy("linecache")
    state = vars(process)
    functions = [name for name, value in vars(copy).items() if callable(value) and getattr(value, "__module__", None) == "linecache"]
    if any(getattr(state.get(name), "__globals__", None) is not state for name in functions):
        return process  # the function's code replaced one: the process's path is the one it set
    for name, value in state.items():
        if isinstance(value, dict) and not name.startswith("__"):
            setattr(copy, name, value)  # the cache (and any other state), shared
    return copy


def _no_suggestion(exc_value: Any, tb: Any, wrong_name: Any) -> None:
    return None


_TRACEBACK: Any = None
