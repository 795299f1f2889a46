"""Prometheus metrics of the admin API: requests by endpoint and status, and their latency.

`endpoint` is the route's template (`/v1/wallets/{wallet}/grants`), never the path itself,
so no wallet name becomes a label and the series stay few. Each app has its own registry
(tests build several apps in one process).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AdminMetrics", "MetricsMiddleware"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class AdminMetrics:
    """The registry: the two metrics the middleware feeds, and the process's own (CPU,
    memory, open files)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "kong_credits_admin_requests", "Admin API requests answered, by endpoint and status.",
            ["method", "endpoint", "status"], registry=self.registry)
        self.latency = Histogram(
            "kong_credits_admin_request_duration_seconds",
            "Time from a request's arrival to its response's last byte, by endpoint.",
            ["method", "endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)


class MetricsMiddleware:
    """ASGI middleware: counts each HTTP request once its response has been sent."""

    def __init__(self, app: ASGIApp, metrics: AdminMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(method, endpoint, str(status)).inc()
            self.metrics.latency.labels(method, endpoint).observe(
                time.perf_counter() - started)
