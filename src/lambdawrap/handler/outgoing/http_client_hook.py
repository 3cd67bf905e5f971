"""`http.client` (and so `urllib.request`, which sends through it): a span from
`HTTPConnection.request()` to the `getresponse()` that answers it, or to the connection's
`close()` when no response is read (then it has no status: what came back is unknown). A
request written line by line (`putrequest()`, `putheader()`, `endheaders()`, as
`xmlrpc.client` writes its calls) is one from `endheaders()`, which sends it: the context goes
in as headers put before it (those the function put stay). A
request of the handler's thread that neither ends by its invocation's end (a connection left
for the garbage collector) ends then, as unread (`Invocation.unfinished_calls`); a later
`getresponse()` or `close()` finds it ended.

The span lives on the connection between the calls. The context is not marked as under a
traced call (a request whose response is never read must not silence the calls after it); the
libraries that send through http.client (urllib3, and requests over it) mark their own calls.
"""

from __future__ import annotations

import sys
from _thread import get_ident

from lambdawrap.handler.invocation import FAILURES, active_invocation
from lambdawrap.handler.outgoing.http_calls import Call, HttpCalls, answered_with, sync_wrapper
from lambdawrap.handler.outgoing.propagation import CARRIED, add_missing, carried_changes, header_text
from lambdawrap.handler.outgoing.urls import split_url

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from types import ModuleType
    from typing import Any, Callable

_SPAN = "_lambdawrap_call"  # the connection's call under way
_DEFAULT = object()  # request() given no headers (its default: {})
_REQUEST_SENT = "Request-sent"  # http.client's _CS_REQ_SENT


def patch(module: "ModuleType", calls: HttpCalls, function_wrapper: "Callable") -> None:
    connection = module.HTTPConnection
    https = getattr(module, "HTTPSConnection", None)

    def begin(instance: "Any", args: tuple, kwargs: dict) -> tuple:
        return _begin(calls, https, instance, args, kwargs)

    def remember(call: "Any", instance: "Any", result: "Any") -> None:
        instance.__dict__[_SPAN] = _Sent(calls, call)  # getresponse() or close() ends it

    def resume(instance: "Any", args: tuple, kwargs: dict) -> tuple:
        sent = instance.__dict__.pop(_SPAN, None)
        return (sent.claim() if sent is not None else None), args, kwargs

    def resume_answered(instance: "Any", args: tuple, kwargs: dict) -> tuple:
        if _not_ready(instance):
            # getresponse() raises ResponseNotReady (the last response is still unread): the
            # request still awaits the getresponse() that answers it.
            return None, args, kwargs
        return resume(instance, args, kwargs)

    def unanswered(call: "Any", *ignored: "Any") -> None:
        calls.answered(call, None)  # closed, whether or not the close itself failed

    def begin_written(instance: "Any", args: tuple, kwargs: dict) -> tuple:
        return _begin_written(calls, https, instance, args, kwargs)

    request = sync_wrapper(calls, begin, remember)
    endheaders = sync_wrapper(calls, begin_written, remember)
    getresponse = sync_wrapper(calls, resume_answered, answered_with(calls, "status"))
    close = sync_wrapper(calls, resume, unanswered, unanswered)

    connection.request = function_wrapper(connection.request, request)
    connection.endheaders = function_wrapper(connection.endheaders, endheaders)
    connection.getresponse = function_wrapper(connection.getresponse, getresponse)
    connection.close = function_wrapper(connection.close, close)


def _not_ready(conn: "Any") -> bool:
    """Whether getresponse() will refuse to read (http.client's own test, on its private state):
    no request sent, or the last response not read to its end yet."""
    state = conn.__dict__
    if state.get("_HTTPConnection__state", _REQUEST_SENT) != _REQUEST_SENT:
        return True
    response = state.get("_HTTPConnection__response")
    try:
        return response is not None and not response.isclosed()
    except Exception:  # noqa: BLE001 - not http.client's: let getresponse() tell
        return False


class _Sent:
    """A request sent, its response not yet asked for: ended by whoever claims it first, the
    connection's getresponse() or close(), or its invocation's end."""

    __slots__ = ("calls", "call", "pending")

    def __init__(self, calls: HttpCalls, call: Call) -> None:
        self.calls = calls
        self.call = call
        self.pending: "dict | None" = None
        invocation = active_invocation()
        if invocation is not None and invocation.thread == get_ident():
            self.pending = invocation.unfinished_calls()
            self.pending[id(self)] = self

    def claim(self) -> "Call | None":
        """The call, for the connection to end, unless its invocation's end has."""
        pending = self.pending
        if pending is not None and pending.pop(id(self), None) is None:
            return None
        return self.call

    def finish_late(self, invocation: "Any") -> None:
        self.calls.answered(self.call, None, invocation)  # never read: no status, as at close()


def _target(https: "Any", conn: "Any", url: str) -> tuple:
    """(scheme, host, port, userinfo, rest) of a request for `url` on the connection."""
    scheme = "https" if https is not None and isinstance(conn, https) else "http"
    host, port = conn.host, conn.port
    tunnel = getattr(conn, "_tunnel_host", None)
    if tunnel:  # through a proxy: the request goes to the tunnel's end
        host, port = tunnel, getattr(conn, "_tunnel_port", None) or port
    parts = split_url(url) if "://" in url[:12] else None
    if parts is not None:  # an absolute URL (a plain proxy)
        return parts
    return scheme, host, port, "", url


def _begin_written(calls: HttpCalls, https: "Any", conn: "Any", args: tuple, kwargs: dict) -> tuple:
    """The call of a request written line by line, as endheaders() is about to send it; none
    for request()'s own (http.client's _send_request calls endheaders(): request() traces it)."""
    if _called_by_send_request() or _urllib3s(conn):
        return None, args, kwargs
    lines = conn.__dict__.get("_buffer")
    if not lines or conn.__dict__.get("_HTTPConnection__state") != "Request-started":
        return None, args, kwargs  # not a request being written: endheaders() raises itself
    # putrequest() wrote "METHOD URL HTTP/1.1", putheader() "Name: value" lines, in latin-1
    # (http.client refuses a URL with a blank or a control character in it).
    method, _, rest = header_text(lines[0]).partition(" ")
    url = rest.rpartition(" ")[0]
    present = {}
    for line in lines[1:]:
        name, _, value = header_text(line).partition(":")
        name = name.strip().lower()
        if name in CARRIED:
            present.setdefault(name, value.strip())
    scheme, host, port, userinfo, rest = _target(https, conn, url)
    call = calls.begin(method, scheme, str(host).lower(), port, rest, None, userinfo, mark=False)
    if call is None:
        return None, args, kwargs
    to_set, _ = carried_changes(present, calls.headers_for(call))
    for name, value in to_set:
        if name.lower() in present:
            continue  # a line put already is sent as it is: one of ours is not put beside it
        try:
            conn.putheader(name, value)
        except Exception:  # noqa: BLE001 - a subclass refusing it: the request goes without it
            FAILURES.record("putting a trace header into an http.client request")
    return call, args, kwargs


def _called_by_send_request() -> bool:
    """Whether the endheaders() under way was called by http.client's request() (its
    _send_request, or a subclass's), past lambdawrap's own frames and a subclass's endheaders()
    calling its parent's."""
    frame = sys._getframe(1)
    while frame is not None and (str(frame.f_globals.get("__name__", "")).startswith(("lambdawrap.", "_lambdawrap_wrapt")) or frame.f_code.co_name == "endheaders"):
        frame = frame.f_back
    return frame is not None and frame.f_code.co_name == "_send_request"


def _urllib3s(conn: "Any") -> bool:
    """Whether the connection is urllib3's (botocore's too), which writes its requests line by
    line: its own hook traces them, or the function left urllib3 out (LAMBDAWRAP_INSTRUMENT)."""
    connection = sys.modules.get("urllib3.connection")
    base = getattr(connection, "HTTPConnection", None)
    return isinstance(base, type) and isinstance(conn, base)


def _begin(calls: HttpCalls, https: "Any", conn: "Any", args: tuple, kwargs: dict) -> tuple:
    if _urllib3s(conn):  # urllib3 1.x's request() is http.client's (boto3 on it too)
        return None, args, kwargs
    method = args[0] if args else kwargs.get("method", "")
    url = args[1] if len(args) > 1 else kwargs.get("url", "")
    if not isinstance(method, str) or not isinstance(url, str):
        return None, args, kwargs
    scheme, host, port, userinfo, rest = _target(https, conn, url)
    # The user's headers mapping (or the shared default {}) is never changed: a copy carries
    # ours. Made first: a value http.client cannot read (None, a list of pairs) is left to fail
    # the call untraced, as without us (a copy of it, {} or a dict, would make it succeed).
    given = args[3] if len(args) > 3 else kwargs.get("headers", _DEFAULT)
    if given is not _DEFAULT and type(given) is not dict and not callable(getattr(given, "items", None)):
        return None, args, kwargs
    headers = _copy(given)
    call = calls.begin(method, scheme, str(host).lower(), port, rest, None, userinfo, mark=False)
    if call is None:
        return None, args, kwargs
    add_missing(headers, calls.headers_for(call))
    if len(args) > 3:
        args = args[:3] + (headers,) + args[4:]
    else:
        kwargs = dict(kwargs, headers=headers)
    return call, args, kwargs


def _copy(headers: "Any") -> "Any":
    """A copy of the headers mapping request() was given (_DEFAULT: none), sending what it would:
    a dict's, or every line of one that holds a name twice (an email.message.Message, a
    multidict), whose dict() would keep one value of each name."""
    if headers is _DEFAULT:
        return {}
    if type(headers) is dict:
        return dict(headers)
    return _HeaderLines(headers.items())


class _HeaderLines:
    """Header lines in order, a name possibly twice: what http.client reads of a mapping (its
    names, `items()`), and what add_missing changes (a name's first line, or a new one)."""

    def __init__(self, items: "Any") -> None:
        self._lines = [[name, value] for name, value in items]

    def __iter__(self) -> "Any":
        return iter([name for name, _ in self._lines])

    def __len__(self) -> int:
        return len(self._lines)

    def items(self) -> list:
        return [(name, value) for name, value in self._lines]

    def __getitem__(self, name: str) -> "Any":
        for line in self._lines:
            if line[0] == name:
                return line[1]
        raise KeyError(name)

    def __setitem__(self, name: str, value: "Any") -> None:
        for line in self._lines:
            if line[0] == name:
                line[1] = value
                return
        self._lines.append([name, value])

    def __delitem__(self, name: str) -> None:
        self._lines = [line for line in self._lines if line[0] != name]
