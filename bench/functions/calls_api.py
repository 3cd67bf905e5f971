"""Sparse-invocation bench: a handler whose work is one call to another service."""

import time


def handler(event, context):
    print("calling the orders service")
    time.sleep(0.05)  # stands in for a 50 ms call to another service
    return {"statusCode": 200, "body": "ok"}
