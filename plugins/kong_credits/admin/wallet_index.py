"""Paging through the wallets: the per-shard indexes grant.lua keeps, merged in name order.

Each shard has a ZSET of its wallet names, all scored 0, so ZRANGE BYLEX gives names in byte
order (which for UTF-8 is code point order, Python's string order). A page asks every shard
for its next `limit + 1` names after the cursor, in one pipeline, and keeps the first `limit`
of the merge: one round trip, whatever the number of shards. The cursor is the last name of
the page, base64url-encoded so any name travels safely in a query string.
"""

from __future__ import annotations

import base64
import binascii
import heapq

import redis

from ..errors import InvalidInput
from ..keys import (
    STATE_KEY_PATTERN,
    WALLET_INDEX_BUILT_KEY,
    WalletKeys,
    wallet_indexes,
    wallet_of_state_key,
)

__all__ = ["decode_cursor", "encode_cursor", "index_existing_wallets", "page_of_wallets"]


def encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput("cursor is not one this API returned") from None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def page_of_wallets(client: redis.Redis, *, prefix: str = "", limit: int = 100,
                    after: str | None = None) -> tuple[list[str], str | None]:
    """Up to `limit` wallet names starting with `prefix`, after `after`, in name order, and
    the cursor of the next page (None on the last one)."""
    start = b"[" + prefix.encode()
    if after is not None and after.encode() >= prefix.encode():
        start = b"(" + after.encode()
    # No UTF-8 text holds the byte 0xff: every name starting with prefix sorts below this.
    end = b"(" + prefix.encode() + b"\xff" if prefix else b"+"
    pipe = client.pipeline(transaction=False)
    for index in wallet_indexes():
        pipe.zrangebylex(index, start, end, start=0, num=limit + 1)
    names = list(heapq.merge(*([_text(n) for n in found] for found in pipe.execute())))
    if len(names) > limit:
        return names[:limit], encode_cursor(names[limit - 1])
    return names, None


def index_existing_wallets(client: redis.Redis, batch: int = 1000) -> int | None:
    """Once per deployment, add the wallets written before the index existed: SCAN for
    their state keys (every node of a cluster), ZADD in batches. Returns how many were
    found, or None when it was done before. Safe beside live traffic: a grant indexes its
    wallet by itself, and ZADD of a name already there changes nothing."""
    if client.exists(WALLET_INDEX_BUILT_KEY):
        return None
    found = 0
    pipe = client.pipeline(transaction=False)
    for key in client.scan_iter(match=STATE_KEY_PATTERN, count=batch):
        name = wallet_of_state_key(_text(key))
        if name is None:
            continue
        pipe.zadd(WalletKeys(name).index, {name: 0})
        found += 1
        if found % batch == 0:
            pipe.execute()
    pipe.execute()
    client.set(WALLET_INDEX_BUILT_KEY, "1")
    return found
