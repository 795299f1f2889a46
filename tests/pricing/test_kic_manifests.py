"""kic.py: KongPlugins attached by annotation or ExtensionRef, valid for the KongPlugin CRD."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from k8s_schemas import HTTPROUTE, INGRESS, KONG_PLUGIN, kong_plugin_rule_errors

from kong_credits.cli import main
from kong_credits.pricing.kic import kic_manifests, kong_plugin_name
from kong_credits.pricing.openapi import expand_prices
from kong_credits.pricing.openapi2kong import convert
from kong_credits.schema import parse_config

ROOT = Path(__file__).resolve().parents[2]
PRICING, KONG_YML = ROOT / "config" / "pricing.yaml", ROOT / "kong" / "kong.yml"
SCHEMAS = {"KongPlugin": KONG_PLUGIN, "HTTPRoute": HTTPROUTE, "Ingress": INGRESS}

SHOP = yaml.safe_load("""
openapi: 3.0.3
info: {title: Shop, version: "1"}
servers: [{url: "https://shop.example:8443/api"}]
paths:
  /items:
    x-kong-plugin-credits: {$ref: "#/components/x-kong/list-price"}
    get: {operationId: list, responses: {}}
    post: {operationId: create, x-credits-cost: 10, responses: {}}
  /items/{id}:
    x-kong-plugin-credits: {$ref: "#/components/x-kong/list-price"}
    get: {operationId: one, responses: {}}
    delete: {operationId: drop, x-credits-cost: 10, responses: {}}
  /report:
    post:
      operationId: report
      x-kong-plugin-credits-metered: {config: {cost: 50, cost_header: X-Units}}
      responses: {}
components:
  x-kong:
    list-price: {config: {cost: 1, rate_limit: {second: 5}}}
""")


def validate(manifests: list[dict]) -> None:
    """Every manifest passes its schema; names are unique per kind; references resolve."""
    names: dict[str, set[str]] = {}
    for manifest in manifests:
        jsonschema.validate(manifest, SCHEMAS[manifest["kind"]])
        kind_names = names.setdefault(manifest["kind"], set())
        assert manifest["metadata"]["name"] not in kind_names
        kind_names.add(manifest["metadata"]["name"])
        if manifest["kind"] == "KongPlugin":
            assert kong_plugin_rule_errors(manifest) == []
            parse_config(manifest["config"], metered=manifest["plugin"] == "credits-metered")
    for name in attached_plugins(manifests).values():
        assert name in names["KongPlugin"]


def attached_plugins(manifests: list[dict]) -> dict[str, str]:
    """What each route (Ingress name, or HTTPRoute rule's first match) is priced by."""
    found = {}
    for manifest in manifests:
        if manifest["kind"] == "Ingress":
            annotations = manifest["metadata"]["annotations"]
            if "konghq.com/plugins" in annotations:
                found[manifest["metadata"]["name"]] = annotations["konghq.com/plugins"]
        elif manifest["kind"] == "HTTPRoute":
            for rule in manifest["spec"]["rules"]:
                match = rule["matches"][0]
                key = f"{match.get('method', '*')} {match['path']['value']}"
                for item in rule.get("filters", []):
                    found[key] = item["extensionRef"]["name"]
    return found


@pytest.mark.parametrize("resource", ["ingress", "httproute"])
def test_one_kong_plugin_per_distinct_price(resource):
    manifests = kic_manifests(convert(expand_prices(SHOP)), resource=resource)
    validate(manifests)
    plugins = [m for m in manifests if m["kind"] == "KongPlugin"]
    assert sorted((p["plugin"], p["config"]["cost"]) for p in plugins) == [
        ("credits", 1), ("credits", 10), ("credits-metered", 50)]
    attached = attached_plugins(manifests)
    assert len(attached) == 5
    by_cost = {p["metadata"]["name"]: p["config"]["cost"] for p in plugins}
    assert sorted(by_cost[name] for name in attached.values()) == [1, 1, 10, 10, 50]


def test_ingresses_carry_the_route_as_kic_reads_it():
    manifests = kic_manifests(convert(expand_prices(SHOP)), resource="ingress",
                              ingress_class="internal", namespace="shop")
    ingress = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "Ingress"}
    one = ingress["shop-one"]
    assert one["metadata"]["namespace"] == "shop"
    assert one["metadata"]["annotations"] == {
        "konghq.com/strip-path": "false", "konghq.com/methods": "GET",
        "konghq.com/regex-priority": "100",
        "konghq.com/plugins": kong_plugin_name("credits", {"cost": 1, "rate_limit": {
            "second": 5}})}
    assert one["spec"]["ingressClassName"] == "internal"
    (path,) = one["spec"]["rules"][0]["http"]["paths"]
    assert path == {"path": "/~/items/(?<id>[^#?/]+)$", "pathType": "ImplementationSpecific",
                    "backend": {"service": {"name": "shop", "port": {"number": 8443}}}}


def test_httproutes_attach_prices_with_extension_ref_filters():
    manifests = kic_manifests(convert(expand_prices(SHOP)), resource="httproute",
                              gateway="edge")
    (route,) = [m for m in manifests if m["kind"] == "HTTPRoute"]
    assert route["spec"]["parentRefs"] == [{"name": "edge"}]
    rule = route["spec"]["rules"][0]
    assert rule["matches"] == [{"path": {"type": "RegularExpression", "value": "/items$"},
                                "method": "GET"}]
    assert rule["filters"][0]["extensionRef"]["group"] == "configuration.konghq.com"
    assert rule["filters"][0]["extensionRef"]["kind"] == "KongPlugin"
    assert rule["backendRefs"] == [{"name": "shop", "port": 8443}]


def test_more_than_sixteen_routes_split_into_several_httproutes():
    paths = {f"/r{i}": {"get": {"x-credits-cost": i, "responses": {}}} for i in range(40)}
    spec = {"openapi": "3.0.3", "info": {"title": "Many", "version": "1"}, "paths": paths}
    manifests = kic_manifests(convert(expand_prices(spec)), resource="httproute")
    validate(manifests)
    routes = [m for m in manifests if m["kind"] == "HTTPRoute"]
    assert [len(r["spec"]["rules"]) for r in routes] == [16, 16, 8]
    assert len({r["metadata"]["name"] for r in routes}) == 3


def test_pricing_yaml_and_the_demo_spec_render_the_same_kong_plugins():
    cli = CliRunner()
    from_pricing = cli.invoke(main, ["render-config", "--format", "kic", "--pricing",
                                     str(PRICING), "--kong-yml", str(KONG_YML), "-o", "-"])
    from_spec = cli.invoke(main, ["render-config", "--format", "kic", "--openapi",
                                  str(ROOT / "config" / "demo-api.openapi.yaml")])
    assert from_pricing.exit_code == 0 and from_spec.exit_code == 0, from_pricing.output
    plugins = []
    for text in (from_pricing.output, from_spec.output):
        manifests = [m for m in yaml.safe_load_all(text) if m]
        validate(manifests)
        plugins.append([m for m in manifests if m["kind"] == "KongPlugin"])
    assert plugins[0] == plugins[1]
    assert len(plugins[0]) == 4  # one per distinct price: search, status, export, generate


def test_a_kong_plugin_name_is_a_dns_name_that_changes_with_the_price():
    names = {kong_plugin_name("credits", {"cost": c, "mode": m})
             for c in (0, 1, 10**15) for m in ("enforce", "shadow")}
    assert len(names) == 6
    for name in names:
        jsonschema.validate({"name": name}, KONG_PLUGIN["properties"]["metadata"])
    assert kong_plugin_name("credits", {"cost": 1, "mode": "shadow"}) == \
        kong_plugin_name("credits", {"mode": "shadow", "cost": 1})


def test_the_schema_check_catches_what_the_crd_refuses():
    plugin = {"apiVersion": "configuration.konghq.com/v1", "kind": "KongPlugin",
              "metadata": {"name": "Bad_Name"}, "config": {}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(plugin, KONG_PLUGIN)  # no plugin, and a name with _ and capitals
    both = {**plugin, "plugin": "credits", "configFrom": {"secretKeyRef": {"key": "k",
                                                                           "name": "n"}}}
    assert kong_plugin_rule_errors(both) == [
        "Using both config and configFrom fields is not allowed."]


def test_a_namespace_that_kubernetes_would_refuse_exits_2():
    result = CliRunner().invoke(main, ["render-config", "--format", "kic", "--namespace",
                                       "Shop_NS", "-o", "-"])
    assert result.exit_code == 2 and "expected a Kubernetes name" in result.output


HOSTS_AND_HEADERS = {"_format_version": "3.0", "services": [{
    "name": "api", "url": "http://api.internal:8080", "routes": [
        {"name": "gold", "paths": ["/q"], "hosts": ["api.example.com", "*.example.org"],
         "headers": {"X-Tier": ["gold", "platinum"]},
         "plugins": [{"name": "credits", "config": {"cost": 5}}]},
        {"name": "plain", "paths": ["/q"],
         "plugins": [{"name": "credits", "config": {"cost": 1}}]}]}]}


@pytest.mark.parametrize("resource", ["ingress", "httproute"])
def test_hosts_and_headers_of_a_route_are_kept(resource):
    manifests = kic_manifests(HOSTS_AND_HEADERS, resource=resource)
    validate(manifests)
    if resource == "ingress":
        gold = next(m for m in manifests if m["metadata"]["name"] == "gold")
        assert [r["host"] for r in gold["spec"]["rules"]] == ["api.example.com",
                                                              "*.example.org"]
        assert gold["metadata"]["annotations"]["konghq.com/headers.x-tier"] == "gold,platinum"
        return
    routes = [m for m in manifests if m["kind"] == "HTTPRoute"]
    assert [r["spec"].get("hostnames") for r in routes] == [
        ["api.example.com", "*.example.org"], None]
    (rule,) = routes[0]["spec"]["rules"]
    assert [m["headers"] for m in rule["matches"]] == [
        [{"name": "X-Tier", "value": "gold"}], [{"name": "X-Tier", "value": "platinum"}]]
