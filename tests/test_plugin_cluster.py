"""The plugin on Redis Cluster, 3 masters + 3 replicas (conftest's `cluster`), driven through
the Kong-protocol host and the real plugin server with a `redis+cluster://` URL.

Steady state: wallets on every master, concurrent traffic, no overdraft, one EVALSHA per
request summed over every node, every admitted request's event delivered by the forwarder.
Then the two ways a cluster changes under traffic: a master killed with SIGKILL (the plugin
answers 503 within its bound until a replica is promoted, then 200 again, and nothing is
charged twice) and a slot migrated by `redis-cli --cluster reshard` (followed without one
error).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from plugin_traffic import (
    Traffic,
    all_event_ids,
    assert_charged_once,
    paid_route_config,
    wallet_events,
    wallet_names,
)
from redis_cluster import LocalCluster, redis_cli
from test_plugin_access import HostThread, upstream
from test_plugin_metrics import free_port, scrape
from waits import wait_until

from kong_credits import wallets
from kong_credits.cli import main
from kong_credits.engine import AUTHORIZE
from kong_credits.host import Host, credits_servers
from kong_credits.keys import SHARDS, WalletKeys, event_stream, shard_of
from kong_credits.redis_routing import slot_of

sys.path.insert(0, str(Path(__file__).parent / "sinks"))
from billing_recorder import BillingRecorder, sink_args

COST = 3
TIMEOUT_MS = 300
BOUND_S = 2 * TIMEOUT_MS / 1000  # what a request may wait for Redis (redis_pool.py)
SLACK_S = 0.4  # the host's own RPCs and scheduling around that wait, on a busy 2-core box
THREADS = 8
WALLETS = wallet_names(range(SHARDS))  # one per shard: every master serves several
KEYS = {f"key-{wallet}": wallet for wallet in WALLETS}
WARM = "warm-up"  # a wallet of its own for the requests that open the plugin's connections
FAST = ["--backoff-base-ms", "1", "--backoff-max-ms", "50", "--claim-idle-ms", "200",
        "--block-ms", "50", "--max-attempts", "20", "--log-level", "error"]


@pytest.fixture(scope="module")
def metrics_port() -> int:
    """Where the plugin server's metrics (summed over its workers) are served."""
    return free_port()


@pytest.fixture(scope="module")
def gateway(redis_cluster: LocalCluster, metrics_port: int) -> Iterator[HostThread]:
    specs = [dataclasses.replace(spec, start_cmd=f"{spec.start_cmd} --metrics-port "
                                 f"{metrics_port}") if spec.start_cmd else spec
             for spec in credits_servers(tempfile.mkdtemp(prefix="kc-"))]
    host = Host(paid_route_config(redis_cluster.url, COST, TIMEOUT_MS, {**KEYS, WARM: WARM}),
                specs, upstream=upstream)
    runner = HostThread(host)
    runner.run(host.start())
    yield runner
    runner.close()


def fund(cluster: LocalCluster, gateway: HostThread, credits: int) -> dict[str, int]:
    """Every wallet granted `credits`; the authorize script loaded on every master (a first
    NOSCRIPT would count as an EVALSHA); one request made (the plugin's first checks the
    deployment's shard count); statistics zeroed."""
    client = cluster.client()
    for wallet in [*WALLETS, WARM]:
        wallets.grant(client, wallet, credits)
    client.close()
    for port in cluster.masters():
        cluster.node(port).script_load(AUTHORIZE.source)
    assert gateway.get("/paid", key=WARM).status == 200
    for port in cluster.alive():
        cluster.node(port).config_resetstat()
    return dict.fromkeys(WALLETS, credits)


def forward_everything(cluster: LocalCluster) -> set[str]:
    """`kong-credits forwarder --drain` on the cluster URL: the event ids it delivered."""
    with BillingRecorder("http") as backend:
        result = CliRunner().invoke(main, ["forwarder", *sink_args("http", backend.url),
                                           "--drain", *FAST, "--redis-url", cluster.url])
        assert result.exit_code == 0, result.output
        return set(backend.stored)


def assert_delivered(cluster: LocalCluster, traffic: Traffic) -> None:
    client = cluster.client()
    ids = [i for i in all_event_ids(client) if i not in warm_ids(client)]
    client.close()
    assert len(ids) == len(set(ids)) >= traffic.statuses()[200]
    assert forward_everything(cluster) - warm_ids(cluster.client()) == set(ids)


def client_of(cluster: LocalCluster) -> Callable[[str], redis.Redis]:
    client = cluster.client()
    return lambda wallet: client


def warm_ids(client: Any) -> set[str]:
    return {event["event_id"] for event in wallet_events(client, WARM)}


def test_traffic_on_every_master_is_charged_once_with_one_evalsha_each(
        gateway: HostThread, cluster: LocalCluster) -> None:
    owners = {cluster.owner_of(WalletKeys(wallet).state) for wallet in WALLETS}
    assert owners == set(cluster.masters()) and len(owners) == 3
    funds = fund(cluster, gateway, 20 * COST)
    with Traffic(gateway, KEYS, threads=THREADS) as traffic:
        for wallet in WALLETS:  # each wallet runs dry under concurrent requests
            traffic.wait(1, status=402, wallet=wallet)
    assert set(traffic.statuses()) == {200, 402}
    assert cluster.calls("evalsha") == len(traffic.answers)  # every node, one per request
    assert cluster.calls("cluster|slots") <= 2 * 2  # a map per plugin server worker, at most
    for wallet in WALLETS:
        assert traffic.admitted(wallet) == 20  # never one more than the funds allow
    assert_charged_once(client_of(cluster), traffic, funds, COST)
    assert_delivered(cluster, traffic)


@pytest.mark.integration
def test_a_master_killed_mid_traffic(gateway: HostThread, cluster: LocalCluster) -> None:
    """SIGKILL a master: its wallets get 503 (on_redis_error deny) within the bound until its
    replica is promoted, then 200 again; the others keep being served, once the cluster is
    whole again at the latest. Requests in flight when it died are asked again with their
    request id, which the promoted replica answers from what was replicated."""
    funds = fund(cluster, gateway, 10**9)
    victim = cluster.owner_of(WalletKeys(WALLETS[0]).state)
    orphans = [w for w in WALLETS if cluster.owner_of(WalletKeys(w).state) == victim]
    with Traffic(gateway, KEYS, threads=THREADS) as traffic:
        traffic.wait(300, status=200)
        cluster.kill(victim)
        wait_until(lambda: cluster.owner_or_none(slot_of(WalletKeys(WALLETS[0]).state))
                   not in (victim, None), timeout_s=30, interval_s=0.05)
        promoted_at = time.monotonic()
        for wallet in orphans:
            traffic.wait(20, status=200, wallet=wallet, after=promoted_at)
    statuses = traffic.statuses()
    assert set(statuses) == {200, 503}, statuses
    assert traffic.statuses(WALLETS[0])[503] > 0  # the outage was seen, and answered
    assert traffic.slowest() < BOUND_S + SLACK_S
    # In doubt: one request per thread in flight as the master died, one per thread resent
    # (CLUSTERDOWN) as the cluster came back, each charged once though answered 503 (0 in
    # 14 runs of 15, 3 in one). Nothing lost: the replica read all the dead master sent.
    assert_charged_once(client_of(cluster), traffic, funds, COST, in_doubt=2 * THREADS)
    assert_delivered(cluster, traffic)


def test_the_cli_reads_and_writes_wallets_on_every_master(cluster: LocalCluster) -> None:
    def cli(*args: str) -> Any:
        result = CliRunner().invoke(main, [*args, "--redis-url", cluster.url])
        assert result.exit_code == 0, result.output
        return result.output

    for wallet in WALLETS:
        cli("grant", wallet, "40", "--grant-id", f"g-{wallet}")
        cli("budget", wallet, "--daily-cap", "30")
        view = json.loads(cli("balance", wallet, "--json"))
        assert (view["balance"], view["budget"]["daily_cap"]) == (40, 30)
        assert f"g-{wallet}" in cli("ledger", wallet)


def cheapest_migration(cluster: LocalCluster) -> tuple[int, int, int]:
    """(shard, source port, slots to move): `--cluster reshard` moves a source's slots
    lowest first, so moving a shard tag's slot moves the source's slots below it too; the
    shard whose slot comes first in its master's slots needs the fewest."""
    owned: dict[int, list[int]] = {}
    for start, end, master, *_ in cluster.node(cluster.alive()[0]).execute_command(
            "CLUSTER", "SLOTS"):
        owned.setdefault(int(master[1]), []).extend(range(start, end + 1))
    options = []
    for shard in range(SHARDS):
        slot = slot_of(event_stream(shard))
        source = next(port for port, slots in owned.items() if slot in slots)
        options.append((sum(1 for s in owned[source] if s <= slot), shard, source))
    count, shard, source = min(options)
    return shard, source, count


@pytest.mark.integration
def test_a_slot_migrated_mid_traffic_is_followed_without_errors(
        gateway: HostThread, cluster: LocalCluster, metrics_port: int) -> None:
    funds = fund(cluster, gateway, 10**9)
    before = scrape(metrics_port)
    shard, source, count = cheapest_migration(cluster)
    target = next(port for port in cluster.masters() if port != source)
    moving = next(wallet for wallet in WALLETS if shard_of(wallet) == shard)
    slot = slot_of(event_stream(shard))
    with Traffic(gateway, KEYS, threads=THREADS) as traffic:
        traffic.wait(300, status=200)
        subprocess.run(
            [redis_cli(), "--cluster", "reshard", f"127.0.0.1:{source}",
             "--cluster-from", cluster.id_of(source), "--cluster-to", cluster.id_of(target),
             "--cluster-slots", str(count), "--cluster-yes"],
            check=True, capture_output=True, timeout=120)
        moved_at = time.monotonic()
        assert cluster.owner(slot) == target
        traffic.wait(50, status=200, wallet=moving, after=moved_at)
    assert set(traffic.statuses()) == {200}, traffic.statuses()
    assert traffic.slowest() < BOUND_S + SLACK_S
    assert_charged_once(client_of(cluster), traffic, funds, COST)

    # The plugin server counted what it followed: at least the MOVED of the moved slot,
    # and the slot map read again after it (workers publish once a second).
    def grew(name: str, kind: str) -> bool:
        key = (name, (("kind", kind),))
        return scrape(metrics_port).get(key, 0) > before.get(key, 0)

    wait_until(lambda: grew("kong_credits_redis_redirections_total", "moved"), timeout_s=5)
    wait_until(lambda: grew("kong_credits_redis_refreshes_total", "slot_map"), timeout_s=5)
