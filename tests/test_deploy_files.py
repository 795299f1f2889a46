"""kong/ and docker-compose.yml, checked as far as a machine without Docker allows."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kong_credits.host.declarative import load_declarative
from kong_credits.kong_schema import config_fields

ROOT = Path(__file__).resolve().parents[1]
KONG_CONF = ROOT / "kong" / "kong.conf"


def kong_conf() -> dict[str, str]:
    entries = {}
    for line in KONG_CONF.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition("=")
            entries[key.strip()] = value.strip()
    return entries


def local(command: str) -> list[str]:
    """The image's /opt/kong-credits/bin/kong-credits is this venv's console script."""
    argv = shlex.split(command)
    assert argv[0] == "/opt/kong-credits/bin/kong-credits"
    return [str(Path(sys.executable).with_name("kong-credits")), *argv[1:]]


PLUGINS = ("credits", "credits-metered")


def main_env_names(value: str) -> list[str]:
    """The variables `nginx_main_env = A; env B` lets through: Kong writes `env <value>;`,
    so nginx reads `env A; env B;`."""
    return [part.strip().removeprefix("env ").strip() for part in value.split(";")]


def query(name: str) -> dict:
    """What Kong 3.9+ registers for pluginserver entry `name`: the first plugin its query
    prints."""
    key = f"pluginserver_{name.replace('-', '_')}_query_cmd"
    done = subprocess.run(local(kong_conf()[key]), capture_output=True, text=True,
                          timeout=60, check=True)
    return json.loads(done.stdout)[0]


def test_kong_conf_declares_both_plugins_on_one_server():
    conf = kong_conf()
    assert conf["database"] == "off"
    assert conf["plugins"] == "bundled,credits,credits-metered"
    assert conf["pluginserver_names"] == "credits,credits-metered"
    socket = Path(conf["pluginserver_credits_socket"])
    assert conf["pluginserver_credits_metered_socket"] == str(socket)
    start = local(conf["pluginserver_credits_start_cmd"])
    assert start[1:] == ["pluginserver", "-p", str(socket.parent), "--socket-name", socket.name]
    assert "pluginserver_credits_metered_start_cmd" not in conf  # one process serves both


@pytest.mark.parametrize(("name", "phases"), [("credits", ["access"]),
                                               ("credits-metered", ["log", "access"])])
def test_each_query_cmd_prints_its_own_plugin_first(name, phases):
    info = query(name)
    assert (info["Name"], info["Phases"]) == (name, phases)  # credits declares no log phase
    assert isinstance(info["Priority"], int)
    assert len(info["Version"].split(".")) == 3
    names = {next(iter(f)) for f in config_fields(info["Schema"])}
    assert {"cost", "rate_limit", "mode", "on_redis_error", "redis_url"} <= names
    assert ("cost_header" in names) == ("price" in names) == (name == "credits-metered")


def test_kong_yml_validates_against_the_dumped_schemas():
    from kong_credits.host import keyauth

    config = load_declarative(ROOT / "kong" / "kong.yml")
    validated = config.validate_plugins({
        **{name: config_fields(query(name)["Schema"]) for name in PLUGINS},
        keyauth.NAME: keyauth.SCHEMA_FIELDS})
    assert sum(p.name in PLUGINS for p in validated.plugins) == 4


def test_compose_wires_kong_redis_and_upstream():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "kong", "upstream", "forwarder"} <= set(services)
    assert services["forwarder"]["command"][0] == "forwarder"
    kong = services["kong"]
    assert (ROOT / kong["build"]["context"] / kong["build"]["dockerfile"]).exists()
    assert kong["environment"]["KONG_CREDITS_REDIS_URL"].startswith("redis://redis:")
    # nginx clears its workers' environment, and worker 0 starts the plugin server
    assert kong["environment"]["KONG_NGINX_MAIN_ENV"] == kong_conf()["nginx_main_env"]
    assert main_env_names(kong_conf()["nginx_main_env"]) == ["KONG_CREDITS_REDIS_URL",
                                                             "KONG_CREDITS_SHARDS"]
    # One shard count for the whole deployment (README: Production Redis)
    assert kong["environment"]["KONG_CREDITS_SHARDS"] == services["forwarder"]["environment"][
        "KONG_CREDITS_SHARDS"] == "16"
    redis_args = services["redis"]["command"]  # a database, not a cache: persisted, no eviction
    assert "--appendonly" in redis_args and "noeviction" in redis_args
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    service_hosts = {s["url"].split("/")[2].split(":")[0]
                     for s in yaml.safe_load((ROOT / "kong" / "kong.yml").read_text())["services"]}
    assert service_hosts <= set(services)


def test_dockerfile_copies_files_that_exist_and_installs_the_conf():
    dockerfile = (ROOT / "kong" / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            assert all((ROOT / s).exists() for s in sources), line
    assert "/opt/kong-credits/bin/pip install" in dockerfile
    assert "kong/kong.conf" in dockerfile


def test_the_spool_outlives_the_kong_container():
    """on_redis_error: spool writes under the plugin server's -p: that directory is made for
    the kong user and is a volume, in the image and in compose."""
    start = kong_conf()["pluginserver_credits_start_cmd"].split()
    spool = f"{start[start.index('-p') + 1]}/credits-spool"
    dockerfile = (ROOT / "kong" / "Dockerfile").read_text()
    assert f"install -d -o kong -g kong -m 0700 {spool}" in dockerfile
    assert f"VOLUME {spool}" in dockerfile
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = [v.split(":") for v in compose["services"]["kong"]["volumes"]]
    assert [(name, path) for name, path in mounts if path == spool] == [("kong-spool", spool)]
    assert "kong-spool" in compose["volumes"]
