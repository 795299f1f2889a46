"""openapi.py: prices read from a spec (document, path, operation, shorthand) and checked."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from kong_credits.cli import main
from kong_credits.errors import InvalidInput
from kong_credits.prices import declarative_prices
from kong_credits.pricing.openapi import SHORTHAND, expand_prices
from kong_credits.pricing.openapi2kong import convert


def spec(text: str) -> dict:
    return yaml.safe_load("openapi: 3.0.3\ninfo: {title: Shop, version: '1'}\n" + text)


def prices(text: str) -> dict[tuple[str, str], tuple[str | None, dict]]:
    """(METHOD, path) -> (plugin, config) as Kong would run them on each route."""
    rows = declarative_prices(convert(expand_prices(spec(text))))
    return {(r["method"], r["path"]): (r["plugin"], r["config"]) for r in rows}


INHERITANCE = """
x-kong-plugin-credits:
  config: {cost: 1, rate_limit: {minute: 60}}
paths:
  /free-ride:
    get: {responses: {}}
  /path-priced:
    x-kong-plugin-credits: {config: {cost: 5}}
    get: {responses: {}}
    post:
      x-kong-plugin-credits: {config: {cost: 7, mode: shadow}}
      responses: {}
    put:
      x-credits-cost: 6
      responses: {}
  /shorthand:
    get:
      x-credits-cost: 3
      responses: {}
"""


def test_the_nearest_level_prices_an_operation_whole_as_in_deck():
    found = prices(INHERITANCE)
    assert found == {
        ("GET", "/free-ride"): ("credits", {"cost": 1, "rate_limit": {"minute": 60}}),  # doc
        ("GET", "/path-priced"): ("credits", {"cost": 5}),       # the path's, whole
        ("POST", "/path-priced"): ("credits", {"cost": 7, "mode": "shadow"}),  # the operation's
        ("PUT", "/path-priced"): ("credits", {"cost": 6}),       # shorthand over the path's
        ("GET", "/shorthand"): ("credits", {"cost": 3, "rate_limit": {"minute": 60}}),  # doc's
    }


def test_the_shorthand_becomes_a_full_block_where_it_was():
    expanded = expand_prices(spec(INHERITANCE))
    operation = expanded["paths"]["/shorthand"]["get"]
    assert list(operation) == ["x-kong-plugin-credits", "responses"]
    assert operation["x-kong-plugin-credits"] == {
        "config": {"cost": 3, "rate_limit": {"minute": 60}}}
    assert SHORTHAND not in yaml.safe_dump(expanded)
    assert expand_prices(expanded) == expanded  # nothing left to expand
    # decK, given the expanded spec, prices every route as we do
    assert convert(expanded) == convert(expand_prices(spec(INHERITANCE)))


def test_the_shorthand_keeps_a_metered_plugin_metered():
    found = prices("""
paths:
  /generate:
    x-kong-plugin-credits-metered:
      config: {cost: 20, cost_header: X-Units-Used, max_cost: 400}
    post: {x-credits-cost: 50, responses: {}}
  /alone:
    get: {x-credits-cost: 2, responses: {}}
""")
    assert found[("POST", "/generate")] == (
        "credits-metered", {"cost": 50, "cost_header": "X-Units-Used", "max_cost": 400})
    assert found[("GET", "/alone")] == ("credits", {"cost": 2})


def test_an_operation_without_any_price_is_listed_as_not_priced():
    assert prices("paths: {/open: {get: {responses: {}}}}") == {("GET", "/open"): (None, {})}


@pytest.mark.parametrize(("operation", "error"), [
    ("x-credits-cost: '5'", "GET /search: config.cost: expected an integer"),
    ("x-credits-cost: 1.5", "GET /search: config.cost: expected an integer"),
    ("x-credits-cost: 2.0", "GET /search: config.cost: expected an integer"),
    ("x-credits-cost: true", "GET /search: config.cost: expected an integer"),
    ("x-credits-cost: -1", "GET /search: config.cost: value should be between 0 and"),
    ("x-credits-cost: 1000000000000001", "GET /search: config.cost: value should be between"),
    ("x-kong-plugin-credits: {config: {cost: 1, rate_limit: {minute: 1.5}}}",
     "GET /search: config.rate_limit.minute: expected an integer"),
    ("x-kong-plugin-credits: {config: {cost: 1, cost_header: X-Units}}",
     "GET /search: config.cost_header: unknown field"),
    ("x-kong-plugin-credits: {config: {cost: 1}, colour: red}",
     "GET /search: colour: unknown field"),
    ("x-kong-plugin-credits: {config: [1]}", "GET /search: config: expected a record"),
    ("x-kong-plugin-credits: {config: {cost: 1}, consumer: vip}",
     "GET /search: consumer: a price for one consumer is a deal"),
    ("x-kong-plugin-credits-metered: {config: {cost: 0, cost_header: X-Units}}",
     "GET /search: config.cost: value should be between 1 and"),
    ("x-kong-plugin-credits: {config: {redis_wait_replicas: 1, redis_wait_timeout_ms: 300}}",
     "GET /search: config: redis_wait_timeout_ms (300) must be less than redis_timeout_ms"),
    ("{x-credits-cost: 1, x-kong-plugin-credits: {config: {cost: 2}}}",
     "GET /search: x-credits-cost and x-kong-plugin-credits both price this operation"),
])
def test_a_bad_price_names_the_operation(operation, error):
    text = "paths:\n  /search:\n    get:\n"
    if operation.startswith("{"):
        text += "".join(f"      {k}: {v}\n" for k, v in yaml.safe_load(operation).items())
    else:
        text += f"      {operation}\n"
    with pytest.raises(InvalidInput) as raised:
        expand_prices(spec(text))
    assert error in str(raised.value)


def test_an_inherited_bad_price_names_each_operation_and_where_it_came_from():
    with pytest.raises(InvalidInput) as raised:
        expand_prices(spec("""
x-kong-plugin-credits: {config: {cost: many}}
paths:
  /a: {get: {responses: {}}, post: {responses: {}}}
  /b:
    x-kong-plugin-credits: {config: {mode: loud}}
    get: {responses: {}}
"""))
    assert str(raised.value).splitlines() == [
        "GET /a: config.cost: expected an integer (x-kong-plugin-credits of the document)",
        "POST /a: config.cost: expected an integer (x-kong-plugin-credits of the document)",
        "GET /b: config.mode: expected one of: enforce, shadow "
        "(x-kong-plugin-credits of the path)",
    ]


def test_two_credits_plugins_on_one_route_are_refused():
    """decK would put both on the route: each would charge every request."""
    with pytest.raises(InvalidInput, match="GET /generate: both credits \\(from the document\\) "
                                           "and credits-metered \\(from the operation\\)"):
        expand_prices(spec("""
x-kong-plugin-credits: {config: {cost: 1}}
paths:
  /generate:
    get:
      x-kong-plugin-credits-metered: {config: {cost: 20, cost_header: X-Units}}
      responses: {}
"""))


def test_the_shorthand_belongs_on_operations():
    with pytest.raises(InvalidInput) as raised:
        expand_prices(spec("x-credits-cost: 1\npaths:\n  /a:\n    x-credits-cost: 2\n"
                           "    get: {responses: {}}\n"))
    lines = str(raised.value).splitlines()
    assert lines[0].startswith("the document: x-credits-cost belongs on an operation")
    assert lines[1].startswith("/a: x-credits-cost belongs on an operation")


def test_cli_reports_every_error_and_exits_2(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec("""
paths:
  /search: {get: {x-credits-cost: "1", responses: {}}}
  /status: {get: {x-credits-cost: 0.5, responses: {}}}
""")))
    for args in (["render-config", "--openapi", str(path)],
                 ["render-config", "--openapi", str(path), "--format", "kic"],
                 ["render-config", "--openapi", str(path), "--format", "openapi"],
                 ["prices", "--openapi", str(path)]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert "GET /search: config.cost: expected an integer" in result.output
        assert "GET /status: config.cost: expected an integer" in result.output


def test_cli_refuses_two_sources_of_prices(tmp_path):
    result = CliRunner().invoke(main, ["render-config", "--openapi", "a.yaml",
                                       "--pricing", "b.yaml"])
    assert result.exit_code == 2 and "not both" in result.output
    result = CliRunner().invoke(main, ["render-config", "--format", "openapi"])
    assert result.exit_code == 2 and "give it with --openapi" in result.output
    missing = CliRunner().invoke(main, ["render-config", "--openapi", str(tmp_path / "no")])
    assert missing.exit_code == 2 and "cannot read OpenAPI spec" in missing.output
