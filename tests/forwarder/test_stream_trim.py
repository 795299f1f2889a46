"""Delivered events leave Redis: trimmed once every consumer group is done with them and
they are older than the retention, never while any group still has to deliver them. Nor do
consumers of restarted forwarders pile up in the group."""

from __future__ import annotations

import time

import redis
from billing_recorder import BillingRecorder
from event_source import assert_billed_once, forward, produce

from kong_credits.forwarder.consumer_group import ConsumerGroup
from kong_credits.forwarder.group_names import group_name
from kong_credits.keys import event_stream, event_streams

STREAM = event_stream(0)
LATER = int(time.time() * 1000) + 86_400_000  # a clock a day ahead: everything is old


def group(client: redis.Redis, name: str) -> ConsumerGroup:
    consumers = ConsumerGroup(client, name, "c", [STREAM])
    consumers.ensure()
    return consumers


def ids(client: redis.Redis) -> list[str]:
    return [entry_id for entry_id, _ in client.xrange(STREAM)]


def test_only_entries_every_group_acknowledged_are_trimmed(r: redis.Redis) -> None:
    lago, orb = group(r, "lago"), group(r, "orb")
    added = [r.xadd(STREAM, {"n": str(i)}) for i in range(10)]
    lago.ack(lago.read_new(10, None))
    first_six = orb.read_new(6, None)
    orb.ack(first_six[:3])  # orb holds 4-6 pending and has not read 7-10

    assert lago.trim_delivered(0, now_ms=LATER) == 3
    assert ids(r) == added[3:]  # from orb's first pending entry on
    orb.ack(first_six[3:])
    assert lago.trim_delivered(0, now_ms=LATER) == 3
    assert ids(r) == added[6:]  # orb has not read these yet
    orb.ack(orb.read_new(10, None))
    assert orb.trim_delivered(0, now_ms=LATER) == 4
    assert r.xlen(STREAM) == 0


def test_delivered_entries_stay_for_the_retention(r: redis.Redis) -> None:
    lago = group(r, "lago")
    for i in range(5):
        r.xadd(STREAM, {"n": str(i)})
    lago.ack(lago.read_new(10, None))
    assert lago.trim_delivered(3_600_000) == 0
    assert r.xlen(STREAM) == 5
    assert lago.trim_delivered(3_600_000, now_ms=LATER) == 5


def test_streams_without_a_group_are_kept_whole(r: redis.Redis) -> None:
    for i in range(5):
        r.xadd(STREAM, {"n": str(i)})
    assert ConsumerGroup(r, "lago", "c").trim_delivered(0, now_ms=LATER) == 0
    assert r.xlen(STREAM) == 5


def test_a_draining_forwarder_leaves_empty_streams_unless_another_sink_still_needs_them(
        redis_url: str, r: redis.Redis) -> None:
    produced = produce(redis_url, 300)
    with BillingRecorder("http") as backend:
        forwarder = forward("http", r, backend, retain_ms=0)
    assert_billed_once(backend, produced)
    assert sum(r.xlen(s) for s in event_streams() if r.exists(s)) == 0
    assert forwarder.metrics.tally.delivered == 300

    produced = produce(redis_url, 200, start=300)
    ConsumerGroup(r, group_name("orb"), "c").ensure()  # a second sink, not running yet
    with BillingRecorder("http") as backend:
        forward("http", r, backend, retain_ms=0)
    assert_billed_once(backend, produced)
    assert sum(r.xlen(s) for s in event_streams() if r.exists(s)) == 200  # orb's to deliver


def test_idle_consumers_holding_nothing_are_forgotten(r: redis.Redis) -> None:
    for i in range(6):
        r.xadd(STREAM, {"n": str(i)})
    done = ConsumerGroup(r, "lago", "restarted-long-ago", [STREAM])
    done.ensure()
    done.ack(done.read_new(2, None))
    holding = ConsumerGroup(r, "lago", "crashed", [STREAM])
    holding.read_new(2, None)  # never acked: XAUTOCLAIM must still find its owner
    me = ConsumerGroup(r, "lago", "me", [STREAM])
    me.ack(me.read_new(10, None))  # idle and holding nothing too, but it is us
    time.sleep(0.02)

    assert me.forget_idle_consumers(3_600_000) == 0  # nobody idle that long
    assert me.forget_idle_consumers(1) == 1
    assert {c["name"] for c in r.xinfo_consumers(STREAM, "lago")} == {"crashed", "me"}
