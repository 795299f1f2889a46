"""redis_wait_replicas on Redis Cluster and Sentinel: the WAIT goes behind the EVALSHA to the
master the routed lane chose (after a redirection, a NOSCRIPT too), in the same round trip,
and the call returns once that master's replica holds the write. On the session's cluster
(3 masters + 3 replicas) and sentinel setup (master + replica + 3 sentinels).
The single-node option and its failover: test_replica_wait.py."""

from __future__ import annotations

import asyncio

import redis
from redis_cluster import LocalCluster
from redis_sentinel import LocalSentinel
from test_redis_cluster_lane import INCR, _location, _set_slot, evalsha_calls, rejected, tagged

from kong_credits.engine import AuthorizeRequest
from kong_credits.redis_pool import EngineCache
from kong_credits.redis_routing import ClusterLane, SentinelLane, lane_from_url, slot_of
from kong_credits.replica_wait import WAITS, ReplicaWait

CALLS = 20


def calls(node: redis.Redis, command: str) -> int:
    stats = node.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0))


def cluster_replica(cluster: LocalCluster, master: int) -> redis.Redis:
    """A client of the master's replica that may read its slots (READONLY, one connection)."""
    master_id = cluster.id_of(master)
    port = next(int(row["port"]) for row in cluster.nodes()
                if "slave" in row["flags"] and row["master"] == master_id)
    client = redis.Redis(port=port, socket_timeout=2, decode_responses=True,
                         single_connection_client=True)
    client.execute_command("READONLY")
    return client


def test_a_cluster_call_returns_once_its_masters_replica_holds_it(cluster: LocalCluster) -> None:
    key = tagged(2, "waited")
    master = cluster.owner(slot_of(key))
    replica = cluster_replica(cluster, master)
    confirmed = WAITS.confirmed

    async def scenario() -> ClusterLane:
        lane = ClusterLane.from_location(_location(cluster))
        assert await lane.evalsha_then_wait(INCR, [key], [], replicas=1,
                                            timeout_ms=1000) == (1, 1)  # loads map, script
        for port in cluster.ports:
            cluster.node(port).config_resetstat()
        waited = ReplicaWait(lane, 1, 1000)
        for i in range(2, CALLS + 2):
            assert await waited.evalsha(INCR, [key]) == i
            assert replica.get(key) == str(i)  # acknowledged: already on the replica
        await waited.close()
        return lane

    lane = asyncio.run(scenario())
    assert WAITS.confirmed - confirmed == CALLS
    # One round trip each: one EVALSHA and one WAIT on the slot's master, nothing elsewhere.
    assert (evalsha_calls(cluster, master), calls(cluster.node(master), "wait")) == (
        CALLS, CALLS)
    assert rejected(cluster, master) == 0
    assert all(evalsha_calls(cluster, port) == 0 for port in cluster.ports if port != master)
    assert (lane.refreshes, lane.redirections) == (1, 0)
    replica.close()


def test_a_cluster_call_waits_where_ask_moved_and_noscript_sent_it(cluster: LocalCluster) -> None:
    """ASK: ASKING, EVALSHA and WAIT on one connection of the importing node; MOVED and
    NOSCRIPT: resent with its WAIT, as `evalsha` is."""
    shard = 4
    slot = slot_of(tagged(shard))
    source = cluster.owner(slot)
    target = next(port for port in cluster.masters() if port != source)
    source_id, target_id = cluster.id_of(source), cluster.id_of(target)
    here, there = tagged(shard, "here"), tagged(shard, "there")
    replica = cluster_replica(cluster, target)

    async def scenario() -> ClusterLane:
        lane = ClusterLane.from_location(_location(cluster), timeout_s=5)

        async def call(key: str) -> tuple[int, int]:
            result: tuple[int, int] = await lane.evalsha_then_wait(
                INCR, [key], [], replicas=1, timeout_ms=1000)
            return result

        assert await call(here) == (1, 1)
        _set_slot(cluster, target, slot, "IMPORTING", source_id)
        _set_slot(cluster, source, slot, "MIGRATING", target_id)
        cluster.node(target).script_flush()  # and the target never saw the script
        assert await call(there) == (1, 1)  # ASK, NOSCRIPT, then ASKING + EVALSHA + WAIT
        # `there` is on the target's replica (which redirects reads of a slot its master
        # only imports: counted, not read)
        assert replica.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 1
        assert lane.redirections == 1
        cluster.node(source).execute_command(
            "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", here)
        for port in cluster.masters():
            _set_slot(cluster, port, slot, "NODE", target_id)
        assert await call(here) == (2, 1)  # MOVED to the target, waited there
        assert replica.get(here) == "2"
        await lane.close()
        return lane

    try:
        lane = asyncio.run(scenario())
    finally:  # whatever happened, the slot ends up served by one node
        for port in cluster.masters():
            _set_slot(cluster, port, slot, "NODE", target_id)
        replica.close()
    assert lane.redirections == 2  # the ASK, then one MOVED
    assert calls(cluster.node(target), "wait") >= 2


def test_a_sentinel_call_returns_once_the_replica_holds_it(sentinel: LocalSentinel) -> None:
    master, replica = sentinel.node(sentinel.master()), sentinel.node(sentinel.replica())
    confirmed = WAITS.confirmed

    async def scenario() -> None:
        lane = lane_from_url(sentinel.url)
        assert isinstance(lane, SentinelLane)
        assert await lane.evalsha_then_wait(INCR, ["k"], [], replicas=1,
                                            timeout_ms=1000) == (1, 1)
        master.script_flush()  # NOSCRIPT: loaded, then sent again with its WAIT
        assert await lane.evalsha_then_wait(INCR, ["k"], [], replicas=1,
                                            timeout_ms=1000) == (2, 1)
        master.config_resetstat()
        waited = ReplicaWait(lane, 1, 1000)
        for i in range(3, CALLS + 3):
            assert await waited.evalsha(INCR, ["k"]) == i
            assert replica.get("k") == str(i)
        await waited.close()

    asyncio.run(scenario())
    assert WAITS.confirmed - confirmed == CALLS
    assert (calls(master, "evalsha"), calls(master, "wait")) == (CALLS, CALLS)


def test_the_plugins_engine_takes_the_option_on_cluster_and_sentinel_urls(
        cluster: LocalCluster, sentinel: LocalSentinel) -> None:
    """StartInstance used to refuse it there; now each engine's calls are waited for."""
    confirmed = WAITS.confirmed
    for url in (cluster.url, sentinel.url):
        engine = EngineCache().get(url, 1000, wait_replicas=1, wait_timeout_ms=500)
        decision = asyncio.run(engine.authorize(AuthorizeRequest("r-1", "acme", "alice", 1)))
        assert not decision.admitted  # no wallet: refused, and the answer still waited for
    assert WAITS.confirmed - confirmed >= 2
