"""Stripe as the tests see it: events shaped as Stripe sends them, signed with the scheme
`stripe.Webhook` verifies, and a loopback HTTP server answering like Stripe's API.

The objects follow the `stripe` package's models (checkout.Session, Invoice with `parent`,
`lines` and `payments`, Charge) at its pinned API version.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import stripe

API_KEY = "sk_test_kongcredits"
_serial = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_{int(time.time() * 1000):x}{next(_serial):06d}Tst"


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header: t=<unix time>,v1=<HMAC-SHA256 of "<t>.<payload>">."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(kind: str, obj: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or new_id("evt"), "object": "event", "api_version": stripe.api_version,
        "created": int(time.time()), "data": {"object": obj}, "livemode": False,
        "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None}, "type": kind,
    }


def checkout_session(*, wallet: str | None = None, metadata: dict[str, str] | None = None,
                     payment_status: str = "paid", amount_total: int = 1500,
                     payment_intent: str | None = None, session_id: str | None = None,
                     mode: str = "payment") -> dict[str, Any]:
    now = int(time.time())
    return {
        "id": session_id or new_id("cs_test"), "object": "checkout.session",
        "after_expiration": None, "allow_promotion_codes": None,
        "amount_subtotal": amount_total, "amount_total": amount_total,
        "automatic_tax": {"enabled": False, "liability": None, "status": None},
        "billing_address_collection": None, "cancel_url": "https://example.com/cancel",
        "client_reference_id": wallet, "created": now - 60, "currency": "usd",
        "customer": "cus_Test", "customer_creation": "if_required",
        "customer_details": {"email": "buyer@example.com", "name": "Buyer", "address": None,
                             "phone": None, "tax_exempt": "none", "tax_ids": []},
        "customer_email": None, "expires_at": now + 86_400, "invoice": None,
        "livemode": False, "locale": None, "metadata": metadata or {}, "mode": mode,
        "payment_intent": (payment_intent or new_id("pi")) if mode == "payment" else None,
        "payment_method_types": ["card"], "payment_status": payment_status,
        "status": "complete", "submit_type": None,
        "subscription": new_id("sub") if mode == "subscription" else None,
        "success_url": "https://example.com/success", "total_details": {
            "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted", "url": None,
    }


def invoice_line(price: str, product: str, quantity: int = 1) -> dict[str, Any]:
    return {
        "id": new_id("il"), "object": "line_item", "amount": 1500 * quantity,
        "currency": "usd", "description": f"{quantity} x plan", "discountable": True,
        "invoice": None, "livemode": False, "metadata": {},
        "parent": {"type": "subscription_item_details", "invoice_item_details": None,
                   "subscription_item_details": {"subscription": None, "proration": False,
                                                 "subscription_item": new_id("si")}},
        "period": {"end": int(time.time()) + 2_592_000, "start": int(time.time())},
        "pricing": {"type": "price_details", "unit_amount_decimal": "1500",
                    "price_details": {"price": price, "product": product}},
        "quantity": quantity,
    }


def subscription_invoice(*, subscription_metadata: dict[str, str] | None = None,
                         lines: list[dict[str, Any]] | None = None, amount_paid: int = 1500,
                         payment_intent: str | None = None,
                         subscription: str | None = None) -> dict[str, Any]:
    invoice_id = new_id("in")
    subscription = subscription or new_id("sub")
    for line in lines or []:
        line["invoice"] = invoice_id
        line["parent"]["subscription_item_details"]["subscription"] = subscription
    return {
        "id": invoice_id, "object": "invoice", "account_country": "US",
        "amount_due": amount_paid, "amount_paid": amount_paid, "amount_remaining": 0,
        "attempt_count": 1, "attempted": True, "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically", "created": int(time.time()),
        "currency": "usd", "customer": "cus_Test", "livemode": False, "metadata": {},
        "lines": {"object": "list", "data": lines or [], "has_more": False,
                  "total_count": len(lines or []), "url": f"/v1/invoices/{invoice_id}/lines"},
        "parent": {"type": "subscription_details", "quote_details": None,
                   "subscription_details": {"metadata": subscription_metadata or {},
                                            "subscription": subscription}},
        "payments": {"object": "list", "has_more": False, "url": "/v1/invoice_payments",
                     "data": [{"id": new_id("inpay"), "object": "invoice_payment",
                               "amount_paid": amount_paid, "currency": "usd",
                               "invoice": invoice_id, "is_default": True, "livemode": False,
                               "payment": {"type": "payment_intent",
                                           "payment_intent": payment_intent or new_id("pi")},
                               "status": "paid"}]},
        "status": "paid", "total": amount_paid, "subtotal": amount_paid,
    }


def charge(*, payment_intent: str, amount: int, amount_refunded: int,
           charge_id: str | None = None) -> dict[str, Any]:
    return {
        "id": charge_id or new_id("ch"), "object": "charge", "amount": amount,
        "amount_captured": amount, "amount_refunded": amount_refunded, "captured": True,
        "created": int(time.time()), "currency": "usd", "customer": "cus_Test",
        "livemode": False, "metadata": {}, "paid": True, "payment_intent": payment_intent,
        "payment_method": "pm_card_visa", "refunded": amount_refunded == amount,
        "status": "succeeded",
    }


class FakeStripeApi:
    """Stripe's API on loopback, for what kong-credits reads: Checkout line items, invoice
    lines, prices (product expandable), subscriptions, sessions by subscription. Records
    every request; answers 401 to any other key and 500 while `failing`."""

    def __init__(self) -> None:
        self.products: dict[str, dict[str, Any]] = {}
        self.prices: dict[str, dict[str, Any]] = {}
        self.session_items: dict[str, list[tuple[str, int]]] = {}
        self.invoice_lines: dict[str, list[dict[str, Any]]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.sessions: list[dict[str, Any]] = []
        self.requests: list[str] = []
        self.failing = False
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                api.requests.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {API_KEY}":
                    return self._send(401, {"error": {"type": "invalid_request_error",
                                                      "message": "Invalid API Key"}})
                if api.failing:
                    return self._send(500, {"error": {"type": "api_error",
                                                      "message": "try again"}})
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                expand = {v for k, vs in query.items() if k.startswith("expand") for v in vs}
                status, body = api.answer(url.path.split("/")[2:], query, expand)
                self._send(status, body)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeStripeApi:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- the catalog ---------------------------------------------------------------------

    def add_price(self, *, price_credits: str | None = None,
                  product_credits: str | None = None, unit_amount: int = 1500) -> str:
        product = new_id("prod")
        self.products[product] = {
            "id": product, "object": "product", "active": True, "name": "Credits",
            "livemode": False, "metadata": {} if product_credits is None
            else {"credits": product_credits}}
        price = new_id("price")
        self.prices[price] = {
            "id": price, "object": "price", "active": True, "currency": "usd",
            "livemode": False, "metadata": {} if price_credits is None
            else {"credits": price_credits}, "product": product, "type": "one_time",
            "unit_amount": unit_amount, "unit_amount_decimal": str(unit_amount)}
        return price

    def price(self, price_id: str, expand_product: bool) -> dict[str, Any]:
        price = dict(self.prices[price_id])
        if expand_product:
            price["product"] = self.products[price["product"]]
        return price

    def answer(self, parts: list[str], query: dict[str, list[str]],
               expand: set[str]) -> tuple[int, dict[str, Any]]:
        missing = (404, {"error": {"type": "invalid_request_error",
                                   "message": "No such object"}})
        match parts:
            case ["checkout", "sessions", session, "line_items"]:
                if session not in self.session_items:
                    return missing
                data = [{"id": new_id("li"), "object": "item", "amount_total": 1500 * q,
                         "currency": "usd", "description": "Credits", "quantity": q,
                         "price": self.price(p, "data.price.product" in expand)}
                        for p, q in self.session_items[session]]
                return 200, self._list(data, f"/v1/checkout/sessions/{session}/line_items")
            case ["invoices", invoice, "lines"] if invoice in self.invoice_lines:
                lines = self.invoice_lines[invoice]
                return 200, self._list(lines, f"/v1/invoices/{invoice}/lines")
            case ["checkout", "sessions"]:
                subscription = query.get("subscription", [""])[0]
                data = [s for s in self.sessions if s["subscription"] == subscription]
                return 200, self._list(data, "/v1/checkout/sessions")
            case ["prices", price] if price in self.prices:
                return 200, self.price(price, "product" in expand)
            case ["subscriptions", subscription] if subscription in self.subscriptions:
                return 200, self.subscriptions[subscription]
        return missing

    @staticmethod
    def _list(data: list[dict[str, Any]], url: str) -> dict[str, Any]:
        return {"object": "list", "data": data, "has_more": False, "url": url}

