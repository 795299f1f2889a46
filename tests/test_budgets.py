"""Budgets: parent wallets, member caps, spending caps, used-share alerts, abuse detection."""

from __future__ import annotations

import time

import pytest
import redis

from kong_credits import wallets
from kong_credits.engine import AbuseDetection, AuthorizeRequest, Engine
from kong_credits.keys import WalletKeys

NOW = int(time.time() * 1000)
MINUTE = 60_000


@pytest.fixture
def engine(r: redis.Redis) -> Engine:
    return Engine(r)


_ids = iter(range(10**9))


def charge(engine: Engine, wallet: str, cost: int, *, now_ms: int = 0, **kw):
    kw.setdefault("consumer", "c1")
    return engine.authorize(AuthorizeRequest(f"req-{next(_ids)}", wallet, cost=cost, **kw),
                            now_ms=now_ms)


def alerts(r: redis.Redis, wallet: str, kind: str | None = None) -> list[dict[str, str]]:
    found = [f for _, f in r.xrange(WalletKeys(wallet).alerts) if f["wallet"] == wallet]
    return [a for a in found if kind is None or a["type"] == kind]


class TestParentWallets:
    def test_member_spends_its_own_credits_first_then_the_parents(self, r, engine):
        wallets.grant(r, "team", 100)
        wallets.grant(r, "team/alice", 10)
        decision = charge(engine, "team/alice", 25)
        assert decision.admitted and decision.balance == 85  # what alice can still spend
        assert wallets.balance(r, "team/alice").balance == 0
        assert wallets.balance(r, "team").balance == 85
        [event] = [f for _, f in r.xrange(WalletKeys("team").events)]
        assert (event["wallet"], event["parent"], event["parent_cost"]) == (
            "team/alice", "team", "15")

    def test_member_without_credits_and_no_parent_credits_is_402(self, r, engine):
        wallets.grant(r, "team", 5)
        decision = charge(engine, "team/bob", 6)
        assert (decision.status, decision.reason, decision.balance) == (402, "credits", 5)
        assert wallets.balance(r, "team").balance == 5

    def test_member_daily_cap_limits_what_it_draws_from_the_parent(self, r, engine):
        wallets.grant(r, "team", 1000)
        wallets.set_budget(r, "team/dev", member_daily_cap=30)
        assert charge(engine, "team/dev", 20).admitted
        refused = charge(engine, "team/dev", 20)
        assert (refused.status, refused.reason, refused.balance) == (402, "member_cap:day", 10)
        assert charge(engine, "team/dev", 10).admitted
        # A new day, a new allowance.
        assert charge(engine, "team/dev", 20, now_ms=NOW + 86_400_000).admitted
        assert wallets.balance(r, "team").balance == 1000 - 50

    def test_own_credits_are_not_limited_by_the_member_cap(self, r, engine):
        wallets.grant(r, "team", 1000)
        wallets.grant(r, "team/dev", 50)
        wallets.set_budget(r, "team/dev", member_daily_cap=5)
        assert charge(engine, "team/dev", 50).admitted
        assert charge(engine, "team/dev", 5).admitted
        assert charge(engine, "team/dev", 1).reason == "member_cap:day"

    def test_settle_refund_returns_the_parents_share_first(self, r, engine):
        wallets.grant(r, "team", 100)
        wallets.grant(r, "team/alice", 10)
        held = engine.authorize(AuthorizeRequest("held", "team/alice", "c1", 30, hold=True))
        assert held.admitted and wallets.balance(r, "team").balance == 80
        engine.settle("held", "team/alice", 12)  # 18 back: the parent's 20 share first
        assert wallets.balance(r, "team").balance == 98
        assert wallets.balance(r, "team/alice").balance == 0


class TestSpendingCaps:
    def test_hard_daily_cap_refuses_with_402_and_names_the_cap(self, r, engine):
        wallets.grant(r, "acme", 1000)
        wallets.set_budget(r, "acme", daily_cap=50)
        assert charge(engine, "acme", 30).admitted
        refused = charge(engine, "acme", 30)
        assert (refused.status, refused.reason) == (402, "cap:day")
        assert charge(engine, "acme", 20).admitted  # exactly up to the cap
        assert wallets.balance(r, "acme").spent_today == 50
        assert charge(engine, "acme", 1).reason == "cap:day"
        assert charge(engine, "acme", 0).admitted  # free requests are never capped
        [cap_alert] = alerts(r, "acme", "spending_cap")
        assert (cap_alert["cap"], cap_alert["limit"], cap_alert["enforcement"]) == (
            "day", "50", "hard")
        assert wallets.balance(r, "acme").refused_budget == 2

    def test_monthly_cap_counts_across_days(self, r, engine):
        wallets.grant(r, "acme", 1000)
        wallets.set_budget(r, "acme", monthly_cap=40)
        day = 86_400_000
        month_start = _month_start(NOW)
        assert charge(engine, "acme", 25, now_ms=month_start + day).admitted
        assert charge(engine, "acme", 25, now_ms=month_start + 2 * day).reason == "cap:month"
        assert charge(engine, "acme", 25, now_ms=_month_start(month_start + 32 * day)).admitted

    def test_soft_cap_allows_and_alerts_once(self, r, engine):
        wallets.grant(r, "acme", 1000)
        wallets.set_budget(r, "acme", daily_cap=10, soft=True)
        assert all(charge(engine, "acme", 4).admitted for _ in range(6))
        [cap_alert] = alerts(r, "acme", "spending_cap")
        assert cap_alert["enforcement"] == "soft"

    def test_parent_cap_applies_to_what_members_draw(self, r, engine):
        wallets.grant(r, "team", 1000)
        wallets.set_budget(r, "team", daily_cap=15)
        assert charge(engine, "team/a", 10).admitted
        assert charge(engine, "team/b", 10).reason == "parent_cap:day"

    def test_bad_budget_input_is_refused(self, r):
        with pytest.raises(ValueError, match="member caps"):
            wallets.set_budget(r, "solo", member_daily_cap=5)
        with pytest.raises(ValueError, match="between 1 and"):
            wallets.set_budget(r, "solo", daily_cap=0)
        with pytest.raises(ValueError, match="percentages"):
            wallets.set_budget(r, "solo", alert_thresholds=(0, 150))
        assert r.dbsize() == 0


def _month_start(ms: int) -> int:
    t = time.gmtime(ms / 1000)
    return int(time.mktime((t.tm_year, t.tm_mon, 1, 0, 0, 0, 0, 0, 0)) - time.timezone) * 1000


class TestThresholdAlerts:
    def test_one_alert_per_threshold_crossed_even_several_in_one_request(self, r, engine):
        wallets.grant(r, "acme", 100)
        charge(engine, "acme", 40)
        assert alerts(r, "acme") == []
        charge(engine, "acme", 51)  # 91% used: crosses 50, 75 and 90 at once
        assert [a["threshold_pct"] for a in alerts(r, "acme", "balance_threshold")] == [
            "50", "75", "90"]
        charge(engine, "acme", 5)
        charge(engine, "acme", 4)  # 100%
        assert [a["threshold_pct"] for a in alerts(r, "acme")] == ["50", "75", "90", "100"]
        assert len({a["alert_id"] for a in alerts(r, "acme")}) == 4

    def test_top_up_rearms_the_thresholds_above_the_new_share(self, r, engine):
        wallets.grant(r, "acme", 100)
        charge(engine, "acme", 80)  # 50, 75
        wallets.grant(r, "acme", 100)  # 80 of 200 used: 40%
        charge(engine, "acme", 30)  # 110 of 200: 55% -> 50 again
        assert [a["threshold_pct"] for a in alerts(r, "acme")] == ["50", "75", "50"]

    def test_custom_thresholds(self, r, engine):
        wallets.grant(r, "acme", 100)
        wallets.set_budget(r, "acme", alert_thresholds=(20,))
        charge(engine, "acme", 30)
        charge(engine, "acme", 69)
        assert [a["threshold_pct"] for a in alerts(r, "acme")] == ["20"]


class TestAbuseDetection:
    ABUSE = AbuseDetection(factor=4, warmup_minutes=5, min_rate=20, throttle_per_minute=3)

    def steady(self, engine, minutes: int, per_minute: int, start: int) -> None:
        for m in range(minutes):
            for i in range(per_minute):
                assert charge(engine, "acme", 1, abuse=self.ABUSE,
                              now_ms=start + m * MINUTE + i * 100).admitted

    def test_no_baseline_no_alarm(self, r, engine):
        wallets.grant(r, "acme", 100_000)
        for i in range(200):  # a heavy first minute: nothing to compare with yet
            assert charge(engine, "acme", 5, abuse=self.ABUSE, now_ms=NOW + i).admitted
        assert alerts(r, "acme", "abuse") == []

    def test_spike_alerts_once_throttles_then_clears(self, r, engine):
        wallets.grant(r, "acme", 100_000)
        start = (NOW // MINUTE) * MINUTE
        self.steady(engine, minutes=6, per_minute=5, start=start)
        assert alerts(r, "acme", "abuse") == []
        spike = start + 6 * MINUTE
        statuses = [charge(engine, "acme", 1, abuse=self.ABUSE, now_ms=spike + i).status
                    for i in range(40)]
        [alarm] = alerts(r, "acme", "abuse")
        assert float(alarm["baseline_per_minute"]) < 6 and int(alarm["rate_per_minute"]) > 20
        assert wallets.balance(r, "acme").abuse_suspected
        assert statuses[:21].count(200) == 21  # alarm at 21 > 4 x 5 credits in the minute
        assert statuses[21:24] == [200] * 3 and set(statuses[24:]) == {429}  # throttle: 3/min
        throttled = charge(engine, "acme", 1, abuse=self.ABUSE, now_ms=spike + 100)
        assert throttled.reason == "abuse_throttle"
        # A quiet minute later, the rate is back under the threshold: cleared.
        after = spike + 2 * MINUTE
        assert charge(engine, "acme", 1, abuse=self.ABUSE, now_ms=after).admitted
        assert len(alerts(r, "acme", "abuse_cleared")) == 1
        assert not wallets.balance(r, "acme").abuse_suspected

    def test_alert_only_without_throttle(self, r, engine):
        wallets.grant(r, "acme", 100_000)
        start = (NOW // MINUTE) * MINUTE
        abuse = AbuseDetection(factor=4, warmup_minutes=2, min_rate=10)
        for m in range(3):
            charge(engine, "acme", 2, abuse=abuse, now_ms=start + m * MINUTE)
        assert all(charge(engine, "acme", 1, abuse=abuse, now_ms=start + 3 * MINUTE + i).admitted
                   for i in range(50))
        assert len(alerts(r, "acme", "abuse")) == 1


def test_balance_projects_when_the_money_runs_out(r, engine):
    wallets.grant(r, "acme", 1000)
    start = (int(time.time() * 1000) // MINUTE - 3) * MINUTE
    for m in range(3):
        for i in range(10):
            charge(engine, "acme", 2, now_ms=start + m * MINUTE + i)
    view = wallets.balance(r, "acme")
    assert view.burn_rate_per_minute and 5 < view.burn_rate_per_minute <= 20
    assert view.seconds_to_empty == int(view.balance / view.burn_rate_per_minute * 60)
    assert view.projected_empty_at.endswith("Z")
    assert wallets.balance(r, "never-used").burn_rate_per_minute is None
