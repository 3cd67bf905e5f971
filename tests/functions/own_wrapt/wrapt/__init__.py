"""The function's own wrapt (a stand-in for a 2.x it bundles)."""
__version__ = "9.9.9-bundled-by-the-function"


def register_post_import_hook(hook, name):
    raise RuntimeError("this is the function's wrapt, not lambdawrap's")
