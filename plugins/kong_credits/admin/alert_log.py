"""A wallet's recent alerts, read back from its shard's alert stream (newest first).

The stream is shared by the shard's wallets and capped (wallet.lua ALERTS_MAXLEN), so the
reader walks back in pages and stops after `SCAN_LIMIT` entries: a wallet that has been quiet
while its neighbours were noisy shows fewer alerts, never a slow page.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from ..forwarder.alerts import Alert
from ..keys import WalletKeys

__all__ = ["SCAN_LIMIT", "recent_alerts"]

SCAN_LIMIT = 20_000
_PAGE = 1_000


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def recent_alerts(client: redis.Redis, wallet: str, limit: int = 20) -> list[dict[str, Any]]:
    """Up to `limit` of `wallet`'s alerts, newest first, each as its webhook body."""
    stream = WalletKeys(wallet).alerts
    found: list[dict[str, Any]] = []
    upper: str = "+"
    scanned = 0
    while len(found) < limit and scanned < SCAN_LIMIT:
        entries = client.xrevrange(stream, max=upper, min="-", count=_PAGE)
        for _, fields in entries:
            decoded = {_text(k): _text(v) for k, v in fields.items()}
            if decoded.get("wallet") == wallet:
                found.append(json.loads(Alert.from_fields(decoded).body()))
                if len(found) == limit:
                    break
        scanned += len(entries)
        if len(entries) < _PAGE:
            break
        upper = "(" + _text(entries[-1][0])
    return found
