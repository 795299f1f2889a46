"""Safe retries of `POST /v1/wallets/{wallet}/grants`: one grant per key, whatever the timing.

Two keys make a grant request idempotent: its `grant_id` (the engine's own: grant.lua adds a
grant id once, atomically), and the `Idempotency-Key` header. A header key is claimed in Redis
with one HSETNX in the wallet's `idem` hash (keys.WalletKeys.idempotency), recording the
request and the grant id it gets. So 16 identical requests at once all use the first claim's
grant id, and grant.lua creates that grant once: one 201, the others 200 with the same grant.

The same key with another body is a 409, checked against what Redis recorded: the claim for a
header key, the stored grant for a `grant_id`. Claims are kept as long as the wallet's grants.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from .. import wallets
from ..errors import InvalidInput
from ..keys import WalletKeys
from ..wallets import Grant
from .problems import ProblemError

__all__ = ["GrantOutcome", "idempotent_grant"]


@dataclass(frozen=True, slots=True)
class GrantOutcome:
    created: bool
    grant: Grant
    balance: int


@dataclass(frozen=True, slots=True)
class _Request:
    amount: int
    grant_id: str | None
    priority: int
    expires_at_ms: int | None

    def fingerprint(self) -> dict[str, Any]:
        return {"amount": self.amount, "grant_id": self.grant_id, "priority": self.priority,
                "expires_at_ms": self.expires_at_ms}


def _conflict(what: str) -> ProblemError:
    return ProblemError(409, f"{what} was already used with a different request body; "
                             "use a new key for a new grant")


def _claim(client: redis.Redis, keys: WalletKeys, key: str, request: _Request
           ) -> tuple[str, bool]:
    """The grant id of header key `key` (ours, or the first claimer's) and whether this call
    made the claim. 409 when the first claim recorded another request."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    mine = {"request": request.fingerprint(),
            "grant_id": request.grant_id or f"g_{uuid.uuid4().hex}"}
    pipe = client.pipeline(transaction=True)
    pipe.hsetnx(keys.idempotency, digest, json.dumps(mine, separators=(",", ":")))
    pipe.hget(keys.idempotency, digest)
    claimed, raw = pipe.execute()
    first = json.loads(raw)
    if first["request"] != mine["request"]:
        raise _conflict("Idempotency-Key")
    return first["grant_id"], bool(claimed)


def _release(client: redis.Redis, keys: WalletKeys, key: str) -> None:
    client.hdel(keys.idempotency, hashlib.sha256(key.encode()).hexdigest())


def idempotent_grant(client: redis.Redis, wallet: str, *, amount: int, grant_id: str | None,
                     priority: int, expires_at: Any, idempotency_key: str | None
                     ) -> GrantOutcome:
    """Grant through the engine (wallets.grant), at most once per key. InvalidInput for
    values the engine refuses (nothing is then recorded under the key)."""
    request = _Request(amount, grant_id, priority, wallets.parse_expiry(expires_at))
    keys = WalletKeys(wallet)
    claimed = False
    if idempotency_key is not None:
        grant_id, claimed = _claim(client, keys, idempotency_key, request)
    try:
        created, gid, _ = wallets.grant(client, wallet, amount, grant_id=grant_id,
                                        priority=priority, expires_at=expires_at)
    except InvalidInput:
        if claimed:  # refused before anything was written: the key stays free to use
            _release(client, keys, idempotency_key)  # type: ignore[arg-type]
        raise
    view = wallets.balance(client, wallet)
    grant = next((g for g in view.grants if g.id == gid), None)
    if grant is None:  # its record is gone: nothing can be compared, nothing is granted again
        raise ProblemError(409, f"grant {gid!r} of this key no longer exists")
    if not created and (grant.amount, grant.priority, _expiry_ms(grant)) != (
        request.amount, request.priority, request.expires_at_ms
    ):
        raise _conflict("Idempotency-Key" if idempotency_key is not None else "grant_id")
    return GrantOutcome(created, grant, view.balance)


def _expiry_ms(grant: Grant) -> int | None:
    return wallets.parse_expiry(grant.expires_at)
