"""`kong-credits pluginserver --workers N --metrics-port P`: the parent's /metrics sums what
every worker process counted, through real server processes, nginx-worker drivers and Redis."""

from __future__ import annotations

import json
import os
import signal
import socket

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families
from test_pluginserver_workers import children, drivers, start  # noqa: F401 - fixtures
from waits import wait_until

from kong_credits import wallets


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def admitted(port: int) -> float:
    key = ("kong_credits_decisions_total", (("outcome", "admitted"), ("reason", "")))
    return scrape(port).get(key, 0.0)


def test_the_parent_serves_the_sum_of_its_workers_counts(start, drivers, redis_url) -> None:  # noqa: F811
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    wallets.grant(client, "payer", 1000)
    port = free_port()
    server = start(2, "-m", "credits=kong_credits.plugin", "--metrics-port", str(port))
    server.status()  # listening, and the parent serves /metrics
    assert admitted(port) == 0
    config = json.dumps({"cost": 1, "redis_url": redis_url})
    procs = [drivers.start(server.path, "--credits", config, "--events", "50")
             for _ in range(2)]
    results = [drivers.result(proc) for proc in procs]
    assert [r["errors"] for r in results] == [[], []]
    assert len({r["worker_pids"][0] for r in results}) == 2  # one on each process

    wait_until(lambda: admitted(port) == 100)  # each worker publishes once a second
    samples = scrape(port)
    assert wallets.balance(client, "payer").balance == 1000 - 100  # counted what Redis charged
    # Every authorize answered, plus each process's shard check before its first one.
    assert samples[("kong_credits_redis_call_seconds_count", ())] == 100 + 2
    assert samples[("kong_credits_events_in_flight", ())] == 0
    assert samples[("kong_credits_redis_reconnects_total", ())] == 0

    killed = results[0]["worker_pids"][0]
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: len(children(server.proc.pid) - {killed}) == 2)  # forked again
    assert admitted(port) == 100  # a counter never goes back: its last snapshot stays
    again = drivers.result(drivers.start(server.path, "--credits", config, "--events", "10"))
    assert again["errors"] == []
    wait_until(lambda: admitted(port) == 110)
    drivers.release()
    server.stop()


def test_the_parent_sums_what_its_workers_spooled(start, drivers) -> None:  # noqa: F811
    port = free_port()
    server = start(2, "-m", "credits=kong_credits.plugin", "--metrics-port", str(port))
    server.status()
    away = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: Redis is away
    config = json.dumps({"cost": 1, "redis_url": away, "on_redis_error": "spool"})
    procs = [drivers.start(server.path, "--credits", config, "--events", "20")
             for _ in range(2)]
    results = [drivers.result(proc) for proc in procs]
    assert [r["errors"] for r in results] == [[], []]
    assert len({r["worker_pids"][0] for r in results}) == 2

    spooled = ("kong_credits_spool_spooled_total", ())
    wait_until(lambda: scrape(port).get(spooled) == 40)  # each worker publishes once a second
    samples = scrape(port)
    assert samples[("kong_credits_spool_dropped_total", ())] == 0
    assert samples[("kong_credits_spool_bytes", ())] > 0
    assert samples[("kong_credits_decisions_total",
                    (("outcome", "spooled"), ("reason", "redis_error")))] == 40
    drivers.release()
    server.stop()
