"""Plans: a wallet's recurring allowance, its overage terms and its low-balance alert.

A plan is stored in the wallet's state HASH; the scripts (plans.lua) materialise each period
lazily, inside the first authorize, settle or balance read that finds it ended: no scheduler,
exactly once per period. This module validates and writes the terms, and reads them back
(the CLI's `kong-credits plan`, and the admin API's `/v1/wallets/{wallet}/plan`).

Periods are UTC and aligned to an anchor: `day` starts at the anchor's time of day, `week` on
its weekday and time, `month` on its day of month (the month's last day when the month is
shorter: an anchor on the 31st renews on 28 or 29 February) and time. Without an anchor:
midnight UTC, Monday midnight UTC, the 1st of the month at midnight UTC.
"""

from __future__ import annotations

import calendar
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from . import scripts
from .engine import run_script
from .errors import InvalidInput, RedisUnavailable
from .keys import WalletKeys
from .money import MAX_AMOUNT, MAX_PRIORITY, parse_amount
from .names import parse_wallet
from .yaml_files import read_mapping

__all__ = [
    "DEFAULT_ANCHORS",
    "DEFAULT_PLAN_PRIORITY",
    "EVERY",
    "OVERAGE_MODES",
    "UNCHANGED",
    "Overage",
    "Plan",
    "PlanView",
    "apply_plan",
    "load_plans",
    "low_balance_of",
    "period_of",
    "read_state",
    "remove_plan",
    "renew",
    "renew_many",
    "set_low_balance",
    "set_plan",
    "show_plan",
]

EVERY = {"day": 1, "week": 2, "month": 3}
"""Period names and how the scripts store them (plan_every)."""
DEFAULT_PLAN_PRIORITY = 50
"""Below a top-up's default of 100: the allowance burns before purchased credits."""
DAY_MS = 86_400_000
DEFAULT_ANCHORS = {"day": 0, "week": 4 * DAY_MS, "month": 0}
"""1970-01-01 (a Thursday) and Monday 1970-01-05, midnight UTC."""
OVERAGE_MODES = ("refuse", "allow")
MAX_ANCHOR_MS = 253_402_214_400_000 - 1
"""Before 9999-12-31: a period's end must stay within the latest grant expiry."""
RENEW = scripts.load("renew")
UNCHANGED: Any = object()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TERMS = ("allowance", "every", "anchor", "rollover_max", "priority", "overage", "overage_max")
"""The keyword arguments of set_plan: a plan's terms, as pricing.yaml's `plans` names them."""
_EVERY_NAMES = {code: name for name, code in EVERY.items()}


def _iso(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")


def _parse_anchor(value: str | datetime) -> int:
    """Milliseconds since the epoch, exact, from ISO 8601 with a timezone."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidInput(f"anchor must be an ISO 8601 date/time, not {value!r}") from exc
    if value.tzinfo is None:
        raise InvalidInput("anchor needs a timezone (e.g. 2027-01-31T00:00:00Z)")
    ms = (value - _EPOCH) // timedelta(milliseconds=1)
    if not 0 <= ms <= MAX_ANCHOR_MS:
        raise InvalidInput(f"anchor must be between 1970-01-01 and 9999-12-30, not {value}")
    return ms


def _month_start(index: int, day_of_month: int, time_of_day_ms: int) -> int:
    year, month = divmod(index, 12)
    day = min(day_of_month, calendar.monthrange(year, month + 1)[1])
    start = datetime(year, month + 1, day, tzinfo=UTC)
    return (start - _EPOCH) // timedelta(milliseconds=1) + time_of_day_ms


def period_of(every: str, anchor_ms: int, now_ms: int) -> tuple[int, int]:
    """(start ms, end ms) of the period that holds `now_ms`: plans.lua's `plan_period`."""
    if every == "month":
        anchor = _EPOCH + timedelta(milliseconds=anchor_ms)
        time_of_day = anchor_ms % DAY_MS
        now = _EPOCH + timedelta(milliseconds=now_ms)
        index = now.year * 12 + now.month - 1
        start = _month_start(index, anchor.day, time_of_day)
        if start > now_ms:
            index -= 1
            start = _month_start(index, anchor.day, time_of_day)
        return start, _month_start(index + 1, anchor.day, time_of_day)
    length = 7 * DAY_MS if every == "week" else DAY_MS
    start = anchor_ms + (now_ms - anchor_ms) // length * length
    return start, start + length


@dataclass(frozen=True, slots=True)
class Plan:
    """A recurring allowance: `allowance` credits every `every`, from `anchor` on."""

    allowance: int
    every: str
    anchor: str
    rollover_max: int
    priority: int


@dataclass(frozen=True, slots=True)
class Overage:
    """`refuse`: 402 once the credits are gone. `allow`: serve up to `max` credits a period on
    credit (overdraft, marked `overage` in events). `used`: this period's so far."""

    mode: str
    max: int | None
    used: int


@dataclass(frozen=True, slots=True)
class PlanView:
    """A wallet's plan, overage terms, low-balance threshold and current period."""

    wallet: str
    plan: Plan | None
    overage: Overage
    low_balance: int | None
    period: dict[str, Any] | None
    """{"start", "end", "allowance", "rollover"} of the last materialised period, if any."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _int(state: dict[str, str], field: str) -> int | None:
    value = state.get(field)
    return None if value is None else int(float(value))


def _view(wallet: str, state: dict[str, str], now_ms: int) -> PlanView:
    terms = _parse_terms(state.get("plan"))
    plan = None
    if terms is not None:
        plan = Plan(allowance=terms["allowance"], every=_EVERY_NAMES[terms["every"]],
                    anchor=_iso(terms["anchor"]), rollover_max=terms["rollover_max"],
                    priority=terms["priority"])
    last = last_renewal(state)
    overage_max = _int(state, "overage_max")
    used = 0
    if overage_max is not None:
        period = (last["start"] if terms is not None and last else _month_id(now_ms))
        used = _int(state, "overage_used") or 0 if _int(state, "overage_period") == period else 0
    period_view = None
    if last:
        period_view = {"start": _iso(last["start"]), "end": _iso(_int(state, "plan_end") or 0),
                       "allowance": last["allowance"], "rollover": last["rollover"]}
    return PlanView(wallet=wallet, plan=plan,
                    overage=Overage("allow" if overage_max is not None else "refuse",
                                    overage_max, used),
                    low_balance=_int(state, "low_balance"), period=period_view)


def last_renewal(state: dict[str, Any]) -> dict[str, int] | None:
    """The last materialised period as plans.lua records it (`plan_last`): its renewal
    number `seq`, `start` ms, the `allowance` and `rollover` granted and their `priority`;
    None before the first."""
    text = state.get("plan_last")
    if not text:
        return None
    return dict(zip(("seq", "start", "allowance", "rollover", "priority"),
                    map(int, str(text).split(",")), strict=True))


def _month_id(now_ms: int) -> int:
    moment = _EPOCH + timedelta(milliseconds=now_ms)
    return moment.year * 12 + moment.month - 1


def renew(client: redis.Redis, wallet: str, *, now_ms: int = 0) -> int:
    """Sweep the wallet's expired grants and materialise its plan's current period (one
    script call, as authorize does); returns the time it was brought up to, in ms."""
    keys = WalletKeys(parse_wallet(wallet))
    return int(run_script(client, RENEW, [*keys.wallet_keys, keys.alerts],
                          [keys.wallet, now_ms]))


def renew_many(client: redis.Redis, wallets: list[str], *, now_ms: int = 0) -> list[int]:
    """`renew` of each wallet, in one pipeline (one round trip however many): what a page of
    the admin API's wallet list costs. Renewing is idempotent, so after a NOSCRIPT the
    script is loaded and the whole pipeline sent again. A cluster client pipelines no
    scripts: there, one call per wallet."""
    if len(wallets) == 1 or isinstance(client, redis.RedisCluster):
        return [renew(client, wallet, now_ms=now_ms) for wallet in wallets]
    calls = [WalletKeys(parse_wallet(wallet)) for wallet in wallets]
    for _ in range(2):
        pipe = client.pipeline(transaction=False)
        for keys in calls:
            pipe.evalsha(RENEW.sha, 6, *keys.wallet_keys, keys.alerts, keys.wallet, now_ms)
        try:
            return [int(reply) for reply in pipe.execute()]
        except redis.exceptions.NoScriptError:
            client.script_load(RENEW.source)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailable(str(exc)) from exc
    raise RedisUnavailable("the renew script could not be loaded")


def read_state(client: redis.Redis, wallet: str) -> dict[str, str]:
    keys = WalletKeys(parse_wallet(wallet))
    return {_text(k) or "": _text(v) or "" for k, v in client.hgetall(keys.state).items()}


def show_plan(client: redis.Redis, wallet: str, *, now_ms: int = 0) -> PlanView:
    """The wallet's plan, brought up to date first (a read in a new period renews it)."""
    wallet = parse_wallet(wallet)
    now = renew(client, wallet, now_ms=now_ms)
    return _view(wallet, read_state(client, wallet), now)


def _peek(client: redis.Redis, wallet: str) -> PlanView:
    """The terms as written, without renewing: setting a plan grants nothing by itself; the
    next request or read in its period does."""
    seconds, micros = client.time()  # Redis's clock, as the scripts read it
    return _view(wallet, read_state(client, wallet), int(seconds) * 1000 + int(micros) // 1000)


def _whole(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput(f"{what} must be a whole number {low}..{high}, not {value!r}")
    number = value if isinstance(value, int) else None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = int(value.strip())
    if number is None or not low <= number <= high:
        raise InvalidInput(f"{what} must be a whole number {low}..{high}, not {value!r}")
    return number


def set_plan(
    client: redis.Redis,
    wallet: str,
    *,
    allowance: object = UNCHANGED,
    every: str = UNCHANGED,
    anchor: str | datetime | None = UNCHANGED,
    rollover_max: object = UNCHANGED,
    priority: object = UNCHANGED,
    overage: str = UNCHANGED,
    overage_max: object = UNCHANGED,
) -> PlanView:
    """Create or change a wallet's plan or its overage terms.

    Options left UNCHANGED keep their value (a new plan needs `allowance` and `every`; anchor
    None means the default alignment). Validates everything before writing, and writes in a
    transaction on the terms it read (WATCH), so two changes at once never mix. A change
    applies from the next period: the current period's grants stand as they were made
    (changing the schedule never grants a period twice: the renewal waits for the funded
    period's end).
    """
    wallet = parse_wallet(wallet)
    keys = WalletKeys(wallet)

    def change(pipe: redis.client.Pipeline) -> None:
        state = {_text(k) or "": _text(v) or "" for k, v in pipe.hgetall(keys.state).items()}
        to_set: dict[str, str] = {}
        to_delete: list[str] = []
        if any(v is not UNCHANGED for v in (allowance, every, anchor, rollover_max, priority)):
            to_set["plan"] = _format_terms(_changed_terms(
                wallet, _parse_terms(state.get("plan")), allowance=allowance, every=every,
                anchor=anchor, rollover_max=rollover_max, priority=priority))
        if overage is not UNCHANGED and overage not in OVERAGE_MODES:
            raise InvalidInput(f"overage must be refuse or allow, not {overage!r}")
        if overage == "refuse":
            if overage_max is not UNCHANGED:
                raise InvalidInput("--overage-max goes with --overage allow")
            to_delete.append("overage_max")
        elif overage == "allow" or overage_max is not UNCHANGED:
            if overage_max is UNCHANGED or overage_max is None:
                raise InvalidInput("--overage allow needs --overage-max N (credits per period)")
            if overage is UNCHANGED and "overage_max" not in state:
                raise InvalidInput("--overage-max goes with --overage allow")
            to_set["overage_max"] = str(parse_amount(overage_max, "overage max"))
        pipe.multi()
        if to_set:
            pipe.hset(keys.state, mapping=to_set)
        if to_delete:
            pipe.hdel(keys.state, *to_delete)

    client.transaction(change, keys.state)
    return _peek(client, wallet)


def _changed_terms(wallet: str, terms: dict[str, int] | None, *, allowance: object,
                   every: object, anchor: object, rollover_max: object,
                   priority: object) -> dict[str, int]:
    """`terms` (None: no plan yet) with the given changes, each checked."""
    if terms is None:
        if allowance is UNCHANGED or every is UNCHANGED:
            raise InvalidInput(f"wallet {wallet!r} has no plan yet: give both --allowance and "
                               "--every")
        terms = {"rollover_max": 0, "priority": DEFAULT_PLAN_PRIORITY, "anchor_default": 1}
    terms = dict(terms)
    if every is not UNCHANGED:
        if every not in EVERY:
            raise InvalidInput(f"every must be one of day, week, month, not {every!r}")
        # A default anchor follows the period: a daily plan made weekly renews on Mondays.
        if anchor is UNCHANGED and terms["anchor_default"]:
            anchor = None
        terms["every"] = EVERY[every]
    if allowance is not UNCHANGED:
        terms["allowance"] = parse_amount(allowance, "allowance")
    if anchor is not UNCHANGED:
        period = _EVERY_NAMES[terms["every"]]
        terms["anchor"] = DEFAULT_ANCHORS[period] if anchor is None else _parse_anchor(anchor)
        terms["anchor_default"] = int(anchor is None)
    if rollover_max is not UNCHANGED:
        terms["rollover_max"] = _whole(rollover_max, "rollover max", 0, MAX_AMOUNT)
    if priority is not UNCHANGED:
        terms["priority"] = _whole(priority, "priority", 0, MAX_PRIORITY)
    return terms


_TERM_ORDER = ("allowance", "every", "anchor", "rollover_max", "priority", "anchor_default")
"""The `plan` field: these integers joined by commas, in this order (plans.lua reads the
first five)."""


def _format_terms(terms: dict[str, int]) -> str:
    return ",".join(str(terms[name]) for name in _TERM_ORDER)


def _parse_terms(text: str | None) -> dict[str, int] | None:
    if not text:
        return None
    return dict(zip(_TERM_ORDER, map(int, text.split(",")), strict=True))


def set_low_balance(client: redis.Redis, wallet: str, threshold: object) -> int | None:
    """Alert `low_balance` when the wallet's balance falls below `threshold` credits, once per
    crossing (a top-up back to the threshold or above re-arms it); None removes it."""
    keys = WalletKeys(parse_wallet(wallet))
    if threshold is None:
        client.hdel(keys.state, "low_balance", "low_alerted")
        return None
    credits = parse_amount(threshold, "low balance")
    client.hset(keys.state, "low_balance", str(credits))
    return credits


def low_balance_of(client: redis.Redis, wallet: str) -> int | None:
    """The wallet's low-balance threshold (None: no alert)."""
    value = client.hget(WalletKeys(parse_wallet(wallet)).state, "low_balance")
    return None if value is None else int(value)


def remove_plan(client: redis.Redis, wallet: str) -> PlanView:
    """Stop the plan: no further periods. Grants already made stay until they expire, and
    the last period stays recorded, so a plan set again within it is not granted twice."""
    wallet = parse_wallet(wallet)
    client.hdel(WalletKeys(wallet).state, "plan")
    return _peek(client, wallet)


def load_plans(path: str | Path) -> dict[str, dict[str, Any]]:
    """The `plans` section of a pricing file (config/pricing.yaml): wallet -> its terms, as
    `set_plan` keywords (allowance, every, anchor, rollover_max, priority, overage,
    overage_max). Unknown keys are an error; values are checked when applied."""
    section = read_mapping(path, "pricing file").get("plans")
    if section is None:
        return {}
    if not isinstance(section, dict) or not all(isinstance(v, dict) for v in section.values()):
        raise InvalidInput(f"{path}: `plans` must map wallet names to their terms")
    for wallet, terms in section.items():
        unknown = set(terms) - set(_TERMS)
        if unknown:
            raise InvalidInput(f"{path}: plan of {wallet}: unknown keys {sorted(unknown)}")
    return {str(wallet): dict(terms) for wallet, terms in section.items()}


def apply_plan(client: redis.Redis, wallet: str, path: str | Path) -> PlanView:
    """Set `wallet`'s plan to its entry in the pricing file's `plans` section."""
    terms = load_plans(path).get(wallet)
    if terms is None:
        raise InvalidInput(f"{path} has no plan for wallet {wallet!r}")
    return set_plan(client, wallet, **{k: _yaml_value(v) for k, v in terms.items()})


def _yaml_value(value: Any) -> Any:
    """YAML reads an unquoted timestamp as a datetime (without a zone when none is written)."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
