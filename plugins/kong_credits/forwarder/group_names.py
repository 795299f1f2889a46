"""The forwarder's consumer group names (stream keys are built in kong_credits.keys)."""

from __future__ import annotations

__all__ = ["DEFAULT_GROUP_PREFIX", "group_name"]

DEFAULT_GROUP_PREFIX = "forwarder"


def group_name(sink: str) -> str:
    """The default consumer group of a sink kind: each sink kind sees every event once."""
    return f"{DEFAULT_GROUP_PREFIX}:{sink}"
