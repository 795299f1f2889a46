"""The admin API's wallet endpoints against a real `kong-credits admin` and real Redis."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator

import httpx
import pytest
from admin_server import ADMIN_TOKEN, AdminProcess, run_admin

from kong_credits import wallets
from kong_credits.engine import AuthorizeRequest, Engine
from kong_credits.keys import wallet_indexes

pytestmark = pytest.mark.timeout(60)
_ids = itertools.count()


@pytest.fixture(scope="module")
def admin(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminProcess]:
    with run_admin(redis_url, tmp_path_factory.mktemp("admin")) as process:
        yield process


@pytest.fixture
def api(admin: AdminProcess, r) -> Iterator[httpx.Client]:
    """An admin client on an empty Redis."""
    with httpx.Client(base_url=admin.url, timeout=10,
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        yield client


def charge(r, wallet: str, cost: int) -> None:
    decision = Engine(r).authorize(AuthorizeRequest(f"req-{next(_ids)}", wallet, "c1", cost))
    assert decision.status == 200, decision


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


class TestReadingWallets:
    def test_an_unknown_wallet_is_200_with_balance_0(self, api):
        response = api.get("/v1/wallets/nobody")
        assert response.status_code == 200
        assert response.json()["balance"] == 0 and response.json()["grants"] == []

    def test_the_wallet_document_is_the_clis(self, api, r):
        wallets.grant(r, "acme", 500, grant_id="pi_1")
        charge(r, "acme", 120)
        body = api.get("/v1/wallets/acme").json()
        cli = json.loads(json.dumps(wallets.balance(r, "acme").to_json()))
        for moving in ("projected_empty_at", "seconds_to_empty"):  # they follow the clock
            body.pop(moving), cli.pop(moving)
        assert body == cli
        assert body["balance"] == 380 and body["grants"][0]["id"] == "pi_1"

    def test_a_member_wallet_by_path_or_with_an_encoded_slash(self, api, r):
        wallets.grant(r, "team/alice", 7)
        wallets.grant(r, "team/ledger", 9)  # a member whose name is a sub-resource
        assert api.get("/v1/wallets/team/alice").json()["balance"] == 7
        assert api.get("/v1/wallets/team%2Falice").json()["balance"] == 7
        assert api.get("/v1/wallets/team%2Fledger").json()["balance"] == 9
        assert api.get("/v1/wallets/team%2Fledger/ledger").json()[0]["amount"] == 9
        assert isinstance(api.get("/v1/wallets/team/ledger").json(), list)  # team's ledger

    @pytest.mark.parametrize("path", ["/v1/wallets/%20acme", "/v1/wallets/a%0Ab",
                                      "/v1/wallets/a//b", "/v1/wallets/a%00b",
                                      "/v1/wallets/" + "x" * 201])
    def test_a_bad_wallet_name_is_422_naming_wallet(self, api, path):
        body = assert_problem(api.get(path), 422)
        assert body["errors"][0]["field"] == "wallet"

    def test_ledger_newest_first_with_limit(self, api, r):
        wallets.grant(r, "acme", 100, grant_id="g1")
        charge(r, "acme", 10)
        charge(r, "acme", 20)
        entries = api.get("/v1/wallets/acme/ledger", params={"limit": 2}).json()
        assert [(e["type"], e["amount"]) for e in entries] == [("charge", -20), ("charge", -10)]
        assert assert_problem(api.get("/v1/wallets/acme/ledger", params={"limit": 0}),
                              422)["errors"][0]["field"] == "limit"

    def test_alerts_of_this_wallet_only_newest_first(self, api, r):
        wallets.grant(r, "acme", 100)
        wallets.grant(r, "other", 100)
        charge(r, "other", 95)
        charge(r, "acme", 60)
        charge(r, "acme", 30)
        alerts = api.get("/v1/wallets/acme/alerts").json()
        assert [a["data"]["threshold_pct"] for a in alerts] == [90, 75, 50]
        assert {a["wallet"] for a in alerts} == {"acme"}
        assert api.get("/v1/wallets/acme/alerts", params={"limit": 1}).json() == alerts[:1]

    def test_grants_listed_in_burn_order(self, api, r):
        wallets.grant(r, "acme", 5, grant_id="late", priority=200)
        wallets.grant(r, "acme", 5, grant_id="early", priority=1)
        grants = api.get("/v1/wallets/acme/grants").json()
        assert [g["id"] for g in grants] == ["early", "late"]
        assert grants[0]["balance"] == 10


class TestBudget:
    def test_get_then_patch_then_remove_a_cap(self, api, r):
        assert api.get("/v1/wallets/acme/budget").json() == {
            "wallet": "acme", "daily_cap": None, "monthly_cap": None, "soft": False,
            "member_daily_cap": None, "member_monthly_cap": None,
            "alert_thresholds": [50, 75, 90, 100], "low_balance": None}
        changed = api.patch("/v1/wallets/acme/budget",
                            json={"daily_cap": 1000, "soft": True, "alert_thresholds": [80, 20]})
        assert changed.status_code == 200
        assert changed.json()["daily_cap"] == 1000 and changed.json()["soft"] is True
        assert changed.json()["alert_thresholds"] == [20, 80]
        assert wallets.set_budget(r, "acme").daily_cap == 1000  # the engine's own record
        removed = api.patch("/v1/wallets/acme/budget", json={"daily_cap": None}).json()
        assert removed["daily_cap"] is None and removed["soft"] is True
        low = api.patch("/v1/wallets/acme/budget", json={"low_balance": 250}).json()
        assert low["low_balance"] == 250 and api.get("/v1/wallets/acme/budget").json()[
            "low_balance"] == 250
        assert api.patch("/v1/wallets/acme/budget",
                         json={"low_balance": None}).json()["low_balance"] is None

    @pytest.mark.parametrize(("body", "field"), [
        ({"daily_cap": 0}, "daily_cap"), ({"daily_cap": "10"}, "daily_cap"),
        ({"monthly_cap": 10**16}, "monthly_cap"), ({"alert_thresholds": [0]}, "alert_thresholds.0"),
        ({"alert_thresholds": []}, "alert_thresholds"), ({"soft": "yes"}, "soft"),
        ({"member_daily_cap": 5}, "member_daily_cap"), ({"dayly_cap": 5}, "dayly_cap"),
    ])
    def test_bad_budget_is_422_naming_the_field_and_changes_nothing(self, api, r, body, field):
        problem = assert_problem(api.patch("/v1/wallets/acme/budget", json=body), 422)
        assert problem["errors"][0]["field"] == field, problem
        assert wallets.set_budget(r, "acme") == wallets.Budget()


class TestPlans:
    def test_put_get_delete_a_plan_and_its_first_period_is_granted_once(self, api, r):
        assert api.get("/v1/wallets/acme/plan").json()["plan"] is None
        made = api.put("/v1/wallets/acme/plan",
                       json={"allowance": 1000, "every": "month", "rollover_max": 200})
        assert made.status_code == 200, made.text
        assert made.json()["plan"]["allowance"] == 1000
        shown = api.get("/v1/wallets/acme/plan").json()
        assert shown["period"]["allowance"] == 1000  # this read materialised the period
        assert api.get("/v1/wallets/acme").json()["balance"] == 1000
        assert api.get("/v1/wallets/acme").json()["balance"] == 1000  # once a period
        changed = api.put("/v1/wallets/acme/plan", json={"overage": "allow",
                                                         "overage_max": 50}).json()
        assert changed["overage"]["mode"] == "allow" and changed["plan"]["allowance"] == 1000
        stopped = api.delete("/v1/wallets/acme/plan")
        assert stopped.status_code == 200 and stopped.json()["plan"] is None
        assert api.get("/v1/wallets/acme").json()["balance"] == 1000  # made grants stay

    @pytest.mark.parametrize(("body", "field"), [
        ({"allowance": 10}, "every"), ({"every": "month"}, "allowance"),
        ({"allowance": 0, "every": "day"}, "allowance"),
        ({"allowance": 10, "every": "year"}, "every"),
        ({"allowance": 10, "every": "day", "anchor": "2027-01-01T00:00:00"}, "anchor"),
        ({"allowance": 10, "every": "day", "overage_max": 5}, "overage_max"),
        ({"allowance": 10, "every": "day", "overage": "allow"}, "overage_max"),
        ({"allowance": None, "every": "day"}, "allowance"),
    ])
    def test_a_bad_plan_is_422_naming_the_field_and_sets_nothing(self, api, r, body, field):
        problem = assert_problem(api.put("/v1/wallets/acme/plan", json=body), 422)
        assert problem["errors"][0]["field"] == field, problem
        assert api.get("/v1/wallets/acme/plan").json()["plan"] is None


class TestGrants:
    def test_a_grant_is_201_and_shows_in_the_balance(self, api, r):
        response = api.post("/v1/wallets/acme/grants",
                            json={"amount": 250, "priority": 5,
                                  "expires_at": "2030-01-01T00:00:00Z"})
        assert response.status_code == 201, response.text
        grant = response.json()
        assert grant["amount"] == grant["remaining"] == 250 and grant["status"] == "live"
        assert grant["expires_at"] == "2030-01-01T00:00:00Z" and grant["balance"] == 250
        assert wallets.balance(r, "acme").grants[0].id == grant["id"] == grant["grant_id"]

    def test_same_idempotency_key_returns_the_original_with_200(self, api, r):
        headers = {"Idempotency-Key": "signup-42"}
        first = api.post("/v1/wallets/acme/grants", json={"amount": 100}, headers=headers)
        again = api.post("/v1/wallets/acme/grants", json={"amount": 100}, headers=headers)
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["id"] == first.json()["id"]
        assert wallets.balance(r, "acme").balance == 100

    def test_same_idempotency_key_with_another_body_is_409(self, api, r):
        headers = {"Idempotency-Key": "signup-43"}
        api.post("/v1/wallets/acme/grants", json={"amount": 100}, headers=headers)
        for body in ({"amount": 101}, {"amount": 100, "priority": 1},
                     {"amount": 100, "grant_id": "other"}):
            assert_problem(api.post("/v1/wallets/acme/grants", json=body, headers=headers),
                           409)
        assert wallets.balance(r, "acme").balance == 100

    def test_same_grant_id_is_200_and_with_another_body_409(self, api, r):
        body = {"amount": 40, "grant_id": "pi_3NxYz"}
        assert api.post("/v1/wallets/acme/grants", json=body).status_code == 201
        assert api.post("/v1/wallets/acme/grants", json=body).status_code == 200
        assert_problem(api.post("/v1/wallets/acme/grants",
                                json={**body, "amount": 41}), 409)
        assert wallets.balance(r, "acme").balance == 40

    def test_a_key_refused_for_bad_input_stays_usable(self, api, r):
        headers = {"Idempotency-Key": "k-refused"}
        refused = api.post("/v1/wallets/acme/grants", headers=headers,
                           json={"amount": 5, "expires_at": "2001-01-01T00:00:00Z"})
        assert assert_problem(refused, 422)["errors"][0]["field"] == "expires_at"
        assert api.post("/v1/wallets/acme/grants", json={"amount": 5},
                        headers=headers).status_code == 201

    @pytest.mark.parametrize("retry_key", ["header", "grant_id"])
    def test_16_concurrent_identical_grants_make_one_grant(self, admin, r, retry_key):
        body = {"amount": 1000}
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        if retry_key == "header":
            headers["Idempotency-Key"] = "burst-1"
        else:
            body["grant_id"] = "burst-1"

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=admin.url, timeout=20,
                                         limits=httpx.Limits(max_connections=16)) as client:
                return await asyncio.gather(*(
                    client.post("/v1/wallets/racy/grants", json=body, headers=headers)
                    for _ in range(16)))

        responses = asyncio.run(burst())
        statuses = sorted(resp.status_code for resp in responses)
        assert statuses == [200] * 15 + [201], [resp.text for resp in responses]
        assert len({resp.json()["id"] for resp in responses}) == 1
        view = wallets.balance(r, "racy")
        assert view.balance == 1000 and len(view.grants) == 1

    @pytest.mark.parametrize(("body", "field"), [
        ({}, "amount"), ({"amount": 0}, "amount"), ({"amount": -5}, "amount"),
        ({"amount": "10"}, "amount"), ({"amount": 1.5}, "amount"), ({"amount": True}, "amount"),
        ({"amount": 10**15 + 1}, "amount"), ({"amount": 2**64}, "amount"),
        ({"amount": 1, "grant_id": "a;b"}, "grant_id"), ({"amount": 1, "grant_id": ""}, "grant_id"),
        ({"amount": 1, "grant_id": "é"}, "grant_id"), ({"amount": 1, "priority": -1}, "priority"),
        ({"amount": 1, "expires_at": "2030-01-01T00:00:00"}, "expires_at"),
        ({"amount": 1, "expires_at": "tomorrow"}, "expires_at"),
        ({"amount": 1, "expires_at": "10000-01-01T00:00:00Z"}, "expires_at"),
        ({"amount": 1, "wallet": "other"}, "wallet"),
    ])
    def test_bad_grant_is_422_naming_the_field_and_writes_nothing(self, api, r, body, field):
        problem = assert_problem(api.post("/v1/wallets/acme/grants", json=body), 422)
        assert problem["errors"][0]["field"] == field, problem
        assert field in problem["detail"]
        assert wallets.balance(r, "acme").grants == []

    def test_a_bad_idempotency_key_is_422_naming_the_header(self, api):
        response = api.post("/v1/wallets/acme/grants", json={"amount": 1},
                            headers={"Idempotency-Key": "x" * 256})
        assert assert_problem(response, 422)["errors"][0]["field"] == "Idempotency-Key"

    def test_a_balance_over_the_maximum_is_422_and_grants_nothing(self, api, r):
        for _ in range(4):
            wallets.grant(r, "full", 10**15)
        body = assert_problem(api.post("/v1/wallets/full/grants", json={"amount": 10**15}), 422)
        assert "exceed" in body["detail"]
        assert wallets.balance(r, "full").balance == 4 * 10**15

    @pytest.mark.parametrize("content", [b"amount=5", b"[]", b"null", b'{"amount": 1e3}',
                                         b'{"amount": ' + b"9" * 5000 + b"}", b"",
                                         b'{"amount": NaN}'])
    def test_a_body_that_is_not_a_grant_is_422(self, api, r, content):
        response = api.post("/v1/wallets/acme/grants", content=content,
                            headers={"Content-Type": "application/json"})
        assert_problem(response, 422)
        assert wallets.balance(r, "acme").grants == []


class TestVoids:
    def test_void_takes_what_is_left_and_the_spent_part_stays_spent(self, api, r):
        wallets.grant(r, "acme", 100, grant_id="pi_9")
        charge(r, "acme", 30)
        response = api.delete("/v1/wallets/acme/grants/pi_9")
        assert response.status_code == 200, response.text
        assert response.json() == {"wallet": "acme", "grant_id": "pi_9", "voided": 70,
                                   "shortfall": 30, "remaining": 0, "balance": 0,
                                   "replayed": False}
        assert api.get("/v1/wallets/acme/ledger").json()[0]["type"] == "void"
        again = api.delete("/v1/wallets/acme/grants/pi_9").json()
        assert (again["voided"], again["balance"]) == (0, 0)
        assert api.get("/v1/wallets/acme/grants").json()[0]["voided"] == 100

    def test_a_partial_void_with_a_key_happens_once(self, api, r):
        wallets.grant(r, "acme", 100, grant_id="inv:2026-11/42")
        path = "/v1/wallets/acme/grants/inv:2026-11%2F42"
        headers = {"Idempotency-Key": "refund 1 of order 42"}
        first = api.delete(path, params={"amount": 25, "reason": "refund"}, headers=headers)
        second = api.delete(path, params={"amount": 25, "reason": "refund"}, headers=headers)
        assert first.json()["voided"] == 25 and first.json()["replayed"] is False
        assert second.json()["replayed"] is True
        assert wallets.balance(r, "acme").balance == 75
        unencoded = api.delete("/v1/wallets/acme/grants/inv:2026-11/42",
                               params={"amount": 5})
        assert unencoded.json()["balance"] == 70

    def test_an_unknown_grant_is_404_and_bad_input_422(self, api, r):
        wallets.grant(r, "acme", 10, grant_id="g1")
        assert_problem(api.delete("/v1/wallets/acme/grants/nope"), 404)
        assert_problem(api.delete("/v1/wallets/other/grants/g1"), 404)
        for path, params, field in (("/v1/wallets/acme/grants/a;b", {}, "grant_id"),
                                    ("/v1/wallets/acme/grants/g1", {"amount": 0}, "amount"),
                                    ("/v1/wallets/acme/grants/g1", {"reason": ""}, "reason")):
            body = assert_problem(api.delete(path, params=params), 422)
            assert body["errors"][0]["field"] == field
        assert wallets.balance(r, "acme").balance == 10


class TestListingWallets:
    def test_every_granted_wallet_once_across_pages_in_name_order(self, api, r):
        names = [f"w{i:03d}" for i in range(57)] + ["team", "team/bob", "zed", "ünïcode"]
        for name in names:
            wallets.grant(r, name, 10)
        wallets.set_budget(r, "budget-only", daily_cap=5)
        seen, cursor = [], None
        while True:
            params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
            page = api.get("/v1/wallets", params=params).json()
            seen += [w["wallet"] for w in page["wallets"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted([*names, "budget-only"])

    def test_prefix_limits_the_list_and_rows_carry_the_figures(self, api, r):
        for name in ("team", "team/alice", "team/bob", "teamster", "other"):
            wallets.grant(r, name, 100)
        charge(r, "team/alice", 30)
        rows = api.get("/v1/wallets", params={"prefix": "team/"}).json()["wallets"]
        assert [w["wallet"] for w in rows] == ["team/alice", "team/bob"]
        alice = rows[0]
        assert alice["balance"] == 70 and alice["parent"] == "team"
        assert alice["spent_today"] == 30 and alice["burn_rate_per_minute"] == 30
        assert alice["refused_credits"] == 0 and alice["live_grants"] == 1

    def test_a_cursor_it_did_not_make_is_422(self, api):
        problem = assert_problem(api.get("/v1/wallets", params={"cursor": "%%%"}), 422)
        assert problem["errors"][0]["field"] == "cursor"


def test_wallets_from_before_the_index_are_listed_after_a_restart(redis_url, r, tmp_path):
    wallets.grant(r, "old", 10)
    wallets.grant(r, "ünï/cödé", 10)
    wallets.set_budget(r, "capped", daily_cap=3)
    r.delete(*wallet_indexes())  # as a deployment older than the index left them
    r.set("kc:{s1}:w:not-a-wallet:state:x", "1")
    with run_admin(redis_url, tmp_path) as admin:
        assert "wallet index built: 3 existing wallet(s)" in admin.output()
        rows = httpx.get(f"{admin.url}/v1/wallets", timeout=10,
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()["wallets"]
    assert [w["wallet"] for w in rows] == ["capped", "old", "ünï/cödé"]
