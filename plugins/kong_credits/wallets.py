"""Wallet management off the hot path: grants (top-ups), balances and the ledger."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from . import scripts
from .engine import run_script
from .errors import InvalidInput
from .keys import WalletKeys
from .money import MAX_BALANCE, MAX_PRIORITY, parse_amount

__all__ = ["DEFAULT_PRIORITY", "Grant", "WalletView", "balance", "grant", "ledger",
           "parse_wallet"]

DEFAULT_PRIORITY = 100
MAX_WALLET_LENGTH = 200
GRANT = scripts.load("grant")


def parse_wallet(name: str) -> str:
    """A wallet name: 1..200 printable characters, no whitespace at either end."""
    if not name or name != name.strip() or len(name) > MAX_WALLET_LENGTH:
        raise InvalidInput(f"wallet must be 1..{MAX_WALLET_LENGTH} characters "
                           f"without surrounding spaces, not {name!r}")
    if not name.isprintable():
        raise InvalidInput(f"wallet must be printable, not {name!r}")
    return name


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def _parse_expiry(value: str | datetime | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidInput(f"expires_at must be an ISO 8601 date/time, not {value!r}") from exc
    if value.tzinfo is None:
        raise InvalidInput("expires_at needs a timezone (e.g. 2027-01-01T00:00:00Z)")
    return int(value.timestamp() * 1000)


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


@dataclass(frozen=True, slots=True)
class WalletView:
    """A consistent snapshot of one wallet."""

    wallet: str
    balance: int
    overdraft: int
    grants: list[Grant]
    refused_credits: int
    refused_rate_limit: int

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
    expires_ms = _parse_expiry(expires_at)
    now_ms = int(time.time() * 1000)
    if expires_ms is not None and expires_ms <= now_ms:
        raise InvalidInput(f"expires_at {_iso(expires_ms)} is in the past")
    gid = grant_id or f"g_{uuid.uuid4().hex}"
    if not gid.isprintable() or len(gid) > 200:
        raise InvalidInput(f"grant id must be 1..200 printable characters, not {gid!r}")
    record = json.dumps({"amount": credits, "priority": priority, "expires_at_ms": expires_ms,
                         "created_at_ms": now_ms}, separators=(",", ":"))
    keys = WalletKeys(wallet)
    try:
        created, _, balance_after = run_script(
            client, GRANT,
            [keys.state, keys.grants, keys.remaining, keys.burn_order, keys.expiries, keys.ledger],
            [gid, credits, priority, expires_ms or 0, 0, record, MAX_BALANCE],
        )
    except redis.ResponseError as exc:
        raise InvalidInput(str(exc).removeprefix("ERR ")) from exc
    return bool(created), gid, int(balance_after)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def balance(client: redis.Redis, wallet: str) -> WalletView:
    """The wallet's balance and grants, read in one MULTI so they agree with each other.

    A grant past its expiry counts as expired here even before the next charge sweeps it.
    """
    keys = WalletKeys(parse_wallet(wallet))
    pipe = client.pipeline(transaction=True)
    pipe.time()
    pipe.hgetall(keys.state)
    pipe.hgetall(keys.grants)
    pipe.hgetall(keys.remaining)
    server_time, state, records, remaining = pipe.execute()
    now_ms = server_time[0] * 1000 + server_time[1] // 1000
    state = {_text(k): int(v) for k, v in state.items()}
    left_by_id = {_text(k): int(v) for k, v in remaining.items()}
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
            status=status,
        ))
    grants.sort(key=lambda g: (g.status != "live", g.priority, g.expires_at or "~",
                               g.created_at or ""))
    overdraft = state.get("overdraft", 0)
    return WalletView(
        wallet=keys.wallet, balance=live_total - overdraft, overdraft=overdraft, grants=grants,
        refused_credits=state.get("refused_credits", 0),
        refused_rate_limit=state.get("refused_rate_limit", 0),
    )


def ledger(client: redis.Redis, wallet: str, limit: int = 20) -> list[dict[str, Any]]:
    """The wallet's most recent ledger entries, newest first (the last 1000 are kept)."""
    if limit < 1:
        raise InvalidInput(f"limit must be at least 1, not {limit}")
    keys = WalletKeys(parse_wallet(wallet))
    entries = []
    for entry_id, fields in client.xrevrange(keys.ledger, count=limit):
        f = {_text(k): _text(v) for k, v in fields.items()}
        entries.append({
            "id": _text(entry_id), "type": f["type"], "ref": f["ref"],
            "amount": int(f["amount"]), "balance": int(f["balance"]),
            "at": _iso(int(f["ts"])),
        })
    return entries
