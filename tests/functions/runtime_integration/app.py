"""As Sentry's AWS Lambda integration does at sentry_sdk.init: the runtime's handle_event_request
is patched to wrap the handler it is given in the integration's own function, which re-raises
what the handler raises with its traceback."""

import sys

import awslambdaric.bootstrap as lambda_bootstrap

_handle_event_request = lambda_bootstrap.handle_event_request


def _wrap_handler(handler):
    def integration_handler(event, context, *args, **kwargs):
        try:
            return handler(event, context, *args, **kwargs)
        except Exception:
            exc_info = sys.exc_info()
            raise exc_info[1].with_traceback(exc_info[2])

    return integration_handler


def integration_handle_event_request(lambda_runtime_client, request_handler, *args, **kwargs):
    return _handle_event_request(lambda_runtime_client, _wrap_handler(request_handler), *args, **kwargs)


lambda_bootstrap.handle_event_request = integration_handle_event_request


def handler(event, context):
    if event.get("do") == "raise":
        raise ValueError("bad input")
    return event
