"""Holds whose settle never came, settled at their estimate once their deadline passes.

A `cost_header` request holds its estimated price at authorize and is settled from the
upstream's header in Kong's log phase. When that settle never arrives (Kong died between the
phases, Redis was unreachable during log), the request was admitted and charged but would
never reach the event stream. authorize indexes every hold by its deadline in its shard's
`holds` ZSET and settle removes it; the forwarder calls `sweep_lapsed_holds` every few
seconds, which settles each hold past its deadline at the held estimate: its event is then
appended like any other (with an empty `status`). Settle is idempotent per request id, so
several forwarders sweeping at once, or a real settle arriving meanwhile, charge once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..engine import Engine
from ..keys import SHARDS, hold_key, holds_index

__all__ = ["Swept", "sweep_lapsed_holds"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Swept:
    """settled: holds settled at their estimate; vanished: index entries whose hold had
    already expired (left unswept for a day past its deadline), so no event was made;
    more: some shard had more due than the limit (call again)."""

    settled: int = 0
    vanished: int = 0
    more: bool = False


def sweep_lapsed_holds(engine: Engine, *, limit: int = 100) -> Swept:
    """Settle up to `limit` lapsed holds per shard at their estimate (Redis's clock)."""
    client = engine.client
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    pipe = client.pipeline(transaction=False)
    for shard in range(SHARDS):
        pipe.zrangebyscore(holds_index(shard), "-inf", now_ms, start=0, num=limit)
    pages = pipe.execute()
    due = [(shard, _text(request_id)) for shard, ids in enumerate(pages) for request_id in ids]
    if not due:
        return Swept()
    pipe = client.pipeline(transaction=False)
    for shard, request_id in due:
        pipe.hmget(hold_key(shard, request_id), "wallet", "reserved", "settled")
    settled = vanished = 0
    for (shard, request_id), (wallet, reserved, done) in zip(due, pipe.execute(), strict=True):
        if done is not None:  # settled since the index was read
            client.zrem(holds_index(shard), request_id)
            continue
        if wallet is None or reserved is None:
            client.zrem(holds_index(shard), request_id)
            vanished += 1
            log.error("hold of request %s expired before any settle: its event is lost",
                      request_id)
            continue
        engine.settle(request_id, _text(wallet), int(reserved))
        settled += 1
    return Swept(settled, vanished, more=any(len(ids) == limit for ids in pages))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
