"""Code both processes import: the settings, the record schema of the channel between them,
and the declared-secrets syntax. Standard library only, cheap to import (it is on the
function's cold-start path); shipped to both the layer's python/ and the companion's folder.
"""
