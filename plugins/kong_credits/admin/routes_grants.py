"""Grants: top-ups from a signup or payment flow, retry-safe, and voids (refunds)."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse

from .. import wallets
from ..errors import GrantNotFound, InvalidInput
from ..names import parse_grant_id
from .idempotency import idempotent_grant
from .models import GrantDocument, GrantRequest, VoidDocument
from .openapi import errors
from .problems import ProblemError, invalid
from .wallet_param import ReadableWallet, WritableWallet, decode_slashes

__all__ = ["router"]

router = APIRouter(prefix="/v1/wallets", tags=["grants"])

_FIELDS = ("amount", "priority", "expires_at", "grant_id")


def _field_of(message: str) -> str:
    """The body field an engine message is about (its messages start with the field)."""
    lowered = message.lower().replace("grant id", "grant_id")
    return next((f for f in _FIELDS if lowered.startswith(f) or f" {f} " in lowered), "amount")


@router.post(
    "/{wallet:wallet}/grants", status_code=201, response_model=GrantDocument,
    responses={200: {"model": GrantDocument,
                     "description": "A retry: the grant this key made before, unchanged."},
               **errors(401, 403, 409, 422, 503)},
    summary="Add credits to a wallet (idempotent with Idempotency-Key or grant_id)",
)
def create_grant(
    request: Request, wallet: WritableWallet, body: GrantRequest,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x20-\x7e]+$",
        description="Makes retries safe: the same key again returns the original grant (200); "
                    "with a different body, 409.")] = None,
) -> JSONResponse:
    try:
        outcome = idempotent_grant(
            request.app.state.redis, wallet, amount=body.amount, grant_id=body.grant_id,
            priority=body.priority, expires_at=body.expires_at,
            idempotency_key=idempotency_key)
    except InvalidInput as exc:
        raise invalid(_field_of(str(exc)), str(exc)) from None
    document = GrantDocument.of(wallet, outcome.grant, outcome.balance)
    return JSONResponse(document.model_dump(), status_code=201 if outcome.created else 200)


_IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x20-\x7e]+$",
    description="Makes a retried partial void safe: the same key again changes nothing and "
                "answers the first result (`replayed`: true).")]


@router.delete(
    "/{wallet:wallet}/grants/{grant_id:wallet}", response_model=VoidDocument,
    responses=errors(401, 403, 404, 422, 503),
    summary="Void what remains of a grant (a refund); credits already spent stay spent",
)
def void(
    request: Request, wallet: WritableWallet,
    grant_id: Annotated[str, Path(description="The grant's id (`/` may be sent as `%2F`).")],
    idempotency_key: _IdempotencyKey = None,
    amount: Annotated[int | None, Query(ge=1, le=10**15, description=(
        "Void at most this many credits; default: all that is left."))] = None,
    reason: Annotated[str, Query(min_length=1, max_length=200,
                                 description="Written to the ledger entry.")] = "void",
) -> dict[str, Any]:
    """Through the engine's void_grant (void.lua): what was spent is the shortfall, recorded
    in the ledger; nothing the wallet spent is ever taken twice."""
    try:
        grant_id = parse_grant_id(decode_slashes(grant_id))
    except InvalidInput as exc:
        raise invalid("grant_id", str(exc), "path") from None
    void_key = None if idempotency_key is None else (
        "k" + hashlib.sha256(idempotency_key.encode()).hexdigest())
    try:
        result = wallets.void_grant(request.app.state.redis, wallet, grant_id, amount=amount,
                                    reason=reason, void_key=void_key)
    except GrantNotFound as exc:
        raise ProblemError(404, str(exc)) from None
    except InvalidInput as exc:
        raise invalid("reason" if "reason" in str(exc) else "amount", str(exc),
                      "query") from None
    return result.to_json()


@router.get("/{wallet:wallet}/grants", response_model=list[GrantDocument],
            responses=errors(401, 403, 422, 503),
            summary="The wallet's grants: live first, in burn order, then spent and expired")
def list_grants(request: Request, wallet: ReadableWallet) -> list[GrantDocument]:
    view = wallets.balance(request.app.state.redis, wallet)
    return [GrantDocument.of(wallet, grant, view.balance) for grant in view.grants]
