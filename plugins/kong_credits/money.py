"""Credits are integers: parsing and bounds, written once.

Every amount (grants, prices, balances) is a whole number of credits. Redis Lua numbers are
doubles, exact only below 2**53, so amounts are capped at `MAX_AMOUNT` and a wallet's balance
at `MAX_BALANCE`. Nothing on a money path divides, so there is no rounding: a price that is not
a whole number of credits is refused where it is entered, never rounded.
"""

from __future__ import annotations

import re

from .errors import InvalidInput

__all__ = ["MAX_AMOUNT", "MAX_BALANCE", "MAX_EXPIRY_MS", "MAX_PRIORITY", "parse_amount",
           "parse_cost", "parse_whole_number"]

MAX_AMOUNT = 10**15
MAX_BALANCE = 2**52
MAX_PRIORITY = 999_999_999
MAX_EXPIRY_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the latest expiry (grant.lua packs expiries in 15 digits), and
the latest time a spooled request may carry."""


_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]{1,4000}")
"""ASCII digits only: str.isdigit() also accepts "²" and other digits int() refuses, and a
bounded length keeps int() below its 4300-digit limit."""


def parse_whole_number(text: str) -> int | None:
    """`text` as an integer when it is an optional sign and 1..4000 ASCII digits, else None.

    Never raises: it also reads prices from upstream headers, which anyone may send.
    """
    text = text.strip()
    return int(text) if _WHOLE_NUMBER.fullmatch(text) else None


def _parse_int(value: object, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = parse_whole_number(value) if isinstance(value, str) else None
    if number is None:
        raise InvalidInput(f"{what} must be a whole number of credits, not {value!r}")
    return number


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
