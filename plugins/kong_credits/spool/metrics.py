"""The spool's counts, served with the plugin server's metrics (`--metrics-port`): they are
part of its snapshot (pluginserver_metrics.py), so `--workers N` sums them like the rest."""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["COUNTERS", "SPOOL_METRICS", "SpoolMetrics", "spool_families"]

COUNTERS = {
    "spooled": "Requests passed while Redis was away and written to the spool "
               "(on_redis_error=spool).",
    "replayed": "Spooled requests charged in Redis by the replay.",
    "dropped": "Requests passed unmetered because the spool was full or could not be written "
               "(on_redis_error=spool).",
    "overdrawn": "Replayed requests whose wallet could not pay in full: the rest is the "
                 "wallet's overdraft.",
    "unreadable": "Spool lines that could not be read (a torn tail after an OS crash), "
                  "skipped.",
}


class SpoolMetrics:
    """Plain ints the event loop adds to (as pluginserver_metrics.py does); the metrics
    thread only reads them."""

    def __init__(self) -> None:
        self.spooled = 0
        self.replayed = 0
        self.dropped = 0
        self.overdrawn = 0
        self.unreadable = 0
        self._spools: weakref.WeakSet[Any] = weakref.WeakSet()

    def watch(self, spool: Any) -> None:
        """Report `spool.size_bytes` in kong_credits_spool_bytes."""
        self._spools.add(spool)

    def counts(self) -> dict[str, int]:
        """The counters by name, and `bytes`: what is in the spool directories now."""
        counts = {name: getattr(self, name) for name in COUNTERS}
        counts["bytes"] = sum(spool.size_bytes for spool in list(self._spools))
        return counts


def spool_families(counts: Mapping[str, int]) -> Iterator[Metric]:
    """The Prometheus families of `counts` (absent names count 0)."""
    for name, text in COUNTERS.items():
        yield CounterMetricFamily(f"kong_credits_spool_{name}", text,
                                  value=counts.get(name, 0))
    yield GaugeMetricFamily("kong_credits_spool_bytes",
                            "Bytes in the spool directories of this plugin server.",
                            value=counts.get("bytes", 0))


SPOOL_METRICS = SpoolMetrics()
"""The process's spool counts."""
