"""schema.py: the credits config as Kong validates it, and its parsed form."""

from __future__ import annotations

import re

import pytest

from kong_credits.engine import RateLimit
from kong_credits.errors import InvalidInput
from kong_credits.price import Price
from kong_credits.schema import DEFAULT_REDIS_URL, parse_config, plugin_schema


def field(name: str) -> dict:
    return next(f[name] for f in plugin_schema() if name in f)


def test_defaults():
    config = parse_config({})
    assert (config.cost, config.cost_header, config.limits) == (1, None, ())
    assert not config.shadow and not config.allow_on_redis_error
    assert config.redis_url == DEFAULT_REDIS_URL and config.redis_timeout_ms == 250


def test_unset_redis_url_comes_from_the_plugin_servers_environment(monkeypatch):
    """Never from a schema default: Kong would store it (password and all) in every config."""
    monkeypatch.setenv("KONG_CREDITS_REDIS_URL", "redis://:s3cret@cache:6380/2")
    assert "default" not in field("redis_url")
    assert parse_config({}).redis_url == "redis://:s3cret@cache:6380/2"
    assert parse_config({"redis_url": "redis://r:1/0"}).redis_url == "redis://r:1/0"


def test_spool_mode_and_its_defaults():
    config = parse_config({"on_redis_error": "spool"})
    assert (config.on_redis_error, config.allow_on_redis_error) == ("spool", False)
    assert (config.spool_max_bytes, config.spool_fsync) == (64 * 1024 * 1024, "interval")
    config = parse_config(metered=True, raw={"cost_header": "X-Units", "spool_max_mb": 1,
                                             "spool_fsync": "always"})
    assert (config.spool_max_bytes, config.spool_fsync) == (1024 * 1024, "always")


def test_full_config_and_kong_extra_keys():
    config = parse_config(metered=True, raw={
        "cost": 2, "cost_header": "X-Units", "rate_limit": {"second": 5, "day": 1000},
        "mode": "shadow", "on_redis_error": "allow", "redis_url": "redis://r:1/0",
        "route_id": "7d5c...", "service_id": "svc", "__key__": "plugins:credits:...",
        "__seq__": 3, "__plugin_id": "abc", "plugin_instance_name": "x",
    })
    assert config.limits == (RateLimit(1, 5), RateLimit(86400, 1000))
    assert config.shadow and config.allow_on_redis_error
    assert (config.route_id, config.service_id) == ("7d5c...", "svc")
    assert config.max_cost == 20  # unset: 10 x cost
    assert config.limit_scope == "7d5c..."  # rate_limit_scope=route, the default


@pytest.mark.parametrize(("extra", "scope"), [
    ({"route_id": "r1", "service_id": "s1"}, "r1"),
    ({"service_id": "s1"}, "s1"),  # a plugin attached to a service counts per service
    ({}, ""),  # a global plugin: one window per consumer
    ({"route_id": "r1", "rate_limit_scope": "consumer"}, ""),
])
def test_rate_limit_scope_is_the_plugins_route_or_service(extra, scope):
    assert parse_config({"rate_limit": {"minute": 1}, **extra}).limit_scope == scope


def test_max_cost_is_taken_as_set():
    config = parse_config({"cost": 5, "cost_header": "X-Units", "max_cost": 7}, metered=True)
    assert config.max_cost == 7


def test_only_credits_metered_has_the_fields_of_a_price_known_later():
    with pytest.raises(InvalidInput, match="cost_header: unknown field"):
        parse_config({"cost": 5, "cost_header": "X-Units"})
    with pytest.raises(InvalidInput, match="price: unknown field"):
        parse_config({"cost": 5, "price": {"per_request": 1}})
    with pytest.raises(InvalidInput, match="set cost_header, price, or both"):
        parse_config({"cost": 5}, metered=True)
    # a zero estimate would hold nothing, and every settled credit would be debt
    with pytest.raises(InvalidInput, match="cost: value should be between 1 and"):
        parse_config({"cost": 0, "cost_header": "X-Units"}, metered=True)


def test_price_record_fills_its_defaults_and_combines_with_cost_header():
    config = parse_config({"cost": 5, "price": {"per_kb_response": 2}}, metered=True)
    assert config.price == Price(per_kb_response=2)
    both = parse_config({"cost": 5, "cost_header": "X-Units",
                         "price": {"per_second": 3, "status_free": [500, 503]}}, metered=True)
    assert (both.cost_header, both.price.status_free) == ("X-Units", frozenset({500, 503}))


@pytest.mark.parametrize(("price", "message"), [
    ({"per_request": -1}, "price.per_request: value should be between 0 and"),
    ({"per_kb_request": 10**15 + 1}, "price.per_kb_request: value should be between"),
    ({"per_second": 0.5}, "price.per_second: expected an integer"),
    ({"per_kb_response": True}, "price.per_kb_response: expected an integer"),
    ({"status_free": [99]}, "price.status_free"),
    ({"status_free": "5xx"}, "price.status_free: expected an array"),
    ({"per_minute": 1}, "price.per_minute: unknown field"),
])
def test_bad_price_records_fail_with_kongs_message(price, message):
    with pytest.raises(InvalidInput, match=re.escape(message)):
        parse_config({"cost": 5, "price": price}, metered=True)


def test_record_request_is_off_by_default():
    assert not parse_config({}).record_request
    assert parse_config({"record_request": True}).record_request


@pytest.mark.parametrize(("config", "message"), [
    ({"cost": -1}, "config.cost: value should be between 0 and 1000000000000000"),
    ({"cost": 1.5}, "config.cost: expected an integer"),
    ({"cost": "1"}, "config.cost: expected an integer"),
    ({"cost": True}, "config.cost: expected an integer"),
    ({"rate_limit": {"minute": 0}}, "config.rate_limit.minute: value must be greater than 0"),
    ({"rate_limit": {"week": 5}}, "config.rate_limit.week: unknown field"),
    ({"mode": "audit"}, "config.mode: expected one of: enforce, shadow"),
    ({"on_redis_error": "retry"}, "config.on_redis_error: expected one of: deny, allow, spool"),
    ({"cost_header": ""}, "config.cost_header: unknown field"),
    ({"rate_limit_scope": "service"},
     "config.rate_limit_scope: expected one of: route, consumer"),
    ({"redis_timeout_ms": 0}, "config.redis_timeout_ms: value should be between 1 and 60000"),
    ({"spool_max_mb": 0}, "config.spool_max_mb: value should be between 1 and 1048576"),
    ({"spool_max_mb": 1.5}, "config.spool_max_mb: expected an integer"),
    ({"spool_fsync": "sometimes"}, "config.spool_fsync: expected one of: always, interval, never"),
])
def test_invalid_config_is_rejected_with_the_field_and_reason(config, message):
    with pytest.raises(InvalidInput) as raised:
        parse_config(config)
    assert message.removeprefix("config.") in str(raised.value)


def test_every_field_is_documented_with_type_and_default_or_bounds():
    for entry in plugin_schema():
        ((name, spec),) = entry.items()
        assert spec["type"] and spec["description"], name
        assert spec["required"] is ("default" in spec), name  # required fields have a default
