"""declarative + router: kong.yml parsing, Kong's DB-less ids, route priority, strip_path."""

from __future__ import annotations

import uuid

import pytest

from kong_credits.host.declarative import DeclarativeError, parse_declarative
from kong_credits.host.entities import entity_id

KONG_YML = """
_format_version: "3.0"
services:
  - name: billing
    url: http://127.0.0.1:9000/v1
    routes:
      - name: api
        paths: [/api]
      - name: api-reports
        paths: [/api/reports]
        strip_path: false
      - name: api-post
        paths: [/api]
        methods: [POST]
        plugins:
          - name: key-auth
    plugins:
      - name: credits
        config: {cost: 1}
  - name: other
    protocol: https
    host: example.test
    port: 8443
routes:
  - name: top
    service: other
    paths: [/top]
    hosts: [api.example.test]
consumers:
  - username: alice
    custom_id: c-1
    tags: [gold]
    keyauth_credentials:
      - key: alice-key
plugins:
  - name: credits
    route: top
    consumer: alice
    config: {cost: 2}
  - name: credits
    enabled: false
"""


@pytest.fixture(scope="module")
def config():
    return parse_declarative(KONG_YML)


def test_ids_are_kongs_uuid5_of_the_entity_key(config) -> None:
    namespace = uuid.UUID("fd02801f-0957-4a15-a55a-c8d9606f30b5")
    expected = str(uuid.uuid5(uuid.uuid5(namespace, "services"), "billing"))
    assert config.services[0].id == expected == entity_id("services", "billing")
    assert config.consumers[0].id == entity_id("consumers", "alice")
    assert config.credentials[0].id == entity_id("keyauth_credentials",
                                                 "keyauth_credentials:*:alice-key")
    assert parse_declarative(KONG_YML).plugins == config.plugins  # stable across loads


def test_service_url_is_split(config) -> None:
    billing, other = config.services
    assert (billing.protocol, billing.host, billing.port, billing.path) == (
        "http", "127.0.0.1", 9000, "/v1")
    assert (other.protocol, other.host, other.port, other.path) == (
        "https", "example.test", 8443, None)


def test_plugin_scopes(config) -> None:
    scopes = {(p.name, p.route_id, p.service_id, p.consumer_id, p.enabled)
              for p in config.plugins}
    route = {r.name: r.id for r in config.routes}
    service = config.services[0].id
    alice = config.consumers[0].id
    assert scopes == {
        ("key-auth", route["api-post"], None, None, True),
        ("credits", None, service, None, True),
        ("credits", route["top"], None, alice, True),
        ("credits", None, None, None, False),
    }


def test_consumer_and_credential_lookups(config) -> None:
    alice = config.consumer_by_username("alice")
    assert alice is not None and alice.custom_id == "c-1" and alice.tags == ("gold",)
    credential = config.credential_by_key("alice-key")
    assert credential is not None and credential.consumer_id == alice.id
    assert config.credential_by_key("nope") is None


@pytest.mark.parametrize(("method", "path", "host", "route", "upstream"), [
    ("GET", "/api/items", None, "api", "/v1/items"),
    ("GET", "/api", None, "api", "/v1"),
    ("GET", "/apix", None, "api", "/v1/x"),  # plain prefix, as in Kong
    ("GET", "/api/reports/1", None, "api-reports", "/v1/api/reports/1"),  # longer prefix
    ("POST", "/api/reports/1", None, "api-post", "/v1/reports/1"),  # more criteria first
    ("GET", "/top/x", "api.example.test", "top", "/x"),
    ("GET", "/top/x", "other.test", None, None),
    ("GET", "/nothing", None, None, None),
])
def test_route_matching(config, method, path, host, route, upstream) -> None:
    match = config.router.match(method, path, host)
    if route is None:
        assert match is None
    else:
        assert match is not None
        assert (match.route.name, match.upstream_path) == (route, upstream)


def test_every_error_is_reported() -> None:
    with pytest.raises(DeclarativeError) as caught:
        parse_declarative("""
_format_version: "2.1"
upstreams: [{name: u}]
services:
  - name: s
    host: example.test
    routes:
      - name: r
        paths: ["relative", "~/unclosed($"]
  - name: no-host
plugins:
  - name: credits
    route: missing
consumers:
  - tags: [x]
""")
    text = str(caught.value)
    for fragment in ('_format_version: expected "3.0"', "upstreams: not supported",
                     "services[2]: host: required field missing",
                     "'relative': expected a path starting with / or a regex path",
                     "'~/unclosed($': invalid regex",
                     "plugins[1]: route: no route named or with id 'missing'",
                     "consumers[1]: at least one of these fields must be non-empty"):
        assert fragment in text


def test_plugin_configs_are_checked_against_schemas(config) -> None:
    schemas = {"key-auth": [], "credits": [{"cost": {"type": "integer", "required": True,
                                                      "between": [0, 1]}}]}
    with pytest.raises(DeclarativeError) as caught:
        config.validate_plugins(schemas)
    assert caught.value.errors == [
        "plugins[1] (credits): config.cost: value should be between 0 and 1",
        "plugins[2] (credits): config.cost: required field missing",
    ]
    with pytest.raises(DeclarativeError, match="plugin 'credits' not enabled"):
        config.validate_plugins({"key-auth": []})
