"""Hybrid overage, low_balance and projected_overrun alerts, and the `plan` command."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from plan_clock import alerts, charge, ledger_types, ms

from kong_credits import plans, wallets
from kong_credits.cli import main
from kong_credits.engine import AuthorizeRequest, Engine
from kong_credits.errors import InvalidInput
from kong_credits.keys import SHARDS_KEY, WalletKeys

MINUTE = 60_000


@pytest.fixture
def engine(r: redis.Redis) -> Engine:
    return Engine(r)


def events(r: redis.Redis, wallet: str) -> list[dict[str, str]]:
    return [f for _, f in r.xrange(WalletKeys(wallet).events) if f["wallet"] == wallet]


class TestOverage:
    def test_refuse_is_the_default(self, r, engine):
        plans.set_plan(r, "acme", allowance=10, every="month")
        assert charge(engine, "acme", 10, "2027-01-05T00:00:00Z").admitted
        refused = charge(engine, "acme", 1, "2027-01-05T00:00:01Z")
        assert (refused.status, refused.reason) == (402, "credits")

    def test_allow_serves_on_credit_up_to_the_limit_per_period(self, r, engine):
        plans.set_plan(r, "acme", allowance=10, every="month", overage="allow", overage_max=25)
        assert charge(engine, "acme", 8, "2027-01-05T00:00:00Z").admitted
        # 2 from the allowance, 10 on credit
        over = charge(engine, "acme", 12, "2027-01-05T00:00:01Z")
        assert (over.status, over.balance) == (200, -10)
        assert charge(engine, "acme", 15, "2027-01-05T00:00:02Z").admitted  # 25 on credit
        refused = charge(engine, "acme", 1, "2027-01-05T00:00:03Z")
        assert (refused.status, refused.reason) == (402, "credits")
        assert [e.get("overage") for e in events(r, "acme")] == [None, "10", "15"]
        assert plans.show_plan(r, "acme", now_ms=ms("2027-01-06T00:00:00Z")).overage == (
            plans.Overage("allow", 25, 25))
        # the next period's allowance repays the overdraft first; overage counts afresh
        view = wallets.balance(r, "acme", now_ms=ms("2027-02-01T00:00:00Z"))
        assert (view.balance, view.overdraft) == (-15, 15)
        assert charge(engine, "acme", 25, "2027-02-01T00:00:01Z").admitted
        assert ("overage", -10) in ledger_types(r, "acme")

    def test_a_request_the_overage_left_cannot_hold_whole_is_refused(self, r, engine):
        plans.set_plan(r, "acme", overage="allow", overage_max=5)
        wallets.grant(r, "acme", 3)
        refused = charge(engine, "acme", 9, "2027-01-05T00:00:00Z")  # 6 short > 5
        assert (refused.status, refused.reason) == (402, "credits")
        assert charge(engine, "acme", 8, "2027-01-05T00:00:01Z").admitted  # 5 short
        # without a plan the period is the calendar month
        assert charge(engine, "acme", 5, "2027-02-01T00:00:00Z").admitted

    def test_hard_caps_still_apply(self, r, engine):
        plans.set_plan(r, "acme", allowance=10, every="month", overage="allow",
                       overage_max=1000)
        wallets.set_budget(r, "acme", daily_cap=30)
        assert charge(engine, "acme", 25, "2027-01-05T00:00:00Z").admitted
        refused = charge(engine, "acme", 10, "2027-01-05T00:00:01Z")
        assert (refused.status, refused.reason) == (402, "cap:day")
        assert wallets.balance(r, "acme", now_ms=ms("2027-01-05T00:00:02Z")).spent_today == 25

    def test_a_member_uses_its_parent_before_its_overage(self, r, engine):
        wallets.grant(r, "team", 5)
        plans.set_plan(r, "team/ann", overage="allow", overage_max=100)
        decision = charge(engine, "team/ann", 8, "2027-01-05T00:00:00Z")
        assert decision.admitted
        [event] = events(r, "team/ann")
        assert (event["parent_cost"], event["overage"]) == ("5", "3")

    def test_a_settle_below_the_hold_gives_the_overage_back_first(self, r, engine):
        plans.set_plan(r, "acme", overage="allow", overage_max=100)
        wallets.grant(r, "acme", 4)
        now = ms("2027-01-05T00:00:00Z")
        held = engine.authorize(AuthorizeRequest("h", "acme", "c1", 10, hold=True), now_ms=now)
        assert (held.status, held.balance) == (200, -6)
        settled = engine.settle("h", "acme", 7, now_ms=now + 1)
        assert settled.balance == -3
        [event] = events(r, "acme")
        assert (event["cost"], event["overage"]) == ("7", "3")
        assert plans.show_plan(r, "acme", now_ms=now + 2).overage.used == 3

    def test_unpaid_settle_extra_counts_as_overage(self, r, engine):
        plans.set_plan(r, "acme", overage="allow", overage_max=100)
        wallets.grant(r, "acme", 10)
        now = ms("2027-01-05T00:00:00Z")
        engine.authorize(AuthorizeRequest("h", "acme", "c1", 10, hold=True), now_ms=now)
        assert engine.settle("h", "acme", 14, now_ms=now + 1).unpaid == 4
        [event] = events(r, "acme")
        assert event["overage"] == "4"
        assert plans.show_plan(r, "acme", now_ms=now + 2).overage.used == 4


class TestLowBalance:
    def test_alerts_once_per_crossing_and_a_top_up_rearms_it(self, r, engine):
        wallets.grant(r, "acme", 100)
        plans.set_low_balance(r, "acme", 50)
        charge(engine, "acme", 30, "2027-01-05T00:00:00Z")
        assert alerts(r, "acme", "low_balance") == []
        charge(engine, "acme", 30, "2027-01-05T00:00:01Z")  # 40 < 50
        charge(engine, "acme", 30, "2027-01-05T00:00:02Z")
        [alert] = alerts(r, "acme", "low_balance")
        assert (alert["balance"], alert["threshold"]) == ("40", "50")
        wallets.grant(r, "acme", 100)  # 110: re-armed
        charge(engine, "acme", 5, "2027-01-05T00:00:03Z")
        assert len(alerts(r, "acme", "low_balance")) == 1
        charge(engine, "acme", 60, "2027-01-05T00:00:04Z")  # 45 < 50 again
        assert [a["balance"] for a in alerts(r, "acme", "low_balance")] == ["40", "45"]

    def test_a_top_up_that_stays_below_does_not_rearm(self, r, engine):
        wallets.grant(r, "acme", 60)
        plans.set_low_balance(r, "acme", 50)
        charge(engine, "acme", 20, "2027-01-05T00:00:00Z")
        wallets.grant(r, "acme", 5)  # 45: still below
        charge(engine, "acme", 1, "2027-01-05T00:00:01Z")
        assert len(alerts(r, "acme", "low_balance")) == 1

    def test_a_renewal_rearms_it(self, r, engine):
        plans.set_plan(r, "acme", allowance=100, every="day")
        plans.set_low_balance(r, "acme", 10)
        charge(engine, "acme", 95, "2027-01-05T00:00:00Z")
        charge(engine, "acme", 95, "2027-01-06T00:00:00Z")
        assert len(alerts(r, "acme", "low_balance")) == 2


class TestProjectedOverrun:
    def burn(self, engine, wallet, per_minute, minutes, start):
        for minute in range(minutes):
            charge(engine, wallet, per_minute, start + minute * MINUTE)

    def test_alerts_when_the_burn_rate_empties_the_wallet_before_the_period_ends(
            self, r, engine):
        plans.set_plan(r, "acme", allowance=100_000, every="month")
        start = ms("2027-01-20T22:00:00Z")
        self.burn(engine, "acme", 10, 3, start)  # 10/min: 11 days left need ~158k
        [alert] = alerts(r, "acme", "projected_overrun")
        assert alert["reason"] == "balance"
        assert alert["period_end"] == str(ms("2027-02-01T00:00:00Z"))
        assert alert["burn_rate_per_minute"] == "10.00"
        self.burn(engine, "acme", 10, 110, start + 3 * MINUTE)  # at most once a day
        assert len(alerts(r, "acme", "projected_overrun")) == 1
        self.burn(engine, "acme", 10, 10, start + 113 * MINUTE)  # on into the next day
        assert len(alerts(r, "acme", "projected_overrun")) == 2

    def test_no_alert_when_the_balance_lasts(self, r, engine):
        plans.set_plan(r, "acme", allowance=1_000_000, every="month")
        self.burn(engine, "acme", 10, 5, ms("2027-01-20T00:00:00Z"))
        assert alerts(r, "acme", "projected_overrun") == []

    def test_alerts_when_the_rate_passes_the_monthly_cap(self, r, engine):
        wallets.grant(r, "acme", 10**9)
        wallets.set_budget(r, "acme", monthly_cap=100_000)
        self.burn(engine, "acme", 10, 3, ms("2027-01-20T00:00:00Z"))
        [alert] = alerts(r, "acme", "projected_overrun")
        assert alert["reason"] == "cap:month"


class TestPlanCommand:
    @pytest.fixture
    def cli(self, r, redis_url):
        runner = CliRunner()
        return lambda *args: runner.invoke(main, [*args],
                                           env={"KONG_CREDITS_REDIS_URL": redis_url})

    def test_set_show_json_and_off(self, cli):
        made = cli("plan", "acme", "--allowance", "1000", "--every", "month", "--anchor",
                   "2027-01-31T00:00:00Z", "--rollover-max", "200", "--overage", "allow",
                   "--overage-max", "50")
        assert made.exit_code == 0, made.output
        shown = json.loads(cli("plan", "acme", "--json").output)
        assert shown["plan"] == {"allowance": 1000, "every": "month",
                                 "anchor": "2027-01-31T00:00:00Z", "rollover_max": 200,
                                 "priority": 50}
        assert shown["overage"] == {"mode": "allow", "max": 50, "used": 0}
        assert shown["period"]["allowance"] == 1000  # the read materialised the period
        balance = json.loads(cli("balance", "acme", "--json").output)
        assert balance["balance"] == 1000
        assert cli("plan", "acme", "--off").exit_code == 0
        assert json.loads(cli("plan", "acme", "--json").output)["plan"] is None
        assert "no plan" in cli("plan", "acme").output

    @pytest.mark.parametrize("args", [
        ["--allowance", "10"], ["--allowance", "1.5", "--every", "day"],
        ["--allowance", "10", "--every", "fortnight"],
        ["--allowance", "10", "--every", "day", "--anchor", "yesterday"],
        ["--allowance", "10", "--every", "day", "--rollover-max", "-1"],
        ["--overage", "allow"], ["--off", "--allowance", "10"],
    ])
    def test_bad_input_exits_2_and_writes_nothing(self, cli, r, args):
        result = cli("plan", "acme", *args)
        assert result.exit_code == 2, result.output
        assert set(r.keys()) <= {SHARDS_KEY}

    def test_budget_low_balance(self, cli):
        shown = json.loads(cli("budget", "acme", "--low-balance", "25", "--json").output)
        assert shown["low_balance"] == 25
        assert "below 25 credits" in cli("budget", "acme").output
        off = json.loads(cli("budget", "acme", "--low-balance", "off", "--json").output)
        assert off["low_balance"] is None
        assert cli("budget", "acme", "--low-balance", "0").exit_code == 2


class TestPlansInThePricingFile:
    def test_plan_from_the_committed_pricing_file(self, r, redis_url):
        pricing = Path(__file__).resolve().parents[1] / "config" / "pricing.yaml"
        assert set(plans.load_plans(pricing)) == {"erin"}
        result = CliRunner().invoke(main, ["plan", "erin", "--from", str(pricing), "--json"],
                                    env={"KONG_CREDITS_REDIS_URL": redis_url})
        assert result.exit_code == 0, result.output
        view = json.loads(result.output)
        assert (view["plan"]["allowance"], view["plan"]["every"]) == (30, "month")
        assert view["overage"]["mode"] == "allow"

    @pytest.mark.parametrize(("text", "message"), [
        ("plans: [erin]", "must map wallet names"),
        ("plans: {erin: {allowance: 5, every: day, bonus: 1}}", "unknown keys ['bonus']"),
        ("plans: {erin: {allowance: 5, every: hour}}", "every must be"),
        ("plans: {}", "no plan for wallet 'erin'"),
    ])
    def test_bad_plans_sections_are_clear_errors(self, r, tmp_path, text, message):
        path = tmp_path / "pricing.yaml"
        path.write_text(text)
        with pytest.raises(InvalidInput, match=re.escape(message)):
            plans.apply_plan(r, "erin", path)
        assert r.hgetall(WalletKeys("erin").state) == {}


def test_concurrent_requests_never_pass_the_overage_limit(r, redis_url):
    plans.set_plan(r, "busy", allowance=100, every="month", overage="allow", overage_max=50)
    now = ms("2027-05-10T12:00:00Z")
    barrier = threading.Barrier(24)
    decisions = []

    def hammer(n: int) -> None:
        client = redis.Redis.from_url(redis_url)
        barrier.wait()
        for i in range(10):
            decisions.append(Engine(client).authorize(
                AuthorizeRequest(f"o{n}-{i}", "busy", "c1", 1), now_ms=now + i))
        client.close()

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sum(d.admitted for d in decisions) == 150  # 100 included + 50 on credit
    assert {d.reason for d in decisions if not d.admitted} == {"credits"}
    admitted = events(r, "busy")
    assert len(admitted) == 150
    assert sum(int(e.get("overage", 0)) for e in admitted) == 50
    view = wallets.balance(r, "busy", now_ms=now + 20)
    assert (view.balance, view.overdraft) == (-50, 50)


def test_the_new_alerts_reach_webhooks_with_integer_fields(r, engine):
    from kong_credits.forwarder.alerts import Alert

    plans.set_plan(r, "acme", allowance=100, every="day")
    plans.set_low_balance(r, "acme", 50)
    charge(engine, "acme", 60, "2027-01-05T00:00:00Z")
    [renewed] = alerts(r, "acme", "allowance_renewed")
    [low] = alerts(r, "acme", "low_balance")
    body = json.loads(Alert.from_fields(renewed).body())
    assert body["data"] == {"balance": 100, "allowance": 100, "rollover": 0,
                            "period_start": ms("2027-01-05T00:00:00Z"),
                            "period_end": ms("2027-01-06T00:00:00Z")}
    assert json.loads(Alert.from_fields(low).body())["data"] == {"balance": 40, "threshold": 50}
