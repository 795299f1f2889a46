"""Who is calling: admin tokens from the environment, read-only wallet tokens from Redis.

    Authorization: Bearer <token>

An admin token (`$KONG_CREDITS_ADMIN_TOKEN`, comma-separated) may do everything. A wallet
token, made by `POST /v1/wallets/{wallet}/tokens`, reads its own wallet and the wallets named
under it (`team` reads `team/alice` and `team/alice/bot`: what `usage --members` sums) and
never writes. No or an unknown token: 401; a
valid token outside its scope: 403.

A wallet token is `kcw_<id>_<secret>`: Redis keeps, under `keys.WALLET_TOKENS_KEY`, only the
SHA-256 of the secret beside the wallet, so a Redis dump grants nothing; deleting the entry
revokes the token on the next request (nothing is cached). Secrets are 256 random bits, so a
plain hash is enough (no password-stretching). Every comparison runs in constant time over
fixed-length digests, and no token is ever logged or echoed back in an error.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any

import redis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..keys import WALLET_TOKENS_KEY
from .problems import ProblemError

__all__ = ["Principal", "authenticate", "issue_wallet_token", "list_wallet_tokens",
           "require_admin", "revoke_wallet_token", "wallet_token_owner"]

WALLET_TOKEN_PREFIX = "kcw_"
_bearer = HTTPBearer(auto_error=False, description="An admin token or a wallet token.")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="kong-credits"'}


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: the admin (`wallet` None) or the holder of one wallet's token."""

    wallet: str | None = None
    token_id: str | None = None

    @property
    def admin(self) -> bool:
        return self.wallet is None

    def can_read(self, wallet: str) -> bool:
        return self.admin or wallet == self.wallet or wallet.startswith(f"{self.wallet}/")


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _is_admin_token(token: str, admin_tokens: tuple[str, ...]) -> bool:
    """Compares against every admin token, each in constant time, without stopping early."""
    given = _digest(token)
    found = False
    for candidate in admin_tokens:
        found |= hmac.compare_digest(given, _digest(candidate))
    return found


def issue_wallet_token(client: redis.Redis, wallet: str) -> dict[str, Any]:
    """A new token for `wallet`: the only time its text is seen; Redis keeps its hash."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    created_at = int(time.time())
    record = {"wallet": wallet, "sha256": _digest(secret).hex(), "created_at": created_at}
    client.hset(WALLET_TOKENS_KEY, token_id, json.dumps(record))
    return {"token": f"{WALLET_TOKEN_PREFIX}{token_id}_{secret}", "id": token_id,
            "wallet": wallet, "created_at": created_at}


def _records(client: redis.Redis) -> dict[str, dict[str, Any]]:
    return {(k.decode() if isinstance(k, bytes) else k): json.loads(v)
            for k, v in client.hgetall(WALLET_TOKENS_KEY).items()}


def list_wallet_tokens(client: redis.Redis, wallet: str) -> list[dict[str, Any]]:
    """The ids and creation times of `wallet`'s live tokens (never their text)."""
    return sorted(({"id": token_id, "wallet": wallet, "created_at": record["created_at"]}
                   for token_id, record in _records(client).items()
                   if record["wallet"] == wallet), key=lambda t: (t["created_at"], t["id"]))


def revoke_wallet_token(client: redis.Redis, wallet: str, token_id: str) -> bool:
    """Delete `wallet`'s token `token_id`; False when it has no such token. A record is never
    changed once written, only deleted, so checking its wallet first needs no transaction."""
    raw = client.hget(WALLET_TOKENS_KEY, token_id)
    if raw is None or json.loads(raw)["wallet"] != wallet:
        return False
    return bool(client.hdel(WALLET_TOKENS_KEY, token_id))


def wallet_token_owner(client: redis.Redis, token: str) -> Principal | None:
    """The wallet a token reads, or None for anything that is not a live wallet token."""
    if not token.startswith(WALLET_TOKEN_PREFIX):
        return None
    token_id, _, secret = token.removeprefix(WALLET_TOKEN_PREFIX).partition("_")
    if not token_id or not secret or len(token_id) > 64:
        return None
    raw = client.hget(WALLET_TOKENS_KEY, token_id)
    if raw is None:
        return None
    record = json.loads(raw)
    if not hmac.compare_digest(_digest(secret), bytes.fromhex(record["sha256"])):
        return None
    return Principal(wallet=record["wallet"], token_id=token_id)


def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, or 401. Runs before any input is validated, so an anonymous caller learns
    nothing about the API's inputs."""
    settings = request.app.state.settings
    if credentials is None or not credentials.credentials:
        if settings.insecure_local and not settings.admin_tokens:
            return Principal()
        raise ProblemError(401, "missing bearer token (Authorization: Bearer <token>)",
                           headers=_CHALLENGE)
    token = credentials.credentials
    if _is_admin_token(token, settings.admin_tokens):
        return Principal()
    owner = wallet_token_owner(request.app.state.redis, token)
    if owner is None:
        raise ProblemError(401, "invalid or revoked token", headers=_CHALLENGE)
    return owner


def require_admin(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """403 for a wallet token: only an admin token writes or lists."""
    if not principal.admin:
        raise ProblemError(403, "this needs an admin token; a wallet token only reads its "
                                "own wallet")
    return principal
