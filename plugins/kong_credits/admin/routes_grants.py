"""`POST /v1/wallets/{wallet}/grants`: top-ups from a signup or payment flow, retry-safe."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from .. import wallets
from ..errors import InvalidInput
from .idempotency import idempotent_grant
from .models import GrantDocument, GrantRequest
from .openapi import errors
from .problems import invalid
from .wallet_param import ReadableWallet, WritableWallet

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
        alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
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


@router.get("/{wallet:wallet}/grants", response_model=list[GrantDocument],
            responses=errors(401, 403, 422, 503),
            summary="The wallet's grants: live first, in burn order, then spent and expired")
def list_grants(request: Request, wallet: ReadableWallet) -> list[GrantDocument]:
    view = wallets.balance(request.app.state.redis, wallet)
    return [GrantDocument.of(wallet, grant, view.balance) for grant in view.grants]
