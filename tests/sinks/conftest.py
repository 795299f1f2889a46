"""Fixtures of the sink tests: a vendor fake per sink kind and a sink aimed at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from billing_recorder import BillingRecorder, sink_config

from kong_credits.sinks import SINKS, Sink, http_client


class Deliverer:
    """A sink of one kind and the vendor fake it talks to."""

    def __init__(self, backend: BillingRecorder, sink: Sink) -> None:
        self.backend = backend
        self.sink = sink


@pytest.fixture
def make_deliverer() -> Iterator[object]:
    """make(kind, **config overrides) -> Deliverer; everything is closed after the test."""
    closers = []

    def make(kind: str, **overrides: object) -> Deliverer:
        backend = BillingRecorder(kind).__enter__()
        config = sink_config(kind, backend.url, **overrides)
        client = http_client(config)
        sink = SINKS[kind](client, config)
        closers.extend([sink.close, client.close, lambda: backend.__exit__(None, None, None)])
        return Deliverer(backend, sink)

    yield make
    for close in closers:
        close()
