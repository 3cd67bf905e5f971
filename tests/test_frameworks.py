"""Functions written with popular libraries that hook the places lambdawrap does (their own
loggers, handler decorators), through the emulator with the layer: what they write is
exported with the invocation it belongs to."""

from __future__ import annotations

from conftest import write_function
from support.concurrency import concurrently
from support.stack import instrumented

POWERTOOLS_HANDLER = """
import time
from aws_lambda_powertools import Logger

logger = Logger(service="orders")
logger.info("module loaded")  # no request yet: no function_request_id in this line


@logger.inject_lambda_context
def handler(event, context):
    logger.info("working on %s" % event["n"])
    time.sleep(0.3)  # the two workers' requests overlap
    logger.info("done with %s" % event["n"])
    return {"n": event["n"]}
"""


def test_powertools_log_lines_go_with_their_request_on_managed_instances(tmp_path):
    # GIVEN a function logging with Powertools' Logger, whose JSON lines name their request as
    # `function_request_id` (inject_lambda_context), never as awslambdaric's `requestId`: they
    # are written by Powertools' own handler, not the runtime's formatter
    task = write_function(tmp_path / "task", POWERTOOLS_HANDLER)
    with instrumented(task, max_concurrency=2, timeout_s=10) as (emu, rx):
        emu.init()
        # WHEN its requests run two at a time on Managed Instances, where no request is "the
        # current one" and a line goes with a request only if it names it
        results = []
        for wave in ((0, 1), (2, 3)):
            assert emu.wait_idle(30)
            results += concurrently([lambda n=n: emu.invoke({"n": n}) for n in wave])
        assert [r.status for r in results] == [200] * 4 and not [r for r in results if r.function_error]
        rids = [r.request_id for r in results]
        spans = rx.wait_for_spans(lambda s: s["attributes"].get("faas.invocation_id") in rids, count=4, timeout=60)
        by_rid = {s["attributes"]["faas.invocation_id"]: s for s in spans}
        lines = rx.wait_for_logs(lambda r: str(r["body"]).startswith(("working on", "done with")), count=8, timeout=30)
    # THEN each line carries its own request's ids (before: none at all, every Powertools line
    # of a Managed Instances function went without its invocation)
    for record in lines:
        rid = rids[int(str(record["body"]).split()[-1])]
        assert record["attributes"].get("faas.invocation_id") == rid, record
        assert (record["trace_id"], record["span_id"]) == (by_rid[rid]["trace_id"], by_rid[rid]["span_id"]), record
