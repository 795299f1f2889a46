"""The orb sink: ingest body per the Orb SDK's types, validation failures dead-lettered."""

from __future__ import annotations

import typing

import httpx
from billing_recorder import BAD_PREFIX, EVENT_NAME, make_events
from orb.types.event_ingest_params import Event as OrbEvent
from orb.types.event_ingest_response import EventIngestResponse, ValidationFailed

from kong_credits.rated_event import RatedEvent
from kong_credits.sinks.orb import validation_failures


def test_body_fits_the_orb_sdk_event_type(make_deliverer) -> None:
    d = make_deliverer("orb")
    events = make_events(3)
    d.sink.deliver(events)
    [request] = d.backend.requests
    assert request.path == "/v1/ingest"
    assert request.headers["authorization"] == "Bearer test-key"
    hints = typing.get_type_hints(OrbEvent, include_extras=True)
    required = {k for k, hint in hints.items() if typing.get_origin(hint) is typing.Required}
    for sent, event in zip(request.json()["events"], events, strict=True):
        assert required <= set(sent) <= set(hints), set(sent) - set(hints)
        assert (sent["idempotency_key"], sent["external_customer_id"], sent["event_name"]) == (
            event.event_id, event.wallet, EVENT_NAME)
        assert sent["timestamp"].endswith("Z")
        assert all(isinstance(v, str | int) for v in sent["properties"].values())


def test_refused_events_are_rejected_and_the_rest_resent_once(make_deliverer) -> None:
    d = make_deliverer("orb")
    events = make_events(4)
    bad = RatedEvent(event_id=f"{BAD_PREFIX}x", wallet="nobody", cost=1,
                     timestamp_ms=events[0].timestamp_ms)
    outcome = d.sink.deliver([*events, bad])
    assert list(outcome.rejected) == [bad.event_id]
    assert "Customer does not exist" in outcome.rejected[bad.event_id]
    assert outcome.delivered == {e.event_id for e in events}
    assert [len(r.json()["events"]) for r in d.backend.requests] == [5, 4]


def test_validation_failures_are_read_with_the_sdk_field_names() -> None:
    answer = EventIngestResponse(validation_failed=[ValidationFailed(
        idempotency_key="ev-1", validation_errors=["timestamp too old", "no customer"])])
    response = httpx.Response(400, json=answer.model_dump())
    assert validation_failures(response) == {"ev-1": "timestamp too old; no customer"}
    assert validation_failures(httpx.Response(400, text="<html>")) == {}
