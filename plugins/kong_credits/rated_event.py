"""A rated event as the engine appended it to an event stream, parsed and checked once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .errors import InvalidInput
from .price import COMPONENTS

__all__ = ["MalformedEvent", "RatedEvent", "rfc3339"]

_REQUIRED = ("event_id", "wallet", "cost", "timestamp")
_TEXT = ("consumer", "route", "service", "method", "path")
_DETAILS = ("parent_cost", "overage", *COMPONENTS)
"""Optional integer fields passed on to billing backends when present: what a parent paid,
what was served on credit (overage, to invoice), a computed price's components and what it
measured (plans.lua, price.py)."""


_DETAIL_NAMES = frozenset(_DETAILS)


class MalformedEvent(InvalidInput):
    """A stream entry that is not a rated event (missing id, cost not an integer, ...)."""


def _integer(fields: Mapping[str, str], name: str) -> int:
    text = fields[name]
    if not text.isascii() or not text.isdigit():
        raise MalformedEvent(f"{name} must be a non-negative integer, not {text!r}")
    return int(text)


def _optional_integer(fields: Mapping[str, str], name: str) -> int | None:
    return _integer(fields, name) if fields.get(name) else None


def rfc3339(timestamp_ms: int) -> str:
    """UTC time with milliseconds, e.g. 2026-01-01T00:00:00.001Z (CloudEvents, Orb)."""
    moment = datetime.fromtimestamp(timestamp_ms // 1000, tz=UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{timestamp_ms % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class RatedEvent:
    """One admitted request: `event_id` is unique and the idempotency key of every sink."""

    event_id: str
    wallet: str
    cost: int
    timestamp_ms: int
    consumer: str = ""
    route: str = ""
    service: str = ""
    method: str = ""
    path: str = ""
    reserved: int | None = None
    """Settled events only: the credits held at authorize."""
    status: int | None = None
    """Settled events only: the upstream's HTTP status."""
    details: dict[str, int] = field(default_factory=dict)
    """The `_DETAILS` fields the entry has, e.g. {"overage": 3, "price_response_kb": 2}."""

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> RatedEvent:
        """Parse the string fields of a stream entry; `MalformedEvent` says what is wrong."""
        missing = [name for name in _REQUIRED if not fields.get(name)]
        if missing:
            raise MalformedEvent(f"missing field(s): {', '.join(missing)}")
        get = fields.get  # the forwarder parses every event: no per-field dicts or loops
        return cls(
            event_id=fields["event_id"], wallet=fields["wallet"],
            cost=_integer(fields, "cost"), timestamp_ms=_integer(fields, "timestamp"),
            consumer=get("consumer", ""), route=get("route", ""), service=get("service", ""),
            method=get("method", ""), path=get("path", ""),
            reserved=_optional_integer(fields, "reserved"),
            status=_optional_integer(fields, "status"),
            details=({name: _integer(fields, name) for name in _DETAILS if get(name)}
                     if not _DETAIL_NAMES.isdisjoint(fields) else {}),
        )

    def properties(self) -> dict[str, str | int]:
        """What a billing backend may aggregate or filter on: cost, who, what, outcome."""
        props: dict[str, str | int] = {"cost": self.cost, "wallet": self.wallet}
        props.update({name: getattr(self, name) for name in _TEXT})
        if self.reserved is not None:
            props["reserved"] = self.reserved
        if self.status is not None:
            props["status"] = self.status
        props.update(self.details)
        return props
