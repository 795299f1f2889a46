"""The `credits` and `credits-metered` Kong plugins: the only module that talks to the PDK.

`credits`, access, per request: who pays (1 PDK call), one authorize script call in Redis,
then either the credit headers or a refusal (1 PDK call); with `record_request`, one more
call for the method and path. It has no log phase at all: Kong runs a plugin's log phase for
every request of every instance that declares it, one more RPC each.

`credits-metered` holds an estimate at access (1 more PDK call: kong.ctx.shared.set) and
settles the price the upstream reports in its log phase (kong.ctx.shared.get,
kong.log.serialize, one settle script call). A route uses one or the other.

With `on_redis_error: spool`, a request Redis cannot answer passes with X-Credits-Spooled
and is written to the plugin server's local spool (spool/), which charges it once Redis is
back; a credits-metered one adds its settled price there from its log phase.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from typing import Any

from . import __version__
from .engine import Decision
from .errors import InvalidInput, RedisUnavailable
from .money import parse_whole_number
from .names import parse_wallet
from .pluginserver_metrics import METRICS
from .redis_pool import ENGINES
from .schema import parse_config, plugin_schema
from .spool import SPOOLS, FsyncPolicy, SettledPrice, Spool, SpooledRequest

__all__ = ["MeteredPlugin", "Plugin", "Schema", "priority", "version"]

Schema = plugin_schema()
version = __version__
priority = 900  # after authentication (key-auth 1250), before Kong's rate-limiting (910)

WALLET_TAG = "credits-wallet:"
HOLD_CTX_KEY = "kong_credits_hold"
NO_CONSUMER = "No authenticated consumer: the credits plugin needs an authentication plugin"
NO_WALLET = "No usable credits wallet for this consumer"
NO_CREDITS = "Insufficient credits"
RATE_LIMITED = "API rate limit exceeded"
THROTTLED = "Temporarily throttled: unusual spending detected on this wallet"
BUDGET_REFUSALS = {
    "cap:day": "Daily spending cap reached",
    "cap:month": "Monthly spending cap reached",
    "parent_cap:day": "Daily spending cap of the parent wallet reached",
    "parent_cap:month": "Monthly spending cap of the parent wallet reached",
    "member_cap:day": "Daily member cap on the parent wallet reached",
    "member_cap:month": "Monthly member cap on the parent wallet reached",
}
UNAVAILABLE = "Credits service unavailable"
SPOOLED_HEADER = "X-Credits-Spooled"

logger = logging.getLogger("kong_credits.plugin")
_ADMITTED = METRICS.admitted  # bound once: the hot path only increments


class RequestIds:
    """Ids for requests: 32 hex digits, a random 64-bit prefix per process, then a counter.

    Unique like uuid4 in practice (two processes collide only if they draw the same 64-bit
    prefix), at a fraction of the cost: uuid4 reads os.urandom and builds a UUID each time.
    Billing backends deduplicate on these ids (`event_id`), so they must never repeat.
    """

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        """A new prefix. Forked processes (`pluginserver --workers N`) call it: copies of one
        prefix would repeat ids, and authorize answers a repeated id from its stored answer,
        admitting a request uncharged."""
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


REQUEST_IDS = RequestIds()
os.register_at_fork(after_in_child=REQUEST_IDS.reseed)


def wallet_of(consumer: dict[str, Any]) -> str:
    """The wallet a consumer pays from: its tag `credits-wallet:<name>` (a shared team wallet,
    or `team/member` drawing on the team's), else its custom_id, username or id.

    Only the tag may name a parent: a custom_id or username is often chosen by whoever signs
    up, so one holding `/` would draw on someone else's wallet. InvalidInput when the name is
    not a valid wallet name (names.parse_wallet) or an untagged one holds `/`.
    """
    for tag in consumer.get("tags") or ():
        if isinstance(tag, str) and tag.startswith(WALLET_TAG):
            return parse_wallet(tag[len(WALLET_TAG):])
    name = consumer.get("custom_id") or consumer.get("username") or consumer.get("id")
    if not isinstance(name, str) or "/" in name:
        raise InvalidInput(f"consumer wallet name {name!r} may not hold '/' (only a "
                           f"{WALLET_TAG}<name> tag names a member wallet)")
    return parse_wallet(name)


def split_request_line(line: Any) -> tuple[str, str]:
    """("GET", "/v1/x") from nginx's $request "GET /v1/x?q=1 HTTP/1.1"; ("", "") if odd."""
    if not isinstance(line, str):
        return "", ""
    method, _, rest = line.partition(" ")
    target = rest.rsplit(" ", 1)[0] if " " in rest else rest
    return method, target.split("?", 1)[0]


def _seconds(ms: int) -> str:
    return str(max(1, math.ceil(ms / 1000)))


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    """The RateLimit-* headers Kong's rate-limiting plugin sends, for the tightest limit."""
    if decision.limit is None:
        return {}
    return {"RateLimit-Limit": str(decision.limit),
            "RateLimit-Remaining": str(decision.remaining),
            "RateLimit-Reset": _seconds(decision.reset_ms)}


class _Throttled:
    """Log an outage once per interval with a count, not once per request."""

    def __init__(self, interval_s: float = 5.0) -> None:
        self.interval_s = interval_s
        self._next = 0.0
        self._suppressed = 0

    def error(self, message: str) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        extra = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        logger.error("%s%s", message, extra)
        self._next, self._suppressed = now + self.interval_s, 0


class Plugin:
    """`credits`: one instance per plugin config (route) and Kong worker; config parsed once
    here."""

    metered = False

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = parse_config(config, metered=self.metered)
        self.engine = ENGINES.get(self.config.redis_url, self.config.redis_timeout_ms,
                                  wait_replicas=self.config.redis_wait_replicas,
                                  wait_timeout_ms=self.config.redis_wait_timeout_ms)
        config = self.config
        self._authorize = self.engine.prepare(
            cost=config.cost, route=config.route_id, service=config.service_id,
            limits=config.limits, limit_scope=config.limit_scope, hold=self.metered,
            abuse=config.abuse)
        self._outage = _Throttled()
        self._unusable_wallet = _Throttled()  # logged apart: neither hides the other
        self._spool: Spool | None = None
        self._fsync = FsyncPolicy(config.spool_fsync)
        if config.on_redis_error == "spool":
            self._spool = SPOOLS.get(config.redis_url, self.engine)

    async def access(self, kong: Any) -> None:
        consumer = await kong.client.get_consumer()
        if not consumer:
            return await kong.response.exit(401, {"message": NO_CONSUMER})
        try:
            wallet = wallet_of(consumer)
        except InvalidInput as exc:
            self._unusable_wallet.error(
                f"credits: refusing consumer {consumer.get('id')} with 403: {exc}")
            return await kong.response.exit(403, {"message": NO_WALLET})
        config = self.config
        method = path = ""
        if config.record_request:
            method, path = split_request_line(await kong.nginx.get_var("request"))
        request_id = REQUEST_IDS.next()
        consumer_id = str(consumer.get("id") or consumer.get("username"))
        try:
            decision = await self.engine.authorize_prepared(
                self._authorize, request_id, wallet, consumer_id, method, path)
        except RedisUnavailable as exc:
            if self._spool is not None:
                return await self._spool_request(kong, exc, SpooledRequest(
                    request_id=request_id, wallet=wallet, consumer=consumer_id,
                    cost=config.cost, at_ms=time.time_ns() // 1_000_000,
                    route=config.route_id, service=config.service_id, method=method,
                    path=path, metered=self.metered, sent=exc.maybe_ran))
            return await self._redis_down(kong, exc)
        if self._spool is not None:
            self._spool.note_answered()
        if decision.admitted:
            _ADMITTED.inc()
            if self.metered:
                await kong.ctx.shared.set(HOLD_CTX_KEY, {"id": request_id, "wallet": wallet})
            return await kong.response.set_headers({
                "X-Credits-Cost": str(decision.cost),
                "X-Credits-Remaining": str(decision.balance),
                **rate_limit_headers(decision),
            })
        if config.shadow:
            METRICS.decision("shadow_refused", decision.reason).inc()
            return await kong.response.set_headers({
                "X-Credits-Shadow-Refusal": str(decision.status),
                "X-Credits-Remaining": str(decision.balance),
            })
        METRICS.decision("refused", decision.reason).inc()
        if decision.status == 429:
            message = THROTTLED if decision.reason == "abuse_throttle" else RATE_LIMITED
            return await kong.response.exit(429, {"message": message}, {
                "Retry-After": _seconds(decision.retry_after_ms), **rate_limit_headers(decision)})
        body = {"message": BUDGET_REFUSALS.get(decision.reason, NO_CREDITS),
                "balance": decision.balance, "cost": decision.cost}
        if decision.reason in BUDGET_REFUSALS:
            body["cap"] = decision.reason
        return await kong.response.exit(402, body)

    async def _spool_request(self, kong: Any, exc: RedisUnavailable,
                             request: SpooledRequest) -> None:
        """on_redis_error=spool: pass the request and write it to the spool, to be charged
        once Redis answers; a full or unwritable spool passes it unmetered (allow)."""
        spool = self._spool
        assert spool is not None
        if not await spool.append_durably(request, max_bytes=self.config.spool_max_bytes,
                                          fsync=self._fsync):
            METRICS.unmetered.inc()
            self._outage.error(f"credits: Redis unavailable and the spool {spool.directory} "
                               f"is full or unwritable: passing requests unmetered "
                               f"(on_redis_error=spool): {exc}")
            return None
        METRICS.decision("spooled", "redis_error").inc()
        if self.metered:
            await kong.ctx.shared.set(HOLD_CTX_KEY, {"id": request.request_id,
                                                     "wallet": request.wallet, "spooled": 1})
        return await kong.response.set_header(SPOOLED_HEADER, "1")

    async def _redis_down(self, kong: Any, exc: RedisUnavailable) -> None:
        if self.config.allow_on_redis_error:
            METRICS.unmetered.inc()
            self._outage.error(f"credits: Redis unavailable, passing requests unmetered "
                               f"(on_redis_error=allow): {exc}")
            return None
        self._outage.error(f"credits: Redis unavailable, refusing with 503 "
                           f"(on_redis_error=deny): {exc}")
        METRICS.unavailable.inc()
        return await kong.response.exit(503, {"message": UNAVAILABLE})


class MeteredPlugin(Plugin):
    """`credits-metered`: hold `cost` at access, settle the upstream's price after the
    response."""

    metered = True

    async def log(self, kong: Any) -> None:
        """Settle the held estimate at the price the upstream reported and/or the `price`
        record computes from the serialized log (price.py)."""
        hold = await kong.ctx.shared.get(HOLD_CTX_KEY)
        if not hold:
            return  # refused, shadow-refused, or Redis was down at access: nothing held
        entry = json.loads(await kong.log.serialize())
        response = entry.get("response") or {}
        config = self.config
        details = None
        if config.price is None:
            cost = self._reported_cost(response.get("headers") or {})
        else:
            header_cost = (self._reported_cost(response.get("headers") or {})
                           if config.cost_header else None)
            breakdown = config.price.compute(entry, header_cost=header_cost,
                                             max_cost=config.max_cost)
            cost, details = breakdown.cost, breakdown.components
        status = response.get("status")
        status = status if type(status) is int else None
        if hold.get("spooled"):
            assert self._spool is not None
            await self._spool.append_durably(
                SettledPrice(hold["id"], cost, status=status, details=details), max_bytes=0,
                fsync=self._fsync)
            return
        try:
            await self.engine.settle(hold["id"], hold["wallet"], cost, status=status,
                                     details=details)
        except RedisUnavailable as exc:
            self._outage.error(f"credits: settle of request {hold['id']} failed; the "
                               f"forwarder settles its hold at the estimate: {exc}")

    def _reported_cost(self, headers: dict[str, Any]) -> int:
        """The upstream's cost header as credits, at most `max_cost`; the held estimate when
        absent or not a whole number. Never raises: the upstream may send anything."""
        config = self.config
        name = config.cost_header or ""
        value = headers.get(name.lower(), headers.get(name))
        if isinstance(value, list):
            value = value[-1] if value else None
        cost = parse_whole_number(value) if isinstance(value, str) else None
        if cost is None or cost < 0:
            if value is not None:
                logger.warning("credits: %s header %.64r is not a whole number of credits: "
                               "charging the estimate %d", name, value, config.cost)
            return config.cost
        if cost > config.max_cost:
            logger.warning("credits: %s header reported %d credits, more than max_cost: "
                           "charging %d", name, cost, config.max_cost)
            return config.max_cost
        return cost
