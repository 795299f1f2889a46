"""The spool's Prometheus metrics, served with the plugin server's (`--metrics-port`)."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["SPOOL_METRICS", "SpoolMetrics"]


class SpoolMetrics(Collector):
    """Plain ints the event loop adds to (as pluginserver_metrics.py does); the metrics
    thread only reads them."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.spooled = 0
        self.replayed = 0
        self.dropped = 0
        self.overdrawn = 0
        self.unreadable = 0
        self._spools: weakref.WeakSet[Any] = weakref.WeakSet()
        if registry is not None:
            registry.register(self)

    def watch(self, spool: Any) -> None:
        """Report `spool.size_bytes` in kong_credits_spool_bytes."""
        self._spools.add(spool)

    def collect(self) -> Iterator[Metric]:
        for name, value, text in (
            ("spooled", self.spooled, "Requests passed while Redis was away and written to "
                                      "the spool (on_redis_error=spool)."),
            ("replayed", self.replayed, "Spooled requests charged in Redis by the replay."),
            ("dropped", self.dropped, "Requests passed unmetered because the spool was full "
                                      "or could not be written (on_redis_error=spool)."),
            ("overdrawn", self.overdrawn, "Replayed requests whose wallet could not pay in "
                                          "full: the rest is the wallet's overdraft."),
            ("unreadable", self.unreadable, "Spool lines that could not be read (a torn "
                                            "tail after an OS crash), skipped."),
        ):
            yield CounterMetricFamily(f"kong_credits_spool_{name}", text, value=value)
        yield GaugeMetricFamily("kong_credits_spool_bytes",
                                "Bytes in the spool directories this process writes to.",
                                value=sum(s.size_bytes for s in list(self._spools)))


def _register() -> SpoolMetrics:
    from ..pluginserver_metrics import METRICS

    return SpoolMetrics(METRICS.registry)


SPOOL_METRICS = _register()
"""The process's spool counts, in the plugin server's metrics registry."""
