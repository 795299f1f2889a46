"""voids.py + scripts/void.lua: voiding grants, shortfall, idempotency, holds, the CLI."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis
from click.testing import CliRunner

from kong_credits import wallets
from kong_credits.cli import main
from kong_credits.engine import AuthorizeRequest, Engine
from kong_credits.errors import GrantNotFound, InvalidInput
from kong_credits.keys import WalletKeys

NOW = int(time.time() * 1000)


@pytest.fixture
def engine(r: redis.Redis) -> Engine:
    return Engine(r)


def spend(engine: Engine, request_id: str, cost: int, **kw) -> None:
    decision = engine.authorize(AuthorizeRequest(request_id, "acme", cost=cost,
                                                 consumer="alice", **kw))
    assert decision.admitted


def grant_view(r: redis.Redis, grant_id: str, wallet: str = "acme") -> wallets.Grant:
    [view] = [g for g in wallets.balance(r, wallet).grants if g.id == grant_id]
    return view


def burn_members(r: redis.Redis, wallet: str = "acme") -> list[str]:
    return r.zrange(WalletKeys(wallet).burn_order, 0, -1)


def test_void_of_an_unspent_grant_takes_it_all(r):
    wallets.grant(r, "acme", 100, grant_id="paid")
    wallets.grant(r, "acme", 5, grant_id="promo")
    result = wallets.void_grant(r, "acme", "paid", reason="refund")
    assert (result.voided, result.shortfall, result.remaining, result.balance) == (100, 0, 0, 5)
    assert grant_view(r, "paid").voided == 100
    assert grant_view(r, "paid").status == "exhausted"
    assert all(not m.endswith(":paid") for m in burn_members(r))
    [entry, *_] = wallets.ledger(r, "acme")
    assert (entry["type"], entry["ref"], entry["amount"], entry["balance"], entry["shortfall"],
            entry["reason"]) == ("void", "paid", -100, 5, 0, "refund")


def test_void_after_spending_records_the_shortfall(r, engine):
    wallets.grant(r, "acme", 100, grant_id="paid")
    spend(engine, "a", 30)
    result = wallets.void_grant(r, "acme", "paid")
    assert (result.voided, result.shortfall, result.balance) == (70, 30, 0)
    assert wallets.ledger(r, "acme")[0]["shortfall"] == 30
    assert not engine.authorize(AuthorizeRequest("b", "acme", cost=1, consumer="c")).admitted


def test_partial_voids_never_ask_for_more_than_the_grant(r, engine):
    wallets.grant(r, "acme", 100, grant_id="paid")
    assert wallets.void_grant(r, "acme", "paid", amount=40).voided == 40
    spend(engine, "a", 50)  # 10 left in the grant
    second = wallets.void_grant(r, "acme", "paid", amount=40)
    assert (second.voided, second.shortfall, second.remaining) == (10, 30, 0)
    third = wallets.void_grant(r, "acme", "paid", amount=40)  # only 20 of 100 not asked yet
    assert (third.voided, third.shortfall) == (0, 20)
    fourth = wallets.void_grant(r, "acme", "paid")
    assert (fourth.voided, fourth.shortfall) == (0, 0)
    assert grant_view(r, "paid").voided == 100
    assert wallets.balance(r, "acme").balance == 0


def test_total_mode_is_cumulative_and_ignores_older_totals(r):
    wallets.grant(r, "acme", 1000, grant_id="paid")
    assert wallets.void_grant(r, "acme", "paid", total=300).voided == 300
    assert wallets.void_grant(r, "acme", "paid", total=300).voided == 0  # repeated
    assert wallets.void_grant(r, "acme", "paid", total=100).voided == 0  # older
    assert wallets.void_grant(r, "acme", "paid", total=10**15).voided == 700  # capped
    assert wallets.balance(r, "acme").balance == 0


def test_void_key_makes_a_retry_change_nothing(r):
    wallets.grant(r, "acme", 100, grant_id="paid")
    first = wallets.void_grant(r, "acme", "paid", amount=10, void_key="re_1")
    again = wallets.void_grant(r, "acme", "paid", amount=10, void_key="re_1")
    assert not first.replayed and again.replayed
    assert (again.voided, again.balance) == (first.voided, first.balance) == (10, 90)
    assert wallets.void_grant(r, "acme", "paid", amount=10, void_key="re_2").balance == 80
    assert len([e for e in wallets.ledger(r, "acme") if e["type"] == "void"]) == 2


def test_concurrent_voids_with_one_key_void_once(redis_url, r):
    wallets.grant(r, "acme", 10**6, grant_id="paid")
    results: list[wallets.Void] = []

    def void() -> None:
        client = redis.Redis.from_url(redis_url)
        results.append(wallets.void_grant(client, "acme", "paid", amount=1000, void_key="k"))
        client.close()

    threads = [threading.Thread(target=void) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 16 and sum(not v.replayed for v in results) == 1
    assert wallets.balance(r, "acme").balance == 10**6 - 1000


def test_a_hold_that_costs_less_gives_nothing_back_to_a_voided_grant(r, engine):
    wallets.grant(r, "acme", 100, grant_id="paid")
    spend(engine, "h", 90, hold=True)
    result = wallets.void_grant(r, "acme", "paid")
    assert (result.voided, result.shortfall, result.balance) == (10, 90, 0)
    engine.settle("h", "acme", 0)  # the held 90 come back to the voided grant: voided
    assert wallets.balance(r, "acme").balance == 0
    assert grant_view(r, "paid").remaining == 0


def test_a_partly_voided_grant_gets_back_what_the_void_left_it(r, engine):
    wallets.grant(r, "acme", 100, grant_id="paid")
    spend(engine, "h", 90, hold=True)
    assert wallets.void_grant(r, "acme", "paid", amount=50).shortfall == 40
    engine.settle("h", "acme", 0)  # 90 back: 40 pay the shortfall, 50 are the customer's
    assert wallets.balance(r, "acme").balance == 50
    spend(engine, "next", 50)


def test_void_of_an_expired_grant_voids_nothing(r):
    wallets.grant(r, "acme", 100, grant_id="soon", expires_at="2100-01-01T00:00:00Z")
    later = 4_102_444_800_000 + 1  # just after 2100-01-01
    result = wallets.void_grant(r, "acme", "soon", now_ms=later)
    assert (result.voided, result.shortfall, result.remaining) == (0, 100, 0)


def test_void_keeps_the_other_grants_burn_order(r, engine):
    wallets.grant(r, "acme", 10, grant_id="first", priority=1)
    wallets.grant(r, "acme", 10, grant_id="second", priority=1)
    wallets.grant(r, "acme", 10, grant_id="third", priority=2,
                  expires_at="2100-01-01T00:00:00Z")
    wallets.void_grant(r, "acme", "third")
    wallets.void_grant(r, "acme", "first")
    assert [m.rsplit(":", 1)[1] for m in burn_members(r)] == ["second"]
    spend(engine, "a", 10)
    assert wallets.balance(r, "acme").balance == 0


def test_unknown_grant_is_grant_not_found_and_changes_nothing(r):
    wallets.grant(r, "acme", 10, grant_id="paid")
    with pytest.raises(GrantNotFound):
        wallets.void_grant(r, "acme", "nope", void_key="k")
    with pytest.raises(GrantNotFound):
        wallets.void_grant(r, "other", "paid")
    assert wallets.balance(r, "acme").balance == 10
    assert not r.exists(WalletKeys("acme").void_replies)


@pytest.mark.parametrize("kwargs", [
    {"amount": 0}, {"amount": -5}, {"amount": 10**15 + 1}, {"amount": 1.5}, {"amount": True},
    {"total": "1e3"}, {"amount": 1, "total": 1}, {"reason": ""}, {"reason": "a\nb"},
    {"reason": "x" * 201}, {"void_key": "a|b"}, {"void_key": ""}, {"void_key": "é"},
])
def test_bad_arguments_are_refused_before_anything_is_written(r, kwargs):
    wallets.grant(r, "acme", 10, grant_id="paid")
    with pytest.raises(InvalidInput):
        wallets.void_grant(r, "acme", "paid", **kwargs)
    assert wallets.balance(r, "acme").balance == 10


def test_cli_void_prints_and_exits_with_the_documented_codes(redis_url, r):
    wallets.grant(r, "acme", 100, grant_id="paid")
    runner = CliRunner()
    args = ["--redis-url", redis_url]
    done = runner.invoke(main, ["void", "acme", "paid", "--amount", "30", "--json", *args])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output) == {"wallet": "acme", "grant_id": "paid", "voided": 30,
                                       "shortfall": 0, "remaining": 70, "balance": 70,
                                       "replayed": False}
    text = runner.invoke(main, ["void", "acme", "paid", "--reason", "chargeback", *args])
    assert text.exit_code == 0 and "voided 70 credits of paid" in text.output
    assert runner.invoke(main, ["void", "acme", "nope", *args]).exit_code == 1
    assert runner.invoke(main, ["void", "acme", "paid", "--amount", "x", *args]).exit_code == 2
    assert wallets.balance(r, "acme").balance == 0


def test_random_voids_holds_and_settles_keep_the_books(r, engine):
    """After every step: the balance is the sum of what live grants hold, no grant holds
    more than its amount minus what voids took, and nothing voided comes back."""
    import random

    rng = random.Random(18)
    keys = WalletKeys("acme")
    amounts = {f"g{i}": rng.randint(1, 500) for i in range(6)}
    for gid, amount in amounts.items():
        wallets.grant(r, "acme", amount, grant_id=gid, priority=rng.randint(0, 3))
    taken = 0  # credits voids took out of the balance
    spent = 0  # credits settled or charged
    open_holds: dict[str, int] = {}
    for step in range(300):
        action = rng.choice(["hold", "charge", "settle", "void", "void_all"])
        if action in ("hold", "charge"):
            cost = rng.randint(1, 80)
            rid = f"r{step}"
            decision = engine.authorize(AuthorizeRequest(rid, "acme", cost=cost,
                                                         consumer="c", hold=action == "hold"))
            if decision.admitted:
                if action == "hold":
                    open_holds[rid] = cost
                else:
                    spent += cost
        elif action == "settle" and open_holds:
            rid = rng.choice(sorted(open_holds))
            held = open_holds.pop(rid)
            actual = rng.randint(0, held)
            engine.settle(rid, "acme", actual)
            spent += actual
        elif action.startswith("void"):
            gid = rng.choice(sorted(amounts))
            amount = None if action == "void_all" else rng.randint(1, 200)
            taken += wallets.void_grant(r, "acme", gid, amount=amount).voided
        remaining = {k: int(v) for k, v in r.hgetall(keys.remaining).items()}
        live = [m.rsplit(":", 1)[1] for m in r.zrange(keys.burn_order, 0, -1)]
        view = wallets.balance(r, "acme")
        assert view.balance == sum(remaining[g] for g in live)
        assert all(remaining[g] > 0 for g in live)
        voided = {g.id: g.voided for g in view.grants}
        assert all(remaining[g] <= amounts[g] - voided[g] for g in amounts)
        held_now = sum(open_holds.values())
        assert view.balance + held_now + spent + taken <= sum(amounts.values())
