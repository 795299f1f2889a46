"""engine.py + scripts/: authorize, settle, burn order, expiry, refusals, idempotency."""

from __future__ import annotations

import itertools
import time

import pytest
import redis

from kong_credits import wallets
from kong_credits.engine import (
    AbuseDetection,
    AuthorizeRequest,
    Engine,
    PreparedAuthorize,
    RateLimit,
    authorize_call,
)
from kong_credits.errors import InvalidInput
from kong_credits.keys import WalletKeys

NOW = int(time.time() * 1000)


@pytest.fixture
def engine(r: redis.Redis) -> Engine:
    return Engine(r)


def request(request_id: str, cost: int = 1, wallet: str = "acme", **kw) -> AuthorizeRequest:
    kw.setdefault("consumer", "alice")
    return AuthorizeRequest(request_id, wallet, cost=cost, **kw)


def events(r: redis.Redis, wallet: str = "acme") -> list[dict[str, str]]:
    return [f for _, f in r.xrange(WalletKeys(wallet).events) if f["wallet"] == wallet]


def remaining(r: redis.Redis, wallet: str = "acme") -> dict[str, int]:
    return {g.id: g.remaining for g in wallets.balance(r, wallet).grants}


def test_admitted_request_is_charged_and_recorded(r, engine):
    wallets.grant(r, "acme", 10)
    decision = engine.authorize(request("req-1", 3, route="r1", service="s1", method="GET",
                                        path="/v1/things"))
    assert decision.admitted and decision.status == 200
    assert (decision.cost, decision.balance) == (3, 7)
    [event] = events(r)
    assert event == {"event_id": "req-1", "wallet": "acme", "consumer": "alice", "route": "r1",
                     "service": "s1", "method": "GET", "path": "/v1/things", "cost": "3",
                     "timestamp": event["timestamp"]}
    assert abs(int(event["timestamp"]) - time.time() * 1000) < 60_000
    assert wallets.balance(r, "acme").balance == 7


def test_unknown_wallet_is_refused_with_402(r, engine):
    decision = engine.authorize(request("req-1", 1, wallet="nobody"))
    assert (decision.status, decision.balance) == (402, 0)
    assert events(r, "nobody") == []


def test_insufficient_credits_refused_without_event_and_counted(r, engine):
    wallets.grant(r, "acme", 5)
    decision = engine.authorize(request("req-1", 6))
    assert (decision.status, decision.cost, decision.balance) == (402, 6, 5)
    assert events(r) == []
    view = wallets.balance(r, "acme")
    assert (view.balance, view.refused_credits) == (5, 1)


def test_zero_cost_is_admitted_and_metered_even_with_no_credits(r, engine):
    decision = engine.authorize(request("free-1", 0))
    assert decision.admitted and decision.balance == 0
    assert [e["cost"] for e in events(r)] == ["0"]


def test_same_request_id_charges_once(r, engine):
    wallets.grant(r, "acme", 10)
    first = engine.authorize(request("retry-me", 4))
    again = engine.authorize(request("retry-me", 4))
    assert first.admitted and again.admitted and again.replayed and not first.replayed
    assert again.balance == first.balance == 6
    assert len(events(r)) == 1
    assert wallets.balance(r, "acme").balance == 6


def test_burn_order_priority_then_soonest_expiry_then_oldest(r, engine):
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 7200))
    wallets.grant(r, "acme", 10, grant_id="old-default")
    wallets.grant(r, "acme", 10, grant_id="new-default")
    wallets.grant(r, "acme", 10, grant_id="expires-later", expires_at=later)
    wallets.grant(r, "acme", 10, grant_id="expires-soon", expires_at=soon)
    wallets.grant(r, "acme", 10, grant_id="promo", priority=10)
    wallets.grant(r, "acme", 10, grant_id="paid-last", priority=500)

    expected_order = ["promo", "expires-soon", "expires-later", "old-default", "new-default",
                      "paid-last"]
    for step, grant_id in enumerate(expected_order):
        assert engine.authorize(request(f"a{step}", 7)).admitted
        assert engine.authorize(request(f"b{step}", 3)).admitted
        assert remaining(r)[grant_id] == 0, f"{grant_id} should be spent after step {step}"
        later_ids = expected_order[step + 1:]
        assert all(remaining(r)[g] == 10 for g in later_ids)
    assert wallets.balance(r, "acme").balance == 0


def test_one_charge_spans_grants(r, engine):
    wallets.grant(r, "acme", 3, grant_id="first", priority=1)
    wallets.grant(r, "acme", 10, grant_id="second", priority=2)
    assert engine.authorize(request("span", 5)).balance == 8
    assert remaining(r) == {"first": 0, "second": 8}


def test_expired_grants_no_longer_count(r, engine):
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    wallets.grant(r, "acme", 100, grant_id="trial", expires_at=expires, priority=1)
    wallets.grant(r, "acme", 5, grant_id="paid")
    after_expiry = int(time.time() * 1000) + 120_000  # the clock `expires` was set by
    decision = engine.authorize(request("late", 6), now_ms=after_expiry)
    assert (decision.status, decision.balance) == (402, 5)
    decision = engine.authorize(request("late-2", 5), now_ms=after_expiry)
    assert decision.admitted and decision.balance == 0
    kinds = [e["type"] for e in wallets.ledger(r, "acme")]
    assert "expire" in kinds


def test_rate_limited_request_spends_no_credit(r, engine):
    wallets.grant(r, "acme", 100)
    limits = (RateLimit(60, 2),)
    assert engine.authorize(request("1", 10, limits=limits), now_ms=NOW).admitted
    second = engine.authorize(request("2", 10, limits=limits), now_ms=NOW)
    assert (second.limit, second.remaining) == (2, 0)
    third = engine.authorize(request("3", 10, limits=limits), now_ms=NOW)
    assert third.status == 429 and third.balance == 80
    assert 0 < third.retry_after_ms <= 66_000
    assert len(events(r)) == 2
    assert wallets.balance(r, "acme").refused_rate_limit == 1


def test_credit_refusal_takes_no_rate_limit_capacity(r, engine):
    wallets.grant(r, "acme", 10)
    limits = (RateLimit(60, 1),)
    assert engine.authorize(request("big", 50, limits=limits), now_ms=NOW).status == 402
    assert engine.authorize(request("small", 5, limits=limits), now_ms=NOW).admitted


def test_tightest_limit_is_reported(r, engine):
    wallets.grant(r, "acme", 100)
    limits = (RateLimit(1, 10), RateLimit(60, 3))
    decision = engine.authorize(request("1", 1, limits=limits), now_ms=NOW)
    assert (decision.limit, decision.remaining) == (3, 2)


def test_rate_limits_count_per_consumer(r, engine):
    wallets.grant(r, "team", 100)
    limits = (RateLimit(60, 1),)
    assert engine.authorize(request("1", wallet="team", consumer="a", limits=limits)).admitted
    assert engine.authorize(request("2", wallet="team", consumer="b", limits=limits)).admitted
    assert engine.authorize(request("3", wallet="team", consumer="a", limits=limits)).status == 429


def test_sliding_window_never_admits_more_than_the_limit_in_any_period(r, engine):
    """Arrivals every 37 ms for 5 periods; every span of one period holds <= limit admits."""
    wallets.grant(r, "acme", 10_000)
    period_ms, limit = 1000, 7
    limits = (RateLimit(1, limit),)
    admitted_at = []
    for i in range(140):
        t = NOW + i * 37
        decision = engine.authorize(request(f"r{i}", 1, limits=limits), now_ms=t)
        if decision.admitted:
            admitted_at.append(t)
        else:
            assert decision.status == 429 and decision.retry_after_ms >= 1
    for t in admitted_at:
        in_window = [u for u in admitted_at if t - period_ms < u <= t]
        assert len(in_window) <= limit
    # No fixed-window 2x burst, but the limit is used: about `limit` admits per period.
    assert len(admitted_at) >= 4 * limit


def test_retry_after_is_honest(r, engine):
    wallets.grant(r, "acme", 100)
    limits = (RateLimit(1, 1),)
    assert engine.authorize(request("1", limits=limits), now_ms=NOW).admitted
    refused = engine.authorize(request("2", limits=limits), now_ms=NOW + 10)
    assert refused.status == 429
    at_retry = NOW + 10 + refused.retry_after_ms
    assert engine.authorize(request("3", limits=limits), now_ms=at_retry - 1).status == 429
    assert engine.authorize(request("4", limits=limits), now_ms=at_retry).admitted


class TestSettle:
    def test_lower_actual_cost_refunds_the_difference(self, r, engine):
        wallets.grant(r, "acme", 100)
        held = engine.authorize(request("h", 30, hold=True, method="POST", path="/gen"))
        assert held.admitted and held.balance == 70
        assert events(r) == []  # the event waits for the actual price
        settled = engine.settle("h", "acme", 12, status=200)
        assert (settled.status, settled.cost, settled.balance, settled.unpaid) == (200, 12, 88, 0)
        [event] = events(r)
        assert (event["cost"], event["reserved"], event["status"], event["path"]) == (
            "12", "30", "200", "/gen")

    def test_refund_goes_back_to_the_grants_burned_last_first(self, r, engine):
        wallets.grant(r, "acme", 10, grant_id="promo", priority=1)
        wallets.grant(r, "acme", 100, grant_id="paid")
        engine.authorize(request("h", 30, hold=True))
        assert remaining(r) == {"promo": 0, "paid": 80}
        engine.settle("h", "acme", 15)
        assert remaining(r) == {"promo": 0, "paid": 95}
        engine.settle("h", "acme", 15)  # a retried settle refunds nothing more
        assert wallets.balance(r, "acme").balance == 95
        engine.authorize(request("h2", 10, hold=True))  # exhausts nothing, burns paid
        engine.settle("h2", "acme", 0)
        assert remaining(r) == {"promo": 0, "paid": 95}

    def test_refund_revives_an_exhausted_grant(self, r, engine):
        wallets.grant(r, "acme", 10, grant_id="only")
        engine.authorize(request("h", 10, hold=True))
        engine.settle("h", "acme", 4)
        assert remaining(r) == {"only": 6}
        assert engine.authorize(request("next", 6)).admitted

    def test_higher_actual_cost_burns_more_then_goes_into_overdraft(self, r, engine):
        wallets.grant(r, "acme", 50)
        engine.authorize(request("h", 10, hold=True))
        settled = engine.settle("h", "acme", 75)
        assert (settled.balance, settled.unpaid) == (-25, 25)
        view = wallets.balance(r, "acme")
        assert (view.balance, view.overdraft) == (-25, 25)
        assert engine.authorize(request("refused", 0)).admitted  # free stays free
        assert engine.authorize(request("refused-2", 1)).status == 402
        created, _, balance = wallets.grant(r, "acme", 40)
        assert created and balance == 15
        assert wallets.balance(r, "acme").overdraft == 0

    def test_settle_is_idempotent(self, r, engine):
        wallets.grant(r, "acme", 50)
        engine.authorize(request("h", 10, hold=True))
        first = engine.settle("h", "acme", 20)
        again = engine.settle("h", "acme", 20)
        assert again.replayed and (again.cost, again.balance) == (first.cost, first.balance)
        assert len(events(r)) == 1 and wallets.balance(r, "acme").balance == 30

    def test_settle_without_hold_is_404_and_changes_nothing(self, r, engine):
        wallets.grant(r, "acme", 50)
        assert engine.settle("never-held", "acme", 5).status == 404
        assert events(r) == [] and wallets.balance(r, "acme").balance == 50


# --- the plugin's prepared authorize ----------------------------------------------------------


def test_prepared_authorize_is_authorize_call_with_the_config_laid_out_once():
    limit_sets = [(), (RateLimit(60, 5),), (RateLimit(1, 2), RateLimit(86_400, 100))]
    abuses = [None, AbuseDetection(factor=2.5, warmup_minutes=3, min_rate=7,
                                   throttle_per_minute=9)]
    for wallet, limits, hold, abuse, scope in itertools.product(
            ["acme", "team/alice", "café"], limit_sets, [False, True], abuses, ["", "route-1"]):
        config = {"cost": 3, "route": "r-1", "service": "s-é", "limits": limits,
                  "limit_scope": scope, "hold": hold, "abuse": abuse}
        ttls = {"answer_ttl_ms": 20_500, "hold_ms": 60_000}
        expected = authorize_call(AuthorizeRequest(
            "req-1", wallet, "consumer:ü", method="GET", path="/v1/ü", **config), **ttls)
        prepared = PreparedAuthorize(**config, **ttls)
        assert prepared.call("req-1", wallet, "consumer:ü", "GET", "/v1/ü") == expected


def test_prepared_authorize_checks_what_authorize_call_checks():
    for config in ({"cost": -1}, {"cost": True}, {"cost": 1.0}, {"cost": 0, "hold": True},
                   {"cost": 1, "limit_scope": "a:b"}):
        with pytest.raises(InvalidInput):
            PreparedAuthorize(**config)
    prepared = PreparedAuthorize(cost=1)
    for request_id, wallet in (("id:1", "acme"), ("", "acme"), ("id", " acme"), ("id", "a//b")):
        with pytest.raises(InvalidInput):
            prepared.call(request_id, wallet, "c")
