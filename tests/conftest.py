"""Shared fixtures: one real Redis server per test session, on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from kong_credits.redis_server import EmbeddedRedis

pytest_plugins = ["skip_check"]  # a skip not declared in expected_skips fails the run


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A redis-py client on an empty database."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushall()
    yield client
    client.close()
