"""Wallet tokens: read-only bearer tokens for a customer's own dashboard (admin only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from .auth import issue_wallet_token, list_wallet_tokens, revoke_wallet_token
from .models import TokenCreated, TokenInfo
from .openapi import errors
from .problems import ProblemError
from .wallet_param import WritableWallet

__all__ = ["router"]

router = APIRouter(prefix="/v1/wallets", tags=["tokens"])


@router.post("/{wallet:wallet}/tokens", status_code=201, response_model=TokenCreated,
             responses=errors(401, 403, 422, 503),
             summary="Make a read-only token for this wallet (shown once)")
def create_token(request: Request, wallet: WritableWallet) -> dict[str, Any]:
    return issue_wallet_token(request.app.state.redis, wallet)


@router.get("/{wallet:wallet}/tokens", response_model=list[TokenInfo],
            responses=errors(401, 403, 422, 503), summary="This wallet's live tokens")
def get_tokens(request: Request, wallet: WritableWallet) -> list[dict[str, Any]]:
    return list_wallet_tokens(request.app.state.redis, wallet)


@router.delete("/{wallet:wallet}/tokens/{token_id}", status_code=204,
               responses=errors(401, 403, 404, 422, 503),
               summary="Revoke a token: refused from the next request on")
def delete_token(request: Request, wallet: WritableWallet,
                 token_id: Annotated[str, Path(max_length=64)]) -> Response:
    if not revoke_wallet_token(request.app.state.redis, wallet, token_id):
        raise ProblemError(404, f"wallet {wallet!r} has no token {token_id!r}")
    return Response(status_code=204)
