"""An example function: a small orders API behind API Gateway. Nothing here knows about
lambdawrap; the layer instruments it from the outside."""

import json
import logging
import time

logger = logging.getLogger()
logger.setLevel(logging.INFO)

try:  # user spans are optional: they show up when the function uses the OpenTelemetry API
    from opentelemetry import trace

    tracer = trace.get_tracer("orders")
except ImportError:  # pragma: no cover - the API is not bundled with the function
    tracer = None

ORDERS = {"42": {"id": "42", "item": "coffee beans", "quantity": 2}}


def _lookup(order_id):
    if tracer is None:
        return ORDERS.get(order_id)
    with tracer.start_as_current_span("orders.lookup") as span:
        span.set_attribute("order.id", order_id)
        time.sleep(0.002)  # stands in for a database call
        return ORDERS.get(order_id)


def handler(event, context):
    order_id = ((event or {}).get("pathParameters") or {}).get("petId") or "42"
    logger.info("looking up order %s", order_id)
    order = _lookup(order_id)
    if order is None:
        return {"statusCode": 404, "body": json.dumps({"error": "no such order"})}
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(order)}
