"""The companion's garbage collection around init (init_gc): off while it imports, then on
again with init's objects frozen. Each case runs in a process of its own: freezing is for
the life of a process."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import gc, json, sys, threading
from lambdawrap.companion import init_gc
seen = {}
if sys.argv[1] == "off-already":
    gc.disable()
collections_at_pause = gc.get_stats()[0]["collections"]
init_gc.pause()
seen["enabled_while_paused"] = gc.isenabled()
# What an import leaves: objects that live on, and a few cycles.
kept = [{"n": i} for i in range(5000)]
for _ in range(100):
    cycle = []
    cycle.append(cycle)
del cycle
collections_before = gc.get_stats()[0]["collections"] - collections_at_pause
if sys.argv[1] == "threads":
    counts = []
    threads = [threading.Thread(target=lambda: counts.append(init_gc.resume())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen["acted"] = sum(1 for c in counts if c)
    seen["frozen"] = max(counts)
else:
    seen["frozen"] = init_gc.resume()
seen["again"] = init_gc.resume()
seen["enabled_after"] = gc.isenabled()
seen["freeze_count"] = gc.get_freeze_count()
seen["collections_while_paused"] = collections_before
# What comes after init is collected as before: a new cycle goes at the next collection.
class Node:
    pass
node = Node()
node.self = node
import weakref
ref = weakref.ref(node)
del node
gc.collect()
seen["new_cycle_collected"] = ref() is None
print(json.dumps(seen))
"""


def probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_init_runs_without_collections_then_its_objects_are_frozen_and_collection_resumes():
    seen = probe("default")
    assert seen["enabled_while_paused"] is False
    assert seen["collections_while_paused"] == 0
    # (objects of the permanent generation are still freed when nothing refers to them)
    assert seen["frozen"] >= 5000 and seen["freeze_count"] >= 5000
    assert seen["again"] == 0  # only the first resume acts
    assert seen["enabled_after"] is True
    assert seen["new_cycle_collected"] is True


def test_a_process_that_turned_collection_off_keeps_it_off():
    seen = probe("off-already")
    assert seen["frozen"] == 0 and seen["freeze_count"] == 0
    assert seen["enabled_after"] is False


def test_resume_from_many_threads_acts_once():
    seen = probe("threads")
    assert seen["acted"] == 1
    assert seen["enabled_after"] is True and seen["frozen"] >= 5000
