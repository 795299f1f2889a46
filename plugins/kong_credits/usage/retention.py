"""How long each level of the usage store is kept, and the parsing of `--retention`."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..errors import InvalidInput

__all__ = ["LEVELS", "Retention", "parse_retention"]

LEVELS = ("raw", "minute", "hour", "day")
_DAY_MS = 86_400_000
_SPAN = re.compile(r"([0-9]{1,6})([hd])")


@dataclass(frozen=True, slots=True)
class Retention:
    """Milliseconds each level is kept after its time; None: for ever.

    Defaults: raw events 7 days (drill-down), minute rollups 7 days, hour rollups 90 days,
    day rollups for ever. A raw event is also kept for `raw_ms` after it was written, so a
    late duplicate (a dead letter replayed days later) still finds it and is not counted
    twice.
    """

    raw_ms: int | None = 7 * _DAY_MS
    minute_ms: int | None = 7 * _DAY_MS
    hour_ms: int | None = 90 * _DAY_MS
    day_ms: int | None = None

    def of(self, level: str) -> int | None:
        return getattr(self, f"{level}_ms")  # type: ignore[no-any-return]


def parse_retention(settings: tuple[str, ...] | list[str], base: Retention | None = None
                    ) -> Retention:
    """`raw=7d`, `hour=2160h`, `day=forever`, ...: each overrides one level's default."""
    retention = base or Retention()
    for setting in settings:
        level, equals, span = setting.partition("=")
        level, span = level.strip(), span.strip()
        if not equals or level not in LEVELS:
            raise InvalidInput(f"retention must be LEVEL=SPAN with LEVEL one of "
                               f"{', '.join(LEVELS)}, not {setting!r}")
        if span == "forever":
            retention = replace(retention, **{f"{level}_ms": None})
            continue
        match = _SPAN.fullmatch(span)
        if not match or int(match.group(1)) < 1:
            raise InvalidInput(f"retention span must be a whole number of hours or days "
                               f"(48h, 7d) or 'forever', not {span!r}")
        hours = int(match.group(1)) * (24 if match.group(2) == "d" else 1)
        retention = replace(retention, **{f"{level}_ms": hours * 3_600_000})
    return retention
