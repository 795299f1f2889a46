"""What the forwarder did, for Prometheus and for the periodic log summary.

Metrics live on the forwarder's own CollectorRegistry (no process-global state), served by
`serve()` when --metrics-port is given.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ..errors import RedisUnavailable

__all__ = ["ForwarderMetrics", "Tally", "redis_error_kind", "serve_registry"]

_ERROR_KINDS: tuple[tuple[type[Exception], str], ...] = (
    (RedisUnavailable, "unavailable"),
    (redis.exceptions.BusyLoadingError, "loading"),  # a ConnectionError, but not a network one
    (redis.TimeoutError, "timeout"),
    (redis.ConnectionError, "connection"),
    (redis.exceptions.ReadOnlyError, "readonly"),
    (redis.exceptions.OutOfMemoryError, "oom"),
)
_ERROR_CODE = re.compile(r"[A-Z]{2,20}")


def redis_error_kind(exc: Exception) -> str:
    """A short label for a failed Redis call: "timeout", "connection", "readonly", "oom",
    "loading", else the server's error code ("moved", "nogroup", "err", ...), else
    "response" or "other". Error codes are a small fixed set, so the label stays bounded."""
    for error, kind in _ERROR_KINDS:
        if isinstance(exc, error):
            return kind
    # redis-py >= 6 keeps the code it recognised; an unknown one starts the message.
    code = getattr(exc, "status_code", None) or str(exc).partition(" ")[0]
    if isinstance(code, str) and _ERROR_CODE.fullmatch(code):
        return code.lower()
    return "response" if isinstance(exc, redis.ResponseError) else "other"


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
        self._redis_errors = Counter("kong_credits_forwarder_redis_errors",
                                     "Redis calls that failed, by kind of error.",
                                     ["sink", "kind"], registry=self.registry)
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

    def redis_error(self, exc: Exception) -> str:
        """Count a failed Redis call; returns its kind (see redis_error_kind)."""
        kind = redis_error_kind(exc)
        self._redis_errors.labels(self._sink, kind).inc()
        return kind

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
        return serve_registry(self.registry, port, host)


def serve_registry(registry: CollectorRegistry, port: int,
                   host: str = "127.0.0.1") -> tuple[int, Callable[[], None]]:
    """Serve `registry` on host:port/metrics in a daemon thread (port 0: any free one);
    returns the port and a function that stops it. The forwarder and the plugin server
    both serve their metrics this way."""
    server, thread = start_http_server(port, addr=host, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return server.server_port, stop
