"""The promise, tested the way users break it: every scenario runs without and with the layer,
and the caller and the function must see exactly the same (tests/support/differential.py);
with the layer, every invocation and init is accounted for exactly once at the collector.

Scenario names that end in a bug's short name reproduce that bug (issue 11).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.differential import Group, Scenario, run_group
from support.stack import LAYER
from support.python_versions import every_python

EVENTS = Path(__file__).resolve().parent.parent / "examples" / "events"
SIX_MB = 6 * 1024 * 1024
TRACEPARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT_SPAN = "00f067aa0ba902b7"


def sample(name: str, **changes) -> dict:
    event = json.loads((EVENTS / f"{name}.json").read_text())
    event.update(changes)
    return event


def do(name: str, action: str, **fields) -> Scenario:
    return Scenario(name, {"do": action, **fields})


def with_traceparent(event: dict) -> dict:
    event["headers"] = dict(event.get("headers") or {}, traceparent=f"00-{TRACEPARENT_TRACE}-{TRACEPARENT_SPAN}-01")
    return event


BEHAVIOUR = Group(
    "behaviour",
    "diff",
    scenarios=[
        do("echo", "echo", value=[1, "two", {"three": 3.0}]),
        do("what the process sees", "observe"),
        do("sys.path and PYTHONPATH", "env_and_path"),
        do("module state", "module_state"),
        do("context object", "context"),
        do("the context's method replaced by the handler - context_method_called_after", "count_remaining_calls"),
        do("and its calls counted - context_method_called_after", "remaining_calls"),
        do("http answer", "http", status=201, body="created"),
        do("http 503 answer", "http", status=503),
        do("bytes result", "bytes"),
        do("None result", "none"),
        do("string result", "string"),
        do("prints to stdout and stderr and logging", "print", lines=5, tag="x"),
        do("binary output", "binary_output"),
        do("thread pool", "threads"),
        do("asyncio", "asyncio"),
        do("multiprocessing pool (fork)", "multiprocessing"),
        do("the handler pickled and copied - handler_not_picklable", "handler_as_value"),
        do("fork child exits 0 - fork_child_reports", "fork_exit", code=0),
        do("fork child exits 3", "fork_exit", code=3),
        do("background thread prints after return", "background_thread"),
        do("handler calls itself - recursive_handler", "recurse", depth=3),
        do("handler calls itself to the limit, its module's own - recursion_through_its_name", "recurse_deep"),
        do("base64 work", "base64", data="aGVsbG8="),
        Scenario("list event", [1, 2, 3]),
        Scenario("string event", "just text"),
        Scenario("number event", 42),
        Scenario("null event", None),
        Scenario("event that is not JSON", raw=b"{not json"),
        Scenario("deeply nested event", raw=b"[" * 5000 + b"]" * 5000),
        Scenario("event just under 6 MB", {"do": "echo", "blob": "e" * (SIX_MB - 200)}),
        Scenario("event over 6 MB", raw=b'{"blob": "' + b"e" * (SIX_MB + 10) + b'"}'),
        Scenario("API Gateway event with traceparent", with_traceparent(sample("apigw-rest")), parent=f"{TRACEPARENT_TRACE}-{TRACEPARENT_SPAN}", attributes={"faas.trigger": "http"}),
        Scenario("SQS batch", sample("sqs"), attributes={"faas.trigger": "pubsub"}),
        Scenario("X-Ray header sampled", {"do": "echo"}, trace_header="Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1", parent="5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8"),
        do("raise ValueError", "raise", detail="field x"),
        do("raise a custom error, unicode message", "raise_custom"),
        do("raise from another error", "raise_chained"),
        do("error whose __str__ raises", "raise_unprintable"),
        do("RecursionError", "recursion_error"),
        do("response just under 6 MB", "big_response", size=SIX_MB - 100),
        do("result JSON cannot encode - post_return_failure", "unserializable"),
        do("response over 6 MB - post_return_failure", "big_response", size=SIX_MB + 1000),
        do("after a reset, echo", "echo", value="again"),
        do("KeyboardInterrupt", "keyboard_interrupt"),
        do("sys.exit(0) in the handler", "sys_exit", code=0),
        do("sys.exit(1) in the handler", "sys_exit", code=1),
        do("and echo once more", "echo", value="last"),
        do("closes every descriptor and opens its own - foreign_descriptor", "close_fds_and_open"),
        do("its descriptors are its own - foreign_descriptor", "check_fds"),
        do("and still - foreign_descriptor", "check_fds"),
    ],
)

CRASHES = Group(
    "crashes",
    "diff",
    timeout_s=2.0,
    memory_mb=256,
    scenarios=[
        do("warm up", "echo"),
        do("sleeps past the timeout - timeout_keeps_trace", "timeout"),
        Scenario("timeout of a traced HTTP call - timeout_keeps_trace", dict(with_traceparent(sample("apigw-http")), do="timeout"), parent=f"{TRACEPARENT_TRACE}-{TRACEPARENT_SPAN}", attributes={"faas.trigger": "http", "error.type": "Sandbox.Timedout", "faas.coldstart": True}),
        do("busy loop past the timeout", "busy_timeout"),
        do("os._exit - crash_keeps_trace", "os_exit"),
        do("SIGKILL itself", "kill"),
        do("out of memory", "oom"),
        do("recovers", "echo"),
    ],
)

INIT_FAILURES = [
    Group(f"init fails: {name} - failed_init_visible", folder, handler=handler, scenarios=[do("first", "echo"), do("retried", "echo")])
    for name, folder, handler in [
        ("import error", "init_import_error", "app.handler"),
        ("syntax error", "init_syntax_error", "app.handler"),
        ("raise at import", "init_raise", "app.handler"),
        ("sys.exit at import", "init_exit", "app.handler"),
        ("handler missing", "no_handler", "app.handler"),
        ("module missing", "no_handler", "missing.handler"),
        ("malformed handler", "no_handler", "app"),
        # A module the interpreter had imported before the runtime looked (the standard string):
        # lambdawrap's hook ran while site.py was still importing the boot, and took it out of
        # sys.modules under site's feet: "Error in sitecustomize ... KeyError" in the log.
        ("a module already imported - handler_module_preloaded", "no_handler", "string.handler"),
        ("a module __getattr__ cannot make the handler - lazy_handler_asked_twice", "forms", "pkg.lazy.broken"),
        ("a module __getattr__ has no such handler - lazy_handler_asked_twice", "forms", "pkg.lazy.missing"),
    ]
]

FORMS = [
    Group(f"handler form {handler}", "forms", handler=handler, scenarios=[do("call", "echo"), Scenario("traced call", with_traceparent(sample("apigw-http")), parent=f"{TRACEPARENT_TRACE}-{TRACEPARENT_SPAN}")])
    for handler in ("pkg/mod.handler", "pkg.mod.handler", "pkg.mod.instance", "pkg.mod.partial", "pkg.mod.coroutine", "pkg.mod.introspect", "pkg.mod.kwargs_only", "my-function.handler", "pkg.mod.valued_function", "pkg.mod.aliased", "pkg.mod.static", "pkg.mod.valued_instance", "pkg.lazy.handler", "pkg.mod.Reply", "pkg.mod.strict_lookups", "pkg.mod.config_backed", "pkg.classy.Reply")
]

OWN_WRAPT = Group("the function bundles its own wrapt - own_wrapt", "own_wrapt", scenarios=[do("import wrapt", "echo")])

OWN_LIBRARIES = [
    OWN_WRAPT,
    Group("own SDK provider set at import", "otel_sdk", env={"SET_PROVIDER": "import"}, scenarios=[do("spans", "echo"), do("spans again", "echo")]),
    Group("own SDK provider set in the handler - provider_in_handler", "otel_sdk", env={"SET_PROVIDER": "handler"}, scenarios=[do("spans", "echo"), do("spans again", "echo")]),
    # The function's protobuf 3 wants its C++ implementation: the companion's protobuf has none,
    # failed to import, and nothing was exported.
    Group("own protobuf's implementation chosen - protobuf_implementation", "diff", env={"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "cpp"}, scenarios=[do("echo", "echo"), do("raise", "raise")]),
    Group("OpenTelemetry API without an SDK", "otel_sdk", scenarios=[do("spans", "echo")], user_spans=("orders.lookup", "db.query")),
    Group("OpenTelemetry API, odd values - bridge_never_raises", "otel_api", scenarios=[do("spans", "echo"), do("again", "echo")], user_spans=("checkout.total", "decorated.step", "used.step")),
    Group(
        "Powertools",
        "powertools",
        env={"POWERTOOLS_METRICS_NAMESPACE": "Shop"},
        scenarios=[
            Scenario("a route", sample("apigw-rest", path="/orders/42", resource="/orders/{order_id}", pathParameters={"order_id": "42"})),
            Scenario("a route that raises", sample("apigw-rest", path="/orders/boom", resource="/orders/{order_id}", pathParameters={"order_id": "boom"})),
        ],
    ),
]

# A sitecustomize of the function's own (on the PYTHONPATH it sets) that raises: the interpreter
# says so in two lines and forgets the module. Chained from lambdawrap's, it was lambdawrap's
# warning with a traceback of lambdawrap's frames, and the half-run module stayed in sys.modules.
OWN_SITECUSTOMIZE = Group(
    "the function's own sitecustomize raises - own_sitecustomize_raises",
    "own_sitecustomize",
    env={"PYTHONPATH": str(Path(__file__).resolve().parent / "functions" / "own_sitecustomize" / "vendor")},
    scenarios=[do("what came of it", "echo"), do("again", "echo")],
)
OWN_LIBRARIES.append(OWN_SITECUSTOMIZE)
# A package of the function's own named `lambdawrap`, its handler in it: the layer's package,
# imported first, stood in for it, and every invocation failed (Runtime.ImportModuleError).
# The layer steps aside, with one warning; the platform's word still accounts for each one
# (a success as record_missing: nothing in the function's process tells of it).
OWN_LIBRARIES.append(Group("the function's own package is named lambdawrap - own_lambdawrap", "own_lambdawrap", handler="lambdawrap.app.handler", warned=("lambdawrap of its own",), scenarios=[Scenario("echo", {"do": "echo"}, dropped_as="record_missing"), do("raise", "raise")]))

BAD_SETTINGS = {
    "LAMBDAWRAP_DISABLED": "maybe",
    "LAMBDAWRAP_LOG_LEVEL": "loud",
    "LAMBDAWRAP_FLUSH": "sometimes",
    "LAMBDAWRAP_FLUSH_BUDGET_MS": "lots",
    "LAMBDAWRAP_BUFFER_MAX_SPANS": "-3",
    "LAMBDAWRAP_MAX_SPANS_PER_INVOCATION": "many",
    "LAMBDAWRAP_CAPTURE_PAYLOAD": "perhaps",
    "LAMBDAWRAP_PROACTIVE_INIT_MS": "soon",
    "LAMBDAWRAP_SECRETS": "not a declaration",
    "LAMBDAWRAP_SECRETS_TIMEOUT_MS": "-1",
    "LAMBDAWRAP_SECRETS_TTL": "forever",
    "LAMBDAWRAP_SECRETS_REQUIRED": "sure",
    "LAMBDAWRAP_SECRETS_PORT": "99999",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon",
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "weekly",
    # (its argument is read beside a ratio sampler only, as the SDK reads it: test_sampling.py)
    "OTEL_TRACES_SAMPLER": "coin_toss",
    "OTEL_SDK_DISABLED": "nah",
    "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS": "GET,NOT A METHOD",
}

SETTINGS = [
    Group("every setting set to garbage", "diff", env=BAD_SETTINGS, warned=tuple(BAD_SETTINGS), scenarios=[do("echo", "echo"), do("raise", "raise")]),
    Group("LAMBDAWRAP_PYTHON names no python - bad_python_setting", "diff", env={"LAMBDAWRAP_PYTHON": "/nowhere/python9"}, warned=("LAMBDAWRAP_PYTHON",), scenarios=[do("echo", "echo"), do("raise", "raise")]),
    Group("LAMBDAWRAP_NEXT_WRAPPER cannot run - bad_next_wrapper", "diff", env={"LAMBDAWRAP_NEXT_WRAPPER": "/nowhere/wrapper.sh"}, warned=("LAMBDAWRAP_NEXT_WRAPPER",), scenarios=[do("echo", "echo"), do("raise", "raise")]),
    Group("LAMBDAWRAP_NEXT_WRAPPER is lambdawrap's own - next_wrapper_loop", "diff", env={"LAMBDAWRAP_NEXT_WRAPPER": str(LAYER / "wrapper.sh")}, warned=("LAMBDAWRAP_NEXT_WRAPPER",), scenarios=[do("echo", "echo"), do("raise", "raise")]),
    # About 317 years: past what the clocks can count in nanoseconds, every export raised
    # OverflowError and every span of the environment was lost, counted nowhere.
    Group("an export timeout the clocks cannot hold - huge_otlp_timeout", "diff", env={"OTEL_EXPORTER_OTLP_TIMEOUT": "9999999999"}, warned=("OTEL_EXPORTER_OTLP_TIMEOUT",), scenarios=[do("echo", "echo"), do("raise", "raise")]),
    # A variable the OpenTelemetry SDK reads itself, meant for the function's own SDK: a value
    # ours does not know failed the companion's MeterProvider, and nothing at all was exported.
    Group("OTEL_METRICS_EXEMPLAR_FILTER the SDK does not know - exemplar_filter", "diff", env={"OTEL_METRICS_EXEMPLAR_FILTER": "always-on"}, scenarios=[do("echo", "echo"), do("raise", "raise")]),
    # Read by the SDK as its trace module is imported: a value that is no count failed that
    # import, and nothing at all was exported ("unset", which the SDK does not spell so, too).
    Group("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT that is no count - span_attribute_limit", "diff", env={"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "-1"}, warned=("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",), scenarios=[do("echo", "echo"), do("raise", "raise")]),
    Group("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=unset - span_attribute_limit_unset", "diff", env={"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "unset"}, warned=("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",), scenarios=[do("echo", "echo"), do("raise", "raise")]),
    # Colons for equals signs: one warning for the variable, however many items are wrong.
    Group("OTEL_RESOURCE_ATTRIBUTES with bad items - resource_attributes_warned_once", "diff", env={"OTEL_RESOURCE_ATTRIBUTES": "team:payments,tier=gold,env:prod"}, warned=("OTEL_RESOURCE_ATTRIBUTES",), scenarios=[do("echo", "echo")]),
    # The boot stopped before the handler's post-import hook, which forgets our sitecustomize:
    # `import sitecustomize` found lambdawrap's trampoline where without the layer there is none.
    Group("OTEL_SDK_DISABLED - sdk_disabled", "diff", env={"OTEL_SDK_DISABLED": "true"}, ledger="silent", scenarios=[do("echo", "echo"), do("raise", "raise"), do("what the process sees - sdk_disabled_sitecustomize", "observe"), do("echo again", "echo"), do("and again", "echo")]),
    Group("LAMBDAWRAP_DISABLED", "diff", env={"LAMBDAWRAP_DISABLED": "TRUE"}, ledger="silent", scenarios=[do("echo", "echo"), do("what the process sees", "observe")]),
    Group("sampler always_off", "diff", env={"OTEL_TRACES_SAMPLER": "always_off"}, scenarios=[Scenario(f"unsampled {i}", {"do": "echo"}, dropped_as="sampled_out") for i in range(3)]),
    Group("payload capture", "diff", env={"LAMBDAWRAP_CAPTURE_PAYLOAD": "true"}, scenarios=[do("echo", "echo", password="hunter2"), do("raise", "raise")]),
]


def _down(collector) -> None:
    collector.down()


def _failing(collector) -> None:
    collector.set_behaviour(status=500)


def _slow(collector) -> None:
    collector.set_behaviour(delay_s=1.5)


COLLECTOR_FAULTS = [
    Group(f"collector {name}", "diff", collector=fault, env={"OTEL_EXPORTER_OTLP_TIMEOUT": "2"}, scenarios=[do("echo", "echo"), do("raise", "raise"), do("print", "print")])
    for name, fault in (("down", _down), ("answering 500", _failing), ("slow", _slow))
]
# The fault suite holds these to the ledger (tests/test_faults.py: what an environment that
# ends cannot send is counted and carried to the next); here, the function is untouched while
# its collector misbehaves.
for group in COLLECTOR_FAULTS:
    group.ledger = "none"

FLOODS = [
    Group("log flood - log_flood_counted", "diff", timeout_s=30.0, scenarios=[do("20 MB of logs", "flood", kilobytes=20_000), do("again", "flood", kilobytes=20_000), do("echo", "echo")]),
]

# JSON escapes of lone surrogates (\udc80) decode to text no UTF-8 encoder takes: one in a span
# name or an error message once held back every later batch of the environment.
LONE_SURROGATES = Group(
    "text UTF-8 cannot encode - lone_surrogate",
    "diff",
    env={"AWS_LAMBDA_LOG_FORMAT": "JSON"},
    scenarios=[
        do("echo", "echo"),
        Scenario("a route with a lone surrogate", raw=json.dumps(sample("apigw-rest", resource="/orders/\udc80", do="echo")).encode(), attributes={"faas.trigger": "http"}),
        Scenario("an error message with lone surrogates", raw=json.dumps({"do": "raise", "detail": "bad \udc80 \ud800 byte"}).encode()),
        Scenario("prints a lone surrogate", raw=json.dumps({"do": "print", "lines": 2, "tag": "\udc80"}).encode()),
        do("echo after them", "echo"),
        do("and again", "echo"),
    ],
)

# The managed runtimes' log channel (_LAMBDA_TELEMETRY_LOG_FD): `logging` records and the
# runtime's error reports are framed, one record each however many lines; print stays on stdout.
LOG_CHANNEL = [
    Group(
        f"the runtime's log channel, {log_format} format - log_channel",
        "diff",
        env={"AWS_LAMBDA_LOG_FORMAT": log_format, **level},
        telemetry_log_fd=True,
        scenarios=[
            do("echo", "echo"),
            do("prints and logs", "print", lines=3, tag="x"),
            do("records of several lines, an exception logged", "log_records", tag="y"),
            do("raise ValueError", "raise", detail="field\nx"),
            do("raise from another error", "raise_chained"),
            do("RecursionError", "recursion_error"),
            do("result JSON cannot encode", "unserializable"),
            do("background thread prints after return", "background_thread"),
            do("echo after them", "echo"),
        ],
    )
    for log_format, level in (("Text", {}), ("JSON", {"AWS_LAMBDA_LOG_LEVEL": "INFO"}))
]

# The runtime names an exception by its class's __name__ alone; describing it read __module__
# too, and a class that hides it (its metaclass raises) made lambdawrap's own AttributeError the
# caller's error (the first invocation from 3.11, every one on 3.10) and lost the record.
HIDDEN = {"error.type": "app.ModuleHiddenError"}
MODULE_HIDDEN = Group(
    "an exception class that hides its module - exception_type_unreadable",
    "diff",
    scenarios=[Scenario(name, {"do": action}, attributes=attributes) for name, action, attributes in (("raise it first", "raise_module_hidden", HIDDEN), ("echo", "echo", {}), ("raise it again", "raise_module_hidden", HIDDEN))],
)

# The inner calls of a handler that calls itself went through the wrapper's passage, whose frame
# stayed in the stack trace the caller got, once per inner call (on 3.10 too, where a bare raise
# keeps the wrapper's own entry: docs/reliability.md).
RECURSIVE_RAISES = Group(
    "a handler that calls itself raises - recursive_handler_raises",
    "diff",
    scenarios=[do("raises two calls down", "recurse", depth=2, **{"raise": True}), do("echo", "echo"), do("raises in its own call", "recurse", depth=0, **{"raise": True})],
)

# An integration that wraps the handler the runtime calls (Sentry's patches awslambdaric's
# handle_event_request): on 3.10 its frame came before the wrapper's, whose line the runtime then
# kept in the stack trace the caller got.
WRAPPED_BY_INTEGRATION = Group(
    "an integration wraps the handler the runtime calls - wrapped_by_integration",
    "runtime_integration",
    scenarios=[do("echo", "echo"), do("raise", "raise"), do("raise again", "raise")],
)

# How an invocation ends, as a user's code breaks it (tests/functions/endings): the caller gets
# the same bytes, each invocation is one span with the caller's outcome, and what the span names
# (its error.type) is what the caller got. A frozen dataclass exception refuses every attribute
# assignment, __traceback__'s too: lambdawrap's taking its own frame off the traceback raised
# FrozenInstanceError, which the caller got instead of the function's error (from 3.11).
ENDINGS_REPORTED = Group(
    "errors the runtime reports - invocation_endings",
    "endings",
    scenarios=[
        do("warm up", "echo"),
        Scenario("a frozen dataclass exception - frozen_exception", {"do": "raise_frozen"}, attributes={"error.type": "app.FrozenError"}),
        Scenario("and again, its record held for the post - frozen_exception", {"do": "raise_frozen"}, attributes={"error.type": "app.FrozenError"}),
        Scenario("an exception whose __getattr__ raises KeyError", {"do": "raise_fields"}, attributes={"error.type": "app.FieldsError"}),
        do("an exception group", "raise_group"),
        do("an exception with notes", "raise_noted"),
        do("a chain of 30 exceptions", "raise_chain", depth=30),
        do("a message of 500 KB", "raise_huge", size=500_000),
        do("StopIteration", "raise_stop_iteration"),
        # (on 3.10 the second one's stack trace showed the wrapper's frame of the first invocation)
        do("a ready-made exception object - reraised_instance", "raise_again"),
        do("and the same object again - reraised_instance", "raise_again"),
        do("Decimals, one NaN", "decimal"),
        Scenario("a datetime", {"do": "datetime"}, attributes={"error.type": "Runtime.MarshalError"}),
        Scenario("a set", {"do": "set"}, attributes={"error.type": "Runtime.MarshalError"}),
        do("NaN and infinities", "nan"),
        Scenario("a circular result", {"do": "circular"}, attributes={"error.type": "Runtime.MarshalError"}),
        Scenario("a result nested 100,000 deep", {"do": "deep", "depth": 100_000}, attributes={"error.type": "Runtime.MarshalError"}),
        Scenario("an HTTP answer whose body prints as it is serialized", sample("apigw-http", do="loud"), attributes={"http.response.status_code": 200}),
        Scenario("a Decimal status code that prints as it is rendered", sample("apigw-http", do="loud_decimal"), attributes={"http.response.status_code": 201}),
        Scenario("an HTTP answer in a dict whose lookups print - loud_mapping", sample("apigw-http", do="loud_mapping"), attributes={"http.response.status_code": 202}),
        do("echo after them", "echo"),
    ],
)

# Warnings on, as a function may run (PYTHONWARNINGS, -X dev): nothing of lambdawrap's may warn in
# its log. A child forked after the channel to the companion was connected dropped its copy of
# the socket unclosed: a ResourceWarning in the function's log, an "Exception ignored"
# traceback with warnings as errors.
WARNINGS_ON = [
    Group(
        f"warnings on, {name} - fork_resource_warning",
        "diff",
        env=env,
        scenarios=[
            do("echo", "echo"),
            do("fork child exits 0", "fork_exit", code=0),
            do("fork child exits 3", "fork_exit", code=3),
            do("multiprocessing pool (fork)", "multiprocessing"),
            do("prints to stdout and stderr and logging", "print", lines=2, tag="w"),
            do("thread pool", "threads"),
            do("asyncio", "asyncio"),
            do("raise ValueError", "raise", detail="w"),
            do("echo after them", "echo"),
        ],
    )
    for name, env in (("as errors", {"PYTHONWARNINGS": "error"}), ("development mode", {"PYTHONDEVMODE": "1"}))
]

GROUPS = [BEHAVIOUR, CRASHES, *INIT_FAILURES, *FORMS, *OWN_LIBRARIES, *SETTINGS, *COLLECTOR_FAULTS, *FLOODS, LONE_SURROGATES, *LOG_CHANNEL, MODULE_HIDDEN, RECURSIVE_RAISES, WRAPPED_BY_INTEGRATION, *WARNINGS_ON, ENDINGS_REPORTED]
# What each Python version changed under the layer shows here: the process's paths and
# modules, output, threads and forks, results and error payloads with their stack traces,
# timeouts and crashes, failed inits, and a function that bundles its own wrapt.
CORE = [BEHAVIOUR, CRASHES, *INIT_FAILURES, OWN_WRAPT, MODULE_HIDDEN, RECURSIVE_RAISES, WRAPPED_BY_INTEGRATION, ENDINGS_REPORTED]
OTHERS = [group for group in GROUPS if group not in CORE]


def test_there_are_enough_scenarios():
    assert sum(len(g.scenarios) for g in GROUPS) >= 60


@pytest.mark.timeout(900)
@every_python
@pytest.mark.parametrize("group", CORE, ids=[g.name for g in CORE])
def test_core_groups_on_every_python(group, runtime_python):
    report = run_group(group, python=runtime_python)
    assert not report.differences, "\n".join(report.problems())
    assert not report.ledger, "\n".join(report.problems())


@pytest.mark.timeout(900)
@pytest.mark.parametrize("group", OTHERS, ids=[g.name for g in OTHERS])
def test_with_and_without_the_layer(group):
    report = run_group(group)
    assert not report.problems(), "\n".join(report.problems())


# Outgoing calls that fail (issue 13): what each library returns or raises is the same with and
# without the layer, exceptions that reach the caller included, and each call is one client
# span under the invocation span with the right status. Real servers on loopback: an HTTP server
# answering 404/503, a port nothing listens on, one that accepts and never answers, moto.
HTTP_LIBRARIES = {"requests": "ConnectionError", "urllib3": "NewConnectionError", "urllib": "URLError", "httpx": "ConnectError", "httpx_async": "ConnectError", "aiohttp": "ClientConnectorError"}


def outgoing_group(http_url: str, refused_url: str, silent_url: str, moto_url: str) -> Group:
    def http(name: str, library: str, url: str, error: str | None, **extra) -> Scenario:
        return Scenario(name, {"do": "http", "library": library, "url": url, **extra}, calls=(("GET", error),))

    scenarios = []
    for library, refused_error in HTTP_LIBRARIES.items():
        scenarios += [
            http(f"{library} connection refused", library, refused_url, refused_error),
            http(f"{library} timeout", library, silent_url, "*", timeout=0.5),
            http(f"{library} 404", library, http_url + "/status/404", "404"),
            http(f"{library} 503", library, http_url + "/status/503", "503"),
            http(f"{library} 200", library, http_url + "/status/200?token=x", None),
        ]
    scenarios += [http(f"{library} refused, raised to the caller", library, refused_url, error, propagate=True) for library, error in HTTP_LIBRARIES.items()]
    aws = [("missing_table", "DynamoDB.GetItem", "ResourceNotFoundException"), ("missing_bucket", "S3.GetObject", "NoSuchBucket"), ("missing_queue", "SQS.SendMessage", "*"), ("list_tables", "DynamoDB.ListTables", None), ("refused_with_retries", "DynamoDB.ListTables", "EndpointConnectionError")]
    scenarios += [Scenario(f"AWS {call}", {"do": "aws", "call": call}, calls=((name, error),)) for call, name, error in aws]
    scenarios += [Scenario("AWS error raised to the caller", {"do": "aws", "call": "missing_table", "propagate": True}, calls=(("DynamoDB.GetItem", "ResourceNotFoundException"),))]
    # Our botocore handlers are botocore's to call: at DEBUG it logs each call, ours not among them.
    scenarios += [Scenario(f"AWS {call}, botocore logging at DEBUG - botocore_debug_lines", {"do": "aws", "call": call, "log_level": "DEBUG"}, calls=((name, error),)) for call, name, error in aws[:4]]
    return Group("outgoing calls that fail - outgoing_calls", "outgoing", env={"MOTO_URL": moto_url, "REFUSED_URL": refused_url}, timeout_s=30.0, scenarios=scenarios)


@pytest.mark.timeout(900)
def test_outgoing_calls_with_and_without_the_layer():
    from lambdawrap.devtools.local.moto_server import MotoServer
    from support.local_servers import closed_port, recording_server, silent_server

    with MotoServer() as moto, recording_server() as http, silent_server() as silent_url:
        report = run_group(outgoing_group(http.url, f"http://127.0.0.1:{closed_port()}", silent_url, moto.endpoint))
    assert not report.problems(), "\n".join(report.problems())


@pytest.mark.timeout(900)
def test_a_module_that_calls_out_as_it_loads_with_and_without_the_layer():
    from lambdawrap.devtools.local.moto_server import MotoServer
    from support.local_servers import recording_server

    # GIVEN a module that calls a config server and SSM as it loads (the parameter missing, its
    # error caught), and the same module failing on the config server's 503
    with MotoServer() as moto, recording_server() as http:
        env = {"CONFIG_URL": http.url, "MOTO_URL": moto.endpoint}
        loads = run_group(Group("module calls out as it loads - calls_at_init", "init_calls", env=env, timeout_s=30.0, scenarios=[do("first", "echo"), do("again", "echo")]))
        fails = run_group(Group("module fails on a call as it loads - calls_at_init", "init_calls", env={**env, "FAIL_AT_IMPORT": "1"}, timeout_s=30.0, scenarios=[do("first", "echo"), do("retried", "echo")]))
    # THEN the caller and the function see the same with the layer as without, every init and
    # invocation is accounted for
    assert not loads.problems(), "\n".join(loads.problems())
    assert not fails.problems(), "\n".join(fails.problems())
    # ... and, with the layer, the module's calls are children of the init span, as it loaded
    spans = loads.receiver.spans()
    (init,) = [s for s in spans if s["name"].endswith(" init")]
    calls = sorted((s["name"], s["trace_id"], s["parent_span_id"]) for s in spans if s["kind"] == 3)
    assert calls == [("GET", init["trace_id"], init["span_id"]), ("SSM.GetParameter", init["trace_id"], init["span_id"])], calls
