"""Rated events made by the real engine, an in-process drain, and the checks every forwarder
test ends with."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import redis
from billing_recorder import BAD_PREFIX, BillingRecorder, sink_config

from kong_credits import wallets
from kong_credits.engine import AuthorizeRequest, Engine
from kong_credits.forwarder import Forwarder, ForwarderOptions
from kong_credits.forwarder.consumer_group import ConsumerGroup
from kong_credits.forwarder.group_names import group_name
from kong_credits.keys import event_streams
from kong_credits.redis_url import redis_client
from kong_credits.retry import Backoff
from kong_credits.sinks import SINKS, http_client

FAST = Backoff(0.001, 0.02)


@dataclass
class Produced:
    """event id -> (wallet, cost) of every event the engine appended."""

    events: dict[str, tuple[str, int]] = field(default_factory=dict)

    def ids(self, *, bad: bool | None = None) -> set[str]:
        return {i for i in self.events if bad is None or i.startswith(BAD_PREFIX) == bad}

    def cost(self, ids: set[str]) -> int:
        return sum(self.events[i][1] for i in ids)


def produce(url: str, count: int, *, wallets_n: int = 24, bad: int = 0, settled: int = 0,
            seed: int = 0, start: int = 0) -> Produced:
    """Authorize `count` requests over `wallets_n` wallets (every shard gets some); `bad` of
    them with ids the vendor fakes refuse; the last `settled` held, then settled."""
    client = redis_client(url)  # a redis+cluster:// URL: a cluster client
    engine = Engine(client)
    rng = random.Random(seed)
    produced = Produced()
    names = [f"wallet-{i}" for i in range(wallets_n)]
    for name in names:
        wallets.grant(client, name, 10**12, grant_id=f"seed-{name}")
    bad_every = count // bad if bad else 0
    for i in range(start, start + count):
        wallet, cost = names[i % wallets_n], rng.randint(0, 9)
        request_id = f"{BAD_PREFIX}{i}" if bad_every and i % bad_every == 1 else f"req-{i}"
        hold = i >= start + count - settled
        decision = engine.authorize(AuthorizeRequest(
            request_id, wallet, f"consumer-{i % 5}", cost + 3 if hold else cost,
            route="search", service="api", method="GET", path=f"/search/{i}", hold=hold))
        assert decision.admitted, decision
        if hold:
            assert engine.settle(request_id, wallet, cost, status=200).status == 200
        produced.events[request_id] = (wallet, cost)
    client.close()
    return produced


def assert_billed_once(backend: BillingRecorder, produced: Produced, *,
                       refused: set[str] | frozenset[str] = frozenset()) -> None:
    """The backend holds every produced event but the refused, each once, with its wallet
    and cost; anything it received more than once was the same event again."""
    stored = backend.stored
    expected = produced.ids() - set(refused)
    assert set(stored) == expected, (len(set(stored) - expected), len(expected - set(stored)))
    assert sum(r.cost for r in stored.values()) == produced.cost(expected)
    for receipt in backend.receipts:
        assert produced.events[receipt.event_id] == (receipt.customer, receipt.cost)


def assert_nothing_pending(client: redis.Redis, group: str) -> None:
    """Every entry of every stream was read by the group and acknowledged."""
    for stream in event_streams():
        if not client.exists(stream):
            continue
        [info] = [g for g in client.xinfo_groups(stream) if g["name"] == group]
        assert (info["pending"], info["lag"]) == (0, 0), (stream, info)


def forward(kind: str, client: redis.Redis, backend: BillingRecorder, *,
            per_shard: bool = False, **options: object) -> Forwarder:
    """Drain everything to `backend` in this thread; returns the finished forwarder."""
    config = sink_config(kind, backend.url)
    settings: dict[str, object] = {"batch_size": 100, "drain": True, "claim_idle_ms": 200,
                                   "backoff": FAST, "max_attempts": 50}
    settings.update(options)
    with http_client(config) as http:
        sink = SINKS[kind](http, config)
        try:
            group = ConsumerGroup(client, group_name(kind), "tester", per_shard=per_shard)
            forwarder = Forwarder(group, sink, ForwarderOptions(**settings))  # type: ignore[arg-type]
            assert forwarder.run() == 0
            return forwarder
        finally:
            sink.close()
