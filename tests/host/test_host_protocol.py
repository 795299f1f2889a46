"""protocol + instances + bridge against a scripted server: the exact messages Kong sends."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from fake_server import FakePluginServer, Responder

from kong_credits.host.bridge import ExternalPlugin, PluginError, run_phase
from kong_credits.host.context import ClientRequest, Headers, RequestContext
from kong_credits.host.instances import InstanceCache
from kong_credits.host.pdk import NodeInfo, Pdk, PdkExit
from kong_credits.host.protocol import RpcClient, RpcError, RpcProtocolError


def run_with_server(
    responder: Responder, scenario: Callable[[FakePluginServer, str], Awaitable[None]],
    server_pid: int | None = None,
) -> FakePluginServer:
    """Start a fake server on a fresh socket, run `scenario`, stop everything."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "fake.sock")

        async def main() -> FakePluginServer:
            server = FakePluginServer(path, responder, server_pid=server_pid)
            await server.start()
            try:
                await asyncio.wait_for(scenario(server, path), 10)
            finally:
                await server.stop()
            return server

        return asyncio.run(main())


def echo(method: str, arg: Any) -> tuple:
    return ("ok", {"method": method, "arg": arg})


def test_msgids_start_at_1_and_are_shared_by_all_connections() -> None:
    async def scenario(server: FakePluginServer, path: str) -> None:
        rpc = RpcClient(path)
        assert await rpc.call("plugin.A", {"x": 1}) == {"method": "plugin.A", "arg": {"x": 1}}
        await asyncio.gather(*(rpc.call("plugin.B", {"i": i}) for i in range(3)))
        await rpc.call("plugin.CloseInstance", 7)
        await rpc.close()

    server = run_with_server(echo, scenario)
    assert [r.msgid for r in server.requests] == [1, 2, 3, 4, 5]
    assert server.requests[0].args == [{"x": 1}]
    assert server.requests[-1].args == [7]  # CloseInstance takes the bare id
    connections = {r.connection for r in server.requests}
    assert len(connections) == 3  # three calls in flight at once: three connections
    assert server.requests[-1].connection in connections  # an idle one was reused


def test_error_answers_and_broken_answers() -> None:
    answers = iter([("err", "boom"), ("ok", 1), ("bad_msgid",), ("eof",), ("ok", 2)])

    async def scenario(server: FakePluginServer, path: str) -> None:
        rpc = RpcClient(path)
        with pytest.raises(RpcError, match=r"^boom$"):
            await rpc.call("plugin.X", {})
        assert await rpc.call("plugin.X", {}) == 1
        with pytest.raises(RpcProtocolError, match="unexpected RPC response ID"):
            await rpc.call("plugin.X", {})
        with pytest.raises(RpcError, match=r"^no data$"):
            await rpc.call("plugin.X", {})
        assert await rpc.call("plugin.X", {}) == 2
        await rpc.close()

    server = run_with_server(lambda m, a: next(answers), scenario)
    first, second = server.requests[0].connection, server.requests[1].connection
    assert first == second  # an error answer leaves the connection usable


def test_timeout_is_no_data() -> None:
    async def scenario(server: FakePluginServer, path: str) -> None:
        rpc = RpcClient(path, timeout_s=0.2)
        with pytest.raises(RpcError, match=r"^no data$"):
            await rpc.call("plugin.X", {})
        await rpc.close()

    run_with_server(lambda m, a: ("hang",), scenario)


def test_connect_failure_is_an_rpc_error(tmp_path: Path) -> None:
    async def main() -> None:
        rpc = RpcClient(str(tmp_path / "missing.sock"))
        with pytest.raises(RpcError, match="trying to connect"):
            await rpc.call("plugin.X", {})

    asyncio.run(main())


def test_server_pid_change_drops_cached_instances() -> None:
    ids = iter(range(10, 20))

    def responder(method: str, arg: Any) -> tuple:
        return ("ok", {"Id": next(ids)}) if method == "plugin.StartInstance" else ("ok", None)

    async def scenario(server: FakePluginServer, path: str) -> None:
        cache = InstanceCache()
        rpc = RpcClient(path)
        rpc.on_notification = lambda label, pid: cache.server_pid(rpc, pid)
        conf = {"__plugin_id": "p1", "__seq__": 1}
        assert await cache.instance_id(rpc, "demo", conf) == 10
        assert await cache.instance_id(rpc, "demo", conf) == 10
        server.server_pid = 4243  # the plugin server was replaced
        await rpc.call("plugin.Ping", {})
        assert cache.cached_id("p1") is None
        assert await cache.instance_id(rpc, "demo", conf) == 11
        await rpc.close()

    run_with_server(responder, scenario, server_pid=4242)


def test_new_seq_starts_a_new_instance_then_closes_the_old_one() -> None:
    ids = iter(range(1, 10))

    def responder(method: str, arg: Any) -> tuple:
        return ("ok", {"Id": next(ids)}) if method == "plugin.StartInstance" else ("ok", None)

    async def scenario(server: FakePluginServer, path: str) -> None:
        cache, rpc = InstanceCache(), RpcClient(path)
        first = {"__plugin_id": "p1", "__seq__": 1, "cost": 1, "route_id": "r"}
        results = await asyncio.gather(*(cache.instance_id(rpc, "demo", first)
                                         for _ in range(5)))
        assert results == [1] * 5  # one StartInstance; the others wait for the claim
        assert await cache.instance_id(rpc, "demo", {**first, "__seq__": 2}) == 2
        await rpc.close()

    server = run_with_server(responder, scenario)
    assert [r.method for r in server.requests] == [
        "plugin.StartInstance", "plugin.StartInstance", "plugin.CloseInstance"]
    start = server.requests[0].args[0]
    assert start["Name"] == "demo"
    assert isinstance(start["Config"], str)  # a JSON string, not a map
    assert '"route_id":"r"' in start["Config"]
    assert server.requests[2].args == [1]


def _context() -> RequestContext:
    request = ClientRequest("GET", "/p", "a=1&a=2&flag",
                            Headers([("X-One", "1"), ("X-Two", "a"), ("x-two", "b")]))
    return RequestContext(request=request, phase="access")


def _plugin(rpc: RpcClient) -> ExternalPlugin:
    return ExternalPlugin("demo", 10, "1.0.0", ("access", "log"), {}, rpc)


def _pdk() -> Pdk:
    return Pdk(NodeInfo("node-1", "host-1"), lambda key, by_name: None)


def scripted_event(steps: list[Any]) -> Responder:
    """HandleEvent and each Step answer the next item of `steps` (a PDK call or "ret")."""
    queue = iter(steps)

    def responder(method: str, arg: Any) -> tuple:
        if method == "plugin.StartInstance":
            return ("ok", {"Id": 0})
        return ("ok", {"EventId": 99 if method == "plugin.HandleEvent" else 1,
                       "Data": next(queue)})

    return responder


def call(method: str, *args: Any) -> dict[str, Any]:
    return {"Method": method, "Args": list(args)}


def run_event(steps: list[Any], phase: str = "access", ctx: RequestContext | None = None,
              expect: type[Exception] | None = None) -> tuple[FakePluginServer, RequestContext]:
    context = ctx or _context()

    async def scenario(server: FakePluginServer, path: str) -> None:
        rpc = RpcClient(path)
        conf = {"__plugin_id": "p1", "__seq__": 1}
        try:
            if expect is None:
                await run_phase(_plugin(rpc), conf, phase, context, instances=InstanceCache(),
                                pdk=_pdk())
            else:
                with pytest.raises(expect):
                    await run_phase(_plugin(rpc), conf, phase, context,
                                    instances=InstanceCache(), pdk=_pdk())
        finally:
            await rpc.close()

    return run_with_server(scripted_event(steps), scenario), context


def steps_sent(server: FakePluginServer) -> list[tuple[str, dict[str, Any]]]:
    return [(r.method, r.args[0]) for r in server.requests
            if r.method not in ("plugin.StartInstance", "plugin.HandleEvent")]


def test_step_methods_and_data_shapes() -> None:
    server, ctx = run_event([
        call("kong.request.get_headers"),
        call("kong.request.get_query"),
        call("kong.request.get_raw_body"),
        call("kong.client.get_consumer"),
        call("kong.router.get_route"),
        call("kong.request.get_header", "x-one"),
        call("kong.nonexistent.method"),
        call("kong.node.get_id"),
        "ret",
    ])
    assert steps_sent(server) == [
        ("plugin.StepMultiMap", {"EventId": 99, "Data": {"x-one": ["1"], "x-two": ["a", "b"]}}),
        ("plugin.StepMultiMap", {"EventId": 99, "Data": {"a": ["1", "2"], "flag": []}}),
        ("plugin.Step", {"EventId": 99, "Data": b""}),  # raw body: msgpack bin
        ("plugin.StepConsumer", {"EventId": 99}),  # nil: no Data key
        ("plugin.StepRoute", {"EventId": 99}),
        ("plugin.Step", {"EventId": 99, "Data": "1"}),
        ("plugin.Step", {"EventId": 99}),  # unknown method: plain Step, no Data
        ("plugin.Step", {"EventId": 99, "Data": "node-1"}),
    ]
    assert ctx.errors == ["could not find pdk method: kong.nonexistent.method"]
    assert ctx.pdk_calls == {"access": 8}


def test_exit_sends_nothing_more() -> None:
    server, _ = run_event([call("kong.response.exit", 402, {"m": 1}), "ret"], expect=PdkExit)
    assert steps_sent(server) == []


def test_pdk_raise_sends_no_step_and_is_a_plugin_error() -> None:
    server, _ = run_event([call("kong.response.get_status"), "ret"], expect=PluginError)
    assert steps_sent(server) == []


def test_log_phase_has_no_live_request() -> None:
    server, _ = run_event([call("kong.request.get_method")], phase="log", expect=PluginError)
    assert steps_sent(server) == []


def test_no_plugin_instance_restarts_then_gives_up() -> None:
    def responder(method: str, arg: Any) -> tuple:
        if method == "plugin.StartInstance":
            return ("ok", {"Id": 5})
        return ("err", "No Plugin Instance #5")

    async def scenario(server: FakePluginServer, path: str) -> None:
        rpc = RpcClient(path)
        ctx = _context()
        await run_phase(_plugin(rpc), {"__plugin_id": "p1", "__seq__": 1}, "access", ctx,
                        instances=InstanceCache(), pdk=_pdk(), max_restarts=2)
        assert "gave up after 2 instance restarts" in ctx.errors[-1]
        await rpc.close()

    server = run_with_server(responder, scenario)
    assert [r.method for r in server.requests] == [
        "plugin.StartInstance", "plugin.HandleEvent"] * 3


def test_other_errors_are_logged_and_the_phase_counts_as_finished() -> None:
    def responder(method: str, arg: Any) -> tuple:
        if method == "plugin.StartInstance":
            return ("ok", {"Id": 5})
        return ("err", "event id 3 not found")

    async def scenario(server: FakePluginServer, path: str) -> None:
        rpc = RpcClient(path)
        ctx = _context()
        await run_phase(_plugin(rpc), {"__plugin_id": "p1", "__seq__": 1}, "access", ctx,
                        instances=InstanceCache(), pdk=_pdk())
        assert ctx.errors == ["[demo] event id 3 not found"]
        await rpc.close()

    run_with_server(responder, scenario)
