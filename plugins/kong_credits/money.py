"""Credits are integers: parsing and bounds, written once.

Every amount (grants, prices, balances) is a whole number of credits. Redis Lua numbers are
doubles, exact only below 2**53, so amounts are capped at `MAX_AMOUNT` and a wallet's balance
at `MAX_BALANCE`. Nothing on a money path divides, so there is no rounding: a price that is not
a whole number of credits is refused where it is entered, never rounded.
"""

from __future__ import annotations

from .errors import InvalidInput

__all__ = ["MAX_AMOUNT", "MAX_BALANCE", "MAX_PRIORITY", "parse_amount", "parse_cost"]

MAX_AMOUNT = 10**15
MAX_BALANCE = 2**52
MAX_PRIORITY = 999_999_999


def _parse_int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"{what} must be a whole number of credits, not {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    raise InvalidInput(f"{what} must be a whole number of credits, not {value!r}")


def parse_amount(value: object, what: str = "amount") -> int:
    """A positive number of credits (grants, top-ups): 1..MAX_AMOUNT."""
    amount = _parse_int(value, what)
    if not 1 <= amount <= MAX_AMOUNT:
        raise InvalidInput(f"{what} must be between 1 and {MAX_AMOUNT}, not {amount}")
    return amount


def parse_cost(value: object, what: str = "cost") -> int:
    """A price in credits: 0 (metered, free) .. MAX_AMOUNT."""
    cost = _parse_int(value, what)
    if not 0 <= cost <= MAX_AMOUNT:
        raise InvalidInput(f"{what} must be between 0 and {MAX_AMOUNT}, not {cost}")
    return cost
