"""Tell the companion when the runtime has handed an invocation's response to the platform.

The companion builds an invocation's span once it knows how the invocation ended. The handler's
record says what the handler did, but a response can still fail after the handler returned: the
runtime cannot serialize it (posted as an error instead), or the platform refuses its size. The
platform's verdict is `runtimeDone`, which the Telemetry API delivers only after buffering at
least 25 ms; for every invocation exported at its own end that wait is billed. awslambdaric posts
through `LambdaRuntimeClient.post_invocation_result` / `post_invocation_error` once the response
is serialized; right after such a call returns, a `posted` record carries the same verdict.
The invocation's own record waits for the post too (invocation.py `after_post`) and carries the
verdict (`end.posted`), sent after the response, where encoding and sending it no longer delay
the caller.

Nothing is imported for this: the hook is set when the runtime imports its own client module
(a post-import hook). A runtime without that module, or a post that raises, sends no `posted`
record, and the companion waits for runtimeDone as it would without this.

A `posted` record of its own, for an invocation whose record went before the post, is sent only
while the companion wants it (shared/posted_wanted.py): when it exports at each invocation's
end; under load it exports once a second and would not use it. The verdict in a held record
costs nothing, and is always there: at a SHUTDOWN that comes before the platform's word, it
says the caller had its response.

Only `LambdaRuntimeClient`'s posts are wrapped (set on that class, not on the base it inherits
them from): the client of Lambda Managed Instances (`LambdaMultiConcurrentRuntimeClient`) logs a
failed post and carries on, so there a post that returned says nothing of the verdict.

A post that raises ends the runtime with the interpreter's traceback printed whole; the wrapper
takes its own entry out before re-raising, which only Python 3.11+ honours (see invocation.py).
On 3.10 the posts are left unwrapped, so that traceback stays the runtime's own, and the
companion waits for runtimeDone there.
"""

from __future__ import annotations

from lambdawrap.handler.invocation import FAILURES, STRIPS_BY_RERAISE, drop_own_frame
from lambdawrap.shared import records
from lambdawrap.shared.records import MAX_RESPONSE_BYTES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, Callable

_POSTS = (("post_invocation_result", "result"), ("post_invocation_error", "error"))
_DATA_ARGUMENTS = {"result": "result_data", "error": "error_response_data"}  # each post's body, by keyword
_MARKER = "_self_lambdawrap_posted"


def install(module: ModuleType, function_wrapper: Callable, after_post: Callable[[dict | None], None]) -> bool:
    """Wrap the runtime client's two posts (once), to call `after_post` after each with the
    `posted` record (None when the post says nothing sure of the verdict); False when
    the module has not the client this knows, or the interpreter would show the wrapper's frame
    in a failed post's traceback."""
    if not STRIPS_BY_RERAISE:
        return False
    client = getattr(module, "LambdaRuntimeClient", None)
    if client is None or not all(callable(getattr(client, name, None)) for name, _ in _POSTS):
        return False
    if getattr(client, _MARKER, False):
        return True
    for name, outcome in _POSTS:
        setattr(client, name, function_wrapper(getattr(client, name), _after_post(after_post, outcome)))
    setattr(client, _MARKER, True)
    return True


def _after_post(after_post: Callable[[dict | None], None], outcome: str) -> Callable:
    def post(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        try:
            answer = wrapped(*args, **kwargs)
        except BaseException as exc:
            # The runtime ends with this exception: the record goes now, and with it the one
            # failure the platform names to the caller alone (a response over its size limit).
            _report(after_post, _refused(args, kwargs, exc, outcome))
            drop_own_frame(exc)  # the runtime's traceback stays its own
            raise
        posted = None
        try:
            request_id, data = _arguments(args, kwargs, outcome)
            if isinstance(request_id, str) and request_id and (outcome == "error" or _deliverable(data)):
                posted = records.posted(request_id, outcome)
        except Exception:  # noqa: BLE001 - instrumentation fails open
            FAILURES.record("after the runtime posted a response")
        _report(after_post, posted)
        return answer

    return post


def _report(after_post: Callable[[dict | None], None], posted: dict | None) -> None:
    try:
        after_post(posted)
    except Exception:  # noqa: BLE001 - instrumentation fails open
        FAILURES.record("after the runtime posted a response")


def _refused(args: tuple, kwargs: dict, exc: BaseException, outcome: str) -> dict | None:
    """The `too_large` record of a response (or error) whose post the platform refused for its
    size, else None: the client's own failure to post (its C part raises RuntimeError for an
    answer other than 202) of bytes or text over the limit. A failure before anything was
    posted (a type the client cannot send, text it cannot encode) is not a matter of size."""
    if type(exc) is not RuntimeError:
        return None
    try:
        request_id, data = _arguments(args, kwargs, outcome)
        size = _size(data)
        if isinstance(request_id, str) and request_id and size is not None and size > MAX_RESPONSE_BYTES:
            return records.posted(request_id, "too_large", size)
    except Exception:  # noqa: BLE001 - instrumentation fails open
        FAILURES.record("after the runtime failed to post a response")
    return None


def _size(data: Any) -> int | None:
    """The bytes the runtime posts for `data` (a str goes UTF-8 encoded); None if it cannot.
    Read through the types' own methods, as _deliverable reads them."""
    if isinstance(data, bytes):
        return bytes.__len__(data)
    if not isinstance(data, str):
        return None
    if str.isascii(data):
        return str.__len__(data)
    try:
        return bytes.__len__(str.encode(data, "utf-8"))
    except UnicodeEncodeError:
        return None  # the runtime could not encode it either: not a matter of size


def _arguments(args: tuple, kwargs: dict, outcome: str) -> tuple:
    """(request id, body) of a post, as the runtime passed them."""
    request_id = args[0] if args else kwargs.get("invoke_id")
    return request_id, args[1] if len(args) > 1 else kwargs.get(_DATA_ARGUMENTS[outcome])


def _deliverable(data: Any) -> bool:
    """Whether the response is surely within Lambda's size limit (a str is sent UTF-8 encoded:
    one byte a character when it is ASCII, as JSON usually is, else up to four)."""
    # The types' own methods: a subclass's are the function's code, which the runtime (reading
    # the buffer) does not run, and nor may we.
    if isinstance(data, bytes):
        return bytes.__len__(data) <= MAX_RESPONSE_BYTES
    if isinstance(data, bytearray):
        return bytearray.__len__(data) <= MAX_RESPONSE_BYTES
    if not isinstance(data, str):
        return False
    return str.__len__(data) <= MAX_RESPONSE_BYTES if str.isascii(data) else str.__len__(data) * 4 <= MAX_RESPONSE_BYTES
