"""Request and response bodies of the admin API, as pydantic models (they make the OpenAPI
schemas). Wallet documents reuse the engine's own dataclasses (wallets.WalletView, Budget):
the API answers exactly what `kong-credits balance --json` prints."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictInt

from ..money import MAX_AMOUNT, MAX_PRIORITY
from ..names import GRANT_ID_CHARACTERS
from ..wallets import DEFAULT_PRIORITY, Budget, Grant, WalletView

__all__ = ["AlertDocument", "BudgetChange", "BudgetDocument", "GrantDocument", "GrantRequest",
           "LedgerEntry", "PlanChange", "PriceRow", "TokenCreated", "TokenInfo", "VoidDocument",
           "WalletList", "WalletSummary"]

Credits = Annotated[StrictInt, Field(ge=1, le=MAX_AMOUNT)]
Percentage = Annotated[StrictInt, Field(ge=1, le=100)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GrantRequest(_Strict):
    """A top-up. `grant_id` makes it idempotent (as the `Idempotency-Key` header does)."""

    amount: Credits = Field(description="Credits to add: a whole number 1..10^15.")
    grant_id: str | None = Field(
        None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:@/-]+$",
        description=f"1..200 of {GRANT_ID_CHARACTERS}; a repeated id grants nothing more "
                    "(a payment id is a good choice). Made up when absent.")
    priority: Annotated[StrictInt, Field(ge=0, le=MAX_PRIORITY)] = Field(
        DEFAULT_PRIORITY, description="Lower burns first.")
    expires_at: AwareDatetime | None = Field(
        None, description="When what is left of the grant expires (ISO 8601 with timezone).")


class GrantDocument(BaseModel):
    """A grant as the wallet holds it now, with the wallet's balance after it."""

    id: str
    grant_id: str = Field(description="The same as `id`.")
    wallet: str
    amount: int
    remaining: int
    priority: int
    expires_at: str | None
    created_at: str | None
    status: str = Field(description="live | exhausted | expired")
    voided: int = Field(0, description="Credits voided from it (DELETE), shortfall included.")
    balance: int

    @classmethod
    def of(cls, wallet: str, grant: Grant, balance: int) -> GrantDocument:
        return cls(grant_id=grant.id, wallet=wallet, balance=balance, id=grant.id,
                   amount=grant.amount, remaining=grant.remaining, priority=grant.priority,
                   expires_at=grant.expires_at, created_at=grant.created_at,
                   status=grant.status, voided=grant.voided)


class VoidDocument(BaseModel):
    """What a void did: `voided` credits left the balance, `shortfall` were already spent."""

    wallet: str
    grant_id: str
    voided: int
    shortfall: int
    remaining: int = Field(description="What the grant still holds.")
    balance: int
    replayed: bool = Field(description="True: this Idempotency-Key was used before; nothing "
                                       "changed and the first result is answered.")


class WalletSummary(BaseModel):
    """One row of the wallet list: the wallet document without its grants."""

    wallet: str
    balance: int
    overdraft: int
    parent: str | None
    granted: int
    spent_today: int
    spent_this_month: int
    burn_rate_per_minute: float | None
    seconds_to_empty: int | None
    projected_empty_at: str | None
    refused_credits: int
    refused_rate_limit: int
    refused_budget: int
    abuse_suspected: bool
    live_grants: int
    budget: Budget

    @classmethod
    def of(cls, view: WalletView) -> WalletSummary:
        fields = {name: getattr(view, name) for name in cls.model_fields if hasattr(view, name)}
        return cls(**fields, live_grants=sum(g.status == "live" for g in view.grants))


class WalletList(BaseModel):
    wallets: list[WalletSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on "
                                                "the last page.")


class LedgerEntry(BaseModel):
    id: str
    type: str = Field(description="grant | charge | refund | expire | void ...")
    ref: str
    amount: int
    balance: int
    at: str | None


class BudgetDocument(BaseModel):
    wallet: str
    daily_cap: int | None
    monthly_cap: int | None
    soft: bool
    member_daily_cap: int | None
    member_monthly_cap: int | None
    alert_thresholds: list[int]
    low_balance: int | None = Field(description="Alert `low_balance` below this many credits.")


class BudgetChange(_Strict):
    """Fields left out stay as they are; `null` removes a cap."""

    daily_cap: Credits | None = None
    monthly_cap: Credits | None = None
    soft: StrictBool | None = None
    member_daily_cap: Credits | None = None
    member_monthly_cap: Credits | None = None
    alert_thresholds: Annotated[list[Percentage], Field(min_length=1, max_length=100)] | None \
        = None
    low_balance: Credits | None = None


class PlanChange(_Strict):
    """A plan's terms (`kong-credits plan`): fields left out keep their value; a new plan
    needs `allowance` and `every`. `anchor` null: the default alignment."""

    allowance: Credits | None = None
    every: Literal["day", "week", "month"] | None = None
    anchor: AwareDatetime | None = None
    rollover_max: Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT)] | None = None
    priority: Annotated[StrictInt, Field(ge=0, le=MAX_PRIORITY)] | None = None
    overage: Literal["refuse", "allow"] | None = None
    overage_max: Credits | None = None


class PriceRow(BaseModel):
    """One route, method and path of the price list (prices.py `route_prices`)."""

    model_config = ConfigDict(extra="allow")

    route: str
    service: str | None
    method: str = Field(description='"*": any method')
    path: str = Field(description='"*": any path')
    plugin: str | None = Field(description="credits, credits-metered, or null: not priced")
    metered: bool
    cost: int | None = Field(description="Credits per request (the held estimate when "
                                         "metered); null when not priced.")
    cost_header: str | None
    max_cost: int | None
    rate_limit: dict[str, int]
    rate_limit_scope: str | None
    mode: str | None
    config: dict[str, Any]


class AlertDocument(BaseModel):
    """An alert, in the same shape as its webhook body."""

    id: str
    type: str
    wallet: str
    created_at: str
    data: dict[str, Any]


class TokenCreated(BaseModel):
    token: str = Field(description="The bearer token: shown this once, stored only hashed.")
    id: str
    wallet: str
    created_at: int = Field(description="Unix seconds.")


class TokenInfo(BaseModel):
    id: str
    wallet: str
    created_at: int
