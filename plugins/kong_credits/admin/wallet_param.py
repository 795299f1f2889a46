"""The `{wallet}` of a URL: any wallet name, `/` included, checked against the caller's scope.

Member wallets are named `team/alice`, so `/v1/wallets/team/alice/ledger` is the ledger of
`team/alice` (routes take `{wallet:wallet}`, which matches any text, `/` and control
characters included, so that a bad name is a 422 naming it, not a 404; sub-resources are
matched first). A wallet whose last
segment is itself `ledger`, `budget`, ... is reached by percent-encoding its slashes:
`/v1/wallets/team%2Fledger`. Servers decode `%2F` before routing, so `EncodedSlashes` routes
on the raw path instead, turning each encoded slash into a character no wallet name holds.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import unquote

from fastapi import Depends, Path
from starlette.convertors import Convertor, register_url_convertor
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import InvalidInput
from ..names import parse_wallet
from .auth import Principal, authenticate, require_admin
from .problems import ProblemError, invalid

__all__ = ["EncodedSlashes", "ReadableWallet", "WritableWallet", "decode_slashes"]

_ENCODED_SLASH = "\x00"
"""Stands for `%2F` while routing: never in a wallet name, which must be printable."""
_DECODED_NUL = "\x01"
"""What a `%00` of the URL becomes instead: just as unprintable, so still refused."""
_PERCENT_2F = re.compile("%2[fF]")


class _AnyText(Convertor[str]):
    regex = "[\\s\\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("wallet", _AnyText())


class EncodedSlashes:
    """ASGI middleware: route `%2F` as part of a path segment, not as a separator."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw and b"%" in raw:
            parts = _PERCENT_2F.split(raw.decode("latin-1"))
            path = _ENCODED_SLASH.join(
                unquote(part).replace(_ENCODED_SLASH, _DECODED_NUL) for part in parts)
            scope = dict(scope, path=path)
        await self.app(scope, receive, send)


def decode_slashes(segment: str) -> str:
    """A path parameter as sent: its `%2F`s back to `/`."""
    return segment.replace(_ENCODED_SLASH, "/")


def _wallet_name(wallet: str) -> str:
    try:
        return parse_wallet(decode_slashes(wallet))
    except InvalidInput as exc:
        raise invalid("wallet", str(exc), "path") from None


_WalletPath = Annotated[str, Path(description="The wallet's name; `/` separates a member "
                                               "from its parent (may be sent as `%2F`).")]


def _readable(wallet: _WalletPath,
              principal: Annotated[Principal, Depends(authenticate)]) -> str:
    name = _wallet_name(wallet)
    if not principal.can_read(name):
        raise ProblemError(403, "this token reads only its own wallet and its members")
    return name


def _writable(wallet: _WalletPath, _: Annotated[Principal, Depends(require_admin)]) -> str:
    return _wallet_name(wallet)


ReadableWallet = Annotated[str, Depends(_readable)]
"""A wallet the caller may read (403 otherwise), its name checked (422 otherwise)."""
WritableWallet = Annotated[str, Depends(_writable)]
"""A wallet the caller may change: admin tokens only."""
