"""redis_wait_replicas: each script call waits, in the same round trip, until a replica holds
its writes; a replica that does not answer in time is counted, never turned into a refusal.
On a master + replica pair started here (loopback), with a SIGKILLed master promoted."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from test_plugin_access import HostThread, SilentRedis, upstream
from waits import wait_until, wait_until_async

from kong_credits import wallets
from kong_credits.engine import AuthorizeRequest
from kong_credits.errors import InvalidInput
from kong_credits.host import Host, credits_servers
from kong_credits.keys import WalletKeys
from kong_credits.redis_lane import RedisLane, Script
from kong_credits.redis_pool import EngineCache
from kong_credits.redis_server import _free_port, find_redis_server
from kong_credits.replica_wait import WAITS
from kong_credits.schema import parse_config

INCR = Script("return redis.call('INCR', KEYS[1])")
FAIL = Script("return redis.error_reply('BAD refused on purpose')")


class Pair:
    """A master and its replica, redis-servers on loopback owned by this test module."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.master_port, self.replica_port = _free_port(), _free_port()
        self.master = self._start(self.master_port, "--repl-diskless-sync-delay", "0")
        self.replica = self._start(self.replica_port, "--replicaof", "127.0.0.1",
                                   str(self.master_port))
        self.url = f"redis://127.0.0.1:{self.master_port}/0"
        self.replica_url = f"redis://127.0.0.1:{self.replica_port}/0"
        wait_until(self.linked)

    def _start(self, port: int, *args: str) -> subprocess.Popen[bytes]:
        directory = Path(self.workdir, str(port))
        directory.mkdir()
        process = subprocess.Popen(
            [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(directory), *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self._ping(port))
        return process

    @staticmethod
    def _ping(port: int) -> bool:
        try:
            return bool(redis.Redis(port=port, socket_timeout=1).ping())
        except redis.ConnectionError:
            return False

    def client(self, replica: bool = False) -> redis.Redis:
        return redis.Redis(port=self.replica_port if replica else self.master_port,
                           decode_responses=True, socket_timeout=5)

    def linked(self) -> bool:
        master, replica = self.client(), self.client(replica=True)
        try:
            return (master.info("replication")["connected_slaves"] == 1
                    and replica.info("replication")["master_link_status"] == "up")
        finally:
            master.close()
            replica.close()

    def caught_up(self) -> bool:
        master = self.client()
        try:
            info = master.info("replication")
            return info["slave0"]["offset"] == info["master_repl_offset"]
        finally:
            master.close()

    def stop(self) -> None:
        for process in (self.master, self.replica):
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)  # in case a test left it stopped
                process.terminate()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with tempfile.TemporaryDirectory(prefix="kc-pair-") as workdir:
        started = Pair(workdir)
        yield started
        started.stop()


@pytest.fixture
def fresh(pair: Pair) -> Pair:
    """The module's pair, linked, caught up and empty."""
    wait_until(pair.linked)
    client = pair.client()
    client.flushall()
    assert client.wait(1, 10_000) == 1  # the replica has caught up with the flush
    client.close()
    return pair


def count(pair: Pair, command: str) -> int:
    client = pair.client()
    try:
        return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))
    finally:
        client.close()


# --- the lane ------------------------------------------------------------------------------


def test_wait_follows_the_script_in_the_same_write(fresh: Pair) -> None:
    async def scenario() -> None:
        lane = RedisLane.from_url(fresh.url)
        assert await lane.evalsha_then_wait(INCR, ["n"], [], replicas=1,
                                            timeout_ms=1000) == (1, 1)
        replica = fresh.client(replica=True)
        assert replica.get("n") == "1"  # acknowledged: already on the replica
        fresh.client().script_flush()  # NOSCRIPT: loaded, then both sent again
        assert await lane.evalsha_then_wait(INCR, ["n"], [], replicas=1,
                                            timeout_ms=1000) == (2, 1)
        assert replica.get("n") == "2"
        with pytest.raises(redis.ResponseError, match="refused on purpose"):
            await lane.evalsha_then_wait(FAIL, [], [], replicas=1, timeout_ms=1000)
        assert await lane.evalsha(INCR, ["n"]) == 3  # the connection stayed in step
        replica.close()
        await lane.close()

    waits_before = count(fresh, "wait")
    asyncio.run(scenario())
    # Each of the three scripts met NOSCRIPT once: a WAIT behind each of its two sends.
    assert count(fresh, "wait") - waits_before == 6


def test_wait_is_sent_before_the_scripts_reply_one_round_trip() -> None:
    """A server that never answers still receives both: the WAIT does not wait for it."""
    silent = SilentRedis()

    def sent_both() -> bytes:
        sent = silent.received()
        return sent if b"WAIT" in sent else b""

    async def scenario() -> bytes:
        lane = RedisLane.from_url(silent.url, timeout_s=5)
        call = asyncio.ensure_future(
            lane.evalsha_then_wait(INCR, ["n"], [], replicas=1, timeout_ms=50))
        sent = await wait_until_async(sent_both)
        call.cancel()
        await lane.close()
        return sent

    try:
        sent = asyncio.run(scenario())
    finally:
        silent.close()
    assert sent.index(b"EVALSHA") < sent.index(b"WAIT")
    assert sent.endswith(b"*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$2\r\n50\r\n")


# --- the plugin's engine -------------------------------------------------------------------


def events_on(client: redis.Redis, wallet: str) -> int:
    return client.xlen(WalletKeys(wallet).events)


def test_each_admitted_request_is_on_the_replica_when_answered(fresh: Pair) -> None:
    master, replica = fresh.client(), fresh.client(replica=True)
    wallets.grant(master, "acme", 100)
    confirmed = WAITS.confirmed

    async def scenario() -> None:
        engine = EngineCache().get(fresh.url, 1000, wait_replicas=1, wait_timeout_ms=500)
        for i in range(20):
            decision = await engine.authorize(AuthorizeRequest(f"r-{i}", "acme", "alice", 3))
            assert decision.admitted
            # No waiting here: the answer came after a replica acknowledged the charge.
            assert events_on(replica, "acme") == i + 1
            assert wallets.balance(replica, "acme").balance == 100 - 3 * (i + 1)

    asyncio.run(scenario())
    assert WAITS.confirmed - confirmed >= 20  # and the shard-count check's call
    master.close()
    replica.close()


def test_a_replica_that_does_not_acknowledge_is_counted_and_the_request_admitted(
        fresh: Pair, caplog: pytest.LogCaptureFixture) -> None:
    """The replica is frozen (SIGSTOP): WAIT returns 0 after its timeout. The charge stands,
    the request is admitted, within redis_timeout_ms (no retry), and the shortfall counted."""
    master = fresh.client()
    wallets.grant(master, "acme", 100)
    engine = EngineCache().get(fresh.url, 1000, wait_replicas=1, wait_timeout_ms=100)

    async def authorize(request_id: str) -> tuple[bool, float]:
        started = time.monotonic()
        decision = await engine.authorize(AuthorizeRequest(request_id, "acme", "alice", 5))
        return decision.admitted, time.monotonic() - started

    async def scenario() -> None:
        assert (await authorize("warm"))[0]  # the shard-count check, on a healthy pair
        unconfirmed, scripts = WAITS.unconfirmed, count(fresh, "evalsha")
        os.kill(fresh.replica.pid, signal.SIGSTOP)
        try:
            admitted, seconds = await authorize("frozen")
        finally:
            os.kill(fresh.replica.pid, signal.SIGCONT)
        assert admitted and 0.1 <= seconds < 1.0
        assert WAITS.unconfirmed - unconfirmed == 1
        assert count(fresh, "evalsha") - scripts == 1  # answered, not asked again
        wait_until(fresh.caught_up)
        confirmed = WAITS.confirmed
        assert (await authorize("thawed"))[0]
        assert WAITS.confirmed - confirmed == 1

    with caplog.at_level(logging.WARNING, logger="kong_credits.replica_wait"):
        asyncio.run(scenario())
    assert wallets.balance(master, "acme").balance == 85  # all three charged, once
    assert "not acknowledged by a replica within 100 ms" in caplog.text
    assert fresh.url in caplog.text
    master.close()


def test_concurrent_calls_share_waits_and_a_frozen_replica_costs_each_at_most_two(
        fresh: Pair) -> None:
    """A blocked WAIT holds its connection: calls made meanwhile share the next WAIT. So
    200 concurrent calls need few WAITs, and with the replica frozen every call is still
    answered (admitted, unconfirmed) within two WAIT timeouts, none timed out or retried."""
    master = fresh.client()
    for i in range(200):
        wallets.grant(master, f"w{i}", 10)
    engine = EngineCache().get(fresh.url, 1000, wait_replicas=1, wait_timeout_ms=200)

    async def burst(prefix: str) -> list[float]:
        async def one(i: int) -> float:
            started = time.monotonic()
            decision = await engine.authorize(AuthorizeRequest(f"{prefix}{i}", f"w{i}", "a", 1))
            assert decision.admitted
            return time.monotonic() - started

        return list(await asyncio.gather(*(one(i) for i in range(200))))

    async def scenario() -> None:
        await burst("warm-")  # connect, check the shard count
        waits, confirmed = count(fresh, "wait"), WAITS.confirmed
        await burst("ok-")
        assert WAITS.confirmed - confirmed == 200
        assert count(fresh, "wait") - waits <= 20  # shared, not one per call
        waits, unconfirmed, scripts = count(fresh, "wait"), WAITS.unconfirmed, count(
            fresh, "evalsha")
        os.kill(fresh.replica.pid, signal.SIGSTOP)
        try:
            seconds = await burst("frozen-")
        finally:
            os.kill(fresh.replica.pid, signal.SIGCONT)
        assert WAITS.unconfirmed - unconfirmed == 200
        # Two WAIT timeouts (0.4 s) plus scheduling; the bound that matters is the call's
        # Redis timeout (1 s): none reached it, or it would have been asked again.
        assert max(seconds) < 1.0
        assert count(fresh, "wait") - waits <= 3
        assert count(fresh, "evalsha") - scripts == 200  # none asked again

    asyncio.run(scenario())
    assert sum(wallets.balance(master, f"w{i}").balance for i in range(200)) == 200 * 7
    master.close()


def test_without_a_replica_every_call_waits_its_timeout_and_is_answered(
        redis_url: str, r: redis.Redis) -> None:
    wallets.grant(r, "acme", 10)
    engine = EngineCache().get(redis_url, 500, wait_replicas=1, wait_timeout_ms=30)
    unconfirmed = WAITS.unconfirmed

    async def scenario() -> None:
        for i in range(3):
            started = time.monotonic()
            assert (await engine.authorize(AuthorizeRequest(f"n-{i}", "acme", "a", 1))).admitted
            assert time.monotonic() - started >= 0.03

    asyncio.run(scenario())
    assert WAITS.unconfirmed - unconfirmed == 4  # the shard-count check's call, then three
    assert wallets.balance(r, "acme").balance == 7


# --- configuration -------------------------------------------------------------------------


def test_the_option_is_off_by_default_and_bounded_by_the_reply_timeout() -> None:
    config = parse_config({})
    assert (config.redis_wait_replicas, config.redis_wait_timeout_ms) == (0, 50)
    assert parse_config({"redis_wait_replicas": 1}).redis_wait_replicas == 1
    with pytest.raises(InvalidInput, match=r"redis_wait_timeout_ms \(250\) must be less than "
                                           r"redis_timeout_ms \(250\)"):
        parse_config({"redis_wait_replicas": 1, "redis_wait_timeout_ms": 250})
    assert parse_config({"redis_wait_timeout_ms": 250}).redis_wait_timeout_ms == 250  # unused
    with pytest.raises(InvalidInput, match="redis_wait_replicas"):
        parse_config({"redis_wait_replicas": 2})


# --- a failover, through the plugin server -------------------------------------------------


@pytest.mark.integration
def test_a_failover_loses_no_request_answered_with_a_replicas_acknowledgement() -> None:
    """Traffic through the Kong-protocol host with redis_wait_replicas 1; the master is
    SIGKILLed and its replica promoted: every request answered 200 is charged there, with
    its event."""
    with tempfile.TemporaryDirectory(prefix="kc-failover-") as workdir:
        own = Pair(workdir)
        try:
            master = own.client()
            wallets.grant(master, "wallet-a", 1000)
            wait_until(own.caught_up)
            master.close()
            config = {
                "_format_version": "3.0",
                "services": [{"name": "api", "url": "http://upstream.invalid:8080", "routes": [
                    {"name": "paid", "paths": ["/paid"], "plugins": [
                        {"name": "key-auth"},
                        {"name": "credits", "config": {
                            "redis_url": own.url, "cost": 7, "redis_timeout_ms": 1000,
                            "redis_wait_replicas": 1, "redis_wait_timeout_ms": 900}}]}]}],
                "consumers": [{"username": "alice", "custom_id": "wallet-a",
                               "keyauth_credentials": [{"key": "ka"}]}],
            }
            host = Host(config, credits_servers(tempfile.mkdtemp(prefix="kc-")),
                        upstream=upstream)
            gateway = HostThread(host)
            try:
                gateway.run(host.start())
                statuses = [gateway.get("/paid").status for _ in range(30)]
                assert statuses == [200] * 30
                own.master.kill()  # SIGKILL: whatever it had not replicated is gone
                own.master.wait(timeout=10)
                promoted = own.client(replica=True)
                promoted.replicaof("NO", "ONE")
                assert events_on(promoted, "wallet-a") == 30
                assert wallets.balance(promoted, "wallet-a").balance == 1000 - 7 * 30
                promoted.close()
            finally:
                gateway.close()
        finally:
            own.stop()
