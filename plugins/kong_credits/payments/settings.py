"""Stripe settings from the environment: webhook secrets, API key, API base."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import InvalidInput

__all__ = ["API_BASE_ENV", "API_KEY_ENV", "DEFAULT_API_BASE", "WEBHOOK_SECRET_ENV",
           "StripeSettings"]

WEBHOOK_SECRET_ENV = "KONG_CREDITS_STRIPE_WEBHOOK_SECRET"
API_KEY_ENV = "KONG_CREDITS_STRIPE_API_KEY"
API_BASE_ENV = "KONG_CREDITS_STRIPE_API_BASE"
DEFAULT_API_BASE = "https://api.stripe.com"


@dataclass(frozen=True, slots=True)
class StripeSettings:
    """`webhook_secrets`: every secret a signature may be made with (several during a
    rotation). `api_key` reads line items and prices; it is needed only for purchases whose
    credits are not in the session's or subscription's metadata. Secrets stay out of repr."""

    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    api_key: str | None = field(default=None, repr=False)
    api_base: str = DEFAULT_API_BASE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StripeSettings:
        """Read the settings; `$KONG_CREDITS_STRIPE_WEBHOOK_SECRET` is comma-separated."""
        env = os.environ if env is None else env
        secrets = tuple(s.strip() for s in env.get(WEBHOOK_SECRET_ENV, "").split(",")
                        if s.strip())
        base = env.get(API_BASE_ENV, "").strip() or DEFAULT_API_BASE
        if not base.startswith(("http://", "https://")):
            raise InvalidInput(f"{API_BASE_ENV} must be an http(s) URL, not {base!r}")
        return cls(webhook_secrets=secrets, api_key=env.get(API_KEY_ENV, "").strip() or None,
                   api_base=base.rstrip("/"))
