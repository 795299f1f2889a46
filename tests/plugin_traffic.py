"""Concurrent traffic through the plugin (a HostThread: the Kong-protocol host and the real
plugin server), recorded request by request, for the cluster and sentinel tests.

Each thread sends `GET path` back to back, cycling over the API keys it is given, until
`stop()`; every answer is kept with the wallet it was for and the time the plugin's access
phase took (the host's measure of the plugin: RPCs, plugin server and Redis), which the tests
hold against the bound of 2 x redis_timeout_ms.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from waits import wait_until

from kong_credits import wallets
from kong_credits.keys import WalletKeys, event_streams, shard_of


@dataclass(frozen=True)
class Answer:
    wallet: str
    status: int
    plugin_s: float  # the access phase, as the host timed it
    at: float  # monotonic time the answer came


class Traffic:
    def __init__(self, gateway: object, keys: dict[str, str], *, threads: int = 6,
                 path: str = "/paid") -> None:
        """`keys`: API key -> the wallet its consumer pays from."""
        self.gateway = gateway
        self.keys = keys
        self.path = path
        self.answers: list[Answer] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._send, args=(n,), daemon=True)
                         for n in range(threads)]

    def _send(self, offset: int) -> None:
        order = list(self.keys)
        i = offset
        try:
            while not self._stop.is_set():
                key = order[i % len(order)]
                i += 1
                response = self.gateway.get(self.path, key=key)  # type: ignore[attr-defined]
                answer = self._answer(key, response)
                with self._lock:
                    self.answers.append(answer)
        except BaseException as exc:  # reported by stop(): a thread must not die silently
            self.errors.append(exc)

    def _answer(self, key: str, response: Any) -> Answer:
        """What one response is recorded as (subclasses record other things)."""
        return Answer(self.keys[key], response.status, response.plugin_s.get("access", 0.0),
                      time.monotonic())

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        assert not self.errors, self.errors

    def seen(self, count: int, *, status: int | None = None, wallet: str | None = None,
             after: float = 0.0) -> Callable[[], bool]:
        """A predicate for wait_until: `count` answers (of that status, wallet, after `at`)."""
        def enough() -> bool:
            with self._lock:
                answers = list(self.answers)
            return sum(1 for a in answers if a.at > after and (status is None or a.status == status)
                       and (wallet is None or a.wallet == wallet)) >= count
        return enough

    def wait(self, count: int, timeout_s: float = 60, **match: object) -> None:
        wait_until(self.seen(count, **match), timeout_s=timeout_s)  # type: ignore[arg-type]

    def statuses(self, wallet: str | None = None) -> Counter[int]:
        return Counter(a.status for a in self.answers if wallet in (None, a.wallet))

    def admitted(self, wallet: str) -> int:
        return self.statuses(wallet)[200]

    def slowest(self) -> float:
        return max(a.plugin_s for a in self.answers)


def wallet_events(client: redis.Redis, wallet: str) -> list[dict[str, str]]:
    return [fields for _, fields in client.xrange(WalletKeys(wallet).events)
            if fields["wallet"] == wallet]


def all_event_ids(client: redis.Redis) -> list[str]:
    return [fields["event_id"] for stream in event_streams()
            for _, fields in client.xrange(stream)]


def assert_charged_once(client_of: Callable[[str], redis.Redis], traffic: Traffic,
                        funds: dict[str, int], cost: int, *, in_doubt: int = 0,
                        lost: int = 0) -> tuple[int, int]:
    """Nothing charged twice: per wallet, one event per charge (unique event ids, balance =
    granted - events x cost). And, with the defaults, nothing admitted unpaid and nothing
    refused charged: one event per request answered 200, none other.

    A failover loosens the second part, and each test says by how much (the README's
    Production Redis section explains both): `in_doubt` events in all may belong to requests
    answered 503 (a script ran as its master died, its reply was lost and the one retry
    within the bound found no master yet), and `lost` requests answered 200 may have no
    event (replication is asynchronous: a replica promoted before reading the master's last
    writes does without them). Returns (requests in doubt, writes lost).

    `client_of(wallet)`: a client that reaches the wallet's keys."""
    extra = missing = 0
    for wallet, granted in funds.items():
        client = client_of(wallet)
        events = wallet_events(client, wallet)
        view = wallets.balance(client, wallet)
        statuses = traffic.statuses(wallet)
        assert len({e["event_id"] for e in events}) == len(events), wallet
        assert (view.balance, view.overdraft) == (granted - len(events) * cost, 0), wallet
        assert len(events) <= statuses[200] + statuses[503], (wallet, statuses, len(events))
        extra += max(0, len(events) - statuses[200])
        missing += max(0, statuses[200] - len(events))
    assert extra <= in_doubt and missing <= lost, (extra, missing)
    return extra, missing


def wallet_names(shards: Sequence[int], per_shard: int = 1) -> list[str]:
    """Wallet names whose shards are `shards`, `per_shard` each."""
    names: list[str] = []
    for shard in shards:
        candidates = (f"w{shard}-{n}" for n in itertools.count())
        names += itertools.islice((c for c in candidates if shard_of(c) == shard), per_shard)
    return names


def paid_route_config(redis_url: str, cost: int, timeout_ms: int,
                      consumers: Mapping[str, str]) -> dict[str, Any]:
    """kong.yml with one key-auth route `/paid` priced `cost` by `credits` on `redis_url`, and
    a consumer per API key -> wallet (its custom_id)."""
    return {
        "_format_version": "3.0",
        "services": [{"name": "api", "url": "http://upstream.invalid:8080", "routes": [
            {"name": "paid", "paths": ["/paid"], "plugins": [
                {"name": "key-auth"},
                {"name": "credits", "config": {"redis_url": redis_url, "cost": cost,
                                               "redis_timeout_ms": timeout_ms}}]}]}],
        "consumers": [{"username": wallet, "custom_id": wallet,
                       "keyauth_credentials": [{"key": key}]}
                      for key, wallet in consumers.items()],
    }
