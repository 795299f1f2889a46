"""A Redis that refuses commands (READONLY after a failover, OOM) does not kill the forwarder
or the alerts deliverer: each error is logged, counted by kind, retried with backoff, and
once the fault clears everything is delivered, nothing lost, nothing twice."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from billing_recorder import BillingRecorder, sink_config
from event_source import FAST, assert_billed_once, assert_nothing_pending, produce
from faults import (
    WebhookReceiver,
    alerts_pending,
    make_alerts,
    running,
    start_alerts,
)
from waits import wait_until

from kong_credits.errors import RedisUnavailable
from kong_credits.forwarder import Forwarder, ForwarderOptions
from kong_credits.forwarder.consumer_group import Backlog, ConsumerGroup
from kong_credits.forwarder.dlq import list_dead_letters
from kong_credits.forwarder.group_names import group_name
from kong_credits.forwarder.metrics import redis_error_kind
from kong_credits.redis_server import EmbeddedRedis
from kong_credits.sinks import SINKS, http_client

pytestmark = pytest.mark.integration
GROUP = group_name("http")


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedRedis]:
    """A Redis of our own: these tests turn it into a replica and fill its memory."""
    with EmbeddedRedis() as own:
        yield own


@pytest.fixture
def admin(server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client on the empty server; the server is healed after the test whatever happened."""
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.flushall()
    yield client
    heal(client)
    client.close()


def read_only(admin: redis.Redis) -> None:
    """A failover seen from the old primary: it becomes a replica (of a port nobody listens
    on, so it keeps its data) and answers every write with READONLY."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    admin.execute_command("REPLICAOF", "127.0.0.1", str(dead_port))


def out_of_memory(admin: redis.Redis) -> None:
    """Every command that may grow memory (XADD, XGROUP CREATE, scripts) answers OOM."""
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)


def heal(admin: redis.Redis) -> None:
    admin.execute_command("REPLICAOF", "NO", "ONE")
    admin.config_set("maxmemory", 0)


def forwarder_on(url: str, backend: BillingRecorder, http: object) -> Forwarder:
    """A forwarder that runs until stopped, with a claim idle time far beyond the tests'
    deadlines: what it delivers after a fault it did not wait to reclaim."""
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)
    sink = SINKS["http"](http, sink_config("http", backend.url))  # type: ignore[arg-type]
    options = ForwarderOptions(batch_size=20, claim_idle_ms=60_000, block_ms=50, backoff=FAST)
    return Forwarder(ConsumerGroup(client, GROUP, "survivor"), sink, options)


def test_a_read_only_redis_mid_run_is_outlived_and_nothing_is_lost(
        server: EmbeddedRedis, admin: redis.Redis) -> None:
    produced = produce(server.url, 600)
    with BillingRecorder("http", delay_s=0.005) as backend, \
            http_client(sink_config("http", backend.url)) as http:
        forwarder = forwarder_on(server.url, backend, http)
        with running(forwarder) as run:
            wait_until(lambda: len(backend.stored) >= 100)
            read_only(admin)
            wait_until(lambda: run.redis_errors("readonly") >= 3 or run.error)
            assert run.error is None and run.thread.is_alive()
            assert len(backend.stored) < 600
            heal(admin)
            wait_until(lambda: len(backend.stored) == 600 and forwarder.group.pending() == 0)
        assert (run.error, run.code) == (None, 0)
    assert_billed_once(backend, produced)
    assert_nothing_pending(admin, GROUP)


def test_out_of_memory_while_dead_lettering_is_outlived_and_each_letter_kept_once(
        server: EmbeddedRedis, admin: redis.Redis) -> None:
    produced = produce(server.url, 300, bad=6)
    bad = produced.ids(bad=True)
    ConsumerGroup(admin, GROUP, "setup").ensure()
    out_of_memory(admin)  # reads and acks still work, dead-lettering (XADD) does not
    with BillingRecorder("http") as backend, \
            http_client(sink_config("http", backend.url)) as http:
        forwarder = forwarder_on(server.url, backend, http)
        with running(forwarder) as run:
            wait_until(lambda: run.redis_errors("oom") >= 3 or run.error)
            assert run.error is None and run.thread.is_alive()
            assert list_dead_letters(admin) == []
            assert backend.stored  # events before the first refused one were delivered
            heal(admin)
            wait_until(lambda: forwarder.group.backlog() == Backlog(lag=0, pending=0))
        assert (run.error, run.code) == (None, 0)
    letters = list_dead_letters(admin, limit=1000)
    assert sorted(d.fields["event_id"] for d in letters) == sorted(bad)  # each once
    assert_billed_once(backend, produced, refused=bad)
    assert_nothing_pending(admin, GROUP)


def test_the_alerts_deliverer_outlives_a_read_only_redis(
        server: EmbeddedRedis, admin: redis.Redis, tmp_path: Path) -> None:
    expected = make_alerts(admin, [f"w{i}" for i in range(6)])
    assert len(expected) == 24
    read_only(admin)  # from the start: it cannot even create its consumer group
    log = tmp_path / "alerts.log"
    with WebhookReceiver() as receiver:
        process = start_alerts(server.url, receiver.url, log, "--max-attempts", "100000",
                               "--log-level", "warning")
        try:
            wait_until(lambda: "Redis error (readonly" in log.read_text()
                       or process.poll() is not None)
            assert process.poll() is None, log.read_text()
            heal(admin)
            assert process.wait(timeout=15) == 0, log.read_text()
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running: {log.read_text()}")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    assert set(receiver.ids) == expected and max(receiver.ids.values()) == 1
    assert alerts_pending(admin) == 0


@pytest.mark.parametrize(("error", "kind"), [
    (redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
     "readonly"),
    (redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
     "oom"),
    (redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"), "loading"),
    (redis.ResponseError("MOVED 3999 127.0.0.1:6381"), "moved"),
    (redis.ResponseError("NOGROUP No such key 'kc:{s0}:events' or consumer group"), "nogroup"),
    (redis.ResponseError("user_script:1: attempt to compare nil"), "response"),
    (redis.TimeoutError("Timeout reading from socket"), "timeout"),
    (redis.ConnectionError("Error 111 connecting to 127.0.0.1:1."), "connection"),
    (RedisUnavailable("down"), "unavailable"),
    (redis.RedisError("something else"), "other"),
])
def test_the_error_kind_label_is_short_and_bounded(error: Exception, kind: str) -> None:
    assert redis_error_kind(error) == kind
