"""End to end over HTTP: httpx -> ProxyServer -> Host (+ kong-pdk) -> SampleUpstream."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import httpx

from kong_credits.host import Host, kong_pdk_server
from kong_credits.host.proxy import ProxyServer
from kong_credits.host.upstream import SampleUpstream

PLUGINS = Path(__file__).parent / "plugins"


def kong_yml(upstream_url: str) -> dict:
    return {
        "_format_version": "3.0",
        "services": [{"name": "echo-svc", "url": upstream_url, "routes": [
            {"name": "paid", "paths": ["/paid"], "plugins": [
                {"name": "key-auth"}, {"name": "echo", "config": {"message": "over http"}}]},
            {"name": "closed", "paths": ["/closed"], "plugins": [{"name": "paywall"}]},
        ]}],
        "consumers": [{"username": "alice", "keyauth_credentials": [{"key": "alice-key"}]}],
    }


def test_http_listener_end_to_end() -> None:
    async def main(prefix: str) -> None:
        upstream = SampleUpstream()
        await upstream.start()
        host = Host(kong_yml(upstream.url), [kong_pdk_server(PLUGINS, prefix)])
        server = ProxyServer(host, "127.0.0.1", 0)
        try:
            await host.start()
            await server.start()
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                ok = await client.get("/paid/anything?units=5", headers={
                    "apikey": "alice-key", "x-echo": "hello"})
                assert ok.status_code == 200
                assert ok.headers["X-Units-Used"] == "5"  # from the service
                assert ok.headers["X-Echo"] == "hello"  # from the plugin, in access
                assert ok.headers["X-Echo-Message"] == "over http"
                echoed = ok.json()
                assert echoed["path"] == "/anything"  # strip_path
                assert echoed["headers"]["X-Consumer-Username"] == "alice"
                assert echoed["headers"]["X-Forwarded-Host"] == "127.0.0.1"

                posted = await client.post("/paid/status/201", json={"a": 1},
                                           headers={"apikey": "alice-key"})
                assert posted.status_code == 201
                assert posted.json()["body"] == '{"a":1}'

                refused = await client.get("/paid")
                assert refused.status_code == 401
                assert refused.json()["message"] == "No API key found in request"

                closed = await client.get("/closed")
                assert closed.status_code == 402
                assert closed.json() == {"message": "Payment required", "balance": 0}

                missing = await client.get("/nowhere")
                assert missing.status_code == 404
                assert missing.json()["message"] == "no Route matched with those values"
            assert [r["path"] for r in upstream.requests] == ["/anything", "/status/201"]
        finally:
            await server.stop()
            await host.stop()
            await upstream.stop()

    with tempfile.TemporaryDirectory(prefix="kch-") as prefix:
        asyncio.run(asyncio.wait_for(main(prefix), 30))


def test_unreachable_service_is_a_502() -> None:
    async def main(prefix: str) -> None:
        config = {"_format_version": "3.0", "services": [
            {"name": "down", "url": "http://127.0.0.1:9", "routes": [
                {"name": "r", "paths": ["/"]}]}]}
        async with Host(config, [kong_pdk_server(PLUGINS, prefix)]) as host:
            response = await host.handle("GET", "/x")
            assert response.status == 502
            assert response.json()["message"] == ("An invalid response was received from the "
                                                  "upstream server")
            assert response.source == "error"

    with tempfile.TemporaryDirectory(prefix="kch-") as prefix:
        asyncio.run(asyncio.wait_for(main(prefix), 30))
