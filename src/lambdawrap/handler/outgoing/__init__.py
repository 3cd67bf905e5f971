"""Client spans for the function's outgoing calls (AWS SDK and HTTP clients), and the trace
context they carry downstream.

`install()` (called by the boot) registers one post-import hook per library LAMBDAWRAP_INSTRUMENT
names: a library costs nothing until the function imports it, and lambdawrap never imports it.
When the hook runs it patches the library (botocore through its own event system, the HTTP
clients with the private FunctionWrapper); a library whose shape we do not know (another major
version) is left alone with one warning.

  library    hooked on                  module
  botocore   botocore.handlers          botocore_hook (aws_services, aws_carriers)
  requests   requests                   requests_hook
  urllib3    urllib3.connectionpool     urllib3_hook
  urllib     urllib.request             urllib_request_hook (a span per urlopen, redirects inside)
             http.client                http_client_hook (direct users of http.client)
  httpx      httpx                      httpx_hook
  aiohttp    aiohttp                    aiohttp_hook
"""

from __future__ import annotations

import sys

from lambdawrap.shared.log import get_logger

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs the handler's cold start
    from types import ModuleType
    from typing import Any, Callable

    from lambdawrap.shared.inflight import InflightSlot
    from lambdawrap.shared.settings import Settings

# library -> ([(module whose import triggers a hook, its hook module, attributes its patch
# needs)], the OpenTelemetry instrumentation that makes ours step aside)
LIBRARIES = {
    "botocore": ([("botocore.handlers", "botocore_hook", ("BUILTIN_HANDLERS", "REGISTER_LAST"))], ("opentelemetry.instrumentation.botocore", "BotocoreInstrumentor")),
    "requests": ([("requests", "requests_hook", ("Session.send",))], ("opentelemetry.instrumentation.requests", "RequestsInstrumentor")),
    "urllib3": ([("urllib3.connectionpool", "urllib3_hook", ("HTTPConnectionPool.urlopen",))], ("opentelemetry.instrumentation.urllib3", "URLLib3Instrumentor")),
    "urllib": (
        [("urllib.request", "urllib_request_hook", ("OpenerDirector.open",)), ("http.client", "http_client_hook", ("HTTPConnection.request", "HTTPConnection.getresponse"))],
        ("opentelemetry.instrumentation.urllib", "URLLibInstrumentor"),
    ),
    "httpx": ([("httpx", "httpx_hook", ("HTTPTransport.handle_request", "AsyncHTTPTransport.handle_async_request"))], ("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor")),
    "aiohttp": ([("aiohttp", "aiohttp_hook", ("TraceConfig", "ClientSession.__init__"))], ("opentelemetry.instrumentation.aiohttp_client", "AioHttpClientInstrumentor")),
}


def install(settings: "Settings", sampled: "Callable[[int, Any], bool]", inflight: "InflightSlot", channel: "Any", function_wrapper: "Callable", when_imported: "Callable", on_error: "Callable[[str], None]") -> None:
    """Register the post-import hooks of the libraries the settings name (nothing else happens
    until one of them is imported: the recorder is made by the first hook that runs)."""
    shared: dict = {}
    function_wrapper = library_wrapper(function_wrapper)

    def hook_for(library: str, hook_module: str, needed: tuple) -> "Callable[[ModuleType], None]":
        def patch_library(module: "ModuleType") -> None:
            missing = [path for path in needed if not _has(module, path)]
            if missing:
                version = getattr(sys.modules.get(module.__name__.partition(".")[0]), "__version__", "?")
                get_logger().warning("lambdawrap: %s %s is not a version lambdawrap knows (no %s): its calls are not traced", library, version, ", ".join(missing))
                return
            if not shared:
                shared.update(_shared(settings, sampled, inflight, channel))
            _patch(library, hook_module, module, settings, function_wrapper, **shared)

        return patch_library

    for library in settings.instrument:
        for module_name, hook_module, needed in LIBRARIES[library][0]:
            when_imported(module_name, hook_for(library, hook_module, needed), on_error)


def library_wrapper(function_wrapper: type) -> type:
    """`function_wrapper`'s subclass for the library methods we wrap, which pickles and copies
    as the function it wraps does (wrapt's proxies refuse both): a function, or one reached
    through its class (`requests.Session.send`), by reference, copies of it being itself; a
    method bound to an instance (`session.send`) as the bound method, by its instance and name,
    a deep copy bound to a deep copy of the instance."""
    base_bound = type(function_wrapper(_nothing, _nothing).__get__(0, int))

    class BoundLibraryWrapper(base_bound):  # type: ignore[valid-type,misc]
        def __new__(cls, *args: "Any", **kwargs: "Any") -> "Any":
            if len(args) == 2 and not kwargs:
                # A bound method's own constructor call, type(method)(function, instance), as
                # weakref.WeakMethod rebuilds the method it refers to: wrapt makes its bound
                # wrappers with more, and refused this one with a TypeError of its own.
                return _method_of(*args)
            return super().__new__(cls, *args, **kwargs)

        def __init__(self, *args: "Any", **kwargs: "Any") -> None:
            if len(args) == 2 and not kwargs:
                return  # the method __new__ found, made already
            super().__init__(*args, **kwargs)

        def __get__(self, instance: "Any", owner: "Any" = None) -> "Any":
            # One read through a class and put back on it (see LibraryWrapper.__get__) reads
            # as itself through the class again, as a function does.
            if instance is None and self._self_instance is None:
                return self
            return super().__get__(instance, owner)

        def __reduce_ex__(self, protocol: int) -> "Any":
            instance = self._self_instance
            if instance is None:
                return _by_reference(self.__wrapped__)
            return getattr, (instance, self.__wrapped__.__name__)

        def __copy__(self) -> "Any":
            instance = self._self_instance
            return self if instance is None else getattr(instance, self.__wrapped__.__name__)

        def __deepcopy__(self, memo: dict) -> "Any":
            instance = self._self_instance
            if instance is None:
                return self
            import copy

            return getattr(copy.deepcopy(instance, memo), self.__wrapped__.__name__)

    class LibraryWrapper(function_wrapper):  # type: ignore[valid-type,misc]
        __bound_function_wrapper__ = BoundLibraryWrapper

        def __init__(self, *args: "Any", **kwargs: "Any") -> None:
            super().__init__(*args, **kwargs)
            self._self_through_class: dict = {}  # "read": what it reads as through its classes

        def __get__(self, instance: "Any", owner: "Any" = None) -> "Any":
            if instance is not None or owner is None:
                return super().__get__(instance, owner)
            # Reached through a class (`requests.Session.send`, `HTTPSConnection.request`): the
            # same object at each read and through every subclass, as the function it wraps is.
            # Code that saves a class's method and puts it back unless it is still there
            # (vcrpy's reset) took a new one each time for another's patch, and put ours back
            # over its own stub. Bound to the class that holds it, which lives as long as it
            # holds us: no subclass is kept alive.
            bound = self._self_through_class.get("read")
            if bound is None:
                home = _holder(self, owner)
                if home is None:
                    return super().__get__(None, owner)
                # setdefault: threads reading it first at once all get the one kept.
                bound = self._self_through_class.setdefault("read", super().__get__(None, home))
            return bound

        def __reduce_ex__(self, protocol: int) -> "Any":
            return _by_reference(self.__wrapped__)

        def __copy__(self) -> "Any":
            return self

        def __deepcopy__(self, memo: dict) -> "Any":
            return self

    for made, base in ((BoundLibraryWrapper, base_bound), (LibraryWrapper, function_wrapper)):
        made.__name__ = made.__qualname__ = base.__name__  # their reprs stay wrapt's
    return LibraryWrapper


def _method_of(function: "Any", instance: "Any") -> "Any":
    """`function` bound to `instance`: as reading it from the instance gives it (traced) where
    that is `function`, else as a method of its own."""
    import types  # the bootstrap's already

    try:
        bound = getattr(instance, function.__name__)
        if getattr(bound, "__func__", None) is function and getattr(bound, "__self__", None) is instance:
            return bound
    except Exception:  # noqa: BLE001 - the instance's own attribute code: the plain method then
        pass
    return types.MethodType(function, instance)


def _nothing(*args: "Any") -> None:
    return None


def _holder(wrapper: "Any", owner: "Any") -> "Any":
    """The class in `owner`'s MRO whose own attributes hold `wrapper`, or None."""
    name = getattr(wrapper.__wrapped__, "__name__", None)
    for klass in getattr(owner, "__mro__", ()):
        held = getattr(klass, "__dict__", {})
        if (name is not None and held.get(name) is wrapper) or any(value is wrapper for value in list(held.values())):
            return klass
    return None


def _by_reference(function: "Any") -> tuple:
    """A function pickles as the name its module holds it under, looked up again when unpickled
    (pickle's own check, that the name leads to the object saved, cannot hold for a method
    reached through its class, each access making a new bound wrapper, nor for a function
    wrapped where another module imported it): a method as its class's attribute, the class
    pickled by reference, a function as its module's. The pickle names only builtins and the
    library: no module a file of the function's may stand for (pkgutil's resolve_name did)."""
    owner_path, _, name = function.__qualname__.rpartition(".")
    owner: "Any" = _ModuleImport(function.__module__)
    if owner_path:
        owner = sys.modules[function.__module__]
        for part in owner_path.split("."):
            owner = getattr(owner, part)
    return getattr, (owner, name)


class _ModuleImport:
    """Pickles as the import of the module `name`, by the builtin __import__."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self) -> tuple:
        # A fromlist gives the module itself, not its package; `__name__`, had by every module,
        # imports nothing more.
        return __import__, (self.name, None, None, ("__name__",))


def _shared(settings: "Settings", sampled: "Callable[[int, Any], bool]", inflight: "InflightSlot", channel: "Any") -> dict:
    from lambdawrap.handler.outgoing.propagation import Propagation
    from lambdawrap.handler.outgoing.recorder import Recorder
    from lambdawrap.handler.redact import url_query_keys

    query_keys = url_query_keys(settings.redact_keys)
    return {
        "recorder": Recorder(sampled, inflight, channel, settings.own_endpoints, settings.instrument_exclude_hosts, query_keys),
        "propagation": Propagation(settings.propagators),
        "query_keys": query_keys,
    }


def _has(module: "ModuleType", path: str) -> bool:
    target: "Any" = module
    for part in path.split("."):
        target = getattr(target, part, None)
        if target is None:
            return False
    return True


def _patch(library: str, hook_module: str, module: "ModuleType", settings: "Settings", function_wrapper: "Callable", recorder: "Any", propagation: "Any", query_keys: frozenset) -> None:
    import importlib

    hook = importlib.import_module(f"lambdawrap.handler.outgoing.{hook_module}")
    if library == "botocore":
        hook.patch(module, recorder, propagation, settings.propagate_aws)
        return
    from lambdawrap.handler.outgoing.http_calls import HttpCalls

    hook.patch(module, HttpCalls(library, recorder, propagation, query_keys, LIBRARIES[library][1]), function_wrapper)
