"""Charge what the spool holds, in order, once Redis answers again.

Each spooled request goes through authorize.lua in replay mode (its id, its time, always
admitted, overdraft when the wallet cannot pay) with an answer kept for a week
(`REPLAY_ANSWER_TTL_MS`): a replay resent after any interruption (a SIGKILL between the
script call and the progress file, a lost reply) finds that answer and charges nothing. The
progress file only saves work. Order: segments oldest first, lines in file order, calls
pipelined in small batches on one connection per Redis node (a wallet's in order).

In the background the replay yields to live traffic (`Pace`): while live requests flow it
charges at most 5% as many spooled requests per second as they are (at least 50/s), and in
any case takes at most 5% of the event loop's time; with no live traffic it goes as fast as
that share allows (`load/bench_spool.py` measures both).
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
from ..errors import InvalidInput, RedisUnavailable
from .metrics import SPOOL_METRICS
from .records import SettledPrice, SpooledRequest, decode_line
from .segments import LockedSegment, locked_segments, segment_paths

if TYPE_CHECKING:
    from .store import Spool, SpoolRegistry

__all__ = ["BACKGROUND_SHARE", "REPLAY_ANSWER_TTL_MS", "SETTLE_WAIT_MS", "Pace",
           "ReplayOutcome", "replay_call", "replay_directory", "replay_forever"]

REPLAY_ANSWER_TTL_MS = 7 * 86_400_000
"""How long a replayed request's answer is kept: a replay resent within it charges nothing."""
SETTLE_WAIT_MS = 60_000
"""How long a spooled credits-metered request waits for its settled price (the log phase)
before it is charged its estimate."""
BACKGROUND_SHARE = 0.05
"""The most of the event loop's time the background replay takes."""
LIVE_FRACTION = 0.05
"""While live requests flow: spooled requests charged per live request, at most."""
FLOOR_PER_S = 50
"""Spooled requests per second the replay may always charge, however little live traffic."""
BATCH = 16
"""Replay calls in flight at once (pipelined): few, so live calls never queue long behind."""
PIN_BATCH = 256
RATE_WINDOW_S = 0.25
INTERVAL_S = 1.0
_SETTLE_MARK = b'"kind":"settle"'
_SENT_MARK = b'"sent":true'

logger = logging.getLogger("kong_credits.spool")

Charge = Callable[[Sequence[str], Sequence[Any]], Awaitable[Decision]]
PROBE = SpooledRequest("spool-probe", "spool-probe", "", 0, at_ms=1)
"""A pin of a request that never existed: one cheap call that tells whether Redis answers."""


def replay_call(request: SpooledRequest, cost: int, *, mode: str = "replay",
                price: SettledPrice | None = None) -> tuple[list[str], list[str | int]]:
    """KEYS and ARGV of authorize.lua's replay mode for one spooled request (`mode` "pin":
    only keep the answer its first call may have stored, see `_pin`). A request whose call
    may have run (`sent`) is looked for in its wallet's ledger if its answer is gone. A
    credits-metered request's event gets what a live settle's has: the estimate as
    `reserved`, and from its `price` the status and the price's components."""
    keys, args = authorize_call(AuthorizeRequest(
        request_id=request.request_id, wallet=request.wallet, consumer=request.consumer,
        cost=cost, route=request.route, service=request.service, method=request.method,
        path=request.path,
    ), now_ms=0, answer_ttl_ms=REPLAY_ANSWER_TTL_MS, hold_ms=0)
    if request.metered and mode == "replay":
        args += ("reserved", request.cost)
        if price is not None and price.status is not None:
            args += ("status", price.status)
        for name, value in ((price and price.details) or {}).items():
            args += (name, value)
    args.append(f"{mode}:{request.at_ms}:sent" if request.sent else f"{mode}:{request.at_ms}")
    return keys, args


class Pace:
    """How long the background replay waits after each batch.

    `live_requests()` counts the live requests answered so far (the spool's plugins count
    them); their rate, measured over the last quarter second or more (so that traffic
    arriving while the replay runs alone slows it within that), caps the replay at
    `live_fraction` of it (at least `floor_per_s`). Until a first window is measured the cap
    is the floor. Whatever the traffic, a batch is followed by a wait of (1 - share) /
    share times what it took. `Pace(share=1)` without a count: full speed (the CLI).
    """

    def __init__(self, live_requests: Callable[[], int] | None = None, *,
                 share: float = BACKGROUND_SHARE, live_fraction: float = LIVE_FRACTION,
                 floor_per_s: float = FLOOR_PER_S, now: float | None = None) -> None:
        self._live = live_requests
        self.share, self.live_fraction, self.floor_per_s = share, live_fraction, floor_per_s
        self._since = time.monotonic() if now is None else now
        self._count = live_requests() if live_requests else 0
        self._live_per_s: float | None = None

    def _live_rate(self, now: float) -> float | None:
        if self._live is None:
            return 0.0
        if now - self._since >= RATE_WINDOW_S:
            count = self._live()
            self._live_per_s = (count - self._count) / (now - self._since)
            self._since, self._count = now, count
        return self._live_per_s

    def wait_s(self, charged: int, elapsed_s: float, now: float) -> float:
        """Seconds to wait after a batch that charged `charged` requests in `elapsed_s`."""
        wait = elapsed_s * (1 - self.share) / self.share if self.share < 1 else 0.0
        live_per_s = self._live_rate(now)
        if live_per_s is None or live_per_s > 0:
            allowed = max(self.floor_per_s, self.live_fraction * (live_per_s or 0.0))
            wait = max(wait, charged / allowed - elapsed_s)
        return max(wait, 0.0)

    async def after(self, charged: int, elapsed_s: float) -> None:
        wait = self.wait_s(charged, elapsed_s, time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)


FULL_SPEED = Pace(share=1.0)


@dataclass
class ReplayOutcome:
    """What one pass over a spool directory did."""

    replayed: int = 0
    overdrawn: int = 0
    estimated: int = 0
    """credits-metered requests charged their estimate: no price came within SETTLE_WAIT_MS."""
    unreadable: int = 0
    waiting: bool = False
    """A credits-metered request waits for its settled price: the pass stopped before it."""
    failed: str = ""
    """Why the pass stopped early (Redis unavailable), "" if it did not."""


Call = tuple[list[str], list[str | int]]
Batch = list[tuple[int, SpooledRequest | None, Call | None]]
"""(end offset, request to charge and its replay_call, or None for a line with nothing to
charge)."""


async def _charge_batch(segment: LockedSegment, batch: Batch, charge: Charge,
                        outcome: ReplayOutcome, pace: Pace, started: float) -> bool:
    """Charge a batch and advance the segment's progress over its successful prefix; False
    when a call failed."""
    calls = [charge(*call) for _, _, call in batch if call]
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
    await pace.after(len(calls), time.monotonic() - started)
    return not outcome.failed


async def _pin(segments: list[LockedSegment], charge: Charge, pinned: set[str],
               outcome: ReplayOutcome) -> bool:
    """Keep the stored answers of requests whose call may have run in Redis (`sent`) before
    they expire (the plugin keeps answers 2 x redis_timeout_ms + 10 s): a Redis that stalled
    rather than died runs such calls when it wakes up, and their in-order replay may come
    much later. Cheap calls, at full speed, once per request and process; False when Redis
    failed."""
    todo: list[SpooledRequest] = []
    for segment in segments:
        for _, line in segment.lines:
            if _SENT_MARK in line:
                try:
                    record = decode_line(line)
                except InvalidInput:
                    continue
                if isinstance(record, SpooledRequest) and record.request_id not in pinned:
                    todo.append(record)
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


def _settled_prices(segments: list[LockedSegment]) -> dict[str, SettledPrice]:
    prices: dict[str, SettledPrice] = {}
    for segment in segments:
        for _, line in segment.lines:
            if _SETTLE_MARK in line:
                try:
                    record = decode_line(line)
                except InvalidInput:
                    continue
                if isinstance(record, SettledPrice):
                    prices[record.request_id] = record
    return prices


async def probe(charge: Charge) -> str:
    """"" when Redis answers one cheap call (a pin of a request that never existed), else
    why not: the background replay reads no segment while Redis is away."""
    try:
        await charge(*replay_call(PROBE, 0, mode="pin"))
    except RedisUnavailable as exc:
        return str(exc)
    return ""


async def replay_directory(directory: Path, charge: Charge, *, pace: Pace = FULL_SPEED,
                           pinned: set[str] | None = None) -> ReplayOutcome:
    """One pass: lock every segment no other process holds, pin what may have been charged
    already (`_pin`; `pinned` remembers it across passes), charge the rest in order, delete
    each segment once all of it is charged. Stops at the first failed call (Redis away
    again), or before a metered request still waiting for its price."""
    outcome = ReplayOutcome()
    now_ms = time.time_ns() // 1_000_000
    with locked_segments(directory) as segments:
        if not await _pin(segments, charge, set() if pinned is None else pinned, outcome):
            return outcome
        settled = _settled_prices(segments)
        for segment in segments:
            batch: Batch = []
            unreadable = 0
            started = time.monotonic()
            for end, line in segment.lines:
                if _SETTLE_MARK in line:
                    batch.append((end, None, None))  # read above
                    continue
                try:
                    record = decode_line(line)
                except InvalidInput:
                    unreadable += 1
                    batch.append((end, None, None))
                    continue
                assert isinstance(record, SpooledRequest)
                price = settled.get(record.request_id)
                if record.metered and price is None:
                    if now_ms - record.at_ms < SETTLE_WAIT_MS:
                        outcome.waiting = True
                        break
                    outcome.estimated += 1
                cost = record.cost if price is None else price.cost
                batch.append((end, record, replay_call(record, cost, price=price)))
                if len(batch) >= BATCH:
                    if not await _charge_batch(segment, batch, charge, outcome, pace,
                                               started):
                        return outcome
                    batch, started = [], time.monotonic()
            if batch and not await _charge_batch(segment, batch, charge, outcome, pace,
                                                 started):
                return outcome
            if outcome.waiting:
                return outcome
            if unreadable:
                outcome.unreadable += unreadable
                SPOOL_METRICS.unreadable += unreadable
                logger.error("credits: skipped %d unreadable line(s) of %s (a torn tail after "
                             "an OS crash?)", unreadable, segment.path)
            segment.remove()
    if outcome.estimated:
        logger.warning("credits: %d spooled credits-metered request(s) charged their estimate: "
                       "no price came within %d s", outcome.estimated, SETTLE_WAIT_MS // 1000)
    return outcome


async def replay_spool(spool: Spool, engine: Any) -> ReplayOutcome | None:
    """The background pass over one spool, if its Redis answers a probe (None if not):
    this process's own segment is sealed, then every segment no other process holds is
    replayed, paced by this process's live requests on that Redis."""
    charge = engine.authorize_packed
    if await probe(charge):
        return None
    await spool.seal_off_loop()
    outcome = await replay_directory(spool.directory, charge,
                                     pace=Pace(lambda: spool.answered), pinned=spool.pinned)
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
    """The plugin server's background task: once a second, and as soon as a live call is
    answered after spooling, sync (fsync policy `interval`), measure, and replay every
    spool that holds something and whose Redis answers."""
    while True:
        await registry.next_round(INTERVAL_S)
        for spool, engine in registry:
            try:
                await spool.sync_if_due()
                spool.measure()
                if spool.writing or segment_paths(spool.directory):
                    await replay_spool(spool, engine)
            except asyncio.CancelledError:
                raise
            except Exception:  # the boundary: the task must outlive any one failure
                logger.exception("credits: spool replay of %s failed", spool.directory)
