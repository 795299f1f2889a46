"""The lago sink: batch body per the Lago SDK's models, duplicates split out and delivered."""

from __future__ import annotations

import httpx
import pytest
from billing_recorder import EVENT_NAME, make_events
from lago_python_client.models import event as lago_event

from kong_credits.errors import InvalidInput
from kong_credits.sinks import SINKS, Delivery, SinkConfig
from kong_credits.sinks.lago import is_duplicate


def test_body_fits_the_lago_sdk_batch_model(make_deliverer) -> None:
    d = make_deliverer("lago")
    events = make_events(3)
    d.sink.deliver(events)
    [request] = d.backend.requests
    assert request.path == "/api/v1/events/batch"
    assert request.headers["authorization"] == "Bearer test-key"
    body = request.json()
    fields = lago_event.Event.__fields__
    required = {name for name, f in fields.items() if f.required}
    for sent in body["events"]:
        assert required <= set(sent) <= set(fields), set(sent) - set(fields)
    batch = lago_event.BatchEvent.parse_obj(body)
    assert [(e.transaction_id, e.external_subscription_id, e.code) for e in batch.events] == [
        (e.event_id, e.wallet, EVENT_NAME) for e in events]
    assert [round(float(e.timestamp) * 1000) for e in batch.events] == [
        e.timestamp_ms for e in events]
    assert batch.events[0].properties["cost"] == events[0].cost


def test_events_lago_already_has_count_as_delivered_and_the_rest_is_sent_again(
        make_deliverer) -> None:
    d = make_deliverer("lago")
    events = make_events(5)
    d.sink.deliver([events[2]])
    outcome = d.sink.deliver(events)
    assert outcome == Delivery.of(events)
    sizes = [len(r.json()["events"]) for r in d.backend.requests]
    assert sizes == [1, 5, 4]
    assert sorted(d.backend.stored) == sorted(e.event_id for e in events)


def test_external_customer_id_mode(make_deliverer) -> None:
    d = make_deliverer("lago", lago_id_field="external_customer_id")
    d.sink.deliver(make_events(1))
    [sent] = d.backend.requests[0].json()["events"]
    assert sent["external_customer_id"] == "wallet-0"
    assert "external_subscription_id" not in sent


def test_unknown_id_field_is_refused() -> None:
    with httpx.Client() as client, pytest.raises(InvalidInput, match="lago id field"):
        SINKS["lago"](client, SinkConfig(api_key="k", event_name="c", lago_id_field="wallet"))


@pytest.mark.parametrize(("body", "duplicate"), [
    # lago-api issue #3049: the batch endpoint's answer when transaction ids exist already
    ({"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
      "error_details": {"0": {"transaction_id": ["value_already_exist"]},
                        "1": {"transaction_id": ["value_already_exist"]}}}, True),
    ({"status": 422, "code": "validation_errors",
      "error_details": {"transaction_id": ["value_already_exist"]}}, True),
    ({"status": 422, "code": "validation_errors",
      "error_details": {"0": {"transaction_id": ["value_already_exist"]},
                        "1": {"code": ["billable_metric_not_found"]}}}, False),
    ({"status": 422, "code": "validation_errors",
      "error_details": {"0": {"transaction_id": ["value_already_exist"],
                              "timestamp": ["invalid_format"]}}}, False),
    ({"status": 422, "code": "validation_errors", "error_details": {}}, False),
    ("not json", False),
])
def test_only_an_already_existing_transaction_id_is_a_duplicate(body: object,
                                                                 duplicate: bool) -> None:
    response = (httpx.Response(422, json=body) if isinstance(body, dict)
                else httpx.Response(422, text=str(body)))
    assert is_duplicate(response) is duplicate
