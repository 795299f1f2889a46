"""Voiding grants: taking back what remains of a grant, for refunds and mistakes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import redis

from . import scripts
from .engine import run_script
from .errors import GrantNotFound, InvalidInput
from .keys import WalletKeys
from .money import parse_amount
from .names import parse_grant_id, parse_void_key, parse_wallet

__all__ = ["MAX_REASON_LENGTH", "Void", "void_grant"]

VOID = scripts.load("void")
MAX_REASON_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Void:
    """What a void did (or, replayed, what the first call with its void key did).

    `voided` credits left the balance; `shortfall` credits were asked for but already spent
    (or expired) and are recorded in the ledger; `remaining` is what the grant still holds;
    `balance` is the wallet's spendable balance after.
    """

    wallet: str
    grant_id: str
    voided: int
    shortfall: int
    remaining: int
    balance: int
    replayed: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _parse_reason(reason: str) -> str:
    if not isinstance(reason, str) or not 1 <= len(reason) <= MAX_REASON_LENGTH or (
        not reason.isprintable()
    ):
        raise InvalidInput(f"reason must be 1..{MAX_REASON_LENGTH} printable characters, "
                           f"not {reason!r}")
    return reason


def void_grant(
    client: redis.Redis,
    wallet: str,
    grant_id: str,
    *,
    amount: object = None,
    total: object = None,
    reason: str = "void",
    void_key: str | None = None,
    now_ms: int = 0,
) -> Void:
    """Void what remains of a grant, atomically (one script, void.lua); returns a `Void`.

    - neither `amount` nor `total`: everything not voided yet;
    - `amount`: up to that many more credits;
    - `total`: until that many credits of the grant are voided in all (cumulative, as Stripe
      reports refunds: an older or repeated total asks for nothing more).

    A void never asks for more than the grant's amount minus earlier voids, and never takes
    more than the grant still holds: what was already spent is the shortfall, written to the
    ledger with `reason` (and credits a later settle gives back to the grant are voided
    then). With `void_key`, a repeated call changes nothing and returns the first call's
    result with `replayed=True`. Raises GrantNotFound (nothing changed) when the wallet has
    no such grant, InvalidInput for bad arguments, RedisUnavailable when Redis is down.
    """
    wallet = parse_wallet(wallet)
    grant_id = parse_grant_id(grant_id)
    reason = _parse_reason(reason)
    key = "" if void_key is None else parse_void_key(void_key)
    if amount is not None and total is not None:
        raise InvalidInput("give amount or total, not both")
    if amount is not None:
        mode, credits = "amount", parse_amount(amount, "amount to void")
    elif total is not None:
        mode, credits = "total", parse_amount(total, "total to void")
    else:
        mode, credits = "all", 0
    keys = WalletKeys(wallet)
    try:
        status, replayed, voided, shortfall, remaining, balance = run_script(
            client, VOID, [*keys.wallet_keys, keys.grants, keys.voids, keys.void_replies],
            [grant_id, key, mode, credits, now_ms, reason],
        )
    except redis.ResponseError as exc:
        raise InvalidInput(str(exc).removeprefix("ERR ")) from exc
    if status == 404:
        raise GrantNotFound(f"wallet {wallet!r} has no grant {grant_id!r}")
    return Void(wallet=wallet, grant_id=grant_id, voided=int(voided),
                shortfall=int(shortfall), remaining=int(remaining), balance=int(balance),
                replayed=bool(replayed))
