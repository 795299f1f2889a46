"""Times as users write them (`--since`, `--until`) and bucket boundaries, all UTC."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from ..errors import InvalidInput

__all__ = ["BUCKETS", "bucket_start", "iso_z", "month_start_s", "parse_time", "to_datetime"]

BUCKETS = ("minute", "hour", "day", "month")
_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_DURATION = re.compile(r"([0-9]{1,9})([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """`2026-12-01T21:00:00Z` (ISO 8601 with a zone), `2026-12-01` (midnight UTC) or a
    duration back from `now`: `90s`, `30m`, `24h`, `7d`, `2w`. Returns an aware UTC datetime;
    anything else raises InvalidInput saying which forms are accepted."""
    if not isinstance(text, str):
        raise InvalidInput(f"time must be a string, not {text!r}")
    text = text.strip()
    try:
        if match := _DURATION.fullmatch(text):
            seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            return (now or datetime.now(UTC)).astimezone(UTC) - timedelta(seconds=seconds)
        if _DATE.fullmatch(text):
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        pass
    else:
        if moment.tzinfo is not None:
            return moment.astimezone(UTC)
        raise InvalidInput(f"time {text!r} has no zone: add Z or +HH:MM")
    raise InvalidInput(f"time must be ISO 8601 with a zone (2026-12-01T21:00:00Z), a date "
                       f"(2026-12-01) or a duration back from now (24h, 7d), not {text!r}")


def to_datetime(value: datetime | str | None, *, now: datetime) -> datetime | None:
    """A datetime, a string for parse_time, or None (left to the caller's default)."""
    if value is None or isinstance(value, datetime):
        if isinstance(value, datetime) and value.tzinfo is None:
            raise InvalidInput("times must carry a zone")
        return value.astimezone(UTC) if value else None
    return parse_time(value, now=now)


def bucket_start(moment: datetime, bucket: str) -> datetime:
    """The start of the bucket holding `moment`: minute, hour, day or calendar month (UTC)."""
    moment = moment.astimezone(UTC)
    if bucket == "month":
        return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    size = _SECONDS[bucket]
    seconds = int(moment.timestamp()) // size * size
    return datetime.fromtimestamp(seconds, tz=UTC)


@lru_cache(maxsize=4096)
def month_start_s(epoch_s: int) -> int:
    """The first second of the calendar month holding `epoch_s` (UTC)."""
    moment = datetime.fromtimestamp(epoch_s, tz=UTC)
    return int(moment.replace(day=1, hour=0, minute=0, second=0).timestamp())


def iso_z(moment: datetime | int) -> str:
    """`2026-12-01T21:00:00Z`: whole seconds, UTC (an int is seconds since the epoch)."""
    if isinstance(moment, int):
        moment = datetime.fromtimestamp(moment, tz=UTC)
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%S}Z"
