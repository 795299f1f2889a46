"""`/v1/usage` and `/v1/usage/events` against a real usage store (SQLite; the store tests run
the same queries on PostgreSQL) filled through its own ingest, and `kong-credits admin`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from admin_server import ADMIN_TOKEN, AdminProcess, run_admin

from kong_credits.host.declarative import load_declarative
from kong_credits.rated_event import RatedEvent
from kong_credits.usage import open_store, usage_events, usage_report

pytestmark = pytest.mark.timeout(90)
KONG_YML = Path(__file__).resolve().parents[2] / "kong" / "kong.yml"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ROUTES = {route.name: route.id for route in load_declarative(KONG_YML).routes}
NOW_MS = int(time.time() * 1000)
SINCE = "3h"


def _events() -> list[RatedEvent]:
    spend = [("acme", "search", "GET", 3), ("acme", "search", "GET", 3),
             ("acme", "generate", "POST", 10), ("team/alice", "search", "GET", 2),
             ("team/bob", "generate", "POST", 7), ("other", "search", "GET", 1)]
    return [RatedEvent(event_id=f"u-{n}", wallet=wallet, cost=cost,
                       timestamp_ms=NOW_MS - 3_600_000 + n * 1000, consumer="c1",
                       route=ROUTES[route], method=method, path=f"/{route}")
            for n, (wallet, route, method, cost) in enumerate(spend)]


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('usage') / 'usage.db'}"
    with open_store(url, create=True) as store:
        store.ingest(_events())
    return url


@pytest.fixture(scope="module")
def admin(redis_url: str, store_url: str, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[AdminProcess]:
    with run_admin(redis_url, tmp_path_factory.mktemp("admin-usage"), "--store", store_url,
                   "--kong-yml", str(KONG_YML)) as process:
        yield process


@pytest.fixture
def api(admin: AdminProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=admin.url, timeout=10, headers=AUTH) as client:
        yield client


def test_usage_is_the_clis_document_with_route_names(api, store_url):
    response = api.get("/v1/usage", params={"wallet": "acme", "by": "route,method",
                                            "bucket": "day", "since": SINCE})
    assert response.status_code == 200, response.text
    body = response.json()
    with open_store(store_url) as store:
        expected = usage_report(store, wallet="acme", by="route,method", bucket="day",
                                since=SINCE, until=body["until"])
    assert [{k: v for k, v in row.items() if not k.endswith("_name")} for row in body["rows"]] \
        == expected["rows"]
    by_name = {row["route_name"]: (row["requests"], row["credits"]) for row in body["rows"]}
    assert by_name == {"search": (2, 6), "generate": (1, 10)}


def test_members_side_by_side_and_everyone_for_the_admin(api):
    team = api.get("/v1/usage", params={"wallet": "team", "members": "true", "by": "wallet",
                                        "bucket": "day", "since": SINCE}).json()
    assert {r["wallet"]: r["credits"] for r in team["rows"]} == {"team/alice": 2,
                                                                  "team/bob": 7}
    everyone = api.get("/v1/usage", params={"bucket": "day", "since": SINCE}).json()
    assert sum(r["credits"] for r in everyone["rows"]) == 26


def test_events_newest_first_with_names(api, store_url):
    events = api.get("/v1/usage/events", params={"wallet": "acme", "since": SINCE}).json()
    with open_store(store_url) as store:
        expected = usage_events(store, wallet="acme", since=SINCE)
    assert [e["id"] for e in events] == [e["id"] for e in expected] == ["u-2", "u-1", "u-0"]
    assert events[0]["route_name"] == "generate" and events[0]["cost"] == 10
    only = api.get("/v1/usage/events", params={"wallet": "acme", "since": SINCE,
                                               "route": ROUTES["search"]}).json()
    assert [e["id"] for e in only] == ["u-1", "u-0"]


def test_a_wallet_token_sees_its_family_only(api, r):
    token = api.post("/v1/wallets/team/tokens").json()["token"]
    customer = {"Authorization": f"Bearer {token}"}
    own = api.get("/v1/usage", params={"by": "wallet", "members": "true", "bucket": "day",
                                       "since": SINCE}, headers=customer).json()
    assert {r["wallet"] for r in own["rows"]} == {"team/alice", "team/bob"}
    assert api.get("/v1/usage/events", params={"wallet": "team/bob", "since": SINCE},
                   headers=customer).json()[0]["cost"] == 7
    for path in ("/v1/usage", "/v1/usage/events"):
        refused = api.get(path, params={"wallet": "acme"}, headers=customer)
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert api.get(path, params={"wallet": "acme"},
                       headers={"Authorization": "Bearer x"}).status_code == 401


@pytest.mark.parametrize(("path", "params", "field"), [
    ("/v1/usage", {"by": "colour"}, "by"), ("/v1/usage", {"by": "route,route"}, "by"),
    ("/v1/usage", {"bucket": "year"}, "bucket"), ("/v1/usage", {"since": "yesterday"}, "since"),
    ("/v1/usage", {"since": "2026-12-01T00:00:00"}, "since"),
    ("/v1/usage", {"since": "1h", "until": "2h"}, "until"),
    ("/v1/usage", {"members": "true"}, "members"), ("/v1/usage", {"wallet": " x"}, "wallet"),
    ("/v1/usage", {"limit": 0}, "limit"), ("/v1/usage/events", {}, "wallet"),
    ("/v1/usage/events", {"wallet": "acme", "limit": 10**6}, "limit"),
])
def test_bad_query_is_422_naming_the_field(api, path, params, field):
    response = api.get(path, params=params)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field


def test_health_names_the_store(api):
    assert api.get("/healthz").json() == {"status": "ok", "redis": "ok", "store": "ok"}


def test_a_store_that_is_not_there_is_503_and_unhealthy(redis_url, tmp_path):
    missing = f"sqlite:///{tmp_path / 'nowhere.db'}"
    with run_admin(redis_url, tmp_path, "--store", missing, ready="/docs") as admin:
        usage = httpx.get(f"{admin.url}/v1/usage", headers=AUTH, timeout=10)
        assert usage.status_code == 503 and "no usage store" in usage.json()["detail"]
        assert httpx.get(f"{admin.url}/healthz", timeout=10).status_code == 503
        with open_store(missing, create=True) as store:  # the forwarder makes it later
            store.ingest(_events()[:1])
        assert httpx.get(f"{admin.url}/v1/usage", headers=AUTH, timeout=10,
                         params={"since": SINCE}).json()["rows"][0]["credits"] == 3


def test_without_a_store_there_are_no_usage_endpoints(redis_url, tmp_path):
    with run_admin(redis_url, tmp_path, env={"KONG_CREDITS_USAGE_URL": ""}) as admin:
        assert httpx.get(f"{admin.url}/v1/usage", headers=AUTH, timeout=10).status_code == 404
        assert "/v1/usage" not in httpx.get(f"{admin.url}/openapi.json", timeout=10).json()[
            "paths"]


def test_openapi_documents_the_usage_endpoints_and_stays_valid(api):
    from openapi_spec_validator import validate

    spec = api.get("/openapi.json").json()
    validate(spec)
    for path in ("/v1/usage", "/v1/usage/events"):
        responses = spec["paths"][path]["get"]["responses"]
        assert {"401", "403", "422", "503"} <= set(responses)
        assert "application/problem+json" in responses["422"]["content"]
