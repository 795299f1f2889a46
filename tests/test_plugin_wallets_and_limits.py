"""Who pays and what counts, through the plugin: host -> real plugin server -> real Redis.

The attacks of issue 11 played as a consumer would: a custom_id or username that looks like a
member wallet, rate limits that leaked across routes, an upstream that reports any price.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from test_plugin_access import HostThread, start_gateway

from kong_credits import wallets
from kong_credits.keys import WalletKeys


def kong_config(redis_url: str) -> dict[str, Any]:
    def credits(plugin: str = "credits", **config: Any) -> dict[str, Any]:
        return {"name": plugin, "config": {"redis_url": redis_url, **config}}

    def route(name: str, service: str, **config: Any) -> dict[str, Any]:
        return {"name": name, "paths": [f"/{name}"], "service": service,
                "plugins": [credits(**config), {"name": "key-auth"}]}

    def consumer(username: str, key: str, **fields: Any) -> dict[str, Any]:
        return {"username": username, "keyauth_credentials": [{"key": key}], **fields}

    return {
        "_format_version": "3.0",
        "services": [
            {"name": "api", "url": "http://upstream.invalid:8080"},
            # A plugin on a service: its routes count in one window, like rate-limiting.
            {"name": "search", "url": "http://upstream.invalid:8080",
             "plugins": [credits(cost=1, rate_limit={"minute": 2})],
             "routes": [
                 {"name": "search-a", "paths": ["/search-a"], "plugins": [
                     {"name": "key-auth"}]},
                 {"name": "search-b", "paths": ["/search-b"], "plugins": [
                     {"name": "key-auth"}]},
             ]},
        ],
        "routes": [
            route("strict", "api", cost=1, rate_limit={"minute": 2}),
            route("generous", "api", cost=1, rate_limit={"minute": 100}),
            route("shared-a", "api", cost=1, rate_limit={"minute": 2},
                  rate_limit_scope="consumer"),
            route("shared-b", "api", cost=1, rate_limit={"minute": 2},
                  rate_limit_scope="consumer"),
            route("paid", "api", cost=5),
            route("metered", "api", plugin="credits-metered", cost=10,
                  cost_header="X-Units-Used", max_cost=50),
        ],
        "consumers": [
            consumer("alice", "ka", custom_id="wallet-a"),
            consumer("bob", "kb", custom_id="wallet-b"),
            consumer("mallory", "km", custom_id="bigcorp/x"),  # no tag: may not draw on bigcorp
            consumer("bigcorp/y", "ky"),  # a username, no custom_id: the same
            consumer("trudy", "kt", tags=["credits-wallet:bigcorp//x"]),  # not a wallet name
            consumer("zed", "kz", tags=["credits-wallet:bigcorp/z"]),  # a real member
        ],
    }


@pytest.fixture(scope="module")
def gateway(redis_url: str) -> Iterator[HostThread]:
    runner = start_gateway(kong_config(redis_url))
    yield runner
    runner.close()


def events(r: redis.Redis, wallet: str) -> list[dict[str, str]]:
    return [f for _, f in r.xrange(WalletKeys(wallet).events) if f["wallet"] == wallet]


@pytest.mark.parametrize("key", ["km", "ky", "kt"])
def test_a_name_that_is_not_a_usable_wallet_is_refused_not_billed_to_another(gateway, r, key):
    wallets.grant(r, "bigcorp", 1000)
    wallets.grant(r, "bigcorp/x", 5)  # mallory's own credits, once they run out ...
    for _ in range(3):
        response = gateway.get("/paid", key=key)
        assert response.status == 403
        assert response.json() == {"message": "No usable credits wallet for this consumer"}
    assert wallets.balance(r, "bigcorp").balance == 1000  # ... bigcorp's are never touched
    assert wallets.balance(r, "bigcorp/x").balance == 5
    assert events(r, "bigcorp") == events(r, "bigcorp/x") == []


def test_only_the_wallet_tag_names_a_member_of_a_parent(gateway, r):
    wallets.grant(r, "bigcorp", 12)
    assert gateway.get("/paid", key="kz").header("X-Credits-Remaining") == "7"
    assert wallets.balance(r, "bigcorp").balance == 7
    [event] = events(r, "bigcorp/z")
    assert (event["parent"], event["parent_cost"]) == ("bigcorp", "5")


def test_rate_limits_count_per_consumer_and_route(gateway, r):
    wallets.grant(r, "wallet-a", 100)
    wallets.grant(r, "wallet-b", 100)
    for _ in range(5):  # busy on the generous route ...
        assert gateway.get("/generous", key="ka").status == 200
    # ... leaves the strict route's window alone: 2 a minute there, then 429
    assert [gateway.get("/strict", key="ka").status for _ in range(3)] == [200, 200, 429]
    # and another consumer has its own window on the same route
    assert [gateway.get("/strict", key="kb").status for _ in range(3)] == [200, 200, 429]
    assert wallets.balance(r, "wallet-a").balance == 93


def test_consumer_scope_shares_one_window_across_routes(gateway, r):
    wallets.grant(r, "wallet-a", 100)
    assert gateway.get("/shared-a").status == 200
    assert gateway.get("/shared-b").status == 200
    refused = gateway.get("/shared-a")
    assert refused.status == 429
    assert refused.header("RateLimit-Limit") == "2"
    assert gateway.get("/shared-b").status == 429


def test_a_plugin_on_a_service_counts_across_its_routes(gateway, r):
    wallets.grant(r, "wallet-a", 100)
    statuses = [gateway.get(path).status for path in ("/search-a", "/search-b", "/search-a")]
    assert statuses == [200, 200, 429]
    assert {e["service"] for e in events(r, "wallet-a")} != {""}  # the service's id


@pytest.mark.parametrize(("units", "charged"), [
    ("3", 3),
    ("50", 50),
    ("1000000000000000", 50),  # clamped to max_cost, not 10^15 of debt
    ("99999999999999999999999", 50),
    ("²", 10),  # a Unicode digit is not a price: the estimate
    ("9" * 5000, 10),  # beyond int()'s digit limit: the estimate, no exception
    ("-5", 10),
    ("+7", 7),
])
def test_the_reported_price_is_clamped_and_never_breaks_the_settle(gateway, r, units, charged):
    wallets.grant(r, "wallet-a", 100)
    response = gateway.get(f"/metered?units={units}")
    assert response.status == 200
    [event] = events(r, "wallet-a")
    assert (event["cost"], event["reserved"]) == (str(charged), "10")
    view = wallets.balance(r, "wallet-a")
    assert (view.balance, view.overdraft) == (100 - charged, 0)
    assert r.zcard(WalletKeys("wallet-a").holds) == 0  # settled now, not left to the sweep


def test_overdraft_from_settles_is_bounded_and_counted_as_spent(gateway, r):
    wallets.grant(r, "wallet-a", 10)
    for _ in range(5):
        gateway.get("/metered?units=1000000000000000")
    view = wallets.balance(r, "wallet-a")
    # One request was admitted (10 held, settled at max_cost 50); then the balance is gone.
    assert (view.balance, view.overdraft) == (-40, 40)
    assert view.spent_today == view.spent_this_month == 50
    assert [e["cost"] for e in events(r, "wallet-a")] == ["50"]
