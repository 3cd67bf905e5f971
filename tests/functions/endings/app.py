"""How an invocation ends, as a user's code breaks it: exceptions of every shape, results the
runtime cannot (or can only oddly) serialize. Each event's `do` names one; the differential
harness runs them with and without the layer."""

import dataclasses
import datetime
import decimal
import sys


@dataclasses.dataclass(frozen=True)
class FrozenError(Exception):
    """A frozen dataclass: every attribute assignment raises, __traceback__'s too."""

    code: int


class FieldsError(Exception):
    """Its fields looked up in a dict, as some API clients' errors are: any other name a KeyError."""

    def __init__(self, fields):
        super().__init__(fields["message"])
        self.fields = fields

    def __getattr__(self, name):
        return self.__dict__["fields"][name]


class Loud(tuple):
    # awslambdaric's encoder (simplejson, namedtuple_as_object) calls a tuple subclass's _asdict.
    def _asdict(self):
        print("serializing", self[0])
        return {"loud": self[0]}


class LoudDecimal(decimal.Decimal):
    def __str__(self):
        print("rendering a decimal")
        return decimal.Decimal.__str__(self)


class LoudMapping(dict):
    # A dict whose lookups are the function's code (an attribute-access dict, one that records
    # what was read): the runtime's encoder reads it through items().
    def __contains__(self, key):
        print("looking for", key)
        return dict.__contains__(self, key)

    def __getitem__(self, key):
        print("reading", key)
        return dict.__getitem__(self, key)


# One exception object, raised by every invocation that fails so (a module's ready-made error):
# each raise continues the traceback it carries from the last.
NOT_FOUND = LookupError("no such order")


def _chain(depth):
    try:
        if depth == 0:
            raise KeyError("bottom")
        _chain(depth - 1)
    except Exception as exc:
        raise RuntimeError(f"level {depth}") from exc


def handler(event, context):
    do = event.get("do", "echo")
    if do == "echo":
        return event
    # Exceptions the runtime reports (no reset)
    if do == "raise_frozen":
        raise FrozenError(7)
    if do == "raise_fields":
        raise FieldsError({"message": "no such order", "code": 404})
    if do == "raise_group":
        if sys.version_info < (3, 11):
            raise ValueError("no exception groups before 3.11")
        raise ExceptionGroup("several", [ValueError("one"), TypeError("two"), ExceptionGroup("inner", [KeyError("three")])])  # noqa: F821
    if do == "raise_noted":
        error = ValueError("with notes")
        if hasattr(error, "add_note"):
            error.add_note("a note")
            error.add_note("and another")
        raise error
    if do == "raise_chain":
        _chain(event.get("depth", 30))
    if do == "raise_huge":
        raise ValueError("m" * event["size"])
    if do == "raise_stop_iteration":
        raise StopIteration("done")
    if do == "raise_again":
        raise NOT_FOUND
    # Results the runtime serializes (or cannot)
    if do == "decimal":
        return {"price": decimal.Decimal("19.99"), "nan": decimal.Decimal("NaN")}
    if do == "datetime":
        return {"at": datetime.datetime(2026, 12, 3)}
    if do == "set":
        return {"tags": {"a"}}
    if do == "nan":
        return {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}
    if do == "circular":
        loop = {}
        loop["self"] = loop
        return loop
    if do == "deep":
        value = []
        for _ in range(event.get("depth", 100_000)):
            value = [value]
        return value
    if do == "loud":
        return {"statusCode": 200, "body": Loud(("x",))}
    if do == "loud_decimal":
        return {"statusCode": LoudDecimal("201")}
    if do == "loud_mapping":
        return LoudMapping(statusCode=202, body="accepted")
    raise NotImplementedError(do)
