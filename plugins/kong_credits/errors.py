"""Exceptions of kong-credits.

    CreditsError                  base of everything raised on purpose
    +-- InvalidInput              a value a user gave is unusable (bad amount, wallet, date)
    |   +-- InvalidSetting        a deployment setting from the environment is unusable
    +-- GrantNotFound             the wallet has no grant of that id (void)
    +-- RedisUnavailable          Redis could not be reached or answered too late
    +-- ShardsMismatch            Redis records another shard count than this process's

Refusals (402, 429) are not exceptions: they are `Decision` values.
"""

from __future__ import annotations

__all__ = ["CreditsError", "GrantNotFound", "InvalidInput", "InvalidSetting", "RedisUnavailable",
           "ShardsMismatch"]


class CreditsError(Exception):
    """Base class of kong-credits errors."""


class InvalidInput(CreditsError, ValueError):
    """A user-supplied value is invalid; the message says which and why."""


class InvalidSetting(InvalidInput):
    """An environment variable read at import ($KONG_CREDITS_SHARDS) is unusable: raised
    while kong_credits is imported, so entry points (launch.py) turn it into exit 2."""


class GrantNotFound(CreditsError, LookupError):
    """The wallet holds no grant of that id: nothing was changed."""


class RedisUnavailable(CreditsError):
    """Redis did not answer (down, timed out, or refused the connection).

    `maybe_ran`: whether the call may have reached Redis and run there with its reply lost
    (on_redis_error=spool pins such a request before replaying it). Only a caller that knows
    every attempt failed to connect says False.
    """

    def __init__(self, message: str, *, maybe_ran: bool = True) -> None:
        super().__init__(message)
        self.maybe_ran = maybe_ran


class ShardsMismatch(CreditsError):
    """Redis records another shard count than this process's $KONG_CREDITS_SHARDS: it must
    not run, or it would use other keys than the rest of the deployment (shards.py)."""
