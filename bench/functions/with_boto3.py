"""Cold-start bench: a handler whose module imports boto3, as most real functions do."""

import boto3  # noqa: F401 - the import is the point


def handler(event, context):
    return {"statusCode": 200, "body": "ok"}
