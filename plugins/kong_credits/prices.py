"""The price list: what each route of a Kong declarative config costs, for people.

Used by `kong-credits prices` and by the admin API's `GET /v1/prices`. A route's price is the
`credits` or `credits-metered` plugin Kong runs on it, found as Kong finds it: a plugin on the
route (nested in it or top-level with `route:`), else on its service, else a global one.
Consumer-scoped plugins are per-customer deals, not list prices, and are left out; a disabled
plugin (`enabled: false`) is not there for Kong, so the next level's applies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engine import PERIOD_SECONDS
from .errors import InvalidInput
from .money import MAX_AMOUNT
from .render import PLUGIN_NAMES
from .yaml_files import read_mapping

__all__ = ["ANY", "PRIVATE_FIELDS", "PricedRoute", "declarative_prices", "display_path",
           "priced_routes", "route_prices"]

ANY = "*"
"""The method or path of a route that does not restrict it."""

PRIVATE_FIELDS = frozenset({"redis_url", "redis_timeout_ms", "redis_wait_replicas",
                            "redis_wait_timeout_ms", "on_redis_error", "abuse_detection",
                            "record_request"})
"""Plugin config fields that are operations, not price: never in a price list, which a
developer portal shows to anyone (a `redis_url` may hold the Redis password)."""


@dataclass(frozen=True)
class PricedRoute:
    """One route of the config, its service and the credits plugin Kong runs on it."""

    route: Mapping[str, Any]
    service: Mapping[str, Any] | None
    plugin: str | None
    """`credits`, `credits-metered`, or None: the route is not priced (nor metered)."""
    config: Mapping[str, Any]


def route_prices(kong_yml_path: str | Path) -> list[dict[str, Any]]:
    """The price list of the kong.yml (DB-less declarative config) at `kong_yml_path`.

    One dict per route, method and path, in the file's order:

        {"route": "search",          # the route's name (its id when unnamed)
         "service": "sample-api",    # its service's name, or None
         "method": "GET",            # or "*": the route takes any method
         "path": "/search",          # a decK regex path (`~/a/(?<id>[^#?/]+)$`) reads
                                     # `/a/{id}`; "*": the route matches any path
         "plugin": "credits",        # "credits-metered", or None: not priced
         "metered": False,           # True: priced after the response (cost_header)
         "cost": 1,                  # credits per request; the held estimate when metered;
                                     # None when not priced
         "cost_header": None,        # metered: the upstream header the price is settled from
         "max_cost": None,           # metered: the most one request is settled at
         "rate_limit": {"second": 5, "minute": 100},   # {} when unlimited
         "rate_limit_scope": "route",                  # or "consumer"
         "mode": "enforce",                            # or "shadow"
         "config": {...}}            # the config's other price fields as written; its
                                     # Redis settings, abuse thresholds and
                                     # record_request are left out (a price list is public)

    Raises InvalidInput when the file cannot be read or a route would run both plugins.
    """
    return declarative_prices(read_mapping(kong_yml_path, "Kong declarative config"))


def declarative_prices(declarative: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`route_prices` of an already loaded declarative config."""
    rows = []
    for priced in priced_routes(declarative):
        for method in priced.route.get("methods") or [ANY]:
            for path in priced.route.get("paths") or [ANY]:
                rows.append(_row(priced, str(method).upper(), display_path(str(path))))
    return rows


def _row(priced: PricedRoute, method: str, path: str) -> dict[str, Any]:
    config = priced.config
    metered = priced.plugin == PLUGIN_NAMES[1]
    cost = config.get("cost", 1) if priced.plugin else None
    limits = config.get("rate_limit") or {}
    return {
        "route": priced.route.get("name") or priced.route.get("id"),
        "service": priced.service.get("name") if priced.service else None,
        "method": method,
        "path": path,
        "plugin": priced.plugin,
        "metered": metered,
        "cost": cost,
        "cost_header": config.get("cost_header") if metered else None,
        "max_cost": (config.get("max_cost") or min(10 * cost, MAX_AMOUNT))
        if metered and cost else None,
        "rate_limit": {p: limits[p] for p in PERIOD_SECONDS if limits.get(p)},
        "rate_limit_scope": config.get("rate_limit_scope", "route") if priced.plugin else None,
        "mode": config.get("mode", "enforce") if priced.plugin else None,
        "config": {k: v for k, v in config.items() if k not in PRIVATE_FIELDS},
    }


_CAPTURE = re.compile(r"\(\?<([A-Za-z0-9_]+)>\[\^#\?/\][+*]\)")


def display_path(path: str) -> str:
    """A route path as people read it: decK's `~/a/(?<id>[^#?/]+)$` as `/a/{id}`."""
    if not path.startswith("~"):
        return path
    body = path[1:].removesuffix("$")
    body = _CAPTURE.sub(lambda m: "{" + m.group(1) + "}", body)
    return re.sub(r"\\(.)", r"\1", body)


def priced_routes(declarative: Mapping[str, Any]) -> list[PricedRoute]:
    """Every route of `declarative` with the credits plugin Kong runs on it (if any).

    Raises InvalidInput for a route on which both `credits` and `credits-metered` would run:
    each would charge the request.
    """
    services: list[Mapping[str, Any]] = list(_records(declarative.get("services")))
    routes: list[tuple[Mapping[str, Any], Mapping[str, Any] | None]] = []
    scoped: list[tuple[Mapping[str, Any], str, Mapping[str, Any]]] = []
    for service in services:
        routes.extend((r, service) for r in _records(service.get("routes")))
        scoped.extend((p, "service", service) for p in _records(service.get("plugins")))
    for route in _records(declarative.get("routes")):
        routes.append((route, _find(services, route.get("service"))))
    for route, _ in routes:
        scoped.extend((p, "route", route) for p in _records(route.get("plugins")))
    for plugin in _records(declarative.get("plugins")):
        if plugin.get("route") is not None:
            scoped.append((plugin, "route", _find([r for r, _ in routes], plugin["route"]) or {}))
        elif plugin.get("service") is not None:
            scoped.append((plugin, "service", _find(services, plugin["service"]) or {}))
        else:
            scoped.append((plugin, "global", {}))
    return [_price(route, service, scoped) for route, service in routes]


def _price(route: Mapping[str, Any], service: Mapping[str, Any] | None,
           scoped: list[tuple[Mapping[str, Any], str, Mapping[str, Any]]]) -> PricedRoute:
    running: dict[str, Mapping[str, Any]] = {}
    for name in PLUGIN_NAMES:
        candidates = [(plugin, kind) for plugin, kind, owner in scoped
                      if plugin.get("name") == name and plugin.get("consumer") is None
                      and plugin.get("enabled", True) is not False
                      and (kind == "global" or owner is route or owner is service)]
        for wanted in ("route", "service", "global"):  # Kong loads enabled plugins only
            chosen = [p for p, kind in candidates if kind == wanted]
            if chosen:
                running[name] = chosen[0]
                break
    if len(running) > 1:
        raise InvalidInput(f"route {route.get('name') or route.get('id')}: both credits and "
                           "credits-metered run on it and would each charge; keep one")
    if not running:
        return PricedRoute(route, service, None, {})
    ((name, plugin),) = running.items()
    config = plugin.get("config")
    return PricedRoute(route, service, name, config if isinstance(config, Mapping) else {})


def _records(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value or [] if isinstance(v, Mapping)] if isinstance(value, list) else []


def _find(entities: list[Mapping[str, Any]], ref: Any) -> Mapping[str, Any] | None:
    """The entity a reference names: by name or id, or a `{name: ...}`/`{id: ...}` record."""
    if isinstance(ref, Mapping):
        ref = ref.get("id") or ref.get("name")
    for entity in entities:
        if ref is not None and ref in (entity.get("name"), entity.get("id")):
            return entity
    return None
