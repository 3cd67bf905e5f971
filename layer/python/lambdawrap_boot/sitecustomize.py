"""lambdawrap's boot trampoline: instrument the handler, then run the sitecustomize ours shadows."""
import sys

# lambdawrap lives in the layer's python/ folder, beside this one. The runtime puts that folder
# on sys.path only while PYTHONPATH is unset (the wrapper then adds it, and the boot takes it
# out again); a function that sets PYTHONPATH has it nowhere. It goes first on sys.path only
# while the top-level package (which imports nothing) is imported: a lambdawrap the function
# bundles on its PYTHONPATH (to import lambdawrap.secrets in its own tests) must not stand in
# for the layer's. The subpackages are found through the package from then on. Then it goes
# last, while the boot is imported: every layer unzips into that folder, and the standard
# modules the boot loads first must come from the standard library, not from another layer's
# files.
_layer_python = __file__.rsplit("/", 2)[0]
_appended = _layer_python not in sys.path
sys.path.insert(0, _layer_python)
try:
    import lambdawrap  # noqa: F401
except Exception:  # noqa: BLE001 - reported below, by the import that needs it
    pass
finally:
    if sys.path and sys.path[0] == _layer_python:
        del sys.path[0]
if _appended:
    sys.path.append(_layer_python)
try:
    from lambdawrap.handler.boot import run_sitecustomize
except Exception as exc:  # noqa: BLE001 - without the package the function runs uninstrumented
    sys.stderr.write(f"lambdawrap: not instrumenting, the lambdawrap package failed to import: {exc!r}\n")
    # ... and starts as without the layer: its environment and sys.path put back, its own
    # sitecustomize run. That part of the boot imports only the standard library.
    try:
        from lambdawrap.handler.bare_start import start_as_without_the_layer as run_sitecustomize
    except Exception:  # noqa: BLE001 - the package is not there at all
        run_sitecustomize = None
finally:
    if _appended and sys.path and sys.path[-1] == _layer_python:
        del sys.path[-1]
if run_sitecustomize is not None:
    run_sitecustomize(__file__)
