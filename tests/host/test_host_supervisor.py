"""supervisor: plugin info parsing as Kong loads it, and start_cmd supervision."""

from __future__ import annotations

import itertools
import json
import logging
import sys
from pathlib import Path

import pytest
from waits import wait_until

from kong_credits.host.supervisor import (
    PluginInfoError,
    PluginServerProcess,
    PluginServerSpec,
    kong_pdk_server,
    parse_plugin_info,
    query_plugins,
)

PLUGINS = Path(__file__).parent / "plugins"


def info(**overrides: object) -> dict:
    return {"Name": "credits", "Priority": 900, "Version": "0.1.0", "Phases": ["access"],
            "Schema": {"name": "credits", "fields": []}, **overrides}


def test_list_and_protocol_forms() -> None:
    (plain,) = parse_plugin_info(json.dumps([info()]))
    (wrapped,) = parse_plugin_info(json.dumps({"Protocol": "MsgPack:1", "Plugins": [info()]}))
    assert plain == wrapped
    assert (plain.name, plain.priority, plain.version, plain.phases) == (
        "credits", 900, "0.1.0", ("access",))


@pytest.mark.parametrize("version", [None, "1.2.3.4", "latest", 1])
def test_version_must_be_x_y_z_like_kong(version: object) -> None:
    with pytest.raises(PluginInfoError, match=r'VERSION field does not follow the "x\.y\.z"'):
        parse_plugin_info(json.dumps([info(Version=version)]))


def test_priority_must_be_an_integer() -> None:
    with pytest.raises(PluginInfoError, match="PRIORITY field is not a valid integer"):
        parse_plugin_info(json.dumps([info(Priority=1.5)]))


def test_output_that_is_not_plugin_info_fails() -> None:
    with pytest.raises(PluginInfoError, match="failed decoding plugin info"):
        parse_plugin_info("lua-style warning\n")
    with pytest.raises(PluginInfoError, match="not a plugin info table"):
        parse_plugin_info("{}")


def test_query_the_stock_server() -> None:
    spec = kong_pdk_server(PLUGINS, "/tmp")
    names = {p.name: p for p in query_plugins(spec.query_cmd or "")}
    assert {"echo", "paywall", "boom", "meter", "strict"} <= set(names)
    assert names["meter"].phases == ("log", "access", "response")
    assert names["meter"].version == "1.2.3"


def test_server_is_respawned_at_most_once_a_second_and_stopped(caplog) -> None:
    caplog.set_level(logging.INFO, logger="kong_credits.host.pluginserver")
    exits = f"{sys.executable} -c 'raise SystemExit(3)'"
    spec = PluginServerSpec("dies", "/tmp/none.sock", exits)
    process = PluginServerProcess(spec)
    process.start()
    wait_until(lambda: process.spawns >= 2)
    process.stop()
    starts = [r.created for r in caplog.records
              if r.getMessage() == "starting pluginserver process for dies"]
    assert len(starts) == process.spawns
    assert all(b - a >= process.RESPAWN_INTERVAL_S for a, b in itertools.pairwise(starts))
    assert caplog.messages[-1] == "exiting: pluginserver 'dies' not respawned."  # stopped


def test_command_not_found_is_not_respawned() -> None:
    spec = PluginServerSpec("missing", "/tmp/none.sock", "/nonexistent/plugin-server")
    process = PluginServerProcess(spec)
    process.start()
    supervisor = process._thread
    assert supervisor is not None
    wait_until(lambda: not supervisor.is_alive())  # gave up: no respawn
    assert process.spawns == 1
    process.stop()
