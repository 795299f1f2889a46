"""RedisLane against real Redis: replies, NOSCRIPT, pipelining, timeouts, outages, AUTH, db."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import uvloop
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    DataError,
    ResponseError,
    TimeoutError,
)
from waits import wait_until, wait_until_async

from kong_credits.redis_lane import RedisLane, Script
from kong_credits.redis_server import EmbeddedRedis, find_redis_server

Run = Callable[[Coroutine[Any, Any, Any]], Any]
ECHO = Script("return ARGV[1]")
PASSWORD = "s3cret/with:odd@chars"


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Each test runs on both event loops the plugin server may use."""
    return uvloop.run if request.param == "uvloop" else asyncio.run


@pytest.fixture
def url(redis_url: str) -> str:
    """The shared server, on a database of its own (db 0 belongs to the other tests)."""
    return redis_url.rsplit("/", 1)[0] + "/11"


@pytest.fixture(scope="module")
def scratch() -> Iterator[EmbeddedRedis]:
    """A throwaway server for SCRIPT FLUSH, which the shared one must not see."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A throwaway server with --requirepass, on TCP and on a unix socket: (port, socket)."""
    folder = tmp_path_factory.mktemp("redis-auth")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unix = folder / "redis.sock"
    process = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder), "--requirepass", PASSWORD,
         "--unixsocket", str(unix), "--unixsocketperm", "700"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, password=PASSWORD, socket_timeout=1)

    def up() -> bool:
        with contextlib.suppress(redis.ConnectionError):
            return client.ping()
        return False

    try:
        wait_until(up, interval_s=0.02)
        yield port, unix
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=5)


def client_info(url: str, client_id: int) -> dict[str, str]:
    """Connection `client_id` as Redis sees it: its CLIENT LIST line."""
    with redis.Redis.from_url(url) as admin:
        [client] = admin.client_list(client_id=[client_id])
    return client


async def blocked(url: str, client_id: int) -> bool:
    """Whether Redis holds connection `client_id` in a blocking command (BLPOP)."""
    return "b" in (await asyncio.to_thread(client_info, url, client_id))["flags"]


def _kill(server: EmbeddedRedis) -> None:
    """SIGKILL, like the OOM killer: Redis gets no chance to shut down."""
    client = redis.Redis.from_url(server.url)
    pid = client.info("server")["process_id"]
    client.close()
    os.kill(pid, signal.SIGKILL)
    server.stop()  # reaps the process, removes its folder


def test_evalsha_returns_ints_bulk_strings_nested_arrays_and_nil(run: Run, url: str) -> None:
    script = Script("return {7, 'seven', {KEYS[1], {ARGV[1], -1}}, false, ARGV[2]}")

    async def scenario() -> None:
        lane = RedisLane.from_url(url)
        assert await lane.evalsha(script, ["k"], [b"\x00\xff", 42]) == [
            7, b"seven", [b"k", [b"\x00\xff", -1]], None, b"42"]
        assert await lane.evalsha(Script("return 9007199254740992"), [], []) == 2**53
        assert await lane.evalsha(Script("return false")) is None
        assert await lane.execute("PING") == b"PONG"
        await lane.close()

    run(scenario())


def test_noscript_after_script_flush_reloads_and_succeeds(
    run: Run, scratch: EmbeddedRedis
) -> None:
    async def scenario() -> None:
        lane = RedisLane.from_url(scratch.url)
        assert await lane.evalsha(ECHO, [], ["first"]) == b"first"
        assert await lane.execute("SCRIPT", "FLUSH") == b"OK"
        assert await lane.execute("SCRIPT", "EXISTS", ECHO.sha) == [0]
        assert await lane.evalsha(ECHO, [], ["again"]) == b"again"
        await lane.close()

    run(scenario())


def test_error_reply_raises_response_error_and_connection_stays_usable(
    run: Run, url: str
) -> None:
    async def scenario() -> None:
        lane = RedisLane.from_url(url)
        client_id = await lane.execute("CLIENT", "ID")
        with pytest.raises(ResponseError, match="unknown command"):
            await lane.execute("NO-SUCH-COMMAND")
        with pytest.raises(ResponseError, match="boom"):
            await lane.evalsha(Script("return redis.error_reply('boom')"))
        await lane.execute("DEL", "lane:list")
        await lane.execute("RPUSH", "lane:list", "x")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await lane.evalsha(Script("return redis.call('INCR', KEYS[1])"), ["lane:list"])
        assert await lane.execute("CLIENT", "ID") == client_id
        await lane.close()

    run(scenario())


def test_thousand_concurrent_calls_on_one_connection_each_get_their_own_reply(
    run: Run, url: str
) -> None:
    async def scenario() -> None:
        lane = RedisLane.from_url(url, timeout_s=5)
        client_id = await lane.execute("CLIENT", "ID")
        replies = await asyncio.gather(*(lane.evalsha(ECHO, [], [i]) for i in range(1000)))
        assert replies == [b"%d" % i for i in range(1000)]
        assert await lane.execute("CLIENT", "ID") == client_id
        await lane.close()

    run(scenario())


def test_connections_are_used_round_robin(run: Run, url: str) -> None:
    async def scenario() -> None:
        lane = RedisLane.from_url(url, connections=3)
        ids = await asyncio.gather(*(lane.execute("CLIENT", "ID") for _ in range(6)))
        assert len(set(ids)) == 3
        assert ids[:3] == ids[3:]
        await lane.close()

    run(scenario())


def test_timeout_drops_the_connection_and_the_next_call_reconnects(run: Run, url: str) -> None:
    async def scenario() -> None:
        lane = RedisLane.from_url(url, timeout_s=0.2)
        client_id = await lane.execute("CLIENT", "ID")
        slow = asyncio.ensure_future(lane.execute("BLPOP", "lane:never", 2))
        await wait_until_async(lambda: blocked(url, client_id))
        await asyncio.sleep(0.1)  # so behind's own deadline comes well after slow's
        behind = asyncio.ensure_future(lane.execute("PING"))  # queued behind the slow reply
        with pytest.raises(TimeoutError):
            await slow
        with pytest.raises(ConnectionError, match="earlier call"):
            await behind
        assert lane.counts.reconnects == 0
        assert await lane.execute("CLIENT", "ID") != client_id
        assert await lane.evalsha(ECHO, [], ["after"]) == b"after"
        assert lane.counts.reconnects == 1  # counted for the plugin server's metrics
        await lane.close()

    run(scenario())


def test_a_blocked_event_loop_is_not_mistaken_for_a_slow_redis(run: Run, url: str) -> None:
    """Redis answers in time, while the loop is busy elsewhere until past the call's deadline:
    the lane takes the reply waiting on its socket rather than calling it a timeout."""

    def replied(client: dict[str, str]) -> bool:  # unblocked, its output buffers written out
        return "b" not in client["flags"] and client["obl"] == client["oll"] == "0"

    async def scenario() -> None:
        lane = RedisLane.from_url(url, timeout_s=0.25)
        client_id = await lane.execute("CLIENT", "ID")
        await lane.execute("DEL", "lane:wake")
        pending = asyncio.ensure_future(lane.execute("BLPOP", "lane:wake", 5))
        await wait_until_async(lambda: blocked(url, client_id))

        def hog() -> None:  # an I/O callback that blocks the loop while Redis answers
            wake.recv(1)
            with redis.Redis.from_url(url) as admin:
                admin.rpush("lane:wake", "now")
            wait_until(lambda: replied(client_info(url, client_id)))  # in time
            time.sleep(0.3)  # and the loop blocked past the call's 0.25 s deadline

        loop = asyncio.get_running_loop()
        wake, poke = socket.socketpair()
        loop.add_reader(wake, hog)
        try:
            poke.send(b"!")
            assert await pending == [b"lane:wake", b"now"]
        finally:
            loop.remove_reader(wake)
            wake.close()
            poke.close()
        await lane.close()

    run(scenario())


def test_cancelled_caller_does_not_shift_replies(run: Run, url: str) -> None:
    async def scenario() -> None:
        lane = RedisLane.from_url(url)
        await lane.evalsha(ECHO, [], ["warm"])  # connected and loaded: no NOSCRIPT retry
        first = asyncio.ensure_future(lane.evalsha(ECHO, [], ["first"]))
        second = asyncio.ensure_future(lane.evalsha(ECHO, [], ["second"]))
        await asyncio.sleep(0)  # both tasks run up to their sent call
        first.cancel()
        assert await second == b"second"
        assert await lane.evalsha(ECHO, [], ["third"]) == b"third"
        await lane.close()

    run(scenario())


@pytest.mark.integration
def test_killed_server_fails_calls_promptly_and_restart_recovers(run: Run) -> None:
    server = EmbeddedRedis().start()
    port = server.port

    async def scenario() -> None:
        lane = RedisLane.from_url(server.url, timeout_s=5, reconnect_backoff_s=0.05)
        assert await lane.evalsha(ECHO, [], ["up"]) == b"up"
        client_id = await lane.execute("CLIENT", "ID")
        in_flight = asyncio.ensure_future(lane.execute("BLPOP", "lane:never", 5))
        await wait_until_async(lambda: blocked(server.url, client_id))
        started = time.monotonic()
        await asyncio.to_thread(_kill, server)
        with pytest.raises(ConnectionError):
            await in_flight
        with pytest.raises(ConnectionError):
            await lane.evalsha(ECHO, [], ["down"])
        assert time.monotonic() - started < 2.5  # far below timeout_s: nobody waited it out
        restarted = await asyncio.to_thread(EmbeddedRedis(port=port).start)
        try:
            await asyncio.sleep(0.1)  # past the reconnect backoff
            assert await lane.evalsha(ECHO, [], ["back"]) == b"back"  # NOSCRIPT: reloaded
        finally:
            await lane.close()
            restarted.stop()

    try:
        run(scenario())
    finally:
        server.stop()


def test_server_down_calls_fail_fast_without_a_connect_per_call(run: Run) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the probe closes

    async def scenario() -> None:
        lane = RedisLane(port=port, timeout_s=5, connect_timeout_s=5, reconnect_backoff_s=60)
        started = time.monotonic()
        with pytest.raises(ConnectionError, match=r"refused|Connect call failed"):
            await lane.execute("PING")
        results = await asyncio.gather(
            *(lane.evalsha(ECHO, [], [i]) for i in range(500)), return_exceptions=True)
        assert all(isinstance(result, ConnectionError) for result in results)
        assert all("unreachable" in str(result) for result in results)  # backoff, no connect
        assert time.monotonic() - started < 2.5
        await lane.close()

    run(scenario())


def test_close_fails_calls_in_flight_and_later_calls(run: Run, url: str) -> None:
    async def scenario() -> None:
        lane = RedisLane.from_url(url, timeout_s=5)
        client_id = await lane.execute("CLIENT", "ID")
        in_flight = asyncio.ensure_future(lane.execute("BLPOP", "lane:never", 5))
        await wait_until_async(lambda: blocked(url, client_id))
        await lane.close()
        with pytest.raises(ConnectionError):
            await in_flight
        with pytest.raises(ConnectionError, match="closed"):
            await lane.execute("PING")

    run(scenario())


def test_password_and_db_on_tcp_and_unix_socket(run: Run, secured: tuple[int, Path]) -> None:
    port, unix = secured
    quoted = PASSWORD.replace("/", "%2F").replace(":", "%3A").replace("@", "%40")

    async def scenario() -> None:
        tcp = RedisLane.from_url(f"redis://:{quoted}@127.0.0.1:{port}/3")
        await tcp.execute("SET", "lane:db", "three")
        via_user = RedisLane.from_url(f"redis://default:{quoted}@127.0.0.1:{port}/3")
        assert await via_user.execute("GET", "lane:db") == b"three"
        over_unix = RedisLane.from_url(f"unix://:{quoted}@{unix}?db=3")
        assert await over_unix.execute("GET", "lane:db") == b"three"
        assert await over_unix.evalsha(ECHO, [], ["unix"]) == b"unix"
        db0 = RedisLane.from_url(f"redis://:{quoted}@127.0.0.1:{port}")
        assert await db0.execute("GET", "lane:db") is None
        for lane in (tcp, via_user, over_unix, db0):
            await lane.close()

        wrong = RedisLane.from_url(f"redis://:wrong@127.0.0.1:{port}/3")
        with pytest.raises(AuthenticationError):
            await wrong.execute("PING")
        anonymous = RedisLane.from_url(f"redis://127.0.0.1:{port}")
        with pytest.raises(AuthenticationError):  # NOAUTH, mapped like redis-py does
            await anonymous.execute("PING")
        no_such_db = RedisLane.from_url(f"redis://:{quoted}@127.0.0.1:{port}/99")
        with pytest.raises(ConnectionError, match="DB index is out of range"):
            await no_such_db.execute("PING")
        for lane in (wrong, anonymous, no_such_db):
            await lane.close()

    run(scenario())


def test_from_url_rejects_cluster_sentinel_and_malformed_urls() -> None:
    """TLS is tested in test_redis_tls.py; every URL form in test_redis_url.py; the lanes of
    cluster and sentinel URLs in test_redis_cluster_lane.py and test_plugin_sentinel.py."""
    with pytest.raises(ValueError, match="speaks to one node"):
        RedisLane.from_url("redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
    with pytest.raises(ValueError, match="speaks to one node"):
        RedisLane.from_url("rediss+sentinel://127.0.0.1:26379/mymaster")
    with pytest.raises(ValueError, match="use redis://, rediss://, unix://"):
        RedisLane.from_url("http://127.0.0.1:6379")
    with pytest.raises(ValueError, match="the database must be a whole number"):
        RedisLane.from_url("redis://127.0.0.1:6379/zero")


@pytest.mark.parametrize("bad", [1.5, True, None])
def test_arguments_other_than_bytes_str_int_are_refused(
    run: Run, url: str, bad: object
) -> None:
    async def scenario() -> None:
        lane = RedisLane.from_url(url)
        with pytest.raises(DataError):
            await lane.evalsha(ECHO, [], [bad])  # type: ignore[list-item]
        await lane.close()

    run(scenario())
