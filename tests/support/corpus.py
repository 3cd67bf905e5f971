"""The corpus of sample events others wrote (tests/events, sources in SOURCES.md), and the table of
what lambdawrap must make of each (tests/events/expected.json)."""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[1] / "events"
EXPECTED: dict = json.loads((CORPUS / "expected.json").read_text())

# What the companion adds to every invocation span besides the trigger's attributes.
COMPANION_ATTRIBUTES = frozenset(
    (
        "faas.invocation_id",
        "faas.coldstart",
        "cloud.resource_id",
        "aws.lambda.invoked_arn",
        "lambdawrap.trigger",
        "lambdawrap.proactive_init",
        "http.response.status_code",
        "error.type",
    )
)


def event_files() -> list:
    """Every event of the corpus, as paths relative to it."""
    return sorted(str(path.relative_to(CORPUS)) for path in CORPUS.glob("*/*.json"))


def load(name: str) -> object:
    """A fresh copy of a corpus event (tests may change it)."""
    return json.loads((CORPUS / name).read_text())


def of_kind(kind: str) -> list:
    """The corpus events the table says are of that kind."""
    return [name for name, expected in sorted(EXPECTED.items()) if expected["kind"] == kind]


def sample(kind: str) -> dict:
    """A corpus event of that kind: the first in the table that is an object (an EventBridge
    Pipe's batches of the same sources are arrays)."""
    return next(event for event in map(load, of_kind(kind)) if isinstance(event, dict))
