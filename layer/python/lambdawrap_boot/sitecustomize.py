"""lambdawrap's boot trampoline: instrument the handler, then run the sitecustomize ours shadows."""
try:
    from lambdawrap.handler.boot import run_sitecustomize
except Exception as exc:  # noqa: BLE001 - without the package the function runs uninstrumented
    import sys

    sys.stderr.write(f"lambdawrap: not instrumenting, the lambdawrap package failed to import: {exc!r}\n")
else:
    run_sitecustomize(__file__)
