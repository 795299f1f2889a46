"""decK's services and upstreams from OpenAPI `servers` (go-apiops `openapitools/service.go`):
variables replaced by their defaults, `localhost` and the scheme's port filled in, one server
a plain service host, several an upstream with a target each."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..errors import InvalidInput
from .deck_names import entity_id

__all__ = ["servers_of", "service_entity", "upstream_entity"]


def servers_of(holder: Mapping[str, Any]) -> list[Any]:
    servers = holder.get("servers") or []
    if not isinstance(servers, list):
        raise InvalidInput("expected 'servers' to be an array")
    return servers


def _server_urls(servers: list[Any]) -> list[dict[str, str]]:
    """Go's url.ParseRequestURI of each server URL, variables replaced by their defaults."""
    if not servers:
        return [{"scheme": "", "host": "", "path": "/"}]
    parsed = []
    for server in servers:
        if not isinstance(server, Mapping) or not isinstance(server.get("url"), str):
            raise InvalidInput("expected each server to have a 'url'")
        url = server["url"]
        for name, variable in (server.get("variables") or {}).items():
            default = variable.get("default", "") if isinstance(variable, Mapping) else ""
            url = url.replace("{" + str(name) + "}", str(default))
        parts = urlsplit(url)
        if not parts.scheme and not url.startswith("/"):
            raise InvalidInput(f"failed to parse uri '{url}'")
        parsed.append({"scheme": parts.scheme, "host": parts.netloc, "path": parts.path or "/"})
    return parsed


def _with_defaults(target: Mapping[str, str], scheme_default: str) -> dict[str, str]:
    """decK's setServerDefaults: host localhost, scheme from the port, port from the scheme."""
    host = target["host"] or "localhost"
    hostname, _, port = host.rpartition(":") if ":" in host.split("]")[-1] else (host, "", "")
    scheme = target["scheme"] or {"80": "http", "443": "https"}.get(port, scheme_default)
    if not port and scheme in ("http", "https"):
        port = "80" if scheme == "http" else "443"
        host = f"{host}:{port}"
    return {"scheme": scheme, "host": host, "hostname": (hostname or host).strip("[]"),
            "port": port, "path": target["path"]}


def service_entity(base: str, servers: list[Any], defaults: dict[str, Any] | None,
                   upstream_defaults: dict[str, Any] | None, tags: list[str]
                   ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """decK's CreateKongService: the service named `base` for `servers`, and the upstream
    it needs for several servers or upstream defaults (else None)."""
    service = copy.deepcopy(defaults) if defaults is not None else {}
    service.update(id=entity_id(f"{base}.service"), name=base, tags=list(tags),
                   plugins=[], routes=[])
    targets = _server_urls(servers)
    scheme = str(service.get("protocol") or "https")
    targets = [_with_defaults(t, scheme) for t in targets]
    first = targets[0]
    service.setdefault("protocol", first["scheme"])
    service.setdefault("path", first["path"])
    if "port" not in service:
        if first["port"]:
            service["port"] = int(first["port"])
        else:
            service["port"] = 80 if service["protocol"] == "http" else 443
    upstream = None
    if "host" not in service:
        if len(targets) == 1 and upstream_defaults is None:
            service["host"] = first["hostname"]
        else:
            upstream = upstream_entity(base, servers, upstream_defaults, tags)
            service["host"] = upstream["name"]
    return service, upstream

def upstream_entity(base: str, servers: list[Any], defaults: dict[str, Any] | None,
                    tags: list[str]) -> dict[str, Any]:
    """decK's createKongUpstream: `<base>.upstream`, a target per server (host:port)."""
    upstream = copy.deepcopy(defaults) if defaults is not None else {}
    name = f"{base}.upstream"
    upstream.update(id=entity_id(name), name=name, tags=list(tags))
    if upstream.get("targets") is not None:
        if not isinstance(upstream["targets"], list):
            raise InvalidInput("expected 'targets' to be an array")
        for target in upstream["targets"]:
            if not isinstance(target, dict):
                raise InvalidInput("expected entries in 'targets' to be objects")
            target["tags"] = list(tags)
        return upstream
    upstream["targets"] = [{"target": t["host"], "tags": list(tags)}
                           for t in (_with_defaults(u, "https")
                                     for u in _server_urls(servers))]
    return upstream
