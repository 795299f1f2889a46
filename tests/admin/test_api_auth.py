"""Who may do what: admin tokens, wallet tokens, revocation, and what never reaches the log."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from admin_server import ADMIN_TOKEN, SECOND_ADMIN_TOKEN, AdminProcess, run_admin

from kong_credits import wallets
from kong_credits.keys import WALLET_TOKENS_KEY

pytestmark = pytest.mark.timeout(60)

READS = ["/v1/wallets/{w}", "/v1/wallets/{w}/ledger", "/v1/wallets/{w}/alerts",
         "/v1/wallets/{w}/budget", "/v1/wallets/{w}/grants", "/v1/wallets/{w}/plan"]
WRITES = [("POST", "/v1/wallets/{w}/grants", {"amount": 5}),
          ("PATCH", "/v1/wallets/{w}/budget", {"daily_cap": 5}),
          ("POST", "/v1/wallets/{w}/tokens", None),
          ("GET", "/v1/wallets/{w}/tokens", None),
          ("DELETE", "/v1/wallets/{w}/tokens/abc", None),
          ("DELETE", "/v1/wallets/{w}/grants/g1", None),
          ("PUT", "/v1/wallets/{w}/plan", {"allowance": 5, "every": "day"}),
          ("DELETE", "/v1/wallets/{w}/plan", None)]


@pytest.fixture(scope="module")
def admin(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminProcess]:
    with run_admin(redis_url, tmp_path_factory.mktemp("admin-auth")) as process:
        yield process


@pytest.fixture
def client(admin: AdminProcess, r) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=admin.url, timeout=10) as http:
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_token(client: httpx.Client, wallet: str) -> dict:
    response = client.post(f"/v1/wallets/{wallet}/tokens", headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 201, response.text
    return response.json()


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


@pytest.mark.parametrize("headers", [{}, bearer("nope"), {"Authorization": "Bearer"},
                                     {"Authorization": ADMIN_TOKEN},
                                     {"Authorization": f"Basic {ADMIN_TOKEN}"},
                                     bearer(ADMIN_TOKEN + "x"), bearer(ADMIN_TOKEN[:-1]),
                                     bearer("kcw_abc_def")])
@pytest.mark.parametrize("path", ["/v1/wallets", "/v1/wallets/acme", "/metrics"])
def test_no_token_or_a_bad_one_is_401(client, headers, path):
    response = client.get(path, headers=headers)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_401_comes_before_input_is_validated(client):
    assert_problem(client.post("/v1/wallets/%20bad/grants", json={"amount": "x"}), 401)


def test_every_admin_token_of_the_list_works(client):
    for token in (ADMIN_TOKEN, SECOND_ADMIN_TOKEN):
        assert client.get("/v1/wallets/acme", headers=bearer(token)).status_code == 200


class TestWalletTokens:
    def test_created_once_stored_hashed(self, client, r):
        made = new_token(client, "team")
        assert made["token"].startswith("kcw_") and made["id"] and made["wallet"] == "team"
        stored = r.hget(WALLET_TOKENS_KEY, made["id"])
        assert made["token"] not in stored and made["token"].split("_", 2)[2] not in stored
        listed = client.get("/v1/wallets/team/tokens", headers=bearer(ADMIN_TOKEN)).json()
        assert listed == [{"id": made["id"], "wallet": "team",
                           "created_at": made["created_at"]}]

    @pytest.mark.parametrize("path", READS)
    def test_reads_its_wallet_and_its_members(self, client, r, path):
        wallets.grant(r, "team/alice", 3)
        token = new_token(client, "team")["token"]
        for wallet in ("team", "team/alice", "team%2Falice", "team/alice/bot"):
            response = client.get(path.format(w=wallet), headers=bearer(token))
            assert response.status_code == 200, (wallet, response.text)

    @pytest.mark.parametrize("path", READS)
    @pytest.mark.parametrize("wallet", ["other", "tea", "teamster", "tea%2Fm", "team.x",
                                        "xteam/alice", "Team"])
    def test_out_of_scope_is_403(self, client, path, wallet):
        token = new_token(client, "team")["token"]
        assert_problem(client.get(path.format(w=wallet), headers=bearer(token)), 403)

    def test_a_member_token_cannot_read_its_parent(self, client):
        token = new_token(client, "team/alice")["token"]
        assert_problem(client.get("/v1/wallets/team", headers=bearer(token)), 403)
        assert client.get("/v1/wallets/team/alice", headers=bearer(token)).status_code == 200

    @pytest.mark.parametrize(("method", "path", "body"), WRITES)
    def test_never_writes_even_its_own_wallet(self, client, r, method, path, body):
        wallets.grant(r, "team", 5, grant_id="g1")
        token = new_token(client, "team")["token"]
        response = client.request(method, path.format(w="team"), json=body,
                                  headers=bearer(token))
        assert_problem(response, 403)
        assert wallets.balance(r, "team").balance == 5
        assert wallets.set_budget(r, "team").daily_cap is None
        assert r.hlen(WALLET_TOKENS_KEY) == 1

    def test_lists_only_its_members_and_metrics_are_admin_only(self, client, r):
        for name in ("team", "team/alice", "team/alice/bot", "team/bob", "teamster", "zed"):
            wallets.grant(r, name, 1)
        token = new_token(client, "team")["token"]
        rows = client.get("/v1/wallets", params={"prefix": "team/"},
                          headers=bearer(token)).json()["wallets"]
        assert [w["wallet"] for w in rows] == ["team/alice", "team/alice/bot", "team/bob"]
        for prefix in ("", "team", "teams/", "zed"):
            assert_problem(client.get("/v1/wallets", params={"prefix": prefix},
                                      headers=bearer(token)), 403)
        assert_problem(client.get("/metrics", headers=bearer(token)), 403)

    def test_revoked_is_401_at_once_and_only_its_own_wallet_can_revoke_it(self, client):
        made = new_token(client, "team")
        admin = bearer(ADMIN_TOKEN)
        assert client.get("/v1/wallets/team", headers=bearer(made["token"])).status_code == 200
        assert_problem(client.delete(f"/v1/wallets/other/tokens/{made['id']}",
                                     headers=admin), 404)
        assert client.get("/v1/wallets/team", headers=bearer(made["token"])).status_code == 200
        assert client.delete(f"/v1/wallets/team/tokens/{made['id']}",
                             headers=admin).status_code == 204
        assert_problem(client.get("/v1/wallets/team", headers=bearer(made["token"])), 401)
        assert_problem(client.delete(f"/v1/wallets/team/tokens/{made['id']}",
                                     headers=admin), 404)

    def test_a_token_with_a_changed_secret_is_401(self, client):
        made = new_token(client, "team")
        forged = made["token"][:-2] + ("AA" if not made["token"].endswith("AA") else "BB")
        assert_problem(client.get("/v1/wallets/team", headers=bearer(forged)), 401)
        other = new_token(client, "other")
        spliced = f"kcw_{made['id']}_{other['token'].split('_', 2)[2]}"
        assert_problem(client.get("/v1/wallets/team", headers=bearer(spliced)), 401)


def test_no_token_ever_reaches_the_log_or_an_answer(client, admin):
    made = new_token(client, "team")
    secret = made["token"]
    for token in (ADMIN_TOKEN, secret, "guess-" + ADMIN_TOKEN):
        for path in ("/v1/wallets/team", "/v1/wallets/%20x", "/v1/nothing", "/metrics"):
            response = client.get(path, headers=bearer(token))
            assert token not in response.text
    client.delete(f"/v1/wallets/team/tokens/{made['id']}", headers=bearer(ADMIN_TOKEN))
    assert secret not in client.get("/v1/wallets/team", headers=bearer(secret)).text
    log = admin.output()
    assert "GET /v1/wallets/team" in log  # the access log is on
    for text in (ADMIN_TOKEN, SECOND_ADMIN_TOKEN, secret, secret.split("_", 2)[2]):
        assert text not in log
