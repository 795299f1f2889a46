"""The usage store as a sink: the forwarder's delivery guarantees, our own store at the end.

Each batch is written in one transaction that counts an event id once (usage/store.py), so a
batch written but not acknowledged (the forwarder killed in between, another forwarder that
reclaimed it, a replayed dead letter) is delivered again without being counted again. A
store that fails (PostgreSQL down, SQLite busy past its timeout) is a retryable failure: the
events stay pending in Redis. Expired rows are pruned here too, a small batch per level at a
time, between deliveries and in the forwarder's housekeeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import httpx

from ..rated_event import RatedEvent
from ..usage.retention import parse_retention
from ..usage.store import StoreError, open_store
from .base import Delivery, RetryableSinkError, Sink, SinkConfig

__all__ = ["UsageSink"]

log = logging.getLogger(__name__)
_PRUNE_EVERY_S = 60.0
_PRUNE_BATCH_ROWS = 1000
_PRUNE_BUDGET_S = 0.25
"""Housekeeping prunes for at most this long per round; the rest waits for the next one."""


class UsageSink(Sink):
    """Writes rated events into the usage store at `config.store` (sqlite:///..., postgresql://
    ...; default $KONG_CREDITS_USAGE_URL, else sqlite:///kong-credits-usage.db)."""

    name = "usage"
    max_batch = 10_000
    default_batch = 5_000
    """A SQLite commit writes every page the batch changed (the rollups' pages are spread by
    wallet) to the WAL: 5,000 events share those pages five times more than 1,000 do, and
    take ~30% less CPU per event (load/RESULTS.md §11.1)."""

    def __init__(self, client: httpx.Client, config: SinkConfig, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.config = config
        self.retention = parse_retention(config.usage_retention)
        self.store = open_store(config.store, create=True)
        self.base_url = self.store.masked_url
        self.destination = self.store.identity
        self.clock = clock
        self._prune_at = 0.0

    def send(self, events: Sequence[RatedEvent]) -> Delivery:
        try:
            self.store.ingest(events, now_ms=self._now_ms())
        except StoreError as exc:
            raise RetryableSinkError(str(exc)) from exc
        return Delivery.of(events)

    def deliver(self, events: Sequence[RatedEvent]) -> Delivery:
        outcome = super().deliver(events)
        if time.monotonic() >= self._prune_at:
            self._prune(budget_s=0.0)
        return outcome

    def housekeeping(self) -> None:
        self._prune(budget_s=_PRUNE_BUDGET_S)

    def _prune(self, *, budget_s: float) -> None:
        """One batch per level, then more while a level deleted a full batch and the budget
        lasts; a failure is logged and tried again next round."""
        deadline = time.monotonic() + budget_s
        try:
            while True:
                deleted = self.store.prune(self.retention, now_ms=self._now_ms(),
                                           batch_rows=_PRUNE_BATCH_ROWS)
                if sum(deleted.values()):
                    log.debug("pruned expired usage rows: %s", deleted)
                more = any(count >= _PRUNE_BATCH_ROWS for count in deleted.values())
                if not more or time.monotonic() >= deadline:
                    break
        except StoreError as exc:
            log.warning("pruning the usage store failed, tried again later: %s", exc)
            more = False
        self._prune_at = time.monotonic() + (0.0 if more else _PRUNE_EVERY_S)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def close(self) -> None:
        self.store.close()
