"""prices.py: the price list per route, as Kong resolves which credits plugin runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from kong_credits.cli import main
from kong_credits.errors import InvalidInput
from kong_credits.prices import declarative_prices, display_path, route_prices

ROOT = Path(__file__).resolve().parents[2]
KONG_YML = ROOT / "kong" / "kong.yml"


def test_route_prices_of_the_demo_kong_yml():
    rows = {r["route"]: r for r in route_prices(KONG_YML)}
    assert {k: {f: rows[k][f] for f in ("method", "path", "plugin", "metered", "cost",
                                        "cost_header", "max_cost", "rate_limit", "mode")}
            for k in ("search", "generate")} == {
        "search": {"method": "*", "path": "/search", "plugin": "credits", "metered": False,
                   "cost": 1, "cost_header": None, "max_cost": None,
                   "rate_limit": {"second": 5, "minute": 100}, "mode": "enforce"},
        "generate": {"method": "*", "path": "/generate", "plugin": "credits-metered",
                     "metered": True, "cost": 20, "cost_header": "X-Units-Used",
                     "max_cost": 400, "rate_limit": {"minute": 30}, "mode": "enforce"},
    }
    assert rows["status"]["cost"] == 0 and rows["status"]["service"] == "sample-api"


PRECEDENCE = yaml.safe_load("""
_format_version: "3.0"
services:
  - name: api
    url: http://up.example
    plugins: [{name: credits, config: {cost: 2}}]
    routes:
      - {name: service-priced, paths: [/a], methods: [GET, POST]}
      - name: nested
        paths: ["~/items/(?<item_id>[^#?/]+)$"]
        plugins: [{name: credits, config: {cost: 7}}]
      - {name: top-level, paths: [/c, /d]}
      - {name: disabled, paths: [/e]}
  - name: bare
    url: http://up.example
    routes: [{name: global-priced, paths: [/f]}]
routes:
  - {name: loose, service: {name: bare}, paths: [/g]}
plugins:
  - {name: credits, config: {cost: 1}}
  - {name: credits, route: top-level, config: {cost: 3, rate_limit: {minute: 9}}}
  - {name: credits, route: disabled, enabled: false, config: {cost: 99}}
  - {name: credits, route: nested, consumer: vip, config: {cost: 0}}
""")


def test_a_routes_price_is_its_own_else_its_services_else_the_global_one():
    rows = [(r["route"], r["method"], r["path"], r["cost"])
            for r in declarative_prices(PRECEDENCE)]
    assert rows == [
        ("service-priced", "GET", "/a", 2), ("service-priced", "POST", "/a", 2),
        ("nested", "*", "/items/{item_id}", 7),      # consumer-scoped deals are not listed
        ("top-level", "*", "/c", 3), ("top-level", "*", "/d", 3),
        ("disabled", "*", "/e", 2),                  # a disabled route plugin: the service's
        ("global-priced", "*", "/f", 1),
        ("loose", "*", "/g", 1),
    ]


def test_a_route_running_both_plugins_is_refused():
    both = {**PRECEDENCE, "plugins": [
        {"name": "credits-metered", "route": "nested",
         "config": {"cost": 5, "cost_header": "X-Units"}}]}
    with pytest.raises(InvalidInput, match="route nested: both credits and credits-metered"):
        declarative_prices(both)


def test_an_unpriced_route_is_listed_as_such():
    (row,) = declarative_prices({"services": [{"name": "s", "url": "http://x",
                                               "routes": [{"name": "r", "paths": ["/"]}]}]})
    assert (row["plugin"], row["cost"], row["metered"], row["rate_limit"]) == (
        None, None, False, {})


@pytest.mark.parametrize(("kong_path", "shown"), [
    ("/plain", "/plain"),
    ("~/users/(?<userid>[^#?/]+)/files/(?<path>[^#?/]*)$", "/users/{userid}/files/{path}"),
    ("~/v1\\.0/price\\+tax\\(eu\\)$", "/v1.0/price+tax(eu)"),
])
def test_display_path(kong_path, shown):
    assert display_path(kong_path) == shown


def test_prices_command_json_markdown_and_text():
    runner = CliRunner()
    as_json = runner.invoke(main, ["prices", "--kong-yml", str(KONG_YML), "--json"])
    assert as_json.exit_code == 0
    assert json.loads(as_json.output) == route_prices(KONG_YML)
    markdown = runner.invoke(main, ["prices", "--kong-yml", str(KONG_YML), "--markdown"])
    assert markdown.output.splitlines()[:3] == [
        "| Method | Path | Credits | Limits | Metered |",
        "| --- | --- | --- | --- | --- |",
        "| * | /search | 1 | 5/second, 100/minute | no |"]
    assert "| * | /generate | 20 held, then the X-Units-Used header (at most 400) | " \
           "30/minute | yes |" in markdown.output
    text = runner.invoke(main, ["prices", "--kong-yml", str(KONG_YML)])
    assert text.output.split()[:5] == ["Method", "Path", "Credits", "Limits", "Metered"]


def test_prices_command_refuses_bad_input(tmp_path):
    runner = CliRunner()
    both = runner.invoke(main, ["prices", "--kong-yml", "a", "--openapi", "b"])
    assert both.exit_code == 2 and "not both" in both.output
    missing = runner.invoke(main, ["prices", "--kong-yml", str(tmp_path / "none.yml")])
    assert missing.exit_code == 2 and "cannot read" in missing.output
    piped = tmp_path / "pipe.yml"
    piped.write_text("| Method |")
    bad = runner.invoke(main, ["prices", "--kong-yml", str(piped), "--markdown"])
    assert bad.exit_code == 2


def test_a_price_list_never_shows_the_redis_url_or_other_operational_fields():
    declarative = {"routes": [{"name": "r", "paths": ["/r"]}], "plugins": [{
        "name": "credits", "route": "r", "config": {
            "cost": 3, "redis_url": "redis://:hunter2@10.0.0.1:6379/0", "record_request": True,
            "abuse_detection": {"factor": 5}, "on_redis_error": "allow",
            "redis_timeout_ms": 100, "rate_limit": {"second": 2}}}]}
    (row,) = declarative_prices(declarative)
    assert row["config"] == {"cost": 3, "rate_limit": {"second": 2}}
    assert "hunter2" not in json.dumps(row)
