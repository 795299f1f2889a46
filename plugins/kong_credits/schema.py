"""The plugins' configuration: Kong schema (data) and its parsed, frozen form.

`credits` prices a request at access; `credits-metered` holds an estimate at access and
settles the price the upstream reports after the response. They share every field but the
metered ones (`cost_header`, `max_cost`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .engine import PERIOD_SECONDS, AbuseDetection, RateLimit
from .errors import InvalidInput
from .kong_schema import validate
from .money import MAX_AMOUNT
from .price import Price
from .redis_url import parse_redis_url

__all__ = ["DEFAULT_REDIS_URL", "REDIS_URL_ENV", "PluginConfig",
           "default_redis_url", "parse_config", "plugin_schema"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_URL_ENV = "KONG_CREDITS_REDIS_URL"


def default_redis_url() -> str:
    """$KONG_CREDITS_REDIS_URL, else the local default: the Redis of a config without
    redis_url. Read where the plugin runs (the plugin server, at StartInstance), never put
    into the schema: Kong stores schema defaults in every config and its Admin API shows them.
    """
    return os.environ.get(REDIS_URL_ENV) or DEFAULT_REDIS_URL


_PRICE_PARTS = {
    "per_request": "Credits per request.",
    "per_kb_request": "Credits per KB (1024 bytes) of request (request.size, headers "
                      "included), rounded up.",
    "per_kb_response": "Credits per KB (1024 bytes) of response (response.size, headers "
                       "included), rounded up.",
    "per_second": "Credits per second of upstream time (latencies.proxy), rounded up.",
}


def _price_fields(metered: bool) -> list[dict[str, Any]]:
    if not metered:
        return [{"cost": {
            "type": "integer", "default": 1, "between": [0, MAX_AMOUNT], "required": True,
            "description": "Credits charged per request on this route (0: free, still "
                           "recorded).",
        }}]
    return [
        {"cost": {
            "type": "integer", "default": 1, "between": [1, MAX_AMOUNT], "required": True,
            "description": "The estimate held at access until the response reports the "
                           "price (at least 1: a zero estimate would hold nothing).",
        }},
        {"cost_header": {
            "type": "string", "required": False, "len_min": 1,
            "description": "Upstream response header with the actual credits used, settled "
                           "in the log phase; missing or not a whole number: the estimate. "
                           "This, price, or both.",
        }},
        {"price": {
            "type": "record", "required": False,
            "description": "A price from what the request consumed (kong.log.serialize): "
                           "per_request + per KB of request and of response + per second of "
                           "upstream time, each part rounded up to whole credits; added to "
                           "the cost_header's credits when both are set (README: The price "
                           "formula). This, cost_header, or both.",
            "fields": [
                *({name: {"type": "integer", "default": 0, "between": [0, MAX_AMOUNT],
                          "required": True, "description": description}}
                  for name, description in _PRICE_PARTS.items()),
                {"status_free": {
                    "type": "array", "default": [], "required": True,
                    "elements": {"type": "integer", "between": [100, 599]},
                    "description": "Response statuses charged 0 (e.g. 500, 502, 503, 504 so "
                                   "that customers do not pay for errors).",
                }},
            ],
        }},
        {"max_cost": {
            "type": "integer", "required": False, "between": [1, MAX_AMOUNT],
            "description": "The most one request is settled at; a larger price is clamped "
                           "(and logged when the header reported it). Unset: 10 x cost.",
        }},
    ]


def plugin_schema(*, metered: bool = False) -> list[dict[str, Any]]:
    """The config record's fields in Kong's schema syntax (what `--dump-all-plugins` prints),
    of `credits`, or of `credits-metered` with `metered`.

    A function, not a constant: each caller gets its own copy. No default comes from the
    environment (see `default_redis_url`).
    """
    period_fields = [
        {period: {"type": "integer", "gt": 0, "required": False,
                  "description": f"Most requests a consumer may make in any {period}."}}
        for period in PERIOD_SECONDS
    ]
    return [
        *_price_fields(metered),
        {"record_request": {
            "type": "boolean", "default": False, "required": True,
            "description": "Also record each request's method and path in its event: one "
                           "more PDK call per request. Off: events name the route and "
                           "service, which identify the operation.",
        }},
        {"rate_limit": {
            "type": "record", "required": False, "fields": period_fields,
            "description": "Sliding-window limits per consumer; none set: unlimited.",
        }},
        {"rate_limit_scope": {
            "type": "string", "default": "route", "required": True,
            "one_of": ["route", "consumer"],
            "description": "route: a consumer's windows count per route (per service for a "
                           "plugin on a service), like Kong's rate-limiting. consumer: one "
                           "window per period shared by every route of the consumer.",
        }},
        {"abuse_detection": {
            "type": "record", "required": False,
            "description": "Alert (and optionally throttle) when a wallet burns credits much "
                           "faster than its usual rate, e.g. a leaked API key.",
            "fields": [
                {"factor": {"type": "number", "gt": 1, "required": True,
                            "description": "Alarm above this multiple of the usual "
                                           "credits per minute."}},
                {"warmup_minutes": {"type": "integer", "default": 10, "between": [1, 100_000],
                                    "required": True,
                                    "description": "Minutes of history before any alarm."}},
                {"min_rate": {"type": "integer", "default": 100, "between": [1, MAX_AMOUNT],
                              "required": True,
                              "description": "No alarm below this many credits a minute."}},
                {"throttle_per_minute": {"type": "integer", "gt": 0, "required": False,
                                         "description": "While suspected, allow the wallet "
                                                        "this many requests a minute (429 "
                                                        "beyond); unset: alert only."}},
            ],
        }},
        {"mode": {
            "type": "string", "default": "enforce", "required": True,
            "one_of": ["enforce", "shadow"],
            "description": "enforce: refuse with 402/429. shadow: charge and record what "
                           "would be admitted, let everything through (for rolling out).",
        }},
        {"on_redis_error": {
            "type": "string", "default": "deny", "required": True,
            "one_of": ["deny", "allow", "spool"],
            "description": "When Redis is down or late: deny (503 with a JSON error), "
                           "allow (pass the request unmetered and log an error) or spool "
                           "(pass it, write it to the plugin server's local spool and charge "
                           "it once Redis answers again; rate limits are not checked "
                           "meanwhile).",
        }},
        {"spool_max_mb": {
            "type": "integer", "default": 64, "between": [1, 1_048_576], "required": True,
            "description": "With on_redis_error spool: the most the spool of this Redis "
                           "may hold on the plugin server's disk; when full, requests pass "
                           "unmetered (as with allow) and are counted as dropped.",
        }},
        {"spool_fsync": {
            "type": "string", "default": "interval", "required": True,
            "one_of": ["always", "interval", "never"],
            "description": "With on_redis_error spool: when spooled requests reach the disk. "
                           "A plugin-server crash loses none either way; an OS crash or "
                           "power loss may lose: always, none (one fsync per spooled "
                           "request); interval, the last second; never, the kernel's "
                           "writeback delay (~30 s).",
        }},
        {"redis_url": {
            "type": "string", "required": False, "len_min": 1, "referenceable": True,
            "description": "redis://[user:password@]host:port/db, rediss://... (TLS, "
                           "?ssl_ca_certs=...) or unix:///path?db=N (README: Where Redis "
                           "is), or a vault reference such as "
                           "{vault://env/credits-redis-url}. Unset: "
                           "$KONG_CREDITS_REDIS_URL of the plugin server, else "
                           "redis://127.0.0.1:6379/0.",
        }},
        {"redis_timeout_ms": {
            "type": "integer", "default": 250, "between": [1, 60_000], "required": True,
            "description": "Longest wait for one Redis reply; a late one is asked for once "
                           "more (same request id, charged once) before on_redis_error applies.",
        }},
        {"redis_wait_replicas": {
            "type": "integer", "default": 0, "between": [0, 1], "required": True,
            "description": "1: after each script call (authorize, and settle), wait for one "
                           "replica to acknowledge its writes (Redis WAIT, in the same round "
                           "trip), so a failover to that replica loses no admitted charge or "
                           "event. Not acknowledged within redis_wait_timeout_ms: the request "
                           "is still answered, the charge stands, and it is counted and "
                           "logged. 0: no wait; a failover may lose the last replication lag's "
                           "charges and events (README: Production Redis).",
        }},
        {"redis_wait_timeout_ms": {
            "type": "integer", "default": 50, "between": [1, 60_000], "required": True,
            "description": "With redis_wait_replicas 1: the longest wait for the replica's "
                           "acknowledgement. Less than redis_timeout_ms.",
        }},
    ]


KONG_KEYS = frozenset({"route_id", "service_id", "consumer_id", "plugin_instance_name",
                       "$refs"})
"""What Kong adds to a config it sends (with `__`-prefixed keys); anything else is a field,
so one the plugin does not have (a `cost_header` on `credits`) is an error, not ignored.
`$refs` names the vault references Kong resolved (a referenceable redis_url)."""


@dataclass(frozen=True, slots=True)
class PluginConfig:
    """One plugin instance's configuration, validated and typed."""

    cost: int
    cost_header: str | None
    """credits-metered only: the header the price is settled from (None: not read)."""
    price: Price | None
    """credits-metered only: the price from what the request consumed (None: none)."""
    max_cost: int
    """The most a settle may charge (credits-metered): max_cost, else 10 x cost."""
    record_request: bool
    limits: tuple[RateLimit, ...]
    limit_scope: str
    """Whose windows the limits count in: the plugin's route or service id, or "" (shared
    by every route: rate_limit_scope=consumer)."""
    abuse: AbuseDetection | None
    shadow: bool
    allow_on_redis_error: bool
    on_redis_error: str
    """deny, allow or spool."""
    spool_max_bytes: int
    spool_fsync: str
    redis_url: str
    redis_timeout_ms: int
    redis_wait_replicas: int
    """Replicas that must acknowledge each script call's writes (Redis WAIT): 0 or 1."""
    redis_wait_timeout_ms: int
    route_id: str
    service_id: str


def parse_config(raw: dict[str, Any], *, metered: bool = False) -> PluginConfig:
    """Validate `raw` (the config JSON Kong sends to StartInstance) against the schema of
    `credits`, or of `credits-metered` with `metered`.

    Kong validated it already; checking again turns a hand-edited or stale config into a
    clear StartInstance error instead of a wrong charge. Kong's extra keys (route_id,
    __key__, ...) are not config fields and are read separately.
    """
    fields = plugin_schema(metered=metered)
    own = {k: v for k, v in raw.items() if k not in KONG_KEYS and not k.startswith("__")}
    config, errors = validate(fields, own)
    name = "credits-metered" if metered else "credits"
    if errors:
        raise InvalidInput(f"invalid {name} config: " + "; ".join(map(str, errors)))
    if metered and not config.get("cost_header") and not config.get("price"):
        raise InvalidInput(f"invalid {name} config: set cost_header, price, or both (what "
                           "the request is settled at)")
    redis_url = _redis_url(config.get("redis_url"), "credits-metered" if metered else "credits")
    limits = config.get("rate_limit") or {}
    abuse = config.get("abuse_detection")
    route_id, service_id = str(raw.get("route_id") or ""), str(raw.get("service_id") or "")
    return PluginConfig(
        cost=config["cost"],
        cost_header=config.get("cost_header"),
        price=Price.from_config(config["price"]) if config.get("price") else None,
        max_cost=config.get("max_cost") or min(10 * config["cost"], MAX_AMOUNT),
        record_request=config["record_request"],
        limits=tuple(RateLimit(PERIOD_SECONDS[p], n) for p, n in limits.items() if n),
        limit_scope=(route_id or service_id) if config["rate_limit_scope"] == "route" else "",
        abuse=AbuseDetection(
            factor=abuse["factor"], warmup_minutes=abuse["warmup_minutes"],
            min_rate=abuse["min_rate"], throttle_per_minute=abuse.get("throttle_per_minute", 0),
        ) if abuse else None,
        shadow=config["mode"] == "shadow",
        allow_on_redis_error=config["on_redis_error"] == "allow",
        on_redis_error=config["on_redis_error"],
        spool_max_bytes=config["spool_max_mb"] * 1024 * 1024,
        spool_fsync=config["spool_fsync"],
        redis_url=redis_url,
        redis_timeout_ms=config["redis_timeout_ms"],
        redis_wait_replicas=config["redis_wait_replicas"],
        redis_wait_timeout_ms=_wait_timeout_ms(config, "credits-metered" if metered else "credits"),
        route_id=route_id,
        service_id=service_id,
    )


def _wait_timeout_ms(config: dict[str, Any], plugin: str) -> int:
    """redis_wait_timeout_ms, below redis_timeout_ms when waiting: the WAIT's reply comes
    within the same call's deadline, so a replica that does not answer is counted, not taken
    for a Redis that does not answer (which would drop the connection and ask again)."""
    wait_ms = config["redis_wait_timeout_ms"]
    if config["redis_wait_replicas"] and wait_ms >= config["redis_timeout_ms"]:
        raise InvalidInput(
            f"invalid {plugin} config: redis_wait_timeout_ms ({wait_ms}) must be less than "
            f"redis_timeout_ms ({config['redis_timeout_ms']})")
    return int(wait_ms)


def _redis_url(configured: str | None, plugin: str) -> str:
    """The instance's Redis URL, checked now: a malformed one fails StartInstance with a clear
    error (password masked) rather than every request with a 503.

    Kong resolves a vault reference before the plugin sees the config (and drops one it
    cannot resolve, leaving the field unset); one that still arrives here was not resolved.
    """
    url = configured or default_redis_url()
    field = "redis_url" if configured else f"redis_url (unset: ${REDIS_URL_ENV})"
    if url.startswith("{vault://"):
        raise InvalidInput(f"invalid {plugin} config: {field}: the vault reference was not "
                           "resolved (Kong resolves it; a test host does not)")
    try:
        parse_redis_url(url)
    except InvalidInput as exc:
        raise InvalidInput(f"invalid {plugin} config: {field}: {exc}") from None
    return url
