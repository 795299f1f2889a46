"""Host + the real stock kong-pdk plugin server (gevent) + the test plugins in plugins/."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from waits import wait_until_async

from kong_credits.host import DeclarativeError, Headers, Host, HostResponse, kong_pdk_server
from kong_credits.host.context import UpstreamRequest, UpstreamResponse
from kong_credits.host.supervisor import PluginServerProcess, PluginServerSpec

PLUGINS = Path(__file__).parent / "plugins"


class RecordingUpstream:
    """An in-process service: records what Kong would have sent, answers a fixed response."""

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self.requests: list[UpstreamRequest] = []
        self.headers = headers or {"X-Units-Used": "5", "Content-Type": "application/json"}

    async def __call__(self, request: UpstreamRequest) -> UpstreamResponse:
        self.requests.append(request)
        return UpstreamResponse(200, Headers(self.headers.items()), b'{"ok":true}')


@pytest.fixture(scope="module")
def server() -> Iterator[PluginServerSpec]:
    """One gevent kong-pdk server for the module; hosts connect to it as "managed elsewhere"."""
    with tempfile.TemporaryDirectory(prefix="kch-") as prefix:
        spec = kong_pdk_server(PLUGINS, prefix)
        process = PluginServerProcess(spec)
        process.start()
        try:
            process.wait_ready(15)
            yield replace(spec, start_cmd=None)
        finally:
            process.stop()


def kong_yml(plugins: list[dict[str, Any]], **route: Any) -> dict[str, Any]:
    return {
        "_format_version": "3.0",
        "services": [{"name": "svc", "url": "http://127.0.0.1:9/base", "routes": [
            {"name": "r1", "paths": ["/r1"], "plugins": plugins, **route}]}],
        "consumers": [
            {"username": "alice", "keyauth_credentials": [{"key": "alice-key"}]},
            {"username": "bob", "keyauth_credentials": [{"key": "bob-key"}]},
        ],
    }


def run(
    spec: PluginServerSpec, config: dict[str, Any],
    scenario: Callable[[Host, RecordingUpstream], Awaitable[None]], **host_options: Any,
) -> RecordingUpstream:
    upstream = RecordingUpstream()

    async def main() -> None:
        async with Host(config, [spec], upstream=upstream, **host_options) as host:
            await asyncio.wait_for(scenario(host, upstream), 20)

    asyncio.run(main())
    return upstream


def test_header_echo_reaches_client_and_upstream_request_is_kongs(server) -> None:
    async def scenario(host: Host, upstream: RecordingUpstream) -> None:
        response = await host.handle("GET", "/r1/items?a=1", {"x-echo": "yo"},
                                     client_ip="10.0.0.7")
        assert response.status == 200 and response.body == b'{"ok":true}'
        assert response.header("X-Echo") == "yo"
        assert response.header("X-Echo-Message") == "configured"
        assert response.header("X-Units-Used") == "5"
        assert response.header("X-Kong-Request-Id") == response.request_id
        assert response.pdk_calls == {"access": 2}
        assert [c.method for c in response.calls] == [
            "kong.request.get_header", "kong.response.set_headers"]

    upstream = run(server, kong_yml([{"name": "echo", "config": {"message": "configured"}}]),
                   scenario)
    (sent,) = upstream.requests
    assert (sent.host, sent.port, sent.path, sent.raw_query) == ("127.0.0.1", 9, "/base/items",
                                                                  "a=1")
    assert sent.headers.get("X-Forwarded-For") == "10.0.0.7"
    assert sent.headers.get("X-Forwarded-Prefix") == "/r1"
    assert sent.headers.get("Host") == "127.0.0.1:9"


def test_exit_402_short_circuits_access_and_upstream_but_log_runs(server, tmp_path) -> None:
    log = tmp_path / "log.jsonl"
    plugins = [{"name": "meter", "config": {"path": str(log)}}, {"name": "paywall"},
               {"name": "echo"}, {"name": "strict", "config": {"cost": 1}}]

    async def scenario(host: Host, upstream: RecordingUpstream) -> None:
        response = await host.handle("GET", "/r1")
        assert response.status == 402
        assert json.loads(response.body) == {"message": "Payment required", "balance": 0}
        assert response.header("Content-Type") == "application/json; charset=utf-8"
        assert response.header("X-Balance") == "0"
        assert response.header("X-Before-Exit") == "kept"  # set before exit: still sent
        assert response.header("X-Metered-Units") is None  # no response phase after exit
        assert response.header("X-Echo") == "none"  # echo (900) ran before paywall (800)
        assert response.header("X-Strict-Cost") is None  # strict (10) comes after: skipped
        assert response.source == "exit"
        await response.logged()
        assert response.pdk_calls == {"access": 6, "log": 2}
        assert [c.plugin for c in response.calls if c.phase == "access"] == [
            "echo", "echo", "meter", "meter", "paywall", "paywall"]
        assert upstream.requests == []

    run(server, kong_yml(plugins), scenario)
    entry = json.loads(log.read_text())
    assert entry["serialize"]["response"]["status"] == 402
    assert entry["serialize"]["source"] == "exit"
    assert entry["serialize"]["upstream_uri"] == ""


def test_exit_with_a_string_body_is_sent_as_is(server) -> None:
    async def scenario(host: Host, upstream: RecordingUpstream) -> None:
        response = await host.handle("GET", "/r1")
        assert (response.status, response.body) == (429, b"no credits left")
        assert response.header("Content-Type") == "text/plain"
        assert response.header("Content-Length") == "15"

    run(server, kong_yml([{"name": "paywall", "config": {"status": 429, "body": "string"}}]),
        scenario)


def test_pdk_function_raising_in_access_is_a_500(server) -> None:
    async def scenario(host: Host, upstream: RecordingUpstream) -> None:
        response = await host.handle("GET", "/r1")
        assert response.status == 500
        assert response.json() == {"message": "An unexpected error occurred"}
        assert response.source == "error"
        assert "function cannot be called in access phase" in response.errors[0]

    upstream = run(server, kong_yml([{"name": "boom", "config": {"mode": "pdk_raise"}}]),
                   scenario)
    assert upstream.requests == []


def test_handler_exception_is_no_data_and_the_request_goes_on(server) -> None:
    async def scenario(host: Host, upstream: RecordingUpstream) -> None:
        response = await host.handle("GET", "/r1")
        assert response.status == 200  # as Kong: log "no data", continue as if finished
        assert response.errors == ["[boom] no data"]

    upstream = run(server, kong_yml([{"name": "boom", "config": {"mode": "raise_after_call"}}]),
                   scenario, rpc_timeout_s=1.0)
    assert len(upstream.requests) == 1


def test_unknown_pdk_method_gets_a_step_without_data(server) -> None:
    async def scenario(host: Host, upstream: RecordingUpstream) -> None:
        response = await host.handle("GET", "/r1")
        assert response.status == 200
        assert response.header("X-Unknown-Data") == "None"
        assert response.errors == ["could not find pdk method: kong.nonexistent.method"]

    run(server, kong_yml([{"name": "boom", "config": {"mode": "unknown_method"}}]), scenario)


@pytest.mark.parametrize(("mode", "message"), [
    ("exit_in_log", "function cannot be called in log phase"),
    ("live_in_log", "API disabled in the current context"),
])
def test_log_phase_restrictions_raise_without_step(server, mode, message) -> None:
    async def scenario(host: Host, upstream: RecordingUpstream) -> None:
        response = await host.handle("GET", "/r1")
        assert response.status == 200
        await response.logged()
        assert message in response.errors[0]
        assert response.pdk_calls == {"log": 1}

    run(server, kong_yml([{"name": "boom", "config": {"mode": mode}}]), scenario)


def test_serialize_ctx_shared_and_response_phase(server, tmp_path) -> None:
    log = tmp_path / "log.jsonl"
    plugins = [{"name": "key-auth"}, {"name": "meter", "config": {"path": str(log)}}]

    async def scenario(host: Host, upstream: RecordingUpstream) -> None:
        response = await host.handle("POST", "/r1/x?q=1", {"apikey": "alice-key"}, b"{}")
        assert response.status == 200
        assert response.header("X-Metered-Units") == "5"  # response phase saw the upstream
        assert response.shared == {"meter_consumer": "alice"}
        await response.logged()
        assert response.pdk_calls == {"access": 2, "response": 2, "log": 2}

    run(server, kong_yml(plugins), scenario)
    entry = json.loads(log.read_text())
    assert entry["consumer"] == "alice"  # kong.ctx.shared: access -> log
    data = entry["serialize"]
    assert data["request"]["method"] == "POST"
    assert data["request"]["querystring"] == {"q": "1"}
    assert data["request"]["headers"]["apikey"] == "alice-key"
    assert data["upstream_uri"] == "/base/x?q=1"
    assert data["upstream_status"] == "200"
    assert data["response"]["status"] == 200
    assert data["consumer"]["username"] == "alice"
    assert data["route"]["name"] == "r1" and data["service"]["name"] == "svc"
    assert set(data["authenticated_entity"]) == {"id"}  # credential id only, as Kong
    assert isinstance(data["started_at"], int) and data["source"] == "service"


def test_key_auth_like_kong(server) -> None:
    plugins = [{"name": "key-auth", "config": {"hide_credentials": True}}, {"name": "echo"}]

    async def scenario(host: Host, upstream: RecordingUpstream) -> None:
        missing = await host.handle("GET", "/r1")
        assert missing.status == 401
        assert missing.json()["message"] == "No API key found in request"
        assert missing.json()["request_id"] == missing.request_id
        assert missing.header("WWW-Authenticate") == 'Key realm="kong"'
        assert missing.pdk_calls == {}  # key-auth runs first: echo never ran
        invalid = await host.handle("GET", "/r1", {"apikey": "nope"})
        assert (invalid.status, invalid.json()["message"]) == (
            401, "Invalid authentication credentials")
        duplicate = await host.handle("GET", "/r1", [("apikey", "a"), ("apikey", "b")])
        assert duplicate.json()["message"] == "Duplicate API key found"
        by_header = await host.handle("GET", "/r1", {"APIKEY": "alice-key"})
        by_query = await host.handle("GET", "/r1?apikey=bob-key&x=1")
        assert (by_header.status, by_query.status) == (200, 200)
        assert by_header.consumer["username"] == "alice"
        assert by_query.consumer["username"] == "bob"

    upstream = run(server, kong_yml(plugins), scenario)
    alice, bob = upstream.requests
    assert alice.headers.get("X-Consumer-Username") == "alice"
    assert alice.headers.get("apikey") is None  # hide_credentials
    assert (bob.raw_query, bob.headers.get("X-Consumer-Username")) == ("x=1", "bob")


def test_consumer_scoped_config_wins_after_authentication(server) -> None:
    config = kong_yml([{"name": "key-auth"}, {"name": "echo", "config": {"message": "route"}}])
    config["plugins"] = [{"name": "echo", "route": "r1", "consumer": "bob",
                          "config": {"message": "bob only"}}]

    async def scenario(host: Host, upstream: RecordingUpstream) -> None:
        alice = await host.handle("GET", "/r1", {"apikey": "alice-key"})
        bob = await host.handle("GET", "/r1", {"apikey": "bob-key"})
        assert alice.header("X-Echo-Message") == "route"
        assert bob.header("X-Echo-Message") == "bob only"
        assert host.instances.starts == 2  # one instance per plugin config

    run(server, config, scenario)


def test_invalid_plugin_config_refuses_to_start_with_every_field(server) -> None:
    config = kong_yml([{"name": "strict", "config": {"cost": -1, "limits": {"minute": 0},
                                                      "color": "red"}},
                       {"name": "paywall", "config": {"status": 200}}])

    async def main() -> None:
        host = Host(config, [server])
        with pytest.raises(DeclarativeError) as caught:
            await host.start()
        assert caught.value.errors == [
            "services[1].routes[1].plugins[1] (strict): config.color: unknown field",
            "services[1].routes[1].plugins[1] (strict): config.cost: value should be "
            "between 0 and 1000",
            "services[1].routes[1].plugins[1] (strict): config.limits.minute: value must be "
            "greater than 0",
            "services[1].routes[1].plugins[2] (paywall): config.status: value should be "
            "between 400 and 599",
        ]

    asyncio.run(main())


def test_reload_starts_new_instances_then_closes_old_ones(server) -> None:
    async def scenario(host: Host, upstream: RecordingUpstream) -> None:
        first = await host.handle("GET", "/r1")
        await host.reload(kong_yml([{"name": "echo", "config": {"message": "v2"}}]))
        second = await host.handle("GET", "/r1")
        assert (first.header("X-Echo-Message"), second.header("X-Echo-Message")) == ("v1", "v2")
        assert (host.instances.starts, host.instances.closes) == (2, 1)

    run(server, kong_yml([{"name": "echo", "config": {"message": "v1"}}]), scenario)


def test_restarted_plugin_server_loses_instances_and_the_host_restarts_them() -> None:
    async def main(prefix: str) -> None:
        spec = kong_pdk_server(PLUGINS, prefix)
        config = kong_yml([{"name": "echo", "config": {"message": "alive"}}])
        async with Host(config, [spec], upstream=RecordingUpstream()) as host:
            before = await host.handle("GET", "/r1")
            process = host.processes[spec.name]
            old_pid = process.pid
            assert old_pid is not None
            os.kill(old_pid, signal.SIGKILL)
            await wait_until_async(lambda: process.pid not in (None, old_pid))  # respawned
            await asyncio.to_thread(process.wait_ready, 15)
            after = await host.handle("GET", "/r1")
            assert (before.status, after.status) == (200, 200)
            assert after.header("X-Echo-Message") == "alive"
            assert after.errors == []  # `no plugin instance` is a restart, not an error
            assert host.instances.starts == 2 and process.spawns == 2

    with tempfile.TemporaryDirectory(prefix="kch-") as prefix:
        asyncio.run(main(prefix))


def test_threads_mode_server_works_too() -> None:
    async def main(prefix: str) -> None:
        spec = kong_pdk_server(PLUGINS, prefix, gevent=False)
        config = kong_yml([{"name": "paywall"}])
        async with Host(config, [spec], upstream=RecordingUpstream()) as host:
            responses: list[HostResponse] = await asyncio.gather(
                *(host.handle("GET", "/r1") for _ in range(5)))
            assert {r.status for r in responses} == {402}

    with tempfile.TemporaryDirectory(prefix="kch-") as prefix:
        asyncio.run(main(prefix))
