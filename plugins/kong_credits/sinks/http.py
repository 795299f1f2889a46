"""Any HTTP endpoint: a JSON array of CloudEvents 1.0, optionally bearer-authenticated and
HMAC-signed. OpenMeter and Kong's metering ingest accept this body as it is."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any

from ..rated_event import RatedEvent, rfc3339
from .base import Delivery, Sink, check_status

__all__ = ["CONTENT_TYPE", "DEFAULT_EVENT_TYPE", "HttpSink", "cloud_event", "signature"]

CONTENT_TYPE = "application/cloudevents-batch+json"
DEFAULT_EVENT_TYPE = "kong-credits.request"


def cloud_event(event: RatedEvent, *, subject: str, source: str, type_: str) -> dict[str, Any]:
    """A CloudEvents 1.0 structured event; `id` is the event id receivers deduplicate on
    (together with `source`)."""
    return {
        "specversion": "1.0",
        "id": event.event_id,
        "source": source,
        "type": type_,
        "subject": subject,
        "time": rfc3339(event.timestamp_ms),
        "datacontenttype": "application/json",
        "data": event.properties(),
    }


def signature(secret: str, body: bytes) -> str:
    """The signature header's value: "sha256=" + hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class HttpSink(Sink):
    """POST to --url itself; 2xx means every event of the batch is delivered."""

    name = "http"
    max_batch = 1000
    path = ""
    """Appended to the base URL (vendors built on this sink set their endpoint here)."""

    def body(self, events: Sequence[RatedEvent]) -> bytes:
        type_ = self.config.event_name or DEFAULT_EVENT_TYPE
        batch = [cloud_event(e, subject=self.customer(e), source=self.config.source, type_=type_)
                 for e in events]
        return json.dumps(batch, separators=(",", ":")).encode()

    def send(self, events: Sequence[RatedEvent]) -> Delivery:
        body = self.body(events)
        headers = {"Content-Type": CONTENT_TYPE}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        if self.config.hmac_secret:
            headers[self.config.signature_header] = signature(self.config.hmac_secret, body)
        check_status(self.post(self.base_url + self.path, content=body, headers=headers))
        return Delivery.of(events)
