"""What the plugin server decided, for Prometheus (`kong-credits pluginserver --metrics-port`).

One CollectorRegistry per process (`METRICS`), always counting. The hot path only adds to
plain ints held by objects resolved once (`METRICS.admitted.inc()`: ~40 ns; a latency
observed: ~130 ns, against ~1 µs per request for prometheus_client's locked Counter and
Histogram): the plugin server counts from its one event-loop thread, the metrics endpoint's
thread only reads, so no lock is needed and no update is lost. The server serves them only
with --metrics-port (and --workers 1: see the README).
"""

from __future__ import annotations

import builtins
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterator
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

from .forwarder.metrics import redis_error_kind, serve_registry

__all__ = ["METRICS", "PluginServerMetrics"]

REDIS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


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
            kind = redis_error_kind(exc) if isinstance(exc, Exception) else "other"
        self._redis_errors[kind] = self._redis_errors.get(kind, 0) + 1

    def watch_events(self, table: Any) -> None:
        """Count `len(table)` (open events) in kong_credits_events_in_flight."""
        self._tables.add(table)

    def collect(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "kong_credits_decisions",
            "Access decisions by outcome and reason (admitted; refused: 402/429 by reason; "
            "shadow_refused; unavailable: 503; unmetered: passed while Redis was down).",
            labels=["outcome", "reason"])
        for (outcome, reason), count in list(self._decisions.items()):
            decisions.add_metric([outcome, reason], count.value)
        yield decisions
        seconds = self.redis_seconds
        counts, total, buckets = list(seconds.counts), 0, []
        for bound, count in zip((*seconds.bounds, float("inf")), counts, strict=True):
            total += count
            buckets.append((floatToGoString(bound), total))
        yield HistogramMetricFamily(
            "kong_credits_redis_call_seconds",
            "Duration of one hot-path Redis script call, retry included.",
            buckets=buckets, sum_value=seconds.sum)
        errors = CounterMetricFamily("kong_credits_redis_errors",
                                     "Hot-path Redis calls that failed, by kind of error.",
                                     labels=["kind"])
        for kind, count in list(self._redis_errors.items()):
            errors.add_metric([kind], count)
        yield errors
        yield GaugeMetricFamily(
            "kong_credits_events_in_flight",
            "Kong events (requests' phases) open in this plugin server.",
            value=sum(len(table) for table in list(self._tables)))

    def serve(self, port: int, host: str = "127.0.0.1") -> tuple[int, Callable[[], None]]:
        """Serve /metrics on host:port in a daemon thread; returns the port and a stop."""
        return serve_registry(self.registry, port, host)


METRICS = PluginServerMetrics()
"""The process-wide metrics the `credits` plugins and their Redis calls count in."""
