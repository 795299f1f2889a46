"""Billing backends the forwarder delivers to: the whole registry is `SINKS`.

A new sink is one module with a `Sink` subclass plus one line here; the shared contract test
(tests/sinks/test_sink_contract.py) picks up the billing backends of `SINKS`. `STORE_SINKS`
are stores of our own (the usage store), with the same delivery guarantees but no HTTP
backend; `ALL_SINKS` is what `kong-credits forwarder --sink` offers.
"""

from __future__ import annotations

from .base import (
                   Delivery,
                   PermanentSinkError,
                   RetryableSinkError,
                   Sink,
                   SinkConfig,
                   SinkError,
                   http_client,
)
from .http import HttpSink
from .lago import LagoSink
from .openmeter import OpenMeterSink
from .orb import OrbSink
from .stripe import StripeSink
from .usage import UsageSink

__all__ = ["ALL_SINKS", "SINKS", "STORE_SINKS", "Delivery", "PermanentSinkError",
           "RetryableSinkError", "Sink", "SinkConfig", "SinkError", "http_client"]

SINKS: dict[str, type[Sink]] = {
    "http": HttpSink,
    "openmeter": OpenMeterSink,
    "lago": LagoSink,
    "stripe": StripeSink,
    "orb": OrbSink,
}

STORE_SINKS: dict[str, type[Sink]] = {
    "usage": UsageSink,
}

ALL_SINKS: dict[str, type[Sink]] = {**SINKS, **STORE_SINKS}
