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
