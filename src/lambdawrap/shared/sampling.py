"""The trace's sampling decision, made once, at the invocation span: every span of the trace
(the invocation's, the user's, the init span) follows it, so that nothing is exported whose
parent was dropped.

The samplers are the OpenTelemetry SDK's (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG) with
the same arithmetic; the SDK itself cannot be imported in the function's process (its import
costs the cold start), and tests/test_sampling.py holds the two to the same decisions.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

# As the SDK's TraceIdRatioBased: the lower 64 bits of the trace id against a bound.
TRACE_ID_LIMIT = (1 << 64) - 1


def ratio_bound(rate: float) -> int:
    return round(rate * (TRACE_ID_LIMIT + 1))


def make_sampler(name: str, ratio: float) -> "Callable[[int, Any], bool]":
    """`sampled(trace_id, remote_parent)` for a sampler name of the settings; the parent is
    None or anything with a `sampled` flag (a remote span context)."""
    bound = ratio_bound(ratio)
    roots = {
        "always_on": lambda trace_id: True,
        "always_off": lambda trace_id: False,
        "traceidratio": lambda trace_id: trace_id & TRACE_ID_LIMIT < bound,
    }
    if name.startswith("parentbased_"):
        root = roots[name[len("parentbased_") :]]

        def parent_based(trace_id: int, parent: Any) -> bool:
            # A remote parent's decision stands (ParentBased's defaults); a root decides alone.
            return parent.sampled if parent is not None else root(trace_id)

        return parent_based
    root_only = roots[name]
    return lambda trace_id, parent: root_only(trace_id)
