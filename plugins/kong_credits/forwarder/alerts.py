"""Alerts as signed webhooks: parse alert stream entries, POST them, verify signatures.

The delivery loop is the forwarder's (consumer group, ack after a 2xx, retries with backoff,
dead letters), reading the alert streams instead of the event streams. Each webhook is one
alert, JSON, signed like Stripe's webhooks:

    Kong-Credits-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

so a receiver can check both who sent it and that it is recent (`verify_signature`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput
from ..rated_event import rfc3339
from ..sinks.base import Delivery, Sink, check_status

__all__ = ["SIGNATURE_HEADER", "Alert", "WebhookSink", "sign", "verify_signature"]

SIGNATURE_HEADER = "Kong-Credits-Signature"
DEFAULT_TOLERANCE_S = 300
_INTEGER_FIELDS = {"balance", "granted", "threshold_pct", "limit", "spent", "rate_per_minute",
                   "throttle_per_minute", "allowance", "rollover", "period_start", "period_end",
                   "threshold", "projected"}


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert; `event_id` is its unique alert id (the receiver's idempotency key)."""

    event_id: str
    type: str
    wallet: str
    timestamp_ms: int
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Alert:
        missing = [n for n in ("alert_id", "type", "wallet", "timestamp") if not fields.get(n)]
        if missing:
            raise InvalidInput(f"not an alert: missing field(s) {', '.join(missing)}")
        data: dict[str, Any] = {}
        for name, value in fields.items():
            if name in ("alert_id", "type", "wallet", "timestamp"):
                continue
            integer = name in _INTEGER_FIELDS and value.lstrip("-").isdigit()
            data[name] = int(value) if integer else value
        return cls(fields["alert_id"], fields["type"], fields["wallet"],
                   int(fields["timestamp"]), data)

    def body(self) -> bytes:
        return json.dumps({"id": self.event_id, "type": self.type, "wallet": self.wallet,
                           "created_at": rfc3339(self.timestamp_ms), "data": self.data},
                          separators=(",", ":")).encode()


def sign(secret: str, body: bytes, timestamp_s: int) -> str:
    """The signature header's value for `body` sent at `timestamp_s`."""
    digest = hmac.new(secret.encode(), f"{timestamp_s}.".encode() + body, hashlib.sha256)
    return f"t={timestamp_s},v1={digest.hexdigest()}"


def verify_signature(secret: str, header: str | None, body: bytes, *,
                     tolerance_s: int = DEFAULT_TOLERANCE_S, now_s: float | None = None) -> bool:
    """True when `header` signs `body` with `secret` and is at most `tolerance_s` old.

    Anyone can call a webhook receiver, so a malformed header (missing, empty, non-ASCII,
    without t or v1, t not a whole number) is False, never an exception: hmac.compare_digest
    raises TypeError on a str that is not ASCII.
    """
    if not isinstance(header, str) or not header.isascii():
        return False
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    t = parts.get("t", [""])[0]
    if not t.isdigit() or len(t) > 20:  # int() alone would also take " 1", "1_0" and "+1"
        return False
    timestamp_s = int(t)
    if abs((time.time() if now_s is None else now_s) - timestamp_s) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp_s).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))


class WebhookSink(Sink):
    """POST each alert as its own JSON webhook to --url; 2xx means delivered."""

    name = "webhook"
    max_batch = 1
    requires = ("hmac_secret",)

    def send(self, events: Sequence[Alert]) -> Delivery:  # type: ignore[override]
        [alert] = events
        body = alert.body()
        headers = {"Content-Type": "application/json",
                   SIGNATURE_HEADER: sign(self.config.hmac_secret or "", body, int(time.time())),
                   "Kong-Credits-Alert-Id": alert.event_id}
        check_status(self.post(self.base_url, content=body, headers=headers))
        return Delivery(delivered=frozenset({alert.event_id}))
