"""usage/store.py: URLs, migrations, exactly-once ingest and the rollups, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from kong_credits.rated_event import RatedEvent
from kong_credits.usage import Store, StoreError, open_store, usage_report
from kong_credits.usage.schema import SCHEMA_VERSION
from kong_credits.usage.store import mask_url

T0 = int(datetime(2026, 12, 1, 21, 0, tzinfo=UTC).timestamp() * 1000)


def event(n: int, *, wallet: str = "acme", cost: int = 3, at_ms: int = T0,
          route: str = "r-search", reserved: int | None = None) -> RatedEvent:
    return RatedEvent(event_id=f"ev-{n}", wallet=wallet, cost=cost, timestamp_ms=at_ms,
                      consumer="alice", route=route, service="s-api", method="GET",
                      path=f"/search/{n}", reserved=reserved,
                      status=200 if reserved is not None else None)


def totals(store: Store, table: str) -> tuple[int, int, int]:
    [(requests, credits, reserved)] = store.rows(
        f"SELECT CAST(SUM(requests) AS BIGINT), CAST(SUM(credits) AS BIGINT), "
        f"CAST(SUM(reserved) AS BIGINT) FROM {table}")
    return int(requests or 0), int(credits or 0), int(reserved or 0)


def test_a_new_store_is_at_the_latest_schema_version(store: Store) -> None:
    assert store.schema_version() == SCHEMA_VERSION


def test_each_event_is_counted_once_however_often_it_is_written(store: Store,
                                                                 open_more) -> None:
    events = [event(n, cost=n, at_ms=T0 + n * 1000) for n in range(100)]
    assert store.ingest(events) == 100
    assert store.ingest(events[:50]) == 0
    assert open_more().ingest([*events[25:75], event(100, cost=7)]) == 1
    assert store.ingest([event(101), event(101)]) == 1
    expected = (102, sum(range(100)) + 7 + 3, 0)
    for table in ("usage_minute", "usage_hour", "usage_day"):
        assert totals(store, table) == expected
    assert store.rows("SELECT COUNT(*) FROM usage_events")[0][0] == 102


def test_rollups_sum_per_minute_hour_and_day_and_keep_settled_reservations(store: Store
                                                                           ) -> None:
    store.ingest([event(1, cost=2, at_ms=T0 + 5_000), event(2, cost=4, at_ms=T0 + 59_999),
                  event(3, cost=8, at_ms=T0 + 60_000, reserved=10),
                  event(4, cost=16, at_ms=T0 + 3_600_000)])
    minutes = store.rows("SELECT start, requests, credits, reserved FROM usage_minute "
                         "ORDER BY start")
    start = T0 // 1000
    assert [tuple(map(int, m)) for m in minutes] == [
        (start, 2, 6, 0), (start + 60, 1, 8, 10), (start + 3600, 1, 16, 0)]
    hours = store.rows("SELECT start, requests, credits FROM usage_hour ORDER BY start")
    assert [tuple(map(int, h)) for h in hours] == [(start, 3, 14), (start + 3600, 1, 16)]
    [(day, month, requests, credits)] = store.rows(
        "SELECT start, month, requests, credits FROM usage_day")
    assert (int(day), int(month), int(requests), int(credits)) == (
        int(datetime(2026, 12, 1, tzinfo=UTC).timestamp()),
        int(datetime(2026, 12, 1, tzinfo=UTC).timestamp()), 4, 30)


def test_the_largest_amounts_and_unusual_names_are_kept_exactly(store: Store) -> None:
    big = 10**15
    names = ["team/ålice", "ü/名前", "a'b\"c;--", "x" * 200]
    store.ingest([event(i, wallet=name, cost=big, route="r/%_?") for i, name in
                  enumerate(names)] + [event(9, wallet=names[0], cost=big, route="r/%_?")])
    report = usage_report(store, wallet=names[0], by=["route"], bucket="day",
                          since="2026-12-01", until="2026-12-02")
    assert report["rows"] == [{"start": "2026-12-01T00:00:00Z", "route": "r/%_?",
                               "requests": 2, "credits": 2 * big}]
    assert totals(store, "usage_day")[1] == 5 * big


def test_an_older_store_is_upgraded_keeping_its_data_and_a_newer_one_refused(
        usage_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from kong_credits.usage import store as store_module

    with open_store(usage_url, create=True) as store:
        store.ingest([event(1)])
    step = ["ALTER TABLE usage_events ADD COLUMN note {text}"]
    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, step])
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with open_store(usage_url) as store:
        assert store.schema_version() == SCHEMA_VERSION + 1
        assert store.rows("SELECT event_id, note FROM usage_events") == [("ev-1", None)]
    monkeypatch.undo()
    with pytest.raises(StoreError, match="newer than this kong-credits"):
        open_store(usage_url)


def test_bad_urls_and_missing_files_are_refused_with_the_password_masked(tmp_path: Path,
                                                                        postgres) -> None:
    with pytest.raises(StoreError, match="no usage store at"):
        open_store(f"sqlite:///{tmp_path}/missing.db")
    assert not (tmp_path / "missing.db").exists()
    for url in ("mysql://u:pw@h/db", "sqlite://relative.db", "sqlite:///", "redis://x"):
        with pytest.raises(StoreError, match="must"):
            open_store(url)
    wrong = postgres.url().replace("pg-secret", "wrong-secret")
    with pytest.raises(StoreError) as refused:
        open_store(wrong)
    assert "secret" not in str(refused.value)
    assert "***" in str(refused.value)
    assert mask_url("postgresql://u:p%40ss@h:5/d") == "postgresql://u:***@h:5/d"


def test_postgresql_connection_lost_fails_one_call_then_reconnects(postgres) -> None:
    import psycopg

    with open_store(postgres.new_database(), create=True) as store:
        store.ingest([event(1)])
        pid = store.rows("SELECT pg_backend_pid()")[0][0]
        with psycopg.connect(postgres.url(), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreError):
            store.ingest([event(2)])
        assert store.ingest([event(2), event(1)]) == 1
        assert totals(store, "usage_hour") == (2, 6, 0)


def test_a_store_has_one_identity_whatever_url_names_it(tmp_path: Path, postgres,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///usage.db", create=True) as relative, \
            open_store(f"sqlite:///{tmp_path}/usage.db") as absolute:
        assert relative.identity == absolute.identity == f"sqlite:///{tmp_path}/usage.db"
    url = postgres.new_database()
    with open_store(url) as store:
        assert store.identity == f"postgresql://kc@127.0.0.1:{postgres.port}/{url.rsplit('/')[-1]}"
        assert "secret" not in store.identity
