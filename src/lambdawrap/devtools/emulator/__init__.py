"""A faithful, Docker-free stand-in for the AWS Lambda execution environment.

See ``Emulator``; ``python -m lambdawrap.emulator --help`` for the command line.
"""

from lambdawrap.devtools.emulator.emulator import Emulator, InitFailure, InvokeResult

__all__ = ["Emulator", "InitFailure", "InvokeResult"]
