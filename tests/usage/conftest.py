"""Fixtures of the usage store tests: every test runs on a SQLite file and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kong_credits.usage import Store, open_store


@pytest.fixture(params=["sqlite", "postgresql"], ids=lambda kind: f"store={kind}")
def usage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new, empty usage store of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/usage.db"
    return request.getfixturevalue("postgres").new_database()  # type: ignore[no-any-return]


@pytest.fixture
def store(usage_url: str) -> Iterator[Store]:
    with open_store(usage_url, create=True) as opened:
        yield opened


@pytest.fixture
def open_more(usage_url: str) -> Iterator[Callable[[], Store]]:
    """More connections to the same store (another writer, a reader), closed after the test."""
    opened: list[Store] = []

    def make() -> Store:
        opened.append(open_store(usage_url))
        return opened[-1]

    yield make
    for each in opened:
        each.close()
