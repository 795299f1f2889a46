"""Regex paths (`~`), as decK writes them from OpenAPI specs, in the host's router."""

from __future__ import annotations

import pytest

from kong_credits.host.declarative import parse_declarative

CONFIG = """
_format_version: "3.0"
upstreams: []
services:
  - name: api
    host: up.example
    port: 8080
    protocol: http
    path: /base
    routes:
      - {name: prefix, paths: [/items]}
      - {name: exact-list, paths: ["~/items$"], regex_priority: 200, strip_path: false}
      - name: one-item
        paths: ["~/items/(?<item_id>[^#?/]+)$"]
        regex_priority: 100
        strip_path: false
      - name: item-report
        paths: ["~/items/(?<item_id>[^#?/]+)/report$"]
        methods: [GET]
        regex_priority: 100
        strip_path: true
"""


@pytest.mark.parametrize(("method", "path", "route", "upstream"), [
    ("GET", "/items", "exact-list", "/base/items"),          # a regex path beats a prefix
    ("GET", "/items/42", "one-item", "/base/items/42"),
    ("GET", "/items/42/report", "item-report", "/base"),     # strip_path: the match goes
    ("POST", "/items/42/report", "prefix", "/base/42/report"),  # the regex would need GET
    ("GET", "/items/4/2", "prefix", "/base/4/2"),            # [^#?/]+ is one segment
    ("GET", "/other/items", None, None),                     # regexes match from the start
])
def test_regex_routes_match_from_the_start_and_rank_above_prefixes(method, path, route,
                                                                   upstream):
    match = parse_declarative(CONFIG).router.match(method, path)
    if route is None:
        assert match is None
        return
    assert match is not None
    assert (match.route.name, match.upstream_path) == (route, upstream)


def test_regex_priority_orders_regex_routes():
    config = parse_declarative("""
_format_version: "3.0"
services:
  - name: api
    url: http://up.example
    routes:
      - {name: low, paths: ["~/a/.*$"], regex_priority: 1}
      - {name: high, paths: ["~/a/(?<x>[^/]+)$"], regex_priority: 5}
""")
    assert config.router.match("GET", "/a/b").route.name == "high"
    assert config.router.match("GET", "/a/b/c").route.name == "low"
