"""usage/query.py: the `--json` document, dimensions, buckets, members, events, bad input."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from test_store import event

from kong_credits.errors import InvalidInput
from kong_credits.rated_event import RatedEvent
from kong_credits.usage import Store, parse_time, usage_events, usage_report

NOW = datetime(2026, 12, 2, 12, 30, 15, 500_000, tzinfo=UTC)
H = 3_600_000


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def make(n: int, wallet: str, when: str, cost: int, route: str = "r1",
         method: str = "GET") -> RatedEvent:
    return RatedEvent(event_id=f"q-{n}", wallet=wallet, cost=cost, timestamp_ms=at(when),
                      consumer=f"c-{wallet}", route=route, service="svc", method=method)


@pytest.fixture
def filled(store: Store) -> Store:
    store.ingest([
        make(1, "team", "2026-12-02T11:05:00+00:00", 5),
        make(2, "team/ann", "2026-12-02T11:10:00+00:00", 7, route="r2"),
        make(3, "team/bob", "2026-12-02T11:20:00+00:00", 1, method="POST"),
        make(4, "teamx", "2026-12-02T11:30:00+00:00", 100),
        make(5, "team/ann", "2026-12-02T12:01:00+00:00", 2, route="r2"),
        make(6, "team", "2026-11-15T08:00:00+00:00", 40),
        make(7, "team", "2026-12-01T09:00:00+00:00", 9),
    ])
    return store


def test_default_is_the_last_24_hours_by_hour_without_grouping(filled: Store) -> None:
    assert usage_report(filled, now=NOW) == {
        "bucket": "hour", "since": "2026-12-01T12:00:00Z", "until": "2026-12-02T12:30:16Z",
        "rows": [{"start": "2026-12-02T11:00:00Z", "requests": 4, "credits": 113},
                 {"start": "2026-12-02T12:00:00Z", "requests": 1, "credits": 2}]}


def test_rows_are_ordered_by_start_then_credits_descending(filled: Store) -> None:
    report = usage_report(filled, by="wallet", since="2026-12-02T11:00:00Z", now=NOW)
    assert [(r["start"][11:13], r["wallet"], r["credits"]) for r in report["rows"]] == [
        ("11", "teamx", 100), ("11", "team/ann", 7), ("11", "team", 5), ("11", "team/bob", 1),
        ("12", "team/ann", 2)]
    assert usage_report(filled, by="wallet", since="2026-12-02T11:00:00Z", now=NOW,
                        limit=2)["rows"] == report["rows"][:2]


def test_a_parent_with_members_sees_its_members_but_not_lookalike_names(filled: Store
                                                                        ) -> None:
    alone = usage_report(filled, wallet="team", bucket="day", since="7d", now=NOW)
    assert [(r["start"], r["credits"]) for r in alone["rows"]] == [
        ("2026-12-01T00:00:00Z", 9), ("2026-12-02T00:00:00Z", 5)]
    team = usage_report(filled, wallet="team", members=True, by=["wallet", "route", "method"],
                        bucket="day", since="2026-12-02", now=NOW)
    assert team["rows"] == [
        {"start": "2026-12-02T00:00:00Z", "wallet": "team/ann", "route": "r2",
         "method": "GET", "requests": 2, "credits": 9},
        {"start": "2026-12-02T00:00:00Z", "wallet": "team", "route": "r1", "method": "GET",
         "requests": 1, "credits": 5},
        {"start": "2026-12-02T00:00:00Z", "wallet": "team/bob", "route": "r1",
         "method": "POST", "requests": 1, "credits": 1}]


def test_since_is_rounded_down_to_its_bucket_and_months_are_calendar_months(filled: Store
                                                                            ) -> None:
    report = usage_report(filled, wallet="team", members=True, bucket="month",
                          since="2026-11-20T10:00:00+02:00", now=NOW)
    assert report["since"] == "2026-11-01T00:00:00Z"
    assert report["rows"] == [{"start": "2026-11-01T00:00:00Z", "requests": 1, "credits": 40},
                              {"start": "2026-12-01T00:00:00Z", "requests": 5, "credits": 24}]
    minutes = usage_report(filled, wallet="team/ann", bucket="minute",
                           since="2026-12-02T11:10:59Z", until="2026-12-02T11:11:00Z", now=NOW)
    assert minutes["since"] == "2026-12-02T11:10:00Z"
    assert minutes["rows"] == [{"start": "2026-12-02T11:10:00Z", "requests": 1, "credits": 7}]


def test_raw_events_newest_first_filtered_by_route(store: Store) -> None:
    store.ingest([event(n, at_ms=at("2026-12-02T10:00:00+00:00") + n, route=f"r{n % 2}",
                        reserved=5 if n == 3 else None) for n in range(6)])
    found = usage_events(store, wallet="acme", route="r1", now=NOW)
    assert [e["id"] for e in found] == ["ev-5", "ev-3", "ev-1"]
    assert found[1] == {"id": "ev-3", "time": "2026-12-02T10:00:00.003Z", "wallet": "acme",
                        "consumer": "alice", "route": "r1", "service": "s-api",
                        "method": "GET", "path": "/search/3", "cost": 3, "reserved": 5,
                        "status": 200}
    assert [e["id"] for e in usage_events(store, wallet="acme", limit=2, now=NOW)] == [
        "ev-5", "ev-4"]
    assert usage_events(store, wallet="acme", since="2026-12-02T10:00:00.004Z",
                        now=NOW)[-1]["id"] == "ev-4"
    assert usage_events(store, wallet="other", now=NOW) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"by": "wallet,colour"}, "unknown dimension"),
    ({"by": "route,route"}, "twice"),
    ({"bucket": "week"}, "bucket must be"),
    ({"since": "2026-12-02", "until": "2026-12-01"}, "before --since"),
    ({"since": "2026-12-02T10:00:00"}, "no zone"),
    ({"since": "yesterday"}, "ISO 8601"),
    ({"since": "99999999999d"}, "ISO 8601"),
    ({"members": True}, "needs a WALLET"),
    ({"wallet": " padded"}, "wallet"),
    ({"limit": 0}, "limit"),
])
def test_bad_input_is_refused_with_a_reason(store: Store, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        usage_report(store, now=NOW, **kwargs)


def test_parse_time_forms() -> None:
    assert parse_time("24h", now=NOW) == datetime(2026, 12, 1, 12, 30, 15, 500_000, tzinfo=UTC)
    assert parse_time("7d", now=NOW).day == 25
    assert parse_time("2026-12-01") == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_time("2026-12-01T23:00:00-02:00") == datetime(2026, 12, 2, 1, tzinfo=UTC)
    assert parse_time("2026-12-01T21:00:00Z") == datetime(2026, 12, 1, 21, tzinfo=UTC)
