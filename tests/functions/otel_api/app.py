"""A function that uses only the OpenTelemetry API (no SDK of its own)."""
from opentelemetry import trace

tracer = trace.get_tracer("checkout")


class Unprintable:
    def __str__(self):
        raise RuntimeError("no")


class BadError(Exception):
    def __str__(self):
        raise RuntimeError("no str")


def handler(event, context):
    with tracer.start_as_current_span("checkout.total") as span:
        span.set_attribute("items", 3)
        span.set_attribute("odd value", Unprintable())  # the API must not raise for this
        span.set_attributes({object(): 1})
        span.add_event("priced", {"total": 9.5})
        try:
            raise BadError()
        except BadError as exc:
            span.record_exception(exc)  # its __str__ raises: still no exception from us
    @tracer.start_as_current_span("decorated.step")
    def step():
        return 7
    # The API's use_span formats an escaping exception's text for a recording span: one whose
    # __str__ raises must reach the function as itself, as it does without a recording span.
    try:
        with trace.use_span(tracer.start_span("used.step"), end_on_exit=True):
            raise BadError()
    except Exception as exc:  # noqa: BLE001 - what the function sees is the point
        seen = type(exc).__name__
    try:
        trace.use_span(tracer.start_span("never used"), nonsense=1)
        wrong_call = None
    except TypeError as exc:
        wrong_call = str(exc)  # the API's words for a wrong call, with the layer too
    wrong_calls = []
    for call in (lambda: tracer.start_span(attrs={}), lambda: tracer.start_span(), lambda: tracer.start_as_current_span("s", attrs={}).__enter__()):
        try:
            call()
        except TypeError as exc:
            wrong_calls.append(str(exc))  # the API's words, with the layer too
    with tracer.start_as_current_span("not an exception") as span:
        span.record_exception({"error": "declined"})  # nothing, not a warning of lambdawrap's
    trace.get_current_span().record_exception("declined")
    return {"total": 9.5, "step": step(), "use_span raised": seen, "wrong use_span call": wrong_call, "wrong calls": wrong_calls}
