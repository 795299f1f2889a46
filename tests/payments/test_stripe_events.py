"""payments/: events applied without HTTP, refund arithmetic, faults between steps, settings,
and `kong-credits stripe replay`. Real Redis; Stripe's API is the loopback fake."""

from __future__ import annotations

import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from prometheus_client import CollectorRegistry
from stripe_fake import (
    API_KEY,
    FakeStripeApi,
    charge,
    checkout_session,
    event,
    invoice_line,
    new_id,
    subscription_invoice,
)

from kong_credits import wallets
from kong_credits.cli import main
from kong_credits.errors import InvalidInput, RedisUnavailable
from kong_credits.payments.catalog import StripeCatalog, StripeUnavailable
from kong_credits.payments.metrics import StripeMetrics
from kong_credits.payments.refunds import refunded_credits
from kong_credits.payments.settings import StripeSettings
from kong_credits.payments.stripe_events import StripePayments


@pytest.fixture(scope="module")
def stripe_api():
    with FakeStripeApi() as api:
        yield api


@pytest.fixture
def catalog(stripe_api: FakeStripeApi) -> StripeCatalog:
    return StripeCatalog(StripeSettings(api_key=API_KEY, api_base=stripe_api.url))


def payments_on(client: redis.Redis, catalog: StripeCatalog) -> StripePayments:
    return StripePayments(client, catalog, metrics=StripeMetrics(CollectorRegistry()))


def paid(credits: str = "1000", amount_total: int = 1500, **kw: Any) -> dict[str, Any]:
    return event("checkout.session.completed", checkout_session(
        wallet="acme", metadata={"credits": credits}, amount_total=amount_total, **kw))


def refund(payment_intent: str, amount: int, refunded: int, charge_id: str = "ch_1"
           ) -> dict[str, Any]:
    return event("charge.refunded", charge(payment_intent=payment_intent, amount=amount,
                                           amount_refunded=refunded, charge_id=charge_id))


@pytest.mark.parametrize(("credits", "refunds", "voided"), [
    (1000, {}, 0),
    (1000, {"ch_1:500": "1500"}, 333),  # rounded down: the customer keeps the fraction
    (1000, {"ch_1:500": "1500", "ch_1:1500": "1500"}, 1000),
    (1000, {"ch_1:1500": "1500", "ch_1:500": "1500"}, 1000),  # order does not matter
    (1000, {"ch_1:1": "3"}, 333),
    (10**15, {"ch_1:99999999": "99999999"}, 10**15),  # no float anywhere
    (10**15, {"ch_1:1": "99999999"}, 10**15 // 99999999),
    (100, {"ch_1:50": "100", "ch_2:100": "100"}, 100),  # capped at the grant
])
def test_refunded_credits(credits, refunds, voided):
    assert refunded_credits(credits, refunds) == voided


def test_a_redis_fault_between_link_and_grant_then_a_refund_then_the_retry(
        redis_url, r, catalog):
    """The worst interleaving: the grant's link is written, Redis fails before the grant, a
    refund arrives (nothing to void yet); Stripe's retry grants once and voids the refund."""

    class FailingGrant(redis.Redis):
        failures = 1

        def evalsha(self, *args: Any) -> Any:
            if self.failures:
                self.failures -= 1
                raise redis.ConnectionError("connection lost")
            return super().evalsha(*args)

    sent = paid("1000", amount_total=1000)
    pi = sent["data"]["object"]["payment_intent"]
    with pytest.raises(RedisUnavailable):
        payments_on(FailingGrant.from_url(redis_url), catalog).apply(sent)
    assert wallets.balance(r, "acme").grants == []
    payments = payments_on(r, catalog)
    assert payments.apply(refund(pi, 1000, 250)).action == "refund_pending"
    retried = payments.apply(sent)
    assert (retried.action, retried.balance) == ("granted", 750)
    assert payments.apply(sent).action == "duplicate"
    assert payments.apply(refund(pi, 1000, 250)).credits == 250  # the same void, replayed
    assert wallets.balance(r, "acme").balance == 750


def test_grants_and_refunds_racing_in_any_order_end_exact(redis_url, r, catalog):
    clients = [redis.Redis.from_url(redis_url) for _ in range(8)]
    rng = random.Random(18)
    for round_ in range(12):
        wallet = f"race{round_}"
        session = checkout_session(wallet=wallet, metadata={"credits": "900"},
                                   amount_total=3000)
        pi = session["payment_intent"]
        events = [event("checkout.session.completed", session)] * 3 + [
            event("checkout.session.async_payment_succeeded", session),
            refund(pi, 3000, 1000, "ch_a"), refund(pi, 3000, 2000, "ch_a"),
            refund(pi, 3000, 1000, "ch_a"), refund(pi, 3000, 2000, "ch_a")]
        rng.shuffle(events)
        start = threading.Barrier(len(events))

        def deliver(i: int, events: list[dict[str, Any]] = events,
                    start: threading.Barrier = start) -> str:
            start.wait(5)
            return payments_on(clients[i], catalog).apply(events[i]).action

        with ThreadPoolExecutor(len(events)) as pool:
            actions = list(pool.map(deliver, range(len(events))))
        assert actions.count("granted") == 1
        view = wallets.balance(r, wallet)
        assert (view.balance, len(view.grants), view.grants[0].voided) == (300, 1, 600)
    for client in clients:
        client.close()


def test_legacy_invoice_fields_link_the_payment_for_refunds(r, catalog):
    payments = payments_on(r, catalog)
    invoice = subscription_invoice(amount_paid=2000)
    pi = new_id("pi")
    details = invoice.pop("parent")["subscription_details"]
    invoice.pop("payments")
    invoice |= {"subscription": details["subscription"], "payment_intent": pi,
                "subscription_details": {"metadata": {"credits_wallet": "acme",
                                                      "credits": "400"}}}
    assert payments.apply(event("invoice.paid", invoice)).action == "granted"
    assert payments.apply(refund(pi, 2000, 2000)).credits == 400
    assert wallets.balance(r, "acme").balance == 0


def test_subscription_metadata_is_fetched_when_the_event_lacks_it(r, catalog, stripe_api):
    subscription = new_id("sub")
    stripe_api.subscriptions[subscription] = {
        "id": subscription, "object": "subscription", "status": "active",
        "metadata": {"credits_wallet": "dave", "credits": "70"}}
    invoice = subscription_invoice(subscription=subscription)
    invoice["parent"]["subscription_details"].pop("metadata")
    assert payments_on(r, catalog).apply(event("invoice.paid", invoice)).credits == 70
    assert wallets.balance(r, "dave").balance == 70


def test_without_an_api_key_only_metadata_counts(r, caplog):
    payments = payments_on(r, StripeCatalog(StripeSettings()))
    sent = event("checkout.session.completed", checkout_session(wallet="acme"))
    outcome = payments.apply(sent)
    assert (outcome.action, outcome.reason) == ("ignored", "no_credits")
    assert "KONG_CREDITS_STRIPE_API_KEY" in caplog.text
    assert payments.apply(paid("5")).action == "granted"


def test_a_key_stripe_refuses_is_a_fault_not_an_ignore(r, stripe_api):
    payments = payments_on(r, StripeCatalog(StripeSettings(api_key="sk_test_revoked",
                                                           api_base=stripe_api.url)))
    sent = event("checkout.session.completed", checkout_session(wallet="acme"))
    with pytest.raises(StripeUnavailable, match="AuthenticationError"):
        payments.apply(sent)
    assert wallets.balance(r, "acme").grants == []


def test_a_zero_invoice_buys_no_credits(r, catalog):
    invoice = subscription_invoice(amount_paid=0, subscription_metadata={
        "credits_wallet": "acme", "credits": "100"})
    outcome = payments_on(r, catalog).apply(event("invoice.paid", invoice))
    assert (outcome.action, outcome.reason) == ("ignored", "nothing_paid")


def test_invoice_lines_beyond_the_first_page_are_listed(r, catalog, stripe_api):
    price = stripe_api.add_price(product_credits="3")
    product = stripe_api.prices[price]["product"]
    invoice = subscription_invoice(subscription_metadata={"credits_wallet": "acme"},
                                   lines=[invoice_line(price, product, 1)])
    invoice["lines"]["has_more"] = True
    stripe_api.invoice_lines[invoice["id"]] = [invoice_line(price, product, q)
                                               for q in (1, 10, 100)]
    assert payments_on(r, catalog).apply(event("invoice.paid", invoice)).credits == 333


def test_a_grant_the_wallet_cannot_hold_is_ignored(r, catalog):
    for i in range(4):  # 2**52 is the largest balance; 10**15 the largest grant
        wallets.grant(r, "acme", 10**15, grant_id=f"big{i}")
    outcome = payments_on(r, catalog).apply(paid(str(10**15)))
    assert (outcome.action, outcome.reason) == ("ignored", "grant_refused")


@pytest.mark.parametrize("bad", [[], {"id": "evt_1"}, {"id": 1, "type": "x", "data": {}},
                                 {"id": "evt_1", "type": "x", "data": {"object": []}}])
def test_malformed_events_are_invalid_input(r, catalog, bad):
    with pytest.raises(InvalidInput):
        payments_on(r, catalog).apply(bad)


def test_settings_from_the_environment():
    settings = StripeSettings.from_env({
        "KONG_CREDITS_STRIPE_WEBHOOK_SECRET": " whsec_new , whsec_old,,",
        "KONG_CREDITS_STRIPE_API_KEY": "sk_live_secret",
        "KONG_CREDITS_STRIPE_API_BASE": "http://127.0.0.1:9/"})
    assert settings.webhook_secrets == ("whsec_new", "whsec_old")
    assert settings.api_base == "http://127.0.0.1:9"
    assert "whsec" not in repr(settings) and "sk_live" not in repr(settings)
    assert StripeSettings.from_env({}).api_base == "https://api.stripe.com"
    with pytest.raises(InvalidInput):
        StripeSettings.from_env({"KONG_CREDITS_STRIPE_API_BASE": "ftp://x"})


def test_replay_applies_a_saved_event_once(tmp_path: Path, redis_url, r, monkeypatch):
    monkeypatch.delenv("KONG_CREDITS_STRIPE_API_KEY", raising=False)
    saved = tmp_path / "evt.json"
    saved.write_text(json.dumps(paid("250"), indent=2))
    runner = CliRunner()
    args = ["stripe", "replay", str(saved), "--redis-url", redis_url]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["action"] == "granted"
    assert json.loads(runner.invoke(main, args).output)["action"] == "duplicate"
    assert wallets.balance(r, "acme").balance == 250
    saved.write_text("{not json")
    assert runner.invoke(main, args).exit_code == 2
    saved.write_text('{"type": "checkout.session.completed"}')
    assert runner.invoke(main, args).exit_code == 2
    saved.write_text(json.dumps(paid("250")))
    down = runner.invoke(main, ["stripe", "replay", str(saved), "--redis-url",
                                "redis://127.0.0.1:1/0"])
    assert down.exit_code == 1
    assert wallets.balance(r, "acme").balance == 250
