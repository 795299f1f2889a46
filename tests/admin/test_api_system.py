"""Health, metrics, the OpenAPI document, offline docs, and when the process refuses to start."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from admin_server import ADMIN_TOKEN, AdminProcess, admin_argv, run_admin
from openapi_spec_validator import validate

from kong_credits.redis_server import EmbeddedRedis

pytestmark = pytest.mark.timeout(60)
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def admin(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AdminProcess]:
    with run_admin(redis_url, tmp_path_factory.mktemp("admin-system")) as process:
        yield process


@pytest.fixture
def client(admin: AdminProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=admin.url, timeout=10) as http:
        yield http


def test_healthz_is_open_and_names_what_it_checked(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json()["redis"] == "ok"


def test_healthz_is_503_when_redis_is_gone(tmp_path):
    with EmbeddedRedis() as server, run_admin(server.url, tmp_path) as admin:
        server.stop()
        response = httpx.get(f"{admin.url}/healthz", timeout=10)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert "redis" in response.json()["detail"]
        down = httpx.get(f"{admin.url}/v1/wallets/acme", headers=AUTH, timeout=20)
        assert down.status_code == 503 and down.json()["title"] == "Service Unavailable"


def test_metrics_count_requests_by_endpoint_template_and_status(client, r):
    client.get("/v1/wallets/acme", headers=AUTH)
    client.get("/v1/wallets/%20bad", headers=AUTH)
    client.get("/v1/wallets/acme")
    text = client.get("/metrics", headers=AUTH).text
    def count(status: str) -> float:
        match = re.search(r'kong_credits_admin_requests_total\{endpoint="/v1/wallets/'
                          r'\{wallet:wallet\}",method="GET",status="' + status + r'"\} (\S+)',
                          text)
        assert match, text
        return float(match.group(1))

    assert count("200") >= 1 and count("422") >= 1 and count("401") >= 1
    assert "kong_credits_admin_request_duration_seconds_bucket" in text
    assert "process_resident_memory_bytes" in text
    assert "acme" not in text  # wallet names never become labels


def test_openapi_is_valid_3_1_and_documents_every_endpoint_and_error(client):
    response = client.get("/openapi.json")  # open: a browser loads it before it has a token
    assert response.status_code == 200
    spec = response.json()
    validate(spec)
    assert spec["openapi"].startswith("3.1")
    paths = spec["paths"]
    for path, method in [("/v1/wallets", "get"), ("/v1/wallets/{wallet}", "get"),
                         ("/v1/wallets/{wallet}/grants", "post"),
                         ("/v1/wallets/{wallet}/grants", "get"),
                         ("/v1/wallets/{wallet}/ledger", "get"),
                         ("/v1/wallets/{wallet}/alerts", "get"),
                         ("/v1/wallets/{wallet}/budget", "get"),
                         ("/v1/wallets/{wallet}/budget", "patch"),
                         ("/v1/wallets/{wallet}/tokens", "post"),
                         ("/v1/wallets/{wallet}/tokens/{token_id}", "delete"),
                         ("/v1/wallets/{wallet}/grants/{grant_id}", "delete"),
                         ("/v1/webhooks/stripe", "post"), ("/v1/prices", "get"),
                         ("/v1/wallets/{wallet}/plan", "get"),
                         ("/v1/wallets/{wallet}/plan", "put"),
                         ("/v1/wallets/{wallet}/plan", "delete"),
                         ("/healthz", "get"), ("/metrics", "get")]:
        operation = paths[path][method]
        errors = {code: r for code, r in operation["responses"].items() if code[0] in "45"}
        assert errors, (path, method)
        for answer in errors.values():
            assert answer["content"] == {"application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"}}}
    grant = paths["/v1/wallets/{wallet}/grants"]["post"]
    assert {"200", "201", "401", "403", "409", "422"} <= set(grant["responses"])
    assert "Idempotency-Key" in [p["name"] for p in grant["parameters"]]
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert {"title", "status", "detail"} <= set(spec["components"]["schemas"]["Problem"]
                                                ["properties"])


def test_docs_and_their_assets_are_served_by_the_process(client):
    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/") for s in sources), sources  # no CDN
    assert "http://" not in page.text and "https://" not in page.text
    for source in sources:
        asset = client.get(source)
        assert asset.status_code == 200 and len(asset.content) > 100, source


def test_an_unknown_path_and_a_wrong_method_are_problems(client):
    for response, status in ((client.get("/v1/nothing", headers=AUTH), 404),
                             (client.put("/v1/wallets/acme/budget", headers=AUTH), 405)):
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"


def run_command(*args: str, env_token: str | None = None) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if k != "KONG_CREDITS_ADMIN_TOKEN"}
    if env_token is not None:
        env["KONG_CREDITS_ADMIN_TOKEN"] = env_token
    return subprocess.run(admin_argv(*args), env=env, capture_output=True, text=True,
                          timeout=30, cwd=Path(__file__).parents[2])


@pytest.mark.parametrize(("args", "token", "says"), [
    ((), None, "KONG_CREDITS_ADMIN_TOKEN"),
    ((), " , ", "KONG_CREDITS_ADMIN_TOKEN"),
    (("--listen", "0.0.0.0:0", "--insecure-local"), None, "loopback"),
    (("--listen", "10.1.2.3:8400", "--insecure-local"), "t", "loopback"),
    (("--listen", "nonsense"), "t", "--listen"),
    (("--listen", "127.0.0.1:70000"), "t", "--listen"),
    (("--kong-yml", "/nonexistent/kong.yml"), "t", "--kong-yml"),
    (("--kong-yml", "tests/admin/test_api_system.py"), "t", "--kong-yml"),
    (("--redis-url", "redis://:hunter2@host:notaport/0"), "t", "--redis-url"),
    (("--store", "mysql://u:hunter2@db/usage"), "t", "--store"),
])
def test_refuses_to_start_with_exit_2(args, token, says):
    done = run_command(*args, env_token=token)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
    assert "hunter2" not in done.stderr


def test_a_redis_it_cannot_reach_is_exit_1_without_the_password():
    done = run_command("--redis-url", "redis://:hunter2@127.0.0.1:1/0", env_token="t")
    assert done.returncode == 1 and "Redis unavailable" in done.stderr
    assert "hunter2" not in done.stderr


def test_insecure_local_serves_loopback_without_a_token(redis_url, tmp_path, r):
    with run_admin(redis_url, tmp_path, "--insecure-local", tokens=None) as admin:
        response = httpx.get(f"{admin.url}/v1/wallets/acme", timeout=10)
        assert response.status_code == 200 and response.json()["balance"] == 0


def test_docker_compose_serves_the_admin_on_its_own_port():
    import yaml

    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    admin = compose["services"]["admin"]
    assert admin["entrypoint"] == ["kong-credits"]
    assert admin["command"][:3] == ["admin", "--listen", "0.0.0.0:8400"]
    assert admin["ports"] == ["8400:8400"]
    assert "KONG_CREDITS_ADMIN_TOKEN" in admin["environment"]
    assert admin["environment"]["KONG_CREDITS_REDIS_URL"] == \
        compose["services"]["forwarder"]["environment"]["KONG_CREDITS_REDIS_URL"]
    other_ports = [p for name, s in compose["services"].items() if name != "admin"
                   for p in s.get("ports", [])]
    assert all(not p.startswith("8400:") for p in other_ports)


def test_stripe_webhooks_arrive_on_the_admin_process_by_signature_not_token(redis_url, r,
                                                                             tmp_path):
    import hashlib
    import hmac
    import json
    import time

    secret = "whsec_admin_test"
    payload = json.dumps({"id": "evt_1", "object": "event", "type": "customer.created",
                          "created": int(time.time()), "livemode": False,
                          "data": {"object": {"id": "cus_1", "object": "customer"}}}).encode()
    stamp = int(time.time())
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    with run_admin(redis_url, tmp_path,
                   env={"KONG_CREDITS_STRIPE_WEBHOOK_SECRET": secret}) as admin:
        url = f"{admin.url}/v1/webhooks/stripe"
        signed = httpx.post(url, content=payload, timeout=10,
                            headers={"Stripe-Signature": f"t={stamp},v1={mac}"})
        assert signed.status_code == 200, signed.text
        assert signed.json()["reason"] == "unhandled_type"
        forged = httpx.post(url, content=payload, timeout=10,
                            headers={"Stripe-Signature": f"t={stamp},v1={'0' * 64}",
                                     **AUTH})
        assert forged.status_code == 400
        assert forged.headers["content-type"] == "application/problem+json"


def test_prices_from_kong_yml_for_any_token_and_without_it_a_404(redis_url, r, tmp_path):
    from kong_credits.prices import route_prices

    kong_yml = Path(__file__).parents[2] / "kong" / "kong.yml"
    with run_admin(redis_url, tmp_path, "--kong-yml", str(kong_yml)) as admin:
        prices = httpx.get(f"{admin.url}/v1/prices", headers=AUTH, timeout=10)
        assert prices.status_code == 200
        assert prices.json() == route_prices(kong_yml)
        assert {"route", "cost", "rate_limit"} <= set(prices.json()[0])
        assert "redis_url" not in prices.text
        token = httpx.post(f"{admin.url}/v1/wallets/acme/tokens", headers=AUTH,
                           timeout=10).json()["token"]
        as_customer = httpx.get(f"{admin.url}/v1/prices", timeout=10,
                                headers={"Authorization": f"Bearer {token}"})
        assert as_customer.json() == prices.json()
        assert httpx.get(f"{admin.url}/v1/prices", timeout=10).status_code == 401
    with run_admin(redis_url, tmp_path) as admin:
        missing = httpx.get(f"{admin.url}/v1/prices", headers=AUTH, timeout=10)
        assert missing.status_code == 404 and "--kong-yml" in missing.json()["detail"]
