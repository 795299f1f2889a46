"""Stripe events to credits: verify the signature, dispatch on the type, apply once.

    checkout.session.completed (payment_status paid)  grant `stripe:<session id>`
    checkout.session.async_payment_succeeded          the same grant (once in all)
    invoice.paid                                      grant `stripe:<invoice id>`
    charge.refunded                                   void the paid grant's refunded share
    anything else                                     ignored: logged and counted once

Every handler is idempotent by the Stripe object's id, so Stripe's redeliveries, concurrent
duplicates and `kong-credits stripe replay` change nothing twice. An event that cannot be
applied for good (no wallet, no credits metadata, another type) is `ignored`; a fault on our
side (Redis, Stripe's API) raises, and the webhook answers 5xx so that Stripe retries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import stripe

from .. import wallets
from ..errors import CreditsError, InvalidInput, RedisUnavailable
from ..keys import stripe_ignored_event
from ..money import MAX_PRIORITY, parse_amount, parse_cost
from ..names import parse_wallet
from .catalog import CREDITS_KEY, StripeCatalog, line_credits
from .metrics import STRIPE_METRICS, StripeMetrics
from .refunds import PaymentLink, apply_refunds, link, parse_stripe_id, remember_refund
from .settings import API_KEY_ENV

__all__ = ["BadSignature", "Outcome", "StripePayments", "WebhookNotConfigured",
           "parse_event", "verify_event"]

log = logging.getLogger(__name__)

WALLET_KEY = "credits_wallet"
EXPIRES_DAYS_KEY = "credits_expires_days"
PRIORITY_KEY = "credits_priority"
MAX_EXPIRES_DAYS = 36_500
IGNORED_MEMORY_S = 30 * 86_400
"""How long an ignored event id is remembered, so that redeliveries are not logged again."""


class BadSignature(CreditsError):
    """The Stripe-Signature header matches none of the secrets (or is missing or stale)."""


class WebhookNotConfigured(CreditsError):
    """No webhook secret is set: no event can be trusted."""


class _Ignored(Exception):
    """This event is not applied, for good: `reason` is a short label for the counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an event did. `action`: granted, duplicate (the grant existed), voided,
    refund_pending (remembered until its grant exists), ignored (see `reason`)."""

    event_id: str
    event_type: str
    action: str
    reason: str = ""
    wallet: str | None = None
    grant_id: str | None = None
    credits: int = 0
    balance: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def verify_event(payload: bytes, signature: str | None,
                 secrets: Iterable[str]) -> dict[str, Any]:
    """The event, once `stripe.Webhook.construct_event` accepts its signature with one of
    `secrets` (Stripe's default tolerance of 300 s); BadSignature otherwise."""
    secrets = list(secrets)
    if not secrets:
        raise WebhookNotConfigured("no Stripe webhook secret is set")
    for secret in secrets:
        try:
            stripe.Webhook.construct_event(payload, signature or "", secret)
        except stripe.SignatureVerificationError:
            continue
        except ValueError as exc:  # signed, but not JSON (or not UTF-8)
            raise BadSignature("the payload is not a JSON event") from exc
        return parse_event(json.loads(payload))
    raise BadSignature("the Stripe-Signature header matches no webhook secret")


def parse_event(event: object) -> dict[str, Any]:
    """Check the shape every handler relies on: id, type and data.object."""
    if not (isinstance(event, dict) and isinstance(event.get("id"), str)
            and isinstance(event.get("type"), str) and isinstance(event.get("data"), dict)
            and isinstance(event["data"].get("object"), dict)):
        raise InvalidInput("a Stripe event needs an id, a type and data.object")
    return event


class StripePayments:
    """Applies Stripe events to the wallets in `client` (see the module docstring)."""

    def __init__(self, client: redis.Redis, catalog: StripeCatalog, *,
                 metrics: StripeMetrics = STRIPE_METRICS) -> None:
        self.client = client
        self.catalog = catalog
        self.metrics = metrics
        self._handlers: dict[str, Callable[[dict[str, Any], dict[str, Any]], Outcome]] = {
            "checkout.session.completed": self._checkout_paid,
            "checkout.session.async_payment_succeeded": self._checkout_paid,
            "invoice.paid": self._invoice_paid,
            "charge.refunded": self._charge_refunded,
        }

    def apply(self, event: dict[str, Any]) -> Outcome:
        """Apply one (verified or replayed) event. Raises RedisUnavailable or
        StripeUnavailable when it could not be applied now: retrying it is safe."""
        event = parse_event(event)
        handler = self._handlers.get(event["type"])
        try:
            if handler is None:
                raise _Ignored("unhandled_type", "kong-credits does not use this type")
            outcome = handler(event, event["data"]["object"])
        except _Ignored as ignored:
            outcome = Outcome(event["id"], event["type"], "ignored", reason=ignored.reason)
            self._note_ignored(event, ignored)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailable(str(exc)) from exc
        kind = event["type"] if handler else "other"
        self.metrics.events.labels(kind, outcome.action).inc()
        return outcome

    def _note_ignored(self, event: dict[str, Any], ignored: _Ignored) -> None:
        """Log and count an ignored event the first time it arrives (Stripe redelivers)."""
        try:
            first = self.client.set(stripe_ignored_event(event["id"]), ignored.reason,
                                    nx=True, ex=IGNORED_MEMORY_S)
        except redis.RedisError:
            first = True  # better logged twice than not at all
        if first:
            log.warning("Stripe event %s (%s) ignored: %s: %s", event["id"], event["type"],
                        ignored.reason, ignored)
            self.metrics.ignored.labels(ignored.reason).inc()

    # --- the handlers -------------------------------------------------------------------

    def _checkout_paid(self, event: dict[str, Any], session: dict[str, Any]) -> Outcome:
        if session.get("mode") == "subscription":
            raise _Ignored("subscription_checkout",
                           "a subscription's credits come with each invoice.paid")
        if session.get("payment_status") != "paid":
            raise _Ignored("not_paid", f"payment_status is {session.get('payment_status')!r}")
        metadata = _metadata(session)
        wallet = _wallet(session.get("client_reference_id") or metadata.get(WALLET_KEY))
        session_id = _object_id(session, "checkout session")
        credits = _metadata_credits(metadata)
        if credits is None:
            credits = _credits_of_lines(
                self.catalog, lambda: self.catalog.session_line_items(session_id))
        payment_intents = [session["payment_intent"]] if session.get("payment_intent") else []
        return self._grant(event, wallet, f"stripe:{session_id}", credits, metadata,
                           payment_intents)

    def _invoice_paid(self, event: dict[str, Any], invoice: dict[str, Any]) -> Outcome:
        invoice_id = _object_id(invoice, "invoice")
        if invoice.get("amount_paid") == 0:
            raise _Ignored("nothing_paid", "a $0 invoice (a trial, a 100% coupon) buys no "
                           "credits")
        subscription, metadata = _subscription_of(invoice)
        if subscription and metadata is None:
            metadata = self.catalog.subscription_metadata(subscription)
        metadata = {**_metadata(invoice), **(metadata or {})}
        wallet_name = metadata.get(WALLET_KEY)
        if wallet_name is None and subscription:
            wallet_name = self.catalog.checkout_reference(subscription)
        wallet = _wallet(wallet_name)
        credits = _metadata_credits(metadata)
        if credits is None:
            credits = _credits_of_lines(
                self.catalog, lambda: self.catalog.invoice_line_items(invoice))
        return self._grant(event, wallet, f"stripe:{invoice_id}", credits, metadata,
                           _invoice_payment_intents(invoice))

    def _charge_refunded(self, event: dict[str, Any], charge: dict[str, Any]) -> Outcome:
        charge_id = _object_id(charge, "charge")
        if not charge.get("payment_intent"):
            raise _Ignored("no_payment_intent", "the charge names no payment intent")
        try:
            payment_intent = parse_stripe_id(charge["payment_intent"], "payment_intent")
        except InvalidInput as exc:
            raise _Ignored("invalid_object", str(exc)) from None
        amount, refunded = charge.get("amount"), charge.get("amount_refunded")
        if not (_whole(amount) and _whole(refunded) and amount > 0 and 0 < refunded <= amount):
            raise _Ignored("invalid_object", f"amount {amount!r}, amount_refunded {refunded!r}")
        remember_refund(self.client, payment_intent, charge_id, refunded, amount)
        void = apply_refunds(self.client, payment_intent)
        if void is None:
            return Outcome(event["id"], event["type"], "refund_pending")
        return Outcome(event["id"], event["type"], "voided", wallet=void.wallet,
                       grant_id=void.grant_id, credits=void.voided, balance=void.balance)

    def _grant(self, event: dict[str, Any], wallet: str, grant_id: str, credits: int,
               metadata: dict[str, Any], payment_intents: list[Any]) -> Outcome:
        """Grant once by id; remember each payment intent's grant first, and void right
        away what was refunded before the grant existed."""
        expires_at, priority = _grant_terms(metadata)
        try:
            intents = [parse_stripe_id(pi, "payment_intent") for pi in payment_intents]
        except InvalidInput as exc:
            raise _Ignored("invalid_object", str(exc)) from None
        paid_for = PaymentLink(wallet, grant_id, credits)
        for payment_intent in intents:
            link(self.client, payment_intent, paid_for)
        try:
            created, _, balance = wallets.grant(self.client, wallet, credits,
                                                grant_id=grant_id, priority=priority,
                                                expires_at=expires_at)
        except InvalidInput as exc:  # e.g. the balance would exceed its largest
            raise _Ignored("grant_refused", str(exc)) from None
        for payment_intent in intents:
            void = apply_refunds(self.client, payment_intent, paid_for)
            if void is not None:
                balance = void.balance
        return Outcome(event["id"], event["type"], "granted" if created else "duplicate",
                       wallet=wallet, grant_id=grant_id, credits=credits, balance=balance)


# --- reading Stripe objects -----------------------------------------------------------------


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _object_id(obj: dict[str, Any], what: str) -> str:
    try:
        return parse_stripe_id(obj.get("id"), f"the {what}'s id")
    except InvalidInput as exc:
        raise _Ignored("invalid_object", str(exc)) from None


def _wallet(name: object) -> str:
    if name is None or name == "":
        raise _Ignored("no_wallet", f"neither client_reference_id nor metadata {WALLET_KEY}")
    try:
        return parse_wallet(name)  # type: ignore[arg-type]
    except InvalidInput as exc:
        raise _Ignored("invalid_wallet", str(exc)) from None


def _metadata_credits(metadata: dict[str, Any]) -> int | None:
    if metadata.get(CREDITS_KEY) is None:
        return None
    try:
        return parse_amount(metadata[CREDITS_KEY], f"metadata {CREDITS_KEY}")
    except InvalidInput as exc:
        raise _Ignored("invalid_credits", str(exc)) from None


def _credits_of_lines(catalog: StripeCatalog, line_items: Callable[[], Any]) -> int:
    if not catalog.configured:
        raise _Ignored("no_credits", f"no metadata {CREDITS_KEY} on the purchase, and no "
                       f"{API_KEY_ENV} to read its prices")
    try:
        credits = line_credits(line_items())
    except InvalidInput as exc:
        raise _Ignored("invalid_credits", str(exc)) from None
    if credits == 0:
        raise _Ignored("no_credits", f"no metadata {CREDITS_KEY} on the purchase, its "
                       "prices or their products")
    return credits


def _grant_terms(metadata: dict[str, Any]) -> tuple[datetime | None, int]:
    """Expiry (`credits_expires_days` from now) and priority (`credits_priority`)."""
    expires_at = None
    try:
        if metadata.get(EXPIRES_DAYS_KEY) is not None:
            days = parse_amount(metadata[EXPIRES_DAYS_KEY], f"metadata {EXPIRES_DAYS_KEY}")
            if days > MAX_EXPIRES_DAYS:
                raise InvalidInput(f"metadata {EXPIRES_DAYS_KEY} must be at most "
                                   f"{MAX_EXPIRES_DAYS}, not {days}")
            expires_at = datetime.now(UTC) + timedelta(days=days)
        priority = wallets.DEFAULT_PRIORITY
        if metadata.get(PRIORITY_KEY) is not None:
            priority = parse_cost(metadata[PRIORITY_KEY], f"metadata {PRIORITY_KEY}")
            if priority > MAX_PRIORITY:
                raise InvalidInput(f"metadata {PRIORITY_KEY} must be at most {MAX_PRIORITY}")
    except InvalidInput as exc:
        raise _Ignored("invalid_metadata", str(exc)) from None
    return expires_at, priority


def _subscription_of(invoice: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """The invoice's subscription id and the metadata snapshot Stripe put in the event:
    `parent.subscription_details` (API 2025-03-31 and later), else `subscription_details`
    and `subscription` (earlier versions). None for metadata that the event lacks."""
    details = (invoice.get("parent") or {}).get("subscription_details") \
        or invoice.get("subscription_details") or {}
    subscription = details.get("subscription") or invoice.get("subscription")
    if isinstance(subscription, dict):
        subscription = subscription.get("id")
    metadata = details.get("metadata")
    return (subscription if isinstance(subscription, str) else None,
            metadata if isinstance(metadata, dict) else None)


def _invoice_payment_intents(invoice: dict[str, Any]) -> list[Any]:
    """`payments.data[].payment.payment_intent` (API 2025-03-31 and later), else
    `payment_intent`."""
    intents = [(p.get("payment") or {}).get("payment_intent")
               for p in (invoice.get("payments") or {}).get("data") or []]
    intents.append(invoice.get("payment_intent"))
    return [pi for pi in intents if pi]
