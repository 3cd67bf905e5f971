"""The runtime's post of a response as the invocation's verdict (handler/response_posted.py):
through the emulator with the real awslambdaric, with the platform's Telemetry API made to
deliver 1.5 s late, an invocation exported at its end does not wait for runtimeDone when the
runtime posted what the handler's record announces, and still does when they disagree (a
response that cannot be serialized is posted as an error after the handler returned) and with
LAMBDAWRAP_FLUSH=end (whose export carries the invocation's log lines, which come with
runtimeDone); with the default the log lines follow with the next export. Only the runtime's
single-request client is wrapped, and only where the interpreter lets the wrapper keep its frame
out of a failed post's traceback (3.11+)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from conftest import write_function
from lambdawrap.companion.lifecycle import RUNTIME_DONE_WAIT_S
from lambdawrap.shared import posted_wanted
from support.python_versions import every_python
from support.stack import instrumented, metric_total

HANDLERS = '''
def ok(event, context):
    print("served", context.aws_request_id)
    return {"statusCode": 200, "body": "fine"}


def raises(event, context):
    raise ValueError("no such order")


def unserializable(event, context):
    return {"when": object()}


def too_large(event, context):
    # Over Lambda's limit as the runtime posts it: "x" is a byte, "é" two in UTF-8 (or six as
    # an escape), which a size taken in characters would miss.
    if event.get("raise"):
        raise ValueError(event["char"] * event["count"])
    return event["char"] * event["count"]
'''
LATE_S = 1.5  # the Telemetry API's delivery, held this long
# Without the verdict the export waits for runtimeDone up to RUNTIME_DONE_WAIT_S, then goes on
# without the span; with it, the flush starts at once.
WAITED_FOR_THE_PLATFORM_MS = RUNTIME_DONE_WAIT_S * 1000
# The companion's wait starts when the record comes, just before the runtime's /next, from which
# the platform measures extensionOverhead; a busy machine widens that gap.
SCHEDULING_SLACK_MS = 100


def post_response_ms(emu, request_id: str, deadline_s: float = 30.0) -> float:
    until = time.monotonic() + deadline_s
    while time.monotonic() < until:
        for item in emu.records("platform.report"):
            record = item["record"]
            if record["requestId"] == request_id:
                return next(span["durationMs"] for span in record["spans"] if span["name"] == "extensionOverhead")
        time.sleep(0.05)
    raise AssertionError(f"no platform.report for {request_id}")


@pytest.fixture
def late_platform(tmp_path):
    task = write_function(tmp_path / "task", HANDLERS)

    def start(handler: str, flush: str = "adaptive"):
        # A fresh environment's first invocations are each exported at their end (adaptive).
        return instrumented(task, f"app.{handler}", env={"LAMBDAWRAP_FLUSH": flush})

    return start


@pytest.mark.parametrize("handler, status", [("ok", 0), ("raises", 2)])  # UNSET, ERROR
def test_a_posted_verdict_is_exported_without_waiting_for_the_platform(late_platform, handler, status):
    with late_platform(handler) as (emu, rx):
        result, span = warm_invocation(emu, rx)
        assert span["status_code"] == status
        if handler == "raises":
            assert span["attributes"]["error.type"] == "ValueError"
        assert emu.wait_idle(30)
        assert post_response_ms(emu, result.request_id) < WAITED_FOR_THE_PLATFORM_MS


def test_a_response_that_fails_after_the_handler_returned_waits_for_the_platforms_word(late_platform):
    with late_platform("unserializable") as (emu, rx):
        emu.bus.gate.min_buffer_s = LATE_S
        result = emu.invoke({})
        assert result.function_error is not None  # what the caller sees: Runtime.MarshalError
        span = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id)[0]
        assert span["status_code"] == 2
        assert span["attributes"]["error.type"] == "Runtime.MarshalError"
        assert span["attributes"]["lambdawrap.failure_reason"] == "after_return"
        assert emu.wait_idle(30)
        assert post_response_ms(emu, result.request_id) >= WAITED_FOR_THE_PLATFORM_MS - SCHEDULING_SLACK_MS


@pytest.mark.parametrize("char, count, raises", [("x", 7 * 1024 * 1024, False), ("\u00e9", 3_500_000, False), ("z", 7 * 1024 * 1024, True)])
def test_a_response_refused_for_its_size_says_what_the_caller_got(late_platform, char, count, raises):
    # The platform's word is only that the runtime exited (awslambdaric raises on the 413);
    # what the caller got is told by the failed post. The Telemetry API is held late: the span
    # needs no word from it.
    with late_platform("too_large") as (emu, rx):
        emu.bus.gate.min_buffer_s = LATE_S
        result = emu.invoke({"char": char, "count": count, "raise": raises})
        caller = result.json()
        assert caller["errorType"] == "Function.ResponseSizeTooLarge"
        span = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id)[0]
        assert span["status_code"] == 2
        assert span["attributes"]["error.type"] == "Function.ResponseSizeTooLarge"
        assert span["status_message"] == caller["errorMessage"]  # the same size
        assert span["attributes"]["lambdawrap.failure_reason"] == "after_return"
        # An error too large to post: the handler's exception stays the span's event.
        assert [e["attributes"]["exception.type"] for e in span["events"] if e["name"] == "exception"] == ["ValueError" if raises else "Function.ResponseSizeTooLarge"]
        # The environment was reset (the runtime exited): the next invocation starts cold and
        # both are accounted for once, with no contradiction between post and platform.
        after = emu.invoke({"char": "x", "count": 3})
        assert after.function_error is None
        rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == after.request_id)
        assert emu.wait_idle(30)
        assert [s["attributes"].get("faas.invocation_id") for s in rx.spans()].count(result.request_id) == 1
        assert not any("the platform reported" in line for line in emu.log_lines("extension"))
    # ... and the runtime's exit is counted once, whether the platform's word came first or not
    assert metric_total(rx, "lambdawrap.crashes") == 1


def served_line(rx, request_id: str, timeout: float = 10.0) -> dict:
    return rx.wait_for_logs(lambda line: line["body"] == f"served {request_id}", timeout=timeout)[0]


def served_line_now(rx, request_id: str) -> "dict | None":
    return next((line for line in rx.logs() if line["body"] == f"served {request_id}"), None)


def warm_invocation(emu, rx) -> tuple:
    """With the platform's batches held LATE_S: the cold start (and its init span) out of the
    way, then one invocation; its result and span."""
    emu.bus.gate.min_buffer_s = LATE_S
    emu.invoke({})
    emu.wait_idle(30)
    result = emu.invoke({})
    span = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id)[0]
    return result, span


def test_by_default_the_log_lines_go_with_the_next_export(late_platform):
    with late_platform("ok") as (emu, rx):
        result, span = warm_invocation(emu, rx)
        assert emu.wait_idle(30)
        assert served_line_now(rx, result.request_id) is None
        # The held batch comes due while the environment is frozen, and is delivered when the
        # next invocation thaws it; an export after that carries the lines.
        emu.bus.gate.min_buffer_s = 0.0
        line = None
        for _ in range(10):
            emu.invoke({})
            emu.wait_idle(30)
            line = served_line_now(rx, result.request_id)
            if line is not None:
                break
        assert line is not None, "the log lines never went out with a later export"
        assert (line["trace_id"], line["span_id"]) == (span["trace_id"], span["span_id"])


def test_with_end_the_export_waits_for_the_platform_and_carries_the_log_lines(late_platform):
    with late_platform("ok", flush="end") as (emu, rx):
        result, span = warm_invocation(emu, rx)
        assert emu.wait_idle(30)
        assert post_response_ms(emu, result.request_id) >= WAITED_FOR_THE_PLATFORM_MS - SCHEDULING_SLACK_MS
        # No other invocation comes: the lines go out once the platform's word has come.
        line = served_line(rx, result.request_id, timeout=30)
        assert (line["trace_id"], line["span_id"]) == (span["trace_id"], span["span_id"])


INSTALL_PROBE = r"""
import json, traceback, types
from awslambdaric import lambda_runtime_client as module
from lambdawrap.handler import private_wrapt, response_posted

function_wrapper = private_wrapt.load().FunctionWrapper  # as boot.py passes it

sent = []

def after_post(posted):
    if posted is not None:
        sent.append([posted["request_id"], posted["outcome"]] + ([posted["size"]] if "size" in posted else []))

installed = response_posted.install(module, function_wrapper, after_post)
posts = ("post_invocation_result", "post_invocation_error")
base = module.BaseLambdaRuntimeClient
found = {
    "installed": installed,
    "single_wrapped": [getattr(module.LambdaRuntimeClient, n) is not getattr(base, n) for n in posts],
    "multi_untouched": [getattr(module.LambdaMultiConcurrentRuntimeClient, n) is getattr(base, n) for n in posts],
}

# The wrapper's own logic, on a client of the same shape that posts nowhere.
class Client:
    def post_invocation_result(self, invoke_id, result_data, content_type="application/json"):
        if invoke_id.startswith("refused"):
            raise RuntimeError("413")  # as the client's C part raises for an answer other than 202
        if invoke_id.startswith("unsendable"):
            result_data.encode("utf-8")  # as the client fails on a type it cannot send, before posting
        return "posted"

    def post_invocation_error(self, invoke_id, error_response_data, xray_fault):
        if invoke_id.startswith("refused"):
            raise RuntimeError("413")
        return "posted"

response_posted.install(types.SimpleNamespace(LambdaRuntimeClient=Client), function_wrapper, after_post)
client = Client()
answers = [client.post_invocation_result("ok", "{}"), client.post_invocation_error("raised", "{}", ""), client.post_invocation_result("too-large", "x" * (response_posted.MAX_RESPONSE_BYTES + 1))]
try:
    client.post_invocation_result("refused", "{}")
except RuntimeError as exc:
    found["refused_frames"] = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
# A refused post over the size limit is told: nothing else names it. Its size is the bytes the
# runtime posts; a text the runtime cannot encode failed for that, not for its size.
limit = response_posted.MAX_RESPONSE_BYTES
for rid, data in (("refused-small", "{}"), ("refused-text", "\u00e9" * (limit // 2 + 1)), ("refused-bytes", b"x" * (limit + 1)), ("refused-at-limit", "x" * limit), ("refused-unencodable", "\udc80" * limit), ("unsendable-bytearray", bytearray(limit + 1))):
    try:
        client.post_invocation_result(rid, data)
    except (RuntimeError, AttributeError):
        pass
try:
    client.post_invocation_error("refused-error", "e" * (limit + 5), "")
except RuntimeError:
    pass
found["answers"] = answers
found["sent"] = sent
print(json.dumps(found))
"""

ORDER_PROBE = r"""
import json, os, sys, tempfile, threading, types
from lambdawrap.handler import private_wrapt, response_posted
from lambdawrap.handler.invocation import InvocationTracer
from lambdawrap.shared import posted_wanted
from lambdawrap.shared.settings import Settings

def event_line(*event):
    sys.stdout.write(json.dumps(list(event)) + "\n")  # at once: the last comes at exit
    sys.stdout.flush()

class Channel:
    def send(self, record):
        event_line("sent", record["type"], record["request_id"])
        return True

    def send_invocation(self, start_json, end):
        event_line("sent", "invocation", json.loads(start_json)["request_id"], *([end["posted"]] if "posted" in end else []))
        return True

    def connect_ahead(self):
        pass  # no companion: the records are lines on stdout

    def companion_gone(self):
        return gone[0]


gone = [False]

socket_path = os.path.join(tempfile.mkdtemp(), "lw.sock")
function_wrapper = private_wrapt.load().FunctionWrapper
tracer = InvocationTracer(Settings(socket_path=socket_path), Channel(), environ={}, function_wrapper=function_wrapper)

class Client:
    def post_invocation_result(self, invoke_id, result_data, content_type="application/json"):
        event_line("posted", "result", invoke_id)

    def post_invocation_error(self, invoke_id, error_response_data, xray_fault):
        event_line("posted", "error", invoke_id)

event_line("installed", response_posted.install(types.SimpleNamespace(LambdaRuntimeClient=Client), function_wrapper, tracer.after_post))
posted_wanted.set_wanted(socket_path, True)
client = Client()

def handler(event, context):
    if event == "raise":
        raise ValueError("no")
    if event == "exit":
        raise SystemExit(3)
    return "ok"

wrapped = tracer.wrap(handler)

def invoke(request_id, event=None, post=True, left_ms=3000):
    # As awslambdaric does: the handler, then the post of its result or its error.
    context = types.SimpleNamespace(aws_request_id=request_id, invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:f", get_remaining_time_in_millis=lambda: left_ms)
    try:
        wrapped(event, context)
    except Exception:
        client.post_invocation_error(request_id, "{}", "")
        return
    except SystemExit:
        return  # the runtime ends without a post
    if post:
        client.post_invocation_result(request_id, '"ok"')

invoke("first")
invoke("second")
invoke("raised", "raise")
invoke("exited", "exit")
invoke("unposted", post=False)
invoke("after")
invoke("near-timeout", left_ms=100)
gone[0] = True
invoke("companion-gone")
gone[0] = False
posted_wanted.set_wanted(socket_path, False)
invoke("unwanted")
posted_wanted.set_wanted(socket_path, True)
other = threading.Thread(target=invoke, args=("other-thread",), kwargs={"post": False})
other.start()
other.join()
invoke("at-exit", post=False)
"""



@every_python
def test_only_the_single_request_client_is_wrapped_and_only_from_python_3_11(runtime_python, python_version):
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    done = subprocess.run([runtime_python, "-c", INSTALL_PROBE], capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=src))
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    wraps = python_version != "3.10"
    assert found["installed"] is wraps
    assert found["single_wrapped"] == [wraps, wraps] and found["multi_untouched"] == [True, True]
    assert found["answers"] == ["posted"] * 3  # what the runtime's call returns, unchanged
    # A response over 6 MB is the platform's to judge.
    limit = 6 * 1024 * 1024 + 100
    refused = [["refused-text", "too_large", limit + 2], ["refused-bytes", "too_large", limit + 1], ["refused-error", "too_large", limit + 5]]
    assert found["sent"] == ([["ok", "result"], ["raised", "error"], *refused] if wraps else [])
    # A refused post's traceback is the client's own: no frame of the wrapper's.
    assert found["refused_frames"] == ["<module>", "post_invocation_result"]


@every_python
def test_the_invocation_record_goes_after_the_post_once_posts_are_seen(runtime_python, python_version):
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    done = subprocess.run([runtime_python, "-c", ORDER_PROBE], capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=src))
    assert done.returncode == 0 and not done.stderr, done.stderr
    (installed, *events) = [json.loads(line) for line in done.stdout.splitlines()]
    if python_version == "3.10":
        # The posts are not wrapped: each record goes when its handler is done, without a verdict.
        assert installed == ["installed", False]
        sent = ["first", "second", "raised", "exited", "unposted", "after", "near-timeout", "companion-gone", "unwanted", "other-thread", "at-exit"]
        assert [e for e in events if e[0] == "sent"] == [["sent", "invocation", r] for r in sent]
        return
    assert installed == ["installed", True]
    assert events == [
        # The first invocation's handler is done before any post was seen: its record goes then.
        ["sent", "invocation", "first"], ["posted", "result", "first"], ["sent", "posted", "first"],
        # From then on the record waits for the post and goes with the verdict in it.
        ["posted", "result", "second"], ["sent", "invocation", "second", "result"],
        ["posted", "error", "raised"], ["sent", "invocation", "raised", "error"],
        # An exception that ends the runtime is never posted: its record goes at once.
        ["sent", "invocation", "exited"],
        # A post that never came: the record goes when the next invocation starts, and that
        # one's record is sent when its handler is done, until a post is seen again.
        ["sent", "invocation", "unposted"], ["sent", "invocation", "after"], ["posted", "result", "after"], ["sent", "posted", "after"],
        # Too close to the timeout to wait for the post; a call from another thread has none.
        ["sent", "invocation", "near-timeout"], ["posted", "result", "near-timeout"], ["sent", "posted", "near-timeout"],
        # With the companion gone (the environment is reset once the response is out), the
        # record goes at once, so that its drop is counted before that.
        ["sent", "invocation", "companion-gone"], ["posted", "result", "companion-gone"], ["sent", "posted", "companion-gone"],
        # While the companion does not want posts, a held record still carries the verdict
        ["posted", "result", "unwanted"], ["sent", "invocation", "unwanted", "result"],
        ["sent", "invocation", "other-thread"],
        # A record held when the process exits goes at its exit.
        ["sent", "invocation", "at-exit"],
    ]


def test_under_load_the_companion_stops_asking_for_the_posts(late_platform):
    with late_platform("ok") as (emu, rx):
        flag = posted_wanted.flag_path(emu.config.env["LAMBDAWRAP_SOCKET"])
        emu.invoke({})
        assert emu.wait_idle(30)
        assert os.path.exists(flag)  # rare invocations: each is exported at its end
        # Back to back: the companion exports once a second, and a post would spare no wait.
        for _ in range(8):
            emu.invoke({})
        assert emu.wait_idle(30)
        assert not os.path.exists(flag)


def test_with_end_the_posts_are_not_asked_for(late_platform):
    with late_platform("ok", flush="end") as (emu, rx):
        emu.invoke({})
        assert emu.wait_idle(30)
        assert not os.path.exists(posted_wanted.flag_path(emu.config.env["LAMBDAWRAP_SOCKET"]))


# --- the correlator, fed as the companion feeds it -------------------------------------------


class RecordingSink:
    """Only what the correlator hands on: the invocations it finishes."""

    def __init__(self) -> None:
        self.invocations: list = []

    def invocation(self, inv) -> None:
        self.invocations.append(inv)

    def init_span(self, init, parent) -> None: ...
    def report(self, record: dict, trigger: str = "other") -> None: ...
    def log_line(self, line: str, time_ns: int, ids, request_id) -> None: ...
    def user_spans(self, spans: list) -> None: ...
    def dropped(self, reason: str, count: int = 1) -> None: ...
    def internal_errors(self, process: str, count: int = 1) -> None: ...


def correlated(request_id: str, handler_error: dict | None, posted: str, managed_instances: bool = False, into: tuple | None = None):
    """(correlator, sink, on_finished calls) after an invocation's INVOKE, record and post;
    `into`: a triple from before, for a further invocation of the same environment."""
    from lambdawrap.companion.correlator import Correlator
    from lambdawrap.shared import records

    if into is None:
        sink, finished_calls = RecordingSink(), []
        correlator = Correlator(sink, lambda reason, detail: None, on_finished=finished_calls.append, managed_instances=managed_instances)
    else:
        correlator, sink, finished_calls = into
    correlator.on_invoke(invoke_event(request_id))
    correlator.on_record(invocation_record(request_id, error=handler_error))
    correlator.on_record(records.posted(request_id, posted, records.MAX_RESPONSE_BYTES + 1 if posted == "too_large" else None))
    return correlator, sink, finished_calls


ARN = "arn:aws:lambda:eu-west-1:123456789012:function:orders"


def invoke_event(request_id: str, deadline_in_s: float | None = None) -> dict:
    event = {"eventType": "INVOKE", "requestId": request_id, "invokedFunctionArn": ARN}
    if deadline_in_s is not None:
        event["deadlineMs"] = int((time.time() + deadline_in_s) * 1000)
    return event


def invocation_record(request_id: str, span_id: int = 2, error: dict | None = None, **end: object) -> dict:
    """An invocation's record as the function's process sends it, `end` fields added."""
    from lambdawrap.shared import records

    now = time.time_ns()
    start = json.loads(records.encode_invocation_start(request_id=request_id, function_arn=ARN, trace_id=1, span_id=span_id, parent_span_id=0, sampled=True, start_ns=now - 1_000_000, cold_start=False, proactive_init=False, trigger="other", attributes={}, links=[], span_name="orders", span_kind=2))
    return {"version": records.VERSION, "type": records.INVOCATION, "start": start, "end": dict(records.invocation_end(now, error=error), **end)}


def platform_word(correlator, request_id: str, status: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    correlator.on_telemetry([
        {"time": stamp, "type": "platform.runtimeDone", "record": {"requestId": request_id, "status": status}},
        {"time": stamp, "type": "platform.report", "record": {"requestId": request_id, "status": status, "metrics": {"durationMs": 1.0, "billedDurationMs": 2}}},
    ])


@pytest.mark.parametrize("handler_error, posted, status", [(None, "result", "success"), ({"type": "ValueError", "message": "no", "stack": ""}, "error", "error"), (None, "too_large", "failure")])
def test_the_platforms_agreeing_word_is_taken_once_and_warns_of_nothing(caplog, handler_error, posted, status):
    correlator, sink, finished_calls = correlated("rid-1", handler_error, posted)
    assert [inv.request_id for inv in sink.invocations] == ["rid-1"]  # made from the post
    assert correlator.awaiting_platform_words() and not correlator.platform_reported("rid-1")
    platform_word(correlator, "rid-1", status)
    platform_word(correlator, "rid-1", status)  # a repeated delivery is not news either
    assert len(sink.invocations) == 1
    assert finished_calls == ["rid-1", "rid-1"]  # made, then its log lines complete: once
    assert correlator.platform_reported("rid-1") and not correlator.awaiting_platform_words()
    assert "the platform reported" not in caplog.text


def test_a_platform_that_contradicts_the_post_is_logged_once_and_the_span_stands(caplog):
    environment = correlated("rid-1", None, "result")
    correlated("rid-2", None, "result", into=environment)
    correlator, sink, _ = environment
    for rid in ("rid-1", "rid-2"):
        platform_word(correlator, rid, "failure")  # the runtime died after posting
    assert [inv.end.get("error") for inv in sink.invocations] == [None, None]  # as the caller saw it
    assert caplog.text.count("the platform reported failure") == 1


def test_a_response_posted_as_an_error_whose_word_never_comes_is_still_an_error():
    from lambdawrap.companion.correlator import OUTCOME_WAIT_S

    correlator, sink, _ = correlated("rid-1", None, "error")  # returned, then failed to serialize
    assert sink.invocations == []  # the platform's to tell
    correlator.finish_overdue(time.monotonic() + OUTCOME_WAIT_S + 1)
    (inv,) = sink.invocations
    assert inv.failed_on_platform and inv.outcome["status"] == "error"
    correlator, sink, _ = correlated("rid-2", None, "error")
    correlator.finish_unreported("spindown")
    assert sink.invocations[0].failed_on_platform


def test_a_refused_response_is_named_by_its_post_and_needs_its_size():
    from lambdawrap.shared import records

    _, sink, _ = correlated("rid-1", None, "too_large")
    (inv,) = sink.invocations  # made at once: the platform will say only "Runtime.ExitError"
    assert (inv.posted, inv.refused_bytes) == ("too_large", records.MAX_RESPONSE_BYTES + 1)
    for size in (None, records.MAX_RESPONSE_BYTES, "7000000", True):
        record = {"request_id": "rid-1", "outcome": "too_large", **({} if size is None else {"size": size})}
        assert records.posted_problem(record) == "a refused response without a size over the limit"


@pytest.mark.parametrize("reason", ["timeout", "failure"])
def test_a_verdict_in_the_record_stands_at_a_reset_that_comes_before_the_platform_s_word(reason):
    from lambdawrap.companion.correlator import Correlator

    # GIVEN an invocation whose record, held for the post (the companion not asking for posts:
    # under load, or LAMBDAWRAP_FLUSH=end), says the response was posted; then the environment
    # is reset (another extension overran the deadline, the runtime died after the post) before
    # the platform's runtimeDone, which it delivers late, came
    sink = RecordingSink()
    correlator = Correlator(sink, lambda reason, detail: None)
    correlator.on_invoke(invoke_event("rid-1"))
    correlator.on_record(invocation_record("rid-1", posted="result"))
    # WHEN the companion accounts for it at the SHUTDOWN
    correlator.finish_unreported(reason)
    # THEN its span says what its caller got (before: a crash or timeout made up for it)
    (inv,) = sink.invocations
    assert inv.posted == "result" and not inv.failed_on_platform and inv.end.get("error") is None


def test_the_verdict_of_a_replaced_attempt_s_late_record_is_not_the_retry_s(tmp_path):
    from lambdawrap.companion.correlator import Correlator
    from lambdawrap.shared.inflight import InflightSlot

    # GIVEN an attempt whose runtime died after its post, made from its slot on the platform's
    # word, then retried in the same environment (an async invoke) before its record was read
    socket_path = str(tmp_path / "lw.sock")
    first = invocation_record("rid-1", int("1" * 16, 16), posted="result")
    InflightSlot(socket_path).hold(json.dumps(first["start"]).encode())
    sink = RecordingSink()
    correlator = Correlator(sink, lambda reason, detail: None, socket_path=socket_path)
    correlator.on_invoke(invoke_event("rid-1", 60))
    platform_word(correlator, "rid-1", "failure")
    correlator.on_invoke(invoke_event("rid-1", 60))
    # WHEN the first attempt's record comes late, its verdict in it, then the retry's (sent
    # before its post)
    correlator.on_record(first)
    correlator.on_record(invocation_record("rid-1", int("2" * 16, 16)))
    # THEN the retry waits for its own verdict (before: it took the first attempt's, and was
    # exported as a success before the platform's word)
    assert [inv.start["span_id"] for inv in sink.invocations] == ["1" * 16]


def test_a_retry_s_record_that_comes_before_its_invoke_keeps_its_verdict():
    from lambdawrap.companion.correlator import Correlator

    # GIVEN an attempt made from its post and the platform's word, then retried, the retry's
    # record (held for its post, which it says) read before the retry's INVOKE
    sink = RecordingSink()
    correlator = Correlator(sink, lambda reason, detail: None)
    correlator.on_invoke(invoke_event("rid-1", 60))
    correlator.on_record(invocation_record("rid-1", int("1" * 16, 16), posted="result"))
    platform_word(correlator, "rid-1", "success")
    correlator.on_record(invocation_record("rid-1", int("2" * 16, 16), posted="result"))
    # WHEN its INVOKE comes
    correlator.on_invoke(invoke_event("rid-1", 60))
    # THEN it is made from its post at once, as any held record's invocation (before: it waited
    # for the platform's word, its verdict lost on the way)
    assert [inv.start["span_id"] for inv in sink.invocations] == ["1" * 16, "2" * 16]


def test_a_refused_response_is_told_though_the_companion_asks_for_no_posts(tmp_path):
    from lambdawrap.handler.invocation import InvocationTracer
    from lambdawrap.shared import records
    from lambdawrap.shared.settings import Settings
    from support.recording import RecordingChannel

    # GIVEN no record held for the post (the environment's first invocation, or one close to its
    # deadline) and a companion that asks for no posts (under load, LAMBDAWRAP_FLUSH=end)
    channel = RecordingChannel()
    tracer = InvocationTracer(Settings(socket_path=str(tmp_path / "lw.sock")), channel, environ={})
    # WHEN a response is posted, and another refused for its size
    tracer.after_post(records.posted("rid-1", "result"))
    tracer.after_post(records.posted("rid-2", "too_large", records.MAX_RESPONSE_BYTES + 1))
    # THEN the refusal is told, which nothing else names (the platform says Runtime.ExitError)
    assert [(record["request_id"], record["outcome"]) for record in channel.records] == [("rid-2", "too_large")]


def test_on_managed_instances_a_post_proves_nothing():
    correlator, sink, _ = correlated("rid-1", None, "result", managed_instances=True)
    assert sink.invocations == []


def test_at_shutdown_the_companion_waits_for_the_log_lines_of_an_invocation_made_from_its_post(late_platform):
    # A platform that holds the last batch until after SHUTDOWN went out (Lambda promises no
    # flush before it outside Managed Instances).
    with late_platform("ok") as (emu, rx):
        emu.invoke({})
        assert emu.wait_idle(30)
        emu.bus.gate.min_buffer_s = 0.4
        emu.bus.gate.flush_before_shutdown = False
        result = emu.invoke({})
        span = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == result.request_id)[0]
    line = served_line_now(rx, result.request_id)
    assert line is not None, [l["body"] for l in rx.logs()]
    assert (line["trace_id"], line["span_id"]) == (span["trace_id"], span["span_id"])


SLOW_TO_RENDER = '''
import time


class ReportError(Exception):
    """An error whose message is expensive to render (a summary of a large dataset, say)."""

    def __str__(self):
        time.sleep(0.4)
        return "report failed"


def handler(event, context):
    if event.get("do") == "fail":
        raise ReportError()
    return {"ok": 1}
'''


def test_an_exception_slow_to_render_costs_the_caller_nothing_of_ours(tmp_path):
    from lambdawrap.devtools.emulator import Emulator

    # GIVEN an exception whose message takes 0.4 s to render, which the runtime renders twice
    # (0.8 s), under a 1.5 s timeout that the layer's own renderings used to push it past
    task = write_function(tmp_path / "task", SLOW_TO_RENDER)
    events = [{}, {}, {"do": "fail"}, {}, {"do": "fail"}]

    def answers(emu) -> list:
        results = [emu.invoke(event) for event in events]
        # The error payload names its request id: the one thing that differs between runs.
        return results, [(r.status, r.function_error, r.body.decode().replace(r.request_id, "<id>")) for r in results]

    with Emulator(str(task), "app.handler", timeout_s=1.5) as bare:
        _, without = answers(bare)
    with instrumented(task, timeout_s=1.5) as (emu, rx):
        results, with_layer = answers(emu)
        failed = [r.request_id for r, event in zip(results, events) if event]
        spans = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") in failed, count=2, timeout=30)
    # THEN the caller gets the runtime's own error, as without the layer (not a timeout)
    assert with_layer == without
    assert [json.loads(body)["errorType"] for _, error, body in with_layer if error] == ["ReportError", "ReportError"]
    # ... and the span still has the exception's message and stack, rendered after the post
    for span in spans:
        assert span["status_message"] == "report failed"
        (exception,) = [e for e in span["events"] if e["name"] == "exception"]
        assert exception["attributes"]["exception.stacktrace"].endswith("app.ReportError: report failed\n")
