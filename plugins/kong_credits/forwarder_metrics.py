"""What the forwarder did, for Prometheus and for the periodic log summary.

Metrics live on the forwarder's own CollectorRegistry (no process-global state), served by
`serve()` when --metrics-port is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["ForwarderMetrics", "Tally"]


@dataclass(frozen=True, slots=True)
class Tally:
    """Event counts since the forwarder started."""

    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    lost: int = 0

    def __sub__(self, other: Tally) -> Tally:
        return Tally(self.delivered - other.delivered, self.retried - other.retried,
                     self.dead_lettered - other.dead_lettered, self.lost - other.lost)


class ForwarderMetrics:
    """Counters per sink; `tally` mirrors them as plain ints for the log."""

    def __init__(self, sink: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.tally = Tally()

        def counter(name: str, doc: str) -> Any:
            """A per-sink counter kong_credits_forwarder_<name>_total, for this sink."""
            return Counter(f"kong_credits_forwarder_{name}", doc, ["sink"],
                           registry=self.registry).labels(sink)

        self._delivered = counter("events_delivered", "Events the sink confirmed.")
        self._retried = counter("events_retried",
                                "Event sends repeated after a retryable failure.")
        self._dead_lettered = counter("events_dead_lettered",
                                      "Events refused for good, moved to the DLQ.")
        self._lost = counter("events_lost",
                             "Pending events deleted from the stream before delivery.")
        self._redis_errors = counter("redis_errors", "Redis calls that failed.")
        self._trimmed = counter("events_trimmed",
                                "Stream entries every group was done with, trimmed.")
        self._holds_swept = counter("holds_swept",
                                    "Holds past their deadline settled at the estimate.")
        self._holds_lost = counter("holds_lost", "Holds that expired before any settle or sweep.")
        self._batches = Counter("kong_credits_forwarder_batches", "Delivery calls by outcome.",
                                ["sink", "outcome"], registry=self.registry)
        self._sink = sink
        self._seconds = Histogram(
            "kong_credits_forwarder_delivery_seconds", "Duration of one delivery call.",
            ["sink"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)).labels(sink)
        self._lag = Gauge("kong_credits_forwarder_lag_events",
                          "Events in the streams the group has not read yet.", ["sink"],
                          registry=self.registry).labels(sink)
        self._pending = Gauge("kong_credits_forwarder_pending_events",
                              "Events read by the group and not acknowledged yet.", ["sink"],
                              registry=self.registry).labels(sink)

    def delivery(self, *, delivered: int, dead_lettered: int, unresolved: int,
                 seconds: float) -> None:
        """One deliver() call and its outcome."""
        self._delivered.inc(delivered)
        self._dead_lettered.inc(dead_lettered)
        self._seconds.observe(seconds)
        outcome = "retry" if unresolved else "delivered" if delivered else "dead_lettered"
        self._batches.labels(self._sink, outcome).inc()
        self.tally = replace(self.tally, delivered=self.tally.delivered + delivered,
                             dead_lettered=self.tally.dead_lettered + dead_lettered)

    def retry(self, events: int) -> None:
        self._retried.inc(events)
        self.tally = replace(self.tally, retried=self.tally.retried + events)

    def dead_letter(self, events: int) -> None:
        """Dead-lettered before any delivery call (malformed entries)."""
        self._dead_lettered.inc(events)
        self.tally = replace(self.tally, dead_lettered=self.tally.dead_lettered + events)

    def lost(self, events: int) -> None:
        self._lost.inc(events)
        self.tally = replace(self.tally, lost=self.tally.lost + events)

    def redis_error(self) -> None:
        self._redis_errors.inc()

    def trimmed(self, entries: int) -> None:
        self._trimmed.inc(entries)

    def holds_swept(self, settled: int, vanished: int) -> None:
        self._holds_swept.inc(settled)
        self._holds_lost.inc(vanished)

    def backlog(self, lag: int | None, pending: int) -> None:
        if lag is not None:
            self._lag.set(lag)
        self._pending.set(pending)

    def serve(self, port: int, host: str = "127.0.0.1") -> tuple[int, Callable[[], None]]:
        """Serve /metrics on host:port in a daemon thread; returns the port and a stop."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

        return server.server_port, stop
