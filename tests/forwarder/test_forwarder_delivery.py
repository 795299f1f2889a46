"""The forwarder end to end in-process: real engine events, real Redis, a faulty backend."""

from __future__ import annotations

import logging
import threading

import pytest
import redis
from billing_recorder import FAULTS, BillingRecorder, sink_config
from event_source import FAST, assert_billed_once, assert_nothing_pending, forward, produce

from kong_credits.forwarder import Forwarder, ForwarderOptions
from kong_credits.forwarder.consumer_group import ConsumerGroup
from kong_credits.forwarder.dlq import list_dead_letters
from kong_credits.forwarder.group_names import group_name
from kong_credits.sinks import SINKS, http_client

# (sink, events, batch size, fault rate, faults): thousands where a batch is one request,
# fewer where every event is its own call (stripe), and no waiting faults there.
CASES = [
    ("http", 3000, 100, 0.2, FAULTS),
    ("openmeter", 2000, 250, 0.2, FAULTS),
    ("lago", 3000, 100, 0.2, FAULTS),
    ("orb", 2000, 500, 0.25, FAULTS),
    ("stripe", 600, 100, 0.05, ("500", "429", "drop", "drop-after")),
]


@pytest.mark.parametrize(("kind", "count", "batch", "rate", "faults"), CASES,
                         ids=[f"sink={case[0]}" for case in CASES])
def test_every_event_is_billed_once_under_faults(kind: str, count: int, batch: int,
                                                 rate: float, faults: tuple[str, ...],
                                                 redis_url: str, r: redis.Redis) -> None:
    produced = produce(redis_url, count, bad=4, settled=20)
    refused = produced.ids(bad=True)
    with BillingRecorder(kind) as backend:
        backend.chaos(rate, faults, seed=11)
        forwarder = forward(kind, r, backend, batch_size=batch)
        assert backend.faults_injected
    assert_billed_once(backend, produced, refused=refused)
    assert_nothing_pending(r, group_name(kind))
    letters = list_dead_letters(r, group=group_name(kind))
    assert {d.fields["event_id"] for d in letters} == refused
    assert all(d.reason and d.sink == kind for d in letters)
    tally = forwarder.metrics.tally
    assert (tally.delivered, tally.dead_lettered, tally.lost) == (count - 4, 4, 0)


def test_per_shard_reads_deliver_the_same(redis_url: str, r: redis.Redis) -> None:
    produced = produce(redis_url, 800)
    with BillingRecorder("http") as backend:
        backend.chaos(0.2, ("500", "drop-after"), seed=2)
        forward("http", r, backend, per_shard=True, batch_size=50)
    assert_billed_once(backend, produced)
    assert_nothing_pending(r, group_name("http"))


def test_settled_events_carry_reserved_and_status(redis_url: str, r: redis.Redis) -> None:
    produce(redis_url, 3, settled=1)
    with BillingRecorder("http") as backend:
        forward("http", r, backend)
    data = {receipt.event_id: receipt.raw["data"] for receipt in backend.receipts}
    assert data["req-2"]["status"] == 200 and data["req-2"]["reserved"] == data["req-2"]["cost"] + 3
    assert "status" not in data["req-0"]


def test_two_sinks_each_get_every_event_through_their_own_group(redis_url: str,
                                                                r: redis.Redis) -> None:
    produced = produce(redis_url, 300)
    with BillingRecorder("lago") as lago, BillingRecorder("orb") as orb:
        forward("lago", r, lago)
        forward("orb", r, orb)
    assert_billed_once(lago, produced)
    assert_billed_once(orb, produced)


def test_a_batch_log_line_at_debug_and_a_summary_at_info(redis_url: str, r: redis.Redis,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    produce(redis_url, 250)
    caplog.set_level(logging.DEBUG, logger="kong_credits.forwarder")
    with BillingRecorder("http") as backend:
        forward("http", r, backend, batch_size=100)
    batches = [m for m in caplog.messages if m.startswith("batch to http")]
    assert len(batches) >= 3
    summary = [rec for rec in caplog.records
               if rec.levelno == logging.INFO and "forwarder to http" in rec.message]
    assert summary and "250 delivered" in summary[-1].message
    assert "lag 0, pending 0" in summary[-1].message


def test_continuous_mode_delivers_new_events_until_stopped(redis_url: str,
                                                           r: redis.Redis) -> None:
    stop = threading.Event()
    config = sink_config("http", "")
    with BillingRecorder("http") as backend, http_client(config) as http:
        sink = SINKS["http"](http, sink_config("http", backend.url))
        group = ConsumerGroup(r, group_name("http"), "live")
        forwarder = Forwarder(group, sink, ForwarderOptions(block_ms=50, backoff=FAST),
                              stop=stop)
        result: list[int] = []
        worker = threading.Thread(target=lambda: result.append(forwarder.run()))
        worker.start()
        try:
            produced = produce(redis_url, 200)
            deadline = threading.Event()
            for _ in range(200):
                if len(backend.stored) == 200:
                    break
                deadline.wait(0.05)
        finally:
            stop.set()
            worker.join(timeout=10)
    assert result == [0]
    assert_billed_once(backend, produced)
