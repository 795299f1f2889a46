"""What the dashboard's browser tests look at: wallets with 30 days of charges.

The charges go through the engine's authorize script at past `now_ms`, so the ledger, the
burn rate, the refusal counters, the alerts and the event streams are the real ones; the usage
forwarder then drains the streams into a usage store.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from admin_server import ADMIN_TOKEN
from selenium import webdriver
from selenium.webdriver.common.by import By

from kong_credits import wallets
from kong_credits.engine import AuthorizeRequest, Engine, RateLimit
from kong_credits.host.declarative import load_declarative
from kong_credits.prices import route_prices

HOUR_MS = 3_600_000
DAYS = 30
CROWD = 1000
"""Wallets besides the acme family: the operator view must stay usable at 1,000."""
KONG_YML = Path(__file__).resolve().parents[2] / "kong" / "kong.yml"


def _routes() -> list[tuple[str, str, str, int]]:
    """(route id, service id, method, price) of kong.yml's routes: events carry Kong's ids,
    which the admin names from the same file, and its prices."""
    config = load_declarative(KONG_YML)
    price = {row["route"]: row["cost"] for row in route_prices(KONG_YML)}
    method = {"generate": "POST"}
    return [(route.id, route.service_id, method.get(route.name, "GET"), price[route.name])
            for route in config.routes]


@dataclass(frozen=True)
class DashboardData:
    wallet_count: int
    base_url: str = ""

    def with_base_url(self, base_url: str) -> DashboardData:
        return replace(self, base_url=base_url)

    def wallet_token(self, wallet: str) -> tuple[str, str]:
        """A new wallet token for `wallet` from the API: (token, its id)."""
        response = httpx.post(f"{self.base_url}/v1/wallets/{wallet}/tokens", timeout=10,
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        response.raise_for_status()
        made = response.json()
        return str(made["token"]), str(made["id"])


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def _requests_in_hour(hour: int) -> int:
    """A daily rhythm (busy afternoons, quiet nights), twice as busy in the last five days:
    the busiest day's requests are within the usage store's raw retention (7 days)."""
    rhythm = 3 + 3 * math.sin((hour % 24 - 8) / 24 * 2 * math.pi)
    return round(rhythm * (2 if hour >= (DAYS - 5) * 24 else 1))


def seed(redis_url: str) -> DashboardData:
    """Fill Redis (flushed first); returns how many wallets there are."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushall()
    engine = Engine(client)
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - DAYS * 24 * HOUR_MS
    wallets.grant(client, "acme", 30_000, grant_id="welcome",
                  expires_at=_iso(now_ms + 20 * 24 * HOUR_MS))
    wallets.grant(client, "acme", 12_345, grant_id="pi_topup", priority=200)
    wallets.grant(client, "acme/alice", 500)
    wallets.set_budget(client, "acme/alice", member_daily_cap=2_000, member_monthly_cap=40_000)
    wallets.set_budget(client, "acme/bob", member_daily_cap=1_000)
    wallets.grant(client, "other", 777)
    for n in range(CROWD):
        wallets.grant(client, f"customer-{n:04d}", 1_000 + n * 997)

    routes = _routes()
    [generate] = [r for r in routes if r[2] == "POST"]
    search = routes[0]
    ids = itertools.count()
    payers = itertools.cycle(("acme", "acme", "acme", "acme/alice", "acme/bob"))
    for hour in range(DAYS * 24):
        for k in range(_requests_in_hour(hour)):
            route, service, method, cost = routes[k % len(routes)]
            at_ms = start_ms + hour * HOUR_MS + (k * 557_000) % HOUR_MS
            engine.authorize(AuthorizeRequest(
                f"dash-{next(ids)}", next(payers), "console", cost, route=route,
                service=service, method=method, path=f"/v1/items?page={k}"),
                now_ms=min(at_ms, now_ms - 1))
    # A burst in the last minute (the burn rate and the projection to zero) that runs into
    # the daily cap (an alert, budget refusals); refusals of the other kinds; some of the
    # crowd spent today.
    wallets.set_budget(client, "acme", daily_cap=2_000)
    minute_ago = now_ms - 60_000
    for k in range(120):
        engine.authorize(AuthorizeRequest(f"dash-{next(ids)}", "acme", "console", generate[3],
                                          route=generate[0], service=generate[1],
                                          method="POST", path=f"/v1/generate?n={k}"),
                         now_ms=minute_ago + k * 100)
    for _ in range(3):
        engine.authorize(AuthorizeRequest(f"dash-{next(ids)}", "other", "c", 1_000))
    limited = [RateLimit(period_s=60, limit=2)]
    for _ in range(5):
        engine.authorize(AuthorizeRequest(f"dash-{next(ids)}", "customer-0007", "c", 1,
                                          limits=limited))
    for n in range(0, CROWD, 50):
        engine.authorize(AuthorizeRequest(f"dash-{next(ids)}", f"customer-{n:04d}", "c", 50 + n,
                                          route=search[0], service=search[1], method="GET"))

    client.close()
    return DashboardData(wallet_count=CROWD + 4)


def drain_into_usage_store(redis_url: str, store_url: str) -> None:
    """`kong-credits forwarder --sink usage --drain`: the usage sink delivers every event of
    the streams into the store, as in production, then exits."""
    done = subprocess.run(
        [sys.executable, "-c", "from kong_credits.cli import main; main()", "forwarder",
         "--sink", "usage", "--store", store_url, "--redis-url", redis_url, "--drain"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def api(dashboard: DashboardData, path: str, token: str = ADMIN_TOKEN, **params: str) -> Any:
    """GET an endpoint of the admin the browser uses, as JSON (what the page must show)."""
    response = httpx.get(dashboard.base_url + path, params=params,
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)
    response.raise_for_status()
    return response.json()


def shown(number: int) -> str:
    """How the page writes a whole number in en-US: thousands separators."""
    return f"{number:,}"


def record_render_time(shots: Path, what: str, browser: webdriver.Chrome) -> int:
    """Write the view's own render time to timings.txt beside the screenshots (a figure for
    the README, never asserted: the machine's load decides it)."""
    render_ms = int(browser.find_element(By.ID, "view").get_attribute("data-render-ms"))
    with (shots / "timings.txt").open("a") as out:
        out.write(f"{what}: {render_ms} ms\n")
    return render_ms
