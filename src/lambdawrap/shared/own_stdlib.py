"""Standard modules lambdawrap uses whose names a function's own files may take (a `mmap.py`, a
`binascii.py` in its folder), imported at boot, before the function's folder is first on
`sys.path`, and left out of `sys.modules` where they were not there already: the function's
imports then find what they find without the layer (its own file, or the standard module),
and lambdawrap keeps the standard one.

Each is used from here (`from lambdawrap.shared.own_stdlib import mmap`): an import of the name
after the boot would find the function's file."""

from __future__ import annotations

import sys


def _imported(name: str) -> object:
    there = name in sys.modules
    module = __import__(name)
    if not there:
        del sys.modules[name]
    return module


binascii = _imported("binascii")
mmap = _imported("mmap")
