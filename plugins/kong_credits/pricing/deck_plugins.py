"""Prices as a `deck file add-plugins` plugin file, for decK state files kept elsewhere.

One patch per distinct price: its plugin (`credits` or `credits-metered`) and config, added
with `overwrite: true` to every route of that price, selected by name
(`$..routes[?(@.name=='search')]`) or, for an unnamed route, by id. Apply it with
`deck file add-plugins -s kong.yml prices.deck.yaml`; decK nests each plugin in its route.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from ..errors import InvalidInput
from ..prices import priced_routes

__all__ = ["deck_plugin_file", "dump_plugin_file"]

HEADER = ("# decK plugin file written by `kong-credits render-config --format deck-plugins`.\n"
          "# Apply: deck file add-plugins -s kong.yml THIS_FILE. Change prices at their "
          "source.\n")


def _selector(route: Mapping[str, Any]) -> str:
    key, value = ("name", route.get("name")) if route.get("name") else ("id", route.get("id"))
    if not isinstance(value, str) or not value or "'" in value or "\\" in value:
        raise InvalidInput(f"route {value!r}: decK selects routes by a name or id without "
                           "quotes or backslashes")
    return f"$..routes[?(@.{key}=='{value}')]"


def deck_plugin_file(declarative: Mapping[str, Any]) -> dict[str, Any]:
    """The add-plugins file pricing every priced route of `declarative` as it is priced."""
    patches: dict[str, dict[str, Any]] = {}
    for priced in priced_routes(declarative):
        if not priced.plugin:
            continue
        plugin = {"name": priced.plugin, "config": dict(priced.config)}
        key = json.dumps(plugin, sort_keys=True)
        patch = patches.setdefault(key, {"selectors": [], "overwrite": True,
                                         "plugins": [plugin]})
        patch["selectors"].append(_selector(priced.route))
    return {"_format_version": "1.0", "add-plugins": list(patches.values())}


def dump_plugin_file(plugin_file: Mapping[str, Any]) -> str:
    return HEADER + yaml.safe_dump(dict(plugin_file), sort_keys=False, allow_unicode=True,
                                   width=100)
