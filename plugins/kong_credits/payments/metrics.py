"""Prometheus counters of the Stripe events the admin process received."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter

__all__ = ["STRIPE_METRICS", "StripeMetrics"]


class StripeMetrics:
    """`events{type, outcome}` counts every event applied (a redelivery counts again);
    `ignored{reason}` counts each ignored event once, when it is first logged."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter("kong_credits_stripe_events",
                              "Stripe events received, by type and outcome.",
                              ["type", "outcome"], registry=registry)
        self.ignored = Counter("kong_credits_stripe_events_ignored",
                               "Stripe events ignored (logged once each), by reason.",
                               ["reason"], registry=registry)


STRIPE_METRICS = StripeMetrics(REGISTRY)
"""The process's counters, on prometheus_client's default registry (what /metrics serves)."""
