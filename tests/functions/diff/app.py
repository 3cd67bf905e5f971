"""One function that does what each event asks: the differential harness's many scenarios in
one execution environment."""

import asyncio
import base64
import json
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import observe

logger = logging.getLogger()
logger.setLevel(logging.INFO)
LOADED_AT = "module level ran"
DEEPEST = 0


class UnprintableError(Exception):
    def __str__(self):
        raise RuntimeError("no str for you")


class CustomError(Exception):
    pass


class _HidesModule(type):
    # As some proxying or lazy-loading metaclasses do: the class's __module__ cannot be read.
    def __getattribute__(cls, name):
        if name == "__module__":
            raise AttributeError("no __module__ here")
        return super().__getattribute__(name)


class ModuleHiddenError(Exception, metaclass=_HidesModule):
    pass


def _fib(n):
    return n if n < 2 else _fib(n - 1) + _fib(n - 2)


def _square(x):
    return x * x


def handler(event, context):
    if not isinstance(event, dict):
        return {"type": type(event).__name__, "value": event}
    do = event.get("do", "echo")
    if do == "echo":
        return event
    if do == "observe":
        return observe.observe()
    if do == "http":
        return {"statusCode": event.get("status", 200), "headers": {"content-type": "text/plain"}, "body": event.get("body", "ok")}
    if do == "bytes":
        return b"\x00\x01binary\xff"
    if do == "none":
        return None
    if do == "string":
        return "just a string"
    if do == "raise":
        raise ValueError("bad input: " + str(event.get("detail", "none")))
    if do == "raise_custom":
        raise CustomError("custom \u00e9\u00e8 \U0001F600")
    if do == "raise_chained":
        try:
            {}["missing"]
        except KeyError as inner:
            raise RuntimeError("while looking it up") from inner
    if do == "raise_unprintable":
        raise UnprintableError()
    if do == "raise_module_hidden":
        raise ModuleHiddenError("its class hides its module")
    if do == "recursion_error":
        def down(n):
            return down(n + 1)
        return down(0)
    if do == "keyboard_interrupt":
        raise KeyboardInterrupt()
    if do == "sys_exit":
        sys.exit(event.get("code", 0))
    if do == "os_exit":
        os._exit(3)
    if do == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if do == "timeout":
        time.sleep(60)
    if do == "busy_timeout":
        while True:
            _fib(20)
    if do == "oom":
        blocks = []
        while True:
            blocks.append(bytearray(16 * 1024 * 1024))
            time.sleep(0.001)
    if do == "big_response":
        return "x" * event["size"]
    if do == "unserializable":
        return {"when": object()}
    if do == "print":
        for i in range(event.get("lines", 3)):
            print(f"line {i} of {event.get('lines', 3)}")
        sys.stderr.write("to stderr\n")
        logger.info("a logging record %s", event.get("tag", "-"))
        return {"printed": event.get("lines", 3)}
    if do == "log_records":
        # Records of several lines: one telemetry record each on the runtime's log channel.
        logger.warning("two\nlines %s", event.get("tag", "-"))
        try:
            {}[event.get("tag", "-")]
        except KeyError:
            logger.exception("caught\nit")
        return {"logged": 2}
    if do == "flood":
        chunk = "y" * 1000
        for _ in range(event.get("kilobytes", 1000)):
            print(chunk)
        return {"flooded": event.get("kilobytes", 1000)}
    if do == "binary_output":
        sys.stdout.buffer.write(b"\xff\xfe not utf-8 \x00\n")
        sys.stdout.flush()
        return {"ok": True}
    if do == "threads":
        with ThreadPoolExecutor(4) as pool:
            return {"squares": list(pool.map(_square, range(10)))}
    if do == "asyncio":
        async def work():
            results = await asyncio.gather(*(asyncio.sleep(0.001, result=i) for i in range(5)))
            return list(results)
        return {"gathered": asyncio.run(work())}
    if do == "multiprocessing":
        import multiprocessing
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(2) as pool:
            return {"squares": pool.map(_square, range(6))}
    if do == "handler_as_value":
        # The handler handed around as a value: to a process pool (pickled by reference, the
        # workers call it), and copied, as a function is (to itself).
        import copy
        import pickle
        from concurrent.futures import ProcessPoolExecutor
        import multiprocessing
        if "n" in event:
            return event["n"] * 2
        this = sys.modules[__name__].handler
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
            doubled = list(pool.map(this, [{"do": do, "n": n} for n in range(4)], [None] * 4))
        return {"doubled": doubled, "copy": copy.copy(this) is this, "deepcopy": copy.deepcopy(this) is this, "pickled": pickle.loads(pickle.dumps(this)) is this, "deepcopy in a dict": copy.deepcopy({"h": this})["h"] is this, "repr": repr(this), "str": str(this), "name": [this.__name__, this.__qualname__, this.__module__]}
    if do == "fork_exit":
        pid = os.fork()
        if pid == 0:
            sys.exit(event.get("code", 0))
        _, status = os.waitpid(pid, 0)
        return {"child_status": os.waitstatus_to_exitcode(status)}
    if do == "background_thread":
        threading.Thread(target=lambda: (time.sleep(0.05), print("from a thread after return")), daemon=True).start()
        return {"started": True}
    if do == "recurse_deep":
        # Calls itself through the module attribute until Python refuses: as deep with the layer
        # as without (the wrapper is the runtime's, not the module's name), and the module's
        # name is the function's own.
        global DEEPEST
        depth = event.get("depth", 0)
        DEEPEST = depth
        if depth:
            return sys.modules[__name__].handler(dict(event, depth=depth + 1), context)
        try:
            sys.modules[__name__].handler(dict(event, depth=1), context)
        except RecursionError:
            pass
        return {"deep": DEEPEST > 600, "handler_type": type(sys.modules[__name__].handler).__name__}
    if do == "recurse":
        # Calls itself through the module attribute, as some functions do.
        depth = event.get("depth", 3)
        if depth <= 0:
            if event.get("raise"):
                raise ValueError("at the bottom")
            return {"bottom": True}
        return sys.modules[__name__].handler(dict(event, depth=depth - 1), context)
    if do == "context":
        return {"remaining_positive": context.get_remaining_time_in_millis() > 0, "function_name": context.function_name, "memory": context.memory_limit_in_mb}
    if do == "count_remaining_calls":
        # As a test double does: the context's method replaced by one that counts its calls.
        own = context.get_remaining_time_in_millis

        def counted():
            REMAINING_CALLS.append(1)
            return own()

        context.get_remaining_time_in_millis = counted
        return {"remaining_positive": context.get_remaining_time_in_millis() > 0}
    if do == "remaining_calls":
        return {"calls": len(REMAINING_CALLS)}
    if do == "base64":
        return {"decoded": base64.b64decode(event["data"]).decode()}
    if do == "env_and_path":
        return {"PYTHONPATH": os.environ.get("PYTHONPATH"), "first_path": sys.path[:3]}
    if do == "module_state":
        return {"loaded": LOADED_AT}
    if do == "close_fds_and_open":
        # As a daemonising library does: every descriptor closed by number, then its own
        # opened, which take the lowest numbers free.
        os.closerange(3, 1024)
        import socket

        KEPT[:] = [("file", os.open(os.devnull, os.O_RDONLY)) for _ in range(4)]
        KEPT.extend(("pair", socket.socketpair()) for _ in range(2))
        return {"kept": len(KEPT)}
    if do == "check_fds":
        states = []
        for kind, kept in KEPT:
            if kind == "file":
                try:
                    os.fstat(kept)
                    states.append("open")
                except OSError:
                    states.append("closed")
            else:
                ends = []
                for end in kept:
                    end.setblocking(False)
                    try:
                        ends.append("received %d bytes" % len(end.recv(65536)))
                    except BlockingIOError:
                        ends.append("nothing received")
                    except OSError as exc:
                        ends.append(type(exc).__name__)
                states.append(ends)
        return {"states": states}
    raise NotImplementedError(do)


KEPT = []
REMAINING_CALLS = []
