"""customers.py: wallet -> billing customer id per sink, from YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from kong_credits.customers import CustomerMap
from kong_credits.errors import InvalidInput
from kong_credits.sinks import SINKS

REPO = Path(__file__).resolve().parents[2]


def test_per_sink_id_then_default_then_the_wallet_itself(tmp_path: Path) -> None:
    path = tmp_path / "customers.yaml"
    path.write_text("customers:\n  acme: acme-inc\n  globex:\n    stripe: cus_123\n"
                    "    default: globex-co\n  initech:\n    lago: sub_9\n")
    customers = CustomerMap.load(path, sinks=SINKS)
    assert customers.customer("acme", "stripe") == "acme-inc"
    assert customers.customer("globex", "stripe") == "cus_123"
    assert customers.customer("globex", "orb") == "globex-co"
    assert customers.customer("initech", "lago") == "sub_9"
    assert customers.customer("initech", "orb") == "initech"
    assert customers.customer("unknown", "http") == "unknown"


@pytest.mark.parametrize(("text", "message"), [
    ("customers:\n  acme:\n    strpe: cus_1\n", "unknown sink 'strpe'"),
    ("customers:\n  acme: ''\n", "customers.acme: a customer id must be a non-empty string"),
    ("customers:\n  acme:\n    orb: 42\n", "customers.acme.orb"),
    ("customers: [acme]\n", "expected a mapping under 'customers'"),
    ("customers: {acme: [\n", "not valid YAML"),
])
def test_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "customers.yaml"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[")):
        CustomerMap.load(path, sinks=SINKS)


def test_empty_file_maps_nothing(tmp_path: Path) -> None:
    path = tmp_path / "customers.yaml"
    path.write_text("# nothing yet\n")
    assert CustomerMap.load(path).customer("w", "lago") == "w"


def test_the_shipped_example_loads() -> None:
    CustomerMap.load(REPO / "config" / "customers.yaml", sinks=SINKS)
