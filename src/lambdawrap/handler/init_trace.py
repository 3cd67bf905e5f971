"""The init span's context in the function's process, for what the handler's module does as it
loads: an outgoing call it makes, or a span it starts, with no other parent is the init span's
child, and the context it sends downstream is the init's.

The init span is the companion's to make, from the platform's report, once the init is over.
Its trace and id are chosen here, at the first such call, and go to the companion with each
span made in that trace (a `spans` record's `init_span`) and with the first invocation's start
(a call of the init may end after the init span is made), and the companion makes the init
span with them:
a trace of its own, the root of the calls the init made, linked to the first invocation. An
init that made none joins the first invocation's trace, as the companion has it. Not on
Managed Instances, where every worker loads the module and the environment has one init span,
nor in a SnapStart snapshot, whose every restored copy would export the ids it holds; nor in a
process forked as the module loads, whose calls after are not the init's.
"""

from __future__ import annotations

import os

from lambdawrap.shared.ids import new_span_id, new_trace_id

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from typing import Any, Callable


class InitContext:
    """The init span's ids, and whether its trace is sampled (the root sampler's decision)."""

    __slots__ = ("trace_id", "span_id", "sampled", "trace_hex", "span_hex")
    trace_state = ""  # a root's: nothing came with it

    def __init__(self, trace_id: int, span_id: int, sampled: bool) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled
        self.trace_hex = f"{trace_id:032x}"  # as spans name their trace
        self.span_hex = f"{span_id:016x}"


# The root sampler while the handler's module loads (None before the boot and after the load),
# and the init's context once a span asked for it: one per process, whichever thread asks first.
_loading: list = [None]
_chosen: dict = {}


def begin(sampled_as_root: "Callable[[int, Any], bool]") -> None:
    """The handler's module is about to load: spans made from here with no other parent are the
    init's."""
    _loading[0] = sampled_as_root


def end() -> None:
    """The handler's module has loaded (or the first invocation begins): a span made after with
    no other parent is a trace of its own, as before the boot."""
    _loading[0] = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=end)


def current() -> "InitContext | None":
    """The init span's context for a span made now with no other parent, while the handler's
    module loads; None after."""
    sampled_as_root = _loading[0]
    if sampled_as_root is None:
        return None
    chosen = _chosen.get("init")
    if chosen is None:
        trace_id = new_trace_id()
        # setdefault: threads of the module asking first at once all get the one kept.
        chosen = _chosen.setdefault("init", InitContext(trace_id, new_span_id(), sampled_as_root(trace_id, None) is True))
    return chosen


def chosen() -> "InitContext | None":
    """The init span's context while the handler's module loads, where a call or span of the
    init chose it; None otherwise (none is chosen here)."""
    return _chosen.get("init") if _loading[0] is not None else None


def chosen_ids() -> "list | None":
    """[trace, span] of the init span, in hex, where a call or span of the init chose them in a
    sampled trace (an unsampled one records nothing: its init span is not made)."""
    chosen = _chosen.get("init")
    return None if chosen is None or not chosen.sampled else [chosen.trace_hex, chosen.span_hex]


def ids_for(span: dict) -> "list | None":
    """[trace, span] of the init span, in hex, for a `spans` record holding `span` when `span` is
    in the init's trace (also one a call made at init ends after it); else None."""
    chosen = _chosen.get("init")
    if chosen is None or span.get("trace_id") != chosen.trace_hex:
        return None
    return [chosen.trace_hex, chosen.span_hex]
