"""What a function's log line becomes as an OTLP log record, end to end (emulator + real
awslambdaric + layer + real OTLP receiver): the severity and exception of awslambdaric's JSON
log format, lines as long as the platform's records, and the ids of lines printed during init."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import write_function
from support.faults import companion_process
from support.stack import EVENTS, instrumented
from test_log_floods import peak_rss_mb

from lambdawrap.companion import log_buffer

FUNCTIONS = Path(__file__).resolve().parent / "functions"

JSON_APP = """
import logging

logger = logging.getLogger("orders")

def handler(event, context):
    logger.warning("stock low: café ✓")
    logger.critical("meltdown")
    try:
        {}["sku"]
    except KeyError:
        logger.exception("lookup failed", extra={"order": {"id": 42, "items": ["a", 7]}})
    raise ValueError("payment declined")
"""


def _dropped(rx) -> dict:
    return {p["attributes"]["reason"]: p["value"] for p in rx.metrics() if p["name"] == "lambdawrap.dropped" and p["value"]}


def test_json_log_records_keep_their_level_message_and_exception(tmp_path):
    # GIVEN a function that logs in awslambdaric's JSON format: a warning, a critical, an
    # exception caught and logged, then one raised to the runtime
    task = write_function(tmp_path / "task", JSON_APP)
    with instrumented(task, env={"AWS_LAMBDA_LOG_FORMAT": "JSON"}) as (emu, rx):
        # WHEN it is invoked
        failed = emu.invoke({})
        assert failed.function_error == "Unhandled"
        span = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") == failed.request_id)[0]
        emu.stop()  # SHUTDOWN: every line is exported by then
    records = {str(r["body"]): r for r in rx.logs()}
    # THEN each record's body is its message and its severity its level (Logs Data Model numbers)
    assert {body: (r["severity_number"], r["severity_text"]) for body, r in records.items()} == {
        "stock low: café ✓": (13, "WARNING"),
        "meltdown": (21, "CRITICAL"),
        "lookup failed": (17, "ERROR"),
        "ValueError: payment declined": (17, "ERROR"),  # the runtime's report: no message
    }, list(records)
    for record in records.values():
        assert (record["trace_id"], record["span_id"]) == (span["trace_id"], span["span_id"])
        assert record["attributes"]["faas.invocation_id"] == failed.request_id
    # ... the record's other fields are attributes, its structure kept
    warning = records["stock low: café ✓"]["attributes"]
    assert warning["logger"] == "orders" and not {"level", "message", "timestamp", "requestId"} & set(warning)
    logged = records["lookup failed"]["attributes"]
    assert logged["order"] == {"id": 42, "items": ["a", 7]}
    # ... and an error is the semantic conventions' exception, its traceback as Python prints it
    assert (logged["exception.type"], logged["exception.message"]) == ("KeyError", "'sku'")
    assert logged["exception.stacktrace"].startswith("Traceback (most recent call last):\n  File ")
    assert 'in handler\n    {}["sku"]\n' in logged["exception.stacktrace"]
    assert logged["exception.stacktrace"].endswith("\nKeyError: 'sku'\n")
    raised = records["ValueError: payment declined"]["attributes"]
    assert (raised["exception.type"], raised["exception.message"]) == ("ValueError", "payment declined")
    assert 'raise ValueError("payment declined")' in raised["exception.stacktrace"]
    assert not _dropped(rx)


LIMITED_APP = """
import logging

def handler(event, context):
    logging.getLogger("orders").warning("big order", extra={"note": "n" * 200, "lines": 3, "sku": "a-sku"})
    print("a plain line")
"""


def test_log_records_keep_the_sdks_attribute_limits(tmp_path):
    # GIVEN a function logging a JSON record with a long field, under attribute limits of 3 per
    # record and 40 characters per value
    task = write_function(tmp_path / "task", LIMITED_APP)
    env = {"AWS_LAMBDA_LOG_FORMAT": "JSON", "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT": "3", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "40"}
    with instrumented(task, env=env) as (emu, rx):
        result = emu.invoke({})
        emu.stop()
    records = {str(r["body"]): r for r in rx.logs()}
    # THEN the record is kept within them as the SDK's Logger keeps one: the last 3 attributes
    # set (its invocation id among them), values cut, the others counted as dropped (before:
    # every field exported whole)
    big = records["big order"]
    assert big["attributes"] == {"lines": 3, "sku": "a-sku", "faas.invocation_id": result.request_id}
    assert big["dropped_attributes_count"] == 2  # logger, note
    plain = records["a plain line"]
    assert plain["attributes"] == {"faas.invocation_id": result.request_id} and plain["dropped_attributes_count"] == 0


def test_a_value_longer_than_the_limit_is_cut_as_the_sdk_cuts_it(tmp_path):
    # GIVEN a limit on log record values of 12 characters
    task = write_function(tmp_path / "task", LIMITED_APP)
    env = {"AWS_LAMBDA_LOG_FORMAT": "JSON", "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT": "12"}
    with instrumented(task, env=env) as (emu, rx):
        result = emu.invoke({})
        emu.stop()
    big = {str(r["body"]): r for r in rx.logs()}["big order"]
    # THEN the long field is cut to it, the short ones kept (before: 200 characters exported);
    # as in the SDK, the limit applies to every attribute, the invocation's id too
    assert big["attributes"]["note"] == "n" * 12 and big["attributes"]["sku"] == "a-sku" and big["dropped_attributes_count"] == 0
    assert big["attributes"]["faas.invocation_id"] == result.request_id[:12]


def test_a_record_of_more_fields_than_are_made_keeps_the_last_and_counts_the_rest():
    # GIVEN a JSON record of 200 fields, past the 128 values a record's fields make at most
    from opentelemetry.sdk.resources import Resource

    from lambdawrap.companion.log_records import MAX_VALUES, log_records

    line = json.dumps({"level": "INFO", "message": "m", **{f"f{n:03d}": n for n in range(200)}})
    (record,) = log_records([(line, 1, None, "request-1")], Resource.create({}))
    # THEN, within the SDK's default count, the last fields are kept, as the SDK keeps a record's
    # last attributes, and those left out are counted (before: the first kept, the rest lost
    # without a count)
    kept = dict(record.log_record.attributes)
    assert len(kept) == MAX_VALUES and list(kept)[-2:] == ["f199", "faas.invocation_id"] and "f000" not in kept
    assert record.dropped_attributes == 200 + 1 - MAX_VALUES


RELAYING_APP = """
import json
import logging

logger = logging.getLogger("relay")

def handler(event, context):
    logger.warning("relaying")
    print(json.dumps({"level": "INFO", "message": "upstream call done", "requestId": "api-7f3e"}))
"""


def test_a_json_line_naming_another_request_keeps_its_request_id(tmp_path):
    # GIVEN a function whose own JSON line names an upstream API's requestId, beside a logging
    # call awslambdaric writes with the invocation's
    task = write_function(tmp_path / "task", RELAYING_APP)
    with instrumented(task, env={"AWS_LAMBDA_LOG_FORMAT": "JSON"}) as (emu, rx):
        # WHEN it is invoked
        result = emu.invoke({})
        assert result.function_error is None
        emu.stop()  # SHUTDOWN: every line is exported by then
    records = {str(r["body"]): r["attributes"] for r in rx.logs()}
    # THEN the upstream id is kept as the line wrote it, beside the invocation's
    assert records["upstream call done"]["requestId"] == "api-7f3e"
    assert records["upstream call done"]["faas.invocation_id"] == result.request_id
    # ... and awslambdaric's requestId, which faas.invocation_id says, is not repeated
    assert "requestId" not in records["relaying"] and records["relaying"]["faas.invocation_id"] == result.request_id


MANY_LINES_APP = """
def handler(event, context):
    print("\\n".join(f"row {n}" for n in range(300)))
    print("\\n".join(f"row {n}" for n in range(300, 600)))
"""


def test_lines_printed_in_one_millisecond_keep_their_order_in_their_times(tmp_path):
    # GIVEN a function that prints 600 lines in two calls (the platform's times are whole
    # milliseconds: most of them share one)
    from lambdawrap.companion.correlator import parse_time_ns

    task = write_function(tmp_path / "task", MANY_LINES_APP)
    with instrumented(task) as (emu, rx):
        # WHEN it is invoked
        assert emu.invoke({}).function_error is None
        emu.stop()  # SHUTDOWN: every line is exported by then
    platform_ms = {e["record"]: parse_time_ns(e["time"]) // 1_000_000 for e in emu.records("function") if e["record"].startswith("row ")}
    rows = [r for r in rx.logs() if str(r["body"]).startswith("row ")]
    # THEN ordered by their times, the records are the lines as printed, no two at the same time
    by_time = sorted(rows, key=lambda r: r["time_unix_nano"])
    assert [r["body"] for r in by_time] == [f"row {n}" for n in range(600)]
    assert len({r["time_unix_nano"] for r in rows}) == 600
    # ... each within the millisecond the platform gave it
    assert all(r["time_unix_nano"] // 1_000_000 == platform_ms[r["body"]] for r in rows)


LATE_LINE_APP = """
import threading
import time

def handler(event, context):
    for n in range(3):
        print(f"row {n}")
    if event.get("late"):
        threading.Thread(target=lambda: (time.sleep(0.2), print("printed after the return"))).start()
"""


def test_lines_a_collector_refuses_at_shutdown_are_counted_in_that_environment(tmp_path):
    # GIVEN a collector whose logs endpoint answers 404 (a tracing backend's OTLP endpoint
    # takes spans and metrics only), and a function whose last line comes after its last flush
    from conftest import wait_for
    from support.local_servers import recording_server
    from support.stack import metric_total

    task = write_function(tmp_path / "task", LATE_LINE_APP)
    with recording_server() as refusing:
        env = {"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": f"{refusing.url}/status/404"}
        with instrumented(task, env=env) as (emu, rx):
            for event in ({}, {}, {"late": True}):
                assert emu.invoke(event).function_error is None
            assert wait_for(lambda: "printed after the return" in emu.log_lines("function"), timeout=30)
            # WHEN the environment ends (a spindown: no environment comes after it)
            emu.stop()
        assert refusing.requests
    # THEN every line is counted as refused by this environment, those SHUTDOWN sent included
    lines = emu.log_lines("function")
    assert len(lines) == 10 and not rx.logs()
    assert metric_total(rx, "lambdawrap.dropped", {"reason": "log_rejected_by_collector"}) == len(lines)


PRINTING_APP = """
def handler(event, context):
    print(event["line"])
"""


def test_a_line_whose_time_no_record_can_hold_does_not_hold_back_the_lines_after_it(tmp_path):
    # GIVEN a platform that stamps two lines with times OTLP cannot carry (before 1970, after
    # 2554: outside an unsigned 64-bit count of nanoseconds)
    from support.faults import rewrite_telemetry

    odd_times = {"stamped before 1970": "1969-12-31T23:59:59.000Z", "stamped after 2554": "9999-12-31T23:59:59.999Z"}

    def restamp(event: dict) -> dict:
        record = event.get("record")
        return {**event, "time": odd_times[record.strip()]} if isinstance(record, str) and record.strip() in odd_times else event

    task = write_function(tmp_path / "task", PRINTING_APP)
    with instrumented(task) as (emu, rx):
        emu.init()
        assert emu.wait_idle(30)
        rewrite_telemetry(emu, restamp)
        started_ns = time.time_ns()
        # WHEN the function prints them, then a line in each of three invocations more
        lines = [*odd_times, "after 1", "after 2", "after 3"]
        for line in lines:
            assert emu.invoke({"line": line}).function_error is None
        emu.stop()
    # THEN every line is exported, the two at the time the companion read them (before: the
    # first could not be encoded, its batch went back to the buffer at each flush, and no line
    # was exported again)
    records = {r["body"]: r for r in rx.logs() if r["body"] in lines}
    assert sorted(records) == sorted(lines), rx.logs()
    assert all(started_ns <= records[line]["time_unix_nano"] <= time.time_ns() for line in odd_times)
    assert not _dropped(rx)


def test_a_line_as_long_as_the_platform_s_records_is_exported_whole_and_a_longer_one_is_marked(tmp_path):
    # GIVEN a function that prints a line of the platform's largest record (256 KiB), one of
    # 140 KB of UTF-8 in 70 Ki characters, one beyond the cap, and a short one
    cap = log_buffer.MAX_LINE_CHARS
    task = write_function(tmp_path / "task", f"""
        def handler(event, context):
            print("a" * {256 * 1024})
            print("é" * 71680)
            print("b" * {300 * 1024})
            print("after")
            return "ok"
        """)
    with instrumented(task) as (emu, rx):
        # WHEN it is invoked
        emu.invoke({})
        emu.stop()
        delivered = sorted(len(line) for line in emu.log_lines("function"))
    assert delivered == [5, 71680, 256 * 1024, 300 * 1024]  # the emulator delivered them whole
    # THEN the lines up to the platform's 256 KiB are exported whole, unmarked, and the longer
    # one is cut to the cap and marked as cut
    found = sorted((len(str(r["body"])), str(r["body"])[:1], r["attributes"].get("lambdawrap.log.truncated")) for r in rx.logs())
    assert found == [(5, "a", None), (71680, "é", None), (256 * 1024, "a", None), (cap, "b", True)]
    assert cap >= 256 * 1024
    assert not _dropped(rx)


def test_lines_printed_during_a_successful_init_carry_the_init_span_s_ids(tmp_path):
    # GIVEN a function that prints while its module loads
    task = write_function(tmp_path / "task", """
        print("loading model")

        def handler(event, context):
            print("handling")
            return "ok"
        """)
    with instrumented(task) as (emu, rx):
        # WHEN its first invocation comes
        emu.invoke({})
        emu.stop()
    init = rx.wait_for_spans(lambda s: s["name"].endswith(" init"))[0]
    invocation = rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"])[0]
    loading = rx.wait_for_logs(lambda r: r["body"] == "loading model")[0]
    handling = rx.wait_for_logs(lambda r: r["body"] == "handling")[0]
    # THEN the init's line carries the init span's ids (the span it was printed in, in the first
    # invocation's trace), the handler's the invocation span's
    assert init["trace_id"] == invocation["trace_id"] and init["parent_span_id"] == invocation["span_id"]
    assert (loading["trace_id"], loading["span_id"]) == (init["trace_id"], init["span_id"])
    assert (handling["trace_id"], handling["span_id"]) == (invocation["trace_id"], invocation["span_id"])


def test_an_init_line_the_platform_reads_late_still_carries_the_init_span_s_ids(tmp_path, monkeypatch):
    # GIVEN a function that prints while its module loads, and a busy machine that reads that
    # line from the runtime's output late (after the runtime asked for its first invocation)
    from lambdawrap.devtools.emulator import init_phase

    task = write_function(tmp_path / "task", """
        print("loading model")

        def handler(event, context):
            return "ok"
        """)
    runtime_line = init_phase.InitPhase.runtime_line

    def late_line(self, stream, line):
        if line == "loading model":
            time.sleep(0.3)
        runtime_line(self, stream, line)

    monkeypatch.setattr(init_phase.InitPhase, "runtime_line", late_line)
    with instrumented(task) as (emu, rx):
        # WHEN its first invocation comes
        emu.invoke({})
        emu.stop()
    init = rx.wait_for_spans(lambda s: s["name"].endswith(" init"))[0]
    loading = rx.wait_for_logs(lambda r: r["body"] == "loading model")[0]
    # THEN the line still carries the init span's ids, not the first invocation's (or none)
    assert (loading["trace_id"], loading["span_id"]) == (init["trace_id"], init["span_id"])


def test_the_lines_of_an_invocation_whose_trace_is_not_sampled_say_so(tmp_path):
    # GIVEN a function called by a service that sampled its trace out (flags 00), and once by
    # one that sampled it
    task = write_function(tmp_path / "task", """
        def handler(event, context):
            print("handling", context.aws_request_id)
            return "ok"
        """)
    unsampled_parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    sampled_parent = "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with instrumented(task) as (emu, rx):
        # WHEN each is invoked
        unsampled = emu.invoke({"traceparent": unsampled_parent})
        sampled = emu.invoke({"traceparent": sampled_parent})
        emu.stop()
    lines = {r["body"].split()[1]: r for r in rx.wait_for_logs(lambda r: r["body"].startswith("handling "), count=2)}
    # THEN both lines name their trace, but only the sampled one's flags say it was sampled, as
    # the span context they were printed in says: the other's span was never exported
    assert [s["trace_id"] for s in rx.spans() if "faas.invocation_id" in s["attributes"]] == ["1af7651916cd43dd8448eb211c80319c"]
    assert lines[unsampled.request_id]["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and lines[unsampled.request_id]["flags"] & 0xFF == 0
    assert lines[sampled.request_id]["trace_id"] == "1af7651916cd43dd8448eb211c80319c" and lines[sampled.request_id]["flags"] & 0xFF == 1


def test_the_lines_of_an_invocation_the_function_never_saw_say_whether_its_trace_is_sampled(tmp_path):
    # GIVEN a function whose traces are all sampled out, and an event the runtime cannot decode
    # (the handler never runs: the companion makes the invocation's ids itself)
    task = write_function(tmp_path / "task", """
        def handler(event, context):
            return "ok"
        """)
    with instrumented(task, env={"OTEL_TRACES_SAMPLER": "always_off"}) as (emu, rx):
        # WHEN it is invoked
        assert emu.invoke(raw=b"{not json").json()["errorType"] == "Runtime.UnmarshalError"
        emu.stop()
    # THEN the runtime's error line names the trace without the sampled flag: no span of it was
    # exported (it carried the flag, linking it to a trace no backend has)
    line = rx.wait_for_logs(lambda r: "Runtime.UnmarshalError" in r["body"])[0]
    assert not rx.spans() and line["trace_id"] and line["flags"] & 0xFF == 0, line


def _exported(*lines: str) -> list:
    """(severity number, severity text, body, attributes) of each line as exported, after a
    round trip through the OTLP encoding (protobuf refuses what OTLP cannot carry)."""
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.sdk.resources import Resource

    from lambdawrap.companion.log_records import log_records
    from lambdawrap.devtools.otlp_receiver.decoding import _flatten_logs

    request = ExportLogsServiceRequest.FromString(encode_logs(log_records([(line, 1, None, None) for line in lines], Resource({}))).SerializeToString())
    return [(r["severity_number"], r["severity_text"], r["body"], r["attributes"]) for r in _flatten_logs(request)]


def test_an_exception_a_powertools_function_logged_is_exported_as_the_conventions_exception():
    # GIVEN a function written with Powertools whose route logs an exception it caught
    event = json.loads((EVENTS / "apigw-rest.json").read_text())
    event.update(path="/orders/logged", resource="/orders/{order_id}", pathParameters={"order_id": "logged"})
    task = FUNCTIONS / "powertools"
    with instrumented(task, env={"POWERTOOLS_METRICS_NAMESPACE": "Shop"}) as (emu, rx):
        # WHEN it is invoked
        result = emu.invoke(event)
        assert result.json()["statusCode"] == 200
        emu.stop()  # SHUTDOWN: every line is exported by then
    (record,) = [r for r in rx.logs() if r["body"] == "order lookup failed"]
    # THEN the record says the exception as the conventions do, not as Powertools' own fields
    attributes = record["attributes"]
    assert (record["severity_text"], attributes["exception.type"], attributes["exception.message"]) == ("ERROR", "ValueError", "no such order: logged")
    assert attributes["exception.stacktrace"].startswith("Traceback (most recent call last):") and "exception_name" not in attributes
    assert attributes["service"] == "orders" and attributes["faas.invocation_id"] == result.request_id


def test_an_exception_powertools_logged_has_the_conventions_exception_attributes():

    traceback = 'Traceback (most recent call last):\n  File "/var/task/app.py", line 8, in handler\n    raise ValueError("bad order: 42")\nValueError: bad order: 42'
    logged = json.dumps({"level": "ERROR", "location": "handler:10", "message": "order failed", "timestamp": "t", "service": "orders", "exception": traceback, "exception_name": "ValueError"})
    without_message = json.dumps({"level": "ERROR", "message": "assert", "exception": "Traceback (most recent call last):\nAssertionError", "exception_name": "AssertionError"})
    found = _exported(logged, without_message)
    assert found[0] == (17, "ERROR", "order failed", {"location": "handler:10", "service": "orders", "exception.type": "ValueError", "exception.message": "bad order: 42", "exception.stacktrace": traceback})
    assert found[1][3] == {"exception.type": "AssertionError", "exception.stacktrace": "Traceback (most recent call last):\nAssertionError"}


def test_an_exception_of_a_class_outside_builtins_powertools_logged_keeps_its_message_and_full_name():
    # GIVEN Powertools' lines for exceptions Python names with their module (botocore's, the
    # function's own): Powertools writes the class alone
    traceback = 'Traceback (most recent call last):\n  File "/var/task/app.py", line 8, in handler\n    s3.get_object(Bucket="b", Key="k")\nbotocore.exceptions.ClientError: An error occurred (AccessDenied) when calling the GetObject operation: no'
    logged = json.dumps({"level": "ERROR", "message": "read failed", "exception": traceback, "exception_name": "ClientError"})
    own = json.dumps({"level": "ERROR", "message": "lookup failed", "exception": "Traceback (most recent call last):\napp.OrderError: order 42 missing", "exception_name": "OrderError"})
    other = json.dumps({"level": "ERROR", "message": "m", "exception": "Traceback (most recent call last):\nsome.Other: text", "exception_name": "OrderError"})
    empty = json.dumps({"level": "ERROR", "message": "m", "exception": "Traceback (most recent call last):\napp.OrderError", "exception_name": "OrderError"})
    found = _exported(logged, own, other, empty)
    # THEN each has the conventions' exception.type, the class's full name, and its message
    # (before: no message, the traceback's last line naming the class otherwise than Powertools)
    assert (found[0][3]["exception.type"], found[0][3]["exception.message"]) == ("botocore.exceptions.ClientError", "An error occurred (AccessDenied) when calling the GetObject operation: no")
    assert (found[1][3]["exception.type"], found[1][3]["exception.message"]) == ("app.OrderError", "order 42 missing")
    # ... and a last line naming another class is not read as this one's
    assert (found[2][3]["exception.type"], "exception.message" in found[2][3]) == ("OrderError", False)
    # ... and one with an empty message, written as its class alone, has the same full name
    assert (found[3][3]["exception.type"], "exception.message" in found[3][3]) == ("app.OrderError", False)


def test_an_exception_powertools_logged_from_deep_in_a_stack_keeps_the_record_s_own_fields():
    # GIVEN Powertools' Logger (its defaults: the stack also as a structured `stack_trace`, five
    # values a frame) logging an exception raised 26 frames deep, as a web framework's are
    import io
    import logging

    from aws_lambda_powertools import Logger

    written = io.StringIO()
    logger = Logger(service="orders", logger_handler=logging.StreamHandler(written))

    def deep(n: int) -> None:
        if n == 0:
            raise ValueError("no such order: 42")
        deep(n - 1)

    try:
        deep(26)
    except ValueError:
        logger.exception("order lookup failed", extra={"order_id": "42"})
    ((severity, _, body, attributes),) = _exported(written.getvalue().strip())
    # THEN the record keeps its own fields and the conventions' exception (before: the nested
    # stack spent the values a record makes, and every field before it was left out)
    assert (severity, body, attributes["exception.type"], attributes["exception.message"]) == (17, "order lookup failed", "ValueError", "no such order: 42")
    assert (attributes["service"], attributes["order_id"]) == ("orders", "42") and attributes["location"].startswith("test_an_exception_powertools_logged_from_deep_in_a_stack")
    # ... and its stack_trace, past the values left, partly as its frames' JSON text
    frames = attributes["stack_trace"]["frames"]
    assert len(frames) >= 27 and isinstance(frames[0], dict) and json.loads(frames[-1])["function"] == "deep"


def test_an_error_report_too_long_to_be_read_whole_keeps_its_exception():
    # GIVEN the runtime's JSON report of an unhandled error whose message holds a 17 KB event of
    # many values, and Powertools' line for a logged exception as long, past what a record is
    # read whole for
    from lambdawrap.companion.log_records import MAX_READ_CHARS

    message = "bad payload: " + json.dumps({"rows": ["x" * 20] * 800})
    frames = ['  File "/var/task/app.py", line 4, in handler\n    raise ValueError(f"bad payload: {event}")\n']
    report = json.dumps({"timestamp": "t", "level": "ERROR", "message": None, "errorType": "ValueError", "errorMessage": message, "stackTrace": frames, "requestId": "r"})
    traceback = "Traceback (most recent call last):\n" + frames[0] + "ValueError: " + message
    logged = json.dumps({"level": "ERROR", "location": "handler:9", "message": "order failed", "service": "orders", "exception": traceback, "exception_name": "ValueError"})
    other = json.dumps({"level": "WARNING", "message": "rows", "rows": ["x" * 20] * 800})
    assert min(len(report), len(logged), len(other)) > MAX_READ_CHARS
    found = _exported(report, logged, other)
    # THEN each error has the conventions' exception and its message as body (before: its line
    # as body, and no exception attributes), its other fields left out
    assert found[0][:3] == (17, "ERROR", "ValueError: " + message)
    assert found[0][3] == {"exception.type": "ValueError", "exception.message": message, "exception.stacktrace": traceback + "\n"}
    assert found[1][:3] == (17, "ERROR", "order failed")
    assert found[1][3] == {"exception.type": "ValueError", "exception.message": message, "exception.stacktrace": traceback}
    # ... and a long record reporting no error keeps its line, as before
    assert found[2] == (13, "WARNING", other, {})
    # ... as does one the buffer cut (no JSON any more: not parsed for nothing)
    from lambdawrap.companion.log_records import json_record

    assert json_record(report, cut=True)[1:] == ("ERROR", report, {}, 0)
    # ... and one whose message holds many commas (a long recursion's frames, a list of ids)
    # still has its exception
    ids = ",".join(str(n) for n in range(4000))
    listed = json.dumps({"level": "ERROR", "errorType": "ValidationError", "errorMessage": ids, "stackTrace": frames})
    assert json_record(listed)[3]["exception.message"] == ids


def test_a_long_record_of_few_values_is_read_whole_and_a_long_one_of_many_keeps_its_level():
    # GIVEN records past the size a record is read whole for: awslambdaric's JSON of a long
    # message (a payload logged), and structlog's, whose level comes after its event; and one
    # of many values whose level comes last
    from lambdawrap.companion.log_records import MAX_READ_CHARS

    logged = json.dumps({"timestamp": "2024-01-01T00:00:00Z", "level": "WARNING", "message": "payload " + "x" * 17_000, "logger": "app", "requestId": "r"})
    structlog = json.dumps({"event": "charge failed " + "y" * 17_000, "order": "42", "level": "error"})
    many = json.dumps({"event": "rows", "rows": list(range(5000)), "level": "error", "timestamp": "2024-01-01T00:00:00Z", "pid": 8})
    # ... and, not log records, a printed document of many values whose last reading names a
    # level, and one nesting deep with few commas (its parse would cost ~40 times its text)
    readings = json.dumps({"readings": [{"sensor": n, "state": "ok"} for n in range(2000)] + [{"sensor": 0, "level": "error"}]})
    nested = json.dumps({"level": "INFO", "message": "tree", "tree": [json.loads("{" + '"a":{' * 150 + "}" * 150 + "}") for _ in range(60)]})
    assert min(len(logged), len(structlog), len(many), len(readings), len(nested)) > MAX_READ_CHARS and nested.count(",") < 100
    found = _exported(logged, structlog, many, readings, nested)
    # THEN the first two are read as shorter records are: a message as body, the fields as
    # attributes (a record with no message keeps its line), the level's severity (before: the
    # line as body, no fields, and a level not in the head taken as INFO)
    assert found[0][:3] == (13, "WARNING", "payload " + "x" * 17_000) and found[0][3]["logger"] == "app"
    assert found[1] == (17, "error", structlog, {})
    # ... and the one of many values keeps its line, at its level
    assert found[2] == (17, "error", many, {})
    # ... where a level nested in a document is none of its own, and a deep one is not parsed
    assert found[3][:2] == (9, "INFO") and found[4] == (9, "INFO", nested, {})


def test_a_long_record_takes_its_own_level_not_one_its_bound_context_holds():
    # GIVEN structlog's record of many values, too long to be read whole, whose bound context
    # (before its own level, which structlog writes last) holds a "level" of its own, and one
    # whose context holds one as a string's text
    from lambdawrap.companion.log_records import MAX_READ_CHARS

    nested = json.dumps({"event": "charge failed", "config": {"level": "debug", "retries": 3}, "rows": list(range(5000)), "level": "error"})
    quoted = json.dumps({"event": 'said "level": "debug" once', "rows": list(range(5000)), "level": "warning"})
    assert min(len(nested), len(quoted)) > MAX_READ_CHARS
    # THEN each is at its own level (before: the nested one's, DEBUG)
    assert [record[:2] for record in _exported(nested, quoted)] == [(17, "error"), (13, "warning")]


def test_a_dict_message_of_many_keys_leaves_the_record_s_fields_in():
    # GIVEN a record whose message is a dict of 127 keys, and fields of its own
    message = {f"k{n}": n for n in range(127)}
    ((_, _, body, attributes),) = _exported(json.dumps({"level": "INFO", "message": message, "service": "orders", "order_id": "42"}))
    # THEN its fields are kept, the message as its JSON text (before: the message spent every
    # value a record makes, and the fields were left out)
    assert (attributes["service"], attributes["order_id"]) == ("orders", "42")
    assert json.loads(body) == message


def test_text_format_lines_at_levels_the_function_named_have_their_severity():
    # GIVEN awslambdaric's text format, with level names a function gave logging itself
    lines = [f"[{level}]\t2026-12-01T10:00:00.000Z\tr\tmessage" for level in ("WARN", "FATAL", "TRACE", "WARNING", "CRITICAL", "NOTICE")]
    # THEN each is read as the JSON format reads it (before: WARN, FATAL, TRACE and NOTICE were INFO)
    assert [(number, text) for number, text, _, _ in _exported(*lines)] == [(13, "WARN"), (21, "FATAL"), (1, "TRACE"), (13, "WARNING"), (21, "CRITICAL"), (10, "NOTICE")]


def test_python_json_logger_s_levelname_and_syslog_s_alert_and_emergency_are_read_as_levels():
    # GIVEN records from python-json-logger (its level under logging's attribute name,
    # `levelname`), one too long to read whole, and syslog's two highest levels in both formats
    pjl = json.dumps({"asctime": "2026-12-01 10:00:00,000", "levelname": "ERROR", "name": "orders", "message": "payment failed", "order_id": 42})
    from lambdawrap.companion.log_records import MAX_READ_CHARS

    long_pjl = json.dumps({"message": "m", "payload": list(range(MAX_READ_CHARS // 2)), "levelname": "WARNING"})
    both = json.dumps({"levelname": "Castle", "level": "ERROR", "message": "m", "payload": list(range(MAX_READ_CHARS // 2))})
    lines = [pjl, long_pjl, '{"level": "ALERT", "message": "disk"}', '{"level": "emergency", "message": "down"}', "[ALERT]\t2026-12-01T10:00:00.000Z\tr\tdisk", "[EMERGENCY]\t2026-12-01T10:00:00.000Z\tr\tdown", both]
    found = _exported(*lines)
    # THEN each has its level (before: all at INFO, python-json-logger's with its line as body)
    assert found[0] == (17, "ERROR", "payment failed", {"asctime": "2026-12-01 10:00:00,000", "name": "orders", "order_id": 42})
    assert found[1][:3] == (13, "WARNING", long_pjl)
    # ... as the data model maps syslog's
    assert [record[:2] for record in found[2:6]] == [(19, "ALERT"), (21, "emergency"), (19, "ALERT"), (21, "EMERGENCY")]
    # ... and a record with both, too long to read whole, by its `level`, as one read whole is
    assert found[6][:2] == (17, "ERROR")


def test_json_records_of_other_loggers_and_odd_values_are_mapped_or_kept_as_their_line():

    powertools = json.dumps({"level": "INFO", "location": "handler:12", "message": "order placed", "timestamp": "2026-12-01 10:00:00,000+0000", "service": "orders", "cold_start": True, "xray_trace_id": None})
    structlog = json.dumps({"event": "order placed", "level": "warning"})
    as_objects = json.dumps({"timestamp": "t", "level": "ERROR", "message": {"order": 42, "paid": "café"}, "requestId": "r"}, separators=(",", ":"))  # as the correlator re-encodes an object record
    odd = json.dumps({"level": "DEBUG", "message": "odd", "big": 2**70, "deep": json.loads("[" * 40 + "]" * 40), "bad": "\udc80"})
    no_frames = json.dumps({"level": "ERROR", "errorType": "Runtime.ImportModuleError", "errorMessage": "Unable to import module 'app'", "stackTrace": []})
    lines = [powertools, structlog, as_objects, odd, no_frames, '{"level": "NOTICE", "message": "m"}', '{"level": "ERROR", "message": "cut', "[WARNING]\t2026-12-01T10:00:00.000Z\tr\ttext format", '{"level": "SUCCESS", "message": "paid", "timestamp": "t", "order": 7}']
    found = _exported(*lines)
    # awslambdaric's shape from another logger (Powertools): message, level, the rest as attributes
    assert found[0] == (9, "INFO", "order placed", {"location": "handler:12", "service": "orders", "cold_start": True})
    # a record without a message keeps its line, with its level as severity (as written)
    assert found[1] == (13, "warning", structlog, {})
    # a dict message is a structured body, however the line was encoded; exported without an
    # invocation, the request it names is kept
    assert found[2] == (17, "ERROR", {"order": 42, "paid": "café"}, {"requestId": "r"})
    # what OTLP cannot carry is made so: an integer beyond int64 as text, deep nesting as its JSON text, a lone surrogate as U+FFFD
    severity, text, body, attributes = found[3]
    assert (severity, text, body, attributes["big"], attributes["bad"]) == (5, "DEBUG", "odd", str(2**70), "\ufffd")
    deep = attributes["deep"]
    for _ in range(16):
        deep = deep[0]
    assert deep == "[" * 24 + "]" * 24
    # an error without frames reads as Python prints one: its last line only
    assert found[4][2] == "Runtime.ImportModuleError: Unable to import module 'app'"
    assert found[4][3]["exception.stacktrace"] == "Runtime.ImportModuleError: Unable to import module 'app'\n"
    # syslog's NOTICE is the data model's INFO2; a logger's level of its own keeps its name, at
    # INFO, its message the body and its other fields (a `timestamp` too: it may be no logger's)
    # as attributes (before: the whole line as body)
    assert found[5][:3] == (10, "NOTICE", "m")
    assert found[8] == (9, "SUCCESS", "paid", {"timestamp": "t", "order": 7})
    # a line that is not JSON, and the Text format: as before
    assert found[6][:3] == (9, "INFO", '{"level": "ERROR", "message": "cut')
    assert found[7][:2] == (13, "WARNING")


def test_what_a_json_record_becomes_is_bounded_whatever_its_size():
    # Each value made an object costs ~100 times its text at export: a record's values are
    # bounded, and a record longer than is read whole keeps its line, with its level.

    from lambdawrap.companion.log_records import MAX_READ_CHARS, MAX_VALUES

    many = json.dumps({"level": "INFO", "message": "m", **{f"f{n}": n for n in range(1000)}})
    nested = json.dumps({"level": "INFO", "message": "m", "rows": [[1, 2, 3, 4, 5, 6, 7, 8]] * 100})
    long = json.dumps({"timestamp": "t", "level": "WARNING", "message": "exported rows", "rows": [[1, 2, 3, 4, 5, 6, 7, 8]] * 9500})
    assert len(many) <= MAX_READ_CHARS and len(nested) <= MAX_READ_CHARS < len(long)
    (_, _, _, many_attributes), (_, _, _, nested_attributes), long_record = _exported(many, nested, long)
    assert MAX_VALUES - 2 <= len(many_attributes) <= MAX_VALUES
    rows = nested_attributes["rows"]
    assert isinstance(rows, list) and len(rows) == 100
    made = sum(isinstance(row, list) for row in rows)
    assert 0 < made and made * 9 <= MAX_VALUES and json.loads(rows[-1]) == [1, 2, 3, 4, 5, 6, 7, 8]  # the rest as their JSON text
    assert long_record == (13, "WARNING", long, {})


def test_a_flood_of_large_json_records_stays_within_a_128_mb_function(tmp_path):
    # GIVEN a 128 MB function logging 15 JSON records of ~250 KB (under the platform's 256 KiB)
    # per invocation (the red team's case: the companion passed 117 MB and the environment died)
    task = write_function(tmp_path / "task", """
        import logging
        logger = logging.getLogger("export")

        def handler(event, context):
            for _ in range(15):
                logger.warning("exported rows", extra={"rows": [[1, 2, 3, 4, 5, 6, 7, 8]] * 9500})
            return "ok"
        """)
    env = {"AWS_LAMBDA_LOG_FORMAT": "JSON", "LAMBDAWRAP_FLUSH": "end"}
    with instrumented(task, env=env, memory_mb=128, cpu_limit=False, timeout_s=30) as (emu, rx):
        # WHEN it is invoked a few times
        results = [emu.invoke({}) for _ in range(3)]
        emu.stop()
        produced = len(emu.log_lines("function"))
        reports = [r["record"] for r in emu.records("platform.report")]
    # THEN the environment lived through it, and every line is exported or counted
    assert [r.json() for r in results] == ["ok"] * 3
    assert all(report.get("status") == "success" for report in reports), reports
    dropped = _dropped(rx)
    line_drops = sum(dropped.get(reason, 0) for reason in ("log_buffer_full", "log_shutdown_deadline", "platform_logs_dropped"))
    exported = [r for r in rx.logs() if r["severity_text"] == "WARNING"]
    assert len(exported) + line_drops == produced == 45, (len(exported), dropped, produced)
    assert exported and all(r["severity_number"] == 13 for r in exported)


# More lines than the correlator holds for their span's ids (MAX_PENDING_LOGS), then, when asked,
# an error logged and one raised: a module that logs much while it loads (a library's DEBUG output).
CHATTY_INIT = """
import logging, os, time

for number in range(1500):
    print(f"init line {number}")
if os.environ.get("FAIL_INIT"):
    logging.getLogger("setup").error("about to fail")
    # A second of work before it fails: time for the companion to subscribe on a busy machine
    # (test_pipeline's fails_its_first_load)
    time.sleep(1)
    raise RuntimeError("init failed here")

def handler(event, context):
    print("handling")
    return "ok"
"""


def test_a_failed_init_that_logged_much_keeps_its_error_and_every_line_its_ids(tmp_path):
    # GIVEN a function whose module prints 1,500 lines, logs an error and raises
    task = write_function(tmp_path / "task", CHATTY_INIT)
    with instrumented(task, env={"FAIL_INIT": "1"}) as (emu, rx):
        # WHEN it is invoked: its init fails, and fails again inside the invocation (the
        # platform's suppressed init)
        failed = emu.invoke({})
        assert failed.json()["errorType"] == "RuntimeError"
        emu.stop()
    inits = rx.wait_for_spans(lambda s: s["name"].endswith(" init"), count=2)
    assert sorted(init["attributes"]["lambdawrap.init.phase"] for init in inits) == ["init", "invoke"]
    lines = rx.logs()
    for init in inits:
        # THEN each init span says the error the caller got (read from the runtime's report,
        # which came after the lines held for the span)
        assert (init["status_code"], init["status_message"]) == (2, "init failed here")  # the message alone: error.type says the type
        assert init["attributes"]["error.type"] == "RuntimeError"
        # ... its exception event at the init's end, inside the span (before: when the span
        # was built, an invocation or a carry-over later)
        (exception,) = [e for e in init["events"] if e["name"] == "exception"]
        assert exception["time_unix_nano"] == init["end_time_unix_nano"] and exception["attributes"]["exception.message"] == "init failed here"
        # ... and every line of its init, those past the held ones and the errors too, carries
        # its ids
        own = [r for r in lines if (r["trace_id"], r["span_id"]) == (init["trace_id"], init["span_id"])]
        assert len([r for r in own if str(r["body"]).startswith("init line ")]) == 1500
        assert any("about to fail" in str(r["body"]) for r in own)
        assert any(str(r["body"]).startswith("[ERROR] RuntimeError: init failed here") for r in own)
    assert len(lines) == sum(1 for r in lines if (r["trace_id"], r["span_id"]) in {(i["trace_id"], i["span_id"]) for i in inits})
    assert not _dropped(rx)


def test_a_successful_init_that_logged_much_gives_every_line_the_init_span_s_ids(tmp_path):
    # GIVEN a function whose module prints 1,500 lines and loads
    task = write_function(tmp_path / "task", CHATTY_INIT)
    with instrumented(task) as (emu, rx):
        # WHEN its first invocation comes
        assert emu.invoke({}).json() == "ok"
        emu.stop()
    init = rx.wait_for_spans(lambda s: s["name"].endswith(" init"))[0]
    invocation = rx.wait_for_spans(lambda s: "faas.invocation_id" in s["attributes"])[0]
    # THEN all 1,500 lines carry the init span's ids, the handler's the invocation's
    loading = [r for r in rx.logs() if str(r["body"]).startswith("init line ")]
    assert len(loading) == 1500
    assert {(r["trace_id"], r["span_id"]) for r in loading} == {(init["trace_id"], init["span_id"])}
    handling = rx.wait_for_logs(lambda r: r["body"] == "handling")[0]
    assert (handling["trace_id"], handling["span_id"]) == (invocation["trace_id"], invocation["span_id"])


def test_lines_held_for_their_span_s_ids_stay_within_the_memory_of_a_small_function(tmp_path):
    # GIVEN a function that prints 500 lines of 250 KB (under the platform's 256 KiB record)
    # in one invocation: 125 MB, far fewer lines than are held for their span's ids
    task = write_function(tmp_path / "task", """
        def handler(event, context):
            line = "q" * 250_000
            for _ in range(500):
                print(line)
            return "ok"
        """)
    with instrumented(task, env={"LAMBDAWRAP_FLUSH": "end"}, memory_mb=128, cpu_limit=False, timeout_s=60) as (emu, rx):
        # WHEN it is invoked as a 128 MB function
        assert emu.invoke({}).json() == "ok"
        assert emu.wait_idle(60)
        peak_mb = peak_rss_mb(companion_process(emu).pid)  # once the invoke phase is over
        assert [r["record"]["status"] for r in emu.records("platform.report")] == ["success"]
        emu.stop()
        produced = len(emu.log_lines("function"))
    # THEN the companion holds no more than its bounds, not the lines whole (it shares the
    # function's memory: held whole, they ended the environment or came within MBs of it)
    assert peak_mb < 100, peak_mb
    # ... and every line is exported or counted
    dropped = _dropped(rx)
    line_drops = sum(dropped.get(reason, 0) for reason in ("log_buffer_full", "log_shutdown_deadline", "platform_logs_dropped"))
    assert len([r for r in rx.logs() if str(r["body"]).startswith("qqq")]) + line_drops == produced == 500, (dropped, produced)


def test_an_init_no_invocation_followed_is_exported_with_its_lines(tmp_path):
    # GIVEN a function whose module prints while it loads, in an environment that is initialized
    # and never invoked (provisioned concurrency, a proactive init) before it is spun down
    task = write_function(tmp_path / "task", CHATTY_INIT)
    with instrumented(task) as (emu, rx):
        emu.init()
        assert emu.wait_idle(30)
        # WHEN the environment is spun down
        emu.stop()
    # THEN its init is a span of its own trace, successful, and every line it printed carries
    # that span's ids (nothing of it was exported, nor counted, before)
    init = rx.wait_for_spans(lambda s: s["name"].endswith(" init"), timeout=10)[0]
    assert init["status_code"] == 0 and not init.get("parent_span_id")
    lines = rx.logs()
    assert len(lines) == 1500 and all(str(r["body"]).startswith("init line ") for r in lines)
    assert {(r["trace_id"], r["span_id"]) for r in lines} == {(init["trace_id"], init["span_id"])}
    assert not _dropped(rx)


def test_a_level_that_is_no_logger_s_leaves_a_json_line_as_written():
    # A `level` in JSON that is not a log record (a game's, without a message): the line as it is
    line = json.dumps({"level": "3-2", "score": 7})
    assert _exported(line)[0][:3] == (9, "INFO", line)


def test_a_line_is_observed_when_the_companion_exports_it_and_a_request_id_of_any_text_is_sent():
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.sdk.resources import Resource

    from lambdawrap.companion.log_records import log_records
    from lambdawrap.devtools.otlp_receiver.decoding import _flatten_logs

    # GIVEN a line logged a minute ago, and one naming a request id that is no valid text
    logged_ns = time.time_ns() - 60 * 10**9
    line = json.dumps({"level": "INFO", "message": "m", "requestId": "\udc80bad"})
    before = time.time_ns()
    # WHEN they are exported
    encoded = encode_logs(log_records([("plain", logged_ns, None, None), (line, logged_ns, None, "\udc80bad")], Resource({}))).SerializeToString()
    after = time.time_ns()
    records = _flatten_logs(ExportLogsServiceRequest.FromString(encoded))
    # THEN each is observed as it is exported, not when it was logged (the data model's
    # observed time for logs from outside OpenTelemetry)
    assert [r["time_unix_nano"] for r in records] == [logged_ns] * 2
    assert all(before <= r["observed_time_unix_nano"] <= after for r in records), records
    # ... and the request id goes, made valid text (before: the encoder failed on it, logging a
    # traceback for each record, and the attribute was lost)
    assert records[1]["attributes"]["faas.invocation_id"] == "\ufffdbad"


class _Lines:
    """A sink keeping each line with its ids and request."""

    def __init__(self) -> None:
        self.lines: list = []

    def log_line(self, line, time_ns, ids, request_id) -> None:
        self.lines.append((line, tuple(ids) if ids else None, request_id))

    def dropped_log_line(self, chars: int) -> bool:
        return False

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _function_record(request_id: str, trace_id: int, span_id: int) -> dict:
    """An invocation record as the function's process encodes it."""
    from lambdawrap.shared import records
    from lambdawrap.shared.framing import HEADER_BYTES

    start = records.encode_invocation_start(request_id, "arn:aws:lambda:eu-west-1:123456789012:function:f", trace_id, span_id, 0, True, 1, False, False, "other", {}, [], "f", 1)
    return json.loads(records.encode_invocation(start, records.invocation_end(2))[HEADER_BYTES:])


def _function_line(record) -> dict:
    return {"type": "function", "time": "2026-12-01T10:00:00.000Z", "record": record}


def test_an_invocation_s_lines_past_those_held_carry_its_ids_once_its_record_has_come(monkeypatch):
    from lambdawrap.companion import correlator
    from lambdawrap.companion.correlator import Correlator

    # GIVEN an invocation whose lines outgrow what is held for its span's ids before its record
    # comes, with no in-flight slot to read them from (a full /tmp)
    monkeypatch.setattr(correlator, "MAX_PENDING_LOGS", 3)
    sink = _Lines()
    corr = Correlator(sink, lambda reason, what: None)
    corr.on_invoke({"requestId": "r1", "invokedFunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:f"})
    corr.on_telemetry([{"type": "platform.start", "time": "2026-12-01T10:00:00.000Z", "record": {"requestId": "r1"}}] + [_function_line(f"before {n}") for n in range(5)])
    # WHEN its record comes, and more lines before its end
    corr.on_record(_function_record("r1", 0xA1, 0xB1))
    corr.on_telemetry([_function_line(f"after {n}") for n in range(3)])
    # THEN those after the record carry its span's ids (before: none, as the lines before it)
    ids = (f"{0xA1:032x}", f"{0xB1:016x}")
    after = [entry for entry in sink.lines if entry[0].startswith("after")]
    assert [entry[1][:2] if entry[1] else None for entry in after] == [ids] * 3, sink.lines
    # ... and so do the lines held for them, handed over before those after, none lost
    by_line = {entry[0]: entry[1][:2] if entry[1] else None for entry in sink.lines}
    assert len(sink.lines) == 8 and [by_line[f"before {n}"] for n in range(3)] == [ids] * 3, sink.lines
    assert max(sink.lines.index(entry) for entry in sink.lines if entry[0] in ("before 0", "before 1", "before 2")) < min(sink.lines.index(entry) for entry in sink.lines if entry[0].startswith("after"))


def test_on_managed_instances_a_line_naming_its_lambda_request_and_an_upstream_one_is_the_lambda_request_s():
    from lambdawrap.companion.correlator import Correlator

    # GIVEN a Powertools line (its `function_request_id`) that also names an upstream API's
    # `requestId`, on Managed Instances
    sink = _Lines()
    corr = Correlator(sink, lambda reason, what: None, managed_instances=True)
    rid = "8f5c2a4e-0000-4000-8000-000000000001"
    corr.on_telemetry([
        {"type": "platform.start", "time": "2026-12-01T10:00:00.000Z", "record": {"requestId": rid}},
        _function_line(json.dumps({"level": "INFO", "message": "relayed", "requestId": "apigw-upstream-123", "function_request_id": rid})),
    ])
    corr.on_record(_function_record(rid, 0xA2, 0xB2))
    corr.on_telemetry([{"type": "platform.report", "time": "2026-12-01T10:00:00.100Z", "record": {"requestId": rid, "status": "success", "metrics": {"durationMs": 100.0}}}])
    # THEN it goes with that request's ids and id (before: held under the upstream id, and
    # exported without ids, its faas.invocation_id the upstream's)
    [(line, ids, request_id)] = sink.lines
    assert request_id == rid and ids[:2] == (f"{0xA2:032x}", f"{0xB2:016x}"), sink.lines


def test_on_managed_instances_a_worker_s_late_load_lines_carry_the_init_span_s_ids_whatever_finishes_first():
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource

    from lambdawrap.companion.correlator import Correlator
    from lambdawrap.companion.log_records import log_records
    from lambdawrap.companion.signals import Signals
    from lambdawrap.shared.settings import Settings

    def at(ms: int) -> str:
        return f"2026-12-01T10:00:{ms // 1000:02d}.{ms % 1000:03d}Z"

    def loading(ms: int, text: str) -> dict:
        return {"type": "function", "time": at(ms), "record": json.dumps({"level": "INFO", "message": text, "requestId": ""})}

    signals = Signals(Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "f"}, warn=False), Resource({}), MeterProvider())
    corr = Correlator(signals, lambda reason, what: signals.dropped(reason), managed_instances=True)
    x, y = "8f5c2a4e-0000-4000-8000-000000000001", "8f5c2a4e-0000-4000-8000-000000000002"
    # GIVEN a Managed Instances init whose first finished request's record was lost (the init
    # span is then a trace of its own) ...
    corr.on_telemetry([
        {"type": "platform.initStart", "time": at(0), "record": {"phase": "init", "initializationType": "lambda-managed-instances"}},
        loading(1, "worker 1 loading"),
        {"type": "platform.initRuntimeDone", "time": at(2), "record": {"status": "success", "phase": "init"}},
        {"type": "platform.initReport", "time": at(3), "record": {"phase": "init", "metrics": {"durationMs": 3.0}}},
        {"type": "platform.start", "time": at(10), "record": {"requestId": x}},
        {"type": "platform.report", "time": at(20), "record": {"requestId": x, "status": "success", "metrics": {"durationMs": 5.0}}},
    ])
    corr.finish_overdue(time.monotonic() + 60)
    # WHEN another worker's load lines come, one before and one after the next request finishes
    corr.on_telemetry([loading(25, "worker 2 loading"), {"type": "platform.start", "time": at(30), "record": {"requestId": y}}])
    corr.on_record(_function_record(y, 0xA3, 0xB3))
    corr.on_telemetry([{"type": "platform.report", "time": at(40), "record": {"requestId": y, "status": "success", "metrics": {"durationMs": 5.0}}}, loading(41, "worker 3 loading")])
    [init] = [span for span in signals.spans.take(100) if span.name == "f init"]
    ids = {str(r.log_record.body): (r.log_record.trace_id, r.log_record.span_id) for r in log_records(signals.logs.take(100), Resource({}))}
    # THEN each carries the init span's ids, as the lines held for it do (before: the first
    # without any, the second with the next request's trace beside the init span's id)
    assert ids == dict.fromkeys(("worker 1 loading", "worker 2 loading", "worker 3 loading"), (init.context.trace_id, init.context.span_id)), (ids, init.context)


def test_a_secret_a_json_format_record_holds_as_a_number_is_redacted():
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource

    from lambdawrap.companion.correlator import Correlator
    from lambdawrap.companion.log_records import log_records
    from lambdawrap.companion.secret_scrub import SecretScrubber
    from lambdawrap.companion.signals import Signals
    from lambdawrap.shared.settings import Settings

    # GIVEN a declared account number and PIN the companion learned, and a function that logs
    # them as numbers under the JSON log format, whose records the Telemetry API delivers as
    # objects
    account, pin = 84736251904417, 12345678  # values of 8 characters or more are searched for
    scrubber = SecretScrubber()
    scrubber.learn([str(account), str(pin)])
    signals = Signals(Settings.from_env({"AWS_LAMBDA_FUNCTION_NAME": "f"}, warn=False), Resource({}), MeterProvider())
    corr = Correlator(signals, lambda reason, what: signals.dropped(reason))
    rid = "8f5c2a4e-0000-4000-8000-000000000001"
    fields = {"timestamp": "2026-12-01T10:00:00Z", "level": "WARNING", "message": "charging", "logger": "root", "requestId": rid}
    corr.on_invoke({"requestId": rid, "invokedFunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:f"})
    report = {"type": "platform.report", "time": "2026-12-01T10:00:01.300Z", "record": {"requestId": rid, "status": "success", "metrics": {"durationMs": 12345678.0, "billedDurationMs": 12345678, "memorySizeMB": 128, "maxMemoryUsedMB": 64}}}
    # WHEN the batches go the companion's way: searched for the values, then correlated
    corr.on_telemetry(scrubber.scrub([
        {"type": "platform.start", "time": "2026-12-01T10:00:00.000Z", "record": {"requestId": rid}},
        _function_line(dict(fields, account=account, pins=[pin, 3], ratio=0.5, ok=True, later=123456789)),
        _function_line(dict(fields, message="charged", amount=1200, took=float(pin))),
    ]))
    corr.on_record(_function_record(rid, 0xA1, 0xB1))
    corr.on_telemetry(scrubber.scrub([{"type": "platform.runtimeDone", "time": "2026-12-01T10:00:01.234Z", "record": {"requestId": rid, "status": "success"}}, report]))
    exported = [r.log_record for r in log_records(signals.logs.take(100), Resource({}))]
    # THEN each number that is a declared value is redacted, as its text in a line would be
    # (before: exported as it was) ...
    assert len(exported) == 2, exported
    charged, charging = sorted(exported, key=lambda r: str(r.body))
    assert (dict(charging.attributes)["account"], dict(charging.attributes)["pins"], dict(charged.attributes)["took"]) == ("[REDACTED]", ["[REDACTED]", 3], "[REDACTED]")
    # ... and the others stay what they were: a number whose digits hold one, booleans, and
    # the platform's numbers, whichever they equal
    assert (dict(charging.attributes)["later"], dict(charging.attributes)["ratio"], dict(charging.attributes)["ok"], dict(charged.attributes)["amount"]) == (123456789, 0.5, True, 1200)
    assert report["record"]["metrics"]["durationMs"] == 12345678.0 and report["record"]["metrics"]["billedDurationMs"] == 12345678
