"""Lago: POST /api/v1/events/batch, at most 100 events, `transaction_id` = event id.

Lago validates a batch as a whole: one event whose transaction_id it already holds fails the
batch with 422 `{"code": "validation_errors", "error_details": {"3": {"transaction_id":
["value_already_exist"]}}}`. The events it names only as already existing count as delivered
(Lago has them) and the rest of the batch is sent again; a batch refused for other reasons is
split in halves down to single events (Sink.deliver) to find the culprits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from ..errors import InvalidInput
from ..rated_event import RatedEvent
from .base import Delivery, Sink, SinkConfig, check_status

__all__ = ["ID_FIELDS", "LagoSink", "is_duplicate"]

ID_FIELDS = ("external_subscription_id", "external_customer_id")
"""What the customer id names at Lago. Lago 1.2+ requires the subscription id on events;
external_customer_id is for older versions."""
_DUPLICATE = ["value_already_exist"]


def _error_details(response: httpx.Response) -> Mapping[str, Any]:
    try:
        details = response.json().get("error_details")
    except (ValueError, AttributeError):
        return {}
    return details if isinstance(details, Mapping) else {}


def is_duplicate(response: httpx.Response) -> bool:
    """A 422 whose only complaint is an existing transaction_id (single or batch shape)."""
    details = _error_details(response)
    if "transaction_id" in details:
        return dict(details) == {"transaction_id": _DUPLICATE}
    return bool(details) and len(duplicate_indices(response)) == len(details)


def duplicate_indices(response: httpx.Response) -> set[int]:
    """Positions in a refused batch whose only error is an existing transaction_id."""
    return {int(index) for index, errors in _error_details(response).items()
            if index.isdigit() and isinstance(errors, Mapping)
            and dict(errors) == {"transaction_id": _DUPLICATE}}


class LagoSink(Sink):
    name = "lago"
    max_batch = 100
    default_url = "https://api.getlago.com"
    requires = ("api_key", "event_name")

    def __init__(self, client: httpx.Client, config: SinkConfig) -> None:
        super().__init__(client, config)
        if self.config.lago_id_field not in ID_FIELDS:
            raise InvalidInput(f"lago id field must be one of {', '.join(ID_FIELDS)}, "
                               f"not {self.config.lago_id_field!r}")

    def event(self, event: RatedEvent) -> dict[str, Any]:
        """One Lago event; timestamp in seconds with millisecond decimals, as Lago parses it."""
        seconds, millis = divmod(event.timestamp_ms, 1000)
        return {
            "transaction_id": event.event_id,
            self.config.lago_id_field: self.customer(event),
            "code": self.config.event_name,
            "timestamp": f"{seconds}.{millis:03d}",
            "properties": event.properties(),
        }

    def send(self, events: Sequence[RatedEvent]) -> Delivery:
        body = json.dumps({"events": [self.event(e) for e in events]}, separators=(",", ":"))
        response = self.post(
            f"{self.base_url}/api/v1/events/batch", content=body.encode(),
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {self.config.api_key}"})
        if response.status_code == 422:
            known = {events[i].event_id for i in duplicate_indices(response) if i < len(events)}
            if len(events) == 1 and is_duplicate(response):
                known = {events[0].event_id}
            if known:
                rest = [e for e in events if e.event_id not in known]
                return Delivery(delivered=frozenset(known)).merge(self.deliver(rest))
        check_status(response)
        return Delivery.of(events)
