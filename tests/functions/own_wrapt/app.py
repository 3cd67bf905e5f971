import wrapt


def handler(event, context):
    import sys
    return {"wrapt": wrapt.__version__, "file": wrapt.__file__.rsplit("/", 2)[-2:], "loaded_as": sorted(m for m in sys.modules if m == "wrapt" or m.startswith("wrapt."))}
