"""The stripe sink: v1 meter events as the Stripe SDK encodes them, one call per customer at
a time, the 35-day window, duplicates delivered."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlencode

from billing_recorder import EVENT_NAME, make_events
from stripe._encode import _api_encode
from stripe.params.billing._meter_event_create_params import MeterEventCreateParams

from kong_credits.rated_event import RatedEvent
from kong_credits.sinks.stripe import MAX_AGE_MS


def test_form_is_what_the_stripe_sdk_sends_for_meter_event_create(make_deliverer) -> None:
    d = make_deliverer("stripe")
    [event] = make_events(1)
    d.sink.deliver([event])
    [request] = d.backend.requests
    assert request.path == "/v1/billing/meter_events"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["authorization"] == "Bearer test-key"
    params = {"event_name": EVENT_NAME, "identifier": event.event_id,
              "timestamp": event.timestamp_ms // 1000,
              "payload": {"stripe_customer_id": event.wallet, "value": str(event.cost)}}
    assert MeterEventCreateParams.__required_keys__ <= set(params)
    assert set(params) <= set(MeterEventCreateParams.__annotations__)
    sdk_form = parse_qs(urlencode(list(_api_encode(params))))
    assert parse_qs(request.body.decode()) == sdk_form


def test_an_event_older_than_35_days_is_rejected_without_a_call(make_deliverer) -> None:
    d = make_deliverer("stripe")
    old = RatedEvent(event_id="old-1", wallet="w", cost=5,
                     timestamp_ms=int(time.time() * 1000) - MAX_AGE_MS - 60_000)
    outcome = d.sink.deliver([old])
    assert "35 days" in outcome.rejected["old-1"]
    assert d.backend.requests == []


def test_never_two_calls_at_once_for_one_customer(make_deliverer) -> None:
    d = make_deliverer("stripe", concurrency=4)
    events = make_events(60, wallets=4)
    assert d.sink.deliver(events).delivered == {e.event_id for e in events}
    assert d.backend.overlaps == 0
    assert len(d.backend.requests) == 60


def test_a_429_stops_that_customer_in_order_and_not_the_others(make_deliverer) -> None:
    d = make_deliverer("stripe", concurrency=1)
    events = make_events(9, wallets=3)
    d.backend.fail_next("429")
    outcome = d.sink.deliver(events)
    unresolved = outcome.unresolved(events)
    assert unresolved == [e for e in events if e.wallet == events[0].wallet]
    assert outcome.delivered == {e.event_id for e in events if e.wallet != events[0].wallet}
