"""`redis_wait_replicas: 1` across a master killed with SIGKILL under traffic, on Redis
Cluster (the session's 3 masters + 3 replicas) and on Sentinel (1 master, 1 replica, 3
sentinels), through the Kong-protocol host and the real plugin server (its default
`--workers`, with `--metrics-port`).

What the option promises (README, Production Redis: Failover): a request answered once a
replica acknowledged its writes survives the promotion of that replica. So after the
failover every request the host saw admitted has its charge and its event (none lost),
nothing is charged twice, and the forwarder delivers every event once. A request answered
503 may still have been charged (its script ran as the master died, the reply was lost):
those are counted and bounded, as in test_plugin_cluster.py.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from plugin_traffic import Traffic, all_event_ids, assert_charged_once, paid_route_config
from prometheus_client.parser import text_string_to_metric_families
from redis_cluster import LocalCluster
from redis_sentinel import LocalSentinel
from test_plugin_access import HostThread, upstream
from test_plugin_cluster import KEYS, WALLETS, WARM, assert_delivered, client_of, fund
from test_plugin_metrics import free_port
from waits import wait_until

from kong_credits import wallets
from kong_credits.cli import main
from kong_credits.host import Host, credits_servers
from kong_credits.keys import WalletKeys
from kong_credits.redis_routing import slot_of

sys.path.insert(0, str(Path(__file__).parent / "sinks"))
from billing_recorder import BillingRecorder, sink_args

COST = 3  # test_plugin_cluster's `fund` and `assert_delivered` use its own: the same
TIMEOUT_MS = 300
WAIT_TIMEOUT_MS = 100  # < TIMEOUT_MS; two of them (a call queued behind a WAIT) too
BOUND_S = 2 * TIMEOUT_MS / 1000
SLACK_S = 0.4  # as in test_plugin_cluster.py
THREADS = 8
FAST = ["--backoff-base-ms", "1", "--backoff-max-ms", "50", "--claim-idle-ms", "200",
        "--block-ms", "50", "--max-attempts", "20", "--log-level", "error"]


def waiting_config(redis_url: str, consumers: dict[str, str]) -> dict[str, Any]:
    config = paid_route_config(redis_url, COST, TIMEOUT_MS, consumers)
    (route,) = config["services"][0]["routes"]
    credits = next(p for p in route["plugins"] if p["name"] == "credits")
    credits["config"].update(redis_wait_replicas=1, redis_wait_timeout_ms=WAIT_TIMEOUT_MS)
    return config


def start_gateway(redis_url: str, consumers: dict[str, str]) -> tuple[HostThread, int]:
    port = free_port()
    specs = [dataclasses.replace(spec, start_cmd=f"{spec.start_cmd} --metrics-port {port}")
             if spec.start_cmd else spec
             for spec in credits_servers(tempfile.mkdtemp(prefix="kc-"))]
    host = Host(waiting_config(redis_url, consumers), specs, upstream=upstream)
    runner = HostThread(host)
    runner.run(host.start())
    return runner, port


def counters(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def counter(port: int, name: str, **labels: str) -> float:
    return counters(port).get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def cluster_gateway(redis_cluster: LocalCluster) -> Iterator[tuple[HostThread, int]]:
    runner, port = start_gateway(redis_cluster.url, {**KEYS, WARM: WARM})
    yield runner, port
    runner.close()


@pytest.mark.integration
def test_a_cluster_master_killed_loses_no_admitted_request(
        cluster_gateway: tuple[HostThread, int], cluster: LocalCluster) -> None:
    gateway, metrics = cluster_gateway
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
            traffic.wait(10, status=200, wallet=wallet, after=promoted_at)
    statuses = traffic.statuses()
    assert set(statuses) == {200, 503}, statuses
    assert traffic.slowest() < BOUND_S + SLACK_S
    # lost=0: every request answered 200 has its charge and its event on the promoted
    # replica. In doubt (503 yet charged): as test_plugin_cluster.py explains.
    in_doubt, lost = assert_charged_once(client_of(cluster), traffic, funds, COST,
                                         in_doubt=2 * THREADS, lost=0)
    assert_delivered(cluster, traffic)
    print(f"cluster failover with redis_wait_replicas=1: {statuses[200]} admitted, "
          f"{statuses[503]} refused (503), {in_doubt} in doubt, {lost} lost")
    # The plugin server's metrics (summed over its workers) saw the map re-read and the
    # WAITs: confirmed before the kill, unconfirmed on the promoted master (no replica yet).
    wait_until(lambda: counter(metrics, "kong_credits_redis_refreshes_total",
                               kind="slot_map") >= 2, timeout_s=5)
    assert counter(metrics, "kong_credits_replica_waits_total", outcome="confirmed") > 0
    assert counter(metrics, "kong_credits_redis_errors_total", kind="connection") > 0


SENTINEL_WALLETS = WALLETS[:4]
SENTINEL_KEYS = {f"key-{wallet}": wallet for wallet in SENTINEL_WALLETS}


@pytest.fixture(scope="module")
def sentinel_gateway(redis_sentinel: LocalSentinel) -> Iterator[tuple[HostThread, int]]:
    runner, port = start_gateway(redis_sentinel.url, SENTINEL_KEYS)
    yield runner, port
    runner.close()


@pytest.mark.integration
def test_a_sentinel_master_killed_loses_no_admitted_request(
        sentinel_gateway: tuple[HostThread, int], sentinel: LocalSentinel) -> None:
    gateway, metrics = sentinel_gateway
    old = sentinel.master()
    client = sentinel.node(old)
    for wallet in SENTINEL_WALLETS:
        wallets.grant(client, wallet, 10**9)
    assert client.execute_command("WAIT", 1, 1000) == 1  # the grants are on the replica
    funds = dict.fromkeys(SENTINEL_WALLETS, 10**9)
    with Traffic(gateway, SENTINEL_KEYS, threads=THREADS) as traffic:
        traffic.wait(300, status=200)
        sentinel.kill(old)
        wait_until(lambda: sentinel.named_master() not in (old, None), timeout_s=30,
                   interval_s=0.05)
        promoted_at = time.monotonic()
        traffic.wait(50, status=200, after=promoted_at)
    statuses = traffic.statuses()
    assert set(statuses) == {200, 503}, statuses
    assert traffic.slowest() < BOUND_S + SLACK_S
    new = sentinel.master()
    in_doubt, lost = assert_charged_once(lambda wallet: sentinel.node(new), traffic, funds,
                                         COST, in_doubt=2 * THREADS, lost=0)
    ids = all_event_ids(sentinel.node(new))
    assert len(ids) == len(set(ids)) == statuses[200] + in_doubt
    with BillingRecorder("http") as backend:
        result = CliRunner().invoke(main, ["forwarder", *sink_args("http", backend.url),
                                           "--drain", *FAST, "--redis-url", sentinel.url])
        assert result.exit_code == 0, result.output
        assert set(backend.stored) == set(ids)
    print(f"sentinel failover with redis_wait_replicas=1: {statuses[200]} admitted, "
          f"{statuses[503]} refused (503), {in_doubt} in doubt, {lost} lost")
    wait_until(lambda: counter(metrics, "kong_credits_redis_refreshes_total",
                               kind="sentinel") >= 2, timeout_s=5)
    assert counter(metrics, "kong_credits_replica_waits_total", outcome="confirmed") > 0
