"""Wallet -> billing customer id, per sink, from config/customers.yaml (default: the wallet).

    customers:
      acme: acme-inc            # the same id at every sink
      globex:
        stripe: cus_NffrFeUfNV2Hib
        lago: sub_globex_2026   # Lago bills a subscription: its external id
        default: globex         # every other sink

A wallet not listed is billed under its own name, so a deployment without the file works.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import yaml

from .errors import InvalidInput

__all__ = ["DEFAULT_CUSTOMERS_PATH", "CustomerMap"]

DEFAULT_CUSTOMERS_PATH = Path("config/customers.yaml")
_DEFAULT = "default"


def _customer_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise InvalidInput(f"{where}: a customer id must be a non-empty string, not {value!r}")
    return value


class CustomerMap:
    """Looks up billing customer ids; immutable after construction."""

    def __init__(self, customers: Mapping[str, Any] | None = None, *,
                 sinks: Collection[str] = ()) -> None:
        """`customers` as in the YAML file; `sinks`, when given, are the only valid sink keys."""
        self._ids: dict[tuple[str, str], str] = {}
        for wallet, entry in (customers or {}).items():
            where = f"customers.{wallet}"
            if isinstance(entry, Mapping):
                for sink, value in entry.items():
                    if sinks and sink != _DEFAULT and sink not in sinks:
                        raise InvalidInput(f"{where}: unknown sink {sink!r} "
                                           f"(one of {', '.join(sorted(sinks))} or default)")
                    self._ids[(str(wallet), str(sink))] = _customer_id(value, f"{where}.{sink}")
            else:
                self._ids[(str(wallet), _DEFAULT)] = _customer_id(entry, where)

    @classmethod
    def load(cls, path: str | Path, *, sinks: Collection[str] = ()) -> CustomerMap:
        """Read a customers file; InvalidInput names the problem (missing file included)."""
        try:
            document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise InvalidInput(f"{path} is not valid YAML: {exc}") from exc
        if document is None:
            return cls()
        if not isinstance(document, Mapping) or not isinstance(
                document.get("customers") or {}, Mapping):
            raise InvalidInput(f"{path}: expected a mapping under 'customers'")
        return cls(document.get("customers") or {}, sinks=sinks)

    def customer(self, wallet: str, sink: str) -> str:
        """The id `sink` bills `wallet` under: its own entry, else the default, else the wallet."""
        return self._ids.get((wallet, sink)) or self._ids.get((wallet, _DEFAULT)) or wallet
