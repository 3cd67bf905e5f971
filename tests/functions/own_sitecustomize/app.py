"""A function whose PYTHONPATH holds a sitecustomize of its own that fails half-way: what the
interpreter made of it is what the function sees."""

import os
import sys


def handler(event, context):
    module = sys.modules.get("sitecustomize")
    return {"sitecustomize": getattr(module, "__file__", repr(module)), "ran": os.environ.get("OWN_SITECUSTOMIZE")}
