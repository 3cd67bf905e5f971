import sys

import lambdawrap
from lambdawrap import make_response
from lambdawrap.helpers import shout


def handler(event, context):
    if event.get("do") == "raise":
        raise ValueError(shout("refused"))
    loaded = sorted(name for name in sys.modules if name == "lambdawrap" or name.startswith("lambdawrap."))
    return make_response({"version": lambdawrap.__version__, "file": lambdawrap.__file__.rsplit("/", 3)[-3:], "loaded": loaded})
