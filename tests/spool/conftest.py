"""The spool's end-to-end tests share one restartable redis-server per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from spool_outage import FUNDS, RestartableRedis

from kong_credits import wallets


@pytest.fixture(scope="module")
def restartable_redis() -> Iterator[RestartableRedis]:
    server = RestartableRedis().start()
    yield server
    server.close()


@pytest.fixture
def funded(restartable_redis: RestartableRedis) -> RestartableRedis:
    """The server restarted if a test left it down, emptied, every wallet funded."""
    if not restartable_redis.answers():
        restartable_redis.start()
    with restartable_redis.client() as client:
        client.flushall()
        for wallet, amount in FUNDS.items():
            wallets.grant(client, wallet, amount)
    return restartable_redis
