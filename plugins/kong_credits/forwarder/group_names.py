"""The forwarder's consumer group names (stream keys are built in kong_credits.keys)."""

from __future__ import annotations

__all__ = ["DEFAULT_GROUP_PREFIX", "group_name"]

DEFAULT_GROUP_PREFIX = "forwarder"


def group_name(sink: str, destination: str | None = None) -> str:
    """The default consumer group of a sink kind: each sink kind sees every event once. A sink
    that names its `destination` (the usage store: its URL without the password) gets a group
    per destination, so each store receives every event; forwarders of one store share it."""
    if destination:
        return f"{DEFAULT_GROUP_PREFIX}:{sink}:{destination}"
    return f"{DEFAULT_GROUP_PREFIX}:{sink}"
