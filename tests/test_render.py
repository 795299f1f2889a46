"""render.py: prices live in config/pricing.yaml; kong/kong.yml is generated from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from kong_credits.cli import main
from kong_credits.errors import InvalidInput
from kong_credits.render import render_file
from kong_credits.schema import parse_config

ROOT = Path(__file__).resolve().parents[1]
PRICING, KONG_YML = ROOT / "config" / "pricing.yaml", ROOT / "kong" / "kong.yml"


def test_committed_kong_yml_is_rendered_from_the_committed_pricing():
    assert render_file(PRICING, KONG_YML) == KONG_YML.read_text()


def test_every_credits_plugin_in_kong_yml_passes_its_plugin_schema():
    declarative = yaml.safe_load(KONG_YML.read_text())
    routes = {name: {p["route"] for p in declarative["plugins"] if p["name"] == name}
              for name in ("credits", "credits-metered")}
    assert routes == {"credits": {"search", "status"}, "credits-metered": {"generate", "export"}}
    for plugin in declarative["plugins"]:
        if plugin["name"].startswith("credits"):
            parse_config(plugin["config"], metered=plugin["name"] == "credits-metered")


def test_a_price_from_an_upstream_header_renders_credits_metered(tmp_path):
    text = render_file(write(tmp_path, """
routes: {search: {cost: 2, cost_header: X-Units}, status: {cost: 0}}
"""), KONG_YML)
    names = {p["route"]: p["name"] for p in yaml.safe_load(text)["plugins"] if "route" in p}
    assert (names["search"], names["status"]) == ("credits-metered", "credits")
    with pytest.raises(InvalidInput, match="route search: invalid credits-metered config"):
        render_file(write(tmp_path, "routes: {search: {cost: 0, cost_header: X-Units}}"),
                    KONG_YML)


def test_a_price_record_renders_credits_metered_and_plans_are_not_rendered(tmp_path):
    text = render_file(write(tmp_path, """
routes: {search: {cost: 2, price: {per_kb_response: 1}}}
plans: {acme: {allowance: 10, every: day}}
"""), KONG_YML)
    rendered = yaml.safe_load(text)
    assert [p["name"] for p in rendered["plugins"] if p.get("route") == "search"] == [
        "credits-metered"]
    assert "plans" not in rendered


def write(tmp_path: Path, pricing: str) -> Path:
    path = tmp_path / "pricing.yaml"
    path.write_text(pricing)
    return path


@pytest.mark.parametrize(("pricing", "error"), [
    ("routes: {search: {cost: 1.5}}", "cost: expected an integer"),
    ("routes: {search: {cost: -3}}", "cost: value should be between"),
    ("routes: {nowhere: {cost: 1}}", "routes that kong.yml does not have: ['nowhere']"),
    ("defaults: {mode: loud}\nroutes: {search: {cost: 1}}", "expected one of: enforce, shadow"),
    ("prices: {}\nroutes: {}", "unknown top-level keys ['prices']"),
    ("- just a list", "expected a mapping"),
])
def test_bad_pricing_is_a_clear_error(tmp_path, pricing, error):
    with pytest.raises(InvalidInput, match=None) as raised:
        render_file(write(tmp_path, pricing), KONG_YML)
    assert error in str(raised.value)


def test_route_overrides_defaults(tmp_path):
    text = render_file(write(tmp_path, """
defaults: {cost: 5, rate_limit: {second: 1}}
routes: {search: {}, status: {cost: 0, rate_limit: {day: 9}}}
"""), KONG_YML)
    configs = {p["route"]: p["config"] for p in yaml.safe_load(text)["plugins"]
               if p["name"] == "credits"}
    assert configs == {"search": {"cost": 5, "rate_limit": {"second": 1}},
                       "status": {"cost": 0, "rate_limit": {"day": 9}}}


def test_cli_check_and_write(tmp_path):
    out = tmp_path / "kong.yml"
    runner = CliRunner()
    args = ["render-config", "--pricing", str(PRICING), "--kong-yml", str(KONG_YML)]
    assert runner.invoke(main, [*args, "--check"]).exit_code == 0
    assert runner.invoke(main, [*args, "-o", str(out)]).exit_code == 0
    assert out.read_text() == KONG_YML.read_text()
    bad = write(tmp_path, "routes: {search: {cost: 0.5}}")
    result = runner.invoke(main, ["render-config", "--pricing", str(bad), "--kong-yml",
                                  str(KONG_YML), "-o", "-"])
    assert result.exit_code == 2 and "expected an integer" in result.output
