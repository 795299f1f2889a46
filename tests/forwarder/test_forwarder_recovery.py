"""What a crash, a stuck consumer, a dead backend or a damaged stream leave behind: nothing
lost, nothing unacknowledged, and the forwarder says so."""

from __future__ import annotations

import threading

import pytest
import redis
from billing_recorder import BillingRecorder, sink_config
from event_source import FAST, assert_billed_once, assert_nothing_pending, forward, produce

from kong_credits.forwarder import Forwarder, ForwarderOptions
from kong_credits.forwarder.consumer_group import ConsumerGroup, StreamEntry
from kong_credits.forwarder.dlq import list_dead_letters
from kong_credits.forwarder.group_names import group_name
from kong_credits.keys import event_stream, event_streams
from kong_credits.sinks import SINKS, http_client

GROUP = group_name("http")


def crashed_consumer(client: redis.Redis, name: str = "crashed") -> ConsumerGroup:
    """A consumer that read entries and died before acking them."""
    group = ConsumerGroup(client, GROUP, name)
    group.ensure()
    assert group.read_new(10_000, None)
    return group


def test_a_dead_consumers_events_are_reclaimed_and_delivered(redis_url: str,
                                                             r: redis.Redis) -> None:
    produced = produce(redis_url, 500)
    dead = crashed_consumer(r)
    assert dead.pending() == 500
    with BillingRecorder("http") as backend:
        forwarder = forward("http", r, backend, claim_idle_ms=100)
    assert_billed_once(backend, produced)
    assert_nothing_pending(r, GROUP)
    assert forwarder.metrics.tally.delivered == 500


def test_a_restart_under_the_same_name_resumes_its_own_pending(redis_url: str,
                                                               r: redis.Redis) -> None:
    produced = produce(redis_url, 120)
    crashed_consumer(r, "tester")  # forward() uses consumer name "tester"
    with BillingRecorder("http") as backend:
        forward("http", r, backend, claim_idle_ms=3_600_000)
    assert_billed_once(backend, produced)
    assert_nothing_pending(r, GROUP)


def test_a_live_consumers_entries_are_not_taken_while_it_keeps_touching_them(
        r: redis.Redis, redis_url: str) -> None:
    produce(redis_url, 5)
    slow = crashed_consumer(r, "slow")
    entries = slow.read_own_pending(100)
    other = ConsumerGroup(r, GROUP, "other")
    threading.Event().wait(0.15)
    assert slow.touch(entries) == entries
    claimed, _ = other.reclaim(100, 100)
    assert claimed == []
    other.ack(entries[:2])
    assert slow.touch(entries) == entries[2:]


def test_events_deleted_before_delivery_are_counted_as_lost(redis_url: str,
                                                            r: redis.Redis) -> None:
    produced = produce(redis_url, 50)
    crashed_consumer(r)
    stream = next(s for s in event_streams() if r.xlen(s))
    [(entry_id, fields)] = r.xrange(stream, count=1)
    r.xdel(stream, entry_id)
    with BillingRecorder("http") as backend:
        forwarder = forward("http", r, backend, claim_idle_ms=100)
    assert forwarder.metrics.tally.lost == 1
    assert_billed_once(backend, type(produced)({
        k: v for k, v in produced.events.items() if k != fields["event_id"]}))
    assert_nothing_pending(r, GROUP)


def test_a_malformed_entry_goes_to_the_dead_letter_stream(redis_url: str,
                                                          r: redis.Redis) -> None:
    produced = produce(redis_url, 10)
    r.xadd(event_stream(3), {"event_id": "broken-1", "wallet": "w", "cost": "1.5",
                             "timestamp": "1"})
    with BillingRecorder("http") as backend:
        forward("http", r, backend)
    assert_billed_once(backend, produced)
    [letter] = list_dead_letters(r)
    assert letter.fields["event_id"] == "broken-1"
    assert letter.reason.startswith("malformed event: cost must be a non-negative integer")
    assert (letter.source, letter.stream) == (event_stream(3), "kc:{s3}:dlq")
    assert_nothing_pending(r, GROUP)


def test_drain_gives_up_on_a_dead_backend_and_leaves_everything_pending(
        redis_url: str, r: redis.Redis) -> None:
    produce(redis_url, 30)
    config = sink_config("http", "")
    with BillingRecorder("http") as backend, http_client(config) as http:
        backend.chaos(1.0, ["500"])
        sink = SINKS["http"](http, sink_config("http", backend.url))
        group = ConsumerGroup(r, GROUP, "tester")
        options = ForwarderOptions(drain=True, max_attempts=3, backoff=FAST)
        assert Forwarder(group, sink, options).run() == 1
        assert backend.stored == {}
    assert group.pending() == 30


class StopOnFirstWait(threading.Event):
    """A stop event that records the first wait the forwarder starts, and stops it there."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        self.set()
        return True


def test_retry_waits_the_servers_retry_after_holding_its_entries(
        redis_url: str, r: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    produce(redis_url, 10)
    stop = StopOnFirstWait()
    config = sink_config("http", "")
    with BillingRecorder("http", retry_after="7") as backend, http_client(config) as http:
        backend.fail_next("429")
        sink = SINKS["http"](http, sink_config("http", backend.url))
        options = ForwarderOptions(drain=True, backoff=FAST, claim_idle_ms=2000)
        group = ConsumerGroup(r, GROUP, "t")
        assert Forwarder(group, sink, options, stop=stop).run() == 0
    [retry] = [m for m in caplog.messages if m.startswith("retrying")]
    delay_s = float(retry.split(" in ")[1].split(" s ")[0])
    assert 7.0 <= delay_s <= 7.7, retry
    assert stop.waits == [0.5]  # waits in slices of claim_idle_ms / 4, touching between
    assert group.pending() == 10  # stopped mid-wait: everything stays pending, nothing lost


class FlakyGroup(ConsumerGroup):
    """Its first read fails as if Redis had restarted."""

    reads = 0

    def read_new(self, count: int, block_ms: int | None) -> list[StreamEntry]:
        self.reads += 1
        if self.reads == 1:
            raise redis.ConnectionError("Connection reset by peer")
        return super().read_new(count, block_ms)


def test_a_redis_error_mid_run_is_retried(redis_url: str, r: redis.Redis) -> None:
    produced = produce(redis_url, 40)
    group = FlakyGroup(r, GROUP, "t")
    config = sink_config("http", "")
    with BillingRecorder("http") as backend, http_client(config) as http:
        sink = SINKS["http"](http, sink_config("http", backend.url))
        forwarder = Forwarder(group, sink, ForwarderOptions(drain=True, backoff=FAST))
        assert forwarder.run() == 0
    assert group.reads > 1
    assert_billed_once(backend, produced)
