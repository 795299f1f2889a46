"""The examples in config/ stay in sync, and the spec prices requests as kong/kong.yml does.

config/demo-api.openapi.yaml describes the demo API (kong/kong.yml) with its prices;
config/demo-api.kong.yml and config/demo-api.kic.yaml are rendered from it. The round trip:
spec -> kong.yml -> the demo's host (real plugin server, real Redis) charges each request
what kong/kong.yml, rendered from config/pricing.yaml, charges.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner
from waits import wait_until

from kong_credits import wallets
from kong_credits.cli import main
from kong_credits.demo import DemoOptions, _stack
from kong_credits.prices import route_prices
from kong_credits.redis_url import redis_client

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
SPEC = CONFIG / "demo-api.openapi.yaml"
KONG_YML = ROOT / "kong" / "kong.yml"
OUTPUTS = [
    ["render-config", "--pricing", str(CONFIG / "pricing.yaml"), "--kong-yml", str(KONG_YML)],
    ["render-config", "--openapi", str(SPEC), "-o", str(CONFIG / "demo-api.kong.yml")],
    ["render-config", "--openapi", str(SPEC), "--format", "kic", "-o",
     str(CONFIG / "demo-api.kic.yaml")],
]


@pytest.mark.parametrize("args", OUTPUTS, ids=["kong.yml", "demo-api.kong.yml", "kic"])
def test_every_rendered_example_is_up_to_date(args):
    result = CliRunner().invoke(main, [*args, "--check"])
    assert result.exit_code == 0, result.output
    assert "is up to date" in result.output


def test_check_fails_on_a_stale_file(tmp_path):
    stale = tmp_path / "demo-api.kic.yaml"
    stale.write_text((CONFIG / "demo-api.kic.yaml").read_text().replace("cost: 20", "cost: 21"))
    result = CliRunner().invoke(main, ["render-config", "--openapi", str(SPEC), "--format",
                                       "kic", "-o", str(stale), "--check"])
    assert result.exit_code == 1
    assert f"{stale} is out of date with {SPEC}" in result.output
    assert "cost: 21" in stale.read_text()  # --check writes nothing
    missing = CliRunner().invoke(main, ["render-config", "--openapi", str(SPEC), "-o",
                                        str(tmp_path / "absent.yml"), "--check"])
    assert missing.exit_code == 1
    no_file = CliRunner().invoke(main, ["render-config", "--openapi", str(SPEC), "--check"])
    assert no_file.exit_code == 2 and "give it with -o" in no_file.output


def _by_path(rows: list[dict]) -> dict[str, tuple]:
    return {r["path"]: (r["plugin"], r["cost"], r["cost_header"], r["max_cost"],
                        r["rate_limit"], r["mode"]) for r in rows}


def test_the_spec_lists_the_prices_of_kong_yml():
    from_spec = route_prices(CONFIG / "demo-api.kong.yml")
    assert {r["method"] for r in from_spec} == {"GET"}
    assert _by_path(from_spec) == _by_path(route_prices(KONG_YML))


def _with_consumers(converted: Path, tmp_path: Path) -> Path:
    """The converted config plus kong/kong.yml's consumers and key-auth, as one would merge
    them with `deck file merge`."""
    demo = yaml.safe_load(KONG_YML.read_text())
    merged = yaml.safe_load(converted.read_text())
    merged["consumers"] = demo["consumers"]
    merged["plugins"] = [p for p in demo["plugins"] if not p["name"].startswith("credits")]
    path = tmp_path / "merged.yml"
    path.write_text(yaml.safe_dump(merged))
    return path


async def _charges(redis_url: str, kong_yml: Path) -> list[tuple[int, str | None, int]]:
    """(status, X-Credits-Cost, credits the wallet lost once settled) per demo request."""
    client = redis_client(redis_url)
    wallet = f"acme-{uuid.uuid4().hex[:8]}"
    demo = yaml.safe_load(kong_yml.read_text())
    for consumer in demo["consumers"]:
        if consumer.get("username") == "alice":  # a wallet of its own for this run
            consumer["tags"] = [t for t in consumer.get("tags") or []
                                if not t.startswith("credits-wallet:")]
            consumer["tags"].append(f"credits-wallet:{wallet}")
    kong_yml.write_text(yaml.safe_dump(demo))
    wallets.grant(client, wallet, 1000, grant_id=f"round-trip-{wallet}")
    found = []
    async with _stack(redis_url, DemoOptions(kong_yml)) as base_url, \
            httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        for path, expected_loss in (("/search?q=kong", 1), ("/status", 0),
                                    ("/generate?X-Units-Used=12", 12)):
            before = wallets.balance(client, wallet).balance
            response = await http.get(path, headers={"apikey": "alice-key"})
            # a metered price is settled in the log phase, after the response
            await asyncio.to_thread(wait_until, lambda b=before, e=expected_loss:
                                    wallets.balance(client, wallet).balance == b - e)
            found.append((response.status_code, response.headers.get("x-credits-cost"),
                          before - wallets.balance(client, wallet).balance))
    client.close()
    return found


def test_spec_to_kong_yml_to_the_demo_host_charges_what_kong_yml_charges(redis_url, tmp_path):
    converted = tmp_path / "converted.yml"
    result = CliRunner().invoke(main, ["render-config", "--openapi", str(SPEC), "-o",
                                       str(converted)])
    assert result.exit_code == 0, result.output
    from_spec = asyncio.run(_charges(redis_url, _with_consumers(converted, tmp_path)))
    reference = tmp_path / "kong.yml"
    reference.write_text(KONG_YML.read_text())
    from_kong_yml = asyncio.run(_charges(redis_url, reference))
    assert from_spec == from_kong_yml == [(200, "1", 1), (200, "0", 0), (200, "20", 12)]


def test_a_spec_is_written_to_kong_yml_only_when_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the default kong/kong.yml does not exist
    printed = CliRunner().invoke(main, ["render-config", "--openapi", str(SPEC)])
    assert printed.exit_code == 0
    assert printed.output == (CONFIG / "demo-api.kong.yml").read_text()
    assert list(tmp_path.iterdir()) == []
    named = CliRunner().invoke(main, ["render-config", "--openapi", str(SPEC), "--kong-yml",
                                      "out.yml"])
    assert named.exit_code == 0
    assert (tmp_path / "out.yml").read_text() == (CONFIG / "demo-api.kong.yml").read_text()
