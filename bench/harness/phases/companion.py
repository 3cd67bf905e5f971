"""Figure 6, the companion: records sent over its Unix socket at stepped rates, a burst, and the
SHUTDOWN flush of a full buffer, delivered to a counting OTLP sink (bench/_sink.py)."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import TYPE_CHECKING, Callable

from harness.configurations import Stack
from harness.environments import companion_of, invoke_ok
from harness.measure import cpu_ns, log, proc_status, wait_cpu_quiet
from harness.plan import Plan

if TYPE_CHECKING:
    import _sink
    from lambdawrap.devtools.emulator import Emulator
    from lambdawrap.handler.channel import Channel


class _Capture:
    """A stand-in for the handler's Channel that keeps every record sent to it."""

    def __init__(self) -> None:
        self.records: list = []

    def send(self, record: dict) -> bool:
        self.records.append(dict(record))
        return True


def record_template() -> dict:
    """A real channel record, made by lambdawrap's own OpenTelemetry bridge: one user span, as
    `_Span.end()` sends it outside an invocation. (Invocation records are no good here: the companion turns one into a
    span only for a request id the platform announced with INVOKE, and a single environment
    cannot be invoked thousands of times a second.)"""
    from lambdawrap.handler import private_wrapt
    from lambdawrap.handler.otel_bridge import UserSpans
    from lambdawrap.shared.settings import Settings

    capture = _Capture()
    bridge = UserSpans(capture, lambda trace_id, parent: True, private_wrapt.load().FunctionWrapper, Settings().span_limits)
    span = bridge.tracer("orders").start_span("orders.lookup", attributes={"order.id": "42", "db.system": "dynamodb", "db.operation.name": "GetItem"})
    span.end()
    return capture.records[-1]


def make_record(template: dict, prefix: str, i: int) -> dict:
    """Record number i: the template's span with its own span id, ending now, tagged `bench.id` = prefix + i."""
    now = time.time_ns()
    span = dict(template["spans"][0], span_id=f"{i + 1:016x}", start_ns=now - 1_000_000, end_ns=now)
    span["attributes"] = dict(span.get("attributes") or {}, **{"bench.id": f"{prefix}{i:08d}"})
    return dict(template, spans=[span])


# Generous: on a busy 2-core machine an export can take seconds. Reached only when something is
# missing; otherwise every wait ends as soon as what it waits for has arrived.
ACCOUNTING_TIMEOUT_S = 60.0
FLUSH_EVERY_S = 3.0  # while waiting, an invocation this often: "end" flushing exports only in one


def export_until(emu: Emulator, event: dict, arrived: Callable[[float], bool]) -> None:
    """Invoke (with "end" flushing the companion exports only in an invocation) and wait up to
    FLUSH_EVERY_S for `arrived(timeout_s)`, again and again until it says yes or
    ACCOUNTING_TIMEOUT_S passed: what the companion was still reading at one flush goes at the next."""
    deadline = time.monotonic() + ACCOUNTING_TIMEOUT_S
    while True:
        invoke_ok(emu, event)
        left = deadline - time.monotonic()
        if arrived(min(FLUSH_EVERY_S, max(0.0, left))) or left <= 0:
            return


def account_for(emu: Emulator, event: dict, sink: _sink.CountingSink, channel: Channel, template: dict, prefix: str, sent: int, dropped_before: int) -> dict:
    """Make every record sent to `prefix` show up as delivered or as counted dropped, and say
    how many did. A record the socket refused is counted by the channel and reported with the
    next record that goes through, as a function's next record would carry it: one more record
    (the carrier, itself counted in `sent`, retried until the socket takes it) makes sure there
    is one. The companion exports the spans and the `lambdawrap.dropped` counter at the end of
    an invocation (export_until)."""
    state = {"sent": sent + 1, "carried": channel.send(make_record(template, prefix, sent))}

    def arrived(timeout_s: float) -> bool:
        if not state["carried"]:
            state["carried"] = channel.send(make_record(template, prefix, state["sent"]))
            state["sent"] += 1
            return False  # the next invocation exports what it carries
        return sink.wait_for(prefix, state["sent"], timeout_s, dropped_before=dropped_before)

    export_until(emu, event, arrived)
    sent = state["sent"]
    delivered, dropped = sink.count(prefix), sink.dropped_total() - dropped_before
    return {"sent": sent, "delivered": delivered, "companion_dropped": dropped, "unaccounted": sent - delivered - dropped, "unreported_by_channel": channel.dropped}


def phase_companion(stack: Stack, plan: Plan) -> dict:
    """Paced rates, then a burst, through one environment; then the SHUTDOWN flush, repeated."""
    from _sink import CountingSink
    from lambdawrap.handler.channel import Channel
    from lambdawrap.shared.framing import encode

    template = record_template()
    out: dict = {"record_bytes": len(encode(template)), "steps": [], "burst": {}, "shutdown": []}
    sink = CountingSink().start()
    try:
        env = {"LAMBDAWRAP_FLUSH": "end", "LAMBDAWRAP_BUFFER_MAX_SPANS": "1000000"}
        # Not frozen between invocations: the records are sent from outside while none runs.
        emu = stack.emulator("lambdawrap", "trivial.handler", sink.endpoint, env, timeout_s=30, freeze=False).start()
        try:
            invoke_ok(emu, stack.event)
            ext = companion_of(emu)
            pid = ext.process.pid
            sock_path = emu.config.env["LAMBDAWRAP_SOCKET"]
            # Paced: offered rate -> handler-side drops (socket full) and spans delivered.
            for rate in plan.rates:
                prefix = f"rate{rate}-"
                sink.watch(prefix)
                dropped_before = sink.dropped_total()
                reasons_before = dict(sink.dropped)
                total = int(rate * plan.rate_seconds)
                records = [make_record(template, prefix, i) for i in range(total)]
                channel = Channel(sock_path)
                refused = 0
                started = time.perf_counter()
                sent = 0
                # At most 2 ms worth at once: if the sender itself was descheduled, it does not
                # catch up in one burst (that would overflow the socket whatever the companion
                # does); the achieved rate says whether it kept the pace.
                max_burst = max(1, int(rate * 0.002))
                while sent < total:
                    due = min(total, int((time.perf_counter() - started) * rate) + 1, sent + max_burst)
                    while sent < due:
                        if not channel.send(records[sent]):
                            refused += 1
                        sent += 1
                    time.sleep(0.0005)
                elapsed = time.perf_counter() - started
                wait_cpu_quiet(pid, 0.2)
                step = {"offered_per_s": rate, "achieved_per_s": total / elapsed, "paced": total, "refused_by_socket": refused, "dropped_reasons": {}}
                step.update(account_for(emu, stack.event, sink, channel, template, prefix, total, dropped_before))
                step["dropped_reasons"] = {r: n - reasons_before.get(r, 0) for r, n in sink.dropped.items() if n != reasons_before.get(r, 0)}
                step["lossless"] = refused == 0 and step["delivered"] == step["sent"] and step["companion_dropped"] == 0 and step["achieved_per_s"] >= rate * 0.97
                out["steps"].append(step)
                log(f"  throughput {rate}/s: achieved {step['achieved_per_s']:.0f}/s, refused by the socket {refused}, delivered {step['delivered']}/{step['sent']}, lambdawrap.dropped {step['dropped_reasons'] or 0}, unaccounted {step['unaccounted']}")
                if not step["lossless"] and refused > total * 0.1:
                    break
            # Burst: a blocking sender, so the companion's ingest speed is the only limit.
            prefix = "burst-"
            sink.watch(prefix)
            frames = b"".join(encode(make_record(template, prefix, i)) for i in range(plan.burst))
            cpu_before = cpu_ns(pid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(sock_path)
                started = time.monotonic()
                s.sendall(frames)
                sent_at = time.monotonic()
                done_at = wait_cpu_quiet(pid, 0.3)
            cpu_s = (cpu_ns(pid) - cpu_before) / 1e9
            export_until(emu, stack.event, lambda timeout_s: sink.wait_for(prefix, plan.burst, timeout_s))
            delivered = sink.count(prefix)
            out["burst"] = {"records": plan.burst, "send_s": sent_at - started, "ingest_wall_s": max(done_at - started, 1e-3), "ingest_per_s": plan.burst / max(done_at - started, 1e-3), "companion_cpu_s": cpu_s, "cpu_us_per_record": cpu_s / plan.burst * 1e6, "delivered": delivered}
            log(f"  burst: {plan.burst} records ingested in {out['burst']['ingest_wall_s']:.2f} s ({out['burst']['ingest_per_s']:.0f}/s), {out['burst']['cpu_us_per_record']:.0f} µs CPU/record, delivered {delivered}")
        finally:
            emu.stop()
        # SHUTDOWN with a full buffer.
        for k in range(plan.shutdown_repeats):
            out["shutdown"].append(shutdown_flush(stack, plan, sink, template, k))
            log(f"  shutdown flush #{k + 1}: " + json.dumps({key: round(v, 1) if isinstance(v, float) else v for key, v in out["shutdown"][-1].items()}))
    finally:
        sink.stop()
    return out


def shutdown_flush(stack: Stack, plan: Plan, sink: _sink.CountingSink, template: dict, k: int) -> dict:
    """Fill a fresh companion's buffer with plan.shutdown_spans spans, stop the environment, and time the flush."""
    from lambdawrap.shared.framing import encode

    env = {"LAMBDAWRAP_FLUSH": "periodic,3600000", "LAMBDAWRAP_BUFFER_MAX_SPANS": str(max(20000, plan.shutdown_spans * 2))}
    emu = stack.emulator("lambdawrap", "trivial.handler", sink.endpoint, env, freeze=False).start()
    stopped = False
    try:
        invoke_ok(emu, stack.event)
        ext = companion_of(emu)
        pid = ext.process.pid
        prefix = f"shutdown{k}-"
        sink.watch(prefix)
        frames = b"".join(encode(make_record(template, prefix, i)) for i in range(plan.shutdown_spans))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(emu.config.env["LAMBDAWRAP_SOCKET"])
            s.sendall(frames)
            wait_cpu_quiet(pid, 0.3)
        buffered_before = sink.count(prefix)
        rss_before = proc_status(pid)
        marks: dict = {}

        def watch() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and ext.state != "ShutdownSent":
                time.sleep(0.0002)
            marks["shutdown"] = time.monotonic()
            while time.monotonic() < deadline and not ext.process.exited():
                time.sleep(0.001)
            marks["exit"] = time.monotonic()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        emu.stop()
        stopped = True
        watcher.join(15)
        delivered = sink.count(prefix)
        last = sink.last_arrival.get(prefix)
        return {
            "spans": plan.shutdown_spans,
            "exported_before_shutdown": buffered_before,
            "delivered": delivered,
            "flush_ms": (last - marks["shutdown"]) * 1000 if last else float("nan"),
            "exit_ms": (marks["exit"] - marks["shutdown"]) * 1000,
            "companion_rss_mb": rss_before.get("VmRSS", float("nan")),
        }
    finally:
        if not stopped:
            emu.stop()
