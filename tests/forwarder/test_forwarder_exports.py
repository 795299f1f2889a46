"""The forwarder's modules export what __all__ says, and nothing private."""

from __future__ import annotations

import importlib

import pytest

MODULES = ["forwarder", "forwarder.alerts", "forwarder.alerts_cli", "forwarder.cli",
           "forwarder.consumer_group", "forwarder.dlq", "forwarder.group_names",
           "forwarder.lapsed_holds", "forwarder.loop", "forwarder.metrics", "alerts",
           "customers", "rated_event", "retry", "sinks",
           "sinks.base", "sinks.http", "sinks.lago", "sinks.openmeter", "sinks.orb",
           "sinks.stripe"]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist_and_nothing_private_is_exported(name: str) -> None:
    module = importlib.import_module(f"kong_credits.{name}")
    assert all(hasattr(module, export) for export in module.__all__)
    assert not [export for export in module.__all__ if export.startswith("_")]
    assert len(set(module.__all__)) == len(module.__all__)
