"""`kong-credits pluginserver`: query output, loading errors, and the real process lifecycle."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import msgpack
import pytest
from click.testing import CliRunner
from waits import wait_until

from kong_credits.pluginserver import make_command, pluginserver_command

PLUGINS_DIR = Path(__file__).parent / "plugins"
PLUGIN_NAMES = ["closing", "echo", "exiting", "raising", "slow"]


def invoke(*args: str, command=pluginserver_command):
    return CliRunner().invoke(command, list(args))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # kong_pdk.const uses getdefaultlocale
def test_dump_all_plugins_matches_kong_pdk_get_plugin_info():
    result = invoke("--dump-all-plugins", "-d", str(PLUGINS_DIR))
    assert result.exit_code == 0, result.output
    infos = json.loads(result.stdout)
    assert [i["Name"] for i in infos] == PLUGIN_NAMES  # sorted; _helper.py skipped

    from kong_pdk.server import PluginServer as StockServer

    stock = StockServer(plugin_dir=str(PLUGINS_DIR))
    for info in infos:
        assert info == stock.get_plugin_info(info["Name"])
    echo = infos[1]
    assert echo == {
        "Name": "echo",
        "Phases": ["log", "access"],
        "Priority": 7,
        "Version": "1.2.3",
        "Schema": {
            "name": "echo",
            "fields": [
                {
                    "config": {
                        "type": "record",
                        "fields": [{"header": {"type": "string", "default": "X-Echo"}}],
                    }
                }
            ],
        },
    }


def test_dump_accepts_kong_pdk_and_dedicated_spellings():
    outputs = {
        invoke(flag, "-plugins-directory", str(PLUGINS_DIR)).stdout
        for flag in ("--dump-all-plugins", "-dump-all-plugins", "-dump", "--dump")
    }
    assert len(outputs) == 1


def test_dump_plugin_info_prints_one_plugin():
    result = invoke("--dump-plugin-info", "slow", "-d", str(PLUGINS_DIR))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["Name"] == "slow"
    assert invoke("--dump-plugin-info", "nope", "-d", str(PLUGINS_DIR)).exit_code == 1


def test_module_option_names_the_plugin(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS_DIR))
    result = invoke("--dump-all-plugins", "-m", "greeter=echo", "-m", "slow")
    assert result.exit_code == 0, result.output
    assert [i["Name"] for i in json.loads(result.stdout)] == ["greeter", "slow"]


def test_missing_default_module_is_a_clear_error():
    command = make_command(default_modules=("credits=kong_credits.no_such_plugin",))
    result = invoke("--dump-all-plugins", command=command)
    assert result.exit_code == 1
    assert "cannot import plugin module kong_credits.no_such_plugin (plugin 'credits')" in (
        result.output
    )


def test_module_without_plugin_class_and_duplicate_names_are_errors():
    result = invoke("--dump-all-plugins", "-m", "json")
    assert result.exit_code == 1 and "has no class Plugin" in result.output
    result = invoke("--dump-all-plugins", "-d", str(PLUGINS_DIR), "-d", str(PLUGINS_DIR))
    assert result.exit_code == 1 and "loaded twice" in result.output


def test_broken_file_in_directory_is_skipped(tmp_path):
    (tmp_path / "good.py").write_text((PLUGINS_DIR / "echo.py").read_text())
    (tmp_path / "broken.py").write_text("raise ImportError('nope')\n")
    (tmp_path / "json.py").write_text((PLUGINS_DIR / "echo.py").read_text())
    result = invoke("--dump-all-plugins", "-d", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert [i["Name"] for i in json.loads(result.stdout)] == ["good", "json"]
    assert sys.modules["json"] is json  # kong-pdk would have replaced the stdlib module


def test_missing_prefix_is_an_error():
    result = invoke("-p", "/nonexistent/prefix", "-d", str(PLUGINS_DIR))
    assert result.exit_code == 1 and "doesn't exist" in result.output


def test_refuses_to_replace_a_file_that_is_not_a_socket():
    with tempfile.TemporaryDirectory(dir="/tmp") as prefix:
        Path(prefix, "credits.socket").write_text("keep me")
        result = invoke("-p", prefix, "-d", str(PLUGINS_DIR))
        assert result.exit_code == 1 and "not a socket" in result.output
        assert Path(prefix, "credits.socket").read_text() == "keep me"


def _connect(path: str) -> socket.socket:
    def attempt() -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):  # not listening yet
            sock.close()
            return None
        sock.settimeout(5)
        return sock

    return wait_until(attempt, interval_s=0.05)


def _call(sock: socket.socket, unpacker, msgid: int, method: str, arg):
    sock.sendall(msgpack.packb([0, msgid, method, [arg]], use_bin_type=True))
    while True:
        for kind, got, error, result in unpacker:
            assert (kind, got) == (1, msgid)
            return error, result
        unpacker.feed(sock.recv(65536))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_process_serves_then_stops_cleanly_on_signal(signum):
    with tempfile.TemporaryDirectory(dir="/tmp") as prefix:
        path = os.path.join(prefix, "credits.socket")
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)  # a socket file left behind by a killed server
        stale.close()
        proc = subprocess.Popen(
            [sys.executable, "-m", "kong_credits.pluginserver", "-p", prefix, "-d", PLUGINS_DIR],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            sock = _connect(path)
            unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
            error, started = _call(
                sock, unpacker, 1, "plugin.StartInstance", {"Name": "echo", "Config": "{}"}
            )
            assert error is None
            error, answer = _call(
                sock,
                unpacker,
                2,
                "plugin.HandleEvent",
                {"InstanceId": started["Id"], "EventName": "access"},
            )
            assert error is None and answer["Data"]["Method"] == "kong.request.get_header"
            slow = _connect(path)
            slow_unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
            error, started = _call(
                slow, slow_unpacker, 3, "plugin.StartInstance", {"Name": "slow", "Config": "{}"}
            )
            slow.sendall(
                msgpack.packb(
                    [
                        0,
                        4,
                        "plugin.HandleEvent",
                        [{"InstanceId": started["Id"], "EventName": "access"}],
                    ]
                )
            )

            def both_running() -> dict | None:
                _, status = _call(sock, unpacker, 5, "plugin.GetStatus", {})
                return status if status["RunningHandlers"] == 2 else None

            status = wait_until(both_running)  # the slow handler runs too
            assert status["Pid"] == proc.pid and status["Events"] == 2
            proc.send_signal(signum)
            # In-flight requests are answered, idle connections closed: no client hangs.
            slow_unpacker.feed(slow.recv(65536))
            assert next(slow_unpacker) == [1, 4, "plugin server is shutting down", None]
            assert sock.recv(100) == b""
            _, stderr = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, stderr.decode()
        assert not os.path.exists(path)
        assert b"listening on" in stderr
