"""docker-compose.yml's usage store: a PostgreSQL service and a usage forwarder wired to it."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_feeds_a_postgresql_usage_store_through_its_own_forwarder() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    postgres, forwarder = services["postgres"], services["usage-forwarder"]
    assert forwarder["command"][:3] == ["forwarder", "--sink", "usage"]
    assert "--group" not in forwarder["command"]  # its own group: forwarder:usage
    url = urlsplit(forwarder["environment"]["KONG_CREDITS_USAGE_URL"])
    env = postgres["environment"]
    assert (url.scheme, url.hostname, url.port) == ("postgresql", "postgres", 5432)
    assert (url.username, url.password, url.path) == (
        env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], "/" + env["POSTGRES_DB"])
    assert forwarder["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert forwarder["environment"]["KONG_CREDITS_SHARDS"] == services["kong"]["environment"][
        "KONG_CREDITS_SHARDS"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
