"""The per-invocation wrapper around the user's handler.

Three zones, as the style guide asks: a guarded before-call, the unguarded call of the user's
handler (their exceptions pass through untouched), and a guarded after-call. Nothing of ours
ever escapes into the invocation, and nothing of ours is left in the traceback the runtime
reports. The start of each invocation is published in the process's in-flight slot (memory,
no system call) and the whole record goes to the companion in one send, without blocking:
once the runtime has posted the response (`after_post`, from response_posted.py), so that
encoding and sending it, and rendering the handler's exception (its __str__, called once), are
off the caller's path; or when the handler is done, where no post
follows that this process has seen (the first invocation, Python 3.10, Managed Instances, a
call from another thread), the handler's exception ends the runtime (SystemExit,
KeyboardInterrupt), or the invocation is within HOLD_MARGIN_MS of its timeout. A held record
whose post never comes goes when the next invocation starts, or when the process exits.

Only the outermost call is an invocation: a handler that calls itself (through its module
attribute, say) runs its inner calls unrecorded; and only the process that started an
invocation reports it (a child forked inside the handler exits without a word of ours).
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from _thread import RLock, get_ident

from lambdawrap.handler import import_hooks, init_trace, message_context, own_traceback, secret_cuts, trace_context, triggers
from lambdawrap.handler.channel import Channel
from lambdawrap.handler.redact import redact_query, url_query_keys
from lambdawrap.handler.repeated_frames import cheap_to_format
# Trigger attributes come from the event (paths, queries, user agents): a 6 MB event could
# otherwise make a record too large for the channel, and the invocation would lose its span.
# The recognisers build values only this far.
from lambdawrap.handler.triggers.trigger import MAX_ATTRIBUTE_CHARS
from lambdawrap.shared import posted_wanted, records
from lambdawrap.shared.ids import new_span_id, new_trace_id, reseed as reseed_ids
from lambdawrap.shared.inflight import InflightSlot
from lambdawrap.shared.log import Failures
from lambdawrap.shared.process_id import own_pid
from lambdawrap.shared.sampling import make_sampler
from lambdawrap.shared.settings import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Any, Callable

MAX_MESSAGE_CHARS = 4096
# What TracebackException writes for a message whose __str__ raised (3.11+).
_UNPRINTABLE = ("<exception str() failed>",)
_OWN_TRACEBACK = object()
MAX_STACK_CHARS = 32768
# A record is held for the runtime's post only while the invocation has this much time left:
# a timeout while the response is serialized or posted would otherwise take the record with it.
HOLD_MARGIN_MS = 500

# lambdawrap's own failures in this process, reported with the next invocation record.
FAILURES = Failures()

# From 3.11 a bare `raise` re-raises with the exception's own __traceback__, so the wrapper can
# drop its own entry first. 3.10 re-raises the traceback it caught, entry included; there the
# wrapper's code is labelled as runtime bootstrap code, whose leading frames awslambdaric leaves
# out of the stack trace it reports (its `"/bootstrap.py" not in filename` rule).
STRIPS_BY_RERAISE = sys.version_info >= (3, 11)
# No such file: ours alone. Its name holds "importlib" and "_bootstrap" as well: the frames of
# such a file are the import system's to `warnings` and (from 3.11) `logging`, which pass over
# them when they look for a caller, so that a handler's warnings.warn(..., stacklevel=2), or
# log call with stacklevel=2, names the runtime's line that called it, as without the wrapper
# between them (it named the wrapper's).
WRAPPER_FILENAME = os.path.join(os.path.dirname(__file__), "importlib._bootstrap", "bootstrap.py")


def labelled_as_bootstrap(function: Callable) -> Callable:
    """A wrapper through which the function's code is called, its code labelled as the runtime's
    bootstrap code and the import system's: see STRIPS_BY_RERAISE and WRAPPER_FILENAME."""
    function.__code__ = function.__code__.replace(co_filename=WRAPPER_FILENAME)
    return function


# BaseException's own slot for the traceback, read and written past the exception's class: a
# class may refuse assignments (a frozen dataclass raises FrozenInstanceError for any name,
# __traceback__ too), as the interpreter's own raise never asks it.
_TRACEBACK = BaseException.__dict__["__traceback__"]


def drop_own_frame(exc: BaseException) -> None:
    """Before a bare `raise`: take the calling wrapper's entry off the traceback the exception
    carries, so that the traceback the function (and its caller) sees is the wrapped code's
    alone (honoured from 3.11)."""
    tb = _TRACEBACK.__get__(exc)
    if STRIPS_BY_RERAISE:
        if tb is not None:
            _TRACEBACK.__set__(exc, tb.tb_next)
        return
    # 3.10 keeps the first entry, a leading one the runtime leaves out of its report. Entries of
    # ours further in are not leading: an earlier invocation's, in the traceback an exception
    # object raised again continues, or an inner call's, of a handler that calls itself. They
    # are taken out, as each 3.11 wrapper takes out its own.
    while tb is not None:
        following = tb.tb_next
        while following is not None and following.tb_frame.f_code.co_filename == WRAPPER_FILENAME:
            following = following.tb_next
        if following is not tb.tb_next:
            tb.tb_next = following
        tb = following

_active: list = []  # the invocation under way in this process (at most one)
# Spans other threads end while the invocation's record is made: each either rides with the
# record or, made after it, goes alone, never appended to a list already sent. One lock for the
# process: one invocation at a time runs in it. Re-entrant: a signal handler (a timeout
# decorator's SIGALRM) may end a span on the thread that holds it.
_spans_lock = [RLock()]
# Outgoing calls that could not carry the trace context (a full message, a client context too
# large): reported with the next invocation record (`end.context_not_injected`).
_context_not_injected: list = [0]


def active_invocation() -> "Invocation | None":
    """The invocation this process is running now, for spans made during it."""
    return _active[0] if _active else None


def deliver_span(channel: Channel, span: dict, invocation: "Invocation | None" = None) -> None:
    """A finished span (the user's or a client span): with its invocation's record (`invocation`,
    else the one under way in this process) when it is of its trace, else alone (a child forked
    during an invocation holds a copy of it that is never sent: its spans go alone, on its own
    connection)."""
    if invocation is None:
        invocation = active_invocation()
    if invocation is None or span["trace_id"] != invocation.trace_hex or invocation.pid != own_pid() or not invocation.add_span(span):
        channel.send(records.spans([span], init_trace.ids_for(span)))


def count_context_not_injected() -> None:
    """An outgoing call went without the trace context (counted, reported with the next record)."""
    _context_not_injected[0] += 1


class Invocation:
    """One invocation under way: what the after-call and the user's spans need."""

    __slots__ = ("start_json", "trigger", "context", "pid", "trace_id", "trace_hex", "span_id", "sampled", "beside", "_w3c", "otel_token", "spans", "spans_dropped", "max_spans", "unfinished", "thread", "slot")

    def __init__(self, start_json: bytes, trigger: Any, trace_id: int, span_id: int, sampled: bool, max_spans: int, context: Any = None) -> None:
        self.start_json = start_json
        self.trigger = trigger
        self.context = context
        self.pid = own_pid()
        self.trace_id = trace_id
        self.trace_hex = f"{trace_id:032x}"  # as spans name their trace
        self.span_id = span_id
        self.sampled = sampled
        # (tracestate, baggage) as they came beside the parent, checked when first used.
        self.beside: tuple | None = None
        self._w3c: tuple | None = None
        self.otel_token: Any = None
        self.spans: list | None = []  # None once the record took them (take_spans)
        self.spans_dropped = 0
        self.max_spans = max_spans
        # Calls answered whose own end may never come (see `unfinished_calls`), by id.
        self.unfinished: dict | None = None
        self.thread = get_ident()  # the handler's
        self.slot: InflightSlot | None = None  # the in-flight slot holding its start, told of its spans

    @property
    def trace_state(self) -> str:
        """The caller's W3C tracestate, which the spans under this one keep and carry on."""
        return (self._w3c or self._check_w3c())[0]

    @property
    def baggage(self) -> str:
        """The caller's W3C baggage, carried on by outgoing calls."""
        return (self._w3c or self._check_w3c())[1]

    def beside_texts(self, with_baggage: bool = True) -> tuple:
        """(tracestate, baggage) the caller sent, checked; empty where it sent neither (the
        baggage too without `with_baggage`: OTEL_PROPAGATORS has no `baggage`)."""
        if not self.beside:
            return ("", "")
        return (self.trace_state, self.baggage if with_baggage else "")

    def _check_w3c(self) -> tuple:
        from lambdawrap.shared.w3c_fields import parse_baggage, parse_tracestate  # at first use only

        beside = self.beside or (None, None)
        self._w3c = (parse_tracestate(beside[0]), parse_baggage(beside[1]))
        return self._w3c

    def unfinished_calls(self) -> dict:
        """Calls the handler's thread made, answered, that end at this invocation's end unless
        something ends them first (an AWS call whose after-call a handler of the function's cut
        short): each value has `finish_late(invocation)`, called by the one who pops its key.
        (Another thread's call may still be retrying then: it is not one of these.)"""
        if self.unfinished is None:
            self.unfinished = {}
        return self.unfinished

    def add_span(self, span: dict) -> bool:
        """A span made during this invocation: it travels with the invocation's record. False
        once that record is made (a thread of the function's ending a span as the handler
        returns): the span is then to go alone."""
        with _spans_lock[0]:
            if self.spans is None:
                return False
            if len(self.spans) < self.max_spans:
                self.spans.append(span)
            else:
                self.spans_dropped += 1
            if self.slot is not None:
                # Should the process end before the record goes (a timeout, a crash), the
                # companion counts what it held.
                self.slot.held(len(self.spans) + self.spans_dropped)
            return True

    def take_spans(self) -> tuple:
        """(spans, spans dropped past the limit) for the record; later spans go alone."""
        with _spans_lock[0]:
            spans, self.spans = self.spans, None
            return spans or [], self.spans_dropped


class InvocationTracer:
    """Makes ids, cold-start, sampling and trigger facts for each invocation and reports it."""

    def __init__(self, settings: Settings, channel: Channel, booted_at: float | None = None, environ: Any = None, function_wrapper: Any = None) -> None:
        env = os.environ if environ is None else environ
        self.settings = settings
        self.channel = channel
        # Wall-clock seconds: the wait for a first request is frozen time, which the monotonic
        # clock may not count (see handler_loaded).
        self.booted_at = time.time() if booted_at is None else booted_at
        self._function_wrapper = function_wrapper
        self._provisioned = env.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "provisioned-concurrency"
        # SnapStart: init ran when the version was published; this process is a restored copy.
        self._restored = env.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start"
        self._invocations = 0
        # The thread whose posts of responses reach after_post (None until one has), and the
        # record of an invocation that thread finished, waiting for its post.
        self._posting_thread: int | None = None
        self._held: tuple | None = None
        # A runtime that ends between the handler's return and the post (an exception whose
        # __str__ raises in the runtime's own error handling) still sends what it held.
        atexit.register(self._send_held_at_exit)
        self.sampled = make_sampler(settings.sampler, settings.sampler_ratio)
        if not settings.managed_instances and not self._restored:
            # The handler's module loads next. Not in a SnapStart snapshot: every copy restored
            # from it would export the init span with the ids it holds.
            init_trace.begin(self.sampled)
        message_context.follow_propagators(settings.propagators)
        self.inflight = InflightSlot(settings.socket_path)  # the process's one; its outgoing calls are held there too
        self._posted_flag = posted_wanted.flag_path(settings.socket_path)
        self._query_keys = url_query_keys(settings.redact_keys)
        self._redact_keys: Any = None
        if settings.capture_payload:
            from lambdawrap.handler.redact import redaction_keys  # deferred: only when payload capture is on

            self._redact_keys = redaction_keys(settings.redact_keys)
        self.user_spans: Any = None  # set by the OpenTelemetry bridge when the user's code uses the API
        self._boot_pid = own_pid()
        if hasattr(os, "register_at_fork"):
            # Each forked worker serves its own first invocation.
            os.register_at_fork(after_in_child=self._after_fork, after_in_parent=self._after_fork_in_parent)

    def _after_fork(self) -> None:
        _spans_lock[0] = RLock()  # one a thread held at the fork stays held in the child
        self._invocations = 0
        self._posting_thread = None
        self._held = None

    def _after_fork_in_parent(self) -> None:
        # On Managed Instances the process that booted is awslambdaric's parent: it forks the
        # workers and serves nothing, so what it counted (a hook that failed at boot) is reported
        # by the worker it forked first, whose copy goes with its first record; each later
        # worker's copy went with its own too, N times over.
        if self.settings.managed_instances and own_pid() == self._boot_pid and not _active:
            FAILURES.count = 0
            _context_not_injected[0] = 0

    def bridge_loaded(self, user_spans: Any) -> None:
        """The OpenTelemetry bridge is in place, the user's code having imported the API: made
        during an invocation (a handler importing the API as it runs), the invocation span is
        made current for the rest of it, as at the start of every later one, where the handler's
        thread imports it. Not in an event loop's task, whose context is a copy of the thread's:
        a task that outlives the invocation would keep it current."""
        self.user_spans = user_spans
        state = active_invocation()
        if state is None or state.otel_token is not None or state.pid != own_pid() or state.thread != get_ident():
            return
        asyncio = sys.modules.get("asyncio")
        if asyncio is not None and asyncio._get_running_loop() is not None:
            return
        state.otel_token = self._enter_user_spans(state)

    def handler_loaded(self) -> None:
        """The handler's module has loaded in this process: a first request is a proactive init
        when it came more than proactive_init_ms after this, the process having waited for it,
        not its caller for the process. Counted from the boot, every first request of a
        function slow to load was one: on Managed Instances, whose init may last 15 minutes (N
        workers loading at once on shared vCPUs), and on demand after an init that ran out its
        10 s, as the platform runs it again inside the first invoke, bounded by the function's
        timeout only (a model that takes 12 s to load: its caller waited for all of it)."""
        self.booted_at = time.time()
        init_trace.end()  # what runs from here is not the init's

    def init_failed(self, started_ns: int, error: dict, wait_s: float = 0.0) -> None:
        """Managed Instances: this worker could not load the function (`error` as the runtime
        reports it). The environment's init ends when the first worker asks for work, and the
        runtime's report of a worker's failure is refused once it has: the others serve on, and
        the platform tells of none of it. The companion hears it here, waited for up to
        `wait_s` where it does not listen yet: the worker exits next, and a record it dropped
        would be counted only once it had been reaped, maybe at the environment's end."""
        end_ns = max(started_ns, time.time_ns())  # not before its start: a wall clock stepped back
        self.channel.connect_within(wait_s)
        self.channel.send(records.init_failed(started_ns, end_ns, error))

    def wrap(self, handler: Callable) -> Callable:
        """The handler wrapped once; a handler we already wrapped comes back unchanged."""
        # By its type alone: asking the handler for an attribute runs its class's __getattr__
        # (the user's code, which may print, or raise: the handler was then left unwrapped).
        if type(handler) in _handler_wrappers.values():
            return handler
        if self._function_wrapper is None:
            from lambdawrap.handler import private_wrapt

            self._function_wrapper = private_wrapt.load().FunctionWrapper
        return _handler_wrapper(self._function_wrapper)(handler, self._call)

    def _call(self, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        if _active:
            try:
                return wrapped(*args, **kwargs)  # a call from inside an invocation is part of it
            except BaseException as exc:
                drop_own_frame(exc)  # out of the stack trace the runtime reports, as below
                raise
        try:
            state = self._before(args, kwargs)
        except Exception:  # noqa: BLE001 - instrumentation fails open
            FAILURES.record("before the handler")
            state = None
        if state is None:
            try:
                return wrapped(*args, **kwargs)
            except BaseException as exc:
                drop_own_frame(exc)  # as below: failing open leaves the caller's error as it was
                raise
        _active.append(state)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            _active.clear()
            drop_own_frame(exc)
            self._after_safely(state, None, exc)
            raise
        _active.clear()
        self._after_safely(state, result, None)
        return result

    _call = labelled_as_bootstrap(_call)

    def _before(self, args: tuple, kwargs: dict) -> Invocation:
        start_ns = time.time_ns()
        # A library loaded lazily since the last invocation is traced from this one.
        import_hooks.catch_up()
        if self._held is not None:
            # The last response's post never came through after_post: its record goes now,
            # and from here on each record goes when its handler is done.
            self._posting_thread = None
            self._send_held()
        event = args[0] if args else kwargs.get("event")
        context = args[1] if len(args) > 1 else kwargs.get("context")
        self._invocations += 1
        first = self._invocations == 1
        if first:
            init_trace.end()  # a handler the runtime found loaded another way
            if self._restored:
                reseed_ids()  # before any id of this copy is drawn
        # A restored copy's first request waited for its restore, however long ago init ran.
        proactive = first and not self._restored and (start_ns / 1e9 - self.booted_at) * 1000 > self.settings.proactive_init_ms
        trigger = triggers.detect_trigger(event)
        headers = trigger.headers
        if headers is None and self.settings.xray_lambda_order and type(event) is dict:
            # OpenTelemetry's Lambda instrumentations read any event's `headers` object (where
            # their botocore instrumentation puts an Invoke's context) with the propagators.
            headers = event.get("headers")
            headers = headers if type(headers) is dict else None
        parent, ambient, beside = trace_context.choose_parent(
            headers,
            trace_context.client_context_w3c(context),
            trigger.parent,
            os.environ.get("_X_AMZN_TRACE_ID"),
            trigger.parent_state,
            trigger.parent_baggage,
            self.settings.xray_lambda_order,
            self.settings.propagators,
        )
        links = trigger.links
        if ambient is not None:
            # The platform's sampled X-Ray context, when the event's own context became the
            # parent: the function ran inside it, so the span keeps a link to it (and the
            # event's own when the X-Ray context was asked to come first).
            links = [ambient] + links[: trace_context.MAX_LINKS - 1]
        trace_id = parent.trace_id if parent else new_trace_id()
        span_id = new_span_id()
        sampled = self.sampled(trace_id, parent)
        payload = None
        if self._redact_keys is not None:
            # Before the call: the request as it came, whatever the handler does to it.
            payload = _payload(event, self._redact_keys)
        start_json = records.encode_invocation_start(
            request_id=getattr(context, "aws_request_id", "") or "",
            function_arn=getattr(context, "invoked_function_arn", "") or "",
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=parent.span_id if parent else 0,
            sampled=sampled,
            start_ns=start_ns,
            cold_start=first and not proactive and not self._provisioned,
            proactive_init=proactive,
            trigger=trigger.kind,
            attributes=self._attributes(trigger.attributes),
            links=links,
            span_name=trigger.span_name[:MAX_ATTRIBUTE_CHARS],
            span_kind=trigger.span_kind,
            request_payload=payload,
            trace_state=(beside[0] if beside else None) or "",  # as it came: the companion checks it
            init_span=init_trace.chosen_ids() if first else None,
        )
        state = Invocation(start_json, trigger, trace_id, span_id, sampled, self.settings.max_spans_per_invocation, context)
        state.beside = beside
        if self.inflight.hold(state.start_json, start_ns):
            state.slot = self.inflight
        self.channel.connect_ahead()
        if self.user_spans is not None:
            state.otel_token = self._enter_user_spans(state)
        return state

    def _enter_user_spans(self, state: Invocation) -> Any:
        """The invocation span made current for the user's spans, with what the caller sent
        beside its parent (the baggage only where OTEL_PROPAGATORS carries it)."""
        return self.user_spans.enter(state.trace_id, state.span_id, state.sampled, *state.beside_texts("baggage" in self.settings.propagators))

    def _attributes(self, attributes: dict) -> dict:
        attributes = _capped(attributes)
        query = attributes.get("url.query")
        if query:
            # A token or password in a query string would otherwise land in every span: the
            # conventions' keys and the configured ones are redacted ("REDACTED", as the
            # conventions write it).
            redacted = redact_query(query, self._query_keys, "REDACTED")
            if redacted != query:
                attributes = dict(attributes, **{"url.query": redacted})
        return attributes

    def _after_safely(self, state: Invocation, result: Any, error: BaseException | None) -> None:
        if state.pid != own_pid():
            return  # a child forked during the invocation: the parent reports it
        try:
            self._after(state, result, error)
        except Exception:  # noqa: BLE001 - instrumentation fails open
            FAILURES.record("after the handler")

    def _after(self, state: Invocation, result: Any, error: BaseException | None) -> None:
        if state.unfinished:  # before the invocation's end: they end inside it
            _finish_unfinished(state)
        end_ns = time.time_ns()
        annotations = self.user_spans.exit(state.otel_token) if state.otel_token is not None else None
        # Held for the post only where one follows: on the thread the runtime posts from, for
        # an exception the runtime reports (not SystemExit, KeyboardInterrupt), with time left,
        # and while the companion lives: without it the environment is reset once the response
        # is out, maybe before a held record's drop could be counted beside the socket.
        hold = self._posting_thread == get_ident() and (error is None or isinstance(error, Exception)) and _time_left_to_post(state.context) and not self.channel.companion_gone()
        later = None  # (field, make, args): a field of the record made once the response is out
        if error is not None:
            end = records.invocation_end(end_ns)
            # Described when the record goes: when held, after the runtime's post, so that an
            # exception slow to render (its __str__) costs the caller nothing of ours. Its
            # traceback as it is now: on its way up it gains the runtime's frames.
            # Read as the slot holds it (a property of the function's is its code), without
            # the leading entry of ours 3.10 keeps (see drop_own_frame).
            frames = _TRACEBACK.__get__(error)
            if frames is not None and frames.tb_frame.f_code.co_filename == WRAPPER_FILENAME:
                frames = frames.tb_next
            later = ("error", describe_exception, (error, frames))
        else:
            if isinstance(result, bytes):
                # Bytes the runtime posts as they are, parsed for their status: maybe large JSON.
                end = records.invocation_end(end_ns)
                later = ("http_status", triggers.response_status_code, (state.trigger, result))
            else:
                end = records.invocation_end(end_ns, http_status=triggers.response_status_code(state.trigger, result))
            if self._redact_keys is not None:
                payload = _payload(result, self._redact_keys)
                if payload is not None:
                    end["response_payload"] = payload
        if later is not None and not hold:
            _finish(end, later)
            later = None
        if annotations:
            end["annotations"] = annotations  # what the function set on the invocation span
        spans, spans_dropped = state.take_spans()
        if spans:
            end["spans"] = spans
        if spans_dropped:
            end["spans_dropped"] = spans_dropped
        if self.settings.managed_instances:
            # There the record goes before the runtime serializes and posts the response, which
            # may yet fail: the companion awaits the platform's word until the deadline.
            remaining_ms = _remaining_ms(state.context)
            if remaining_ms is not None:
                end["remaining_ms"] = remaining_ms
        failures = FAILURES.count
        if failures:
            end["internal_errors"] = failures
        not_injected = _context_not_injected[0]
        if not_injected:
            end["context_not_injected"] = not_injected
        if hold:
            self._held = (state.start_json, end, failures, not_injected, later)
        else:
            self._send(state.start_json, end, failures, not_injected)

    def after_post(self, posted: dict | None) -> None:
        """The runtime has posted a response (or failed to): the held record goes now, with the
        verdict `posted` says in it; else, while the companion wants it, the `posted` record."""
        self._posting_thread = get_ident()
        held, self._held = self._held, None
        if held is not None:
            self._send(*held, posted=posted)
        elif posted is not None and (posted["outcome"] == "too_large" or posted_wanted.is_wanted(self._posted_flag)):
            # A refused response is told whatever the companion wants: nothing else names it.
            self.channel.send(posted)

    def _send_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self._send(*held)

    def _send_held_at_exit(self) -> None:
        try:
            self._send_held()
            self.channel.send_early_at_exit()
        except Exception:  # noqa: BLE001 - nothing of ours may print at the function's exit
            pass

    def _send(self, start_json: bytes, end: dict, failures: int, not_injected: int, later: tuple | None = None, posted: dict | None = None) -> None:
        # The start stays in the in-flight slot until now: a runtime that dies before the
        # record is sent still leaves the companion what it needs.
        if later is not None:
            _finish(end, later)
        if posted is not None:
            end["posted"] = posted["outcome"]
            if "size" in posted:
                end["posted_size"] = posted["size"]
        self.inflight.clear()
        sent = self.channel.send_invocation(start_json, end)
        if not sent and not self.channel.companion_refused:
            # A live companion that had no room for it accounts for the invocation from the
            # platform's word: the start held again (its spans counted already, none held) gives
            # a failed one its trace, not ids made up, until the next invocation's start. Not
            # for a companion gone: the slot would outlive the environment, for a retry of the
            # request in the next to take for its own.
            self.inflight.hold(start_json, time.time_ns())
        if sent and failures:
            FAILURES.count -= failures
        if sent and not_injected:
            _context_not_injected[0] -= not_injected


def _finish_unfinished(state: Invocation) -> None:
    unfinished = state.unfinished
    for key in list(unfinished):
        call = unfinished.pop(key, None)  # atomic: the call's own end may be racing us
        if call is not None:
            try:
                call.finish_late(state)
            except Exception:  # noqa: BLE001
                FAILURES.record("ending a call at its invocation's end")


def _finish(end: dict, later: tuple) -> None:
    field, make, args = later
    value = make(*args)
    if value is not None:
        end[field] = value


# What pickles by reference and copies as itself (types.FunctionType, without importing types).
_BY_REFERENCE = (type(lambda: None), type)
_handler_wrappers: dict = {}  # FunctionWrapper type -> its handler subclass


def _handler_wrapper(function_wrapper: type) -> type:
    """`function_wrapper`'s subclass for the handler, which its module then holds in the
    handler's place: pickled and copied as the handler is. wrapt's proxies refuse both, and a
    process pool's workers call the handler by pickling it."""
    made = _handler_wrappers.get(function_wrapper)
    if made is not None:
        return made

    class HandlerWrapper(function_wrapper):
        def __repr__(self) -> str:  # as the handler shows itself, in the function's own logs
            return repr(self.__wrapped__)

        def __reduce_ex__(self, protocol: int) -> Any:
            wrapped = self.__wrapped__
            if isinstance(wrapped, _BY_REFERENCE):
                return _by_reference(self, wrapped)
            return wrapped.__reduce_ex__(protocol)  # a callable instance, a partial, a bound method: by value

        def __copy__(self) -> Any:
            import copy

            return self if isinstance(self.__wrapped__, _BY_REFERENCE) else copy.copy(self.__wrapped__)

        def __deepcopy__(self, memo: dict) -> Any:
            import copy

            return self if isinstance(self.__wrapped__, _BY_REFERENCE) else copy.deepcopy(self.__wrapped__, memo)

    _handler_wrappers[function_wrapper] = HandlerWrapper
    return HandlerWrapper


def _by_reference(wrapper: Any, wrapped: Any) -> Any:
    """A function or class pickles as the name its module holds it under, looked up again when
    unpickled: this wrapper where the module holds it so (the handler's own name); else, the
    handler being another name for it (an alias, an import), the object itself (pickle checks
    the name leads to what it saves). A name that leads elsewhere fails as it would unwrapped."""
    module_name, qualname = wrapped.__module__, wrapped.__qualname__
    found: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is wrapper:
        return qualname
    if found is wrapped:
        import pkgutil  # only here: an aliased handler pickled

        return pkgutil.resolve_name, (f"{module_name}:{qualname}",)
    import pickle

    raise pickle.PicklingError(f"Can't pickle {wrapped!r}: it's not found as {module_name}.{qualname}")


def _remaining_ms(context: Any) -> int | None:
    """The invocation's time left, from the deadline awslambdaric's context holds, as its
    get_remaining_time_in_millis computes it: that method is the function's to replace (a
    double counting its calls), and without the layer nothing calls it after the handler."""
    try:
        deadline = object.__getattribute__(context, "__dict__").get("_epoch_deadline_time_in_ms")
        if type(deadline) is int:
            return max(deadline - int(time.time() * 1000), 0)
        remaining = context.get_remaining_time_in_millis()  # another runtime's context
        return int(remaining) if type(remaining) in (int, float) else None
    except Exception:  # noqa: BLE001 - a context without a deadline (or a strange one)
        return None


def _time_left_to_post(context: Any) -> bool:
    remaining = _remaining_ms(context)
    return remaining is not None and remaining > HOLD_MARGIN_MS  # none known: the record goes at once


def _capped(attributes: dict) -> dict:
    for value in attributes.values():
        if isinstance(value, str) and len(value) > MAX_ATTRIBUTE_CHARS:
            break
    else:
        return attributes  # the usual case: nothing to copy
    return {k: secret_cuts.head(v, MAX_ATTRIBUTE_CHARS) if isinstance(v, str) else v for k, v in attributes.items()}


def _payload(value: Any, keys: Any) -> str | None:
    from lambdawrap.handler.redact import payload_text  # already imported when capture is on

    return payload_text(value, keys)


def describe_exception(error: BaseException, tb: Any = _OWN_TRACEBACK, redact: Callable[[str], str] | None = None) -> dict:
    """type, message and stack of an exception (its traceback `tb`, by default the one it
    carries), as a span records them, `redact` run over each before it is cut (a cut would
    part a URL's query from its '?'); never raises, and runs none of the exception's code but
    its __str__ (guarded), once, and its __getattr__ for __notes__ (3.11+, as Python's own
    printing asks): the stack's last line and the message are the same text (a second time only
    where formatting the stack failed: then the stack is its frames alone)."""
    message = stack = None
    frames = error.__traceback__ if tb is _OWN_TRACEBACK else tb
    try:
        traceback = own_traceback.traceback()
        # What traceback.format_exception formats, kept to read its message back.
        described = traceback.TracebackException(type(error), error, frames, compact=True)
        message = getattr(described, "_str", None)
        _cut_texts(described, getattr(traceback, "_RECURSIVE_CUTOFF", 3))
        stack = "".join(described.format())
    except BaseException:  # noqa: BLE001 - a user's exception may break formatting in many ways
        # (its __str__ may raise anything, SystemExit too: the runtime meets that itself when it
        # renders the exception, and at exit nothing of ours may print; a __getattr__ may raise
        # other than AttributeError when asked for __notes__, from 3.11)
        pass
    if message is None:  # an interpreter whose TracebackException keeps the text elsewhere
        try:
            message = str(error)
        except BaseException:  # noqa: BLE001 - as above
            message = _UNPRINTABLE[0]
    if message in _UNPRINTABLE or message == f"<unprintable {_CLASS_NAME.__get__(type(error))} object>":  # 3.11+, 3.10
        message = f"<unprintable {_CLASS_NAME.__get__(type(error))}>"
    elif _SUGGESTS and _suggested(error):
        message = _without_suggestions(message)
    kind = _type_name(type(error))
    if stack is None:
        stack = _frames_only(frames, kind, message)
    if redact is not None:
        message, stack = _redacted_before_cut(message, stack, redact)
    return told_error({"type": kind, "message": message, "stack": stack})


def told_error(error: dict) -> dict:
    """An error's type, message and stack as a span records them: the message's head and the
    stack's tail (describe_exception's, or the runtime's report of an init's)."""
    return {"type": error["type"], "message": secret_cuts.head(error["message"], MAX_MESSAGE_CHARS), "stack": secret_cuts.tail(error["stack"], MAX_STACK_CHARS)}


def _redacted_before_cut(message: str, stack: str, redact: Callable[[str], str]) -> tuple:
    """The message's head and the stack's tail, each redacted before describe_exception cuts
    it: a tail cut may start inside a query, its '?' cut away. The stack read from the start of
    the line the cut falls in, the message to a margin past its cut: a 4 MB message in a hook's
    error cost 0.4 s redacted whole."""
    # The slack: a held secret the cut would split must be there whole for the cut to find it.
    margin = _REDACTION_MARGIN + secret_cuts.slack()
    message = redact(message[: MAX_MESSAGE_CHARS + margin])
    start = len(stack) - MAX_STACK_CHARS - margin
    if start > 0:
        # From the URL whose query the cut falls in, if one does: the line before it may be
        # megabytes (a note, a source line), which need no second reading.
        line = stack.rfind("\n", 0, start) + 1
        query = stack.rfind("?", line, start)
        stack = stack[max(line, stack.rfind("/", line, query)) if query >= 0 else start :]
    return message, redact(stack)


# Beyond a cut, what a redaction may shorten to within it (a value replaced by its marker).
_REDACTION_MARGIN = 1024


# What Python 3.12+ adds to the text of a NameError, AttributeError or ImportError as it formats
# one, the last added first: str(error), the runtime's errorMessage and the SDK's
# exception.message, has none of it (the stack, formatted as Python prints it, keeps it).
_SUGGESTIONS = (" Or did you forget to import '", ". Did you forget to import '", ". Did you mean: '")
_SUGGESTS = sys.version_info >= (3, 12)


def _suggested(error: BaseException) -> bool:
    """Whether Python may have added a suggestion to the error's text: only to one that names
    what was not found (the interpreter's own; one the function made with only a message, whose
    words may read like a suggestion, is left as it is)."""
    try:
        if isinstance(error, ImportError):
            return error.name_from is not None  # type: ignore[attr-defined] - 3.12+
        return isinstance(error, (NameError, AttributeError)) and error.name is not None
    except BaseException:  # noqa: BLE001 - a subclass's `name` may raise anything, as describe_exception's
        return False


def _without_suggestions(message: str) -> str:
    for marker in _SUGGESTIONS:
        at = message.rfind(marker)
        # The name between quotes, then '?' (3.12 writes "Did you forget to import 'x'" without)
        named = message[at + len(marker) :].removesuffix("?")
        if at >= 0 and named.endswith("'") and "'" not in named[:-1]:
            message = message[:at]
    return message


def _frames_only(frames: Any, kind: str, message: str) -> str:
    """The traceback as Python prints it, from its frames alone (no cause, context or note: they
    are the exception's to give, and it failed to), where the whole could not be formatted."""
    try:
        last = f"{kind}: {secret_cuts.head(message, MAX_MESSAGE_CHARS)}" if message else kind
        traceback = own_traceback.traceback()
        return "Traceback (most recent call last):\n" + "".join(traceback.format_list(traceback.extract_tb(frames))) + last + "\n"
    except BaseException:  # noqa: BLE001 - as describe_exception's
        return ""


TRUNCATED = "...[truncated]"


def _cut_texts(described: Any, cutoff: int) -> None:
    """Each exception's text as the stack prints it (the one described, its causes and
    contexts, a group's members), cut to MAX_MESSAGE_CHARS: the stack keeps its last
    MAX_STACK_CHARS, of which a message of that size or more left nothing but its own tail, the
    frames gone. Through TracebackException's own `_str`, where format() reads each text. Each
    one's frames are formatted only where printed (repeated_frames)."""
    seen: set = set()
    todo = [described]
    while todo:
        each = todo.pop()
        if each is None or id(each) in seen:
            continue
        seen.add(id(each))
        text = getattr(each, "_str", None)
        if isinstance(text, str) and len(text) > MAX_MESSAGE_CHARS:
            each._str = secret_cuts.head(text, MAX_MESSAGE_CHARS) + TRUNCATED
        stack = getattr(each, "stack", None)
        if stack is not None:
            each.stack = cheap_to_format(stack, cutoff)
        todo += [getattr(each, "__cause__", None), getattr(each, "__context__", None), *(getattr(each, "exceptions", None) or ())]


# type's own descriptors for a class's names, which no metaclass overrides.
_CLASS_MODULE, _CLASS_QUALNAME, _CLASS_NAME = (type.__dict__[name] for name in ("__module__", "__qualname__", "__name__"))


def _type_name(kind: type) -> str:
    """An exception class's name as spans write it (module.qualname; bare for builtins and
    __main__), read from the class itself: its metaclass's attribute lookups are the user's code
    and may raise (the runtime names the class by its __name__ alone)."""
    try:
        module, qualname = _CLASS_MODULE.__get__(kind), _CLASS_QUALNAME.__get__(kind)
        return qualname if module in ("builtins", "__main__") else f"{module}.{qualname}"
    except BaseException:  # noqa: BLE001 - no __module__ in the class's dict, or one that is no text
        return _CLASS_NAME.__get__(kind)
