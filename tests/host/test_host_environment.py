"""The host starts plugin servers in the environment a Kong worker has: nginx cleared it.

Only TZ (and PATH, the host's one addition) plus what `nginx_main_env` declares reach the
plugin server, as kong.conf's `nginx_main_env = KONG_CREDITS_REDIS_URL` lets that variable
through to Kong's worker 0, which spawns the server.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis

from kong_credits import wallets
from kong_credits.host import Host, credits_server
from kong_credits.host.context import Headers, UpstreamRequest, UpstreamResponse
from kong_credits.host.supervisor import worker_environment
from kong_credits.schema import REDIS_URL_ENV


def test_worker_environment_keeps_tz_path_and_declared_variables_only() -> None:
    environ = {"TZ": "UTC", "PATH": "/usr/bin", "HOME": "/root", REDIS_URL_ENV: "redis://r/1",
               "AWS_SECRET_ACCESS_KEY": "x"}
    assert worker_environment(environ=environ) == {"TZ": "UTC", "PATH": "/usr/bin"}
    declared = worker_environment([REDIS_URL_ENV, "UNSET", "MODE=fast"], environ)
    assert declared == {"TZ": "UTC", "PATH": "/usr/bin", REDIS_URL_ENV: "redis://r/1",
                        "MODE": "fast"}


async def upstream(request: UpstreamRequest) -> UpstreamResponse:
    return UpstreamResponse(200, Headers([("Content-Type", "text/plain")]), b"ok")


def kong_yml(wallet: str) -> dict[str, Any]:
    """A credits plugin without redis_url: the plugin server picks the Redis."""
    return {
        "_format_version": "3.0",
        "services": [{"name": "api", "url": "http://upstream.invalid", "routes": [
            {"name": "paid", "paths": ["/paid"], "plugins": [
                {"name": "key-auth"}, {"name": "credits", "config": {"cost": 3}}]}]}],
        "consumers": [{"username": "u", "custom_id": wallet,
                       "keyauth_credentials": [{"key": "k"}]}],
    }


async def request_paid(wallet: str, nginx_main_env: Sequence[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="kc-env-", dir="/tmp") as prefix:
        async with Host(kong_yml(wallet), [credits_server(prefix)], upstream=upstream,
                        nginx_main_env=nginx_main_env) as host:
            response = await host.handle("GET", "/paid", {"apikey": "k"})
            await response.logged()
            return response.status


@pytest.fixture
def funded(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[redis.Redis, str]]:
    """A wallet holding 10 in a Redis named only by $KONG_CREDITS_REDIS_URL (database 5, so
    the fallback redis://127.0.0.1:6379/0 can never be it)."""
    url = redis_url.rsplit("/", 1)[0] + "/5"
    monkeypatch.setenv(REDIS_URL_ENV, url)
    client = redis.Redis.from_url(url, decode_responses=True)
    wallet = f"env-{uuid.uuid4().hex[:8]}"
    wallets.grant(client, wallet, 10)
    yield client, wallet
    client.close()


def test_plugin_server_uses_the_redis_nginx_main_env_passes(funded) -> None:
    client, wallet = funded
    assert asyncio.run(request_paid(wallet, [REDIS_URL_ENV])) == 200
    assert wallets.balance(client, wallet).balance == 7


def test_plugin_server_does_not_see_an_undeclared_variable(funded) -> None:
    client, wallet = funded
    # The fallback Redis: none (503, on_redis_error=deny) or one without this wallet (402).
    assert asyncio.run(request_paid(wallet, [])) in (402, 503)
    assert wallets.balance(client, wallet).balance == 10
