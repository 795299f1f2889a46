"""POST /v1/webhooks/stripe on a FastAPI app served by uvicorn on loopback, against real Redis
and a loopback server shaped like Stripe's API; events signed as Stripe signs them."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from fastapi import FastAPI
from prometheus_client import REGISTRY

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "payments"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from redis_proxy import RedisProxy
from stripe_fake import (
    API_KEY,
    FakeStripeApi,
    charge,
    checkout_session,
    event,
    invoice_line,
    new_id,
    sign,
    subscription_invoice,
)
from waits import wait_until

from kong_credits import wallets
from kong_credits.admin.stripe_webhook import router
from kong_credits.keys import stripe_payment
from kong_credits.payments.settings import StripeSettings

SECRET = "whsec_test_current"
PREVIOUS_SECRET = "whsec_test_previous"


@dataclass
class Webhook:
    url: str
    app: FastAPI
    proxy: RedisProxy

    def post(self, body: dict[str, Any] | bytes, *, secret: str = SECRET,
             timestamp: int | None = None, signature: str | None = None) -> httpx.Response:
        payload = body if isinstance(body, bytes) else json.dumps(body, indent=2).encode()
        headers = {"Content-Type": "application/json; charset=utf-8"}
        signature = sign(payload, secret, timestamp) if signature is None else signature
        if signature:
            headers["Stripe-Signature"] = signature
        return httpx.post(self.url, content=payload, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def stripe_api() -> Iterator[FakeStripeApi]:
    with FakeStripeApi() as api:
        yield api


@pytest.fixture(scope="module")
def webhook(redis_server, stripe_api) -> Iterator[Webhook]:
    proxy = RedisProxy(redis_server.port).up()
    app = FastAPI()
    app.include_router(router)
    app.state.redis = redis.Redis(port=proxy.port, socket_timeout=2, socket_connect_timeout=2)
    app.state.stripe_settings = StripeSettings(
        webhook_secrets=(SECRET, PREVIOUS_SECRET), api_key=API_KEY, api_base=stripe_api.url)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started)
    yield Webhook(f"http://127.0.0.1:{sock.getsockname()[1]}/v1/webhooks/stripe", app, proxy)
    server.should_exit = True
    thread.join(10)
    proxy.down()


@pytest.fixture(autouse=True)
def redis_up(webhook: Webhook, r: redis.Redis) -> None:
    if not webhook.proxy.is_up:  # a test that took Redis down failed before it came back
        webhook.proxy.up()


def paid_checkout(wallet: str = "acme", credits: str | None = "1000", **kw: Any
                  ) -> dict[str, Any]:
    metadata = kw.pop("metadata", {} if credits is None else {"credits": credits})
    return event("checkout.session.completed",
                 checkout_session(wallet=wallet, metadata=metadata, **kw))


def balance(r: redis.Redis, wallet: str = "acme") -> int:
    return wallets.balance(r, wallet).balance


def granted_ids(r: redis.Redis, wallet: str = "acme") -> list[str]:
    return [g.id for g in wallets.balance(r, wallet).grants]


def ignored_count(reason: str) -> float:
    return REGISTRY.get_sample_value("kong_credits_stripe_events_ignored_total",
                                     {"reason": reason}) or 0.0


# --- grants ---------------------------------------------------------------------------------


def test_paid_checkout_grants_its_metadata_credits(webhook, r):
    sent = paid_checkout(metadata={"credits": "1000", "credits_priority": "5",
                                   "credits_expires_days": "30"})
    answer = webhook.post(sent)
    session = sent["data"]["object"]
    assert answer.status_code == 200, answer.text
    assert answer.json() | {"balance": None} == {
        "event_id": sent["id"], "event_type": "checkout.session.completed",
        "action": "granted", "reason": "", "wallet": "acme",
        "grant_id": f"stripe:{session['id']}", "credits": 1000, "balance": None}
    [grant] = wallets.balance(r, "acme").grants
    assert (grant.id, grant.amount, grant.priority) == (f"stripe:{session['id']}", 1000, 5)
    expires = time.time() + 30 * 86_400
    assert abs(wallets.parse_expiry(grant.expires_at) / 1000 - expires) < 60
    assert json.loads(r.get(stripe_payment(session["payment_intent"]))) == {
        "wallet": "acme", "grant_id": grant.id, "credits": 1000}


def test_wallet_may_come_from_metadata_and_a_new_wallet_is_funded(webhook, r):
    sent = paid_checkout(wallet=None, metadata={"credits": "7", "credits_wallet": "team/bob"})
    assert webhook.post(sent).json()["action"] == "granted"
    assert balance(r, "team/bob") == 7


def test_credits_from_line_items_price_then_product_metadata(webhook, stripe_api, r):
    on_price = stripe_api.add_price(price_credits="1000", product_credits="1")
    on_product = stripe_api.add_price(product_credits="250")
    t_shirt = stripe_api.add_price()
    sent = paid_checkout(credits=None)
    stripe_api.session_items[sent["data"]["object"]["id"]] = [
        (on_price, 2), (on_product, 3), (t_shirt, 1)]
    answer = webhook.post(sent)
    assert answer.json()["credits"] == 2 * 1000 + 3 * 250
    assert balance(r) == 2750
    assert any("/line_items?" in path and "data.price.product" in path
               for path in stripe_api.requests)


def test_async_payment_grants_once_when_it_succeeds(webhook, r):
    session = checkout_session(wallet="acme", metadata={"credits": "40"},
                               payment_status="unpaid")
    pending = webhook.post(event("checkout.session.completed", session))
    assert pending.json() | {"event_id": ""} == {
        "event_id": "", "event_type": "checkout.session.completed", "action": "ignored",
        "reason": "not_paid", "wallet": None, "grant_id": None, "credits": 0,
        "balance": None}
    assert balance(r) == 0
    paid = dict(session, payment_status="paid")
    succeeded = webhook.post(event("checkout.session.async_payment_succeeded", paid))
    assert succeeded.json()["action"] == "granted" and balance(r) == 40
    again = webhook.post(event("checkout.session.async_payment_succeeded", paid))
    assert again.json()["action"] == "duplicate" and balance(r) == 40


def test_subscription_invoice_grants_every_period(webhook, stripe_api, r):
    monthly = stripe_api.add_price(price_credits="5000")
    product = stripe_api.prices[monthly]["product"]
    subscription = new_id("sub")
    for period in range(2):
        invoice = subscription_invoice(
            subscription=subscription, subscription_metadata={"credits_wallet": "acme"},
            lines=[invoice_line(monthly, product, quantity=2)])
        answer = webhook.post(event("invoice.paid", invoice))
        assert answer.json()["action"] == "granted", answer.text
        assert answer.json()["grant_id"] == f"stripe:{invoice['id']}"
        assert balance(r) == (period + 1) * 10_000
    checkout = checkout_session(wallet="acme", mode="subscription",
                                metadata={"credits": "10000"})
    answer = webhook.post(event("checkout.session.completed", checkout))
    assert answer.json()["reason"] == "subscription_checkout"  # its invoice.paid grants
    assert balance(r) == 20_000


def test_subscription_wallet_from_its_checkout_session(webhook, stripe_api, r):
    subscription = new_id("sub")
    stripe_api.sessions.append(checkout_session(wallet="carol", mode="subscription")
                               | {"subscription": subscription})
    invoice = subscription_invoice(subscription=subscription,
                                   subscription_metadata={"credits": "300"})
    assert webhook.post(event("invoice.paid", invoice)).json()["action"] == "granted"
    assert balance(r, "carol") == 300


# --- what is ignored ------------------------------------------------------------------------


@pytest.mark.parametrize(("wallet", "metadata", "reason"), [
    ("acme", {}, "no_credits"),
    (None, {"credits": "10"}, "no_wallet"),
    (" acme", {"credits": "10"}, "invalid_wallet"),
    ("a//b", {"credits": "10"}, "invalid_wallet"),
    ("x" * 201, {"credits": "10"}, "invalid_wallet"),
    ("bell\x07", {"credits": "10"}, "invalid_wallet"),
    ("acme", {"credits": "1.5"}, "invalid_credits"),
    ("acme", {"credits": "-10"}, "invalid_credits"),
    ("acme", {"credits": "1e3"}, "invalid_credits"),
    ("acme", {"credits": "\u0661\u0662"}, "invalid_credits"),
    ("acme", {"credits": str(10**15 + 1)}, "invalid_credits"),
    ("acme", {"credits": "10", "credits_priority": "-1"}, "invalid_metadata"),
    ("acme", {"credits": "10", "credits_expires_days": "0"}, "invalid_metadata"),
])
def test_unusable_purchase_is_200_ignored_logged_and_counted_once(
        webhook, stripe_api, r, caplog, wallet, metadata, reason):
    sent = paid_checkout(wallet=wallet, metadata=metadata)
    stripe_api.session_items[sent["data"]["object"]["id"]] = [(stripe_api.add_price(), 1)]
    before = ignored_count(reason)
    with caplog.at_level(logging.WARNING, logger="kong_credits.payments"):
        answers = [webhook.post(sent) for _ in range(3)]
    assert [(a.status_code, a.json()["action"], a.json()["reason"]) for a in answers] == [
        (200, "ignored", reason)] * 3
    assert [m for m in caplog.messages if sent["id"] in m] != []
    assert len([m for m in caplog.messages if sent["id"] in m]) == 1
    assert ignored_count(reason) == before + 1
    assert r.keys("*:w:*") == []


def test_other_event_types_are_ignored(webhook, r):
    answer = webhook.post(event("customer.created", {"id": "cus_Test", "object": "customer"}))
    assert (answer.status_code, answer.json()["reason"]) == (200, "unhandled_type")


# --- authentication -------------------------------------------------------------------------


def test_previous_secret_still_verifies_during_rotation(webhook, r):
    assert webhook.post(paid_checkout(), secret=PREVIOUS_SECRET).status_code == 200
    assert balance(r) == 1000


@pytest.mark.parametrize("case", ["wrong secret", "no header", "empty header", "tampered",
                                  "v0 only", "too old", "not json"])
def test_bad_signature_is_400_and_nothing_happens(webhook, r, case):
    sent = paid_checkout()
    payload = json.dumps(sent).encode()
    if case == "wrong secret":
        answer = webhook.post(payload, secret="whsec_attacker")
    elif case == "no header":
        answer = webhook.post(payload, signature="")
    elif case == "empty header":
        answer = webhook.post(payload, signature="t=,v1=")
    elif case == "tampered":
        signature = sign(payload, SECRET)
        answer = webhook.post(payload.replace(b'"1000"', b'"9999"'), signature=signature)
    elif case == "v0 only":
        answer = webhook.post(payload, signature=sign(payload, SECRET).replace("v1=", "v0="))
    elif case == "too old":  # Stripe's default tolerance is 300 s
        answer = webhook.post(payload, timestamp=int(time.time()) - 301)
    else:
        answer = webhook.post(b"{not json", secret=SECRET)
    assert answer.status_code == 400, answer.text
    assert granted_ids(r) == [] and r.keys("kc:stripe:*") == []


def test_a_header_with_several_v1_signatures_needs_one_that_matches(webhook, r):
    """While Stripe rolls a secret it signs with both: t=...,v1=<new>,v1=<old>."""
    payload = json.dumps(paid_checkout()).encode()
    ours = sign(payload, PREVIOUS_SECRET)
    theirs = sign(payload, "whsec_some_other_endpoint").split(",")[1]
    assert webhook.post(payload, signature=f"{ours.split(',')[0]},{theirs},"
                        f"{ours.split(',')[1]}").status_code == 200
    assert balance(r) == 1000


def test_a_unicode_wallet_name_is_funded(webhook, r):
    assert webhook.post(paid_checkout(wallet="café/équipe", credits="3")).status_code == 200
    assert balance(r, "café/équipe") == 3


def test_a_timestamp_within_tolerance_is_accepted(webhook, r):
    assert webhook.post(paid_checkout(), timestamp=int(time.time()) - 240).status_code == 200


# --- nothing twice --------------------------------------------------------------------------


def test_the_same_event_three_times_grants_once(webhook, r):
    sent = paid_checkout()
    actions = [webhook.post(sent).json()["action"] for _ in range(3)]
    assert actions == ["granted", "duplicate", "duplicate"]
    assert balance(r) == 1000 and len(granted_ids(r)) == 1


def test_the_same_event_eight_times_at_once_grants_once(webhook, stripe_api, r):
    price = stripe_api.add_price(price_credits="125")
    sent = paid_checkout(credits=None)
    stripe_api.session_items[sent["data"]["object"]["id"]] = [(price, 8)]
    payload = json.dumps(sent).encode()
    start = threading.Barrier(8)

    def deliver(_: int) -> httpx.Response:
        start.wait(5)
        return webhook.post(payload)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(deliver, range(8)))
    assert sorted(a.json()["action"] for a in answers) == ["duplicate"] * 7 + ["granted"]
    assert balance(r) == 1000 and len(granted_ids(r)) == 1
    assert [e["type"] for e in wallets.ledger(r, "acme")] == ["grant"]


# --- refunds --------------------------------------------------------------------------------


def refunded(payment_intent: str, amount: int, amount_refunded: int,
             charge_id: str) -> dict[str, Any]:
    return event("charge.refunded", charge(payment_intent=payment_intent, amount=amount,
                                           amount_refunded=amount_refunded,
                                           charge_id=charge_id))


def test_partial_then_full_refund_voids_in_proportion(webhook, r):
    sent = paid_checkout(credits="1000", amount_total=1500)
    pi = sent["data"]["object"]["payment_intent"]
    webhook.post(sent)
    charge_id = new_id("ch")
    third = webhook.post(refunded(pi, 1500, 500, charge_id)).json()
    assert (third["action"], third["credits"], third["balance"]) == ("voided", 333, 667)
    again = webhook.post(refunded(pi, 1500, 500, charge_id)).json()
    assert again["credits"] == 333 and balance(r) == 667  # a redelivery voids nothing more
    rest = webhook.post(refunded(pi, 1500, 1500, charge_id)).json()
    assert (rest["credits"], rest["balance"]) == (667, 0)
    older = webhook.post(refunded(pi, 1500, 500, charge_id))  # out of order: nothing
    assert older.status_code == 200 and balance(r) == 0
    voids = [e for e in wallets.ledger(r, "acme") if e["type"] == "void"]
    assert [(e["amount"], e["shortfall"]) for e in voids] == [(-667, 0), (-333, 0)]


def test_full_refund_after_spending_records_the_shortfall(webhook, r):
    from kong_credits.engine import AuthorizeRequest, Engine

    sent = paid_checkout(credits="1000")
    pi = sent["data"]["object"]["payment_intent"]
    webhook.post(sent)
    wallets.grant(r, "acme", 50, grant_id="promo", priority=1000)
    assert Engine(r).authorize(AuthorizeRequest("req", "acme", cost=400,
                                                consumer="c")).admitted
    answer = webhook.post(refunded(pi, 1500, 1500, new_id("ch"))).json()
    assert (answer["credits"], answer["balance"]) == (600, 50)
    [void] = [e for e in wallets.ledger(r, "acme") if e["type"] == "void"]
    assert (void["amount"], void["shortfall"], void["ref"]) == (
        -600, 400, f"stripe:{sent['data']['object']['id']}")


def test_refund_before_grant_is_applied_when_the_grant_arrives(webhook, r):
    sent = paid_checkout(credits="1000", amount_total=2000)
    pi = sent["data"]["object"]["payment_intent"]
    early = webhook.post(refunded(pi, 2000, 500, new_id("ch"))).json()
    assert early["action"] == "refund_pending" and balance(r) == 0
    granted = webhook.post(sent).json()
    assert (granted["action"], granted["balance"]) == ("granted", 750)
    assert webhook.post(sent).json()["balance"] == 750 and balance(r) == 750


def test_refund_of_an_unknown_payment_changes_no_wallet(webhook, r):
    answer = webhook.post(refunded(new_id("pi"), 100, 100, new_id("ch")))
    assert answer.json()["action"] == "refund_pending"
    assert r.keys("*:w:*") == []


# --- faults ---------------------------------------------------------------------------------


def test_redis_down_is_503_nothing_granted_and_the_retry_grants_once(webhook, r):
    sent = paid_checkout()
    webhook.proxy.down()
    answer = webhook.post(sent)
    assert answer.status_code == 503, answer.text
    assert granted_ids(r) == [] and r.keys("kc:stripe:*") == []
    webhook.proxy.up()
    assert webhook.post(sent).json()["action"] == "granted"
    assert webhook.post(sent).json()["action"] == "duplicate"
    assert balance(r) == 1000 and len(granted_ids(r)) == 1


def test_stripe_api_down_is_502_and_the_retry_grants(webhook, stripe_api, r):
    price = stripe_api.add_price(price_credits="10")
    sent = paid_checkout(credits=None)
    stripe_api.session_items[sent["data"]["object"]["id"]] = [(price, 1)]
    stripe_api.failing = True
    try:
        assert webhook.post(sent).status_code == 502
    finally:
        stripe_api.failing = False
    assert balance(r) == 0
    assert webhook.post(sent).json()["action"] == "granted" and balance(r) == 10
