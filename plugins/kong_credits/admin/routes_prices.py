"""`GET /v1/prices`: each route's price and limits, from `--kong-yml` (the price list).

The same rows as `kong-credits prices --json` (prices.py): what a customer pays for what.
Read from the file at each request, so a redeployed kong.yml shows at once.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from ..errors import InvalidInput
from ..prices import route_prices
from .auth import Principal, authenticate
from .models import PriceRow
from .openapi import errors
from .problems import ProblemError

__all__ = ["router"]

router = APIRouter(prefix="/v1/prices", tags=["prices"])


@router.get("", response_model=list[PriceRow], responses=errors(401, 404, 503),
            summary="Each route's price and rate limits (as `kong-credits prices --json`)")
def get_prices(request: Request, _: Annotated[Principal, Depends(authenticate)]
               ) -> list[dict[str, Any]]:
    """Any valid token: admin or wallet (customers see what they pay)."""
    kong_yml = request.app.state.settings.kong_yml
    if kong_yml is None:
        raise ProblemError(404, "no price list: start kong-credits admin with --kong-yml")
    try:
        return route_prices(kong_yml)
    except InvalidInput as exc:
        raise ProblemError(503, str(exc)) from None
