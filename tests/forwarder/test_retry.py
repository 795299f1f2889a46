"""retry.py: Retry-After parsing and jittered exponential backoff."""

from __future__ import annotations

import random

import pytest

from kong_credits.retry import MAX_RETRY_AFTER_S, Backoff, parse_retry_after

NOW = 1_767_225_600.0  # Thu, 01 Jan 2026 00:00:00 GMT


@pytest.mark.parametrize(("header", "seconds"), [
    ("120", 120.0),
    (" 3 ", 3.0),
    ("0", 0.0),
    ("1.5", 1.5),
    ("Thu, 01 Jan 2026 00:00:30 GMT", 30.0),
    ("Wed, 31 Dec 2025 23:59:00 GMT", 0.0),
    ("-5", 0.0),
    ("99999", MAX_RETRY_AFTER_S),
    (None, None),
    ("", None),
    ("soon", None),
    ("nan", None),
    ("Thu, 01 Jan 2026 00:00:30", None),
])
def test_retry_after_is_seconds_or_an_http_date(header: str | None,
                                                seconds: float | None) -> None:
    assert parse_retry_after(header, now_s=NOW) == seconds


def test_backoff_doubles_up_to_the_cap_with_full_jitter() -> None:
    backoff = Backoff(0.1, 1.0)
    assert [backoff.ceiling_s(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    rng = random.Random(1)
    draws = [backoff.delay_s(4, rng=rng) for _ in range(500)]
    assert 0 <= min(draws) < 0.1 and 0.7 < max(draws) <= 0.8
    assert backoff.ceiling_s(10_000) == 1.0


def test_retry_after_is_a_floor_with_a_little_jitter_on_top() -> None:
    rng = random.Random(2)
    draws = [Backoff(0.1, 1.0).delay_s(1, 5.0, rng=rng) for _ in range(200)]
    assert all(5.0 <= d <= 5.5 for d in draws)
    assert len(set(draws)) > 100


def test_backoff_needs_a_positive_base_below_the_cap() -> None:
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(2, 1)
