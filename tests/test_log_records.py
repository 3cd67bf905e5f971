"""What a function's log line becomes as an OTLP log record, end to end (emulator + real
awslambdaric + layer + real OTLP receiver): lines as long as the platform's records, and the
ids of lines printed during init."""

from __future__ import annotations

from conftest import write_function
from support.stack import instrumented

from lambdawrap.companion import log_buffer


def _dropped(rx) -> dict:
    return {p["attributes"]["reason"]: p["value"] for p in rx.metrics() if p["name"] == "lambdawrap.dropped" and p["value"]}


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
