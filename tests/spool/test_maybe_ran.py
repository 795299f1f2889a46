"""Which failed calls may have run in Redis (`RedisUnavailable.maybe_ran`, the spool's `sent`):
a spooled request with it is pinned before its replay, so one that did run is not charged
again. The plugin server asks a lost call once more; when Redis died meanwhile, the retry
fails to connect, and that must not hide that the first attempt was sent."""

from __future__ import annotations

import asyncio

import pytest
from redis_proxy import RedisProxy
from spool_outage import RestartableRedis

from kong_credits.errors import RedisUnavailable
from kong_credits.redis_pool import EngineCache
from kong_credits.spool.records import SpooledRequest
from kong_credits.spool.replay import replay_call

CALL = replay_call(SpooledRequest("req-1", "w", "c1", 5, at_ms=1), 5)


async def failure(url: str, *, cut: RedisProxy | None = None) -> RedisUnavailable:
    """The RedisUnavailable one authorize call through the plugin server's engine raises,
    with `cut` taken down 100 ms into the call if given."""
    engine = EngineCache().get(url, 400)
    call = asyncio.create_task(engine.authorize_packed(*CALL))
    if cut is not None:
        await asyncio.sleep(0.1)
        cut.down()  # stops listening first, then drops the connections
    with pytest.raises(RedisUnavailable) as caught:
        await call
    return caught.value


def test_a_call_cut_off_after_it_was_sent_may_have_run_though_its_retry_was_refused(
        funded: RestartableRedis) -> None:
    proxy = RedisProxy(funded.port).up()
    proxy.replies = False  # Redis runs the call; its reply never comes
    error = asyncio.run(failure(f"redis://127.0.0.1:{proxy.port}/0", cut=proxy))
    assert "Connect call failed" in str(error)  # the retry's reason ...
    assert error.maybe_ran  # ... but the first attempt was sent


def test_a_call_to_a_redis_that_is_not_there_never_ran() -> None:
    server = RestartableRedis()  # a free port, never started
    error = asyncio.run(failure(server.url))
    assert not error.maybe_ran
    server.close()
