"""The admin API on Redis Cluster: wallets spread over every master, read and listed alike."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from admin_server import ADMIN_TOKEN, run_admin

from kong_credits import wallets
from kong_credits.keys import WalletKeys

pytestmark = pytest.mark.timeout(120)
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_grants_list_tokens_and_idempotency_across_the_masters(cluster, tmp_path):
    names = [f"c{i:02d}" for i in range(40)] + ["team", "team/alice"]
    assert len({cluster.owner_of(WalletKeys(n).state) for n in names}) == 3  # every master
    with run_admin(cluster.url, tmp_path) as admin, \
            httpx.Client(base_url=admin.url, headers=AUTH, timeout=20) as api:
        for name in names:
            response = api.post(f"/v1/wallets/{name}/grants", json={"amount": 10})
            assert response.status_code == 201, response.text
        listed, cursor = [], None
        while True:
            page = api.get("/v1/wallets", params={"limit": 7, **({"cursor": cursor}
                                                                  if cursor else {})}).json()
            listed += [(w["wallet"], w["balance"]) for w in page["wallets"]]
            if (cursor := page["next_cursor"]) is None:
                break
        assert listed == [(n, 10) for n in sorted(names)]

        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=admin.url, headers={
                    **AUTH, "Idempotency-Key": "k"}, timeout=20) as client:
                answers = await asyncio.gather(*(client.post(
                    "/v1/wallets/c07/grants", json={"amount": 5}) for _ in range(16)))
                return sorted(a.status_code for a in answers)

        assert asyncio.run(burst()) == [200] * 15 + [201]
        token = api.post("/v1/wallets/team/tokens").json()["token"]
        member = httpx.get(f"{admin.url}/v1/wallets/team/alice/ledger", timeout=10,
                           headers={"Authorization": f"Bearer {token}"})
        assert member.status_code == 200 and member.json()[0]["amount"] == 10
        assert api.patch("/v1/wallets/c01/budget", json={"daily_cap": 9}).json()["daily_cap"] == 9
    client = cluster.client()
    assert wallets.balance(client, "c07").balance == 15
