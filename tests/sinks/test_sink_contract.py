"""The contract every sink in SINKS keeps, each against a fake of its vendor's backend."""

from __future__ import annotations

import pytest
from billing_recorder import BAD_PREFIX, make_events

from kong_credits.customers import CustomerMap
from kong_credits.rated_event import RatedEvent
from kong_credits.sinks import SINKS, Delivery, Sink

all_sinks = pytest.mark.parametrize("kind", sorted(SINKS), ids=lambda kind: f"sink={kind}")


def deliver_until_resolved(sink: Sink, events: list[RatedEvent], rounds: int = 20) -> Delivery:
    """What the forwarder does, minus the waiting: deliver the unresolved again."""
    total = Delivery()
    pending = events
    for _ in range(rounds):
        outcome = sink.deliver(pending)
        total = total.merge(outcome)
        pending = outcome.unresolved(pending)
        if not pending:
            return total
    raise AssertionError(f"{len(pending)} events still unresolved after {rounds} rounds")


@all_sinks
def test_registry_key_is_the_sink_name_and_batches_are_bounded(kind: str) -> None:
    assert SINKS[kind].name == kind
    assert 1 <= SINKS[kind].default_batch <= SINKS[kind].max_batch <= 10_000


@all_sinks
def test_every_event_arrives_with_its_id_customer_and_cost(kind: str, make_deliverer) -> None:
    d = make_deliverer(kind)
    events = make_events(min(d.sink.max_batch, 40))
    outcome = d.sink.deliver(events)
    assert outcome == Delivery.of(events)
    stored = d.backend.stored
    assert {e.event_id: (e.wallet, e.cost) for e in events} == {
        r.event_id: (r.customer, r.cost) for r in stored.values()}


@all_sinks
def test_sending_the_same_events_again_counts_as_delivered_without_a_second_copy(
        kind: str, make_deliverer) -> None:
    d = make_deliverer(kind)
    events = make_events(5)
    assert d.sink.deliver(events) == Delivery.of(events)
    assert d.sink.deliver(events) == Delivery.of(events)
    assert sorted(d.backend.stored) == sorted(e.event_id for e in events)


@all_sinks
@pytest.mark.parametrize("fault", ["500", "429", "hang", "drop", "timeout", "drop-after"])
def test_transient_failure_leaves_the_event_unresolved_then_it_is_delivered_once(
        kind: str, fault: str, make_deliverer) -> None:
    d = make_deliverer(kind)
    [event] = make_events(1)
    d.backend.fail_next(fault)
    first = d.sink.deliver([event])
    assert first.unresolved([event]) == [event]
    assert first.retry_reason
    assert d.sink.deliver([event]) == Delivery.of([event])
    assert list(d.backend.stored) == [event.event_id]


@all_sinks
def test_retry_after_of_a_429_is_reported(kind: str, make_deliverer) -> None:
    d = make_deliverer(kind)
    d.backend.retry_after = "7"
    d.backend.fail_next("429")
    outcome = d.sink.deliver(make_events(1))
    assert outcome.retry_after_s == 7.0
    [refused] = d.backend.requests
    assert outcome.retry_reason == f'HTTP 429 from {refused.path}: {{"error": "injected 429"}}'


@all_sinks
def test_a_refused_event_is_rejected_with_a_reason_and_the_rest_delivered(
        kind: str, make_deliverer) -> None:
    d = make_deliverer(kind)
    events = make_events(6)
    bad = RatedEvent(event_id=f"{BAD_PREFIX}1", wallet="wallet-0", cost=3,
                     timestamp_ms=events[0].timestamp_ms)
    outcome = d.sink.deliver([*events[:3], bad, *events[3:]])
    assert set(outcome.rejected) == {bad.event_id}
    assert outcome.rejected[bad.event_id]
    assert outcome.delivered == {e.event_id for e in events}
    assert sorted(d.backend.stored) == sorted(e.event_id for e in events)


@all_sinks
def test_a_permanent_http_error_rejects_a_single_event(kind: str, make_deliverer) -> None:
    d = make_deliverer(kind)
    d.backend.fail_next("400")
    [event] = make_events(1)
    outcome = d.sink.deliver([event])
    assert list(outcome.rejected) == [event.event_id]
    assert "400" in outcome.rejected[event.event_id]


@all_sinks
def test_nothing_is_lost_or_doubled_under_random_faults(kind: str, make_deliverer) -> None:
    d = make_deliverer(kind)
    d.backend.chaos(0.3, ["500", "429", "drop", "drop-after"], seed=3)
    events = make_events(min(d.sink.max_batch, 30))
    outcome = deliver_until_resolved(d.sink, events)
    assert outcome.delivered == {e.event_id for e in events}
    assert sum(r.cost for r in d.backend.stored.values()) == sum(e.cost for e in events)
    assert {r.event_id for r in d.backend.receipts} <= outcome.delivered


@all_sinks
def test_wallets_are_billed_under_the_mapped_customer(kind: str, make_deliverer) -> None:
    customers = CustomerMap({"wallet-0": {kind: f"{kind}-acme"}, "wallet-1": "globex"})
    d = make_deliverer(kind, customers=customers)
    d.sink.deliver(make_events(3))
    assert sorted(r.customer for r in d.backend.stored.values()) == sorted(
        [f"{kind}-acme", "globex", "wallet-2"])


@all_sinks
def test_more_than_max_batch_events_is_a_caller_error(kind: str, make_deliverer) -> None:
    d = make_deliverer(kind)
    with pytest.raises(ValueError, match="exceed"):
        d.sink.deliver(make_events(d.sink.max_batch + 1))
    assert d.backend.requests == []


@all_sinks
def test_refused_events_are_found_in_few_requests(kind: str, make_deliverer) -> None:
    d = make_deliverer(kind)
    events = make_events(min(d.sink.max_batch, 64))
    bad = RatedEvent(event_id=f"{BAD_PREFIX}9", wallet="wallet-0", cost=1,
                     timestamp_ms=events[0].timestamp_ms)
    outcome = d.sink.deliver([*events[:40], bad, *events[40:]])
    assert set(outcome.rejected) == {bad.event_id}
    one_call_per_event = kind == "stripe"
    assert len(d.backend.requests) <= (len(events) + 1 if one_call_per_event else 16)
