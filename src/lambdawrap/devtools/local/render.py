"""Terminal rendering of a local run: a waterfall per invocation, metrics, logs, timings."""

from __future__ import annotations

from typing import Any, Sequence

BAR_WIDTH = 40
NAME_WIDTH = 30


def _ms(ns: int) -> float:
    return ns / 1e6


def _children(spans: list, parent_id: str) -> list:
    return sorted((s for s in spans if s["parent_span_id"] == parent_id), key=lambda s: s["start_time_unix_nano"])


def waterfall(root: dict, spans: list) -> list:
    """Lines of a text waterfall for one invocation span and everything under it."""
    tree: list = []

    def walk(span: dict, depth: int) -> None:
        tree.append((span, depth))
        for child in _children(spans, span["span_id"]):
            walk(child, depth + 1)

    # The init span hangs under the invocation span but happened before it: show it first.
    init = [s for s in _children(spans, root["span_id"]) if s["name"].endswith(" init")]
    for span in init:
        tree.append((span, 0))
    tree.append((root, 0))
    for child in _children(spans, root["span_id"]):
        if child not in init:
            walk(child, 1)
    start = min(s["start_time_unix_nano"] for s, _ in tree)
    end = max(s["end_time_unix_nano"] for s, _ in tree)
    total = max(end - start, 1)
    lines = []
    for span, depth in tree:
        offset = int((span["start_time_unix_nano"] - start) / total * BAR_WIDTH)
        length = max(1, int((span["end_time_unix_nano"] - span["start_time_unix_nano"]) / total * BAR_WIDTH))
        bar = (" " * offset + "█" * length).ljust(BAR_WIDTH)[:BAR_WIDTH]
        name = ("  " * depth + span["name"])[:NAME_WIDTH].ljust(NAME_WIDTH)
        flag = "  ERROR " + span["status_message"] if span["status_code"] == 2 else ""
        lines.append(f"    {name} |{bar}| {_ms(span['end_time_unix_nano'] - span['start_time_unix_nano']):8.2f} ms{flag}")
    return lines


def invocation_report(index: int, count: int, result: Any, report: dict | None, receiver: Any) -> list:
    """The block printed for one invocation."""
    post_response = None
    if report:
        overhead = [s for s in report.get("spans") or [] if s.get("name") == "extensionOverhead"]
        post_response = overhead[0]["durationMs"] if overhead else None
    head = f"invocation {index}/{count}  {result.request_id}  status {result.status}"
    if result.function_error:
        head += f" ({result.function_error})"
    head += f"  caller waited {result.duration_ms:.1f} ms"
    if post_response is not None:
        head += f"  export after the response {post_response:.1f} ms"
    lines = [head]
    if receiver is None:
        return lines
    spans = receiver.spans()
    root = next((s for s in spans if s["attributes"].get("faas.invocation_id") == result.request_id), None)
    if root is None:
        lines.append("    (no span received for this invocation)")
        return lines
    cold = " cold start" if root["attributes"].get("faas.coldstart") else ""
    lines.append(f"  trace {root['trace_id']}{cold}")
    lines.extend(waterfall(root, spans))
    logs = [log for log in receiver.logs() if log["span_id"] == root["span_id"]]
    init = next((s for s in spans if s["parent_span_id"] == root["span_id"] and s["name"].endswith(" init")), None)
    if init is not None:
        logs = [log for log in receiver.logs() if log["span_id"] == init["span_id"] or log["span_id"] == root["span_id"]]
    if logs:
        lines.append("  logs")
        for log in sorted(logs, key=lambda l: l["time_unix_nano"]):
            body = str(log["body"]).replace("\r", " ").replace("\t", " ")
            lines.append(f"    {body[:90]:<90}  trace={log['trace_id'][:8]} span={log['span_id'][:8]}")
    return lines


def metrics_report(receiver: Any) -> list:
    totals: dict = {}
    for point in receiver.metrics():
        key = point["name"]
        if point["type"] == "histogram":
            count, total = totals.get(key, (0, 0.0))
            totals[key] = (count + point["count"], total + point["sum"])
        else:
            value = totals.get(key, 0)
            totals[key] = value + point["value"]
    if not totals:
        return ["metrics: none received"]
    lines = ["metrics (summed over every export)"]
    for name in sorted(totals):
        value = totals[name]
        if isinstance(value, tuple):
            count, total = value
            lines.append(f"    {name:<28} count {count:<6} mean {total / count if count else 0:.4g}")
        else:
            lines.append(f"    {name:<28} {value:g}")
    return lines


def summary(results: Sequence[Any], reports: Sequence[dict]) -> list:
    waits = sorted(r.duration_ms for r in results)
    lines = [f"{len(results)} invocations: caller waited median {waits[len(waits) // 2]:.1f} ms, max {waits[-1]:.1f} ms"]
    overheads = sorted(s["durationMs"] for r in reports for s in (r.get("spans") or []) if s.get("name") == "extensionOverhead")
    if overheads:
        lines.append(f"    export after the response (billed, not waited for): median {overheads[len(overheads) // 2]:.1f} ms, max {overheads[-1]:.1f} ms")
    return lines


OWN_PREFIX = "lambdawrap:"
MAX_OWN_MESSAGES = 20


def own_messages(lines: Sequence[tuple]) -> list:
    """lambdawrap's own messages in the output of the function and the extension, each once
    (with how often it came: every new environment's companion says it again), oldest first.
    A bad setting's warning, which only the companion logs, or a failed boot would otherwise
    show only with -v; a message's traceback, if any, stays in the full output."""
    counts: dict = {}
    for source, line in lines:
        if source in ("function", "extension") and line.startswith(OWN_PREFIX):
            counts[(source, line)] = counts.get((source, line), 0) + 1
    if not counts:
        return []
    out = ["lambdawrap's messages (-v prints all output, tracebacks included):"]
    for (source, line), count in list(counts.items())[:MAX_OWN_MESSAGES]:
        out.append(f"    [{source}] {line}" + (f" (x{count})" if count > 1 else ""))
    if len(counts) > MAX_OWN_MESSAGES:
        out.append(f"    ... and {len(counts) - MAX_OWN_MESSAGES} more")
    return out
