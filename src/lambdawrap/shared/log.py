"""lambdawrap's own messages: one logger name, each kind of failure logged once and counted.

`logging` is imported on first use only: code that runs before the companion's first /next,
and the handler's boot, sit on the function's cold-start path.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging

LOGGER_NAME = "lambdawrap"


def get_logger(name: str = LOGGER_NAME) -> "logging.Logger":
    import logging

    return logging.getLogger(name)


class Failures:
    """Counts our own failures by kind and logs each kind once, so a bug never floods the
    function's log (which the user pays for). `record` is called from `except` blocks."""

    def __init__(self, logger_name: str = LOGGER_NAME) -> None:
        self.count = 0
        self.by_kind: dict = {}
        self._logger_name = logger_name

    def record(self, kind: str, detail: str = "", exc_info: bool = True) -> None:
        self.count += 1
        seen = kind in self.by_kind
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        if not seen:
            message = "lambdawrap: %s%s (logged once; the function is unaffected)"
            try:
                get_logger(self._logger_name).warning(message, kind, f": {detail}" if detail else "", exc_info=exc_info)
            except Exception:  # noqa: BLE001 - the line goes through the function's own handlers,
                # and awslambdaric's lets what formatting raises through: into the function's code
                pass


class OncePerMessage:
    """A logging filter that lets each distinct message through once: the SDK's exporters are
    built per signal and repeat a configuration warning three times (and a failing export
    repeats its error at every flush); the log is the function's, and costs the user."""

    MAX_REMEMBERED = 512

    def __init__(self) -> None:
        self._seen: set = set()

    def filter(self, record: object) -> bool:
        try:
            key = (record.name, record.levelno, _without_figures(record))  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - a record we cannot format is let through as is
            return True
        if key in self._seen:
            return False
        if len(self._seen) < self.MAX_REMEMBERED:
            self._seen.add(key)
        return True


def _without_figures(record: "logging.LogRecord") -> str:
    """The record's message with its float arguments as 0: the exporters' retry warning names
    its back-off, jittered ("retrying in 1.06s", then "2.18s"), and a collector down for an
    hour would otherwise repeat it at every retry of every flush, each line new."""
    args = record.args
    if isinstance(args, tuple) and any(isinstance(arg, float) for arg in args):
        try:
            return str(record.msg) % tuple(0.0 if isinstance(arg, float) else arg for arg in args)
        except Exception:  # noqa: BLE001 - a message that takes no zero: as it is
            pass
    return record.getMessage()


def configure_process_logging(level: str = "warning") -> None:
    """The companion's logging: plain lines on stderr (the platform makes each an `extension`
    log record), every distinct message once. `level` is for lambdawrap's own messages; the
    libraries' stay at warning or above, whatever it is: botocore's debug output carries the
    secrets it fetches, whole."""
    import logging
    import sys

    own = logging.getLevelName(level.upper())
    own = own if isinstance(own, int) else logging.WARNING
    logging.basicConfig(level=max(own, logging.WARNING), format="%(message)s", stream=sys.stderr)
    logging.getLogger(LOGGER_NAME).setLevel(own)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, OncePerMessage) for f in handler.filters):
            handler.addFilter(OncePerMessage())
