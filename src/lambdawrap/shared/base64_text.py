"""The text a base64 string carries, for the two places that look inside one: payload capture
(an HTTP body sent base64-encoded) and secret scrubbing (a binary secret that is a PEM's lines).

Standard library only, imported only when such a string is met: the function's process loads it
for payload capture alone, after the boot, so its base64 is the standard one (own_stdlib): never
a `base64.py` or `struct.py` of the function's, nor one left in sys.modules for its imports.
"""

from __future__ import annotations

from lambdawrap.shared.own_stdlib import binascii, standard


def base64_text(encoded: str) -> str | None:
    """The UTF-8 text strict base64 `encoded` decodes to; None when it is not base64, or the
    bytes are not text (an image, a keystore)."""
    try:
        return standard("base64").b64decode(str.__str__(encoded), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
