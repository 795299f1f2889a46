"""lapsed_holds.py: a hold whose settle never came is settled at its estimate, once."""

from __future__ import annotations

import threading
import time

import redis
from billing_recorder import BillingRecorder
from event_source import forward

from kong_credits import wallets
from kong_credits.engine import AuthorizeRequest, Engine
from kong_credits.forwarder.lapsed_holds import Swept, sweep_lapsed_holds
from kong_credits.keys import SHARDS, WalletKeys, holds_index

HOLD_MS = 50


def held(engine: Engine, request_id: str, cost: int = 30, wallet: str = "acme") -> None:
    decision = engine.authorize(AuthorizeRequest(request_id, wallet, "alice", cost, hold=True,
                                                 method="POST", path="/gen"))
    assert decision.admitted, decision


def events(r: redis.Redis, wallet: str = "acme") -> list[dict[str, str]]:
    return [f for _, f in r.xrange(WalletKeys(wallet).events) if f["wallet"] == wallet]


def open_holds(r: redis.Redis) -> int:
    return sum(r.zcard(holds_index(shard)) for shard in range(SHARDS))


def test_a_lapsed_hold_is_settled_at_its_estimate_and_a_late_settle_changes_nothing(r):
    wallets.grant(r, "acme", 100)
    engine = Engine(r, hold_ms=HOLD_MS)
    held(engine, "h1")
    assert sweep_lapsed_holds(engine) == Swept()  # not due yet
    time.sleep(HOLD_MS / 1000 + 0.05)

    assert sweep_lapsed_holds(engine) == Swept(settled=1)
    [event] = events(r)
    assert (event["event_id"], event["cost"], event["reserved"], event["status"]) == (
        "h1", "30", "30", "")
    assert (event["method"], event["path"]) == ("POST", "/gen")
    assert wallets.balance(r, "acme").balance == 70
    assert open_holds(r) == 0
    assert sweep_lapsed_holds(engine) == Swept()

    late = engine.settle("h1", "acme", 12, status=200)  # the real price, too late
    assert late.replayed and late.cost == 30
    assert wallets.balance(r, "acme").balance == 70 and len(events(r)) == 1


def test_a_hold_settled_in_time_is_not_swept(r):
    wallets.grant(r, "acme", 100)
    engine = Engine(r, hold_ms=HOLD_MS)
    held(engine, "h1")
    assert engine.settle("h1", "acme", 12, status=200).status == 200
    time.sleep(HOLD_MS / 1000 + 0.05)
    assert sweep_lapsed_holds(engine) == Swept()
    assert [e["cost"] for e in events(r)] == ["12"]
    assert open_holds(r) == 0
    assert open_holds(r) == 0


def test_a_hold_settled_while_the_sweep_runs_is_neither_settled_again_nor_reported_lost(r):
    wallets.grant(r, "acme", 100)
    engine = Engine(r, hold_ms=HOLD_MS)
    held(engine, "h1")
    engine.settle("h1", "acme", 12, status=200)
    r.zadd(WalletKeys("acme").holds, {"h1": 1})  # as the sweep read the index before settle
    assert sweep_lapsed_holds(engine) == Swept()
    assert [e["cost"] for e in events(r)] == ["12"]


def test_an_index_entry_whose_hold_expired_is_reported_and_dropped(r):
    r.zadd(holds_index(3), {"gone": 1})
    assert sweep_lapsed_holds(Engine(r)) == Swept(vanished=1)
    assert open_holds(r) == 0


def test_concurrent_sweepers_settle_each_hold_once(r):
    engine = Engine(r, hold_ms=HOLD_MS)
    names = [f"w{i}" for i in range(20)]
    for name in names:
        wallets.grant(r, name, 1000)
    for i in range(300):
        held(engine, f"h{i}", cost=3, wallet=names[i % len(names)])
    time.sleep(HOLD_MS / 1000 + 0.05)

    def sweep() -> None:
        client = redis.Redis(connection_pool=r.connection_pool)
        while sweep_lapsed_holds(Engine(client), limit=7) != Swept():
            pass

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [e["event_id"] for name in names for e in events(r, name)]
    assert sorted(ids) == sorted(f"h{i}" for i in range(300))
    assert sum(wallets.balance(r, name).balance for name in names) == 20 * 1000 - 300 * 3
    assert open_holds(r) == 0


def test_the_forwarder_sweeps_lapsed_holds_and_delivers_them(r, redis_url):
    wallets.grant(r, "acme", 100)
    held(Engine(r, hold_ms=HOLD_MS), "h1")
    time.sleep(HOLD_MS / 1000 + 0.05)
    with BillingRecorder("http") as backend:
        forwarder = forward("http", r, backend, sweep_holds=True)
    assert set(backend.stored) == {"h1"} and backend.stored["h1"].cost == 30
    assert forwarder.metrics.tally.delivered == 1
