"""The function's identity on its spans, as the AWS Lambda conventions ask for it."""

from __future__ import annotations


def function_resource_id(invoked_arn: str, version: str) -> str:
    """``cloud.resource_id``: the function's ARN qualified with the version that ran, never
    with the alias it was invoked through (one environment serves every alias of a version).
    ``$LATEST`` (or an unknown version) is the unqualified ARN; anything that is not a function
    ARN is returned as it is."""
    parts = invoked_arn.split(":", 7)
    if len(parts) < 7 or parts[0] != "arn" or parts[5] != "function":
        return invoked_arn
    unqualified = ":".join(parts[:7])
    return unqualified + ":" + version if version and version != "$LATEST" else unqualified
