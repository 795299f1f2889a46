"""What a purchase is worth in credits, read from Stripe's API with the `stripe` package."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import stripe

from ..errors import CreditsError, InvalidInput
from ..money import MAX_AMOUNT, parse_amount
from .settings import API_KEY_ENV, StripeSettings

__all__ = ["CREDITS_KEY", "LineItem", "StripeCatalog", "StripeUnavailable", "line_credits"]

CREDITS_KEY = "credits"
"""The metadata key, on a price or its product, of the credits one unit buys."""


class StripeUnavailable(CreditsError):
    """Stripe's API could not answer (down, key refused or not configured): the event must
    be retried later, so the webhook answers 5xx."""


@dataclass(frozen=True, slots=True)
class LineItem:
    """One line of a purchase: how many units of which price (a dict, product expanded)."""

    quantity: int
    price: dict[str, Any]


def _metadata(obj: object) -> dict[str, Any]:
    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
        return obj["metadata"]
    return {}


def line_credits(items: list[LineItem]) -> int:
    """Sum of quantity x the `credits` metadata of each line's price, else of its product.

    Lines without such metadata (a T-shirt sold with the credits) count 0. Metadata that is
    not a whole number 1..10^15 is refused (InvalidInput), never read as something else.
    """
    total = 0
    for item in items:
        per_unit = _metadata(item.price).get(CREDITS_KEY)
        if per_unit is None:
            per_unit = _metadata(item.price.get("product")).get(CREDITS_KEY)
        if per_unit is None:
            continue
        credits = parse_amount(per_unit, f"credits metadata of price {item.price.get('id')}")
        if isinstance(item.quantity, bool) or not isinstance(item.quantity, int) or (
            item.quantity < 0
        ):
            raise InvalidInput(f"line quantity must be a whole number, not {item.quantity!r}")
        total += credits * item.quantity
        if total > MAX_AMOUNT:
            raise InvalidInput(f"a purchase of more than {MAX_AMOUNT} credits")
    return total


class StripeCatalog:
    """Line items, prices and subscriptions, asked of Stripe's API (or a local server shaped
    like it: `StripeSettings.api_base`). Every Stripe error becomes StripeUnavailable."""

    def __init__(self, settings: StripeSettings, *, timeout_s: float = 10.0) -> None:
        self._client = None
        if settings.api_key:
            self._client = stripe.StripeClient(
                settings.api_key, base_addresses={"api": settings.api_base},
                max_network_retries=1,
                http_client=stripe.HTTPXClient(timeout=timeout_s, allow_sync_methods=True),
            )

    @property
    def configured(self) -> bool:
        """Whether an API key was given: without one, only metadata counts."""
        return self._client is not None

    @property
    def _api(self) -> stripe.StripeClient:
        if self._client is None:
            raise StripeUnavailable(f"{API_KEY_ENV} is not set: the credits of this purchase "
                                    "are in its line items, which only Stripe's API lists")
        return self._client

    def session_line_items(self, session_id: str) -> list[LineItem]:
        """The line items of a Checkout Session, prices and products expanded."""
        def ask() -> list[LineItem]:
            page = self._api.v1.checkout.sessions.line_items.list(
                session_id, {"expand": ["data.price.product"], "limit": 100})
            items = [item.to_dict() for item in page.auto_paging_iter()]
            return [LineItem(item.get("quantity") or 0, item.get("price") or {})
                    for item in items]
        return _asking_stripe(ask)

    def invoice_line_items(self, invoice: dict[str, Any]) -> list[LineItem]:
        """The lines of an invoice (from the event, or listed when it holds only the first
        page), each with its price retrieved, product expanded."""
        def ask() -> list[LineItem]:
            lines = invoice.get("lines") or {}
            data = lines.get("data") or []
            if lines.get("has_more"):
                page = self._api.v1.invoices.line_items.list(invoice["id"], {"limit": 100})
                data = [line.to_dict() for line in page.auto_paging_iter()]
            prices: dict[str, dict[str, Any]] = {}
            items = []
            for line in data:
                price_id = _line_price_id(line)
                if price_id is None:
                    continue
                if price_id not in prices:
                    prices[price_id] = self._api.v1.prices.retrieve(
                        price_id, {"expand": ["product"]}).to_dict()
                items.append(LineItem(line.get("quantity") or 0, prices[price_id]))
            return items
        return _asking_stripe(ask)

    def subscription_metadata(self, subscription_id: str) -> dict[str, Any]:
        return _asking_stripe(lambda: _metadata(
            self._api.v1.subscriptions.retrieve(subscription_id).to_dict()))

    def checkout_reference(self, subscription_id: str) -> str | None:
        """The `client_reference_id` of the Checkout Session that created a subscription."""
        def ask() -> str | None:
            page = self._api.v1.checkout.sessions.list(
                {"subscription": subscription_id, "limit": 1})
            references = [s.to_dict().get("client_reference_id") for s in page.data]
            return next((ref for ref in references if ref), None)
        return _asking_stripe(ask)


def _line_price_id(line: dict[str, Any]) -> str | None:
    """The price of an invoice line: `pricing.price_details.price` (API 2025-03-31 and
    later) or `price` (earlier versions), an id or an expanded object."""
    details = (line.get("pricing") or {}).get("price_details") or {}
    price = details.get("price") or line.get("price")
    if isinstance(price, dict):
        price = price.get("id")
    return price if isinstance(price, str) else None


def _asking_stripe(ask: Any) -> Any:
    try:
        return ask()
    except stripe.StripeError as exc:
        raise StripeUnavailable(f"Stripe's API: {type(exc).__name__}: "
                                f"{exc.user_message or 'no answer'}") from exc
