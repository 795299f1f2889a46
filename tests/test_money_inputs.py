"""Inputs that used to create credit, move it between wallets or lose it (issue 11), each
played against a real Redis through the engine, the wallet functions and the CLI."""

from __future__ import annotations

import json

import pytest
import redis
from click.testing import CliRunner

from kong_credits import wallets
from kong_credits.cli import main
from kong_credits.engine import AuthorizeRequest, Engine, RateLimit
from kong_credits.errors import InvalidInput
from kong_credits.keys import SHARDS_KEY, WalletKeys, alert_streams
from kong_credits.money import MAX_AMOUNT


@pytest.fixture
def engine(r: redis.Redis) -> Engine:
    return Engine(r)


def cli(redis_url: str, *args: str):
    return CliRunner().invoke(main, [*args, "--redis-url", redis_url])


def charge(engine: Engine, request_id: str, cost: int, wallet: str = "far", **kw):
    return engine.authorize(AuthorizeRequest(request_id, wallet, "c", cost, **kw))


def events(r: redis.Redis, wallet: str) -> list[dict[str, str]]:
    return [f for _, f in r.xrange(WalletKeys(wallet).events) if f["wallet"] == wallet]


@pytest.mark.parametrize("expires_at", [
    "2300-01-01T00:00:00Z",  # 14 digits of milliseconds: used to shift the grant id
    "9999-12-31T23:59:59.999Z",  # the latest accepted
    "9999-12-31T23:59:59+00:00",
])
def test_a_far_future_grant_is_spent_like_any_other(r, engine, redis_url, expires_at):
    result = cli(redis_url, "grant", "far", "1000", "--expires-at", expires_at)
    assert result.exit_code == 0, result.output
    assert [charge(engine, f"q{i}", 400).status for i in range(3)] == [200, 200, 402]
    view = json.loads(cli(redis_url, "balance", "far", "--json").output)
    assert view["balance"] == 200
    assert view["grants"][0]["expires_at"].startswith(expires_at[:19])


@pytest.mark.parametrize("expires_at", [
    "9999-12-31T23:59:59-01:00",  # an hour after the latest accepted instant
    "10000-01-01T00:00:00Z",
    "1969-01-01T00:00:00Z",
    "2027-01-01T00:00:00",  # no timezone
])
def test_an_expiry_out_of_range_is_exit_2_and_writes_nothing(r, redis_url, expires_at):
    result = cli(redis_url, "grant", "far", "10", "--expires-at", expires_at)
    assert result.exit_code == 2, result.output
    assert "expires_at" in result.output and "Traceback" not in result.output
    assert set(r.keys("*")) <= {SHARDS_KEY}  # no data; at most the shard count


def test_the_grant_script_itself_refuses_widths_it_cannot_pack(r):
    keys = WalletKeys("far")
    script = wallets.GRANT
    for args in (["g1", 10, 0, 253_402_300_800_000], ["g1", 10, 10**10, 0],
                 ["g;1", 10, 0, 0], ["g1", 1.5, 0, 0], ["g1", MAX_AMOUNT + 1, 0, 0]):
        with pytest.raises(redis.ResponseError):
            r.eval(script.source, 6, *keys.wallet_keys, keys.grants, *args, 0, "{}", 2**52)
    assert r.keys("*") == []


@pytest.mark.parametrize("grant_id", ["pi_3NxYz", "cs_test_a1B2", "inv:2026-11/42",
                                      "0b8e6a8c-1f5e-4d5e-9c1a-2f3e4d5c6b7a", "a@b.c"])
def test_real_payment_ids_are_grant_ids(r, grant_id):
    assert wallets.grant(r, "acme", 5, grant_id=grant_id)[:2] == (True, grant_id)


@pytest.mark.parametrize("grant_id", ["inv;42", "a=1", "a b", "", "é", "x" * 201, "a\n",
                                      "a,b", "a|b"])
def test_a_grant_id_outside_the_documented_characters_is_exit_2(r, redis_url, grant_id):
    result = cli(redis_url, "grant", "acme", "5", "--grant-id", grant_id)
    assert result.exit_code == 2, result.output
    assert "grant id must be 1..200 characters of A-Z a-z 0-9 _ - . : @ /" in result.output
    assert set(r.keys("*")) <= {SHARDS_KEY}  # no data; at most the shard count


def test_a_refund_reaches_a_grant_whose_id_has_every_allowed_separator(r, engine):
    wallets.grant(r, "acme", 100, grant_id="inv:42/a.b-c_d@e")
    assert engine.authorize(AuthorizeRequest("h1", "acme", "c", 30, hold=True)).admitted
    settled = engine.settle("h1", "acme", 12)
    assert (settled.status, settled.balance) == (200, 88)
    assert [g.remaining for g in wallets.balance(r, "acme").grants] == [88]
    assert [e["cost"] for e in events(r, "acme")] == ["12"]


@pytest.mark.parametrize("amount", ["+-5", "²", "٣", "1e3", "1.0", " ", "", "0x10",
                                    "9" * 5000, "0", str(MAX_AMOUNT + 1)])
def test_a_grant_amount_that_is_not_a_whole_positive_number_is_exit_2(r, redis_url, amount):
    result = cli(redis_url, "grant", "acme", amount)
    assert result.exit_code == 2, result.output
    assert "amount must be" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert set(r.keys("*")) <= {SHARDS_KEY}  # no data; at most the shard count


@pytest.mark.parametrize("cost", [-5, 1.5, True, "3", MAX_AMOUNT + 1, None])
def test_the_engine_refuses_a_cost_that_is_not_whole_credits(r, engine, cost):
    wallets.grant(r, "acme", 100)
    with pytest.raises(InvalidInput, match="cost must be"):
        engine.authorize(AuthorizeRequest("q1", "acme", "c", cost))
    assert events(r, "acme") == []
    assert wallets.balance(r, "acme").balance == 100


def test_a_hold_needs_an_estimate(r, engine):
    with pytest.raises(InvalidInput, match="a hold needs a cost of at least 1"):
        engine.authorize(AuthorizeRequest("q1", "acme", "c", 0, hold=True))


@pytest.mark.parametrize(("field", "value", "message"), [
    ("request_id", "a:b", "request id must be"),
    ("request_id", "", "request id must be"),
    ("wallet", "a//b", "wallet path segments"),
    ("wallet", " acme", "wallet must be"),
    ("limit_scope", "r:1", "limit scope must not contain"),
])
def test_the_engine_refuses_names_that_could_alias_keys(engine, field, value, message):
    fields = {"request_id": "q1", "wallet": "acme", "consumer": "c", "cost": 1,
              "limit_scope": "", field: value}
    with pytest.raises(InvalidInput, match=message):
        engine.authorize(AuthorizeRequest(**fields))


def test_a_rate_limit_must_be_positive():
    with pytest.raises(InvalidInput, match="rate limit limit must be a positive integer"):
        RateLimit(60, 0)


def test_another_wallets_request_id_never_replays_its_answer(r, engine):
    wallets.grant(r, "acme", 10)
    assert charge(engine, "same-id", 5, wallet="acme").admitted
    # same shard, same request id, another wallet with no credits: refused, not replayed
    other = next(w for w in (f"w{i}" for i in range(1000))
                 if WalletKeys(w).shard == WalletKeys("acme").shard)
    decision = charge(engine, "same-id", 5, wallet=other)
    assert (decision.status, decision.replayed) == (402, False)


def test_settling_another_wallets_hold_is_refused_and_changes_nothing(r, engine):
    wallets.grant(r, "acme", 100)
    other = next(w for w in (f"w{i}" for i in range(1000))
                 if WalletKeys(w).shard == WalletKeys("acme").shard)
    wallets.grant(r, other, 100)
    assert engine.authorize(AuthorizeRequest("h1", "acme", "c", 50, hold=True)).admitted
    with pytest.raises(redis.ResponseError, match="held by another wallet"):
        engine.settle("h1", other, 0)  # would refund acme's 50 into `other`
    assert wallets.balance(r, other).balance == 100
    assert engine.settle("h1", "acme", 20).balance == 80  # the hold is intact
    with pytest.raises(redis.ResponseError, match="already holds credits"):
        engine.authorize(AuthorizeRequest("h1", other, "c", 5, hold=True))


def test_a_member_and_its_parent_crossing_a_threshold_alert_with_distinct_ids(r, engine):
    wallets.grant(r, "team", 100)
    wallets.grant(r, "team/ann", 10)
    # 60 credits: ann's 10 (100% used) and 50 of team's (50% used), in one request
    assert charge(engine, "req-1", 60, wallet="team/ann").admitted
    alerts = [f for stream in alert_streams() for _, f in r.xrange(stream)]
    ids = [a["alert_id"] for a in alerts]
    assert len(ids) == len(set(ids))
    assert {(a["wallet"], a["threshold_pct"]) for a in alerts} == {
        ("team/ann", "50"), ("team/ann", "75"), ("team/ann", "90"), ("team/ann", "100"),
        ("team", "50")}
    assert "req-1:team:used:50" in ids and "req-1:team/ann:used:50" in ids


def test_every_field_at_its_largest_with_separators_and_unicode_in_names(r, engine):
    """Amounts at 10^15 (a balance of 4 x 10^15, near 2^52), the largest priority and
    expiry, a grant id with every allowed separator, and a wallet name with ':' and Unicode
    under a parent: charged, held, refunded and settled exactly."""
    parent, member = "größe:ü", "größe:ü/x:ä;b=1"
    gid = "pi_" + "9" * 190 + ":a/b.c"
    for i, wallet in enumerate((member, member, member, parent)):
        wallets.grant(r, wallet, MAX_AMOUNT, grant_id=f"{gid[:195]}-{i}",
                      priority=wallets.MAX_PRIORITY, expires_at="9999-12-31T23:59:59.999Z")
    assert wallets.balance(r, member).balance == 3 * MAX_AMOUNT
    decision = engine.authorize(AuthorizeRequest("big-1", member, "c", MAX_AMOUNT, hold=True))
    assert (decision.status, decision.balance) == (200, 3 * MAX_AMOUNT)  # own 2 + parent 1
    settled = engine.settle("big-1", member, MAX_AMOUNT - 1)  # 1 credit back to its grant
    assert (settled.status, settled.balance, settled.unpaid) == (200, 2 * MAX_AMOUNT + 1, 0)
    assert charge(engine, "big-2", MAX_AMOUNT, wallet=member).admitted
    assert charge(engine, "big-3", MAX_AMOUNT, wallet=member).admitted
    assert charge(engine, "big-4", MAX_AMOUNT, wallet=member).admitted  # own 1 + parent's
    assert charge(engine, "big-5", 2, wallet=member).status == 402  # 1 credit left in all
    assert wallets.balance(r, member).balance == 0
    assert wallets.balance(r, parent).balance == 1
    assert [e["cost"] for e in events(r, member)] == [str(MAX_AMOUNT - 1)] + [
        str(MAX_AMOUNT)] * 3
