"""Stripe billing meter events: POST /v1/billing/meter_events, form-encoded, one per call.

- `identifier` = event id: Stripe keeps identifiers unique for at least 24 hours and refuses a
  repeat with 400 "An event already exists with identifier ...", which counts as delivered.
- One call at a time per customer and meter (Stripe's limit): a batch is split by customer;
  `concurrency` customers are sent to in parallel, each one's events in order.
- Timestamps must be within the past 35 days: an older event is rejected here, unsent.
- 1000 calls/s per account in live mode (less in test mode); a 429 is retried with backoff.
The v2 meter event stream (100 events per call, session tokens) validates asynchronously, so a
refused event could not reach the dead-letter stream; v1 reports every refusal inline.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx

from ..rated_event import RatedEvent
from .base import Delivery, PermanentSinkError, RetryableSinkError, Sink, SinkConfig, check_status

__all__ = ["MAX_AGE_MS", "StripeSink", "is_duplicate"]

MAX_AGE_MS = 35 * 86_400_000
_DUPLICATE_PREFIX = "An event already exists with identifier"


def is_duplicate(response: httpx.Response) -> bool:
    """Stripe's refusal of an identifier it already holds."""
    try:
        error = response.json().get("error") or {}
        return str(error.get("message", "")).startswith(_DUPLICATE_PREFIX)
    except (ValueError, AttributeError):
        return False


class StripeSink(Sink):
    name = "stripe"
    max_batch = 100
    default_url = "https://api.stripe.com"
    requires = ("api_key", "event_name")

    def __init__(self, client: httpx.Client, config: SinkConfig) -> None:
        super().__init__(client, config)
        self._pool = ThreadPoolExecutor(max_workers=max(1, config.concurrency),
                                        thread_name_prefix="stripe-sink")

    def form(self, event: RatedEvent) -> dict[str, str]:
        """The form fields of one meter event (payload keys are the meter's defaults)."""
        return {
            "event_name": str(self.config.event_name),
            "identifier": event.event_id,
            "timestamp": str(event.timestamp_ms // 1000),
            "payload[stripe_customer_id]": self.customer(event),
            "payload[value]": str(event.cost),
        }

    def send(self, events: Sequence[RatedEvent]) -> Delivery:
        oldest_ms = int(time.time() * 1000) - MAX_AGE_MS
        too_old = {e.event_id: "timestamp older than the 35 days Stripe accepts"
                   for e in events if e.timestamp_ms < oldest_ms}
        by_customer: dict[str, list[RatedEvent]] = {}
        for event in events:
            if event.event_id not in too_old:
                by_customer.setdefault(self.customer(event), []).append(event)
        outcome = Delivery(rejected=too_old)
        for part in self._pool.map(self._send_in_order, by_customer.values()):
            outcome = outcome.merge(part)
        return outcome

    def _send_in_order(self, events: Sequence[RatedEvent]) -> Delivery:
        """One customer's events, one call at a time; stop at the first retryable failure."""
        outcome = Delivery()
        for event in events:
            try:
                outcome = outcome.merge(self._send_one(event))
            except PermanentSinkError as exc:
                outcome = outcome.merge(Delivery(rejected={event.event_id: exc.reason}))
            except RetryableSinkError as exc:
                return outcome.merge(Delivery.retry(exc))
        return outcome

    def _send_one(self, event: RatedEvent) -> Delivery:
        response = self.post(
            f"{self.base_url}/v1/billing/meter_events", data=self.form(event),
            headers={"Authorization": f"Bearer {self.config.api_key}"})
        if response.status_code == 400 and is_duplicate(response):
            return Delivery.of([event])
        check_status(response)
        return Delivery.of([event])

    def close(self) -> None:
        self._pool.shutdown(wait=True)
