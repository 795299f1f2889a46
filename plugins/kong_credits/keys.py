"""Every Redis key kong-credits uses: the only module that builds key strings.

Redis Cluster runs a script only when all its keys live in one hash slot. Wallets are therefore
spread over `SHARDS` hash tags: every key of a wallet, the rate-limit state of the consumers
drawing on it and the event and alert streams that receive its charges carry the wallet's
shard tag. A wallet named `team/alice` draws on its parent `team` in the same script, so the
shard is chosen by the root of the name (`team`): a family of wallets shares one slot.
The forwarder reads one event stream per shard. Changing `SHARDS` moves every wallet: it is
part of the data layout, not a tuning knob.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

__all__ = ["PREFIX", "SHARDS", "WalletKeys", "alert_stream", "alert_streams",
           "dead_letter_stream", "dead_letter_streams", "event_stream", "event_streams",
           "parent_of", "shard_of", "shard_of_stream"]

PREFIX = "kc"
SHARDS = 16


@functools.lru_cache(maxsize=65_536)
def shard_of(wallet: str) -> int:
    """The shard of a wallet: CRC32 of the UTF-8 root of its name, modulo `SHARDS`."""
    return zlib.crc32(wallet.split("/", 1)[0].encode()) % SHARDS


def parent_of(wallet: str) -> str | None:
    """`team/alice` -> `team`; a name without `/` has no parent."""
    parent, slash, _ = wallet.rpartition("/")
    return parent if slash else None


def _tag(shard: int) -> str:
    return f"{PREFIX}:{{s{shard}}}"


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


_SHARD_OF_STREAM = {name: shard for shard in range(SHARDS)
                    for name in (event_stream(shard), alert_stream(shard))}
