"""The http and openmeter sinks: CloudEvents 1.0 batches, bearer token, HMAC signature."""

from __future__ import annotations

import hashlib
import hmac
import re

import httpx
import pytest
from billing_recorder import make_events

from kong_credits.errors import InvalidInput
from kong_credits.rated_event import RatedEvent
from kong_credits.sinks import SINKS, SinkConfig
from kong_credits.sinks.http import CONTENT_TYPE, DEFAULT_EVENT_TYPE

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_each_event_is_a_cloudevent_with_the_event_id_and_wallet_as_subject(
        make_deliverer) -> None:
    d = make_deliverer("http", event_name=None, api_key=None)
    settled = RatedEvent(event_id="req-9", wallet="acme", cost=7, timestamp_ms=1_767_225_600_001,
                         consumer="bob", route="generate", service="llm", method="POST",
                         path="/v1/generate", reserved=20, status=200)
    d.sink.deliver([settled])
    [request] = d.backend.requests
    assert request.headers["content-type"] == CONTENT_TYPE
    assert "authorization" not in request.headers
    [event] = request.json()
    assert event == {
        "specversion": "1.0", "id": "req-9", "source": "kong-credits",
        "type": DEFAULT_EVENT_TYPE, "subject": "acme", "time": "2026-01-01T00:00:00.001Z",
        "datacontenttype": "application/json",
        "data": {"cost": 7, "wallet": "acme", "consumer": "bob", "route": "generate",
                 "service": "llm", "method": "POST", "path": "/v1/generate", "reserved": 20,
                 "status": 200},
    }


def test_a_batch_is_one_json_array_in_stream_order(make_deliverer) -> None:
    d = make_deliverer("http", event_name="api.request", source="gateway-eu")
    events = make_events(25)
    d.sink.deliver(events)
    [request] = d.backend.requests
    batch = request.json()
    assert [e["id"] for e in batch] == [e.event_id for e in events]
    assert {(e["type"], e["source"]) for e in batch} == {("api.request", "gateway-eu")}
    assert all(RFC3339_MS.match(e["time"]) for e in batch)
    assert "reserved" not in batch[0]["data"] and "status" not in batch[0]["data"]


def test_bearer_token_and_hmac_signature_over_the_exact_body(make_deliverer) -> None:
    d = make_deliverer("http", hmac_secret="s3cret", signature_header="X-KC-Signature")
    d.sink.deliver(make_events(3))
    [request] = d.backend.requests
    assert request.headers["authorization"] == "Bearer test-key"
    expected = hmac.new(b"s3cret", request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-kc-signature"] == f"sha256={expected}"


def test_openmeter_posts_to_its_ingest_endpoint_and_accepts_204(make_deliverer) -> None:
    d = make_deliverer("openmeter")
    events = make_events(4)
    assert d.sink.deliver(events).delivered == {e.event_id for e in events}
    [request] = d.backend.requests
    assert request.path == "/api/v1/events"
    assert request.headers["authorization"] == "Bearer test-key"


@pytest.mark.parametrize(("kind", "config", "message"), [
    ("http", SinkConfig(), "needs --url"),
    ("lago", SinkConfig(), "needs --api-key, --event-name"),
    ("stripe", SinkConfig(api_key="sk_test"), "needs --event-name"),
    ("orb", SinkConfig(event_name="calls"), "needs --api-key"),
])
def test_missing_settings_are_named_as_options(kind: str, config: SinkConfig,
                                               message: str) -> None:
    with httpx.Client() as client, pytest.raises(InvalidInput, match=message):
        SINKS[kind](client, config)


def test_openmeter_defaults_to_openmeter_cloud() -> None:
    with httpx.Client() as client:
        assert SINKS["openmeter"](client, SinkConfig()).base_url == "https://openmeter.cloud"
