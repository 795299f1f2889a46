"""Plans: recurring allowances materialised lazily by the scripts, with a controlled clock."""

from __future__ import annotations

import random
import threading

import pytest
import redis
from plan_clock import alerts, charge, iso, ledger_types, ms

from kong_credits import plans, wallets
from kong_credits.engine import AuthorizeRequest, Engine
from kong_credits.errors import InvalidInput
from kong_credits.keys import WalletKeys
from kong_credits.money import MAX_BALANCE


@pytest.fixture
def engine(r: redis.Redis) -> Engine:
    return Engine(r)


class TestPeriods:
    @pytest.mark.parametrize(("anchor", "now", "start", "end"), [
        # month ends clamp to the last day, from the anchor's day every month (not chained)
        ("2027-01-31T00:00:00Z", "2027-02-15T00:00:00Z", "2027-01-31T00:00:00Z",
         "2027-02-28T00:00:00Z"),
        ("2027-01-31T00:00:00Z", "2027-03-01T00:00:00Z", "2027-02-28T00:00:00Z",
         "2027-03-31T00:00:00Z"),
        ("2027-01-31T00:00:00Z", "2028-02-29T00:00:00Z", "2028-02-29T00:00:00Z",
         "2028-03-31T00:00:00Z"),  # leap year
        ("2027-01-31T00:00:00Z", "2028-02-28T23:59:59.999Z", "2028-01-31T00:00:00Z",
         "2028-02-29T00:00:00Z"),
        ("2100-01-29T06:00:00Z", "2100-02-28T12:00:00Z", "2100-02-28T06:00:00Z",
         "2100-03-29T06:00:00Z"),  # 2100 is not a leap year
        ("2000-01-30T00:00:00Z", "2000-02-29T01:00:00Z", "2000-02-29T00:00:00Z",
         "2000-03-30T00:00:00Z"),  # 2000 is
        ("1970-01-01T00:00:00Z", "2027-12-31T23:59:59.999Z", "2027-12-01T00:00:00Z",
         "2028-01-01T00:00:00Z"),
        ("2030-05-15T10:30:00Z", "2027-03-15T10:29:59.999Z", "2027-02-15T10:30:00Z",
         "2027-03-15T10:30:00Z"),  # an anchor in the future aligns too
    ])
    def test_month_periods_follow_the_anchors_day_clamped_to_short_months(
            self, r, anchor, now, start, end):
        assert plans.period_of("month", ms(anchor), ms(now)) == (ms(start), ms(end))
        plans.set_plan(r, "acme", allowance=10, every="month", anchor=anchor)
        plans.renew(r, "acme", now_ms=ms(now))
        view = plans.show_plan(r, "acme", now_ms=ms(now))
        assert (view.period["start"], view.period["end"]) == (iso(ms(start)), iso(ms(end)))

    def test_lua_periods_agree_with_python_calendar_arithmetic(self, r):
        rng = random.Random(17)
        for n in range(150):
            every = rng.choice(["day", "week", "month"])
            anchor = rng.randrange(ms("1971-01-01T00:00:00Z"), ms("2400-01-01T00:00:00Z"))
            now = rng.randrange(ms("1971-01-01T00:00:00Z"), ms("2400-01-01T00:00:00Z"))
            wallet = f"w{n}"
            plans.set_plan(r, wallet, allowance=1, every=every, anchor=iso(anchor))
            plans.renew(r, wallet, now_ms=now)
            state = plans.read_state(r, wallet)
            expected = plans.period_of(every, anchor, now)
            start = plans.last_renewal(state)["start"]
            assert (start, int(state["plan_end"])) == expected, (
                every, iso(anchor), iso(now))
            assert expected[0] <= now < expected[1]

    def test_default_alignment_is_midnight_monday_and_the_first_utc(self, r):
        for every, now, start in [("day", "2027-06-09T13:00:00Z", "2027-06-09T00:00:00Z"),
                                  ("week", "2027-06-09T13:00:00Z", "2027-06-07T00:00:00Z"),
                                  ("month", "2027-06-09T13:00:00Z", "2027-06-01T00:00:00Z")]:
            plans.set_plan(r, every, allowance=5, every=every)
            assert plans.show_plan(r, every, now_ms=ms(now)).period["start"] == iso(ms(start))


class TestAllowance:
    def test_first_request_of_each_period_grants_the_allowance_once(self, r, engine):
        plans.set_plan(r, "acme", allowance=100, every="day", anchor="2027-01-01T00:00:00Z")
        assert charge(engine, "acme", 10, "2027-03-05T08:00:00Z").balance == 90
        assert charge(engine, "acme", 10, "2027-03-05T23:59:59.999Z").balance == 80
        # the period's end is the next one's start: a new allowance, the old one expired
        assert charge(engine, "acme", 10, "2027-03-06T00:00:00Z").balance == 90
        entries = ledger_types(r, "acme")
        assert entries.count(("allowance", 100)) == 2
        assert ("expire", -80) in entries
        renewed = alerts(r, "acme", "allowance_renewed")
        assert [(a["allowance"], a["rollover"], a["period_start"]) for a in renewed] == [
            ("100", "0", str(ms("2027-03-05T00:00:00Z"))),
            ("100", "0", str(ms("2027-03-06T00:00:00Z")))]

    def test_a_balance_read_in_a_new_period_materialises_it(self, r):
        plans.set_plan(r, "acme", allowance=70, every="week")
        view = wallets.balance(r, "acme", now_ms=ms("2027-03-05T08:00:00Z"))
        assert view.balance == 70
        [allowance] = [g for g in view.grants if g.id.startswith("plan#")]
        assert (allowance.remaining, allowance.status, allowance.expires_at) == (
            70, "live", "2027-03-08T00:00:00Z")
        assert wallets.balance(r, "acme", now_ms=ms("2027-03-06T08:00:00Z")).balance == 70
        assert len(alerts(r, "acme", "allowance_renewed")) == 1

    def test_a_settle_in_a_new_period_materialises_it(self, r, engine):
        plans.set_plan(r, "acme", allowance=50, every="day")
        held = engine.authorize(AuthorizeRequest("h1", "acme", "c1", 20, hold=True),
                                now_ms=ms("2027-03-05T23:59:59Z"))
        assert held.admitted
        settled = engine.settle("h1", "acme", 5, now_ms=ms("2027-03-06T00:00:01Z"))
        # the refund went to a grant that expired meanwhile; the new day's 50 are there
        assert settled.balance == 50
        assert len(alerts(r, "acme", "allowance_renewed")) == 2

    def test_allowance_burns_before_purchased_credits(self, r, engine):
        wallets.grant(r, "acme", 1000, grant_id="bought")
        plans.set_plan(r, "acme", allowance=30, every="day")
        charge(engine, "acme", 40, "2027-03-05T08:00:00Z")
        view = wallets.balance(r, "acme", now_ms=ms("2027-03-05T09:00:00Z"))
        assert {g.id: g.remaining for g in view.grants if g.status != "expired"} == {
            "bought": 990, "plan#1": 0}

    def test_the_plans_grant_ids_cannot_be_taken_by_a_top_up(self, r):
        with pytest.raises(InvalidInput):
            wallets.grant(r, "acme", 10, grant_id="plan#1")

    def test_an_allowance_never_takes_a_wallet_past_the_largest_balance(self, r, engine):
        for n in range(4):
            wallets.grant(r, "rich", 10**15, grant_id=f"g{n}")
        wallets.grant(r, "rich", MAX_BALANCE - 4 * 10**15 - 10, grant_id="g4")
        plans.set_plan(r, "rich", allowance=10**15, every="day")
        view = wallets.balance(r, "rich", now_ms=ms("2027-03-05T08:00:00Z"))
        assert view.balance == MAX_BALANCE
        assert charge(engine, "rich", 1, "2027-03-05T08:00:01Z").admitted


class TestRollover:
    def test_unused_allowance_rolls_over_up_to_the_cap(self, r, engine):
        plans.set_plan(r, "acme", allowance=100, every="month", rollover_max=30)
        charge(engine, "acme", 50, "2027-01-10T00:00:00Z")  # 50 unused: 30 roll over
        assert charge(engine, "acme", 1, "2027-02-01T00:00:00Z").balance == 129
        charge(engine, "acme", 119, "2027-02-02T00:00:00Z")  # 10 left: all roll over
        assert charge(engine, "acme", 0, "2027-03-01T00:00:00Z").balance == 110
        renewed = alerts(r, "acme", "allowance_renewed")
        assert [a["rollover"] for a in renewed] == ["0", "30", "10"]

    def test_rolled_over_credits_burn_first_and_are_capped_again(self, r, engine):
        plans.set_plan(r, "acme", allowance=100, every="day", rollover_max=150)
        charge(engine, "acme", 0, "2027-01-01T01:00:00Z")  # 100 unused
        charge(engine, "acme", 10, "2027-01-02T01:00:00Z")  # rollover 100 + allowance 100
        view = wallets.balance(r, "acme", now_ms=ms("2027-01-02T02:00:00Z"))
        live = {g.id: g.remaining for g in view.grants if g.status == "live"}
        assert live == {"rollover#2": 90, "plan#2": 100}
        # 190 unused, at most 150 carried
        assert wallets.balance(r, "acme", now_ms=ms("2027-01-03T00:00:00Z")).balance == 250

    def test_no_rollover_by_default(self, r, engine):
        plans.set_plan(r, "acme", allowance=100, every="day")
        charge(engine, "acme", 1, "2027-01-01T01:00:00Z")
        assert charge(engine, "acme", 1, "2027-01-02T01:00:00Z").balance == 99

    def test_idle_periods_give_only_the_current_one_plus_the_last_used_rollover(
            self, r, engine):
        plans.set_plan(r, "acme", allowance=100, every="week", rollover_max=1000)
        charge(engine, "acme", 20, "2027-01-05T00:00:00Z")  # week of Jan 4: 80 unused
        decision = charge(engine, "acme", 0, "2027-02-10T00:00:00Z")  # five weeks later
        assert decision.balance == 180
        renewed = alerts(r, "acme", "allowance_renewed")
        assert [(a["allowance"], a["rollover"]) for a in renewed] == [("100", "0"),
                                                                      ("100", "80")]
        # the idle weeks' grants never existed; the old ones left the remaining hash
        remaining = r.hgetall(WalletKeys("acme").remaining)
        assert set(remaining) == {"plan#2", "rollover#2"}

    def test_changing_the_plan_applies_from_the_next_period(self, r, engine):
        plans.set_plan(r, "acme", allowance=100, every="month")
        charge(engine, "acme", 0, "2027-01-10T00:00:00Z")
        plans.set_plan(r, "acme", allowance=500, every="day")  # mid-month
        assert charge(engine, "acme", 0, "2027-01-20T00:00:00Z").balance == 100
        assert charge(engine, "acme", 0, "2027-02-01T05:00:00Z").balance == 500

    def test_off_stops_renewals_and_keeps_what_was_granted(self, r, engine):
        plans.set_plan(r, "acme", allowance=100, every="day")
        charge(engine, "acme", 10, "2027-01-01T01:00:00Z")
        assert plans.remove_plan(r, "acme").plan is None
        assert charge(engine, "acme", 10, "2027-01-01T02:00:00Z").balance == 80
        assert charge(engine, "acme", 10, "2027-01-02T02:00:00Z").status == 402
        # set again in the period already funded: not granted twice
        plans.set_plan(r, "acme", allowance=100, every="day")
        assert charge(engine, "acme", 0, "2027-01-02T03:00:00Z").balance == 100
        assert charge(engine, "acme", 0, "2027-01-02T04:00:00Z").balance == 100


def test_concurrent_first_requests_of_a_period_materialise_one_allowance(r, redis_url):
    plans.set_plan(r, "hot", allowance=1000, every="day")
    start = ms("2027-04-01T00:00:00Z")
    barrier = threading.Barrier(24)
    decisions = []

    def first_request(n: int) -> None:
        client = redis.Redis.from_url(redis_url)
        barrier.wait()
        for i in range(5):
            decisions.append(Engine(client).authorize(
                AuthorizeRequest(f"r{n}-{i}", "hot", "c1", 3), now_ms=start + i))
        client.close()

    threads = [threading.Thread(target=first_request, args=(n,)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(decisions) == 120 and all(d.admitted for d in decisions)
    assert len(alerts(r, "hot", "allowance_renewed")) == 1
    assert ledger_types(r, "hot").count(("allowance", 1000)) == 1
    assert wallets.balance(r, "hot", now_ms=start + 10).balance == 1000 - 360


class TestPlanInput:
    @pytest.mark.parametrize(("kwargs", "message"), [
        ({"allowance": 10}, "give both"),
        ({"allowance": 10, "every": "year"}, "every must be"),
        ({"allowance": 0, "every": "day"}, "allowance must be"),
        ({"allowance": 10**15 + 1, "every": "day"}, "allowance must be"),
        ({"allowance": "1.5", "every": "day"}, "allowance"),
        ({"allowance": True, "every": "day"}, "allowance"),
        ({"allowance": 10, "every": "day", "anchor": "2027-01-01T00:00:00"}, "timezone"),
        ({"allowance": 10, "every": "day", "anchor": "soon"}, "ISO 8601"),
        ({"allowance": 10, "every": "day", "anchor": "1969-12-31T00:00:00Z"}, "anchor"),
        ({"allowance": 10, "every": "day", "rollover_max": -1}, "rollover"),
        ({"allowance": 10, "every": "day", "priority": 10**9}, "priority"),
        ({"overage": "maybe"}, "overage must be"),
        ({"overage": "allow"}, "--overage-max"),
        ({"overage_max": 5}, "--overage allow"),
        ({"overage": "refuse", "overage_max": 5}, "--overage allow"),
    ])
    def test_bad_terms_are_refused_before_anything_is_written(self, r, kwargs, message):
        with pytest.raises(InvalidInput, match=message):
            plans.set_plan(r, "acme", **kwargs)
        assert r.hgetall(WalletKeys("acme").state) == {}


def test_a_default_anchor_follows_a_new_period_and_a_given_one_stays(r):
    plans.set_plan(r, "acme", allowance=5, every="day")
    assert plans.set_plan(r, "acme", every="week").plan.anchor == "1970-01-05T00:00:00Z"
    plans.set_plan(r, "acme", anchor="2027-01-31T09:00:00Z")
    view = plans.set_plan(r, "acme", every="month", allowance=7)
    assert (view.plan.anchor, view.plan.every, view.plan.allowance) == (
        "2027-01-31T09:00:00Z", "month", 7)
    assert plans.set_plan(r, "acme", anchor=None).plan.anchor == "1970-01-01T00:00:00Z"


def test_plans_run_on_redis_cluster_with_declared_keys_only(cluster):
    """Every key the plan code touches is among the script's KEYS, in the wallet's slot: the
    renewal, overage and alerts work on a cluster as on one node."""
    client = cluster.client()
    plans.set_plan(client, "team/ann", allowance=40, every="day", overage="allow",
                   overage_max=5)
    plans.set_plan(client, "team", allowance=100, every="day")
    engine = Engine(client)
    decision = charge(engine, "team/ann", 50, "2027-03-05T08:00:00Z")  # 40 own, 10 parent's
    assert decision.admitted
    assert charge(engine, "team/ann", 95, "2027-03-05T08:00:01Z").admitted  # 90 + 5 on credit
    assert wallets.balance(client, "team/ann", now_ms=ms("2027-03-06T00:00:00Z")).balance == 35
    assert len(alerts(client, "team", "allowance_renewed")) == 1
    client.close()
