"""The handler module the bench's "otel" exec wrapper points `_HANDLER` at, as the OpenTelemetry
Lambda Python layer does (written for this bench, not copied).

By the time the runtime imports this module, opentelemetry-instrument's sitecustomize has
configured the SDK (distro: OTLP exporters, BatchSpanProcessor). Here the AWS Lambda
instrumentation wraps the user's handler (named by ORIG_HANDLER), which we then import and
expose as `lambda_handler`.
"""

import importlib
import os

from opentelemetry.instrumentation.aws_lambda import AwsLambdaInstrumentor


class HandlerError(Exception):
    pass


def _target(value):
    module, sep, function = (value or "").rpartition(".")
    if not sep or not module or not function:
        raise HandlerError(f"ORIG_HANDLER has an invalid value: {value!r}")
    return module.replace("/", "."), function


AwsLambdaInstrumentor().instrument()  # a no-op if the sitecustomize already instrumented it

_module, _function = _target(os.environ.get("ORIG_HANDLER"))
lambda_handler = getattr(importlib.import_module(_module), _function)
