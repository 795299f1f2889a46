"""Many clients hammer one wallet on real Redis: no overspend, no lost or doubled events."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import pytest
import redis

from kong_credits import wallets
from kong_credits.engine import AuthorizeRequest, Engine, RateLimit
from kong_credits.keys import WalletKeys

pytestmark = pytest.mark.integration

THREADS = 16


def hammer(redis_url: str, make_request, per_thread: int) -> list:
    """Run `per_thread` authorizations on each of THREADS threads, each with its own client."""
    decisions: list = []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def worker(n: int) -> None:
        client = redis.Redis.from_url(redis_url)
        engine = Engine(client)
        barrier.wait()
        mine = [(req, engine.authorize(req))
                for req in (make_request(n, i) for i in range(per_thread))]
        with lock:
            decisions.extend(mine)
        client.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return decisions


def wallet_events(r: redis.Redis, wallet: str) -> list[dict[str, str]]:
    return [f for _, f in r.xrange(WalletKeys(wallet).events) if f["wallet"] == wallet]


def test_concurrent_charges_never_overspend_and_record_each_admit_once(r, redis_url):
    granted, cost = 1000, 3
    wallets.grant(r, "hot", 600, grant_id="a", priority=1)
    wallets.grant(r, "hot", 400, grant_id="b")
    decisions = hammer(
        redis_url,
        lambda n, i: AuthorizeRequest(f"{n}-{i}-{uuid.uuid4().hex}", "hot", f"c{n}", cost),
        per_thread=40,
    )
    admitted = [req for req, d in decisions if d.admitted]
    refused = [d for _, d in decisions if not d.admitted]
    assert len(decisions) == THREADS * 40
    assert len(admitted) * cost <= granted
    assert len(admitted) == granted // cost  # everything affordable was sold
    assert all(d.status == 402 for d in refused)
    view = wallets.balance(r, "hot")
    assert view.balance == granted - len(admitted) * cost == 1
    events = wallet_events(r, "hot")
    ids = Counter(e["event_id"] for e in events)
    assert set(ids) == {req.request_id for req in admitted}
    assert max(ids.values()) == 1
    assert sum(int(e["cost"]) for e in events) == len(admitted) * cost
    assert view.refused_credits == len(refused)


def test_concurrent_retries_of_one_request_charge_once(r, redis_url):
    wallets.grant(r, "retry", 100)
    decisions = hammer(
        redis_url, lambda n, i: AuthorizeRequest(f"same-{i}", "retry", "c", 5), per_thread=5)
    assert all(d.admitted for _, d in decisions)
    assert wallets.balance(r, "retry").balance == 100 - 5 * 5
    assert len(wallet_events(r, "retry")) == 5


def test_concurrent_requests_never_exceed_the_rate_limit(r, redis_url):
    wallets.grant(r, "rl", 10_000)
    limits = (RateLimit(3600, 50), RateLimit(86400, 1000))
    decisions = hammer(
        redis_url,
        lambda n, i: AuthorizeRequest(f"{n}-{i}", "rl", "one-consumer", 2, limits=limits),
        per_thread=10,
    )
    admitted = [d for _, d in decisions if d.admitted]
    assert len(admitted) == 50
    assert all(d.status == 429 and d.retry_after_ms >= 1 for _, d in decisions if not d.admitted)
    assert wallets.balance(r, "rl").balance == 10_000 - 50 * 2
    assert len(wallet_events(r, "rl")) == 50


def test_concurrent_holds_and_settles_balance_exactly(r, redis_url):
    wallets.grant(r, "dyn", 500)

    def authorize_and_settle(n: int, i: int) -> AuthorizeRequest:
        return AuthorizeRequest(f"h{n}-{i}", "dyn", f"c{n}", 4, hold=True)

    decisions = hammer(redis_url, authorize_and_settle, per_thread=10)
    engine = Engine(r)
    admitted = [req for req, d in decisions if d.admitted]
    for k, req in enumerate(admitted):
        engine.settle(req.request_id, "dyn", k % 7)
    expected = 500 - sum(k % 7 for k in range(len(admitted)))
    assert wallets.balance(r, "dyn").balance == expected
    events = wallet_events(r, "dyn")
    assert len(events) == len(admitted) == len({e["event_id"] for e in events})


def test_members_hammering_a_team_wallet_never_overdraw_it_or_their_caps(r, redis_url):
    wallets.grant(r, "team", 500)
    for n in range(THREADS):
        wallets.set_budget(r, f"team/m{n}", member_daily_cap=40)
    decisions = hammer(
        redis_url,
        lambda n, i: AuthorizeRequest(f"{n}-{i}", f"team/m{n}", f"c{n}", 3), per_thread=20)
    admitted = Counter(req.wallet for req, d in decisions if d.admitted)
    assert all(count * 3 <= 40 for count in admitted.values())
    assert sum(admitted.values()) * 3 <= 500
    assert wallets.balance(r, "team").balance == 500 - sum(admitted.values()) * 3
    assert {d.reason for _, d in decisions if not d.admitted} <= {"member_cap:day", "credits"}


def test_concurrent_threshold_crossings_alert_exactly_once_each(r, redis_url):
    wallets.grant(r, "alerts", 16 * 25)
    hammer(redis_url, lambda n, i: AuthorizeRequest(f"{n}-{i}", "alerts", f"c{n}", 1),
           per_thread=25)
    fired = [f for _, f in r.xrange(WalletKeys("alerts").alerts) if f["wallet"] == "alerts"]
    assert sorted(int(a["threshold_pct"]) for a in fired) == [50, 75, 90, 100]
