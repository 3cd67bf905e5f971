"""The handler module the bench's "adot-fast-start" exec wrapper points `_HANDLER` at, as ADOT's
Python Lambda layer does (written for this bench after reading that layer's wrapper, not copied).

With OTEL_AWS_LAMBDA_FAST_START=true nothing ran before this import: the distro's lite SDK is set
up here (a minimal tracer whose spans go as OTLP over UDP to AWS_XRAY_DAEMON_ADDRESS, flushed at
the end of each invocation, and the botocore/requests/urllib3 instrumentations). Then the AWS
Lambda instrumentation wraps the user's handler (named by ORIG_HANDLER), taking the parent
context from the platform's X-Ray header first, and the handler is exposed as `lambda_handler`.
"""

import importlib
import logging
import os

from opentelemetry.context import Context
from opentelemetry.instrumentation.aws_lambda import AwsLambdaInstrumentor
from opentelemetry.propagate import get_global_textmap
from opentelemetry.trace import get_current_span


class HandlerError(Exception):
    pass


if os.environ.get("OTEL_AWS_LAMBDA_FAST_START", "false").lower() == "true":
    try:
        from amazon.opentelemetry.distro.opentelemetry_lite_sdk import configure_lite_mode

        configure_lite_mode()
    except Exception:  # noqa: BLE001 - as the layer does: without it the function runs untraced
        logging.getLogger(__name__).exception("lite mode could not be configured")

_XRAY_HEADER = "X-Amzn-Trace-Id"


def _parent_context(event):
    """The event's headers, with the platform's X-Ray header (if any) in place of the event's."""
    headers = event.get("headers") if isinstance(event, dict) else None
    carrier = dict(headers) if isinstance(headers, dict) else {}
    platform_header = os.environ.get("_X_AMZN_TRACE_ID")
    if platform_header:
        carrier = {k: v for k, v in carrier.items() if k.lower() != _XRAY_HEADER.lower()}
        carrier[_XRAY_HEADER] = platform_header
    context = get_global_textmap().extract(carrier)
    return context if get_current_span(context).get_span_context() else Context()


def _target(value):
    module, sep, function = (value or "").rpartition(".")
    if not sep or not module or not function:
        raise HandlerError(f"ORIG_HANDLER has an invalid value: {value!r}")
    return module.replace("/", "."), function


AwsLambdaInstrumentor().instrument(event_context_extractor=_parent_context)

_module, _function = _target(os.environ.get("ORIG_HANDLER"))
lambda_handler = getattr(importlib.import_module(_module), _function)
