"""Traffic through the plugin on the Kong-protocol host, the usage sink drained into SQLite
and PostgreSQL: `kong-credits usage` equals what the host saw admitted and what the wallets
were charged, metered requests at their settled price."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from test_plugin_access import HostThread, start_gateway

from kong_credits import wallets
from kong_credits.cli import main
from kong_credits.keys import event_streams
from kong_credits.usage import parse_time

pytestmark = pytest.mark.integration

SERVICE = "5f0c9c1e-0000-4000-8000-000000000001"
ROUTES = {name: f"5f0c9c1e-0000-4000-8000-00000000001{n}"
          for n, name in enumerate(["paid", "cheap", "metered", "free"])}
PRICES = {"paid": 5, "cheap": 2, "free": 0}
ESTIMATE, MAX_COST = 10, 25
KEYS = {"ka": "wallet-a", "kb": "team/bob", "kc": "team/carol"}
FUNDS = {"wallet-a": 400, "team": 100_000}


def config(redis_url: str) -> dict[str, Any]:
    def plugin(name: str) -> dict[str, Any]:
        if name == "metered":
            return {"name": "credits-metered", "route": name, "config": {
                "redis_url": redis_url, "cost": ESTIMATE, "max_cost": MAX_COST,
                "cost_header": "X-Units-Used"}}
        return {"name": "credits", "route": name, "config": {
            "redis_url": redis_url, "cost": PRICES[name], "record_request": name == "paid"}}

    return {
        "_format_version": "3.0",
        "services": [{"id": SERVICE, "name": "api", "url": "http://upstream.invalid:8080",
                      "routes": [{"id": rid, "name": name, "paths": [f"/{name}"]}
                                 for name, rid in ROUTES.items()]}],
        "consumers": [
            {"username": "alice", "custom_id": "wallet-a", "keyauth_credentials": [{"key": "ka"}]},
            {"username": "bob", "tags": ["credits-wallet:team/bob"],
             "keyauth_credentials": [{"key": "kb"}]},
            {"username": "carol", "tags": ["credits-wallet:team/carol"],
             "keyauth_credentials": [{"key": "kc"}]}],
        "plugins": [*[plugin(name) for name in ROUTES],
                    *[{"name": "key-auth", "route": name} for name in ROUTES]],
    }


@pytest.fixture(scope="module")
def gateway(redis_url: str) -> Iterator[HostThread]:
    runner = start_gateway(config(redis_url))
    yield runner
    runner.close()


class Seen:
    """What the host answered: per admitted request its route, wallet and settled price."""

    def __init__(self) -> None:
        self.admitted: list[tuple[str, str, int]] = []
        self.statuses: Counter[int] = Counter()

    def send(self, gateway: HostThread, seed: int, count: int) -> None:
        rng = random.Random(seed)
        for _ in range(count):
            key, route = rng.choice(list(KEYS)), rng.choice(list(ROUTES))
            path, price = f"/{route}", PRICES.get(route, ESTIMATE)
            if route == "metered" and rng.random() < 0.8:
                units = rng.randint(1, 40)
                path, price = f"{path}?units={units}", min(units, MAX_COST)
            response = gateway.get(path, key=key)
            self.statuses[response.status] += 1
            if response.status == 200:
                self.admitted.append((ROUTES[route], KEYS[key], price))


def drain(tmp_path: Path, redis_url: str, store: str) -> None:
    """`forwarder --sink usage --store URL --drain`: each store has its own consumer group,
    so draining into a second store delivers every event again."""
    done = subprocess.run(
        [sys.executable, "-m", "kong_credits.forwarder.cli", "forwarder", "--sink", "usage",
         "--store", store, "--drain", "--batch-size", "64"],
        cwd=tmp_path, env={**os.environ, "KONG_CREDITS_REDIS_URL": redis_url},
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def usage(*args: str) -> Any:
    result = CliRunner().invoke(main, ["usage", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_usage_equals_what_the_host_admitted_and_the_wallets_were_charged(
        gateway: HostThread, r: redis.Redis, redis_url: str, postgres, tmp_path: Path) -> None:
    for wallet, amount in FUNDS.items():
        wallets.grant(r, wallet, amount)
    seen = Seen()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: seen.send(gateway, n, 120), range(4)))
    assert seen.statuses[402] > 0 and len(seen.admitted) > 300, seen.statuses
    per_route: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for route, _, price in seen.admitted:
        per_route[route][0] += 1
        per_route[route][1] += price
    per_hour: Counter[str] = Counter()
    for stream in event_streams():
        for _, fields in r.xrange(stream):
            hour_ms = int(fields["timestamp"]) // 3_600_000 * 3_600_000
            per_hour[f"{hour_ms}"] += int(fields["cost"])
    charged = {wallet: amount - wallets.balance(r, wallet).balance
               for wallet, amount in FUNDS.items()}
    assert sum(charged.values()) == sum(price for _, _, price in seen.admitted)

    stores = {"sqlite": f"sqlite:///{tmp_path}/usage.db", "postgresql": postgres.new_database()}
    for kind, store in stores.items():
        drain(tmp_path, redis_url, store)
        by_route = usage("--by", "route,service", "--since", "2h", "--json", "--store", store)
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for row in by_route["rows"]:
            assert row["service"] == ""  # the plugins are attached to routes, not the service
            totals[row["route"]][0] += row["requests"]
            totals[row["route"]][1] += row["credits"]
        assert totals == per_route, kind
        hourly = usage("--since", "2h", "--json", "--store", store)["rows"]
        assert {str(int(parse_time(row["start"]).timestamp()) * 1000): row["credits"]
                for row in hourly} == dict(per_hour), kind
        alone = usage("wallet-a", "--bucket", "day", "--since", "1d", "--json", "--store", store)
        assert sum(row["credits"] for row in alone["rows"]) == charged["wallet-a"], kind
        team = usage("team", "--members", "--by", "wallet", "--bucket", "day", "--since", "1d",
                     "--json", "--store", store)
        assert sum(row["credits"] for row in team["rows"]) == charged["team"], kind
        assert {row["wallet"] for row in team["rows"]} == {"team/bob", "team/carol"}
        events = usage("events", "team/bob", "--limit", "100000", "--json", "--store", store)
        assert len(events) == sum(1 for _, w, _ in seen.admitted if w == "team/bob"), kind
        assert [e["time"] for e in events] == sorted((e["time"] for e in events), reverse=True)
        metered = [e for e in events if e["route"] == ROUTES["metered"]]
        assert metered and all(e["reserved"] == ESTIMATE for e in metered)
        paid = [e for e in events if e["route"] == ROUTES["paid"]]
        assert paid and all(e["method"] == "GET" and e["path"].startswith("/paid")
                            for e in paid)
