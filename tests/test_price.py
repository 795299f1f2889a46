"""price.py: the metered plugin's `price` record, from serialized log data, rounding included,
alone and through the plugin on the Kong-protocol host."""

from __future__ import annotations

import asyncio
import math
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from test_plugin_access import HostThread

from kong_credits import wallets
from kong_credits.host import Host, credits_servers
from kong_credits.host.context import Headers, UpstreamRequest, UpstreamResponse
from kong_credits.keys import WalletKeys
from kong_credits.price import COMPONENTS, KB, Price


def entry(request_size: Any = 0, response_size: Any = 0, proxy: Any = 0,
          status: int = 200) -> dict[str, Any]:
    """The parts of kong.log.serialize()'s table the price reads, in Kong's shape."""
    return {"request": {"size": request_size, "method": "GET"},
            "response": {"status": status, "size": response_size, "headers": {}},
            "latencies": {"kong": 1, "proxy": proxy, "request": 2, "receive": 0}}


class TestFormula:
    def test_each_component_is_rounded_up_on_its_own(self):
        price = Price(per_request=2, per_kb_request=1, per_kb_response=3, per_second=5)
        breakdown = price.compute(entry(1, KB + 1, 1), header_cost=None, max_cost=10**6)
        assert breakdown.components == {
            "price_request": 2, "price_request_kb": 1,  # 1 byte: a whole credit
            "price_response_kb": 4,  # 3 x 1025 / 1024 = 3.003 -> 4
            "price_seconds": 1,  # 5 x 0.001 s -> 1
            "request_bytes": 1, "response_bytes": KB + 1, "proxy_ms": 1}
        assert breakdown.cost == 8

    def test_the_components_are_the_ones_events_and_the_spool_know(self):
        """A new component must join COMPONENTS: the spool refuses a settled price with a
        name it does not know (spool/records.py), and the forwarder passes on only those."""
        breakdown = Price(per_request=1).compute(entry(), header_cost=2, max_cost=10)
        assert set(breakdown.components) == set(COMPONENTS)

    @pytest.mark.parametrize(("size", "per_kb", "credits"), [
        (0, 7, 0), (KB, 7, 7), (KB - 1, 7, 7), (2 * KB, 7, 14), (2 * KB + 1, 7, 15),
        (146, 7, 1), (10**12, 1, 976_562_500), (5, 0, 0)])
    def test_rounding_of_the_size_components(self, size, per_kb, credits):
        price = Price(per_kb_response=per_kb)
        assert price.compute(entry(response_size=size), header_cost=None,
                             max_cost=10**15).components["price_response_kb"] == credits

    @pytest.mark.parametrize(("proxy", "credits"), [
        (999, 3), (1000, 3), (1001, 4), (0, 0), (-1, 0),  # -1: Kong's "no upstream"
        (0.2, 1), (None, 0), ("1200", 4), ("12ms", 0), ("-5", 0), ("1" * 40, 0), (True, 0),
        (float("nan"), 0), (float("inf"), 0)])
    def test_upstream_time_and_what_kong_did_not_report(self, proxy, credits):
        price = Price(per_second=3)
        assert price.compute(entry(proxy=proxy), header_cost=None,
                             max_cost=10**15).components["price_seconds"] == credits

    def test_a_free_status_costs_nothing_but_keeps_its_components(self):
        price = Price(per_request=4, per_kb_response=2, status_free=frozenset({500, 503}))
        free = price.compute(entry(response_size=3000, status=503), header_cost=7, max_cost=99)
        assert free.cost == 0 and free.components["price_response_kb"] == 6
        assert price.compute(entry(response_size=3000, status=502), header_cost=7,
                             max_cost=99).cost == 4 + 6 + 7

    def test_max_cost_caps_the_sum_including_the_header(self):
        price = Price(per_request=10)
        assert price.compute(entry(), header_cost=45, max_cost=50).cost == 50
        assert price.compute(entry(), header_cost=39, max_cost=50).cost == 49

    def test_sizes_far_past_2_to_the_53_stay_exact_and_capped(self):
        price = Price(per_kb_request=10**15)
        breakdown = price.compute(entry(request_size=2**80), header_cost=None, max_cost=10**15)
        assert breakdown.components["price_request_kb"] == 10**15 * 2**70
        assert breakdown.cost == 10**15

    def test_a_malformed_entry_prices_only_the_fixed_part(self):
        price = Price(per_request=3, per_kb_request=1, per_kb_response=1, per_second=1)
        for odd in ({}, {"request": "x", "response": [], "latencies": None}):
            assert price.compute(odd, header_cost=None, max_cost=100).cost == 3


# -- through the plugin on the Kong-protocol host --------------------------------------------

async def upstream(request: UpstreamRequest) -> UpstreamResponse:
    """`?bytes=N` body of N bytes, `?status=S`, `?sleep_ms=M`, `?units=U` (X-Units-Used)."""
    query = dict(pair.partition("=")[::2] for pair in request.raw_query.split("&") if pair)
    headers = Headers([("Content-Type", "application/octet-stream")])
    if "units" in query:
        headers.add("X-Units-Used", query["units"])
    await asyncio.sleep(int(query.get("sleep_ms", 0)) / 1000)
    return UpstreamResponse(int(query.get("status", 200)), headers,
                            b"x" * int(query.get("bytes", 0)))


def gateway_config(redis_url: str) -> dict[str, Any]:
    def route(name: str, **config: Any) -> tuple[dict, dict]:
        return ({"name": name, "paths": [f"/{name}"]},
                {"name": "credits-metered", "route": name,
                 "config": {"redis_url": redis_url, **config}})

    routes = [
        route("sized", cost=10, max_cost=100_000,
              price={"per_request": 2, "per_kb_request": 1, "per_kb_response": 3,
                     "status_free": [500, 503]}),
        route("timed", cost=5, max_cost=10**6, price={"per_second": 1000}),
        route("capped", cost=5, max_cost=50, price={"per_kb_response": 1000}),
        route("combined", cost=10, cost_header="X-Units-Used", max_cost=1000,
              price={"per_request": 1, "per_kb_response": 1}),
    ]
    return {
        "_format_version": "3.0",
        "services": [{"name": "api", "url": "http://upstream.invalid:8080",
                      "routes": [r for r, _ in routes]}],
        "consumers": [{"username": "alice", "custom_id": "priced",
                       "keyauth_credentials": [{"key": "ka"}]}],
        "plugins": [*[p for _, p in routes],
                    *[{"name": "key-auth", "route": r["name"]} for r, _ in routes]],
    }


@pytest.fixture(scope="module")
def gateway(redis_url: str) -> Iterator[HostThread]:
    host = Host(gateway_config(redis_url), credits_servers(tempfile.mkdtemp(prefix="kc-")),
                upstream=upstream)
    runner = HostThread(host)
    runner.run(host.start())
    yield runner
    runner.close()


def settled(r: redis.Redis) -> dict[str, str]:
    [(_, event)] = [e for e in r.xrange(WalletKeys("priced").events)
                    if e[1]["wallet"] == "priced"]
    return event


def response_size(response: Any) -> int:
    """What the host's kong.log.serialize() reports as response.size (host/serialize.py)."""
    return len(response.body) + sum(len(k) + len(v) + 4 for k, v in response.headers)


def test_size_price_from_the_serialized_log(gateway, r):
    wallets.grant(r, "priced", 1000)
    response = gateway.get("/sized?bytes=5000")
    assert response.status == 200 and response.header("X-Credits-Remaining") == "990"
    event = settled(r)
    request_bytes, response_bytes = int(event["request_bytes"]), int(event["response_bytes"])
    assert response_bytes == response_size(response) > 5000
    expected = 2 + math.ceil(request_bytes / KB) + math.ceil(3 * response_bytes / KB)
    assert (int(event["cost"]), event["reserved"]) == (expected, "10")
    assert (event["price_request"], event["price_request_kb"], event["price_response_kb"]) == (
        "2", str(math.ceil(request_bytes / KB)), str(math.ceil(3 * response_bytes / KB)))
    assert wallets.balance(r, "priced").balance == 1000 - expected


def test_upstream_time_is_priced_from_latencies_proxy(gateway, r):
    wallets.grant(r, "priced", 10_000)
    response = gateway.get("/timed?sleep_ms=60")
    event = settled(r)
    proxy_ms = int(event["proxy_ms"])
    assert proxy_ms == int(response.header("X-Kong-Upstream-Latency")) >= 60
    assert event["cost"] == event["price_seconds"] == str(proxy_ms)  # 1000/s: 1 a ms


def test_a_free_status_is_charged_nothing(gateway, r):
    wallets.grant(r, "priced", 100)
    response = gateway.get("/sized?bytes=2000&status=503")
    assert response.status == 503
    event = settled(r)
    assert (event["cost"], event["status"]) == ("0", "503")
    assert int(event["price_response_kb"]) > 0
    assert wallets.balance(r, "priced").balance == 100


def test_the_price_is_capped_by_max_cost(gateway, r):
    wallets.grant(r, "priced", 100)
    gateway.get("/capped?bytes=100000")
    assert settled(r)["cost"] == "50"
    assert wallets.balance(r, "priced").balance == 50


def test_price_adds_to_the_cost_header(gateway, r):
    wallets.grant(r, "priced", 100)
    response = gateway.get("/combined?units=7&bytes=3000")
    event = settled(r)
    expected = 7 + 1 + math.ceil(response_size(response) / KB)
    assert (int(event["cost"]), event["price_header"]) == (expected, "7")
    assert wallets.balance(r, "priced").balance == 100 - expected
