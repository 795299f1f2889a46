"""One shard count per deployment: recorded in Redis by the first process, checked by all.

Every process reads `$KONG_CREDITS_SHARDS` (keys.SHARDS). Two processes that disagree would
use different keys for the same wallet, and a plugin would append events to streams no
forwarder reads, unbilled for as long as nobody notices. So the first process to reach a
Redis records its count under `kc:shards`, and every process compares before its first use
of the data: the CLI on each command, the forwarder and `kong-credits alerts` each time they
(re)attach to the streams, the plugin once per Redis before its first script call
(`check_once`: after that a flag test per request, no Redis call). On a mismatch they refuse
to run, and the plugin answers as when Redis is down (`on_redis_error`), writing nothing.

The check is one script call (`RECORD`), so it takes the same path as authorize on one node,
a cluster (routed by its key's slot) or Sentinel.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis

from .errors import RedisUnavailable, ShardsMismatch
from .keys import SHARDS, SHARDS_ENV, SHARDS_KEY
from .scripts import LuaScript

__all__ = ["RECORD", "ShardsMismatch", "check_once", "check_shards"]

RECORD = LuaScript("record_shards", """
local recorded = redis.call('GET', KEYS[1])
if recorded then return recorded end
redis.call('SET', KEYS[1], ARGV[1])
return false
""")
"""KEYS[1] = kc:shards, ARGV[1] = our count: the count recorded before us (nil: none was,
ours is now). A read unless the key is missing, so a Redis refusing writes (OOM) still passes
a process that agrees."""

ScriptRunner = Callable[[LuaScript, Sequence[str], Sequence[Any]], Awaitable[Any]]


def _compare(recorded: bytes | str | None, where: str) -> None:
    if recorded is None:
        return
    text = recorded.decode(errors="replace") if isinstance(recorded, bytes) else recorded
    if text != str(SHARDS):
        raise ShardsMismatch(
            f"this process runs with {SHARDS_ENV}={SHARDS}, but {where} records {text!r} "
            f"under {SHARDS_KEY}: every process of a deployment (plugin server, forwarder, "
            f"alerts, CLI) must use the same count. Set {SHARDS_ENV}={text} here, or see the "
            "README (Production Redis: the number of shards) to change it")


def check_shards(client: redis.Redis, where: str = "Redis") -> None:
    """Record our count if none is, else compare: ShardsMismatch when they differ. Redis
    errors are redis-py's, unchanged: the forwarder tells a Redis it cannot reach at start
    by their kind. EVAL, not EVALSHA: a rare call, and no NOSCRIPT to handle."""
    _compare(client.eval(RECORD.source, 1, SHARDS_KEY, SHARDS), where)


def check_once(run: ScriptRunner, where: str) -> ScriptRunner:
    """`run`, preceded on its first successful use by the shard check, made through `run`.

    Once it passed, a call costs one flag test and no coroutine of its own. Until then every
    call makes it (a Redis error fails the call like any outage: `run` raises
    RedisUnavailable). A mismatch is kept and raised as RedisUnavailable on every later call
    without asking Redis again: this process cannot change its count, only a restart with
    the right one helps.
    """
    mismatch: ShardsMismatch | None = None
    checked = False

    async def check_then_run(script: LuaScript, keys: Sequence[str], args: Sequence[Any]
                             ) -> Any:
        nonlocal checked, mismatch
        if mismatch is None:
            try:
                _compare(await run(RECORD, [SHARDS_KEY], [SHARDS]), where)
            except ShardsMismatch as exc:
                mismatch = exc
        if mismatch is not None:
            raise RedisUnavailable(str(mismatch))
        checked = True
        return await run(script, keys, args)

    def checked_run(script: LuaScript, keys: Sequence[str], args: Sequence[Any]
                    ) -> Awaitable[Any]:
        return run(script, keys, args) if checked else check_then_run(script, keys, args)

    return checked_run
