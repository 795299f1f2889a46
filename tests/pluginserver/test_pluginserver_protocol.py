"""The plugin server against a host playing Kong's side of the MessagePack-RPC protocol."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import time
from pathlib import Path

import msgpack
import pytest
from waits import wait_until

from kong_credits.pluginserver import PluginServer, load_directory
from kong_credits.pluginserver.ids import id_counter
from kong_credits.pluginserver.wire import EventAnswer, pack, pack_answer

STEP_METHODS = [
    "plugin.Step",
    "plugin.StepError",
    "plugin.StepCredential",
    "plugin.StepConsumer",
    "plugin.StepRoute",
    "plugin.StepService",
    "plugin.StepMemoryStats",
    "plugin.StepMultiMap",
]


def idle(status: dict) -> bool:
    return status["Events"] == 0 and status["RunningHandlers"] == 0


# --- instances ----------------------------------------------------------------------------


def test_start_instance_answers_id_and_decoded_config(kong):
    config = {"header": "X-Out", "route_id": "r1", "__seq__": 3}
    answer = kong.ok("plugin.StartInstance", {"Name": "echo", "Config": json.dumps(config)})
    assert answer["Name"] == "echo"
    assert isinstance(answer["Id"], int) and answer["Id"] < 2**53
    assert answer["Config"] == config
    assert isinstance(answer["StartTime"], float)
    assert kong.ok("plugin.InstanceStatus", answer["Id"]) == answer


def test_start_instance_of_unknown_plugin_is_an_error(kong):
    error, result = kong.call("plugin.StartInstance", {"Name": "nope", "Config": "{}"})
    assert error == "nope not initialized" and result is None


def test_failing_plugin_constructor_is_answered_not_raised(kong, caplog):
    error, _ = kong.call(
        "plugin.StartInstance", {"Name": "raising", "Config": json.dumps({"fail_start": True})}
    )
    assert error == "failed to start an instance of raising: RuntimeError: bad config"
    assert "no plugin instance" not in error.lower()  # would make Kong loop on restarts
    assert "Traceback" in caplog.text


def test_unknown_instance_gets_the_text_kong_restarts_on(kong):
    for method, arg in [
        ("plugin.HandleEvent", {"InstanceId": 4242, "EventName": "access"}),
        ("plugin.InstanceStatus", 4242),
        ("plugin.CloseInstance", 4242),
    ]:
        assert kong.call(method, arg) == ("no plugin instance #4242", None)


def test_close_instance_runs_close_and_forgets_the_instance(server, kong):
    instance_id = kong.start_instance("closing", {"tag": "a"})
    answer = kong.ok("plugin.CloseInstance", instance_id)
    assert answer == {"Name": "closing", "Id": instance_id, "Config": {"tag": "a"}}
    assert sys.modules["_kong_plugin_closing"].CLOSED == [{"tag": "a"}]
    error, _ = kong.call("plugin.HandleEvent", {"InstanceId": instance_id, "EventName": "access"})
    assert error == f"no plugin instance #{instance_id}"


def test_ids_of_a_restarted_server_start_elsewhere():
    """Kong keeps cached instance ids across our restarts: a new process must not reuse them."""
    first = id_counter()
    time.sleep(0.002)  # ids start at the millisecond clock
    second = id_counter()
    a, b = next(first), next(second)
    assert a != b and b - a >= 2**16  # room for 65536 ids per millisecond of uptime
    assert max(a, b) < 2**53  # Kong's Lua numbers are doubles


def test_status_and_plugin_info(server, kong):
    instance_id = kong.start_instance("echo")
    status = kong.status()
    assert status["Events"] == 0 and status["RunningHandlers"] == 0
    echo = status["Plugins"]["echo"]
    assert [i["Id"] for i in echo["Instances"]] == [instance_id]
    assert echo["LastStartInstance"] > 0
    info = kong.ok("plugin.GetPluginInfo", "echo")
    assert info == server.rpc.plugins["echo"].info()
    assert info["Phases"] == ["log", "access"] and info["Priority"] == 7


# --- events -------------------------------------------------------------------------------


def test_event_round_trip(kong):
    instance_id = kong.start_instance("echo", {"header": "X-Out"})
    event_id, data = kong.handle_event(instance_id, "access")
    assert data == {"Method": "kong.request.get_header", "Args": ["x-input"]}
    data = kong.step(event_id, "hello")
    assert data == {"Method": "kong.response.set_header", "Args": ["X-Out", "hello"]}
    assert kong.step(event_id) == "ret"
    assert idle(kong.status())


def test_phase_set_to_none_on_the_instance_is_answered_ret_at_once(kong):
    quiet = kong.start_instance("echo", {"quiet": True})
    event_id, data = kong.handle_event(quiet, "log")
    assert data == "ret" and isinstance(event_id, int)
    assert idle(kong.status())
    chatty = kong.start_instance("echo")
    _, data = kong.handle_event(chatty, "log")
    assert data["Method"] == "kong.log.info"


def test_absent_data_is_none_and_bin_is_bytes(kong):
    instance_id = kong.start_instance("echo")
    event_id, _ = kong.handle_event(instance_id, "access")
    assert kong.step(event_id)["Args"] == ["X-Echo", None]
    assert kong.step(event_id) == "ret"
    event_id, _ = kong.handle_event(instance_id, "access")
    assert kong.step(event_id, b"\x00\xff")["Args"] == ["X-Echo", b"\x00\xff"]


@pytest.mark.parametrize("method", STEP_METHODS)
def test_every_step_method_behaves_as_step(kong, method):
    instance_id = kong.start_instance("echo")
    event_id, _ = kong.handle_event(instance_id, "access")
    assert kong.step(event_id, "v", method=method)["Args"] == ["X-Echo", "v"]
    assert kong.step(event_id, method=method) == "ret"


def test_steps_may_arrive_on_other_connections(server):
    a, b, c = server.connect(), server.connect(), server.connect()
    instance_id = a.start_instance("echo")
    event_id, _ = b.handle_event(instance_id, "access")
    assert c.step(event_id, "x")["Args"] == ["X-Echo", "x"]
    assert a.step(event_id) == "ret"


def test_log_arguments_are_stringified_like_kong_pdk(kong):
    instance_id = kong.start_instance("echo")
    _, data = kong.handle_event(instance_id, "log")
    assert data == {"Method": "kong.log.info", "Args": ["done", 1, "2.5", "None"]}


def test_unknown_event_and_finished_event_are_errors(kong):
    assert kong.call("plugin.Step", {"EventId": 77, "Data": 1}) == ("event id 77 not found", None)
    instance_id = kong.start_instance("echo")
    event_id, _ = kong.handle_event(instance_id, "access")
    kong.step(event_id, "x")
    assert kong.step(event_id) == "ret"
    assert kong.call("plugin.Step", {"EventId": event_id}) == (
        f"event id {event_id} not found",
        None,
    )


def test_phase_the_plugin_lacks_is_an_error(kong):
    instance_id = kong.start_instance("echo")
    error, _ = kong.call("plugin.HandleEvent", {"InstanceId": instance_id, "EventName": "preread"})
    assert error == "echo has no preread phase"


# --- failures never hang ------------------------------------------------------------------


def test_exception_before_first_call_is_answered_and_takes_no_lock(kong, caplog):
    instance_id = kong.start_instance("raising")
    for _ in range(3):  # kong-pdk hangs every later HandleEvent here
        error, result = kong.call(
            "plugin.HandleEvent", {"InstanceId": instance_id, "EventName": "access"}
        )
        assert result is None
        assert error.endswith("access failed: RuntimeError: boom before any PDK call")
    assert "Traceback" in caplog.text
    assert wait_until(lambda: idle(kong.status()))


def test_exception_after_a_pdk_call_is_the_step_answer(kong):
    instance_id = kong.start_instance("raising")
    event_id, data = kong.handle_event(instance_id, "log")
    assert data["Method"] == "kong.request.get_path"
    error, _ = kong.call("plugin.Step", {"EventId": event_id, "Data": "/"})
    assert error.endswith("log failed: ValueError: boom after a PDK call")
    assert wait_until(lambda: idle(kong.status()))


def test_unencodable_pdk_argument_fails_at_the_call_site(kong):
    instance_id = kong.start_instance("raising")
    error, _ = kong.call("plugin.HandleEvent", {"InstanceId": instance_id, "EventName": "response"})
    assert "TypeError" in error and "set" in error
    assert wait_until(lambda: idle(kong.status()))


def test_unawaited_pdk_call_is_reported_not_hung(kong, caplog):
    instance_id = kong.start_instance("raising")
    event_id, data = kong.handle_event(instance_id, "rewrite")
    assert data["Method"] == "kong.request.get_path"  # sent; the second call raised PDKError
    assert wait_until(lambda: idle(kong.status()))
    assert "await each" in caplog.text
    assert kong.call("plugin.Step", {"EventId": event_id})[0] == f"event id {event_id} not found"


def test_slow_handler_blocks_only_its_own_event(server):
    slow_conn, fast_conn = server.connect(), server.connect()
    slow = slow_conn.start_instance("slow", {"delay_s": 1.0})
    fast = fast_conn.start_instance("echo")
    msgid = slow_conn.send("plugin.HandleEvent", {"InstanceId": slow, "EventName": "access"})
    for _ in range(5):  # served while the slow handler still sleeps
        event_id, _ = fast_conn.handle_event(fast, "access")
        fast_conn.step(event_id, "x")
        assert fast_conn.step(event_id) == "ret"
    assert fast_conn.status()["RunningHandlers"] == 1  # the slow one, still before its call
    got, error, result = slow_conn.receive()
    assert (got, error) == (msgid, None)
    assert result["Data"] == {"Method": "kong.log.notice", "Args": ["slept"]}


def test_idle_event_expires_and_its_handler_is_cancelled(start_server):
    server = start_server(event_timeout_s=0.2)
    kong = server.connect()
    instance_id = kong.start_instance("echo")
    event_id, _ = kong.handle_event(instance_id, "access")  # Kong never Steps (its PDK raised)
    assert wait_until(lambda: idle(kong.status()))
    assert kong.call("plugin.Step", {"EventId": event_id})[0] == f"event id {event_id} not found"


def test_handler_silent_past_the_timeout_is_answered_with_an_error(start_server):
    server = start_server(event_timeout_s=0.2)
    kong = server.connect()
    instance_id = kong.start_instance("slow", {"delay_s": 30})
    error, _ = kong.call("plugin.HandleEvent", {"InstanceId": instance_id, "EventName": "access"})
    assert "expired" in error
    assert wait_until(lambda: idle(kong.status()))


# --- kong.response.exit / error -----------------------------------------------------------


def test_exit_is_sent_and_ends_the_event(kong):
    instance_id = kong.start_instance("exiting")
    event_id, data = kong.handle_event(instance_id, "access")
    assert data == {
        "Method": "kong.response.exit",
        "Args": [403, {"message": "no"}, {"X-Why": "test"}],
    }
    assert kong.status()["Events"] == 0  # Kong will never Step it: nothing kept
    assert kong.call("plugin.Step", {"EventId": event_id})[0] == f"event id {event_id} not found"


def test_error_as_a_later_call_ends_the_event(kong):
    instance_id = kong.start_instance("exiting")
    event_id, data = kong.handle_event(instance_id, "response")
    assert data["Method"] == "kong.response.get_status"
    assert kong.step(event_id, 502) == {"Method": "kong.response.error", "Args": [502, "replaced"]}
    assert wait_until(lambda: idle(kong.status()))


def test_plain_function_handler_can_exit(kong):
    instance_id = kong.start_instance("exiting")
    _, data = kong.handle_event(instance_id, "rewrite")
    assert data == {"Method": "kong.response.error", "Args": [429, "slow down"]}
    assert wait_until(lambda: idle(kong.status()))


def test_pdk_call_after_exit_raises_in_the_handler_and_is_logged(kong, caplog):
    instance_id = kong.start_instance("exiting", {"after": "call"})
    _, data = kong.handle_event(instance_id, "access")
    assert data["Method"] == "kong.response.exit"
    assert wait_until(lambda: idle(kong.status()))
    assert "kong.log.err after the event ended" in caplog.text


@pytest.mark.parametrize("after", ["return", "sleep", "call"])
def test_many_exit_events_leave_nothing_behind(server, caplog, after):
    """Memory stays flat: counts, not timings. kong-pdk keeps every such event forever."""
    caplog.set_level(logging.ERROR)  # "call" logs a warning per event
    conns = [server.connect() for _ in range(4)]
    instance_id = conns[0].start_instance("exiting", {"after": after})
    events = 20_000 if after == "return" else 2_000
    for n in range(events):
        _, data = conns[n % 4].handle_event(instance_id, "access")
        assert data["Method"] == "kong.response.exit"
    assert conns[0].status()["Events"] == 0
    assert wait_until(lambda: idle(conns[0].status()))
    assert not server.rpc.events._running and not server.rpc.events._events
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # exit returned None


# --- wire -----------------------------------------------------------------------------------


def test_unknown_method_is_answered(kong):
    error, result = kong.call("plugin.SetPluginDir", {})
    assert (error, result) == ("method plugin.SetPluginDir is not supported", None)


def test_garbage_closes_only_that_connection(server):
    bad, good = server.connect(), server.connect()
    bad.sock.sendall(msgpack.packb("hello"))
    assert bad.sock.recv(100) == b""
    assert good.status()["Events"] == 0


def test_event_answer_framing_matches_plain_packing():
    for msgid, event_id in [(1, 0), (300, 2**47 + 5), (2**32, 127)]:
        data = {"Method": "kong.x", "Args": [1, b"\x00", None, "s"]}
        framed = pack_answer(msgid, EventAnswer(event_id, pack(data)))
        assert msgpack.unpackb(framed, raw=False) == [
            1,
            msgid,
            None,
            {"EventId": event_id, "Data": data},
        ]


def test_answer_serves_events_without_a_connection():
    """PluginServer.answer(), the transport-free entry point, runs events like a connection."""

    async def main() -> list:
        rpc = PluginServer(load_directory(Path(__file__).parent / "plugins"))

        async def call(msgid: int, method: str, arg: object) -> list:
            return msgpack.unpackb(await rpc.answer([0, msgid, method, [arg]]), raw=False)

        started = await call(1, "plugin.StartInstance", {"Name": "echo", "Config": "{}"})
        instance_id = started[3]["Id"]
        _, _, _, first = await call(2, "plugin.HandleEvent",
                                    {"InstanceId": instance_id, "EventName": "access"})
        event_id = first["EventId"]
        return [first, await call(3, "plugin.Step", {"EventId": event_id, "Data": "v"}),
                await call(4, "plugin.Step", {"EventId": event_id}),
                await call(5, "plugin.Step", {"EventId": event_id})]

    first, second, last, gone = asyncio.run(main())
    assert first["Data"] == {"Method": "kong.request.get_header", "Args": ["x-input"]}
    assert second[3]["Data"] == {"Method": "kong.response.set_header", "Args": ["X-Echo", "v"]}
    assert last[:3] == [1, 4, None] and last[3]["Data"] == "ret"
    assert gone[2] == f"event id {first['EventId']} not found"


def test_messages_split_across_reads_are_reassembled(kong):
    payload = msgpack.packb([0, 99, "plugin.GetStatus", [{}]], use_bin_type=True) * 2
    for byte in payload:
        kong.sock.sendall(bytes([byte]))
    assert [kong.receive()[0] for _ in range(2)] == [99, 99]


def test_messages_bigger_than_the_read_buffer_arrive_whole(kong):
    instance_id = kong.start_instance("echo")
    event_id, _ = kong.handle_event(instance_id, "access")
    big = "x" * 200_000  # the unpacker's buffer starts at 16 KiB
    assert kong.step(event_id, big)["Args"] == ["X-Echo", big]
    assert kong.step(event_id) == "ret"


def test_connections_are_served_concurrently(server):
    conns = [server.connect() for _ in range(16)]
    instance_id = conns[0].start_instance("echo")
    events = [c.handle_event(instance_id, "access")[0] for c in conns]  # 16 events open at once
    assert conns[0].status()["Events"] == 16
    for conn, event_id in zip(reversed(conns), events, strict=True):
        assert conn.step(event_id, "v")["Args"] == ["X-Echo", "v"]
        assert conn.step(event_id) == "ret"
    assert idle(conns[0].status())


def test_socket_is_a_unix_stream_socket(server):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(server.path)
