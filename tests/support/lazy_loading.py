"""importlib's LazyLoader recipe (a cold-start trick), as source text for the processes tests
start: `lazy(name)` puts the module in sys.modules, its code run at its first use."""

LAZY_LOADER_RECIPE = '''
def lazy(name):
    import importlib.util, sys

    spec = importlib.util.find_spec(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
'''
