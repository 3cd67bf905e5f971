import functools
import inspect


def handler(event, context):
    return {"form": "pkg.mod.handler", "event": event}


class Handler:
    def __call__(self, event, context):
        return {"form": "callable instance", "event": event}


instance = Handler()


def _greet(greeting, event, context):
    return {"form": "partial", "greeting": greeting}


partial = functools.partial(_greet, "hello")


async def coroutine(event, context):
    return {"form": "async"}


def introspect(event, context):
    # What frameworks read of a handler: its name, signature and module.
    import sys
    handler_attr = sys.modules[__name__].introspect
    return {
        "name": handler_attr.__name__,
        "qualname": handler_attr.__qualname__,
        "module": handler_attr.__module__,
        "signature": str(inspect.signature(handler_attr)),
        "doc": handler_attr.__doc__,
    }


def kwargs_only(event=None, context=None, **extra):
    return {"form": "kwargs", "extra": sorted(extra)}


def _as_value(name, event):
    # The handler as a value, as the module holds it: pickled with every protocol and called
    # (as a process pool's worker would), copied; what comes back must behave as without the layer.
    import copy
    import pickle
    import sys

    if event.get("probe"):
        return {"probe": name}
    this = getattr(sys.modules[__name__], name)
    report = {"pickled, then called": [pickle.loads(pickle.dumps(this, protocol))({"probe": True}, None) for protocol in range(pickle.HIGHEST_PROTOCOL + 1)]}
    for how, make in (("copy", copy.copy), ("deepcopy", copy.deepcopy)):
        made = make(this)
        report[how] = {"is the handler": made is this, "called": made({"probe": True}, None)}
    return report


def _aliased_impl(event, context):
    return _as_value("aliased", event)


aliased = _aliased_impl  # the handler is another name for a function


class _Holder:
    @staticmethod
    def run(event, context):
        return _as_value("static", event)

    def __init__(self):
        self.calls = 0

    def __call__(self, event, context):
        self.calls += 1
        return _as_value("valued_instance", event)


static = _Holder.run
valued_instance = _Holder()


def valued_function(event, context):  # the handler under its own name
    return _as_value("valued_function", event)


class _Response(dict):
    def __init__(self, form):
        super().__init__(form=form)


class Reply(_Response):
    """A class as the handler: the runtime calls it, and its instance (a dict) is the response.
    Its code names it: super(Reply, self) and type(self) is Reply need the module's Reply to
    be the class itself."""

    def __init__(self, event, context):
        super(Reply, self).__init__("class")
        self["type_is_the_class"] = type(self) is Reply
        self["event"] = event


class _StrictLookups:
    """A callable instance whose class answers unknown attributes itself, with a KeyError (a
    config object, a record of fields): asking it for an attribute is running the function's
    code, and what it raises is no AttributeError."""

    def __getattr__(self, name):
        raise KeyError(name)

    def __call__(self, event, context):
        return {"form": "strict lookups", "event": event}


strict_lookups = _StrictLookups()


class _ConfigBacked:
    """A callable instance whose every attribute is read from its configuration: a name it does
    not hold raises KeyError, __class__ included (an object the runtime only calls)."""

    _config = {"__call__": None}

    def __getattribute__(self, name):
        if name == "__call__":
            return object.__getattribute__(self, name)
        return type(self)._config[name]

    def __call__(self, event, context):
        return {"form": "config backed", "event": event}


config_backed = _ConfigBacked()
