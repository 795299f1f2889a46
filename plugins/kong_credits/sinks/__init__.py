"""Billing backends the forwarder delivers to: the whole registry is `SINKS`.

A new sink is one module with a `Sink` subclass plus one line here; the shared contract test
(tests/sinks/test_sink_contract.py) picks it up.
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

__all__ = ["SINKS", "Delivery", "PermanentSinkError", "RetryableSinkError", "Sink",
           "SinkConfig", "SinkError", "http_client"]

SINKS: dict[str, type[Sink]] = {
    "http": HttpSink,
    "openmeter": OpenMeterSink,
    "lago": LagoSink,
    "stripe": StripeSink,
    "orb": OrbSink,
}
