"""The usage package's modules export what __all__ says, and nothing private; the names the
admin API builds on are there."""

from __future__ import annotations

import importlib

import pytest

MODULES = ["usage", "usage.cli", "usage.query", "usage.retention", "usage.schema",
           "usage.store", "usage.times", "sinks.usage"]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist_and_nothing_private_is_exported(name: str) -> None:
    module = importlib.import_module(f"kong_credits.{name}")
    assert all(hasattr(module, export) for export in module.__all__)
    assert not [export for export in module.__all__ if export.startswith("_")]
    assert len(set(module.__all__)) == len(module.__all__)


def test_the_query_layer_the_admin_api_uses() -> None:
    from kong_credits.sinks import ALL_SINKS, SINKS
    from kong_credits.usage import open_store, parse_time, usage_events, usage_report
    from kong_credits.usage.query import usage_report as from_query

    assert from_query is usage_report and callable(open_store) and callable(parse_time)
    assert callable(usage_events)
    assert "usage" in ALL_SINKS and "usage" not in SINKS  # no HTTP backend to contract-test
