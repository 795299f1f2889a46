"""Refunds: which grant a Stripe payment bought, and voiding it in proportion to refunds.

A grant remembers its payment intents (`link`); every refund Stripe reports is remembered
too (`remember_refund`), whether or not the grant exists yet. `apply_refunds` voids the
grant up to the refunded share, through `void_grant`'s cumulative `total`, so it can run any
number of times, from the refund's event or from the grant's, in any order: the grant ends
voided by its refunded share exactly once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import redis

from ..errors import GrantNotFound, InvalidInput
from ..keys import stripe_payment, stripe_refunds
from ..names import parse_wallet
from ..voids import Void, void_grant

__all__ = ["PaymentLink", "apply_refunds", "link", "parse_stripe_id", "refunded_credits",
           "remember_refund"]

REFUNDS_TTL_S = 400 * 86_400
"""Refunds waiting for their grant are kept a little longer than Stripe retries events or
accepts refunds."""
_STRIPE_ID = re.compile(r"[A-Za-z]{1,10}_[A-Za-z0-9_]{1,190}")


def parse_stripe_id(value: object, what: str) -> str:
    """A Stripe object id (`pi_...`, `ch_...`, `cs_test_...`), safe in keys and grant ids."""
    if isinstance(value, dict):
        value = value.get("id")
    if not isinstance(value, str) or not _STRIPE_ID.fullmatch(value):
        raise InvalidInput(f"{what} must be a Stripe id, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class PaymentLink:
    """The grant a payment intent paid for, and its credits (the base of refunds)."""

    wallet: str
    grant_id: str
    credits: int


def link(client: redis.Redis, payment_intent: str, paid_for: PaymentLink) -> None:
    """Remember the grant of a payment intent, before granting (see `apply_refunds`)."""
    client.set(stripe_payment(payment_intent), json.dumps(
        {"wallet": paid_for.wallet, "grant_id": paid_for.grant_id,
         "credits": paid_for.credits}, separators=(",", ":")))


def linked(client: redis.Redis, payment_intent: str) -> PaymentLink | None:
    raw = client.get(stripe_payment(payment_intent))
    if raw is None:
        return None
    record = json.loads(raw)
    return PaymentLink(parse_wallet(record["wallet"]), record["grant_id"],
                       int(record["credits"]))


def remember_refund(client: redis.Redis, payment_intent: str, charge: str,
                    amount_refunded: int, amount: int) -> None:
    """Keep one refund level of a charge (Stripe reports the total refunded so far)."""
    key = stripe_refunds(payment_intent)
    pipe = client.pipeline(transaction=True)
    pipe.hset(key, f"{charge}:{amount_refunded}", str(amount))
    pipe.expire(key, REFUNDS_TTL_S)
    pipe.execute()


def refunded_credits(credits: int, refunds: dict[str, str]) -> int:
    """Credits to void for `refunds` ("<charge>:<refunded>" -> charge amount): per charge,
    its highest refunded level; credits x refunded // amount, rounded down (the customer
    keeps a fraction of a credit), summed over charges and capped at `credits`."""
    highest: dict[str, tuple[int, int]] = {}
    for field, amount in refunds.items():
        charge, _, refunded = field.rpartition(":")
        level = (int(refunded), int(amount))
        if charge not in highest or level[0] > highest[charge][0]:
            highest[charge] = level
    total = sum(credits * refunded // amount for refunded, amount in highest.values()
                if amount > 0)
    return min(total, credits)


def apply_refunds(client: redis.Redis, payment_intent: str,
                  paid_for: PaymentLink | None = None) -> Void | None:
    """Void the grant of `payment_intent` by its refunded share, if it has a grant and
    refunds; None when there is nothing (yet) to void.

    The link is written before the grant and refunds before their look-up, so of a grant
    and a refund running at once, at least one sees the other.
    """
    paid_for = paid_for or linked(client, payment_intent)
    if paid_for is None:
        return None
    refunds = {_text(k): _text(v) for k, v in
               client.hgetall(stripe_refunds(payment_intent)).items()}
    target = refunded_credits(paid_for.credits, refunds)
    if target <= 0:
        return None
    try:
        return void_grant(client, paid_for.wallet, paid_for.grant_id, total=target,
                          void_key=f"stripe-refund-{target}",
                          reason=f"Stripe refund of {payment_intent}")
    except GrantNotFound:  # not granted yet: the grant applies the refund when it comes
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
