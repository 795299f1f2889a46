"""deck_plugins.py: a `deck file add-plugins` file that prices each route as it is priced."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from kong_credits.cli import main
from kong_credits.errors import InvalidInput
from kong_credits.prices import declarative_prices
from kong_credits.pricing.deck_plugins import deck_plugin_file

ROOT = Path(__file__).resolve().parents[2]
KONG_YML = ROOT / "kong" / "kong.yml"
SELECTOR = re.compile(r"^\$\.\.routes\[\?\(@\.(name|id)=='([^']+)'\)\]$")


def add_plugins(state: dict, plugin_file: dict) -> dict:
    """What decK's add-plugins does with our selectors: for each route the selector names
    (any depth), add the plugins, replacing one of the same name (overwrite: true)."""
    assert plugin_file["_format_version"] == "1.0"
    routes = [r for s in state.get("services", []) for r in s.get("routes", [])]
    routes += state.get("routes", [])
    for patch in plugin_file["add-plugins"]:
        assert patch["overwrite"] is True
        for selector in patch["selectors"]:
            key, value = SELECTOR.match(selector).groups()
            (route,) = [r for r in routes if r.get(key) == value]
            names = {p["name"] for p in patch["plugins"]}
            route["plugins"] = [p for p in route.get("plugins", []) if p["name"] not in names]
            route["plugins"] += patch["plugins"]
    return state


def test_applied_to_an_unpriced_state_file_it_gives_the_same_prices():
    priced = yaml.safe_load(KONG_YML.read_text())
    unpriced = {**priced, "plugins": [p for p in priced["plugins"]
                                      if not p["name"].startswith("credits")]}
    assert all(r["plugin"] is None for r in declarative_prices(unpriced))
    result = CliRunner().invoke(main, ["render-config", "--format", "deck-plugins"],
                                catch_exceptions=False)
    assert result.exit_code == 0
    plugin_file = yaml.safe_load(result.output)
    assert len(plugin_file["add-plugins"]) == 4  # search, status, export, generate
    assert declarative_prices(add_plugins(unpriced, plugin_file)) == \
        declarative_prices(priced)


def test_one_patch_per_distinct_price_and_routes_by_id_when_unnamed():
    declarative = {"services": [{"name": "s", "url": "http://x", "routes": [
        {"name": "a", "paths": ["/a"], "plugins": [{"name": "credits", "config": {"cost": 2}}]},
        {"id": "9f0c2c4e-0000-4000-8000-000000000001", "paths": ["/b"],
         "plugins": [{"name": "credits", "config": {"cost": 2}}]},
        {"name": "c", "paths": ["/c"]}]}]}
    (patch,) = deck_plugin_file(declarative)["add-plugins"]
    assert patch["selectors"] == [
        "$..routes[?(@.name=='a')]",
        "$..routes[?(@.id=='9f0c2c4e-0000-4000-8000-000000000001')]"]


def test_a_name_that_would_break_the_selector_is_refused():
    declarative = {"routes": [{"name": "it's", "paths": ["/"]}],
                   "plugins": [{"name": "credits", "config": {"cost": 1}}]}
    with pytest.raises(InvalidInput, match="without quotes"):
        deck_plugin_file(declarative)
