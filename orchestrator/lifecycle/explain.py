"""A message a person can act on, for the errors that come from outside orch (AWS's)."""
from __future__ import annotations

from orchestrator.cloud.aws import friendly_error


def friendly(e: BaseException) -> str | None:
    """What to tell the user about `e`, or None when it is not one we know how to word."""
    if type(e).__module__.startswith("botocore"):
        return friendly_error(e)
    return None
