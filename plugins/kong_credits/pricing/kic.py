"""Prices as Kong Ingress Controller manifests: one KongPlugin per distinct price, attached
to each route by the `konghq.com/plugins` annotation (Ingress) or an `ExtensionRef` filter
(Gateway API HTTPRoute).

The manifests are made from a declarative config (kong.yml rendered from pricing.yaml, or
converted from a spec), so Kubernetes gets the same routes and prices as DB-less Kong:
- a KongPlugin is named `<plugin>-<cost>-<hash>`, the hash of its plugin and config, so a
  price keeps its name wherever it is used and a changed price gets a new one;
- Ingress: one per Kong route (annotations apply to a whole Ingress), with `konghq.com/methods`,
  `konghq.com/strip-path`, `konghq.com/regex-priority` and `konghq.com/headers.*` as the route
  has them, a rule per host; a regex path `~/x$` is written `/~/x$` with
  `pathType: ImplementationSpecific`, as KIC reads it;
- HTTPRoute: one per Kong service, `strip_path` and hosts (split after 16 rules, the Gateway
  API's limit), a rule per Kong route with a `RegularExpression` or `PathPrefix` match per path,
  method and header value.
Backends are named after the Kong service (a DNS label) with its port: edit them to your
Kubernetes Services.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import yaml

from ..prices import PricedRoute, priced_routes

__all__ = ["RESOURCES", "dump_manifests", "kic_manifests", "kong_plugin_name"]

RESOURCES = ("ingress", "httproute")
KONG_PLUGIN_API = "configuration.konghq.com/v1"
_GROUP = "configuration.konghq.com"
_MAX_RULES = 16
_MANAGED = {"app.kubernetes.io/managed-by": "kong-credits"}
HEADER = ("# Kong Ingress Controller manifests written by `kong-credits render-config "
          "--format kic`:\n# one KongPlugin per distinct price, attached to each route. "
          "Change prices at their source.\n")


def kong_plugin_name(plugin: str, config: Mapping[str, Any]) -> str:
    """`credits-20-1a2b3c4d`: the plugin, the cost and a hash of the whole config."""
    canonical = json.dumps({"plugin": plugin, "config": config}, sort_keys=True,
                           separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:8]
    return f"{plugin}-{config.get('cost', 1)}-{digest}"


def _dns_label(name: str, limit: int = 63) -> str:
    """A Kubernetes name: lower-case alphanumerics and '-', starting with a letter."""
    label = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not label or not label[0].isalpha():
        label = f"r-{label}".rstrip("-")
    return label[:limit].rstrip("-")


class _Names:
    """Unique Kubernetes names per kind."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def __call__(self, name: str) -> str:
        base = _dns_label(name, 58)
        unique, n = base, 1
        while unique in self.taken:
            n += 1
            unique = f"{base}-{n}"
        self.taken.add(unique)
        return unique


def kic_manifests(declarative: Mapping[str, Any], *, resource: str = "ingress",
                  gateway: str = "kong", ingress_class: str = "kong",
                  namespace: str | None = None) -> list[dict[str, Any]]:
    """The KongPlugins, then the Ingresses (or HTTPRoutes) for every route of `declarative`."""
    if resource not in RESOURCES:
        raise ValueError(f"resource must be one of {RESOURCES}")
    routes = priced_routes(declarative)
    plugins: dict[str, dict[str, Any]] = {}
    for priced in routes:
        if priced.plugin:
            name = kong_plugin_name(priced.plugin, priced.config)
            plugins[name] = {
                "apiVersion": KONG_PLUGIN_API, "kind": "KongPlugin",
                "metadata": _metadata(name, namespace),
                "plugin": priced.plugin, "config": dict(priced.config)}
    if resource == "ingress":
        attached = _ingresses(routes, ingress_class, namespace)
    else:
        attached = _httproutes(routes, gateway, namespace)
    return [plugins[n] for n in sorted(plugins)] + attached


def _metadata(name: str, namespace: str | None, **extra: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    metadata["labels"] = dict(_MANAGED)
    metadata.update(extra)
    return metadata


def _backend(priced: PricedRoute) -> tuple[str, int]:
    service = dict(priced.service or {})
    if "url" in service:
        url = urlsplit(str(service["url"]))
        service.update(protocol=url.scheme, port=url.port)
    port = service.get("port") or (443 if service.get("protocol") == "https" else 80)
    return _dns_label(str(service.get("name") or "upstream")), int(port)


def _ingresses(routes: list[PricedRoute], ingress_class: str, namespace: str | None
               ) -> list[dict[str, Any]]:
    names, out = _Names(), []
    for priced in routes:
        route = priced.route
        annotations = {"konghq.com/strip-path": str(route.get("strip_path", True)).lower()}
        if priced.plugin:
            annotations["konghq.com/plugins"] = kong_plugin_name(priced.plugin, priced.config)
        if route.get("methods"):
            annotations["konghq.com/methods"] = ",".join(route["methods"])
        if route.get("regex_priority") is not None:
            annotations["konghq.com/regex-priority"] = str(route["regex_priority"])
        for header, values in _headers(route).items():
            annotations[f"konghq.com/headers.{header.lower()}"] = ",".join(values)
        backend, port = _backend(priced)
        paths = [{"path": "/" + p if p.startswith("~") else p,
                  "pathType": "ImplementationSpecific",
                  "backend": {"service": {"name": backend, "port": {"number": port}}}}
                 for p in route.get("paths") or ["/"]]
        rules = [{"host": host, "http": {"paths": paths}} for host in route.get("hosts") or []]
        name = names(str(route.get("name") or route.get("id") or "route"))
        out.append({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                    "metadata": _metadata(name, namespace, annotations=annotations),
                    "spec": {"ingressClassName": ingress_class,
                             "rules": rules or [{"http": {"paths": paths}}]}})
    return out


def _httproutes(routes: list[PricedRoute], gateway: str, namespace: str | None
                ) -> list[dict[str, Any]]:
    groups: dict[tuple[str, bool, tuple[str, ...]], list[PricedRoute]] = {}
    for priced in routes:
        key = (str((priced.service or {}).get("name") or "routes"),
               bool(priced.route.get("strip_path", True)),
               tuple(priced.route.get("hosts") or ()))
        groups.setdefault(key, []).append(priced)
    names, out = _Names(), []
    for (service, strip_path, hosts), members in groups.items():
        annotations = {"konghq.com/strip-path": str(strip_path).lower()}
        for start in range(0, len(members), _MAX_RULES):
            spec: dict[str, Any] = {"parentRefs": [{"name": gateway}]}
            if hosts:
                spec["hostnames"] = list(hosts)
            spec["rules"] = [_rule(p) for p in members[start:start + _MAX_RULES]]
            out.append({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                        "metadata": _metadata(names(service), namespace,
                                              annotations=dict(annotations)),
                        "spec": spec})
    return out


def _headers(route: Mapping[str, Any]) -> dict[str, list[str]]:
    """A route's `headers` (name -> values, any of which matches), as strings."""
    headers = route.get("headers") or {}
    return {str(k): [str(v) for v in (vs if isinstance(vs, list) else [vs])]
            for k, vs in headers.items()} if isinstance(headers, Mapping) else {}


def _rule(priced: PricedRoute) -> dict[str, Any]:
    route = priced.route
    matches = []
    for path in route.get("paths") or ["/"]:
        if path.startswith("~"):
            match: dict[str, Any] = {"path": {"type": "RegularExpression", "value": path[1:]}}
        else:
            match = {"path": {"type": "PathPrefix", "value": path}}
        for method in route.get("methods") or [None]:
            with_method = {**match, "method": method} if method else dict(match)
            matches.extend({**with_method, "headers": h} if h else with_method
                           for h in _header_matches(route))
    backend, port = _backend(priced)
    rule: dict[str, Any] = {"matches": matches}
    if priced.plugin:
        rule["filters"] = [{"type": "ExtensionRef", "extensionRef": {
            "group": _GROUP, "kind": "KongPlugin",
            "name": kong_plugin_name(priced.plugin, priced.config)}}]
    rule["backendRefs"] = [{"name": backend, "port": port}]
    return rule


def _header_matches(route: Mapping[str, Any]) -> list[list[dict[str, str]]]:
    """Gateway API header matches (one value each): a match per combination of values."""
    combinations: list[list[dict[str, str]]] = [[]]
    for name, values in _headers(route).items():
        combinations = [[*c, {"name": name, "value": v}] for c in combinations for v in values]
    return combinations


def dump_manifests(manifests: list[dict[str, Any]]) -> str:
    """The manifests as one multi-document YAML file."""
    return HEADER + "".join(
        "---\n" + yaml.safe_dump(m, sort_keys=False, allow_unicode=True, width=100)
        for m in manifests)
