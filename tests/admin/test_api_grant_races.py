"""Racing retries: many clients, many keys, mixed bodies at once; one grant per key, ever."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Iterator

import httpx
import pytest
from admin_server import ADMIN_TOKEN, AdminProcess, run_admin

from kong_credits import wallets

pytestmark = [pytest.mark.timeout(120), pytest.mark.integration]


@pytest.fixture(scope="module")
def admin(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminProcess]:
    with run_admin(redis_url, tmp_path_factory.mktemp("admin-races")) as process:
        yield process


@pytest.mark.parametrize("keyed_by", ["header", "grant_id"])
def test_one_grant_per_key_and_the_balance_is_their_sum(admin, r, keyed_by):
    keys = [f"order-{n}" for n in range(12)]
    sends = []
    for key in keys:
        for copy in range(8):
            amount = 1000 + keys.index(key) if copy < 6 else 5  # two copies differ: 409s
            sends.append((key, amount))
    random.Random(16).shuffle(sends)

    async def send(client: httpx.AsyncClient, key: str, amount: int) -> httpx.Response:
        if keyed_by == "header":
            return await client.post("/v1/wallets/shop/grants", json={"amount": amount},
                                     headers={"Idempotency-Key": key})
        return await client.post("/v1/wallets/shop/grants",
                                 json={"amount": amount, "grant_id": key})

    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=admin.url, timeout=60,
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                     limits=httpx.Limits(max_connections=48)) as client:
            return await asyncio.gather(*(send(client, k, a) for k, a in sends))

    answers = asyncio.run(all_at_once())
    by_key: dict[str, list[tuple[int, int, dict]]] = defaultdict(list)
    for (key, amount), answer in zip(sends, answers, strict=True):
        assert answer.status_code in (200, 201, 409), answer.text
        by_key[key].append((answer.status_code, amount, answer.json()))
    created_total = 0
    for key, results in by_key.items():
        created = [body for status, _, body in results if status == 201]
        assert len(created) == 1, (key, results)
        granted = created[0]["amount"]
        created_total += granted
        for status, amount, body in results:
            if status == 200:
                assert amount == granted and body["id"] == created[0]["id"]
            elif status == 409:
                assert amount != granted and body["status"] == 409
    view = wallets.balance(r, "shop")
    assert view.balance == created_total == view.granted
    assert len(view.grants) == len(keys)
    ledger = wallets.ledger(r, "shop", 1000)
    assert sorted(e["amount"] for e in ledger) == sorted(g.amount for g in view.grants)
