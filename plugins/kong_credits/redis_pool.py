"""Shared hot-path Redis clients: one pipelined connection set per (URL, timeout), per process.

Kong starts one plugin instance per plugin config and worker; hundreds of routes must not
mean hundreds of Redis connections. The plugin server's process owns one `EngineCache`.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError, DataError, RedisError, TimeoutError

from .engine import AsyncEngine
from .errors import RedisUnavailable
from .pluginserver_metrics import METRICS
from .redact import mask_url
from .redis_routing import lane_from_url
from .replica_wait import ReplicaWait
from .scripts import LuaScript
from .shards import check_once

__all__ = ["ENGINES", "EngineCache"]


class EngineCache:
    """`get(url, timeout_ms)` returns the same AsyncEngine for the same Redis and timeout
    (and replica wait: with `wait_replicas`, each script call also waits for that many
    replicas to hold its writes, replica_wait.py).

    A call whose reply is late or lost is asked once more with the same request id, within
    what is left of twice `timeout_ms` from the start: a request never waits longer before
    on_redis_error applies, on one node, a cluster (redirections, failovers) or Sentinel.
    Answers are kept only as long as that retry may come (`answer_ttl_ms`): at 20k requests/s
    the engine's default of 120 s would hold ~2.4M answer keys (~360 MB) in Redis.
    """

    def __init__(self) -> None:
        self._engines: dict[tuple[str, int, int, int], AsyncEngine] = {}

    def get(self, redis_url: str, timeout_ms: int, *, wait_replicas: int = 0,
            wait_timeout_ms: int = 0) -> AsyncEngine:
        key = (redis_url, timeout_ms, wait_replicas, wait_timeout_ms)
        engine = self._engines.get(key)
        if engine is None:
            observe, count_error = METRICS.redis_seconds.observe, METRICS.redis_error
            timeout_s = timeout_ms / 1000
            bound_s = 2 * timeout_s
            # A connect fits in one timeout, so the first call (connect, then reply) does too.
            lane = lane_from_url(redis_url, timeout_s=timeout_s,
                                 connect_timeout_s=min(timeout_s, 1.0), counts=METRICS.lanes)
            if wait_replicas:  # WAIT behind each script call, same round trip
                lane = ReplicaWait(lane, wait_replicas, wait_timeout_ms,
                                   where=mask_url(redis_url))

            async def run(script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
                started = time.monotonic()
                sent = False  # whether a failed attempt may have run (then the retry failed)
                try:
                    try:
                        reply = await lane.evalsha(script, keys, args)
                        observe(time.monotonic() - started)
                        return reply
                    except (TimeoutError, ConnectionError) as exc:
                        count_error(exc)
                        sent = may_have_run(exc)
                        # The script may have run with its reply lost. authorize and settle
                        # answer a repeated request id from what they stored, without
                        # charging twice, so asking once more is safe; a Redis that is down
                        # fails this at once (the lane is backing off). A cluster or
                        # sentinel lane has meanwhile found where the slot's master is now.
                        async with asyncio.timeout(started + bound_s - time.monotonic()):
                            reply = await lane.evalsha(script, keys, args)
                        observe(time.monotonic() - started)
                        return reply
                except DataError:
                    raise  # a bad argument is our bug, not an outage
                except RedisError as exc:
                    count_error(exc)
                    # Down, late, out of memory, read-only replica: on_redis_error decides.
                    raise RedisUnavailable(f"{type(exc).__name__}: {exc}",
                                           maybe_ran=sent or may_have_run(exc)) from exc
                except builtins.TimeoutError as exc:  # asyncio.timeout: the bound is spent
                    count_error(exc)
                    raise RedisUnavailable(
                        f"TimeoutError: no reply within {bound_s} s") from None

            # The deployment's shard count is checked before the first call (shards.py).
            engine = self._engines[key] = AsyncEngine(check_once(run, mask_url(redis_url)),
                                                      answer_ttl_ms=answer_ttl_ms(timeout_ms))
        return engine


_NOT_SENT = ("refused", "unreachable", "Connect call failed", "connect timed out")
"""What the lanes' ConnectionErrors say when the call never left: no connection was made."""


def may_have_run(exc: RedisError) -> bool:
    """Whether a failed call may have reached Redis and run there: anything but a failure
    to connect (a lane backing off says "unreachable")."""
    return not (isinstance(exc, ConnectionError)
                and any(sign in str(exc) for sign in _NOT_SENT))


def answer_ttl_ms(timeout_ms: int) -> int:
    """How long the plugin keeps an answer: its retry comes within 2 x timeout, plus room for
    a loaded Redis to run a queued call late."""
    return 2 * timeout_ms + 10_000


ENGINES = EngineCache()
"""The process-wide cache the `credits` plugin instances draw their engines from."""
