"""The forwarder: rated events from the Redis streams to a billing sink, at least once.

Loop: take entries (reclaimed from dead consumers, else new), deliver them in batches, XACK
what the sink confirmed, dead-letter what it refused for good, retry the rest with backoff.
It should be easy to see that:
1. nothing is lost: an entry leaves the pending list only by XACK after the sink confirmed
   it, or by the MULTI that copies it to the dead-letter stream; a crash at any point leaves
   it pending, and XAUTOCLAIM gives it to another forwarder once idle for `claim_idle_ms`
   (at once when the crashed forwarder was on this host: its pid is gone); a Redis error
   (down, read-only after a failover, out of memory, ...) is retried, then our own pending
   entries are read again;
2. nothing is billed twice: an entry may be sent again (a crash between delivery and XACK,
   a timeout after the backend stored it, a reclaim race), but always under its event id,
   which every sink's backend deduplicates on.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from ..engine import Engine
from ..errors import InvalidInput, RedisUnavailable
from ..rated_event import RatedEvent
from ..retry import Backoff
from ..sinks.base import Sink
from .consumer_group import ConsumerGroup, StreamEntry, process_gone
from .lapsed_holds import sweep_lapsed_holds
from .metrics import ForwarderMetrics, Tally

__all__ = ["GC_THRESHOLDS", "REDIS_ERRORS", "Forwarder", "ForwarderOptions", "tune_gc"]

log = logging.getLogger(__name__)
_BACKLOG_EVERY_S = 10.0
"""How often the lag and pending gauges are refreshed, delivered entries trimmed and lapsed
holds swept."""
DEFAULT_RETAIN_MS = 3_600_000
_FORGET_CONSUMERS_IDLE_MS = 86_400_000
"""A consumer of our group idle this long and holding nothing is removed (a restarted
forwarder comes back under a new name: hostname-pid)."""
REDIS_ERRORS: tuple[type[Exception], ...] = (
    redis.RedisError, redis.exceptions.RedisClusterException, RedisUnavailable)
"""Anything a Redis call raises: down, late, READONLY after a failover, LOADING, OOM, MOVED,
NOGROUP... The forwarder outlives them all: it logs, counts and retries."""


@dataclass(frozen=True, slots=True)
class ForwarderOptions:
    """How the forwarder runs; `Forwarder` documents each field's effect."""

    batch_size: int = 100
    drain: bool = False
    claim_idle_ms: int = 60_000
    block_ms: int = 1_000
    max_attempts: int = 10
    backoff: Backoff = field(default_factory=Backoff)
    summary_interval_s: float = 60.0
    retain_ms: int | None = DEFAULT_RETAIN_MS
    sweep_holds: bool = False

    def __post_init__(self) -> None:
        for name in ("batch_size", "claim_idle_ms", "block_ms", "max_attempts"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.retain_ms is not None and self.retain_ms < 0:
            raise InvalidInput(f"retain_ms must be at least 0, not {self.retain_ms}")


GC_THRESHOLDS = (100_000, 50, 100)
"""Python's cyclic collector, tuned for a process that holds tens of thousands of parsed
events at a time (up to --batch-size per stream): at the default (700, 10, 10) its full
collections walk all of them again and again, a quarter to a third of a forwarder's CPU at
5,000 events per batch (load/RESULTS.md §11.1). The forwarder's objects die by reference
counting; a reference cycle still goes within a few million allocations."""


def tune_gc() -> None:
    """Collect cyclic garbage at GC_THRESHOLDS: for the forwarder's process, not a library
    call (the thresholds are the whole interpreter's)."""
    gc.set_threshold(*GC_THRESHOLDS)


class _GiveUp(Exception):
    """Draining, and a batch failed max_attempts times: leave it pending, exit 1."""


class Forwarder:
    """Delivers `group`'s events to `sink` until `stop` is set.

    batch_size: events per delivery call (at most the sink's max_batch).
    drain: exit 0 once nothing is pending and nothing new is left; exit 1 when one batch
      or Redis failed `max_attempts` times in a row without progress (its events stay
      pending). Without drain, retry forever with backoff.
    claim_idle_ms: reclaim another consumer's entries once idle this long; entries in hand
      are touched well before, so a slow but live forwarder keeps its own. A consumer of
      this host whose process is gone (consumer_group.process_gone) is taken over at once.
    retain_ms: every 10 s and on exit, trim stream entries that every consumer group is done
      with and that are older than this (None: never trim). Without it the streams grow
      for as long as the gateway serves requests.
    sweep_holds: on start, every 10 s and on exit, settle holds whose settle never came at
      their estimate (lapsed_holds.py), so their events reach the stream and the sink.
    """

    def __init__(self, group: ConsumerGroup, sink: Sink, options: ForwarderOptions, *,
                 metrics: ForwarderMetrics | None = None,
                 stop: threading.Event | None = None,
                 parse: Callable[[Mapping[str, str]], Any] = RatedEvent.from_fields) -> None:
        """`parse` turns a stream entry into what the sink delivers (anything with a unique
        `event_id`); it raises InvalidInput for an entry to dead-letter as malformed."""
        self.group = group
        self.parse = parse
        self.sink = sink
        self.options = options
        self.metrics = metrics or ForwarderMetrics(sink.name)
        self.stop = stop or threading.Event()
        self.batch_size = min(options.batch_size, sink.max_batch)
        self._touch_after_s = options.claim_idle_ms / 4000
        self._reclaim_every_s = min(max(options.claim_idle_ms / 2000, 0.05), 30.0)
        self._next_reclaim = 0.0
        self._summary_at = time.monotonic() + options.summary_interval_s
        self._backlog_at = 0.0
        self._summarized = Tally()
        self._in_hand: list[tuple[StreamEntry, RatedEvent]] = []
        """Entries read and parsed, waiting for the batches before them."""
        self._touched_at = 0.0

    def run(self) -> int:
        """Forward until stopped (0), or with drain until done (0) or failing (1).

        Any Redis error is logged, counted and retried with backoff (with drain, up to
        max_attempts in a row; a drain that cannot reach Redis at all when it starts raises
        at once instead: a wrong URL should say so). After an error the group is ensured
        again and our own pending entries are read again: a batch cut short (delivered, not
        yet acked) is sent again at once, under the same event ids, instead of waiting
        claim_idle_ms for a reclaim.
        """
        redis_failures = 0
        inbox: list[StreamEntry] | None = None
        """None: ensure the group and read our own pending entries first."""
        started = False
        while not self.stop.is_set():
            try:
                if inbox is None:
                    self.group.ensure()
                    if not started:
                        self._housekeeping()
                        started = True
                    inbox = self.group.read_own_pending(self.batch_size)
                entries, inbox = inbox or self._fetch(), []
                if entries:
                    self._forward(entries)
                elif self.options.drain and self._drained():
                    break
                redis_failures = 0
                self._maybe_summarize()
            except _GiveUp:
                self._summarize()
                return 1
            except REDIS_ERRORS as exc:
                redis_failures += 1
                inbox = None
                kind = self.metrics.redis_error(exc)
                if self.options.drain and not started and kind in ("connection", "timeout"):
                    raise
                log.warning("Redis error (%s, %d in a row), retrying: %s", kind,
                            redis_failures, exc)
                if self.options.drain and redis_failures >= self.options.max_attempts:
                    log.error("giving up after %d Redis errors in a row", redis_failures)
                    self._summarize()
                    return 1
                self.stop.wait(self.options.backoff.delay_s(redis_failures))
        self._summarize()
        self._housekeeping()
        return 0

    def _fetch(self) -> list[StreamEntry]:
        """Reclaimed entries when a reclaim is due and finds some, else new ones."""
        now = time.monotonic()
        if now >= self._next_reclaim:
            self._next_reclaim = now + self._reclaim_every_s
            taken = self._take_over_dead()
            if taken:
                self._next_reclaim = now  # it may hold more: look again next time
                return taken
            claimed, deleted = self.group.reclaim(self.options.claim_idle_ms, self.batch_size)
            if deleted:
                self.metrics.lost(deleted)
                log.error("%d pending events were deleted from the streams before delivery: "
                          "they cannot be billed", deleted)
            if claimed:
                log.info("reclaimed %d events idle for %d ms or more", len(claimed),
                         self.options.claim_idle_ms)
                return claimed
        block_ms = None if self.options.drain else self.options.block_ms
        entries = self.group.read_new(self.batch_size, block_ms)
        if not entries and self.group.per_shard and not self.options.drain:
            self.stop.wait(min(self.options.block_ms, 200) / 1000)
        return entries

    def _take_over_dead(self) -> list[StreamEntry]:
        """Entries of a consumer of this host whose process is gone: nothing is in flight
        there, so no need to wait claim_idle_ms. Once it holds nothing it is deleted."""
        for name, held in self.group.holders().items():
            if name == self.group.consumer or not process_gone(name):
                continue
            taken = self.group.take_over(name, self.batch_size) if held else []
            if self.group.forget(name):
                log.info("removed consumer %s: its process is gone", name)
            if taken:
                log.info("took over %d events from %s: its process is gone", len(taken), name)
                return taken
        return []

    def _drained(self) -> bool:
        """Nothing new was read: done if no consumer holds anything either; else wait for
        the holders to ack, or to go idle so that the next reclaim takes their entries."""
        if self.group.pending() == 0:
            return True
        self.stop.wait(min(self.options.claim_idle_ms / 4000, 0.25))
        self._next_reclaim = 0.0
        return False

    def _forward(self, entries: Sequence[StreamEntry]) -> None:
        """Parse, dead-letter the malformed, deliver the rest batch by batch. Entries in hand
        are touched every claim_idle_ms / 4, so no other forwarder reclaims them meanwhile."""
        self._in_hand = []
        malformed: list[tuple[StreamEntry, str]] = []
        for entry in entries:
            try:
                self._in_hand.append((entry, self.parse(entry.fields)))
            except InvalidInput as exc:
                malformed.append((entry, f"malformed event: {exc}"))
        if malformed:
            self.group.dead_letter(malformed, self.sink.name)
            self.metrics.dead_letter(len(malformed))
            log.error("dead-lettered %d malformed stream entries", len(malformed))
        self._touched_at = time.monotonic()
        while self._in_hand and not self.stop.is_set():
            batch = self._in_hand[:self.batch_size]
            del self._in_hand[:self.batch_size]
            self._deliver(self._hold(batch))
        self._in_hand = []

    def _hold(self, batch: list[tuple[StreamEntry, RatedEvent]]
              ) -> list[tuple[StreamEntry, RatedEvent]]:
        """Touch `batch` and the rest in hand when due; keep what is still pending."""
        if time.monotonic() - self._touched_at < self._touch_after_s:
            return batch
        held = {(e.stream, e.entry_id)
                for e in self.group.touch([e for e, _ in batch + self._in_hand])}
        self._touched_at = time.monotonic()
        self._in_hand = [(e, ev) for e, ev in self._in_hand if (e.stream, e.entry_id) in held]
        return [(e, ev) for e, ev in batch if (e.stream, e.entry_id) in held]

    def _wait(self, batch: list[tuple[StreamEntry, RatedEvent]], delay_s: float
              ) -> list[tuple[StreamEntry, RatedEvent]] | None:
        """Back off for `delay_s` while holding the entries; None when stopping."""
        deadline = time.monotonic() + delay_s
        while (left := deadline - time.monotonic()) > 0:
            if self.stop.wait(min(left, self._touch_after_s)):
                return None
            batch = self._hold(batch)
        return self._hold(batch)

    def _deliver(self, batch: list[tuple[StreamEntry, RatedEvent]]) -> None:
        """Deliver one batch until every event is acked or dead-lettered (or we stop)."""
        failures = 0
        while batch:
            entries_of: dict[str, list[StreamEntry]] = {}
            events: list[RatedEvent] = []
            for entry, event in batch:
                if event.event_id not in entries_of:
                    events.append(event)
                entries_of.setdefault(event.event_id, []).append(entry)
            started = time.monotonic()
            outcome = self.sink.deliver(events)
            seconds = time.monotonic() - started
            self.group.ack([e for event_id in outcome.delivered for e in entries_of[event_id]])
            self.group.dead_letter([(e, reason) for event_id, reason in outcome.rejected.items()
                                    for e in entries_of[event_id]], self.sink.name)
            unresolved = outcome.unresolved(events)
            self.metrics.delivery(delivered=len(outcome.delivered),
                                  dead_lettered=len(outcome.rejected),
                                  unresolved=len(unresolved), seconds=seconds)
            log.debug("batch to %s: %d delivered, %d dead-lettered, %d to retry, %.3f s",
                      self.sink.name, len(outcome.delivered), len(outcome.rejected),
                      len(unresolved), seconds)
            for event_id, reason in outcome.rejected.items():
                log.warning("dead-lettered event %s: %s", event_id, reason)
            if not unresolved:
                return
            progressed = outcome.delivered or outcome.rejected
            failures = 1 if progressed else failures + 1
            self.metrics.retry(len(unresolved))
            if self.options.drain and failures >= self.options.max_attempts:
                log.error("giving up after %d attempts, %d events stay pending: %s",
                          failures, len(unresolved), outcome.retry_reason)
                raise _GiveUp
            delay_s = self.options.backoff.delay_s(failures, outcome.retry_after_s)
            log.warning("retrying %d events in %.2f s (attempt %d): %s", len(unresolved),
                        delay_s, failures + 1, outcome.retry_reason)
            left = {event.event_id for event in unresolved}
            waited = self._wait([(e, ev) for e, ev in batch if ev.event_id in left], delay_s)
            if waited is None:
                return
            batch = waited

    def _maybe_summarize(self) -> None:
        now = time.monotonic()
        if now >= self._summary_at:
            self._summarize()
        elif now >= self._backlog_at:
            self._backlog()
            self._housekeeping()

    def _backlog(self) -> tuple[str, str]:
        """Lag and pending as text for the log; also sets the Prometheus gauges."""
        self._backlog_at = time.monotonic() + _BACKLOG_EVERY_S
        try:
            backlog = self.group.backlog()
        except REDIS_ERRORS as exc:
            log.warning("Redis error (%s) reading the backlog: %s",
                        self.metrics.redis_error(exc), exc)
            return "unknown", "unknown"
        self.metrics.backlog(backlog.lag, backlog.pending)
        return "unknown" if backlog.lag is None else str(backlog.lag), str(backlog.pending)

    def _housekeeping(self) -> None:
        """Sweep lapsed holds, trim delivered entries, forget long-gone consumers, let the
        sink tidy up (the usage store prunes); what fails now is done next round."""
        try:
            self.group.forget_idle_consumers(_FORGET_CONSUMERS_IDLE_MS)
            if self.options.sweep_holds:
                self._sweep_holds()
            if self.options.retain_ms is not None:
                trimmed = self.group.trim_delivered(self.options.retain_ms)
                if trimmed:
                    self.metrics.trimmed(trimmed)
                    log.debug("trimmed %d delivered entries from the streams", trimmed)
        except REDIS_ERRORS as exc:
            log.warning("Redis error (%s) in housekeeping, done next round: %s",
                        self.metrics.redis_error(exc), exc)
        self.sink.housekeeping()

    def _sweep_holds(self) -> None:
        """Settle lapsed holds, page after page for up to a second (a backlog left by an
        outage is worked off over the next rounds, delivery goes on meanwhile)."""
        engine = Engine(self.group.client)
        deadline = time.monotonic() + 1.0
        while True:
            swept = sweep_lapsed_holds(engine)
            if swept.settled or swept.vanished:
                self.metrics.holds_swept(swept.settled, swept.vanished)
                log.warning("settled %d lapsed holds at their estimate (%d had expired)",
                            swept.settled, swept.vanished)
            if not swept.more or time.monotonic() >= deadline:
                return

    def _summarize(self) -> None:
        """The info line: what happened since the last one, and what is left."""
        self._summary_at = time.monotonic() + self.options.summary_interval_s
        recent = self.metrics.tally - self._summarized
        self._summarized = self.metrics.tally
        lag, pending = self._backlog()
        log.info("forwarder to %s: %d delivered, %d retried, %d dead-lettered, %d lost; "
                 "lag %s, pending %s", self.sink.name, recent.delivered, recent.retried,
                 recent.dead_lettered, recent.lost, lag, pending)
