"""One spool line per record: a request served while Redis was away, or the price a
`credits-metered` upstream reported for one (written by its log phase)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import InvalidInput
from ..money import MAX_EXPIRY_MS, parse_cost
from ..names import parse_request_id, parse_wallet
from ..price import COMPONENTS

__all__ = ["SettledPrice", "SpooledRequest", "decode_line", "encode_line"]


@dataclass(frozen=True, slots=True)
class SpooledRequest:
    """What authorize would have recorded: replayed with the same request id and time.

    `metered`: a `credits-metered` request, whose `cost` is the estimate until a
    `SettledPrice` with its id says otherwise. `sent`: the call may have reached Redis (it
    timed out or its connection broke after sending) rather than failed to connect; only
    such a request can have been charged already (see README: what the spool guarantees).
    """

    request_id: str
    wallet: str
    consumer: str
    cost: int
    at_ms: int
    route: str = ""
    service: str = ""
    method: str = ""
    path: str = ""
    metered: bool = False
    sent: bool = False


@dataclass(frozen=True, slots=True)
class SettledPrice:
    """The price a `credits-metered` upstream reported for a spooled request (clamped to
    max_cost by the plugin, as settle is), with what a live settle puts in the event: the
    response's status and a computed price's components (price.py)."""

    request_id: str
    cost: int
    status: int | None = None
    details: dict[str, int] | None = None


Record = SpooledRequest | SettledPrice


def encode_line(record: Record) -> bytes:
    """One newline-terminated JSON line (no newline inside: json escapes them)."""
    fields = asdict(record)
    fields["kind"] = "settle" if isinstance(record, SettledPrice) else "request"
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"


def _check_settled(record: SettledPrice) -> None:
    """A status is an HTTP status; details are price.py's components, whole numbers."""
    if record.status is not None and (type(record.status) is not int
                                      or not 100 <= record.status <= 999):
        raise InvalidInput("status must be an HTTP status")
    if record.details is None:
        return
    if not isinstance(record.details, dict):
        raise InvalidInput("details must be a mapping")
    for name, value in record.details.items():
        if name not in COMPONENTS or type(value) is not int:
            raise InvalidInput(f"detail {name!r} is not a price component with an integer")
        parse_cost(value, name)


def decode_line(line: bytes) -> Record:
    """The record of one line; InvalidInput for a torn or foreign line (the tail a crash cut
    short, or a file that is not ours): such a line is skipped and counted, never charged."""
    try:
        fields: dict[str, Any] = json.loads(line)
        kind = fields.pop("kind")
        if kind == "settle":
            record: Record = SettledPrice(**fields)
            _check_settled(record)
        elif kind == "request":
            record = SpooledRequest(**fields)
            parse_wallet(record.wallet)
            for name in ("consumer", "route", "service", "method", "path"):
                if not isinstance(getattr(record, name), str):
                    raise InvalidInput(f"{name} must be text")
            if type(record.at_ms) is not int or not 0 < record.at_ms <= MAX_EXPIRY_MS:
                raise InvalidInput("at_ms must be a time in ms up to the year 9999")
        else:
            raise InvalidInput(f"unknown record kind {kind!r}")
        parse_request_id(record.request_id)
        if type(record.cost) is not int:
            raise InvalidInput("cost must be an integer")
        parse_cost(record.cost)
    except (ValueError, TypeError, KeyError, AttributeError, InvalidInput) as exc:
        raise InvalidInput(f"unreadable spool line: {exc}") from None
    return record
