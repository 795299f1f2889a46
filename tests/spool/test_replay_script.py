"""authorize.lua's replay mode (spool/replay.py): always admitted, charged once, overdraft
when the wallet cannot pay, the event at the time the request was served."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import redis
from waits import wait_until

from kong_credits import wallets
from kong_credits.engine import AUTHORIZE, AuthorizeRequest, Decision, Engine, run_script
from kong_credits.keys import WalletKeys
from kong_credits.money import MAX_AMOUNT, MAX_EXPIRY_MS
from kong_credits.spool.records import SettledPrice, SpooledRequest
from kong_credits.spool.replay import REPLAY_ANSWER_TTL_MS, replay_call

SERVED_AT_MS = 1_767_225_600_123  # 2026-01-01T00:00:00.123Z


def spooled(request_id: str, wallet: str = "w", cost: int = 5, **fields: object
            ) -> SpooledRequest:
    return SpooledRequest(request_id=request_id, wallet=wallet, consumer="c1", cost=cost,
                          at_ms=SERVED_AT_MS, route="r1", service="s1", **fields)


def replay(r: redis.Redis, request: SpooledRequest, cost: int | None = None) -> Decision:
    keys, args = replay_call(request, request.cost if cost is None else cost)
    return Decision.from_reply(run_script(r, AUTHORIZE, keys, args))


def events(r: redis.Redis, wallet: str) -> list[dict[str, str]]:
    return [f for _, f in r.xrange(WalletKeys(wallet).events) if f["wallet"] == wallet]


def test_a_replay_is_charged_once_with_its_served_time_and_its_answer_kept_a_week(r):
    wallets.grant(r, "w", 100)
    first = replay(r, spooled("req-1", method="GET", path="/x"))
    again = replay(r, spooled("req-1", method="GET", path="/x"))
    assert (first.status, first.cost, first.balance, first.replayed) == (200, 5, 95, False)
    assert (again.status, again.replayed) == (200, True)
    assert wallets.balance(r, "w").balance == 95
    [event] = events(r, "w")
    assert (event["event_id"], event["cost"], event["timestamp"], event["path"]) == (
        "req-1", "5", str(SERVED_AT_MS), "/x")
    ttl_ms = r.pttl(WalletKeys("w").request("req-1"))
    assert REPLAY_ANSWER_TTL_MS - 60_000 < ttl_ms <= REPLAY_ANSWER_TTL_MS


def test_a_replay_the_wallet_cannot_pay_is_admitted_as_overdraft_and_alerted(r):
    wallets.grant(r, "w", 3)
    decision = replay(r, spooled("req-1", cost=5))
    assert (decision.status, decision.reason, decision.balance) == (200, "overdraft", -2)
    view = wallets.balance(r, "w")
    assert (view.balance, view.overdraft) == (-2, 2)
    alerts = [f for _, f in r.xrange(WalletKeys("w").alerts) if f["type"] == "overdraft"]
    assert [(a["wallet"], a["unpaid"], a["request_id"]) for a in alerts] == [("w", "2", "req-1")]
    assert len(events(r, "w")) == 1
    wallets.grant(r, "w", 10)  # the next grant pays the overdraft first
    assert (wallets.balance(r, "w").balance, wallets.balance(r, "w").overdraft) == (8, 0)


def test_a_replay_ignores_rate_limits_and_hard_caps_but_counts_against_them(r):
    wallets.grant(r, "w", 100)
    wallets.set_budget(r, "w", daily_cap=4)
    assert replay(r, spooled("req-1", cost=5)).status == 200
    view = wallets.balance(r, "w")
    assert (view.balance, view.spent_today) == (95, 5)
    live = Engine(r).authorize(AuthorizeRequest("live-1", "w", "c1", 1))
    assert (live.status, live.reason) == (402, "cap:day")  # the replay counted


def test_a_member_replay_draws_on_its_parent_then_overdraws_itself(r):
    wallets.grant(r, "team", 4)
    wallets.grant(r, "team/alice", 3)
    decision = replay(r, spooled("req-1", wallet="team/alice", cost=10))
    assert decision.status == 200
    member, team = wallets.balance(r, "team/alice"), wallets.balance(r, "team")
    assert (member.balance, member.overdraft, team.balance) == (-3, 3, 0)
    [event] = events(r, "team/alice")
    assert (event["cost"], event["parent"], event["parent_cost"]) == ("10", "team", "4")


def test_a_free_replay_is_recorded_and_charges_nothing(r):
    assert replay(r, spooled("req-1", cost=0)).status == 200
    assert (wallets.balance(r, "w").balance, len(events(r, "w"))) == (0, 1)


def test_a_live_request_is_not_taken_for_a_replay(r):
    """Only the trailing `replay:<ms>` argument switches the mode: a path of that shape
    does not."""
    wallets.grant(r, "w", 3)
    refused = Engine(r).authorize(AuthorizeRequest("live-1", "w", "c1", 5, path="replay:1"))
    assert refused.status == 402


def test_a_pin_keeps_the_answer_of_a_call_that_ran_before_redis_went_away(r):
    """The plugin keeps answers ~10 s; a spooled request whose call did run (a stalled
    Redis ran it late) is pinned at once, so its replay, however late, charges nothing."""
    wallets.grant(r, "w", 100)
    ran = Engine(r, answer_ttl_ms=10_500).authorize(AuthorizeRequest("req-1", "w", "c1", 5))
    assert ran.status == 200
    answer = WalletKeys("w").request("req-1")
    assert r.pttl(answer) <= 10_500
    keys, args = replay_call(spooled("req-1", sent=True), 5, mode="pin")
    pinned = Decision.from_reply(run_script(r, AUTHORIZE, keys, args))
    assert (pinned.reason, pinned.replayed) == ("pinned", True)
    assert r.pttl(answer) > 86_400_000
    assert replay(r, spooled("req-1", sent=True)).replayed
    assert (wallets.balance(r, "w").balance, len(events(r, "w"))) == (95, 1)


def pin(r: redis.Redis, request: SpooledRequest) -> Decision:
    keys, args = replay_call(request, request.cost, mode="pin")
    return Decision.from_reply(run_script(r, AUTHORIZE, keys, args))


def test_a_pin_of_a_call_that_never_ran_keeps_nothing_and_charges_nothing(r):
    wallets.grant(r, "w", 100)
    for other in ("req-10", "req-", "REQ-1"):  # in the ledger, but not this request
        Engine(r).authorize(AuthorizeRequest(other, "w", "c1", 1))
    pinned = pin(r, spooled("req-1", sent=True))
    assert (pinned.reason, pinned.replayed) == ("pinned", False)
    assert r.exists(WalletKeys("w").request("req-1")) == 0
    assert (wallets.balance(r, "w").balance, len(events(r, "w"))) == (97, 3)


@pytest.mark.parametrize("wallet", ["w", "team/alice"])
def test_a_pin_after_an_outage_longer_than_the_answers_ttl_finds_the_charge_in_the_ledger(
        r, wallet):
    """Redis went away with the call run and its reply lost, and stayed away past the ~10 s
    the plugin keeps answers: the pin finds the charge in the wallet's ledger (a member's
    own ledger, though its parent paid) and keeps an answer, so the replay charges nothing."""
    wallets.grant(r, "team", 100)
    wallets.grant(r, "w", 100)
    ran = Engine(r, answer_ttl_ms=1).authorize(AuthorizeRequest("req-1", wallet, "c1", 5))
    assert ran.status == 200
    answer = WalletKeys(wallet).request("req-1")
    wait_until(lambda: not r.exists(answer), timeout_s=5, interval_s=0.005)
    pinned = pin(r, spooled("req-1", wallet=wallet, sent=True))
    assert (pinned.reason, pinned.replayed) == ("pinned", True)
    assert r.pttl(answer) > 86_400_000
    assert replay(r, spooled("req-1", wallet=wallet, sent=True)).replayed
    payers = wallets.balance(r, "w").balance + wallets.balance(r, "team").balance
    assert (payers, len(events(r, wallet))) == (195, 1)


def test_a_replay_of_a_call_that_ran_after_its_pin_finds_it_in_the_ledger(r):
    """A stalled Redis may run a queued call after the pin looked (nothing then), and its
    answer may expire before the replay comes: the replay looks in the ledger again. A
    request whose call never left (not `sent`) is charged without looking."""
    wallets.grant(r, "w", 100)
    assert not pin(r, spooled("req-1", sent=True)).replayed
    Engine(r, answer_ttl_ms=1).authorize(AuthorizeRequest("req-1", "w", "c1", 5))
    wait_until(lambda: not r.exists(WalletKeys("w").request("req-1")), timeout_s=5,
               interval_s=0.005)
    assert replay(r, spooled("req-1", sent=True)).replayed
    assert replay(r, spooled("req-2", sent=True)).replayed is False
    assert (wallets.balance(r, "w").balance, len(events(r, "w"))) == (90, 2)


def test_a_pin_finds_a_hold_in_the_ledger_too(r):
    """A credits-metered call holds rather than charges: its replay must not charge again
    (the hold is settled at its estimate when it lapses, lapsed_holds.py)."""
    wallets.grant(r, "w", 100)
    held = Engine(r, answer_ttl_ms=1).authorize(
        AuthorizeRequest("req-1", "w", "c1", 5, hold=True))
    assert held.status == 200
    wait_until(lambda: not r.exists(WalletKeys("w").request("req-1")), timeout_s=5,
               interval_s=0.005)
    assert pin(r, spooled("req-1", sent=True, metered=True)).replayed
    assert replay(r, spooled("req-1", sent=True, metered=True)).replayed
    assert wallets.balance(r, "w").balance == 95


def test_a_pin_reads_the_ledger_only_from_ten_minutes_before_the_request(r):
    """A ledger entry of that id from long before the request was served is not its call
    (ids are unique; this bounds what the pin reads)."""
    wallets.grant(r, "w", 100)
    Engine(r, answer_ttl_ms=1).authorize(AuthorizeRequest("req-1", "w", "c1", 5))
    wait_until(lambda: not r.exists(WalletKeys("w").request("req-1")), timeout_s=5,
               interval_s=0.005)
    later = replace(spooled("req-1", sent=True), at_ms=time.time_ns() // 1_000_000 + 700_000)
    assert not pin(r, later).replayed


def test_a_replay_renews_the_wallets_plan_before_charging(r):
    from kong_credits import plans

    plans.set_plan(r, "planned", allowance=50, every="day")
    r.hset(WalletKeys("planned").state, "plan_end", 0)  # the period ended: due for renewal
    decision = replay(r, spooled("req-1", wallet="planned", cost=5))
    assert (decision.status, decision.reason) == (200, "")
    view = wallets.balance(r, "planned")
    assert (view.balance, view.overdraft) == (45, 0)


LONGEST_ID = ("A-z_9." * 22)[:128]
ODD_WALLET = "Ünïcødé:team/ßub 💳 a|b;c=d"  # a member wallet: separators, spaces, emoji


@pytest.mark.parametrize("wallet", ["w", ODD_WALLET])
def test_a_pin_and_replay_at_the_largest_values(r, wallet):
    """The longest request id, a wallet name with Unicode and separators, the latest time a
    spool line may carry, a cost of MAX_AMOUNT and details near 2^53: exact, charged once."""
    wallets.grant(r, "w", MAX_AMOUNT)
    wallets.grant(r, ODD_WALLET.split("/")[0], MAX_AMOUNT)
    Engine(r, answer_ttl_ms=1).authorize(AuthorizeRequest(LONGEST_ID, wallet, "c1", MAX_AMOUNT))
    wait_until(lambda: not r.exists(WalletKeys(wallet).request(LONGEST_ID)), timeout_s=5,
               interval_s=0.005)
    assert pin(r, spooled(LONGEST_ID, wallet=wallet, cost=MAX_AMOUNT, sent=True)).replayed
    assert replay(r, spooled(LONGEST_ID, wallet=wallet, cost=MAX_AMOUNT, sent=True)).replayed
    latest = replace(spooled("late", wallet=wallet, cost=MAX_AMOUNT, sent=True, metered=True),
                     at_ms=MAX_EXPIRY_MS)
    assert not pin(r, latest).replayed
    details = {"response_bytes": 2**53 - 1, "proxy_ms": MAX_AMOUNT}
    keys, args = replay_call(latest, MAX_AMOUNT,
                             price=SettledPrice("late", MAX_AMOUNT, status=599, details=details))
    decision = Decision.from_reply(run_script(r, AUTHORIZE, keys, args))
    assert (decision.status, decision.reason) == (200, "overdraft")
    assert wallets.balance(r, wallet).overdraft == MAX_AMOUNT
    found = {e["event_id"]: e for e in events(r, wallet)}
    assert set(found) == {LONGEST_ID, "late"}
    assert (found["late"]["timestamp"], found["late"]["cost"], found["late"]["reserved"],
            found["late"]["status"], found["late"]["response_bytes"],
            found["late"]["proxy_ms"]) == (str(MAX_EXPIRY_MS), str(MAX_AMOUNT),
                                           str(MAX_AMOUNT), "599", str(2**53 - 1),
                                           str(MAX_AMOUNT))
