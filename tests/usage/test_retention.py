"""Retention with a fixed clock: each level pruned at its age, in batches, by the sink too."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from kong_credits.errors import InvalidInput
from kong_credits.rated_event import RatedEvent
from kong_credits.sinks.base import SinkConfig
from kong_credits.sinks.usage import UsageSink
from kong_credits.usage import Retention, Store
from kong_credits.usage.retention import parse_retention

NOW_MS = int(datetime(2026, 12, 2, 12, 0, tzinfo=UTC).timestamp() * 1000)
DAY_MS = 86_400_000


def aged(n: int, days: float) -> RatedEvent:
    return RatedEvent(event_id=f"old-{n}", wallet="acme", cost=1,
                      timestamp_ms=NOW_MS - int(days * DAY_MS) - n, route=f"r{n}")


def counts(store: Store) -> dict[str, int]:
    return {table: int(store.rows(f"SELECT COUNT(*) FROM {table}")[0][0])
            for table in ("usage_events", "usage_minute", "usage_hour", "usage_day")}


def test_each_level_is_kept_for_its_own_span(store: Store) -> None:
    ages = [0.5, 6.9, 7.2, 30, 89, 91, 400]
    store.ingest([aged(n, days) for n, days in enumerate(ages)], now_ms=NOW_MS - 400 * DAY_MS)
    assert counts(store) == dict.fromkeys(counts(store), len(ages))
    deleted = store.prune(Retention(), now_ms=NOW_MS)
    assert deleted == {"raw": 5, "minute": 5, "hour": 2}
    assert counts(store) == {"usage_events": 2, "usage_minute": 2, "usage_hour": 5,
                             "usage_day": 7}
    assert store.prune(Retention(), now_ms=NOW_MS) == {"raw": 0, "minute": 0, "hour": 0}


def test_a_raw_event_written_late_is_kept_its_span_after_the_write(store: Store) -> None:
    """A dead letter replayed 10 days late must still find its raw row if replayed again."""
    late = aged(1, 10)
    store.ingest([late], now_ms=NOW_MS)
    assert store.prune(Retention(), now_ms=NOW_MS + DAY_MS)["raw"] == 0
    assert store.ingest([late], now_ms=NOW_MS + DAY_MS) == 0
    assert store.prune(Retention(), now_ms=NOW_MS + 8 * DAY_MS)["raw"] == 1


def test_pruning_goes_in_small_batches(store: Store) -> None:
    store.ingest([aged(n, 100) for n in range(25)], now_ms=NOW_MS - 100 * DAY_MS)
    rounds = []
    while any((deleted := store.prune(Retention(), now_ms=NOW_MS, batch_rows=10)).values()):
        rounds.append(deleted["raw"])
    assert rounds == [10, 10, 5]


def test_the_sink_prunes_with_its_clock_and_configured_retention(usage_url: str) -> None:
    config = SinkConfig(store=usage_url, usage_retention=("raw=1d", "hour=2d", "day=forever"))
    clock = [NOW_MS / 1000]
    with httpx.Client() as client:
        sink = UsageSink(client, config, clock=lambda: clock[0])
        try:
            assert sink.deliver([aged(2, 1.5), aged(3, 5)]).delivered
            clock[0] += 1.2 * 86_400
            assert sink.deliver([aged(1, -0.7)]).delivered  # charged 0.5 d before the clock
            sink.housekeeping()
            # raw 1 d: only the fresh event; minute 7 d (default): all; hour 2 d: the fresh
            assert counts(sink.store) == {"usage_events": 1, "usage_minute": 3,
                                          "usage_hour": 1, "usage_day": 3}
        finally:
            sink.close()


@pytest.mark.parametrize("setting", ["raw", "raw=", "week=7d", "raw=0d", "raw=7", "raw=1.5d",
                                     "raw=-1d", "raw=7y"])
def test_bad_retention_settings_are_refused(setting: str) -> None:
    with pytest.raises(InvalidInput):
        parse_retention([setting])


def test_retention_defaults_and_overrides() -> None:
    assert parse_retention([]) == Retention(7 * DAY_MS, 7 * DAY_MS, 90 * DAY_MS, None)
    assert parse_retention(["minute=48h", "day=30d", "raw=forever"]) == Retention(
        None, 2 * DAY_MS, 90 * DAY_MS, 30 * DAY_MS)
