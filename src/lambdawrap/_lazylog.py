"""Loggers without importing `logging` up front.

Code that runs before the companion's first /next (and the handler's boot) sits on the
function's cold-start path; `logging` costs a few ms to import and is only needed on the
first message."""

from __future__ import annotations


def get_logger(name: str = "lambdawrap.companion"):  # noqa: ANN201 - logging.Logger, lazily
    import logging

    return logging.getLogger(name)
