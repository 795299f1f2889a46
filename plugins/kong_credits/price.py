"""Prices by what a request consumed: the `credits-metered` plugin's `price` record.

The formula, from what Kong's `kong.log.serialize()` reports for the request (`request.size`
and `response.size` in bytes, as nginx counted them with headers; `latencies.proxy`, the
upstream's time in ms):

    price = per_request
          + ceil(per_kb_request  x request.size   / 1024)
          + ceil(per_kb_response x response.size  / 1024)
          + ceil(per_second      x latencies.proxy / 1000)
          + the cost_header's credits, when the plugin also has `cost_header`

Rounding: each measured component is rounded up to a whole credit on its own (1 KB = 1024
bytes, 1 s = 1000 ms), so the components add up to the price exactly and every one is an
integer. Then: a response whose status is in `status_free` costs 0; a price above `max_cost`
is charged `max_cost`. A value Kong did not report (no upstream: latencies.proxy is -1) counts
as 0. All in integers: no float touches a price.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .money import parse_whole_number

__all__ = ["COMPONENTS", "KB", "Price", "PriceBreakdown"]

KB = 1024
"""Bytes per KB in the formula."""
COMPONENTS = ("price_request", "price_request_kb", "price_response_kb", "price_seconds",
              "price_header", "request_bytes", "response_bytes", "proxy_ms")
"""The names of a computed price's parts and measures, as settled events carry them."""


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _measure(value: Any) -> int:
    """A size or latency from the serialized log as a whole non-negative number (a fraction
    of a millisecond counts as a whole one; nginx variables Kong did not convert, ASCII
    digits, are read as numbers); anything else, absent or negative, as 0."""
    if isinstance(value, str):
        value = parse_whole_number(value) if len(value) <= 30 else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if isinstance(value, float):
        if not math.isfinite(value):
            return 0
        value = math.ceil(value)
    return max(value, 0)


def _section(entry: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = entry.get(name)
    return section if isinstance(section, Mapping) else {}


@dataclass(frozen=True, slots=True)
class PriceBreakdown:
    """A computed price and its parts, as the settled event carries them."""

    cost: int
    """What is charged: the parts' sum, 0 for a free status, at most max_cost."""
    components: dict[str, int]
    """price_request, price_request_kb, price_response_kb, price_seconds (price_header is
    added by the plugin) and the quantities measured: request_bytes, response_bytes, proxy_ms."""


@dataclass(frozen=True, slots=True)
class Price:
    """Credits per request, per KB of request and of response, per second of upstream time."""

    per_request: int = 0
    per_kb_request: int = 0
    per_kb_response: int = 0
    per_second: int = 0
    status_free: frozenset[int] = frozenset()

    @classmethod
    def from_config(cls, record: Mapping[str, Any]) -> Price:
        return cls(per_request=record.get("per_request", 0),
                   per_kb_request=record.get("per_kb_request", 0),
                   per_kb_response=record.get("per_kb_response", 0),
                   per_second=record.get("per_second", 0),
                   status_free=frozenset(record.get("status_free") or ()))

    def compute(self, entry: Mapping[str, Any], *, header_cost: int | None,
                max_cost: int) -> PriceBreakdown:
        """The price of the request `entry` (kong.log.serialize()'s table) describes, plus
        `header_cost` (credits the upstream reported, None without cost_header)."""
        request_bytes = _measure(_section(entry, "request").get("size"))
        response = _section(entry, "response")
        response_bytes = _measure(response.get("size"))
        proxy_ms = _measure(_section(entry, "latencies").get("proxy"))
        components = {
            "price_request": self.per_request,
            "price_request_kb": _ceil_div(self.per_kb_request * request_bytes, KB),
            "price_response_kb": _ceil_div(self.per_kb_response * response_bytes, KB),
            "price_seconds": _ceil_div(self.per_second * proxy_ms, 1000),
        }
        if header_cost is not None:
            components["price_header"] = header_cost
        total = sum(components.values())
        if response.get("status") in self.status_free:
            total = 0
        components.update(request_bytes=request_bytes, response_bytes=response_bytes,
                          proxy_ms=proxy_ms)
        return PriceBreakdown(cost=min(total, max_cost), components=components)
