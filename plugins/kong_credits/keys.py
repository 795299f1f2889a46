"""Every Redis key kong-credits uses: the only module that builds key strings.

Redis Cluster runs a script only when all its keys live in one hash slot. Wallets are therefore
spread over `SHARDS` hash tags: every key of a wallet, the rate-limit state of the consumers
drawing on it and the event and alert streams that receive its charges carry the wallet's
shard tag. A wallet named `team/alice` draws on its parent `team` in the same script, so the
shard is chosen by the root of the name (`team`): a family of wallets shares one slot.
The forwarder reads one event stream per shard.

`SHARDS` is a deployment setting, `$KONG_CREDITS_SHARDS` (default 16), read once at import by
every process: changing it moves every wallet, so it is part of the data layout, not a tuning
knob (shards.py records it in Redis and stops a process that disagrees). 16 keeps the tags of
earlier versions, `s0`..`s15`, whose slots fall where CRC16 puts them. Any other count aims
shard i's tag at the middle of the i-th of `SHARDS` equal slot ranges, so a cluster whose
masters own contiguous ranges (as `redis-cli --cluster create` and `rebalance` assign them)
holds shards in proportion to its slots.
"""

from __future__ import annotations

import functools
import itertools
import os
import string
import zlib
from binascii import crc_hqx
from dataclasses import dataclass

from .errors import InvalidSetting

__all__ = [
    "DEFAULT_SHARDS",
    "MAX_SHARDS",
    "PREFIX",
    "SHARDS",
    "SHARDS_ENV",
    "SHARDS_KEY",
    "SLOTS",
    "WALLET_INDEX_BUILT_KEY",
    "WALLET_TOKENS_KEY",
    "WalletKeys",
    "alert_stream",
    "alert_streams",
    "dead_letter_stream",
    "dead_letter_streams",
    "event_stream",
    "event_streams",
    "parent_of",
    "parse_shards",
    "shard_of",
    "shard_of_stream",
    "shard_tags",
    "stripe_ignored_event",
    "stripe_payment",
    "stripe_refunds",
    "wallet_index",
    "wallet_indexes",
    "wallet_of_state_key",
]

PREFIX = "kc"
SHARDS_ENV = "KONG_CREDITS_SHARDS"
DEFAULT_SHARDS = 16
"""The layout of every version before the setting existed: tags `s0`..`s15`."""
SLOTS = 16384
"""Redis Cluster's hash slots."""
MAX_SHARDS = SLOTS
"""One shard per slot at most: more would only add streams for the forwarder to read."""
SHARDS_KEY = f"{PREFIX}:shards"
"""STRING: the shard count the deployment's first process recorded (shards.py)."""
WALLET_TOKENS_KEY = f"{PREFIX}:wallet_tokens"
"""HASH token id -> JSON {wallet, SHA-256 of the token's secret, created_at}: the admin API's
read-only wallet tokens (admin/auth.py). Deleting a field revokes that token at once."""


def parse_shards(text: str) -> int:
    """`$KONG_CREDITS_SHARDS` as a shard count: a whole number 1..16384 in at most five
    ASCII digits (InvalidSetting, quoting at most 40 characters of what was given)."""
    digits = text.strip()
    if (digits.isascii() and digits.isdigit() and len(digits) <= len(str(MAX_SHARDS))
            and 1 <= int(digits) <= MAX_SHARDS):
        return int(digits)
    shown = text if len(text) <= 40 else text[:40] + "..."
    raise InvalidSetting(f"{SHARDS_ENV} must be a whole number from 1 to {MAX_SHARDS}, "
                         f"not {shown!r}")


_SUFFIXES = string.ascii_letters + string.digits


def _crc16_of_pair(value: int) -> int:
    return crc_hqx(value.to_bytes(2, "big"), 0)


@functools.cache
def _pairs_by_slot() -> dict[int, str]:
    """Slot residue -> a two-character suffix s with crc16(s) & 16383 == residue (~21% of
    residues have one)."""
    return {_crc16_of_pair(int.from_bytes(pair.encode(), "big")) % SLOTS: pair
            for pair in map("".join, itertools.product(_SUFFIXES, repeat=2))}


def _tag_in_slot(prefix: str, slot: int) -> str:
    """`prefix` + a short suffix whose Redis Cluster slot (CRC16 & 16383) is `slot`.

    CRC16 with a zero start is linear: for any text m and two bytes s,
    crc16(m + s) = F(crc16(m)) XOR F(s), where F(x) is the CRC16 of x as two bytes. So for
    each middle part (none, then one character, then two, ...) the last two characters come
    out of a table instead of a search: a few lookups per tag, not ~16384 tries.
    """
    pairs = _pairs_by_slot()
    middles = itertools.chain([""], map("".join, itertools.chain.from_iterable(
        itertools.product(_SUFFIXES, repeat=n) for n in itertools.count(1))))
    for middle in middles:
        head = _crc16_of_pair(crc_hqx(f"{prefix}{middle}".encode(), 0))
        pair = pairs.get((slot ^ head) % SLOTS)
        if pair is not None:
            return f"{prefix}{middle}{pair}"
    raise AssertionError("unreachable: the middles never run out")


def shard_tags(shards: int) -> list[str]:
    """The hash tags of a layout of `shards` shards, in shard order.

    16: the historical `s0`..`s15`. Otherwise shard i's tag is `s<i>.` plus the suffix that
    puts it in slot (2i + 1) * 16384 // (2 * shards), the middle of the i-th of `shards`
    equal slot ranges: any contiguous range of slots then holds its share of the shards, give
    or take one. Part of the data layout: changing this function moves every wallet.
    """
    if shards == DEFAULT_SHARDS:
        return [f"s{shard}" for shard in range(shards)]
    return [_tag_in_slot(f"s{shard}.", (2 * shard + 1) * SLOTS // (2 * shards))
            for shard in range(shards)]


SHARDS = parse_shards(os.environ.get(SHARDS_ENV) or str(DEFAULT_SHARDS))
"""This process's shard count: `$KONG_CREDITS_SHARDS`, else 16."""
_TAGS = [f"{PREFIX}:{{{tag}}}" for tag in shard_tags(SHARDS)]


@functools.lru_cache(maxsize=65_536)
def shard_of(wallet: str) -> int:
    """The shard of a wallet: CRC32 of the UTF-8 root of its name, modulo `SHARDS`."""
    return zlib.crc32(wallet.split("/", 1)[0].encode()) % SHARDS


def parent_of(wallet: str) -> str | None:
    """`team/alice` -> `team`; a name without `/` has no parent."""
    parent, slash, _ = wallet.rpartition("/")
    return parent if slash else None


def _tag(shard: int) -> str:
    return _TAGS[shard]


def event_stream(shard: int) -> str:
    """The rated-event stream of one shard."""
    return f"{_tag(shard)}:events"


def event_streams() -> list[str]:
    """All event streams, in shard order (what the forwarder reads)."""
    return [event_stream(shard) for shard in range(SHARDS)]


def holds_index(shard: int) -> str:
    """ZSET request id -> deadline ms of the shard's open holds (authorize with hold, until
    settle): what the forwarder settles at the estimate once a deadline passes."""
    return f"{_tag(shard)}:holds"


def hold_key(shard: int, request_id: str) -> str:
    """HASH: credits held for a request whose price is known after the response."""
    return f"{_tag(shard)}:hold:{request_id}"


def alert_stream(shard: int) -> str:
    """The alert stream of one shard (thresholds, caps, abuse)."""
    return f"{_tag(shard)}:alerts"


def alert_streams() -> list[str]:
    """All alert streams, in shard order (what `kong-credits alerts` delivers)."""
    return [alert_stream(shard) for shard in range(SHARDS)]


def dead_letter_stream(shard: int) -> str:
    """STREAM of entries a sink refused for good, with the reason (dlq.py). It shares the
    shard's tag, so moving an entry there and acknowledging it is one MULTI in one slot."""
    return f"{_tag(shard)}:dlq"


def dead_letter_streams() -> list[str]:
    return [dead_letter_stream(shard) for shard in range(SHARDS)]


def wallet_index(shard: int) -> str:
    """ZSET, every score 0: the names of the shard's wallets that ever received a grant or a
    budget, in byte order, so the admin API pages through them by prefix (ZRANGE BYLEX)."""
    return f"{_tag(shard)}:wallets"


def wallet_indexes() -> list[str]:
    return [wallet_index(shard) for shard in range(SHARDS)]


WALLET_INDEX_BUILT_KEY = f"{PREFIX}:wallet_index_built"
"""STRING, set once the wallets that existed before the wallet index were added to it."""
STATE_KEY_PATTERN = f"{PREFIX}:{{*}}:w:*:state"
"""SCAN pattern matching every wallet's state key (and possibly a few others: check with
`wallet_of_state_key`)."""


def wallet_of_state_key(key: str) -> str | None:
    """The wallet whose `state` key this is, or None for any other key."""
    _, found, rest = key.partition("}:w:")
    name = rest.removesuffix(":state")
    if not found or name == rest or not name:
        return None
    return name if WalletKeys(name).state == key else None


def shard_of_stream(stream: str) -> int:
    """The shard of an event or alert stream key (KeyError for any other key)."""
    return _SHARD_OF_STREAM[stream]


@dataclass(frozen=True, slots=True)
class WalletKeys:
    """The keys of one wallet; all of them hash to the wallet's shard slot."""

    wallet: str

    @property
    def shard(self) -> int:
        return shard_of(self.wallet)

    @property
    def _base(self) -> str:
        return f"{_tag(self.shard)}:w:{self.wallet}"

    @property
    def state(self) -> str:
        """HASH: balance, overdraft, budgets, spending and burn-rate counters, alert marks."""
        return f"{self._base}:state"

    @property
    def grants(self) -> str:
        """HASH grant id -> JSON of the grant as written (amount, priority, expiry, ...)."""
        return f"{self._base}:grants"

    @property
    def remaining(self) -> str:
        """HASH grant id -> credits left in that grant."""
        return f"{self._base}:remaining"

    @property
    def burn_order(self) -> str:
        """ZSET of live grants with credits left, all score 0, ordered by their member text."""
        return f"{self._base}:burn"

    @property
    def expiries(self) -> str:
        """ZSET of live expiring grants (same members as burn_order), scored by expiry ms."""
        return f"{self._base}:expiry"

    @property
    def voids(self) -> str:
        """HASH grant id -> credits voided from that grant so far, shortfall included."""
        return f"{self._base}:voids"

    @property
    def void_replies(self) -> str:
        """HASH "<grant id>|<void key>" -> the void's reply, so a retried void changes
        nothing (grant ids and void keys hold no `|`, names.py)."""
        return f"{self._base}:void_replies"

    @property
    def ledger(self) -> str:
        """STREAM of the wallet's recent grants, charges, refunds and expiries (capped)."""
        return f"{self._base}:ledger"

    @property
    def events(self) -> str:
        """STREAM of billable events of the wallet's shard (shared with other wallets)."""
        return event_stream(self.shard)

    @property
    def alerts(self) -> str:
        """STREAM of alerts of the wallet's shard (shared with other wallets)."""
        return alert_stream(self.shard)

    @property
    def throttle(self) -> str:
        """HASH: sliding window of the temporary rate limit while abuse is suspected."""
        return f"{self._base}:throttle"

    @property
    def index(self) -> str:
        """The wallet index of the wallet's shard (`wallet_index`)."""
        return wallet_index(self.shard)

    @property
    def idempotency(self) -> str:
        """HASH digest of an Idempotency-Key -> JSON of the grant request it first came with
        and the grant id given to it (admin/idempotency.py)."""
        return f"{self._base}:idem"

    @property
    def wallet_keys(self) -> list[str]:
        """state, remaining, burn order, expiries, ledger: the five keys scripts open."""
        return [self.state, self.remaining, self.burn_order, self.expiries, self.ledger]

    def request(self, request_id: str) -> str:
        """STRING: the stored answer of an admitted request, for idempotent retries. Per
        wallet: another wallet's request with the same id must never replay this answer
        (request ids hold no `:`, names.py, so the id is always the last part)."""
        return f"{self._base}:req:{request_id}"

    def reservation(self, request_id: str) -> str:
        """The hold of one of this wallet's requests (`hold_key` in the wallet's shard)."""
        return hold_key(self.shard, request_id)

    @property
    def holds(self) -> str:
        """ZSET of the shard's open holds by deadline (shared with other wallets)."""
        return holds_index(self.shard)

    def rate_limit(self, consumer: str, period_s: int, scope: str = "") -> str:
        """HASH bucket index -> admitted requests: one sliding window of one consumer, on
        one route or service (`scope`, its id) or on all of them (scope ""). The scope holds
        no `:` (engine.py checks), so the consumer id, last, can never alias another key."""
        return f"{_tag(self.shard)}:rl:{period_s}:{scope}:{consumer}"


def stripe_payment(payment_intent: str) -> str:
    """STRING: JSON {wallet, grant_id, credits} of the grant a Stripe payment intent paid for,
    so a refund of that payment finds the grant to void (payments/)."""
    return f"{PREFIX}:stripe:pi:{payment_intent}"


def stripe_refunds(payment_intent: str) -> str:
    """HASH "<charge id>:<amount refunded>" -> charge amount: every refund Stripe reported
    for a payment intent, kept so a refund that arrives before its grant is applied then."""
    return f"{PREFIX}:stripe:refunds:{payment_intent}"


def stripe_ignored_event(event_id: str) -> str:
    """STRING with a TTL: this ignored Stripe event was logged and counted already."""
    return f"{PREFIX}:stripe:ignored:{event_id}"


_SHARD_OF_STREAM = {name: shard for shard in range(SHARDS)
                    for name in (event_stream(shard), alert_stream(shard))}
