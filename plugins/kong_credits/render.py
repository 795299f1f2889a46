"""config/pricing.yaml -> the `credits` / `credits-metered` plugin entries of a Kong
declarative config: a route priced with `cost_header` or `price` gets `credits-metered`.
(Its `plans` section is for wallets, not Kong: plans.py reads it.)"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import InvalidInput
from .schema import parse_config
from .yaml_files import read_mapping

__all__ = ["HEADER", "load_pricing", "render", "render_file"]

PLUGIN_NAMES = ("credits", "credits-metered")
HEADER = ("# Kong declarative config (DB-less). The `credits` and `credits-metered` plugin\n"
          "# entries are generated from config/pricing.yaml by `kong-credits render-config`:\n"
          "# change prices there.\n")


def plugin_name(config: Mapping[str, Any]) -> str:
    """The plugin a route's price needs: `credits-metered` for a price known after the
    response (`cost_header`, `price`), else `credits`."""
    return PLUGIN_NAMES[1] if "cost_header" in config or "price" in config else PLUGIN_NAMES[0]


def load_pricing(path: str | Path) -> dict[str, dict[str, Any]]:
    """Route name -> credits plugin config, defaults merged in and every config validated."""
    doc = read_mapping(path, "pricing file")
    if not isinstance(doc.get("routes"), Mapping):
        raise InvalidInput(f"{path}: expected a mapping with a `routes` mapping")
    defaults = doc.get("defaults") or {}
    unknown_top = set(doc) - {"defaults", "routes", "plans"}
    if unknown_top:
        raise InvalidInput(f"{path}: unknown top-level keys {sorted(unknown_top)}")
    prices: dict[str, dict[str, Any]] = {}
    for route, own in doc["routes"].items():
        config = {**defaults, **(own or {})}
        try:
            parse_config(config, metered=plugin_name(config) == PLUGIN_NAMES[1])
        except InvalidInput as exc:
            raise InvalidInput(f"{path}: route {route}: {exc}") from exc
        prices[str(route)] = config
    return prices


def _route_names(declarative: Mapping[str, Any]) -> set[str]:
    names = {r.get("name") for r in declarative.get("routes") or []}
    for service in declarative.get("services") or []:
        names |= {r.get("name") for r in service.get("routes") or []}
    return {n for n in names if n}


def render(declarative: dict[str, Any], prices: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Replace every top-level credits plugin entry with one per priced route.

    Routes must exist in the config: a price for an unknown route is an error, not a no-op.
    Credits plugins nested under services or routes are refused (they would be missed).
    """
    missing = set(prices) - _route_names(declarative)
    if missing:
        raise InvalidInput(f"pricing names routes that kong.yml does not have: {sorted(missing)}")
    for service in declarative.get("services") or []:
        for holder in [service, *(service.get("routes") or [])]:
            if any(p.get("name") in PLUGIN_NAMES for p in holder.get("plugins") or []):
                raise InvalidInput(f"move the credits plugin of {holder.get('name')!r} to the "
                                   "top-level plugins list, where render-config manages it")
    others = [p for p in declarative.get("plugins") or [] if p.get("name") not in PLUGIN_NAMES]
    # deep copies: a shared default (rate_limit) would be written as a YAML anchor and alias
    priced = [{"name": plugin_name(config), "route": route, "config": copy.deepcopy(config)}
              for route, config in sorted(prices.items())]
    return {**declarative, "plugins": others + priced}


def render_file(pricing: str | Path, kong_yml: str | Path) -> str:
    """The text of `kong_yml` with its credits plugins rendered from `pricing`."""
    declarative = dict(read_mapping(kong_yml, "Kong declarative config"))
    rendered = render(declarative, load_pricing(pricing))
    return HEADER + yaml.safe_dump(rendered, sort_keys=False, allow_unicode=True, width=100)
