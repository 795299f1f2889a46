"""Route matching and the upstream path, like Kong's default (`traditional_compatible`) router.

Priority (`get_priority` in `kong/router/transform.lua`): first the number of criteria a route
uses (methods, hosts, paths; headers/snis are not supported here), then plain hosts over
wildcard hosts, then the length of the matched prefix path; ties go to the route declared first.
Plain paths are prefixes: `/foo` matches `/foo`, `/foo/bar` and `/foobar`, as in Kong; a
regex path (`~/items/(?<id>[^/]+)$`) matches from the start of the path, and a route with one
ranks above plain-prefix routes, by `regex_priority`;
the upstream path follows `path_handling` v0 (Kong's default).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .entities import Route, Service

__all__ = ["RouteMatch", "Router", "upstream_path"]


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    service: Service | None
    matched_path: str | None
    upstream_path: str


@functools.lru_cache(maxsize=1024)
def regex_path(path: str) -> re.Pattern[str]:
    """A Kong regex path (`~` + PCRE, anchored at the start) as a Python pattern: PCRE's
    `(?<name>...)` capture is Python's `(?P<name>...)`. Raises re.error when invalid."""
    return re.compile(_PCRE_CAPTURE.sub("(?P<", path[1:]))


_PCRE_CAPTURE = re.compile(r"\(\?<(?![=!])")


class Router:
    """Finds the route for a request; built once per loaded declarative config."""

    def __init__(self, routes: Sequence[Route], services: dict[str, Service]) -> None:
        self._routes = list(routes)
        self._services = services

    def match(self, method: str, path: str, host: str | None = None) -> RouteMatch | None:
        best: tuple[tuple[int, ...], int, Route, str | None] | None = None
        for index, route in enumerate(self._routes):
            if route.methods and method.upper() not in route.methods:
                continue
            if route.hosts and not _host_matches(route.hosts, host):
                continue
            weight = sum(1 for criteria in (route.methods, route.hosts, route.paths) if criteria)
            plain_hosts = int(bool(route.hosts) and not any("*" in h for h in route.hosts))
            prefixes = _matched_prefixes(route, path) if route.paths else [None]
            if not prefixes:
                continue
            regex = int(any(p.startswith("~") for p in route.paths))
            for prefix in prefixes:
                # Kong's get_priority: a route with a regex path ranks above plain prefixes,
                # then by regex_priority; plain prefixes by length.
                key = (weight, plain_hosts, regex, route.regex_priority if regex else 0,
                       0 if regex else len(prefix or ""))
                if best is None or key > best[0] or (key == best[0] and index < best[1]):
                    best = (key, index, route, prefix)
        if best is None:
            return None
        _, _, route, prefix = best
        service = self._services.get(route.service_id) if route.service_id else None
        return RouteMatch(route, service, prefix, upstream_path(route, service, path, prefix))


def _matched_prefixes(route: Route, path: str) -> list[str]:
    """The part of `path` each route path matches: a plain prefix, or a regex's match."""
    matched = []
    for route_path in route.paths:
        if route_path.startswith("~"):
            found = regex_path(route_path).match(path)
            if found:
                matched.append(found.group(0))
        elif path.startswith(route_path):
            matched.append(route_path)
    return matched


def _host_matches(hosts: Sequence[str], host: str | None) -> bool:
    if not host:
        return False
    host = host.lower().split(":", 1)[0]
    for pattern in hosts:
        pattern = pattern.lower()
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
        if pattern.endswith(".*") and host.startswith(pattern[:-1]):
            return True
        if pattern == host:
            return True
    return False


def upstream_path(route: Route, service: Service | None, path: str, prefix: str | None) -> str:
    """The path Kong sends upstream: `get_upstream_uri_v0` of `kong/router/utils.lua`.

    `prefix` is the matched route path ("/" when the route has no paths); the service path
    (default "/") is joined to what follows the prefix, minding the slashes as Kong does.
    """
    prefix = prefix or "/"
    postfix = _sanitize_postfix(path[len(prefix):])
    base = (service.path if service else None) or "/"
    if base.endswith("/"):
        if route.strip_path:
            if postfix == "":
                if base == "/":
                    return "/"
                return base if path.endswith("/") else base[:-1]
            if postfix.startswith("/"):
                return base[:-1] + postfix
            return base + postfix
        return base + path[1:]
    if route.strip_path:
        if postfix == "":
            return base + "/" if len(path) > 1 and path.endswith("/") else base
        if postfix.startswith("/"):
            return base + postfix
        return base + "/" + postfix
    return base if path == "/" else base + path


def _sanitize_postfix(postfix: str) -> str:
    if postfix in (".", ".."):
        return ""
    if postfix.startswith("./"):
        return postfix[2:]
    if postfix.startswith("../"):
        return postfix[3:]
    return postfix
