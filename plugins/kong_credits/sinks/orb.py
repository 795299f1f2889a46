"""Orb: POST /v1/ingest with {"events": [...]}, `idempotency_key` = event id.

Orb ingests an idempotency key at most once: a 200 means every event is ingested or was
already (a duplicate, which `?debug=true` would list). A 400 lists refused events in
`validation_failed`; those are dead-lettered and the rest of the batch is sent again, which
their idempotency keys make safe. Orb states no batch size limit; 500 keeps requests small.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx

from ..rated_event import RatedEvent, rfc3339
from .base import Delivery, RetryableSinkError, Sink, check_status

__all__ = ["OrbSink", "validation_failures"]


def validation_failures(response: httpx.Response) -> dict[str, str]:
    """idempotency key -> Orb's validation errors, from a 200 or 400 answer."""
    try:
        failed = response.json().get("validation_failed") or []
        return {str(f["idempotency_key"]): "; ".join(map(str, f.get("validation_errors") or []))
                or "validation failed" for f in failed}
    except (ValueError, AttributeError, KeyError, TypeError):
        return {}


class OrbSink(Sink):
    name = "orb"
    max_batch = 500
    default_url = "https://api.withorb.com"
    requires = ("api_key", "event_name")

    def event(self, event: RatedEvent) -> dict[str, Any]:
        """One Orb event: properties are flat strings and numbers, as Orb requires."""
        return {
            "event_name": self.config.event_name,
            "idempotency_key": event.event_id,
            "external_customer_id": self.customer(event),
            "timestamp": rfc3339(event.timestamp_ms),
            "properties": event.properties(),
        }

    def send(self, events: Sequence[RatedEvent], *, again: bool = True) -> Delivery:
        body = json.dumps({"events": [self.event(e) for e in events]}, separators=(",", ":"))
        response = self.post(
            f"{self.base_url}/v1/ingest", content=body.encode(),
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {self.config.api_key}"})
        failed = validation_failures(response) if response.status_code in (200, 400) else {}
        refused = {e.event_id: f"orb: {failed[e.event_id]}" for e in events
                   if e.event_id in failed}
        if response.status_code == 400 and refused:
            rest = [e for e in events if e.event_id not in refused]
            outcome = Delivery(rejected=refused)
            if not rest or not again:
                return outcome
            try:
                return outcome.merge(self.send(rest, again=False))
            except RetryableSinkError as exc:
                return outcome.merge(Delivery.retry(exc))
        check_status(response)
        return Delivery(delivered=frozenset(e.event_id for e in events
                                            if e.event_id not in refused), rejected=refused)
