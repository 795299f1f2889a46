"""The questions users ask of the usage store: series by bucket and dimension, raw events.

`usage_report` returns exactly the document `kong-credits usage --json` prints (and the
admin API serves): `{"bucket", "since", "until", "rows": [{"start", <each DIM>, "requests",
"credits"}]}`, rows ordered by start, then credits descending (then the dimensions, so the
order is total). `since` is rounded down to the start of its bucket, so the first bucket is
whole; a bucket belongs to the range when it starts before `until`. Buckets with no usage
are absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import InvalidInput
from ..names import parse_wallet
from ..rated_event import rfc3339
from .schema import ROLLUP_TABLES
from .store import Store
from .times import BUCKETS, bucket_start, iso_z, parse_time, to_datetime

__all__ = ["DEFAULT_SPAN", "DIMENSIONS", "parse_dimensions", "parse_time", "usage_events",
           "usage_report"]

DIMENSIONS = ("wallet", "consumer", "route", "service", "method")
DEFAULT_SPAN = timedelta(hours=24)
MAX_LIMIT = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EVENT_FIELDS = ("id", "time", "wallet", "consumer", "route", "service", "method", "path",
                 "cost", "reserved", "status")


def parse_dimensions(by: str | Sequence[str]) -> tuple[str, ...]:
    """`route,method` or ("route", "method") -> ("route", "method"); an unknown or repeated
    DIM raises InvalidInput."""
    names = [n.strip() for n in by.split(",")] if isinstance(by, str) else list(by)
    if isinstance(by, str) and not by.strip():
        return ()
    for name in names:
        if name not in DIMENSIONS:
            raise InvalidInput(f"unknown dimension {name!r}: use {', '.join(DIMENSIONS)}")
    if len(set(names)) != len(names):
        raise InvalidInput(f"dimension named twice in {','.join(names)!r}")
    return tuple(names)


def _range(since: datetime | str | None, until: datetime | str | None, *, now: datetime,
           default_span: timedelta = DEFAULT_SPAN) -> tuple[datetime, datetime]:
    """Until defaults to now (whole seconds, rounded up), since to `default_span` before it;
    until before since raises InvalidInput."""
    end = to_datetime(until, now=now)
    if end is None:
        end = now.replace(microsecond=0) + (timedelta(seconds=1) if now.microsecond else
                                            timedelta())
    start = to_datetime(since, now=now)
    if start is None:
        start = end - default_span
    if end < start:
        raise InvalidInput(f"--until {iso_z(end)} is before --since {iso_z(start)}")
    return start, end


def _wallet_filter(wallet: str | None, members: bool) -> tuple[str, list[Any]]:
    """`wallet = ?`, and with members every wallet named `<wallet>/...` (a byte-ordered
    prefix range, which the primary key index serves on both databases)."""
    if wallet is None:
        if members:
            raise InvalidInput("--members needs a WALLET")
        return "", []
    wallet = parse_wallet(wallet)
    if not members:
        return "wallet = ?", [wallet]
    # "/" is followed by "0" in byte order: [wallet + "/", wallet + "0") holds its members
    return "(wallet = ? OR (wallet >= ? AND wallet < ?))", [wallet, wallet + "/", wallet + "0"]


def usage_report(store: Store, *, wallet: str | None = None, members: bool = False,
                 by: str | Sequence[str] = (), bucket: str = "hour",
                 since: datetime | str | None = None, until: datetime | str | None = None,
                 limit: int | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Requests and credits per bucket (and per `by` dimension) for one wallet (with
    `members`: and the wallets under it) or all. Strings for since/until take every form
    of parse_time. Bad input raises InvalidInput; store failures StoreError."""
    if bucket not in BUCKETS:
        raise InvalidInput(f"bucket must be one of {', '.join(BUCKETS)}, not {bucket!r}")
    dims = parse_dimensions(by)
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be 1..{MAX_LIMIT}, not {limit}")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    start, end = _range(since, until, now=now)
    first = bucket_start(start, bucket)
    wallet_sql, params = _wallet_filter(wallet, members)
    table = ROLLUP_TABLES["day" if bucket == "month" else bucket]
    bucket_column = "month" if bucket == "month" else "start"
    where = " AND ".join(filter(None, [wallet_sql, "start >= ?", "start < ?"]))
    params += [int(first.timestamp()), _ceil_seconds(end)]
    credits_position = len(dims) + 3  # SELECT bucket, dims..., requests, credits
    sql = (f"SELECT {', '.join([bucket_column, *dims])}, "
           "CAST(SUM(requests) AS BIGINT), CAST(SUM(credits) AS BIGINT) "
           f"FROM {table} WHERE {where} GROUP BY {', '.join([bucket_column, *dims])} "
           f"ORDER BY {', '.join([bucket_column, f'{credits_position} DESC', *dims])}")
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    keys = ("start", *dims, "requests", "credits")
    starts: dict[int, str] = {}  # a bucket's start appears on many rows: format it once
    rows = []
    for start, *rest in store.rows(sql, params):
        text = starts.get(start)
        if text is None:
            text = starts[start] = iso_z(int(start))
        rows.append(dict(zip(keys, (text, *rest), strict=True)))
    return {"bucket": bucket, "since": iso_z(first), "until": iso_z(end), "rows": rows}


def _ceil_seconds(moment: datetime) -> int:
    return -((_EPOCH - moment) // timedelta(seconds=1))


def usage_events(store: Store, *, wallet: str, since: datetime | str | None = None,
                 until: datetime | str | None = None, route: str | None = None,
                 limit: int = 100, now: datetime | None = None) -> list[dict[str, Any]]:
    """The raw events of `wallet` charged in [since, until) (default: the last 24 h), newest
    first: `{"id", "time", "wallet", "consumer", "route", "service", "method", "path",
    "cost", "reserved", "status"}` (reserved and status null unless settled). Only events
    within the raw retention (7 days by default) are kept."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be 1..{MAX_LIMIT}, not {limit}")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    start, end = _range(since, until, now=now)
    where = ["wallet = ?", "ts_ms >= ?", "ts_ms < ?"]
    params: list[Any] = [parse_wallet(wallet), _ms(start), _ms(end)]
    if route is not None:
        where.append("route = ?")
        params.append(route)
    params.append(limit)
    records = store.rows(
        "SELECT event_id, ts_ms, wallet, consumer, route, service, method, path, cost, "
        f"reserved, status FROM usage_events WHERE {' AND '.join(where)} "
        "ORDER BY ts_ms DESC, event_id DESC LIMIT ?", params)
    events = []
    for record in records:
        event = dict(zip(_EVENT_FIELDS, record, strict=True))
        event["time"] = rfc3339(int(record[1]))
        events.append(event)
    return events


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)
