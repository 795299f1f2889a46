"""What an admin process is started with: one frozen value, built by the command or a test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..schema import DEFAULT_REDIS_URL

__all__ = ["ADMIN_TOKEN_ENV", "AdminSettings", "parse_admin_tokens"]

ADMIN_TOKEN_ENV = "KONG_CREDITS_ADMIN_TOKEN"


def parse_admin_tokens(text: str | None) -> tuple[str, ...]:
    """`$KONG_CREDITS_ADMIN_TOKEN`: one or more tokens separated by commas (spaces around
    them ignored, empty ones dropped)."""
    return tuple(token.strip() for token in (text or "").split(",") if token.strip())


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """`admin_tokens` empty with `insecure_local`: every request counts as the admin's (the
    command allows that only on a loopback address). Repr never shows the tokens."""

    redis_url: str = DEFAULT_REDIS_URL
    admin_tokens: tuple[str, ...] = ()
    store_url: str | None = None
    kong_yml: Path | None = None
    insecure_local: bool = False

    def __repr__(self) -> str:
        return (f"AdminSettings(redis_url=<set>, admin_tokens=<{len(self.admin_tokens)}>, "
                f"store_url={'<set>' if self.store_url else None}, kong_yml={self.kong_yml}, "
                f"insecure_local={self.insecure_local})")
