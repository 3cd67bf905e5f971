# A module name that is not an identifier: the runtime imports it with importlib all the same.
def handler(event, context):
    return {"form": "my-function.handler", "event": event}
