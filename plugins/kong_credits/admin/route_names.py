"""Names for the route and service ids in events, read from a Kong declarative config.

Events carry ids (what Kong hands the plugin); people read names. A DB-less Kong gives an
entity without an `id` the UUID of its name (host/entities.py `entity_id`), so named routes
and services resolve whether or not kong.yml spells their ids. Read leniently: entities this
does not know (upstreams, certificates, ...) are ignored, an unnamed one keeps its id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..host.entities import entity_id
from ..yaml_files import read_mapping

__all__ = ["RouteNames"]


def _named(items: Any, table: str) -> list[tuple[str, str, Mapping[str, Any]]]:
    """(id, name, entity) of each named entity of a list."""
    found = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            found.append((str(item.get("id") or entity_id(table, item["name"])), item["name"],
                          item))
    return found


@dataclass(frozen=True)
class RouteNames:
    routes: dict[str, str] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> RouteNames:
        """InvalidInput when the file cannot be read as YAML."""
        data = read_mapping(path, "Kong declarative config")
        routes: dict[str, str] = {}
        services: dict[str, str] = {}
        for service_id, name, service in _named(data.get("services"), "services"):
            services[service_id] = name
            routes.update((i, n) for i, n, _ in _named(service.get("routes"), "routes"))
        routes.update((i, n) for i, n, _ in _named(data.get("routes"), "routes"))
        return cls(routes, services)

    def annotate(self, row: dict[str, Any]) -> dict[str, Any]:
        """`row` with `route_name` / `service_name` beside its `route` / `service` ids (the
        id itself when the config does not name it)."""
        for column, names in (("route", self.routes), ("service", self.services)):
            if column in row:
                row[f"{column}_name"] = names.get(row[column], row[column])
        return row
