"""Sentinel on the hot path: 1 master, 1 replica, 3 sentinels (conftest's `sentinel`).

The lane finds the master the sentinels name, and follows a `SENTINEL FAILOVER`; the plugin,
driven through the Kong-protocol host with a `redis+sentinel://` URL, keeps answering within
its bound across one (503 while no master takes writes, then 200 again) and charges nothing
twice, and the forwarder delivers every event over the same URL.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from plugin_traffic import (
    Traffic,
    all_event_ids,
    assert_charged_once,
    paid_route_config,
    wallet_names,
)
from redis.exceptions import ConnectionError, RedisError
from redis_sentinel import NAME, LocalSentinel
from test_plugin_access import HostThread, upstream
from waits import wait_until_async

from kong_credits import wallets
from kong_credits.cli import main
from kong_credits.host import Host, credits_servers
from kong_credits.redis_lane import Script
from kong_credits.redis_routing import SentinelLane, lane_from_url

sys.path.insert(0, str(Path(__file__).parent / "sinks"))
from billing_recorder import BillingRecorder, sink_args

COST = 2
TIMEOUT_MS = 300
BOUND_S = 2 * TIMEOUT_MS / 1000
SLACK_S = 0.4  # as in test_plugin_cluster.py
THREADS = 6
WALLETS = wallet_names(range(4))
KEYS = {f"key-{wallet}": wallet for wallet in WALLETS}
INCR = Script("return redis.call('INCR', KEYS[1])")
FAST = ["--backoff-base-ms", "1", "--backoff-max-ms", "50", "--claim-idle-ms", "200",
        "--block-ms", "50", "--max-attempts", "20", "--log-level", "error"]


def test_unknown_master_or_no_sentinel_is_a_connection_error(sentinel: LocalSentinel) -> None:
    async def scenario() -> None:
        unknown = lane_from_url(sentinel.url.replace(NAME, "no-such-master"))
        with pytest.raises(ConnectionError, match="knows no master named 'no-such-master'"):
            await unknown.evalsha(INCR, ["k"])
        await unknown.close()
        nobody = lane_from_url("redis+sentinel://127.0.0.1:1,127.0.0.1:2/x", timeout_s=0.2)
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="no sentinel named the master 'x'"):
            await nobody.evalsha(INCR, ["k"])
        assert time.monotonic() - started < 0.4
        await nobody.close()

    asyncio.run(scenario())


def test_the_sentinel_lane_survives_redis_errors_of_its_callers(sentinel: LocalSentinel) -> None:
    """A script error is the caller's: raised as is, the lane stays on its master."""
    async def scenario() -> None:
        lane = lane_from_url(sentinel.url)
        with pytest.raises(RedisError, match="boom"):
            await lane.evalsha(Script("return redis.error_reply('boom')"), ["k"])
        assert await lane.evalsha(INCR, ["k"]) == 1
        await lane.close()

    asyncio.run(scenario())


@pytest.mark.integration
def test_the_lane_leaves_an_old_master_that_still_takes_writes(sentinel: LocalSentinel) -> None:
    """Without min-replicas-to-write the old master keeps taking writes after a failover
    until Sentinel demotes it, seconds later, and those writes are lost when it resyncs:
    the lane's periodic check moves it to the new master within check_interval_s of the
    sentinels naming it."""
    old = sentinel.master()
    sentinel.node(old).config_set("min-replicas-to-write", 0)

    async def scenario() -> None:
        lane = lane_from_url(sentinel.url, check_interval_s=0.2)
        assert isinstance(lane, SentinelLane)
        assert await lane.evalsha(INCR, ["k"]) == 1
        assert lane.master == ("127.0.0.1", old)
        new = await asyncio.to_thread(sentinel.failover)
        named_at = time.monotonic()
        await wait_until_async(lambda: lane.master == ("127.0.0.1", new), timeout_s=5)
        assert time.monotonic() - named_at < 2  # a check every 0.2 s here (default 1 s)
        reply = await lane.evalsha(INCR, ["k"])
        assert sentinel.node(new).get("k") == str(reply)
        await lane.close()

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def gateway(redis_sentinel: LocalSentinel) -> Iterator[HostThread]:
    host = Host(paid_route_config(redis_sentinel.url, COST, TIMEOUT_MS, KEYS),
                credits_servers(tempfile.mkdtemp(prefix="kc-")), upstream=upstream)
    runner = HostThread(host)
    runner.run(host.start())
    yield runner
    runner.close()


@pytest.mark.integration
def test_plugin_traffic_across_a_sentinel_failover(gateway: HostThread,
                                                   sentinel: LocalSentinel) -> None:
    """The master refuses writes once its replica is promoted (NOREPLICAS: the fixture sets
    min-replicas-to-write 1, as the README advises); the plugin answers 503 until the
    sentinels name the new master, then 200. Nothing is charged twice or charged for a 503;
    the writes the replica had not yet read when promoted are lost (asynchronous
    replication, see the README)."""
    client = sentinel.node(sentinel.master())
    for wallet in WALLETS:
        wallets.grant(client, wallet, 10**9)
    funds = dict.fromkeys(WALLETS, 10**9)
    with Traffic(gateway, KEYS, threads=THREADS) as traffic:
        traffic.wait(300, status=200)
        sentinel.failover()
        switched_at = time.monotonic()
        traffic.wait(200, status=200, after=switched_at)
    assert set(traffic.statuses()) <= {200, 503}, traffic.statuses()
    assert traffic.slowest() < BOUND_S + SLACK_S
    new = sentinel.master()
    # Lost: writes the promoted replica had not read yet (a few ms of traffic; 0 to 4 seen).
    assert_charged_once(lambda wallet: sentinel.node(new), traffic, funds, COST,
                        lost=2 * THREADS)
    ids = all_event_ids(sentinel.node(new))
    assert len(ids) == len(set(ids))
    with BillingRecorder("http") as backend:
        result = CliRunner().invoke(main, ["forwarder", *sink_args("http", backend.url),
                                           "--drain", *FAST, "--redis-url", sentinel.url])
        assert result.exit_code == 0, result.output
        assert set(backend.stored) == set(ids)
