"""`kong-credits pluginserver --metrics-port`: the plugin server's Prometheus metrics, scraped
while the Kong-protocol host sends requests through it to a real Redis."""

from __future__ import annotations

import dataclasses
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from test_plugin_access import DEAD_REDIS, HostThread, upstream

from kong_credits import wallets
from kong_credits.host import Host, credits_servers
from kong_credits.pluginserver_metrics import PluginServerMetrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kong_config(redis_url: str) -> dict[str, Any]:
    def route(name: str, **config: Any) -> tuple[dict, dict]:
        return ({"name": name, "paths": [f"/{name}"]},
                {"name": "credits", "route": name, "config": {"redis_url": redis_url, **config}})

    routes = [
        route("paid", cost=5),
        route("limited", cost=1, rate_limit={"minute": 2}),
        route("shadow", cost=50, mode="shadow"),
        route("down-deny", redis_url=DEAD_REDIS),
        route("down-allow", redis_url=DEAD_REDIS, on_redis_error="allow"),
    ]
    return {
        "_format_version": "3.0",
        "services": [{"name": "api", "url": "http://upstream.invalid:8080",
                      "routes": [r for r, _ in routes]}],
        "consumers": [{"username": "alice", "custom_id": "wallet-m",
                       "keyauth_credentials": [{"key": "ka"}]}],
        "plugins": [*[p for _, p in routes],
                    *[{"name": "key-auth", "route": r["name"]} for r, _ in routes]],
    }


@pytest.fixture(scope="module")
def metrics_gateway(redis_url: str) -> Iterator[tuple[HostThread, int]]:
    port = free_port()
    specs = credits_servers(tempfile.mkdtemp(prefix="kc-"))
    specs = [dataclasses.replace(spec, start_cmd=f"{spec.start_cmd} --workers 1 "
                                 f"--metrics-port {port}") if spec.start_cmd else spec
             for spec in specs]
    host = Host(kong_config(redis_url), specs, upstream=upstream)
    runner = HostThread(host)
    runner.run(host.start())
    yield runner, port
    runner.close()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def decisions(samples: dict, outcome: str, reason: str) -> float:
    key = ("kong_credits_decisions_total", (("outcome", outcome), ("reason", reason)))
    return samples.get(key, 0.0)


def test_decisions_redis_latency_errors_and_events_are_counted(metrics_gateway, r):
    gateway, port = metrics_gateway
    wallets.grant(r, "wallet-m", 12)
    assert [gateway.get("/paid").status for _ in range(3)] == [200, 200, 402]
    wallets.grant(r, "wallet-m", 10)  # 12 credits: 2 of them for /limited
    assert [gateway.get("/limited").status for _ in range(3)] == [200, 200, 429]
    shadow = gateway.get("/shadow")  # 50 credits: refused, in shadow mode only flagged
    assert shadow.status == 200 and shadow.header("X-Credits-Shadow-Refusal") == "402"
    assert gateway.get("/down-deny").status == 503
    assert gateway.get("/down-allow").status == 200

    samples = scrape(port)
    assert decisions(samples, "admitted", "") == 4
    assert decisions(samples, "refused", "credits") == 1
    assert decisions(samples, "refused", "rate_limit") == 1
    assert decisions(samples, "shadow_refused", "credits") == 1
    assert decisions(samples, "unavailable", "redis_error") == 1
    assert decisions(samples, "unmetered", "redis_error") == 1
    # 7 authorize calls answered by Redis and the engine's shard check (shards.py) before
    # its first one, each observed once.
    assert samples[("kong_credits_redis_call_seconds_count", ())] == 8
    assert samples[("kong_credits_redis_call_seconds_bucket", (("le", "+Inf"),))] == 8
    errors = {labels: value for (name, labels), value in samples.items()
              if name == "kong_credits_redis_errors_total"}
    assert errors.get((("kind", "connection"),), 0) >= 2  # one outage call per dead route
    assert samples[("kong_credits_events_in_flight", ())] == 0
    # One node, no replica wait: no redirection, refresh or reconnect to count.
    assert samples[("kong_credits_redis_reconnects_total", ())] == 0
    assert {(name, labels): value for (name, labels), value in samples.items() if name in (
        "kong_credits_redis_redirections_total", "kong_credits_redis_refreshes_total",
        "kong_credits_replica_waits_total")} == {
        ("kong_credits_redis_redirections_total", (("kind", "moved"),)): 0,
        ("kong_credits_redis_redirections_total", (("kind", "ask"),)): 0,
        ("kong_credits_replica_waits_total", (("outcome", "confirmed"),)): 0,
        ("kong_credits_replica_waits_total", (("outcome", "unconfirmed"),)): 0}


def test_histogram_buckets_hold_their_upper_bound():
    metrics = PluginServerMetrics(CollectorRegistry())
    for seconds in (0.0005, 0.0006, 3.0):
        metrics.redis_seconds.observe(seconds)
    metrics.redis_error(TimeoutError())
    samples = {(s.name, tuple(s.labels.items())): s.value
               for family in metrics.registry.collect() for s in family.samples}
    bucket = "kong_credits_redis_call_seconds_bucket"
    assert samples[(bucket, (("le", "0.0005"),))] == 1  # le: bound included
    assert samples[(bucket, (("le", "0.001"),))] == 2
    assert samples[(bucket, (("le", "2.5"),))] == 2
    assert samples[(bucket, (("le", "+Inf"),))] == 3
    assert samples[("kong_credits_redis_call_seconds_count", ())] == 3
    assert samples[("kong_credits_redis_errors_total", (("kind", "timeout"),))] == 1
