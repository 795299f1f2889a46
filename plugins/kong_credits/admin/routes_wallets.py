"""Reading wallets (balance, list, ledger, alerts) and their budgets.

Sub-resources are declared before `GET /v1/wallets/{wallet}`, whose `{wallet:wallet}` would
otherwise take `team/ledger` for a wallet name (wallet_param.py).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from .. import wallets
from ..errors import InvalidInput
from ..plans import low_balance_of, set_low_balance
from ..wallets import UNCHANGED, WalletView
from .alert_log import recent_alerts
from .auth import Principal, authenticate
from .models import (
    AlertDocument,
    BudgetChange,
    BudgetDocument,
    LedgerEntry,
    WalletList,
    WalletSummary,
)
from .openapi import errors
from .problems import ProblemError, invalid
from .wallet_index import decode_cursor, page_of_wallets
from .wallet_param import ReadableWallet, WritableWallet

__all__ = ["router"]

router = APIRouter(prefix="/v1/wallets", tags=["wallets"])
_READ_ERRORS = errors(401, 403, 422, 503)

Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many, newest first.")]


@router.get("", response_model=WalletList, responses=_READ_ERRORS,
            summary="Wallets by name, with balance, burn rate and refusals (paginated)")
def list_wallets(
    request: Request,
    principal: Annotated[Principal, Depends(authenticate)],
    prefix: Annotated[str, Query(max_length=200, description="Only names starting so.")] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=400,
                                        description="`next_cursor` of the page before.")] = None,
) -> dict[str, Any]:
    """Every wallet that ever received a grant or a budget. A wallet token may list its own
    members only (`prefix` starting with `<its wallet>/`)."""
    if not principal.admin and not prefix.startswith(f"{principal.wallet}/"):
        raise ProblemError(403, "a wallet token lists only its members: "
                                "prefix=<its wallet>/")
    try:
        after = decode_cursor(cursor) if cursor else None
    except InvalidInput as exc:
        raise invalid("cursor", str(exc), "query") from None
    client = request.app.state.redis
    names, next_cursor = page_of_wallets(client, prefix=prefix, limit=limit, after=after)
    views = wallets.balances(client, names) if names else []
    return {"wallets": [WalletSummary.of(view) for view in views], "next_cursor": next_cursor}


@router.get("/{wallet:wallet}/ledger", response_model=list[LedgerEntry],
            responses=_READ_ERRORS, summary="Recent grants, charges, refunds and expiries")
def get_ledger(request: Request, wallet: ReadableWallet, limit: Limit = 20
               ) -> list[dict[str, Any]]:
    return wallets.ledger(request.app.state.redis, wallet, limit)


@router.get("/{wallet:wallet}/alerts", response_model=list[AlertDocument],
            responses=_READ_ERRORS, summary="Recent alerts (as their webhook bodies)")
def get_alerts(request: Request, wallet: ReadableWallet, limit: Limit = 20
               ) -> list[dict[str, Any]]:
    return recent_alerts(request.app.state.redis, wallet, limit)


def _budget_document(client: Any, wallet: str, budget: wallets.Budget) -> dict[str, Any]:
    """As `kong-credits budget --json`."""
    return {"wallet": wallet, **asdict(budget), "low_balance": low_balance_of(client, wallet)}


@router.get("/{wallet:wallet}/budget", response_model=BudgetDocument,
            responses=_READ_ERRORS, summary="Spending caps and alert thresholds")
def get_budget(request: Request, wallet: ReadableWallet) -> dict[str, Any]:
    client = request.app.state.redis
    return _budget_document(client, wallet, wallets.set_budget(client, wallet))


@router.patch("/{wallet:wallet}/budget", response_model=BudgetDocument,
              responses=errors(401, 403, 422, 503),
              summary="Change caps (null removes one) and alert thresholds")
def patch_budget(request: Request, wallet: WritableWallet, change: BudgetChange
                 ) -> dict[str, Any]:
    given = change.model_dump(include=change.model_fields_set)
    if "alert_thresholds" in given:
        if given["alert_thresholds"] is None:
            raise invalid("alert_thresholds", "alert_thresholds cannot be null; "
                                              "send the list of percentages")
        given["alert_thresholds"] = tuple(given["alert_thresholds"])
    if "soft" in given:
        given["soft"] = bool(given["soft"])  # null: back to hard caps
    low_balance = given.pop("low_balance", UNCHANGED)
    client = request.app.state.redis
    try:
        budget = wallets.set_budget(client, wallet, **given)
    except InvalidInput as exc:
        field = "member_daily_cap" if "member" in str(exc) else "budget"
        raise invalid(field, str(exc)) from None
    if low_balance is not UNCHANGED:
        set_low_balance(client, wallet, low_balance)
    return _budget_document(client, wallet, budget)


@router.get("/{wallet:wallet}", response_model=WalletView, responses=_READ_ERRORS,
            summary="Balance, grants, budget and burn rate (as `kong-credits balance --json`)")
def get_wallet(request: Request, wallet: ReadableWallet) -> dict[str, Any]:
    """An unknown wallet answers 200 with balance 0, as the CLI does."""
    return wallets.balance(request.app.state.redis, wallet).to_json()
