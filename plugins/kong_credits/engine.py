"""The hot path: authorize and settle requests, one Redis script call each.

`authorize_call`/`settle_call` pack a request into a script's KEYS and ARGV; `Decision` and
`Settlement` decode the replies. `Engine` runs them on a blocking redis-py client (CLI, tests,
tools); the plugin runs the same calls on its asyncio client (`AsyncEngine`). No PDK, no HTTP.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import redis

from . import scripts
from .errors import InvalidInput, RedisUnavailable
from .keys import WalletKeys, parent_of
from .money import parse_cost
from .names import parse_request_id, parse_wallet

__all__ = [
    "DEFAULT_ANSWER_TTL_MS",
    "DEFAULT_HOLD_MS",
    "PERIOD_SECONDS",
    "AbuseDetection",
    "AsyncEngine",
    "AuthorizeRequest",
    "Decision",
    "Engine",
    "PreparedAuthorize",
    "RateLimit",
    "Settlement",
    "authorize_call",
    "settle_call",
]

PERIOD_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
DEFAULT_ANSWER_TTL_MS = 120_000
"""How long an admitted request's answer is kept, so a retry with its id charges nothing."""
DEFAULT_HOLD_MS = 900_000
"""How long credits held for a later settle wait for it; then the forwarder settles the hold
at its estimate (lapsed_holds.py)."""

AUTHORIZE = scripts.load("authorize")
SETTLE = scripts.load("settle")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `limit` admitted requests in any span of `period_s` seconds."""

    period_s: int
    limit: int

    def __post_init__(self) -> None:
        for name in ("period_s", "limit"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"rate limit {name} must be a positive integer, not {value!r}")


@dataclass(frozen=True, slots=True)
class AbuseDetection:
    """Alarm when a wallet burns more than `factor` x its usual credits per minute.

    The usual rate is an exponentially weighted moving average of full minutes (weight 0.1
    for the newest). No alarm before `warmup_minutes` of history, nor below `min_rate`
    credits in the current minute. With `throttle_per_minute`, the wallet is held to that
    many requests a minute until a full minute falls back under the threshold.
    """

    factor: float
    warmup_minutes: int = 10
    min_rate: int = 100
    throttle_per_minute: int = 0


NO_ABUSE_DETECTION = AbuseDetection(factor=0)


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    """One request to price: who pays (wallet), who calls (consumer), what it costs."""

    request_id: str
    wallet: str
    consumer: str
    cost: int
    route: str = ""
    service: str = ""
    method: str = ""
    path: str = ""
    limits: Sequence[RateLimit] = field(default=())
    limit_scope: str = ""
    """The route or service id whose windows `limits` count in ("": every route's)."""
    hold: bool = False
    """Reserve `cost` as an estimate and emit the event at settle, not now."""
    abuse: AbuseDetection | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer of authorize. Refusals are values: status 402 or 429, and a `reason`:
    credits, cap:day|month, parent_cap:day|month, member_cap:day|month, rate_limit,
    abuse_throttle ("" when admitted)."""

    status: int
    cost: int
    balance: int
    limit: int | None
    remaining: int | None
    reset_ms: int
    retry_after_ms: int
    replayed: bool
    reason: str = ""

    @property
    def admitted(self) -> bool:
        return self.status == 200

    @classmethod
    def from_reply(cls, reply: Sequence[Any]) -> Decision:
        status, cost, balance, limit, remaining, reset_ms, retry_after_ms, replayed, reason = reply
        has_limit = limit >= 0
        return cls(
            status=int(status), cost=int(cost), balance=int(balance),
            limit=int(limit) if has_limit else None,
            remaining=int(remaining) if has_limit else None,
            reset_ms=int(reset_ms), retry_after_ms=int(retry_after_ms), replayed=bool(replayed),
            reason=reason.decode() if isinstance(reason, bytes) else str(reason or ""),
        )


@dataclass(frozen=True, slots=True)
class Settlement:
    """The answer of settle: status 200, or 404 when no hold exists for the request."""

    status: int
    cost: int
    balance: int
    unpaid: int
    replayed: bool

    @classmethod
    def from_reply(cls, reply: Sequence[int]) -> Settlement:
        status, cost, balance, unpaid, replayed = reply
        return cls(int(status), int(cost), int(balance), int(unpaid), bool(replayed))


@lru_cache(maxsize=4096)
def _family(wallet: str) -> tuple[WalletKeys, str, tuple[str, ...]]:
    """A wallet's keys, its parent's name ("" for none) and the ten KEYS every script opens
    (the wallet's five, then its parent's, or its own again): hot wallets repeat, so these
    strings are built (and the name checked) once, not on every request."""
    keys = WalletKeys(parse_wallet(wallet))
    parent = parent_of(wallet)
    family = (*keys.wallet_keys, *(WalletKeys(parent) if parent else keys).wallet_keys)
    return keys, parent or "", family


def authorize_call(
    request: AuthorizeRequest,
    *,
    now_ms: int = 0,
    answer_ttl_ms: int = DEFAULT_ANSWER_TTL_MS,
    hold_ms: int = DEFAULT_HOLD_MS,
) -> tuple[list[str], list[str | int]]:
    """KEYS and ARGV of authorize.lua for `request` (now_ms 0: Redis's clock decides).

    Checks every value first (InvalidInput): callers are not trusted with the money path.
    """
    wallet, parent, family = _family(request.wallet)
    parse_request_id(request.request_id)
    cost = request.cost
    if type(cost) is not int:  # a bool, a float or a numeric string is a caller's bug
        raise InvalidInput(f"cost must be a whole number of credits, not {cost!r}")
    parse_cost(cost)
    if request.hold and cost == 0:
        raise InvalidInput("a hold needs a cost of at least 1: the estimate bounds the debt")
    if ":" in request.limit_scope:
        raise InvalidInput(f"limit scope must not contain ':', not {request.limit_scope!r}")
    abuse = request.abuse or NO_ABUSE_DETECTION
    keys = [
        *family, wallet.events, wallet.request(request.request_id),
        wallet.reservation(request.request_id), wallet.alerts, wallet.throttle, wallet.holds,
    ]
    args: list[str | int] = [
        request.request_id, cost, now_ms, answer_ttl_ms,
        hold_ms if request.hold else 0,
        request.wallet, request.consumer, request.route, request.service,
        request.method, request.path, parent,
        repr(float(abuse.factor)), abuse.warmup_minutes, abuse.min_rate,
        abuse.throttle_per_minute, len(request.limits),
    ]
    for rate_limit in request.limits:
        keys.append(wallet.rate_limit(request.consumer, rate_limit.period_s,
                                      request.limit_scope))
        args += (rate_limit.period_s * 1000, rate_limit.limit)
    return keys, args


@lru_cache(maxsize=4096)
def _wallet_call_parts(wallet: str) -> tuple[tuple[str, ...], str, str, tuple[str, ...], str,
                                              str]:
    """What an authorize call takes from the wallet alone, built once per wallet: the 10
    family keys and the event stream; the request and reservation key prefixes; alerts,
    throttle, holds; the rate-limit key prefix; the parent's name."""
    keys, parent, family = _family(wallet)
    return ((*family, keys.events), keys.request(""), keys.reservation(""),
            (keys.alerts, keys.throttle, keys.holds),
            keys.rate_limit("", 0, "").partition(":rl:")[0] + ":rl:", parent)


class PreparedAuthorize:
    """authorize.lua for one plugin config: `authorize_call` with what the config fixes
    (price, route, service, limits, hold, abuse detection) checked and laid out once, so a
    request adds only its id, wallet, consumer, method and path.

    `call(...)` returns what `authorize_call(AuthorizeRequest(...))` returns for the same
    request, and checks the same: the request id and the wallet name.
    """

    __slots__ = ("_args_config", "_args_head", "_args_route", "_limits", "hold")

    def __init__(self, *, cost: int, route: str = "", service: str = "",
                 limits: Sequence[RateLimit] = (), limit_scope: str = "", hold: bool = False,
                 abuse: AbuseDetection | None = None,
                 answer_ttl_ms: int = DEFAULT_ANSWER_TTL_MS,
                 hold_ms: int = DEFAULT_HOLD_MS) -> None:
        # authorize_call's checks of the config, once (with a valid request id and wallet)
        _, args = authorize_call(AuthorizeRequest(
            request_id="x", wallet="x", consumer="", cost=cost, route=route, service=service,
            limits=tuple(limits), limit_scope=limit_scope, hold=hold, abuse=abuse,
        ), answer_ttl_ms=answer_ttl_ms, hold_ms=hold_ms)
        self.hold = hold
        self._limits = tuple(f"{rate_limit.period_s}:{limit_scope}:" for rate_limit in limits)
        self._args_head = tuple(args[1:5])  # cost, now_ms, answer_ttl_ms, hold_ms
        self._args_route = tuple(args[7:9])  # route, service
        self._args_config = tuple(args[12:])  # abuse detection, the limits

    def call(self, request_id: str, wallet: str, consumer: str, method: str = "",
             path: str = "") -> tuple[list[str], list[str | int]]:
        """KEYS and ARGV of authorize.lua for one request (InvalidInput: a bad request id or
        wallet name)."""
        keys_head, request_key, hold_key, keys_tail, rate_limit_key, parent = (
            _wallet_call_parts(wallet))
        parse_request_id(request_id)
        return [
            *keys_head, request_key + request_id, hold_key + request_id, *keys_tail,
            *[f"{rate_limit_key}{window}{consumer}" for window in self._limits],
        ], [
            request_id, *self._args_head, wallet, consumer, *self._args_route, method, path,
            parent, *self._args_config,
        ]


def settle_call(
    request_id: str,
    wallet: str,
    cost: int,
    *,
    status: int | None = None,
    now_ms: int = 0,
    answer_ttl_ms: int = DEFAULT_ANSWER_TTL_MS,
    details: Mapping[str, int] | None = None,
) -> tuple[list[str], list[str | int]]:
    """KEYS and ARGV of settle.lua: charge `cost` for a request authorized with hold=True.

    `details`: integer fields added to the settled event (a computed price's components);
    names are the caller's constants (price.py), never request data."""
    keys_of, _, family = _family(wallet)
    keys = [*family, keys_of.events, keys_of.reservation(parse_request_id(request_id)),
            keys_of.alerts, keys_of.holds]
    args: list[str | int] = [
        request_id, parse_cost(cost), now_ms, answer_ttl_ms, "" if status is None else status,
        wallet,
    ]
    for name, value in (details or {}).items():
        args += (name, int(value))
    return keys, args


def run_script(
    client: redis.Redis, script: scripts.LuaScript, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    """EVALSHA on a blocking client; load the script and retry once on NOSCRIPT.

    Connection errors and timeouts surface as `RedisUnavailable`.
    """
    try:
        try:
            return client.evalsha(script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            client.script_load(script.source)
            return client.evalsha(script.sha, len(keys), *keys, *args)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise RedisUnavailable(str(exc)) from exc


class Engine:
    """authorize/settle on a blocking redis-py client."""

    def __init__(self, client: redis.Redis, *, answer_ttl_ms: int = DEFAULT_ANSWER_TTL_MS,
                 hold_ms: int = DEFAULT_HOLD_MS) -> None:
        self.client = client
        self.answer_ttl_ms = answer_ttl_ms
        self.hold_ms = hold_ms

    def authorize(self, request: AuthorizeRequest, *, now_ms: int = 0) -> Decision:
        keys, args = authorize_call(request, now_ms=now_ms, answer_ttl_ms=self.answer_ttl_ms,
                                    hold_ms=self.hold_ms)
        return Decision.from_reply(run_script(self.client, AUTHORIZE, keys, args))

    def settle(self, request_id: str, wallet: str, cost: int, *, status: int | None = None,
               now_ms: int = 0, details: Mapping[str, int] | None = None) -> Settlement:
        keys, args = settle_call(request_id, wallet, cost, status=status, now_ms=now_ms,
                                 answer_ttl_ms=self.answer_ttl_ms, details=details)
        return Settlement.from_reply(run_script(self.client, SETTLE, keys, args))


ScriptRunner = Callable[[scripts.LuaScript, Sequence[str], Sequence[Any]], Awaitable[Any]]


class AsyncEngine:
    """authorize/settle for asyncio callers, on any async `run(script, keys, args)`.

    The plugin passes its pipelined Redis client's evalsha; the runner raises
    `RedisUnavailable` when Redis is down or late.
    """

    def __init__(self, run: ScriptRunner, *, answer_ttl_ms: int = DEFAULT_ANSWER_TTL_MS,
                 hold_ms: int = DEFAULT_HOLD_MS) -> None:
        self._run = run
        self.answer_ttl_ms = answer_ttl_ms
        self.hold_ms = hold_ms

    async def authorize(self, request: AuthorizeRequest) -> Decision:
        keys, args = authorize_call(request, answer_ttl_ms=self.answer_ttl_ms,
                                    hold_ms=self.hold_ms)
        return Decision.from_reply(await self._run(AUTHORIZE, keys, args))

    def prepare(self, *, cost: int, route: str = "", service: str = "",
                limits: Sequence[RateLimit] = (), limit_scope: str = "", hold: bool = False,
                abuse: AbuseDetection | None = None) -> PreparedAuthorize:
        """A config's authorize, checked and laid out once with this engine's TTLs."""
        return PreparedAuthorize(cost=cost, route=route, service=service, limits=limits,
                                 limit_scope=limit_scope, hold=hold, abuse=abuse,
                                 answer_ttl_ms=self.answer_ttl_ms, hold_ms=self.hold_ms)

    async def authorize_prepared(self, prepared: PreparedAuthorize, request_id: str,
                                 wallet: str, consumer: str, method: str = "",
                                 path: str = "") -> Decision:
        """`authorize` of the request that `prepared` and these fields make."""
        keys, args = prepared.call(request_id, wallet, consumer, method, path)
        return Decision.from_reply(await self._run(AUTHORIZE, keys, args))

    async def authorize_packed(self, keys: Sequence[str], args: Sequence[Any]) -> Decision:
        """authorize.lua with KEYS and ARGV the caller packed (the spool's replay mode)."""
        return Decision.from_reply(await self._run(AUTHORIZE, keys, args))

    async def settle(self, request_id: str, wallet: str, cost: int, *,
                     status: int | None = None,
                     details: Mapping[str, int] | None = None) -> Settlement:
        keys, args = settle_call(request_id, wallet, cost, status=status,
                                 answer_ttl_ms=self.answer_ttl_ms, details=details)
        return Settlement.from_reply(await self._run(SETTLE, keys, args))
