"""ClusterLane against the session's Redis Cluster (3 masters + 3 replicas): each call to its
slot's master in one EVALSHA, and every answer a cluster gives besides a reply: MOVED, ASK,
TRYAGAIN, CLUSTERDOWN (until the deadline), NOSCRIPT; unreachable seeds; lane_from_url.
The plugin's traffic and failovers on the same cluster: test_plugin_cluster.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop
from redis.exceptions import ClusterDownError, ConnectionError, TimeoutError
from redis_cluster import LocalCluster
from waits import wait_until, wait_until_async

from kong_credits.keys import SHARDS, event_stream
from kong_credits.redis_lane import RedisLane, Script
from kong_credits.redis_routing import ClusterLane, SentinelLane, lane_from_url, slot_of

Run = Callable[[Coroutine[Any, Any, Any]], Any]
INCR = Script("return redis.call('INCR', KEYS[1])")
INCR_BOTH = Script("redis.call('INCR', KEYS[1]); return redis.call('INCR', KEYS[2])")


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Each test runs on both event loops the plugin server may use."""
    return uvloop.run if request.param == "uvloop" else asyncio.run


def tagged(shard: int, name: str = "n") -> str:
    """A key in a shard's slot, as every key of a kong-credits script is."""
    return f"{event_stream(shard)}:{name}"


def rejected(cluster: LocalCluster, port: int) -> int:
    """EVALSHA calls a node refused before running them (redirections, TRYAGAIN, CLUSTERDOWN)."""
    stats = cluster.node(port).info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("rejected_calls", 0))


def evalsha_calls(cluster: LocalCluster, port: int) -> int:
    return int(cluster.node(port).info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def test_each_call_goes_to_its_slots_master_as_one_evalsha(run: Run, cluster: LocalCluster) -> None:
    shards = range(SHARDS)
    owners = {shard: cluster.owner(slot_of(tagged(shard))) for shard in shards}

    async def scenario() -> ClusterLane:
        lane = ClusterLane.from_location(_location(cluster))
        assert await lane.evalsha(INCR, [tagged(0)]) == 1  # loads the map
        for port in cluster.masters():
            cluster.node(port).script_load(INCR.source.decode())
            cluster.node(port).config_resetstat()
        replies = await asyncio.gather(*(lane.evalsha(INCR, [tagged(shard)])
                                         for shard in shards for _ in range(50)))
        assert sorted(replies) == sorted([*range(2, 52), *(list(range(1, 51)) * (SHARDS - 1))])
        await lane.close()
        return lane

    lane = run(scenario())
    for port in cluster.masters():  # each master ran exactly the calls of its shards
        assert evalsha_calls(cluster, port) == 50 * list(owners.values()).count(port)
        assert rejected(cluster, port) == 0
    assert (lane.refreshes, lane.redirections) == (1, 0)
    counts = lane.counts  # what the plugin server's metrics export
    assert (counts.refreshes, counts.moved, counts.asked, counts.reconnects) == (
        {"slot_map": 1}, 0, 0, 0)


def _location(cluster: LocalCluster) -> Any:
    from kong_credits.redis_url import parse_redis_url

    return parse_redis_url(cluster.url)


def _set_slot(cluster: LocalCluster, port: int, slot: int, *state: str) -> None:
    cluster.node(port).execute_command("CLUSTER", "SETSLOT", slot, *state)


def test_a_migrating_slot_asks_retries_then_moves(run: Run, cluster: LocalCluster) -> None:
    """The keys' slot migrates from `source` to `target` while calls come: a missing key is
    ASKed to the target, keys split between the two get TRYAGAIN until the move is done, and
    then MOVED points at the target for good."""
    shard = 3
    slot = slot_of(tagged(shard))
    source = cluster.owner(slot)
    target = next(port for port in cluster.masters() if port != source)
    source_id, target_id = cluster.id_of(source), cluster.id_of(target)
    here, there = tagged(shard, "here"), tagged(shard, "there")

    async def scenario() -> ClusterLane:
        lane = ClusterLane.from_location(_location(cluster), timeout_s=5)
        assert await lane.evalsha(INCR, [here]) == 1
        _set_slot(cluster, target, slot, "IMPORTING", source_id)
        _set_slot(cluster, source, slot, "MIGRATING", target_id)
        # `there` does not exist on the source: ASK, and ASKING + EVALSHA on the target
        assert await lane.evalsha(INCR, [there]) == 1
        assert cluster.node(target).execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 1
        assert lane.redirections == 1
        # `here` on the source, `there` on the target: TRYAGAIN until the migration ends
        before = rejected(cluster, source)
        split = asyncio.get_running_loop().create_task(lane.evalsha(INCR_BOTH, [here, there]))
        await wait_until_async(lambda: rejected(cluster, source) > before + 1)
        assert not split.done()
        cluster.node(source).execute_command(
            "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", here)
        for port in cluster.masters():
            _set_slot(cluster, port, slot, "NODE", target_id)
        assert await split == 2  # MOVED to the target, where both keys now are
        assert await lane.evalsha(INCR, [here]) == 3  # the map knows: no redirection
        await lane.close()
        return lane

    try:
        lane = run(scenario())
    finally:  # whatever happened, the slot ends up served by one node
        for port in cluster.masters():
            _set_slot(cluster, port, slot, "NODE", target_id)
    assert lane.redirections == 2  # the ASK, then one MOVED
    assert (lane.counts.asked, lane.counts.moved) == (1, 1)


def test_a_node_without_the_script_is_sent_it(run: Run, cluster: LocalCluster) -> None:
    port = cluster.owner(slot_of(tagged(5)))

    async def scenario() -> None:
        lane = lane_from_url(cluster.url)
        assert await lane.evalsha(INCR, [tagged(5)]) == 1
        cluster.node(port).script_flush()  # as a promoted or restarted node would be
        assert await lane.evalsha(INCR, [tagged(5)]) == 2
        await lane.close()

    run(scenario())
    assert cluster.node(port).script_exists(INCR.sha) == [True]


def test_a_cluster_down_is_waited_out_within_the_deadline(cluster: LocalCluster) -> None:
    """A slot served by nobody takes the whole cluster down (cluster-require-full-coverage):
    calls are resent while at least half a timeout is left before their deadline (2 x
    timeout_s), then fail; one made while the slot gets its master back succeeds."""
    unserved = slot_of("nobody's-key")
    owner = cluster.owner(unserved)

    def state(port: int) -> str:
        return cluster.node(port).cluster("info")["cluster_state"]

    async def scenario() -> None:
        short = ClusterLane.from_location(_location(cluster), timeout_s=0.2)
        patient = ClusterLane.from_location(_location(cluster), timeout_s=10)
        assert await short.evalsha(INCR, [tagged(7)]) == 1
        assert await patient.evalsha(INCR, [tagged(7)]) == 2
        for port in cluster.alive():
            cluster.node(port).execute_command("CLUSTER", "DELSLOTS", unserved)
        wait_until(lambda: all(state(p) == "fail" for p in cluster.masters()))
        started = time.monotonic()
        # Resent while half a timeout was left, then the last refusal raised (on a machine
        # too busy to resend in time, the deadline's TimeoutError).
        with pytest.raises((ClusterDownError, TimeoutError)):
            await short.evalsha(INCR, [tagged(7)])
        assert 0.2 <= time.monotonic() - started < 0.4 + 0.1
        port = cluster.owner(slot_of(tagged(7)))
        before = rejected(cluster, port)
        waiting = asyncio.get_running_loop().create_task(patient.evalsha(INCR, [tagged(7)]))
        await wait_until_async(lambda: rejected(cluster, port) > before + 1)
        cluster.node(owner).execute_command("CLUSTER", "ADDSLOTS", unserved)
        assert await waiting == 3
        await short.close()
        await patient.close()

    asyncio.run(scenario())
    cluster.ready()  # every node agrees on the slot again


def test_unreachable_seeds_are_skipped_and_none_is_a_connection_error(
        run: Run, cluster: LocalCluster) -> None:
    dead = "127.0.0.1:1"

    async def scenario() -> None:
        lane = lane_from_url(cluster.url.replace("redis+cluster://", f"redis+cluster://{dead},"))
        assert await lane.evalsha(INCR, [tagged(9)]) == 1
        await lane.close()
        nobody = lane_from_url(f"redis+cluster://{dead},127.0.0.1:2", timeout_s=0.2)
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="no node of the Redis Cluster answered"):
            await nobody.evalsha(INCR, [tagged(9)])
        assert time.monotonic() - started < 0.4
        await nobody.close()

    run(scenario())


def test_a_closed_lane_fails_calls(run: Run, cluster: LocalCluster) -> None:
    async def scenario() -> None:
        lane = lane_from_url(cluster.url)
        assert await lane.evalsha(INCR, [tagged(11)]) == 1
        await lane.close()
        with pytest.raises(ConnectionError, match="closed"):
            await lane.evalsha(INCR, [tagged(11)])

    run(scenario())


def test_lane_from_url_builds_the_lane_of_each_form() -> None:
    assert isinstance(lane_from_url("redis://127.0.0.1:6379/2"), RedisLane)
    assert isinstance(lane_from_url("unix:///tmp/redis.sock?db=1"), RedisLane)
    assert isinstance(lane_from_url("redis+cluster://127.0.0.1:7000,127.0.0.1:7001"),
                      ClusterLane)
    assert isinstance(lane_from_url("redis+sentinel://127.0.0.1:26379/main?db=2"), SentinelLane)
    with pytest.raises(ValueError, match=r"speaks to one node: redis_routing\.lane_from_url"):
        RedisLane.from_url("redis+cluster://127.0.0.1:7000")
    with pytest.raises(ValueError, match=r"URL 'redis\+cluster://:\*\*\*@.*no database"):
        lane_from_url("redis+cluster://:s3cret@127.0.0.1:7000/5")
