"""`redis_wait_replicas`: each script call waits until a replica holds its writes.

Redis replicates asynchronously. A master that fails takes with it the writes its replicas had
not yet received: here the charges and events of requests already admitted (free requests,
usage never billed). With `redis_wait_replicas: 1` every EVALSHA is followed on the same
connection, in the same write, by `WAIT 1 <redis_wait_timeout_ms>` (a Redis 7.0 script may not
call WAIT itself): still one round trip, answered once a replica acknowledged the script's
writes. On a cluster or Sentinel URL the WAIT goes to the master the EVALSHA went to (after
any redirection or failover the routed lane followed, redis_routing.py). Failover
(Sentinel, Redis Cluster) promotes the replica with the most data, so an admitted request
whose WAIT returned 1 survives it.

A WAIT that returns 0 (no replica connected, or lagging past the timeout), or fails after the
script ran, leaves a charge that a failover right now could lose. The charge stands and the
request is answered as decided: refusing it after charging would bill a request never
served. The shortfall is counted (`WAITS`) and logged, at most every 5 s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import InvalidInput

__all__ = ["WAITS", "ReplicaWait", "WaitCounts"]

log = logging.getLogger(__name__)


@dataclass
class WaitCounts:
    """Script calls of this process whose writes a replica did (not) acknowledge in time."""

    confirmed: int = 0
    unconfirmed: int = 0


WAITS = WaitCounts()
"""This process's counts, over every Redis (what a metrics endpoint would export)."""


class _WaitingLane(Protocol):
    async def evalsha_then_wait(self, script: Any, keys: Sequence[Any], args: Sequence[Any],
                                *, replicas: int, timeout_ms: int) -> tuple[Any, int]: ...

    async def close(self) -> None: ...


class ReplicaWait:
    """A lane (evalsha, close) whose every script call waits for `replicas` replicas."""

    def __init__(self, lane: Any, replicas: int, timeout_ms: int, *, where: str = "Redis",
                 log_interval_s: float = 5.0) -> None:
        if not hasattr(lane, "evalsha_then_wait"):  # every lane of lane_from_url has it
            raise InvalidInput(f"redis_wait_replicas is not supported for {where}: its "
                               "client cannot send WAIT behind a script call")
        self._lane: _WaitingLane = lane
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self._where = where
        self._log_interval_s = log_interval_s
        self._next_log = 0.0
        self._unlogged = 0

    async def evalsha(self, script: Any, keys: Sequence[Any] = (),
                      args: Sequence[Any] = ()) -> Any:
        reply, acked = await self._lane.evalsha_then_wait(
            script, keys, args, replicas=self.replicas, timeout_ms=self.timeout_ms)
        if acked >= self.replicas:
            WAITS.confirmed += 1
        else:
            WAITS.unconfirmed += 1
            self._unconfirmed()
        return reply

    def _unconfirmed(self) -> None:
        self._unlogged += 1
        now = time.monotonic()
        if now < self._next_log:
            return
        log.warning("credits: %d script call(s) to %s not acknowledged by a replica within "
                    "%d ms (redis_wait_replicas=%d): answered and charged, but a failover now "
                    "could lose those charges and events", self._unlogged, self._where,
                    self.timeout_ms, self.replicas)
        self._next_log, self._unlogged = now + self._log_interval_s, 0

    async def close(self) -> None:
        await self._lane.close()
