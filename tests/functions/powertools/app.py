"""A function written with AWS Lambda Powertools: structured logging, metrics (EMF on stdout)
and the REST API event handler."""
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger(service="orders")
metrics = Metrics(namespace="Shop", service="orders")
app = APIGatewayRestResolver()


@app.get("/orders/<order_id>")
def get_order(order_id: str):
    logger.info("looking up an order", extra={"order_id": order_id})
    metrics.add_metric(name="OrderLookups", unit=MetricUnit.Count, value=1)
    if order_id == "boom":
        raise ValueError("no such order")
    if order_id == "logged":
        try:
            raise ValueError("no such order: logged")
        except ValueError:
            logger.exception("order lookup failed")
    return {"order_id": order_id}


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def handler(event, context):
    return app.resolve(event, context)
