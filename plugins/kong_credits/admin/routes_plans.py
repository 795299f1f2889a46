"""`GET|PUT|DELETE /v1/wallets/{wallet}/plan`: a wallet's recurring allowance and overage
terms, as `kong-credits plan` shows and sets them (plans.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from .. import plans
from ..errors import InvalidInput
from .models import PlanChange
from .openapi import errors
from .problems import invalid
from .wallet_param import ReadableWallet, WritableWallet

__all__ = ["router"]

router = APIRouter(prefix="/v1/wallets", tags=["plans"])
_FIELDS = ("allowance", "every", "anchor", "rollover_max", "priority", "overage_max",
           "overage")


def _field_of(message: str) -> str:
    lowered = message.lower().replace("rollover max", "rollover_max").replace(
        "overage max", "overage_max").replace("--overage-max", "overage_max")
    return next((f for f in _FIELDS if f in lowered), "plan")


@router.get("/{wallet:wallet}/plan", responses=errors(401, 403, 422, 503),
            summary="The wallet's plan, overage terms and current period")
def get_plan(request: Request, wallet: ReadableWallet) -> dict[str, Any]:
    """A read in a new period materialises it first, as any balance read does."""
    return plans.show_plan(request.app.state.redis, wallet).to_json()


@router.put("/{wallet:wallet}/plan", responses=errors(401, 403, 422, 503),
            summary="Create or change the plan (fields left out keep their value)")
def put_plan(request: Request, wallet: WritableWallet, change: PlanChange) -> dict[str, Any]:
    """Applies from the next period: the current period's grants stand as they were made."""
    given = change.model_dump(include=change.model_fields_set)
    for name in ("allowance", "every", "rollover_max", "priority", "overage", "overage_max"):
        if name in given and given[name] is None:
            raise invalid(name, f"{name} cannot be null (DELETE the plan to stop it)")
    try:
        view = plans.set_plan(request.app.state.redis, wallet, **given)
    except InvalidInput as exc:
        missing = [n for n in ("allowance", "every") if n not in given]
        field = missing[0] if "no plan yet" in str(exc) and missing else _field_of(str(exc))
        raise invalid(field, str(exc)) from None
    return view.to_json()


@router.delete("/{wallet:wallet}/plan", responses=errors(401, 403, 422, 503),
               summary="Stop the plan (grants already made stay until they expire)")
def delete_plan(request: Request, wallet: WritableWallet) -> dict[str, Any]:
    return plans.remove_plan(request.app.state.redis, wallet).to_json()
