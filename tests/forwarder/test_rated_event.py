"""rated_event.py: stream fields -> RatedEvent, strictly."""

from __future__ import annotations

import pytest

from kong_credits.rated_event import MalformedEvent, RatedEvent, rfc3339

FIELDS = {"event_id": "req-1", "wallet": "acme", "consumer": "alice", "route": "search",
          "service": "api", "method": "GET", "path": "/s", "cost": "12",
          "timestamp": "1767225600123"}


def test_authorized_and_settled_events_parse() -> None:
    event = RatedEvent.from_fields(FIELDS)
    assert (event.event_id, event.cost, event.timestamp_ms, event.reserved, event.status) == (
        "req-1", 12, 1_767_225_600_123, None, None)
    settled = RatedEvent.from_fields({**FIELDS, "reserved": "20", "status": "503"})
    assert (settled.reserved, settled.status) == (20, 503)
    assert RatedEvent.from_fields({**FIELDS, "status": ""}).status is None


@pytest.mark.parametrize(("change", "message"), [
    ({"cost": "1.5"}, "cost must be a non-negative integer"),
    ({"cost": "-1"}, "cost must be"),
    ({"cost": "\u0661"}, "cost must be"),  # an Arabic-Indic digit: isdigit() but not ASCII
    ({"timestamp": ""}, "missing field"),
    ({"event_id": ""}, "missing field.*event_id"),
    ({"reserved": "x"}, "reserved must be"),
])
def test_malformed_entries_are_refused_with_the_field(change: dict[str, str],
                                                      message: str) -> None:
    with pytest.raises(MalformedEvent, match=message):
        RatedEvent.from_fields({**FIELDS, **change})


def test_rfc3339_keeps_milliseconds_in_utc() -> None:
    assert rfc3339(1_767_225_600_001) == "2026-01-01T00:00:00.001Z"
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"


def test_detail_fields_are_kept_in_their_order_and_empty_ones_are_absent() -> None:
    assert RatedEvent.from_fields(FIELDS).details == {}
    event = RatedEvent.from_fields({**FIELDS, "proxy_ms": "40", "overage": "3",
                                    "parent_cost": "", "unrelated": "x"})
    assert list(event.details.items()) == [("overage", 3), ("proxy_ms", 40)]
    with pytest.raises(MalformedEvent, match="price_seconds must be"):
        RatedEvent.from_fields({**FIELDS, "price_seconds": "1e3"})


def test_missing_text_fields_are_empty() -> None:
    bare = {name: FIELDS[name] for name in ("event_id", "wallet", "cost", "timestamp")}
    event = RatedEvent.from_fields(bare)
    assert (event.consumer, event.route, event.service, event.method, event.path) == (
        "", "", "", "", "")
