"""Wallet management off the hot path: grants (top-ups), balances and the ledger."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from . import scripts
from .engine import run_script
from .errors import InvalidInput
from .keys import WalletKeys, parent_of
from .money import MAX_BALANCE, MAX_EXPIRY_MS, MAX_PRIORITY, parse_amount
from .names import parse_grant_id, parse_wallet
from .plans import last_renewal, renew_many
from .voids import Void, void_grant

__all__ = ["DEFAULT_PRIORITY", "UNCHANGED", "Budget", "Grant", "Void", "WalletView", "balance",
           "balances", "burn_rate", "grant", "ledger", "parse_expiry", "parse_wallet",
           "set_budget", "void_grant"]

DEFAULT_PRIORITY = 100
DEFAULT_THRESHOLDS = (50, 75, 90, 100)
EWMA_ALPHA = 0.1  # as in authorize.lua
GRANT = scripts.load("grant")
UNCHANGED: Any = object()
_BUDGET_FIELDS = {"daily_cap": "cap_day", "monthly_cap": "cap_month",
                  "member_daily_cap": "member_cap_day", "member_monthly_cap": "member_cap_month"}


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_expiry(value: str | datetime | None) -> int | None:
    """Milliseconds since the epoch, exact (no float), at most 9999-12-31T23:59:59.999Z."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidInput(f"expires_at must be an ISO 8601 date/time, not {value!r}") from exc
    if value.tzinfo is None:
        raise InvalidInput("expires_at needs a timezone (e.g. 2027-01-01T00:00:00Z)")
    ms = (value - _EPOCH) // timedelta(milliseconds=1)
    if ms > MAX_EXPIRY_MS:
        raise InvalidInput(f"expires_at must be at most 9999-12-31T23:59:59.999Z, not {value}")
    return ms


@dataclass(frozen=True, slots=True)
class Grant:
    """One grant as the wallet holds it now."""

    id: str
    amount: int
    remaining: int
    priority: int
    expires_at: str | None
    created_at: str | None
    status: str  # live | exhausted | expired
    voided: int = 0  # credits voided from it (void_grant), shortfall included


@dataclass(frozen=True, slots=True)
class Budget:
    """Spending limits of a wallet. Caps count credits spent per calendar day/month (UTC).

    `soft` caps only alert; hard caps refuse with 402. Member caps limit how much this
    wallet may draw from its parent per period (always hard).
    """

    daily_cap: int | None = None
    monthly_cap: int | None = None
    soft: bool = False
    member_daily_cap: int | None = None
    member_monthly_cap: int | None = None
    alert_thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS


@dataclass(frozen=True, slots=True)
class WalletView:
    """A consistent snapshot of one wallet."""

    wallet: str
    balance: int
    overdraft: int
    grants: list[Grant]
    refused_credits: int
    refused_rate_limit: int
    refused_budget: int
    parent: str | None
    granted: int
    spent_today: int
    spent_this_month: int
    budget: Budget
    burn_rate_per_minute: float | None
    seconds_to_empty: int | None
    projected_empty_at: str | None
    abuse_suspected: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def grant(
    client: redis.Redis,
    wallet: str,
    amount: object,
    *,
    grant_id: str | None = None,
    priority: int = DEFAULT_PRIORITY,
    expires_at: str | datetime | None = None,
) -> tuple[bool, str, int]:
    """Add a grant; returns (created, grant id, balance after).

    Idempotent on `grant_id`: a repeated id changes nothing and returns created=False, so a
    retried payment webhook never credits twice. Validates everything before writing.
    """
    wallet = parse_wallet(wallet)
    credits = parse_amount(amount)
    if isinstance(priority, bool) or not isinstance(priority, int) or not (
        0 <= priority <= MAX_PRIORITY
    ):
        raise InvalidInput(f"priority must be an integer 0..{MAX_PRIORITY}, not {priority!r}")
    expires_ms = parse_expiry(expires_at)
    now_ms = int(time.time() * 1000)
    if expires_ms is not None and expires_ms <= now_ms:
        raise InvalidInput(f"expires_at {_iso(expires_ms)} is in the past")
    gid = f"g_{uuid.uuid4().hex}" if grant_id is None else parse_grant_id(grant_id)
    record = json.dumps({"amount": credits, "priority": priority, "expires_at_ms": expires_ms,
                         "created_at_ms": now_ms}, separators=(",", ":"))
    keys = WalletKeys(wallet)
    try:
        created, _, balance_after = run_script(
            client, GRANT, [*keys.wallet_keys, keys.grants, keys.index],
            [gid, credits, priority, expires_ms or 0, 0, record, MAX_BALANCE, wallet],
        )
    except redis.ResponseError as exc:
        raise InvalidInput(str(exc).removeprefix("ERR ")) from exc
    return bool(created), gid, int(balance_after)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def balance(client: redis.Redis, wallet: str, *, now_ms: int = 0) -> WalletView:
    """The wallet's balance and grants, read in one MULTI so they agree with each other.

    A read in a new period of the wallet's plan materialises it first (plans.renew, one
    script call). A grant past its expiry counts as expired here even before the next charge
    sweeps it. `now_ms` 0: Redis's clock (the renewal script reads it).
    """
    return balances(client, [wallet], now_ms=now_ms)[0]


def balances(client: redis.Redis, names: list[str], *, now_ms: int = 0) -> list[WalletView]:
    """`balance` of many wallets in two round trips: one pipeline renewing their plans
    (plans.renew_many), then one MULTI reading them (on a cluster, whose MULTI cannot span
    slots, one pipeline of per-wallet reads)."""
    wallet_keys = [WalletKeys(parse_wallet(name)) for name in names]
    times = renew_many(client, [keys.wallet for keys in wallet_keys], now_ms=now_ms)
    cluster = isinstance(client, redis.RedisCluster)
    pipe = client.pipeline(transaction=not cluster or len(wallet_keys) == 1)
    for keys in wallet_keys:
        pipe.hgetall(keys.state)
        pipe.hgetall(keys.grants)
        pipe.hgetall(keys.remaining)
        pipe.hgetall(keys.voids)
    replies = pipe.execute()
    return [_view(keys, *replies[4 * i:4 * i + 4], times[i])
            for i, keys in enumerate(wallet_keys)]


def _view(keys: WalletKeys, state: dict[Any, Any], records: dict[Any, Any],
          remaining: dict[Any, Any], voids: dict[Any, Any], now_ms: int) -> WalletView:
    state = {_text(k): _text(v) for k, v in state.items()}
    left_by_id = {_text(k): max(int(v), 0) for k, v in remaining.items()}
    voided_by_id = {_text(k): int(v) for k, v in voids.items()}
    grants = []
    live_total = 0
    for raw_id, raw in records.items():
        gid = _text(raw_id)
        record = json.loads(raw)
        left = left_by_id.get(gid, 0)
        expires = record.get("expires_at_ms")
        if expires is not None and expires <= now_ms:
            status = "expired"
        elif left == 0:
            status = "exhausted"
        else:
            status = "live"
            live_total += left
        grants.append(Grant(
            id=gid, amount=record["amount"], remaining=left, priority=record["priority"],
            expires_at=_iso(expires), created_at=_iso(record.get("created_at_ms")),
            status=status, voided=voided_by_id.get(gid, 0),
        ))
    for plan_grant in _plan_grants(state, left_by_id, now_ms):
        grants.append(plan_grant)
        live_total += plan_grant.remaining if plan_grant.status == "live" else 0
    grants.sort(key=lambda g: (g.status != "live", g.priority, g.expires_at or "~",
                               g.created_at or ""))
    def count(field: str) -> int:
        return int(float(state.get(field) or 0))

    overdraft = count("overdraft")
    balance_now = live_total - overdraft
    day = now_ms // 86_400_000
    moment = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    month_id_now = moment.year * 12 + moment.month - 1  # as authorize.lua counts months
    rate = burn_rate(state, now_ms)
    seconds = None
    if rate:
        seconds = max(0, int(balance_now / rate * 60))
    return WalletView(
        wallet=keys.wallet, balance=balance_now, overdraft=overdraft, grants=grants,
        refused_credits=count("refused_credits"),
        refused_rate_limit=count("refused_rate_limit"),
        refused_budget=count("refused_budget"),
        parent=parent_of(keys.wallet), granted=count("granted"),
        spent_today=(count("spent_day") + count("drawn_day"))
        if count("day_id") == day else 0,
        spent_this_month=(count("spent_month") + count("drawn_month"))
        if count("month_id") == month_id_now else 0,
        budget=_budget(state), burn_rate_per_minute=rate, seconds_to_empty=seconds,
        projected_empty_at=_iso(now_ms + seconds * 1000) if seconds is not None else None,
        abuse_suspected=count("abuse_active") == 1,
    )


def _plan_grants(state: dict[str, Any], left_by_id: dict[str, int],
                 now_ms: int) -> list[Grant]:
    """The grants of the plan's last renewal (plans.lua keeps them out of the grants HASH,
    which the hot path's scripts do not open): the allowance and what rolled over."""
    last = last_renewal(state)
    if last is None:
        return []
    expires = int(state["plan_end"])
    found = []
    for gid, amount in ((f"rollover#{last['seq']}", last["rollover"]),
                        (f"plan#{last['seq']}", last["allowance"])):
        if not amount:
            continue
        left = left_by_id.get(gid, 0)
        status = "expired" if expires <= now_ms else ("live" if left else "exhausted")
        found.append(Grant(id=gid, amount=amount, remaining=left, priority=last["priority"],
                           expires_at=_iso(expires), created_at=_iso(last["start"]),
                           status=status))
    return found


def burn_rate(state: dict[str, Any], now_ms: int) -> float | None:
    """Credits per minute: the script's moving average, brought up to `now_ms`.

    None when the wallet has never been charged. Same rule as authorize.lua: the last
    finished minute weighs 0.1, and every idle minute decays the average by 0.9.
    """
    if state.get("burn_minute") is None:
        return None
    last = int(float(state["burn_minute"]))
    current = float(state.get("burn_current") or 0)
    ewma = state.get("burn_ewma")
    rate = float(ewma) if ewma is not None else None
    minute = now_ms // 60_000
    if minute > last:
        rate = current if rate is None else EWMA_ALPHA * current + (1 - EWMA_ALPHA) * rate
        rate *= (1 - EWMA_ALPHA) ** min(minute - last - 1, 1000)
    elif rate is None:
        rate = current  # first minute of use: what it spent so far this minute
    return round(rate, 3)


def _budget(state: dict[str, Any]) -> Budget:
    def cap(field: str) -> int | None:
        value = state.get(field)
        return int(value) if value is not None else None

    thresholds = state.get("thresholds")
    return Budget(
        daily_cap=cap("cap_day"), monthly_cap=cap("cap_month"), soft=state.get("cap_soft") == "1",
        member_daily_cap=cap("member_cap_day"), member_monthly_cap=cap("member_cap_month"),
        alert_thresholds=tuple(int(t) for t in thresholds.split(","))
        if thresholds else DEFAULT_THRESHOLDS,
    )


def set_budget(
    client: redis.Redis,
    wallet: str,
    *,
    daily_cap: int | None = UNCHANGED,
    monthly_cap: int | None = UNCHANGED,
    soft: bool = UNCHANGED,
    member_daily_cap: int | None = UNCHANGED,
    member_monthly_cap: int | None = UNCHANGED,
    alert_thresholds: tuple[int, ...] = UNCHANGED,
) -> Budget:
    """Change a wallet's budget: a cap of None removes it; UNCHANGED leaves it alone.

    Takes effect on the next request (the authorize script reads it). Validates first. A
    change enters the wallet in its shard's wallet index (keys.wallet_index), as a grant does.
    """
    keys = WalletKeys(parse_wallet(wallet))
    changes = {"daily_cap": daily_cap, "monthly_cap": monthly_cap,
               "member_daily_cap": member_daily_cap, "member_monthly_cap": member_monthly_cap}
    if parent_of(wallet) is None and any(
        v is not UNCHANGED and v is not None for v in (member_daily_cap, member_monthly_cap)
    ):
        raise InvalidInput(f"member caps limit what a wallet draws from its parent, and "
                           f"{wallet!r} has none (name it parent/member)")
    to_set: dict[str, str] = {}
    to_delete: list[str] = []
    for name, value in changes.items():
        if value is UNCHANGED:
            continue
        if value is None:
            to_delete.append(_BUDGET_FIELDS[name])
        else:
            to_set[_BUDGET_FIELDS[name]] = str(parse_amount(value, name.replace("_", " ")))
    if soft is not UNCHANGED:
        to_set["cap_soft"] = "1" if soft else "0"
    if alert_thresholds is not UNCHANGED:
        if not alert_thresholds or any(
            isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= 100
            for t in alert_thresholds
        ):
            raise InvalidInput("alert thresholds must be whole percentages 1..100, "
                               f"not {alert_thresholds!r}")
        to_set["thresholds"] = ",".join(str(t) for t in sorted(set(alert_thresholds)))
    pipe = client.pipeline(transaction=True)
    if to_set:
        pipe.hset(keys.state, mapping=to_set)
    if to_delete:
        pipe.hdel(keys.state, *to_delete)
    if to_set or to_delete:
        pipe.zadd(keys.index, {keys.wallet: 0})
    pipe.hgetall(keys.state)
    state = pipe.execute()[-1]
    return _budget({_text(k): _text(v) for k, v in state.items()})


def ledger(client: redis.Redis, wallet: str, limit: int = 20) -> list[dict[str, Any]]:
    """The wallet's most recent ledger entries, newest first (the last 1000 are kept).

    A `void` entry also has `shortfall` (credits asked for but already spent) and `reason`.
    """
    if limit < 1:
        raise InvalidInput(f"limit must be at least 1, not {limit}")
    keys = WalletKeys(parse_wallet(wallet))
    entries = []
    for entry_id, fields in client.xrevrange(keys.ledger, count=limit):
        f = {_text(k): _text(v) for k, v in fields.items()}
        entry = {
            "id": _text(entry_id), "type": f["type"], "ref": f["ref"],
            "amount": int(f["amount"]), "balance": int(f["balance"]),
            "at": _iso(int(f["ts"])),
        }
        if "shortfall" in f:
            entry["shortfall"] = int(f["shortfall"])
            entry["reason"] = f.get("reason", "")
        entries.append(entry)
    return entries
