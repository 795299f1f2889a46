"""`POST /v1/webhooks/stripe`: Stripe's events, authenticated by their signature alone.

    400  the Stripe-Signature header matches no secret (or is missing, or older than 300 s),
         or the payload is no event: nothing happened
    200  applied, or ignored for good (the body says which: `action`, `reason`)
    500  no webhook secret is configured
    502  Stripe's API did not answer (line items, prices): Stripe retries the event
    503  Redis is down: nothing was half-applied, and Stripe retries the event

Needs `app.state.redis` (a redis.Redis); reads `app.state.stripe_settings` when the app
set one, else the environment (payments/settings.py), once.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, FastAPI, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from ..errors import InvalidInput, RedisUnavailable
from ..payments.catalog import StripeCatalog, StripeUnavailable
from ..payments.settings import StripeSettings
from ..payments.stripe_events import (
    BadSignature,
    StripePayments,
    WebhookNotConfigured,
    verify_event,
)

__all__ = ["MAX_EVENT_BYTES", "router"]

log = logging.getLogger(__name__)
router = APIRouter()
MAX_EVENT_BYTES = 1 << 20
"""Stripe's events are a few KiB; a larger body is refused before it is read whole."""


def _settings(app: FastAPI) -> StripeSettings:
    settings = getattr(app.state, "stripe_settings", None)
    if settings is None:
        settings = app.state.stripe_settings = StripeSettings.from_env()
    return settings


def _payments(app: FastAPI) -> StripePayments:
    payments = getattr(app.state, "stripe_payments", None)
    if payments is None:
        payments = StripePayments(app.state.redis, StripeCatalog(_settings(app)))
        app.state.stripe_payments = payments
    return payments


@router.post("/v1/webhooks/stripe")
async def stripe_webhook(request: Request) -> dict[str, object]:
    """Verify the event's signature, then apply it (payments/stripe_events.py)."""
    if int(request.headers.get("content-length") or 0) > MAX_EVENT_BYTES:
        raise HTTPException(413, "a Stripe event is never this large")
    payload = await request.body()
    try:
        event = verify_event(payload, request.headers.get("stripe-signature"),
                             _settings(request.app).webhook_secrets)
    except (BadSignature, InvalidInput) as exc:
        raise HTTPException(400, str(exc)) from None
    except WebhookNotConfigured as exc:
        log.error("Stripe webhook refused: %s", exc)
        raise HTTPException(500, str(exc)) from None
    try:
        outcome = await run_in_threadpool(_payments(request.app).apply, event)
    except RedisUnavailable:
        log.error("Stripe event %s not applied: Redis is unavailable", event["id"])
        raise HTTPException(503, "Redis is unavailable; Stripe will retry") from None
    except StripeUnavailable as exc:
        log.error("Stripe event %s not applied: %s", event["id"], exc)
        raise HTTPException(502, "Stripe's API did not answer; Stripe will retry") from None
    return outcome.to_json()
