"""A package of the function's own that happens to be named as the layer's."""

__version__ = "2.3.0"


def make_response(payload):
    return {"statusCode": 200, "body": payload}
