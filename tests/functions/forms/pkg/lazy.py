"""Handlers the module makes when the runtime asks for them (PEP 562 module __getattr__), as
lazy-loading frameworks do: each name is asked for once, and the answer says how many times."""

ASKED = []


def __getattr__(name):
    ASKED.append(name)
    print(f"asked for {name}")
    if name == "handler":

        def handler(event, context):
            return {"form": "made on demand", "asked": ASKED, "event": event}

        return handler
    if name == "broken":
        raise ValueError("cannot make the handler")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
