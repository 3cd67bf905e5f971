"""What a function's log line becomes as an OTLP log record, end to end (emulator + real
awslambdaric + layer + real OTLP receiver): the ids of lines printed during init."""

from __future__ import annotations

from conftest import write_function
from support.stack import instrumented


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
