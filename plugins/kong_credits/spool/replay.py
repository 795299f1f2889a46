"""Charge what the spool holds, in order, once Redis answers again.

Each spooled request goes through authorize.lua in replay mode (its id, its time, always
admitted, overdraft when the wallet cannot pay) with an answer kept for a week
(`REPLAY_ANSWER_TTL_MS`): a replay resent after any interruption (a SIGKILL between the
script call and the progress file, a lost reply) finds that answer and charges nothing. The
progress file only saves work. Order: segments oldest first, lines in file order, calls
pipelined in batches on one connection per Redis node (so a wallet's are charged in order).

In the background, replay takes at most `BACKGROUND_SHARE` of the process's time: after each
batch it sleeps 19 times as long as the batch took, so live requests keep the event loop
and Redis (`load/bench_spool.py` measures the cost).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine import AuthorizeRequest, Decision, authorize_call
from ..errors import RedisUnavailable
from .metrics import SPOOL_METRICS
from .records import SettledPrice, SpooledRequest
from .segments import LockedSegment, locked_segments, segment_paths

if TYPE_CHECKING:
    from .store import Spool, SpoolRegistry

__all__ = ["BACKGROUND_SHARE", "REPLAY_ANSWER_TTL_MS", "SETTLE_WAIT_MS", "ReplayOutcome",
           "replay_call", "replay_directory", "replay_forever"]

REPLAY_ANSWER_TTL_MS = 7 * 86_400_000
"""How long a replayed request's answer is kept: a replay resent within it charges nothing."""
SETTLE_WAIT_MS = 60_000
"""How long a spooled credits-metered request waits for its settled price (the log phase)
before it is charged its estimate."""
BACKGROUND_SHARE = 0.05
"""The most of the process's time the background replay takes (5%)."""
BATCH = 32
"""Replay calls in flight at once (pipelined)."""
PIN_BATCH = 256
INTERVAL_S = 1.0
SEAL_EVERY_S = 5.0
"""How often a process seals its own segment to try replaying it while it has no sign that
Redis is back (a live request answered)."""

logger = logging.getLogger("kong_credits.spool")

Charge = Callable[[Sequence[str], Sequence[Any]], Awaitable[Decision]]


def replay_call(request: SpooledRequest, cost: int, *, mode: str = "replay"
                ) -> tuple[list[str], list[str | int]]:
    """KEYS and ARGV of authorize.lua's replay mode for one spooled request (`mode` "pin":
    only keep the answer its first call may have stored, see `_pin`)."""
    keys, args = authorize_call(AuthorizeRequest(
        request_id=request.request_id, wallet=request.wallet, consumer=request.consumer,
        cost=cost, route=request.route, service=request.service, method=request.method,
        path=request.path,
    ), now_ms=0, answer_ttl_ms=REPLAY_ANSWER_TTL_MS, hold_ms=0)
    args.append(f"{mode}:{request.at_ms}")
    return keys, args


@dataclass
class ReplayOutcome:
    """What one pass over a spool directory did."""

    replayed: int = 0
    overdrawn: int = 0
    late_settles: int = 0
    waiting: bool = False
    """A credits-metered request waits for its settled price: the pass stopped before it."""
    failed: str = ""
    """Why the pass stopped early (Redis unavailable), "" if it did not."""


async def _charge_batch(segment: LockedSegment, batch: list[tuple[int, SpooledRequest | None,
                                                                  int]],
                        charge: Charge, outcome: ReplayOutcome, share: float) -> bool:
    """Charge a batch (None: a line with nothing to charge) and advance the segment's
    progress over its successful prefix; False when a call failed."""
    started = time.monotonic()
    calls = [charge(*replay_call(record, cost)) for _, record, cost in batch if record]
    results = await asyncio.gather(*calls, return_exceptions=True)
    done_offset, answers = segment.done_offset, iter(results)
    for end, record, _ in batch:
        if record is not None:
            result = next(answers)
            if isinstance(result, BaseException):
                outcome.failed = f"{type(result).__name__}: {result}"
                if not isinstance(result, RedisUnavailable):
                    logger.error("credits: replay of request %s failed: %s",
                                 record.request_id, outcome.failed)
                break
            outcome.replayed += 1
            SPOOL_METRICS.replayed += 1
            if result.reason == "overdraft":
                outcome.overdrawn += 1
                SPOOL_METRICS.overdrawn += 1
        done_offset = end
    if done_offset != segment.done_offset:
        segment.mark_done(done_offset)
    if share < 1:
        await asyncio.sleep((time.monotonic() - started) * (1 - share) / share)
    return not outcome.failed


async def _pin(records: list[SpooledRequest], charge: Charge, pinned: set[str],
               outcome: ReplayOutcome) -> bool:
    """Keep the stored answers of requests whose call may have run in Redis (`sent`) before
    they expire (the plugin keeps answers 2 x redis_timeout_ms + 10 s): a Redis that stalled
    rather than died runs such calls when it wakes up, and their in-order replay may come
    much later. Cheap calls, at full speed, once per request and process; False when Redis
    failed."""
    todo = [r for r in records if r.sent and r.request_id not in pinned]
    for start in range(0, len(todo), PIN_BATCH):
        batch = todo[start:start + PIN_BATCH]
        results = await asyncio.gather(
            *(charge(*replay_call(r, r.cost, mode="pin")) for r in batch),
            return_exceptions=True)
        for record, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                outcome.failed = f"{type(result).__name__}: {result}"
                return False
            pinned.add(record.request_id)
    return True


async def replay_directory(directory: Path, charge: Charge, *,
                           share: float = BACKGROUND_SHARE,
                           pinned: set[str] | None = None) -> ReplayOutcome:
    """One pass: lock every segment no other process holds, pin what may have been charged
    already (`_pin`; `pinned` remembers it across passes), charge the records in order,
    delete each segment once all of it is charged. Stops at the first failed call (Redis
    away again), or before a metered request still waiting for its price."""
    outcome = ReplayOutcome()
    now_ms = time.time_ns() // 1_000_000
    with locked_segments(directory) as segments:
        records = [record for segment in segments for _, record in segment.records]
        spooled = [r for r in records if isinstance(r, SpooledRequest)]
        if not await _pin(spooled, charge, set() if pinned is None else pinned, outcome):
            return outcome
        settled = {r.request_id: r.cost for r in records if isinstance(r, SettledPrice)}
        requested = {r.request_id for r in records if isinstance(r, SpooledRequest)}
        for segment in segments:
            batch: list[tuple[int, SpooledRequest | None, int]] = []
            for end, record in segment.records:
                if isinstance(record, SettledPrice):
                    if record.request_id not in requested:
                        outcome.late_settles += 1  # its request was charged its estimate
                    batch.append((end, None, 0))
                    continue
                if (record.metered and record.request_id not in settled
                        and now_ms - record.at_ms < SETTLE_WAIT_MS):
                    outcome.waiting = True
                    break
                batch.append((end, record, settled.get(record.request_id, record.cost)))
                if len(batch) >= BATCH:
                    if not await _charge_batch(segment, batch, charge, outcome, share):
                        return outcome
                    batch = []
            if batch and not await _charge_batch(segment, batch, charge, outcome, share):
                return outcome
            if outcome.waiting:
                return outcome
            if segment.unreadable:
                SPOOL_METRICS.unreadable += segment.unreadable
                logger.error("credits: skipped %d unreadable line(s) of %s (a torn tail after "
                             "an OS crash?)", segment.unreadable, segment.path)
            segment.remove()
    if outcome.late_settles:
        logger.warning("credits: %d settled price(s) came after their request was charged "
                       "its estimate", outcome.late_settles)
    return outcome


async def replay_spool(spool: Spool, engine: Any, *, seal: bool) -> ReplayOutcome:
    """The background pass over one spool: sealed and orphaned segments, then (with `seal`)
    this process's own."""
    if seal and spool.writing:
        spool.seal()
    outcome = await replay_directory(spool.directory, engine.authorize_packed,
                                     pinned=spool.pinned)
    spool.replayed += outcome.replayed
    if outcome.overdrawn:
        logger.warning("credits: %d replayed request(s) overdrew their wallet (the wallets "
                       "could not pay in full; see the overdraft alerts)", outcome.overdrawn)
    if (not outcome.failed and spool.spooling and not spool.writing
            and not segment_paths(spool.directory)):
        logger.warning("credits: spool %s is empty again: %d spooled request(s) charged in "
                       "Redis %s", spool.directory, spool.replayed, spool.where)
        spool.spooling, spool.replayed = False, 0
        spool.pinned.clear()
    return outcome


async def replay_forever(registry: SpoolRegistry) -> None:
    """The plugin server's background task: once a second, sync (fsync policy `interval`),
    measure, and replay every spool whose Redis answers."""
    last_seal: dict[Path, float] = {}
    while True:
        await asyncio.sleep(INTERVAL_S)
        for spool, engine in registry:
            try:
                spool.sync_if_due()
                spool.measure()
                if not spool.writing and not segment_paths(spool.directory):
                    continue
                now = time.monotonic()
                seal = spool.redis_answered or now - last_seal.get(spool.directory, 0) >= (
                    SEAL_EVERY_S)
                if seal:
                    last_seal[spool.directory] = now
                await replay_spool(spool, engine, seal=seal)
            except asyncio.CancelledError:
                raise
            except Exception:  # the boundary: the task must outlive any one failure
                logger.exception("credits: spool replay of %s failed", spool.directory)
