"""When to try again: exponential backoff with full jitter, and Retry-After parsing.

Jitter spreads the retries of many forwarders over time instead of synchronising them on a
recovering backend; a server's Retry-After is a floor that backoff never undercuts.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

__all__ = ["MAX_RETRY_AFTER_S", "Backoff", "parse_retry_after"]

MAX_RETRY_AFTER_S = 600.0
"""A Retry-After beyond ten minutes is honoured as ten minutes (then asked again)."""


def parse_retry_after(value: str | None, *, now_s: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date.

    None when absent or unreadable; a date in the past gives 0. Fractional seconds are
    accepted although RFC 9110 only defines whole ones.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            return None
        seconds = moment.timestamp() - (time.time() if now_s is None else now_s)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry number `failures` (1 = first retry): uniform(0, base * 2^(n-1)),
    capped at `max_s`. `Backoff(0.2, 30.0)` waits at most 0.2 s, 0.4 s, 0.8 s, ... 30 s."""

    base_s: float = 0.2
    max_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.base_s <= self.max_s:
            raise ValueError(f"need 0 < base_s <= max_s, not {self.base_s}, {self.max_s}")

    def ceiling_s(self, failures: int) -> float:
        """The most this retry may wait before jitter (no Retry-After)."""
        return min(self.max_s, self.base_s * 2.0 ** min(max(failures - 1, 0), 60))

    def delay_s(self, failures: int, retry_after_s: float | None = None,
                rng: random.Random | None = None) -> float:
        """Jittered delay; with a Retry-After, that long plus up to a tenth more."""
        draw = (rng or random).uniform
        if retry_after_s is not None:
            wait = min(retry_after_s, MAX_RETRY_AFTER_S)
            return wait + draw(0.0, min(wait / 10, self.max_s))
        return draw(0.0, self.ceiling_s(failures))
