"""Everything over rediss://, against a redis-server that speaks only TLS (tls_redis.py): the
CLI, the hot-path lane, the plugin through the Kong-protocol host, the forwarder and alerts.
A wrong CA and a missing client certificate fail clearly: exit 1 with the reason from the
CLI, 503 from the plugin (on_redis_error deny)."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import uvloop
from click.testing import CliRunner, Result
from redis.exceptions import ConnectionError
from test_alerts_delivery import SECRET, Receiver
from test_plugin_access import HostThread, upstream
from tls_redis import TlsRedis

from kong_credits import wallets
from kong_credits.cli import main
from kong_credits.host import Host, credits_servers
from kong_credits.keys import event_streams
from kong_credits.redis_lane import RedisLane, Script
from kong_credits.redis_url import redis_client

sys.path.insert(0, str(Path(__file__).parent / "sinks"))
from billing_recorder import BillingRecorder, sink_args

Run = Callable[[Coroutine[Any, Any, Any]], Any]
ECHO = Script("return ARGV[1]")
FAST = ["--backoff-base-ms", "1", "--backoff-max-ms", "20", "--claim-idle-ms", "200",
        "--block-ms", "50", "--max-attempts", "3", "--log-level", "error"]


def flushed(server: TlsRedis) -> redis.Redis:
    client = redis_client(server.url(), decode_responses=True)
    client.flushall()
    return client


@pytest.fixture
def tr(tls_redis: TlsRedis) -> Iterator[redis.Redis]:
    """A redis-py client on the TLS server, on an empty database."""
    client = flushed(tls_redis)
    yield client
    client.close()


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


# --- the CLI -------------------------------------------------------------------------------


def test_cli_grant_and_balance(tls_redis: TlsRedis, tr: redis.Redis) -> None:
    assert cli("grant", "acme", "250", "--redis-url", tls_redis.url()).exit_code == 0
    result = cli("balance", "acme", "--json", "--redis-url", tls_redis.url(host="localhost"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["balance"] == 250
    assert wallets.balance(tr, "acme").balance == 250


def test_cli_with_a_wrong_ca_exits_1_saying_why(tls_redis: TlsRedis, tr: redis.Redis) -> None:
    result = cli("grant", "acme", "250", "--redis-url", tls_redis.url(ca=tls_redis.certs.wrong_ca))
    assert result.exit_code == 1
    assert "Redis unavailable" in result.output and "CERTIFICATE_VERIFY_FAILED" in result.output
    assert "ssl_certfile" not in result.output  # the hint is for the other failure
    assert wallets.balance(tr, "acme").balance == 0
    # Not verifying is a choice the URL has to spell out:
    unverified = tls_redis.url(ca=tls_redis.certs.wrong_ca, ssl_cert_reqs="none")
    assert cli("grant", "acme", "5", "--redis-url", unverified).exit_code == 0


def test_cli_client_certificates(mtls_redis: TlsRedis) -> None:
    flushed(mtls_redis).close()
    assert cli("grant", "acme", "9", "--redis-url", mtls_redis.url()).exit_code == 0
    refused = cli("balance", "acme", "--redis-url", mtls_redis.url(cert=False))
    assert refused.exit_code == 1
    assert "Redis unavailable" in refused.output
    assert "requires client certificates" in refused.output
    assert "check ssl_certfile and ssl_keyfile" in refused.output


# --- the hot-path lane ---------------------------------------------------------------------


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Each test runs on both event loops the plugin server may use."""
    return uvloop.run if request.param == "uvloop" else asyncio.run


def test_lane_over_tls(run: Run, tls_redis: TlsRedis) -> None:
    async def scenario() -> None:
        for url in (tls_redis.url(db=3), tls_redis.url(db=3, host="localhost")):
            lane = RedisLane.from_url(url)
            assert await lane.evalsha(ECHO, [], ["tls"]) == b"tls"
            assert await asyncio.gather(*(lane.execute("PING") for _ in range(50))) == [
                b"PONG"] * 50
            await lane.close()

    run(scenario())


def test_lane_with_a_wrong_ca_fails_the_first_call(run: Run, tls_redis: TlsRedis) -> None:
    async def scenario() -> None:
        lane = RedisLane.from_url(tls_redis.url(ca=tls_redis.certs.wrong_ca))
        with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await lane.execute("PING")
        with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):  # backing off
            await lane.execute("PING")
        await lane.close()

    run(scenario())


def test_lane_client_certificates(run: Run, mtls_redis: TlsRedis) -> None:
    async def scenario() -> None:
        lane = RedisLane.from_url(mtls_redis.url())
        assert await lane.execute("PING") == b"PONG"
        await lane.close()
        bare = RedisLane.from_url(mtls_redis.url(cert=False))
        with pytest.raises(ConnectionError, match="check ssl_certfile and ssl_keyfile"):
            await bare.execute("PING")
        await bare.close()

    run(scenario())


# --- the plugin, the forwarder and alerts --------------------------------------------------


def kong_config(tls: TlsRedis, mtls: TlsRedis) -> dict[str, Any]:
    def route(name: str, redis_url: str, **config: Any) -> dict[str, Any]:
        return {"name": name, "paths": [f"/{name}"], "plugins": [
            {"name": "key-auth"},
            {"name": "credits", "config": {"redis_url": redis_url, "redis_timeout_ms": 1000,
                                           **config}}]}

    return {
        "_format_version": "3.0",
        "services": [{"name": "api", "url": "http://upstream.invalid:8080", "routes": [
            route("paid", tls.url(), cost=5),
            route("wrong-ca", tls.url(ca=tls.certs.wrong_ca)),
            route("wrong-ca-allow", tls.url(ca=tls.certs.wrong_ca), on_redis_error="allow"),
            route("client-cert", mtls.url()),
            route("no-client-cert", mtls.url(cert=False)),
        ]}],
        "consumers": [{"username": "alice", "custom_id": "wallet-a",
                       "keyauth_credentials": [{"key": "ka"}]}],
    }


@pytest.fixture(scope="module")
def gateway(tls_redis: TlsRedis, mtls_redis: TlsRedis) -> Iterator[HostThread]:
    host = Host(kong_config(tls_redis, mtls_redis),
                credits_servers(tempfile.mkdtemp(prefix="kc-")), upstream=upstream)
    runner = HostThread(host)
    runner.run(host.start())
    yield runner
    runner.close()


def event_ids(client: redis.Redis) -> set[str]:
    return {f["event_id"] for s in event_streams() for _, f in client.xrange(s)}


def test_plugin_charges_over_tls_and_the_forwarder_delivers(
        gateway: HostThread, tr: redis.Redis, tls_redis: TlsRedis) -> None:
    wallets.grant(tr, "wallet-a", 12)
    assert [gateway.get("/paid").status for _ in range(3)] == [200, 200, 402]
    assert wallets.balance(tr, "wallet-a").balance == 2
    admitted = event_ids(tr)
    assert len(admitted) == 2
    with BillingRecorder("http") as backend:
        result = cli("forwarder", *sink_args("http", backend.url), "--drain", *FAST,
                     "--redis-url", tls_redis.url())
    assert result.exit_code == 0, result.output
    assert set(backend.stored) == admitted
    assert {receipt.cost for receipt in backend.stored.values()} == {5}


def test_alerts_are_delivered_over_tls(gateway: HostThread, tr: redis.Redis,
                                       tls_redis: TlsRedis) -> None:
    wallets.grant(tr, "wallet-a", 20)
    assert [gateway.get("/paid").status for _ in range(4)] == [200] * 4  # 100% used
    receiver = Receiver([])
    try:
        result = cli("alerts", "--url", receiver.url, "--hmac-secret", SECRET, "--drain",
                     *FAST, "--redis-url", tls_redis.url())
    finally:
        receiver.close()
    assert result.exit_code == 0, result.output
    assert sorted(a["data"]["threshold_pct"] for a in receiver.accepted) == [50, 75, 90, 100]


def test_forwarder_and_alerts_with_a_wrong_ca_exit_1_saying_why(tls_redis: TlsRedis) -> None:
    wrong = tls_redis.url(ca=tls_redis.certs.wrong_ca)
    with BillingRecorder("http") as backend:
        forwarded = cli("forwarder", *sink_args("http", backend.url), "--drain", *FAST,
                        "--redis-url", wrong)
    alerted = cli("alerts", "--url", "http://127.0.0.1:1", "--hmac-secret", SECRET, "--drain",
                  *FAST, "--redis-url", wrong)
    for result in (forwarded, alerted):
        assert result.exit_code == 1
        assert "CERTIFICATE_VERIFY_FAILED" in result.output, result.output


def test_plugin_with_a_wrong_ca_answers_503_or_passes_per_on_redis_error(
        gateway: HostThread) -> None:
    denied = gateway.get("/wrong-ca")
    assert denied.status == 503
    assert denied.json() == {"message": "Credits service unavailable"}
    allowed = gateway.get("/wrong-ca-allow")
    assert allowed.status == 200 and allowed.header("X-Credits-Cost") is None


def test_plugin_client_certificates(gateway: HostThread, mtls_redis: TlsRedis) -> None:
    client = flushed(mtls_redis)
    wallets.grant(client, "wallet-a", 10)
    admitted = gateway.get("/client-cert")
    assert admitted.status == 200 and admitted.header("X-Credits-Remaining") == "9"
    assert gateway.get("/no-client-cert").status == 503
    assert wallets.balance(client, "wallet-a").balance == 9
    client.close()
