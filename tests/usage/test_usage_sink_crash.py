"""Exactly once through the forwarder: the usage sink killed between its write and its XACK,
killed at random, two forwarders at once, a dead letter replayed; every event counted once."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest
import redis
from waits import wait_until

from kong_credits import wallets
from kong_credits.engine import AuthorizeRequest, Engine
from kong_credits.forwarder.consumer_group import ConsumerGroup, StreamEntry
from kong_credits.forwarder.group_names import group_name
from kong_credits.keys import event_streams
from kong_credits.rated_event import RatedEvent
from kong_credits.usage import Store, open_store

pytestmark = pytest.mark.integration
Spawn = Callable[..., subprocess.Popen[bytes]]  # the `spawn` fixture (tests/conftest.py)
USAGE = ("--sink", "usage")


def produce(url: str, count: int, *, start: int = 0) -> dict[str, tuple[str, int]]:
    """`count` admitted requests over 12 wallets (every shard), a few settled; event id ->
    (wallet, cost)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    engine = Engine(client)
    rng = random.Random(start)
    produced: dict[str, tuple[str, int]] = {}
    for n in range(12):
        wallets.grant(client, f"w{n}", 10**12, grant_id=f"seed-w{n}")
    for i in range(start, start + count):
        wallet, cost, hold = f"w{i % 12}", rng.randint(0, 9), i % 50 == 0
        request_id = f"req-{i}"
        decision = engine.authorize(AuthorizeRequest(
            request_id, wallet, "c", cost + 3 if hold else cost, route=f"r{i % 3}",
            service="s", method="GET", hold=hold))
        assert decision.admitted
        if hold:
            assert engine.settle(request_id, wallet, cost, status=200).status == 200
        produced[request_id] = (wallet, cost)
    client.close()
    return produced


def group_of(url: str) -> str:
    """The usage forwarder's default consumer group for the store at `url`."""
    with open_store(url, create=True) as store:
        return group_name("usage", store.identity)


def assert_counted_once(store: Store, produced: dict[str, tuple[str, int]]) -> None:
    """The raw events are exactly those produced, and every rollup level sums to them."""
    rows = store.rows("SELECT event_id, wallet, cost FROM usage_events")
    assert {r[0]: (r[1], int(r[2])) for r in rows} == produced
    expected = (len(produced), sum(cost for _, cost in produced.values()))
    for table in ("usage_minute", "usage_hour", "usage_day"):
        [(requests, credits)] = store.rows(
            f"SELECT CAST(SUM(requests) AS BIGINT), CAST(SUM(credits) AS BIGINT) FROM {table}")
        assert (int(requests), int(credits)) == expected, table


def noperm_retries(r: redis.Redis) -> int:
    """XACKs refused by the ACL so far (Redis counts them in ACL LOG)."""
    return sum(int(entry["count"]) for entry in r.acl_log()
               if entry.get("object") == "xack")


def stored(url: str) -> int:
    try:
        with open_store(url) as store:
            return int(store.rows("SELECT COUNT(*) FROM usage_events")[0][0])
    except Exception:  # not created yet
        return 0


def test_written_but_never_acknowledged_then_delivered_again_counts_once(
        spawn: Spawn, usage_url: str, redis_url: str, r: redis.Redis) -> None:
    """A Redis user that may not XACK: the forwarder writes its first batch to the store and
    fails to acknowledge it, again and again (each retry writes the same events again: read
    again from its own pending entries), until it is SIGKILLed. Those events are then in the
    store and still pending in Redis; a second forwarder delivers them again with the rest,
    and each is counted once."""
    produced = produce(redis_url, 2000)
    r.acl_setuser("noack", enabled=True, passwords=["+noack-pw"], keys=["*"],
                  channels=["*"], commands=["+@all", "-xack"])
    try:
        crippled = redis_url.replace("redis://", "redis://noack:noack-pw@")
        first = spawn(*USAGE, "--store", usage_url, "--batch-size", "300", redis=crippled)
        wait_until(lambda: stored(usage_url) == 300, timeout_s=60, interval_s=0.05)
        wait_until(lambda: noperm_retries(r) >= 5, timeout_s=60, interval_s=0.05)
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=10) == -signal.SIGKILL
    finally:
        r.acl_deluser("noack")
    assert stored(usage_url) == 300
    group = group_of(usage_url)
    assert group.startswith("forwarder:usage:") and "noack" not in group
    assert ConsumerGroup(r, group, "observer").pending() == len(produced)  # none acked
    second = spawn(*USAGE, "--store", usage_url, "--drain", "--claim-idle-ms", "200")
    assert second.wait(timeout=60) == 0
    assert ConsumerGroup(r, group, "observer").pending() == 0
    with open_store(usage_url) as store:
        assert_counted_once(store, produced)


def test_sigkill_at_random_moments_then_drain_counts_each_event_once(
        spawn: Spawn, usage_url: str, redis_url: str, r: redis.Redis) -> None:
    produced = produce(redis_url, 3000)
    rng = random.Random(15)
    for kill in range(4):
        forwarder = spawn(*USAGE, "--store", usage_url,
                          "--batch-size", str(rng.choice([1, 50, 400])), "--claim-idle-ms", "200")
        already = stored(usage_url)
        wait_until(lambda already=already: stored(usage_url) > already, timeout_s=60,
                   interval_s=0.005)
        threading.Event().wait(rng.uniform(0, 0.05))
        forwarder.send_signal(signal.SIGKILL)
        assert forwarder.wait(timeout=10) == -signal.SIGKILL, kill
    produced |= produce(redis_url, 500, start=3000)
    assert spawn(*USAGE, "--store", usage_url, "--drain", "--claim-idle-ms", "200").wait(60) == 0
    with open_store(usage_url) as store:
        assert_counted_once(store, produced)


def test_two_forwarders_at_once_and_a_replayed_dead_letter_count_once(
        spawn: Spawn, usage_url: str, redis_url: str, r: redis.Redis) -> None:
    produced = produce(redis_url, 3000)
    both = [spawn(*USAGE, "--store", usage_url, "--batch-size", "100", "--claim-idle-ms", "100",
                  "--drain") for _ in range(2)]
    assert [p.wait(timeout=90) for p in both] == [0, 0]
    # a dead letter of an event the store already has, replayed: delivered, not recounted
    [stream] = [s for s in event_streams() if r.xlen(s)][:1]
    entry_id, fields = r.xrange(stream, count=1)[0]
    ConsumerGroup(r, group_of(usage_url), "tester").dead_letter(
        [(StreamEntry(stream, entry_id, fields), "refused in a test")], "usage")
    replay = subprocess.run(
        [sys.executable, "-m", "kong_credits.forwarder.cli", "dlq", "retry", "--sink", "usage",
         "--store", usage_url, "--redis-url", redis_url], capture_output=True, text=True,
        timeout=60)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "1 delivered" in replay.stdout
    with open_store(usage_url) as store:
        assert_counted_once(store, produced)
        # and the same events written again straight into the store change nothing
        events = [RatedEvent.from_fields(f) for s in event_streams() for _, f in r.xrange(s)]
        assert store.ingest(events) == 0
        assert_counted_once(store, produced)
