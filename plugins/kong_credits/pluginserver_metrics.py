"""What the plugin server decided, for Prometheus (`kong-credits pluginserver --metrics-port`).

One CollectorRegistry per process (`METRICS`), always counting. The hot path only adds to
plain ints held by objects resolved once (`METRICS.admitted.inc()`: ~40 ns; a latency
observed: ~130 ns, against ~1 µs per request for prometheus_client's locked Counter and
Histogram): the plugin server counts from its one event-loop thread, the metrics endpoint's
thread only reads, so no lock is needed and no update is lost. Rare events (reconnects,
cluster redirections, slot-map or sentinel refreshes, replica WAITs short of their count)
are counted where they happen, by the lanes (redis_lane.LaneCounts, replica_wait.WAITS).

With `--workers N` each worker process counts its own requests. Every second it writes a
snapshot of its counts to a file of its own (`<pid>.json`, replaced atomically) in a
directory the parent made, and the parent's /metrics sums the files (`WorkerSums`): nothing
is added per request, a scrape lags the workers by at most a second, and a worker that died
keeps its last snapshot, so counters never go back when it is forked again. Events in flight
are summed over live workers only.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import sys
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .redis_lane import LaneCounts
from .replica_wait import WAITS

__all__ = ["METRICS", "PluginServerMetrics", "Snapshot", "WorkerSums", "serve"]

REDIS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PUBLISH_INTERVAL_S = 1.0
"""How often a worker process writes its counts for the parent's /metrics."""

Snapshot = dict[str, Any]
"""Every count of one process (or summed over several) as JSON-ready data:
decisions [[outcome, reason, n]], redis_buckets [n per bound, then +Inf], redis_sum,
redis_errors {kind: n}, redirections {moved, ask}, refreshes {kind: n}, reconnects,
replica_waits {confirmed, unconfirmed}, in_flight."""


class Count:
    """A counter child: `inc()` adds one to a plain int."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1


class Seconds:
    """A histogram without labels: `observe(s)` adds to one bucket and to the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1  # le: the first bound >= seconds
        self.sum += seconds


class PluginServerMetrics(Collector):
    """Counts of the `credits` plugins' decisions and of their Redis calls."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._decisions: dict[tuple[str, str], Count] = {}
        self.admitted = self.decision("admitted", "")
        self.unavailable = self.decision("unavailable", "redis_error")
        self.unmetered = self.decision("unmetered", "redis_error")
        self.redis_seconds = Seconds(REDIS_BUCKETS)
        self.lanes = LaneCounts()
        """Given to every hot-path lane (redis_pool.py): reconnects, redirections, refreshes."""
        self._redis_errors: dict[str, int] = {}
        self._tables: weakref.WeakSet[Any] = weakref.WeakSet()
        self.registry.register(self)

    def decision(self, outcome: str, reason: str) -> Count:
        """The count of (outcome, reason); reasons are the scripts' small fixed set."""
        count = self._decisions.get((outcome, reason))
        if count is None:
            count = self._decisions[(outcome, reason)] = Count()
        return count

    def redis_error(self, exc: BaseException) -> None:
        if isinstance(exc, builtins.TimeoutError):  # asyncio.timeout: the bound is spent
            kind = "timeout"
        else:
            from .forwarder.metrics import redis_error_kind  # see serve()

            kind = redis_error_kind(exc) if isinstance(exc, Exception) else "other"
        self._redis_errors[kind] = self._redis_errors.get(kind, 0) + 1

    def watch_events(self, table: Any) -> None:
        """Count `len(table)` (open events) in kong_credits_events_in_flight."""
        self._tables.add(table)

    def snapshot(self) -> Snapshot:
        """Every count now (read from another thread: each value is one int read)."""
        lanes = self.lanes
        return {
            "decisions": [[outcome, reason, count.value]
                          for (outcome, reason), count in list(self._decisions.items())],
            "redis_buckets": list(self.redis_seconds.counts),
            "redis_sum": self.redis_seconds.sum,
            "redis_errors": dict(self._redis_errors),
            "redirections": {"moved": lanes.moved, "ask": lanes.asked},
            "refreshes": dict(lanes.refreshes),
            "reconnects": lanes.reconnects,
            "replica_waits": {"confirmed": WAITS.confirmed, "unconfirmed": WAITS.unconfirmed},
            "in_flight": sum(len(table) for table in list(self._tables)),
            "spool": _spool_counts(),
        }

    def collect(self) -> Iterator[Metric]:
        return families(self.snapshot())

    def serve(self, port: int, host: str = "127.0.0.1") -> tuple[int, Callable[[], None]]:
        """Serve /metrics on host:port in a daemon thread; returns the port and a stop."""
        return serve(self.registry, port, host)

    def publish(self, directory: str, interval_s: float = PUBLISH_INTERVAL_S) -> None:
        """In a worker process: write `snapshot()` to `directory/<pid>.json` now and every
        `interval_s`, from a daemon thread, for the parent's WorkerSums."""
        path = Path(directory, f"{os.getpid()}.json")

        def write() -> None:
            scratch = path.with_suffix(".tmp")
            scratch.write_text(json.dumps(self.snapshot()))
            os.replace(scratch, path)  # a reader sees the last snapshot or this one, whole

        def loop() -> None:
            while True:
                time.sleep(interval_s)
                with contextlib.suppress(OSError):  # the parent removed it: stopping
                    write()

        write()
        threading.Thread(target=loop, name="metrics-publisher", daemon=True).start()


def merge(snapshots: Iterable[Snapshot]) -> Snapshot:
    """The sum of several processes' snapshots."""
    total: Snapshot = {"decisions": [], "redis_buckets": [0] * (len(REDIS_BUCKETS) + 1),
                       "redis_sum": 0.0, "redis_errors": {}, "redirections": {},
                       "refreshes": {}, "reconnects": 0, "replica_waits": {}, "in_flight": 0,
                       "spool": {}}
    decisions: dict[tuple[str, str], int] = {}
    for snap in snapshots:
        for outcome, reason, value in snap["decisions"]:
            decisions[(outcome, reason)] = decisions.get((outcome, reason), 0) + value
        total["redis_buckets"] = [a + b for a, b in zip(total["redis_buckets"],
                                                        snap["redis_buckets"], strict=True)]
        for name in ("redis_sum", "reconnects", "in_flight"):
            total[name] += snap[name]
        for name in ("redis_errors", "redirections", "refreshes", "replica_waits"):
            for key, value in snap[name].items():
                total[name][key] = total[name].get(key, 0) + value
        spool = total["spool"]
        for key, value in snap.get("spool", {}).items():
            # Every worker of one server sees the same spool directories: their bytes once.
            spool[key] = max(spool.get(key, 0), value) if key == "bytes" else \
                spool.get(key, 0) + value
    total["decisions"] = [[o, r, v] for (o, r), v in decisions.items()]
    return total


def families(snap: Snapshot) -> Iterator[Metric]:
    """The Prometheus metric families of a snapshot."""
    decisions = CounterMetricFamily(
        "kong_credits_decisions",
        "Access decisions by outcome and reason (admitted; refused: 402/429 by reason; "
        "shadow_refused; unavailable: 503; unmetered: passed while Redis was down).",
        labels=["outcome", "reason"])
    for outcome, reason, value in snap["decisions"]:
        decisions.add_metric([outcome, reason], value)
    yield decisions
    total, buckets = 0, []
    for bound, count in zip((*REDIS_BUCKETS, float("inf")), snap["redis_buckets"], strict=True):
        total += count
        buckets.append((floatToGoString(bound), total))
    yield HistogramMetricFamily(
        "kong_credits_redis_call_seconds",
        "Duration of one hot-path Redis script call, retry included.",
        buckets=buckets, sum_value=snap["redis_sum"])
    yield _labelled("kong_credits_redis_errors",
                    "Hot-path Redis calls that failed, by kind of error.", "kind",
                    snap["redis_errors"])
    yield _labelled("kong_credits_redis_redirections",
                    "Redis Cluster redirections the hot path followed: MOVED (a slot's new "
                    "owner) and ASK (a slot mid-migration).", "kind", snap["redirections"])
    yield _labelled("kong_credits_redis_refreshes",
                    "Refreshes of where Redis is: the cluster's slot map (slot_map), the "
                    "sentinels' master (sentinel).", "kind", snap["refreshes"])
    yield CounterMetricFamily(
        "kong_credits_redis_reconnects",
        "Connections to a Redis node opened again after one was lost or dropped.",
        value=snap["reconnects"])
    yield _labelled("kong_credits_replica_waits",
                    "Script calls with redis_wait_replicas: writes a replica acknowledged in "
                    "time (confirmed) or not (unconfirmed: a failover now could lose them).",
                    "outcome", snap["replica_waits"])
    yield GaugeMetricFamily(
        "kong_credits_events_in_flight",
        "Kong events (requests' phases) open in the plugin server.", value=snap["in_flight"])
    yield from _spool_families(snap.get("spool", {}))


def _spool_counts() -> dict[str, int]:
    """The spool's counts when this process has a spool (on_redis_error=spool), else none:
    the spool package is imported only by the plugins that use it."""
    spool_metrics = sys.modules.get("kong_credits.spool.metrics")
    return spool_metrics.SPOOL_METRICS.counts() if spool_metrics else {}


def _spool_families(counts: dict[str, int]) -> Iterator[Metric]:
    from .spool.metrics import spool_families

    return spool_families(counts)


def _labelled(name: str, documentation: str, label: str,
              values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


class WorkerSums(Collector):
    """The parent's view of `--workers N`: the sum of the snapshots the workers publish in
    `directory`. Dead workers' last snapshots still count, except their events in flight."""

    def __init__(self, directory: str, alive: Callable[[int], bool] | None = None) -> None:
        self.directory = Path(directory)
        self._alive = alive or _alive

    def collect(self) -> Iterator[Metric]:
        snapshots = []
        for path in self.directory.glob("*.json"):
            try:
                snap = json.loads(path.read_text())
            except (OSError, ValueError):  # gone meanwhile; never half-written (os.replace)
                continue
            if not self._alive(int(path.stem)):
                snap["in_flight"] = 0
            snapshots.append(snap)
        return families(merge(snapshots))


def serve(registry: CollectorRegistry, port: int,
          host: str = "127.0.0.1") -> tuple[int, Callable[[], None]]:
    """The forwarder's serve_registry, imported only when used: the forwarder package
    (~0.15 s to import) is not the plugin server's, and importing it reads the deployment's
    settings (keys.py) before the plugin server could report a bad one cleanly."""
    from .forwarder.metrics import serve_registry

    return serve_registry(registry, port, host)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - our workers run as our user
        return True
    return True


METRICS = PluginServerMetrics()
"""The process-wide metrics the `credits` plugins and their Redis calls count in."""
