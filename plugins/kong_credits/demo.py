"""`kong-credits demo`: the credits engine end to end on an embedded Redis, with a summary."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import click
import redis

from . import wallets
from .engine import AuthorizeRequest, Engine, RateLimit
from .keys import WalletKeys
from .redis_server import EmbeddedRedis


@contextmanager
def redis_for_demo(redis_url: str | None) -> Iterator[str]:
    """The given Redis, or an embedded one that is stopped afterwards."""
    if redis_url:
        yield redis_url
        return
    with EmbeddedRedis() as server:
        click.echo(f"started embedded Redis ({server.binary}) at {server.url}")
        yield server.url


def run_demo(redis_url: str, *, wallet: str = "demo-wallet", requests: int = 40) -> Counter:
    """Grant 50 credits, send `requests` priced at 2 with a 25/minute limit; count outcomes."""
    client = redis.Redis.from_url(redis_url)
    engine = Engine(client)
    wallets.grant(client, wallet, 50, grant_id=f"demo-{uuid.uuid4().hex[:8]}")
    outcomes: Counter = Counter()
    for i in range(requests):
        consumer = "alice" if i < requests // 2 else "bob"
        decision = engine.authorize(AuthorizeRequest(
            uuid.uuid4().hex, wallet, consumer, cost=2, route="demo-route", method="GET",
            path=f"/v1/items/{i}", limits=(RateLimit(60, 15),)))
        outcomes[decision.status] += 1
    view = wallets.balance(client, wallet)
    events = [f for _, f in client.xrange(WalletKeys(wallet).events)
              if f[b"wallet"] == wallet.encode()]
    click.echo(f"{requests} requests: {outcomes[200]} admitted (200), "
               f"{outcomes[429]} rate limited (429), {outcomes[402]} out of credits (402)")
    click.echo(f"balance of {wallet}: {view.balance} credits; {len(events)} events recorded")
    client.close()
    return outcomes
