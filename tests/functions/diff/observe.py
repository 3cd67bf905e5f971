"""What the function can see of its own process: reported in its responses, compared by the
differential harness with and without the layer."""

import json
import os
import subprocess
import sys

# What the function's module finds as it is imported (before the runtime has its handler).
try:
    import sitecustomize

    SITECUSTOMIZE_AT_IMPORT = getattr(sitecustomize, "__file__", repr(sitecustomize))
except ImportError as exc:
    SITECUSTOMIZE_AT_IMPORT = f"{type(exc).__name__}: {exc}"

# Set per invocation or per environment by the platform: never the same in two runs.
PER_RUN = ("_X_AMZN_TRACE_ID", "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_LAMBDA_EXEC_WRAPPER", "AWS_LAMBDA_RUNTIME_API")


def _environment(env):
    # Sorted: the order of a process's environment is execve's, not a promise of the platform.
    return {k: env[k] for k in sorted(env) if k not in PER_RUN}


def modules():
    """The modules the function's imports resolve to, outside the standard library."""
    stdlib = sys.stdlib_module_names
    seen = {}
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in stdlib or name.startswith(("lambdawrap", "_lambdawrap")):
            continue
        seen[name] = getattr(module, "__file__", None)
    return seen


def child_environment():
    code = "import json, os, sys; print(json.dumps({'env': dict(os.environ), 'path': sys.path}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    child = json.loads(out.stdout)
    return {"env": _environment(child["env"]), "path": child["path"]}


def observe():
    return {"sys.path": list(sys.path), "modules": modules(), "environ": _environment(os.environ), "child": child_environment(), "argv": sys.argv, "sitecustomize at import": SITECUSTOMIZE_AT_IMPORT}
