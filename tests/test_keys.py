"""keys.py: every script call stays in one Redis Cluster slot; shards spread over slots."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from kong_credits import keys
from kong_credits.engine import AuthorizeRequest, RateLimit, authorize_call, settle_call

WALLETS = ["acme", "team:платежи", "{braces}", "a" * 200, "w-42", "team/alice", "org/team/bob"]


def slots(names: list[str]) -> set[int]:
    return {key_slot(name.encode()) for name in names}


@pytest.mark.parametrize("wallet", WALLETS)
def test_authorize_keys_share_one_slot(wallet: str) -> None:
    request = AuthorizeRequest("req", wallet, "consumer{x}", 1,
                               limits=(RateLimit(1, 5), RateLimit(86400, 9)))
    call_keys, _ = authorize_call(request)
    assert len(call_keys) == 18  # 16 fixed keys + one per rate limit
    assert len(slots(call_keys)) == 1


@pytest.mark.parametrize("wallet", WALLETS)
def test_settle_and_wallet_keys_share_one_slot(wallet: str) -> None:
    call_keys, _ = settle_call("req", wallet, 3)
    w = keys.WalletKeys(wallet)
    every = [*call_keys, w.grants, w.request("r"), w.rate_limit("c", 60)]
    assert len(slots(every)) == 1


def test_event_and_alert_shards_use_distinct_slots() -> None:
    assert len(slots(keys.event_streams())) == keys.SHARDS
    assert slots(keys.event_streams()) == slots(keys.alert_streams())
    assert slots(keys.event_streams()) == slots([keys.holds_index(s) for s in range(keys.SHARDS)])


def test_a_wallet_family_shares_its_roots_slot() -> None:
    family = ["team", "team/alice", "team/alice/laptop"]
    every = [k for w in family for k in (*keys.WalletKeys(w).wallet_keys,
                                         keys.WalletKeys(w).throttle)]
    assert len(slots(every)) == 1
    assert keys.parent_of("team/alice/laptop") == "team/alice"
    assert keys.parent_of("team") is None


def test_wallets_spread_over_shards() -> None:
    used = {keys.shard_of(f"wallet-{i}") for i in range(1000)}
    assert used == set(range(keys.SHARDS))
