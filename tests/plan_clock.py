"""Helpers of the plan tests: a controlled clock in ISO 8601, charges, alerts, the ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis

from kong_credits import wallets
from kong_credits.engine import AuthorizeRequest, Decision, Engine
from kong_credits.keys import WalletKeys

_ids = iter(range(10**9))


def ms(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000


def iso(value: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=value)
    return moment.isoformat().replace("+00:00", "Z")


def charge(engine: Engine, wallet: str, cost: int, at: str | int, **kw) -> Decision:
    now = ms(at) if isinstance(at, str) else at
    return engine.authorize(AuthorizeRequest(f"req-{next(_ids)}", wallet, "c1", cost, **kw),
                            now_ms=now)


def alerts(r: redis.Redis, wallet: str, kind: str) -> list[dict[str, str]]:
    return [f for _, f in r.xrange(WalletKeys(wallet).alerts)
            if f["wallet"] == wallet and f["type"] == kind]


def ledger_types(r: redis.Redis, wallet: str) -> list[tuple[str, int]]:
    return [(e["type"], e["amount"]) for e in reversed(wallets.ledger(r, wallet, 1000))]
