"""`GET /v1/usage` and `GET /v1/usage/events`: the documents of `kong-credits usage --json`
and `kong-credits usage events --json`, from the usage store (usage/query.py).

Rows keep the route and service ids of the events and gain `route_name` / `service_name`
from `--kong-yml` (the id itself when it names none). A wallet token asks about its own
wallet (the default) or one named under it; `members` sums the wallets under the one asked.
Served only when the admin has a usage store (`--store` or `$KONG_CREDITS_USAGE_URL`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from ..errors import InvalidInput
from ..names import parse_wallet
from ..usage.query import parse_dimensions, usage_events, usage_report
from ..usage.store import StoreError
from ..usage.times import parse_time
from .auth import Principal, authenticate
from .openapi import errors
from .problems import ProblemError, invalid

__all__ = ["router"]

router = APIRouter(prefix="/v1/usage", tags=["usage"])
_ERRORS = errors(401, 403, 422, 503)
_Time = Annotated[str | None, Query(max_length=64, description=(
    "ISO 8601 with a zone, a date (midnight UTC) or a duration back from now: 30m, 24h, 7d. "
    "Default: the last 24 hours."))]


def _wallet_in_scope(wallet: str | None, principal: Principal, *, required: bool) -> str | None:
    if wallet is None:
        if principal.admin:
            if required:
                raise invalid("wallet", "wallet is required", "query")
            return None
        return principal.wallet
    try:
        name = parse_wallet(wallet)
    except InvalidInput as exc:
        raise invalid("wallet", str(exc), "query") from None
    if not principal.can_read(name):
        raise ProblemError(403, "this token reads only its own wallet and those under it")
    return name


def _check_times(since: str | None, until: str | None) -> None:
    for field, value in (("since", since), ("until", until)):
        if value is not None:
            try:
                parse_time(value)
            except InvalidInput as exc:
                raise invalid(field, str(exc), "query") from None


def _query(request: Request, read: Any) -> Any:
    try:
        return request.app.state.usage_store.query(read)
    except StoreError as exc:  # its message names the store with the password masked
        raise ProblemError(503, str(exc)) from None
    except InvalidInput as exc:  # the one check left to the query: until before since
        raise invalid("until", str(exc), "query") from None


@router.get("", responses=_ERRORS,
            summary="Requests and credits per bucket and dimension (`kong-credits usage`)")
def get_usage(
    request: Request, principal: Annotated[Principal, Depends(authenticate)],
    wallet: Annotated[str | None, Query(max_length=200)] = None,
    members: Annotated[bool, Query(description="Add the wallets named under `wallet`.")]
    = False,
    by: Annotated[str, Query(max_length=100, description=(
        "Comma-separated dimensions: wallet, consumer, route, service, method."))] = "",
    bucket: Literal["minute", "hour", "day", "month"] = "hour",
    since: _Time = None, until: _Time = None,
    limit: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
) -> dict[str, Any]:
    """`{"bucket", "since", "until", "rows": [{"start", <each dimension>, "requests",
    "credits"}]}`, rows by start, then credits descending."""
    name = _wallet_in_scope(wallet, principal, required=False)
    if members and name is None:
        raise invalid("members", "members needs a wallet", "query")
    try:
        dims = parse_dimensions(by)
    except InvalidInput as exc:
        raise invalid("by", str(exc), "query") from None
    _check_times(since, until)
    report = _query(request, lambda store: usage_report(
        store, wallet=name, members=members, by=dims, bucket=bucket, since=since,
        until=until, limit=limit))
    names = request.app.state.route_names
    report["rows"] = [names.annotate(row) for row in report["rows"]]
    return report


@router.get("/events", responses=_ERRORS,
            summary="The raw events behind the usage, newest first (`usage events`)")
def get_usage_events(
    request: Request, principal: Annotated[Principal, Depends(authenticate)],
    wallet: Annotated[str | None, Query(max_length=200)] = None,
    since: _Time = None, until: _Time = None,
    route: Annotated[str | None, Query(max_length=200, description="A route's id.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[dict[str, Any]]:
    """Each `{"id", "time", "wallet", "consumer", "route", "service", "method", "path",
    "cost", "reserved", "status"}`, kept as long as the store's raw retention."""
    name = _wallet_in_scope(wallet, principal, required=True)
    _check_times(since, until)
    events = _query(request, lambda store: usage_events(
        store, wallet=name, since=since, until=until, route=route, limit=limit))
    names = request.app.state.route_names
    return [names.annotate(event) for event in events]
