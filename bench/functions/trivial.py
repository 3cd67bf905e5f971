"""Cold-start bench: the smallest handler there is."""


def handler(event, context):
    return {"statusCode": 200, "body": "ok"}
