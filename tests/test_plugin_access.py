"""The credits plugin end to end: Kong-protocol host -> real plugin server -> real Redis.

Kong's 04-access_spec, here: the host plays Kong, starts `kong-credits pluginserver` as Kong
would (query_cmd, then start_cmd) and sends requests through the plugin's phases.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from waits import wait_until_async

from kong_credits import wallets
from kong_credits.host import DeclarativeError, Host, credits_server, credits_servers
from kong_credits.host.context import Headers, UpstreamRequest, UpstreamResponse
from kong_credits.keys import WalletKeys

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connection refused


async def upstream(request: UpstreamRequest) -> UpstreamResponse:
    """Answers 200; `?units=N` reports N units used in X-Units-Used, like a metered API."""
    headers = Headers([("Content-Type", "application/json")])
    for pair in request.raw_query.split("&"):
        name, _, value = pair.partition("=")
        if name == "units":
            headers.add("X-Units-Used", value)
    return UpstreamResponse(200, headers, b'{"ok": true}')


class SilentRedis:
    """A TCP listener that accepts connections and never answers: a hung Redis."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.sock.getsockname()[1]}/0"
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def received(self) -> bytes:
        """What the clients have sent so far, peeked: the listener still never answers."""
        peeked = b""
        for conn in list(self.accepted):
            with contextlib.suppress(BlockingIOError):
                peeked += conn.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        return peeked

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def kong_config(redis_url: str, silent_url: str) -> dict[str, Any]:
    def route(name: str, plugin: str = "credits", **config: Any) -> tuple[dict, dict]:
        return ({"name": name, "paths": [f"/{name}"]},
                {"name": plugin, "route": name, "config": {"redis_url": redis_url, **config}})

    routes = [
        route("paid", cost=5, record_request=True),
        route("limited", cost=1, rate_limit={"minute": 3}),
        route("shadow", cost=5, mode="shadow", rate_limit={"minute": 1}),
        route("free", cost=0),
        route("metered", "credits-metered", cost=10, cost_header="X-Units-Used"),
        route("down-deny", redis_url=DEAD_REDIS),
        route("down-allow", redis_url=DEAD_REDIS, on_redis_error="allow"),
        route("hung", redis_url=silent_url, redis_timeout_ms=200),
        route("stalled", cost=5, redis_timeout_ms=300),
        route("open", cost=1),
    ]
    return {
        "_format_version": "3.0",
        "services": [{"name": "api", "url": "http://upstream.invalid:8080",
                      "routes": [r for r, _ in routes]}],
        "consumers": [
            {"username": "alice", "custom_id": "wallet-a", "keyauth_credentials": [{"key": "ka"}]},
            {"username": "bob", "tags": ["credits-wallet:team"],
             "keyauth_credentials": [{"key": "kb"}]},
            {"username": "carol", "tags": ["credits-wallet:team"],
             "keyauth_credentials": [{"key": "kc"}]},
        ],
        "plugins": [
            *[p for _, p in routes],
            *[{"name": "key-auth", "route": r["name"]} for r, _ in routes if r["name"] != "open"],
        ],
    }


class HostThread:
    """A Host on its own event loop thread, so plain tests can call it synchronously."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coro: Any, timeout_s: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def get(self, path: str, key: str | None = "ka", **headers: str):
        if key:
            headers["apikey"] = key
        response = self.run(self.host.handle("GET", path, headers))
        self.run(response.logged())
        return response

    def close(self) -> None:
        self.run(self.host.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def silent() -> Iterator[SilentRedis]:
    server = SilentRedis()
    yield server
    server.close()


def start_gateway(config: dict[str, Any]) -> HostThread:
    """A started host serving `config` through kong.conf's plugin server entries."""
    host = Host(config, credits_servers(tempfile.mkdtemp(prefix="kc-")), upstream=upstream)
    runner = HostThread(host)
    runner.run(host.start())
    return runner


@pytest.fixture(scope="module")
def gateway(redis_url: str, silent: SilentRedis) -> Iterator[HostThread]:
    runner = start_gateway(kong_config(redis_url, silent.url))
    yield runner
    runner.close()


def events(r: redis.Redis, wallet: str) -> list[dict[str, str]]:
    return [f for _, f in r.xrange(WalletKeys(wallet).events) if f["wallet"] == wallet]


def test_admitted_until_the_balance_runs_out_then_402(gateway, r):
    wallets.grant(r, "wallet-a", 12)
    first = gateway.get("/paid")
    assert first.status == 200, first.body
    assert (first.header("X-Credits-Cost"), first.header("X-Credits-Remaining")) == ("5", "7")
    assert gateway.get("/paid").header("X-Credits-Remaining") == "2"
    refused = gateway.get("/paid")
    assert refused.status == 402
    assert refused.json() == {"message": "Insufficient credits", "balance": 2, "cost": 5}
    assert wallets.balance(r, "wallet-a").balance == 2
    recorded = events(r, "wallet-a")
    assert len(recorded) == 2
    assert {(e["method"], e["path"], e["cost"], e["consumer"] != "") for e in recorded} == {
        ("GET", "/paid", "5", True)}
    assert all(e["route"] for e in recorded)  # the route id the plugin is attached to


def test_rate_limit_429_spends_no_credits(gateway, r):
    wallets.grant(r, "wallet-a", 100)
    statuses = [gateway.get("/limited").status for _ in range(3)]
    assert statuses == [200, 200, 200]
    refused = gateway.get("/limited")
    assert refused.status == 429
    assert refused.json() == {"message": "API rate limit exceeded"}
    retry_after = int(refused.header("Retry-After"))
    assert 1 <= retry_after <= 66
    assert (refused.header("RateLimit-Limit"), refused.header("RateLimit-Remaining")) == ("3", "0")
    assert int(refused.header("RateLimit-Reset")) == retry_after
    assert wallets.balance(r, "wallet-a").balance == 97
    assert len(events(r, "wallet-a")) == 3


def test_admitted_requests_carry_rate_limit_headers(gateway, r):
    wallets.grant(r, "wallet-a", 100)
    response = gateway.get("/limited")
    assert (response.header("RateLimit-Limit"), response.header("RateLimit-Remaining")) == (
        "3", "2")
    assert int(response.header("RateLimit-Reset")) >= 1


def test_team_wallet_is_shared_and_each_event_names_its_consumer(gateway, r):
    wallets.grant(r, "team", 10)
    assert gateway.get("/paid", key="kb").header("X-Credits-Remaining") == "5"
    assert gateway.get("/paid", key="kc").header("X-Credits-Remaining") == "0"
    assert gateway.get("/paid", key="kb").status == 402
    bob, carol = events(r, "team")
    assert bob["consumer"] and carol["consumer"] and bob["consumer"] != carol["consumer"]
    # Rate limits per consumer and per route: test_plugin_wallets_and_limits.py


def test_limited_route_counts_each_consumer_of_a_team_wallet_apart(gateway, r):
    wallets.grant(r, "team", 100)
    assert [gateway.get("/limited", key="kb").status for _ in range(4)] == [200] * 3 + [429]
    assert [gateway.get("/limited", key="kc").status for _ in range(4)] == [200] * 3 + [429]


def test_shadow_mode_never_blocks_and_charges_what_it_would_admit(gateway, r):
    wallets.grant(r, "wallet-a", 7)
    admitted = gateway.get("/shadow")
    assert admitted.status == 200 and admitted.header("X-Credits-Remaining") == "2"
    over = gateway.get("/shadow")  # over the limit of 1/minute and out of credits
    assert over.status == 200
    assert over.header("X-Credits-Shadow-Refusal") == "429"
    assert wallets.balance(r, "wallet-a").balance == 2
    assert len(events(r, "wallet-a")) == 1


def test_free_route_is_metered(gateway, r):
    response = gateway.get("/free")
    assert response.status == 200 and response.header("X-Credits-Cost") == "0"
    assert [e["cost"] for e in events(r, "wallet-a")] == ["0"]


def test_cost_header_settles_in_the_log_phase(gateway, r):
    wallets.grant(r, "wallet-a", 100)
    response = gateway.get("/metered?units=3")
    assert response.status == 200 and response.header("X-Credits-Remaining") == "90"
    view = wallets.balance(r, "wallet-a")
    assert view.balance == 97
    [event] = events(r, "wallet-a")
    assert (event["cost"], event["reserved"], event["status"]) == ("3", "10", "200")
    assert response.pdk_calls["log"] == 2  # ctx.shared.get + log.serialize


def test_missing_cost_header_charges_the_estimate(gateway, r):
    wallets.grant(r, "wallet-a", 100)
    gateway.get("/metered")
    assert wallets.balance(r, "wallet-a").balance == 90
    assert [e["cost"] for e in events(r, "wallet-a")] == ["10"]


def test_no_authenticated_consumer_is_401(gateway, r):
    response = gateway.get("/open", key=None)
    assert response.status == 401
    assert "consumer" in response.json()["message"]


def test_redis_down_deny_answers_503_fast(gateway):
    started = time.monotonic()
    response = gateway.get("/down-deny")
    assert response.status == 503
    assert response.json() == {"message": "Credits service unavailable"}
    assert time.monotonic() - started < 5


def test_redis_down_allow_passes_unmetered(gateway):
    response = gateway.get("/down-allow")
    assert response.status == 200
    assert response.header("X-Credits-Cost") is None


def test_hung_redis_delays_only_its_own_requests(gateway, r, silent):
    wallets.grant(r, "wallet-a", 100)

    async def both() -> tuple[Any, Any, float]:
        hung = asyncio.ensure_future(gateway.host.handle("GET", "/hung", {"apikey": "ka"}))
        await wait_until_async(lambda: b"EVALSHA" in silent.received())  # it waits on Redis
        started = time.monotonic()
        fast = await gateway.host.handle("GET", "/paid", {"apikey": "ka"})
        fast_s = time.monotonic() - started
        return await hung, fast, fast_s

    hung, fast, fast_s = gateway.run(both())
    assert hung.status == 503  # redis_timeout_ms=200, then on_redis_error=deny
    assert fast.status == 200 and fast_s < 0.2


BUSY = """
local t0 = redis.call('TIME')
repeat
  local now = redis.call('TIME')
until (now[1] - t0[1]) * 1000000 + now[2] - t0[2] >= tonumber(ARGV[1])
"""  # keeps Redis busy for ARGV[1] microseconds


def test_a_reply_lost_to_a_timeout_is_asked_again_and_charged_once(gateway, r, redis_url):
    """Redis stalls past redis_timeout_ms with the authorize call already sent: the script
    runs once Redis is free, its reply is lost with the dropped connection, and the plugin's
    one retry (same request id) gets the stored answer: 200, charged once, one event."""
    assert gateway.get("/stalled").status == 402  # its first call checks the shard count
    wallets.grant(r, "wallet-a", 100)
    admin = redis.Redis.from_url(redis_url)
    before = admin.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    events_before = len(events(r, "wallet-a"))
    staller = redis.Redis.from_url(redis_url, single_connection_client=True)
    staller.connection.send_command("EVAL", BUSY, 0, 450_000)  # sent: Redis has it first
    stall = threading.Thread(target=staller.connection.read_response)
    stall.start()
    response = gateway.get("/stalled")
    stall.join()
    staller.close()
    after = admin.info("commandstats")["cmdstat_evalsha"]["calls"]  # before balance's own
    assert response.status == 200, response.body
    assert response.header("X-Credits-Remaining") == "95"
    assert wallets.balance(r, "wallet-a").balance == 95
    assert len(events(r, "wallet-a")) == events_before + 1
    assert after - before == 2  # the first call ran too: its answer was replayed


def test_a_full_redis_refuses_with_503_and_charges_nothing(gateway, r):
    """maxmemory reached under noeviction: Redis refuses the script (OOM), no retry, deny."""
    wallets.grant(r, "wallet-a", 10)
    r.config_set("maxmemory", 1)
    try:
        response = gateway.get("/paid")
    finally:
        r.config_set("maxmemory", 0)
    assert response.status == 503
    assert wallets.balance(r, "wallet-a").balance == 10 and events(r, "wallet-a") == []
    assert gateway.get("/paid").status == 200  # room again: served at once


def test_answers_are_kept_only_as_long_as_the_plugins_retry_may_come(gateway, r):
    wallets.grant(r, "wallet-a", 10)
    assert gateway.get("/paid").status == 200
    answers = list(r.scan_iter("kc:*:req:*"))
    assert answers
    assert all(0 < r.pttl(key) <= 2 * 250 + 10_000 for key in answers)  # default timeout


def test_budget_two_pdk_calls_and_one_redis_call_per_request(gateway, r, redis_url):
    wallets.grant(r, "wallet-a", 1000)
    gateway.get("/paid")  # warm: instance started, script loaded, connection open
    admin = redis.Redis.from_url(redis_url)
    before = admin.info("commandstats")
    connections = admin.info("stats")["total_connections_received"]
    responses = [gateway.get("/paid") for _ in range(10)]
    responses += [gateway.get("/limited") for _ in range(5)]  # 3 admitted, 2 refused (429)
    after = admin.info("commandstats")
    # who pays, then headers or exit; record_request (on /paid) adds the request line
    assert [resp.pdk_calls for resp in responses] == [{"access": 3}] * 10 + [{"access": 2}] * 5

    def delta(command: str) -> int:
        return (after.get(f"cmdstat_{command}", {}).get("calls", 0)
                - before.get(f"cmdstat_{command}", {}).get("calls", 0))

    assert delta("evalsha") == 15
    assert sum(delta(c) for c in ("eval", "script|load", "ping", "select", "auth")) == 0
    assert admin.info("stats")["total_connections_received"] == connections  # none opened
    admin.close()


def test_invalid_plugin_config_is_rejected_before_start(redis_url):
    config = kong_config(redis_url, DEAD_REDIS)
    config["plugins"][0]["config"]["cost"] = -1
    config["plugins"][1]["config"]["mode"] = "loud"
    prefix = tempfile.mkdtemp(prefix="kc-")

    async def start() -> None:
        await Host(config, [credits_server(prefix)], upstream=upstream).start()

    with pytest.raises(DeclarativeError) as raised:
        asyncio.run(start())
    assert raised.value.errors == [
        "plugins[1] (credits): config.cost: value should be between 0 and 1000000000000000",
        "plugins[2] (credits): config.mode: expected one of: enforce, shadow",
    ]
    assert os.listdir(prefix) == []  # no plugin server was started: no socket


def test_spending_cap_refusal_says_which_cap(gateway, r):
    wallets.grant(r, "wallet-a", 100)
    wallets.set_budget(r, "wallet-a", daily_cap=7)
    assert gateway.get("/paid").status == 200
    refused = gateway.get("/paid")
    assert refused.status == 402
    assert refused.json() == {"message": "Daily spending cap reached", "balance": 95, "cost": 5,
                              "cap": "cap:day"}


def test_a_handler_fault_is_answered_not_hung(redis_url, r):
    """A plugin that raises in access: Kong gets an error answer at once and, as Kong does,
    carries on as if the phase had finished; the credits plugin on the same server still works.
    """
    from pathlib import Path

    faulty = Path(__file__).parent / "pluginserver" / "plugins" / "raising.py"
    prefix = tempfile.mkdtemp(prefix="kc-")
    modules = f"-m credits=kong_credits.plugin -d {faulty.parent}"
    spec = credits_server(
        prefix,
        start_cmd="kong-credits pluginserver -p {prefix} --socket-name {socket_name} " + modules,
        query_cmd="kong-credits pluginserver --dump-all-plugins " + modules,
    )
    config = {
        "_format_version": "3.0",
        "services": [{"name": "api", "url": "http://upstream.invalid",
                      "routes": [{"name": "faulty", "paths": ["/faulty"]},
                                 {"name": "paid", "paths": ["/paid"]}]}],
        "consumers": [{"username": "alice", "keyauth_credentials": [{"key": "ka"}]}],
        "plugins": [{"name": "key-auth"}, {"name": "raising", "route": "faulty"},
                    {"name": "credits", "route": "paid", "config": {"redis_url": redis_url}}],
    }
    wallets.grant(r, "alice", 10)

    async def scenario() -> tuple[Any, Any, float]:
        async with Host(config, [spec], upstream=upstream, rpc_timeout_s=10) as host:
            started = time.monotonic()
            faulted = await host.handle("GET", "/faulty", {"apikey": "ka"})
            elapsed = time.monotonic() - started
            paid = await host.handle("GET", "/paid", {"apikey": "ka"})
            return faulted, paid, elapsed

    faulted, paid, elapsed = asyncio.run(scenario())
    assert elapsed < 5
    assert any("boom before any PDK call" in e for e in faulted.errors)
    assert faulted.status == 200  # Kong logs the error and goes on
    assert paid.status == 200 and paid.header("X-Credits-Remaining") == "9"
