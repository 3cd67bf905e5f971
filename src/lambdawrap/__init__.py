"""lambdawrap: zero-code OpenTelemetry instrumentation for Python AWS Lambda functions.

Importing this package is cheap on purpose: it runs inside the user's handler process.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
