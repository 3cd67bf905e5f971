"""lambdawrap's boot trampoline: instrument the handler, then run the sitecustomize ours shadows."""
import sys

# lambdawrap lives in the layer's python/ folder, beside this one. The runtime puts that folder
# on sys.path only while PYTHONPATH is unset (the wrapper then adds it, and the boot takes it
# out again); a function that sets PYTHONPATH has it nowhere. Then it goes last on sys.path,
# and only while the package is imported (its modules are found through the package from then
# on): every layer unzips into that folder, and the standard modules the import loads first
# must come from the standard library, not from another layer's files.
_layer_python = __file__.rsplit("/", 2)[0]
_appended = _layer_python not in sys.path
if _appended:
    sys.path.append(_layer_python)
try:
    from lambdawrap.handler.boot import run_sitecustomize
except Exception as exc:  # noqa: BLE001 - without the package the function runs uninstrumented
    sys.stderr.write(f"lambdawrap: not instrumenting, the lambdawrap package failed to import: {exc!r}\n")
    run_sitecustomize = None
finally:
    if _appended and sys.path and sys.path[-1] == _layer_python:
        del sys.path[-1]
if run_sitecustomize is not None:
    run_sitecustomize(__file__)
