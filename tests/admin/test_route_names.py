"""Route and service names for the ids in events, from kong.yml."""

from __future__ import annotations

from pathlib import Path

import pytest

from kong_credits.admin.route_names import RouteNames
from kong_credits.errors import InvalidInput
from kong_credits.host.declarative import load_declarative

ROOT = Path(__file__).resolve().parents[2]


def test_every_route_and_service_of_the_shipped_config_is_named_as_the_host_names_it():
    names = RouteNames.load(ROOT / "kong" / "kong.yml")
    config = load_declarative(ROOT / "kong" / "kong.yml")
    assert names.routes == {route.id: route.name for route in config.routes}
    assert names.services == {service.id: service.name for service in config.services}


def test_explicit_ids_unknown_entities_and_unnamed_routes(tmp_path):
    path = tmp_path / "kong.yml"
    path.write_text("""
_format_version: '3.0'
upstreams: [{name: up}]
services:
- {name: api, id: 11111111-1111-1111-1111-111111111111, url: http://x,
   routes: [{name: search, id: r-1}, {paths: [/anon]}]}
routes:
- {name: top, service: api}
""")
    names = RouteNames.load(path)
    assert names.routes["r-1"] == "search" and "top" in names.routes.values()
    row = names.annotate({"route": "r-1", "service": "11111111-1111-1111-1111-111111111111"})
    assert (row["route_name"], row["service_name"]) == ("search", "api")
    assert names.annotate({"route": "unknown-id"})["route_name"] == "unknown-id"


@pytest.mark.parametrize("text", ["[1, 2]", "a: [", ""])
def test_a_file_that_is_not_a_config(tmp_path, text):
    path = tmp_path / "kong.yml"
    path.write_text(text)
    if text == "":
        assert RouteNames.load(path) == RouteNames()
    else:
        with pytest.raises(InvalidInput):
            RouteNames.load(path)
