"""Code that runs inside the function's own process (shipped in the layer's python/).

The boot (from sitecustomize), the handler wrapper, the channel's sending end, event and
trace-context parsing, and the bridge for the user's OpenTelemetry API calls. Standard library
and wrapt only, imported lazily: everything here costs the function's cold start.
"""
