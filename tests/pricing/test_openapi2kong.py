"""Route naming and plugin placement as `deck file openapi2kong` does them (openapi2kong.py,
deck_names.py, deck_services.py).

The fixtures are our own, built from the rules decK's conversion test pairs show
(go-apiops `openapi2kong/oas3_testfiles/` 01 names inferred, 02 names set, 09 generic plugins,
12 path parameter regex): names from info.title / x-kong-name / operationId / method, `~` for a
trailing `/`, UUIDv5 ids in the DNS namespace, document plugins on the service and path or
operation plugins on the routes, parameters as `(?<name>[^#?/]+)` with regex_priority 100.
"""

from __future__ import annotations

import uuid

import pytest
import yaml

from kong_credits.errors import InvalidInput
from kong_credits.pricing.deck_names import capture_name, slugify
from kong_credits.pricing.openapi2kong import convert


def spec(text: str) -> dict:
    return yaml.safe_load(text)


def routes(declarative: dict) -> list[dict]:
    return [r for s in declarative["services"] for r in s["routes"]]


def by_name(declarative: dict) -> dict[str, dict]:
    return {r["name"]: r for r in routes(declarative)}


NAMES = spec("""
openapi: 3.0.3
info: {title: "Pet Store: the v2 API!", version: "2"}
servers: [{url: "https://pets.example/api"}]
paths:
  /:
    get: {operationId: rootList, responses: {}}
    post: {responses: {}}
  /pets:
    get: {operationId: listPets, responses: {}}
    delete: {responses: {}}
  /pets/:
    put: {responses: {}}
  /Pets_Archive.old:
    patch: {responses: {}}
""")


def test_names_come_from_the_title_the_path_the_operation_id_and_the_method():
    declarative = convert(NAMES)
    (service,) = declarative["services"]
    assert service["name"] == "pet-store-the-v2-api"
    assert [r["name"] for r in service["routes"]] == [
        "pet-store-the-v2-api_rootlist",        # operationId, lower-cased, after the doc
        "pet-store-the-v2-api_~_post",          # "/" slugs to nothing, plus "~" for the "/"
        "pet-store-the-v2-api_pets-archive-old_patch",  # paths sort byte-wise: "/P" < "/p"
        "pet-store-the-v2-api_pets_delete",     # methods in sorted order
        "pet-store-the-v2-api_listpets",
        "pet-store-the-v2-api_pets~_put",       # a trailing "/" is marked with "~"
    ]
    assert [r["methods"] for r in service["routes"]] == [
        ["GET"], ["POST"], ["PATCH"], ["DELETE"], ["GET"], ["PUT"]]


def test_x_kong_name_names_the_document_the_path_and_the_operation():
    declarative = convert(spec("""
openapi: 3.0.3
info: {title: Ignored Title, version: "1"}
x-kong-name: Billing API
paths:
  /invoices:
    x-kong-name: Invoice List
    get: {operationId: getInvoices, responses: {}}
    post: {responses: {}}
    put: {x-kong-name: replace all, operationId: ignoredId, responses: {}}
  /credits:
    put: {x-kong-name: top up, responses: {}}
"""))
    assert declarative["services"][0]["name"] == "billing-api"
    assert sorted(by_name(declarative)) == [
        "billing-api_credits_top-up",           # path slug, then the operation's own name
        "billing-api_getinvoices",              # operationId skips the path's name
        "billing-api_invoice-list_post",        # the path's x-kong-name, then the method
        "billing-api_invoice-list_replace-all",  # x-kong-name beats operationId
    ]


def test_ids_are_decks_uuid5_of_the_entity_name():
    declarative = convert(spec("""
openapi: 3.0.3
info: {title: Simple API overview, version: v2}
paths: {/a: {get: {operationId: one, responses: {}}}}
"""))
    service = declarative["services"][0]
    # decK's own expected id for the service of a spec titled "Simple API overview"
    assert service["id"] == "0907c4ab-d9e4-5d21-813b-c57a97eeaad9"
    assert service["routes"][0]["id"] == str(uuid.uuid5(uuid.NAMESPACE_DNS,
                                                         "simple-api-overview_one.route"))


@pytest.mark.parametrize(("text", "slug"), [
    ("Simple API overview", "simple-api-overview"),
    ("  --Hello,   World--  ", "hello-world"),
    ("Café Crème API", "cafe-creme-api"),
    ("Straße", "strasse"),
    ("a__b", "a-b"),
    ("/users/{id}/", "users-id"),
])
def test_slugify(text, slug):
    assert slugify(text) == slug


@pytest.mark.parametrize(("name", "capture"), [
    (" white space ", "white_space"), ("x*()_-+=x", "x_x"), ("-To_Do", "to_do"),
    ("userId", "userid"),
])
def test_capture_names_are_sanitized(name, capture):
    assert capture_name(name) == capture


def test_paths_become_anchored_regexes_with_parameters_as_captures():
    declarative = convert(spec("""
openapi: 3.0.3
info: {title: t, version: "1"}
paths:
  /users/{userId}/files/{path}:
    parameters: [{in: path, name: path, required: true, schema: {type: string, minLength: 0}}]
    get: {operationId: file, responses: {}}
  /v1.0/price+tax(eu)/$now*:
    get: {operationId: literal, responses: {}}
  /items/{Item-ID}/:
    get: {operationId: item, responses: {}}
"""))
    found = {r["name"]: (r["paths"], r["regex_priority"], r["strip_path"])
             for r in routes(declarative)}
    assert found == {
        "t_file": (["~/users/(?<userid>[^#?/]+)/files/(?<path>[^#?/]*)$"], 100, False),
        "t_literal": (["~/v1\\.0/price\\+tax\\(eu\\)/\\$now\\*$"], 200, False),
        "t_item": (["~/items/(?<item_id>[^#?/]+)/$"], 100, False),
    }


def test_a_capture_name_of_32_characters_is_refused():
    with pytest.raises(InvalidInput, match="path-parameter name exceeds 32 characters"):
        convert(spec("""
openapi: 3.0.3
info: {title: t, version: "1"}
paths: {"/a/{abcdefghijklmnopqrstuvwxyz012345}": {get: {responses: {}}}}
"""))


def test_servers_give_host_port_protocol_or_an_upstream():
    one = convert(spec("""
openapi: 3.0.3
info: {title: One, version: "1"}
servers: [{url: "http://api.example:8080/v1"}]
paths: {/a: {get: {responses: {}}}}
"""))
    service = one["services"][0]
    assert (service["protocol"], service["host"], service["port"], service["path"]) == (
        "http", "api.example", 8080, "/v1")
    assert one["upstreams"] == []
    two = convert(spec("""
openapi: 3.0.3
info: {title: Two, version: "1"}
servers:
  - {url: "https://{region}.api.example/v1", variables: {region: {default: eu}}}
  - {url: "https://us.api.example/v1"}
paths: {/a: {get: {responses: {}}}}
"""))
    service = two["services"][0]
    assert (service["protocol"], service["host"], service["port"]) == (
        "https", "two.upstream", 443)
    assert [t["target"] for t in two["upstreams"][0]["targets"]] == [
        "eu.api.example:443", "us.api.example:443"]


PLUGINS = spec("""
openapi: 3.0.3
info: {title: Shop, version: "1"}
servers: [{url: "https://shop.example/"}]
x-kong-plugin-credits:
  config: {cost: 1}
  service: dropped
paths:
  /cheap:
    get: {operationId: cheap, responses: {}}
  /pricey:
    x-kong-plugin-credits: {config: {cost: 5}}
    get: {operationId: pricey, responses: {}}
    post:
      operationId: priciest
      x-kong-plugin-credits: {config: {cost: 9}}
      responses: {}
  /elsewhere:
    servers: [{url: "https://other.example/"}]
    get: {operationId: elsewhere, responses: {}}
""")


def test_plugins_follow_decks_inheritance():
    declarative = convert(PLUGINS)
    shop, elsewhere = declarative["services"]
    # document level: on the service (foreign keys dropped)
    assert [(p["name"], p["config"]) for p in shop["plugins"]] == [("credits", {"cost": 1})]
    assert "service" not in shop["plugins"][0]
    routes_ = by_name(declarative)
    assert routes_["shop_cheap"]["plugins"] == []  # the service's plugin applies
    assert [p["config"] for p in routes_["shop_pricey"]["plugins"]] == [{"cost": 5}]  # path
    assert [p["config"] for p in routes_["shop_priciest"]["plugins"]] == [{"cost": 9}]  # op
    # a path with its own servers gets its own service, carrying the document's plugins
    assert elsewhere["name"] == "shop_elsewhere"
    assert [p["config"] for p in elsewhere["plugins"]] == [{"cost": 1}]
    assert elsewhere["plugins"][0]["id"] == str(uuid.uuid5(
        uuid.NAMESPACE_DNS, "shop_elsewhere.plugin.credits"))
    assert routes_["shop_priciest"]["plugins"][0]["id"] == str(uuid.uuid5(
        uuid.NAMESPACE_DNS, "shop_priciest.plugin.credits"))


def test_tags_come_from_x_kong_tags_or_the_select_tags():
    tagged = {**PLUGINS, "x-kong-tags": ["shop", "v1"]}
    declarative = convert(tagged)
    assert declarative["services"][0]["tags"] == ["shop", "v1"]
    assert all(r["tags"] == ["shop", "v1"] for r in routes(declarative))
    assert declarative["services"][0]["plugins"][0]["tags"] == ["shop", "v1"]
    selected = convert(tagged, tags=["billing"])
    assert {t for r in routes(selected) for t in r["tags"]} == {"billing"}


def test_x_kong_defaults_and_references():
    declarative = convert(spec("""
openapi: 3.0.3
info: {title: Defaults, version: "1"}
x-kong-route-defaults: {strip_path: true, regex_priority: 10}
x-kong-service-defaults: {$ref: "#/components/x-kong/service"}
components:
  x-kong:
    service: {read_timeout: 5000}
    price: {config: {cost: 3}}
paths:
  /plain: {get: {operationId: plain, responses: {}}}
  /items/{id}:
    get:
      operationId: item
      x-kong-plugin-credits: {$ref: "#/components/x-kong/price"}
      responses: {}
"""))
    service = declarative["services"][0]
    assert service["read_timeout"] == 5000
    found = by_name(declarative)
    assert (found["defaults_plain"]["strip_path"], found["defaults_plain"]["regex_priority"]) \
        == (True, 10)
    assert found["defaults_item"]["regex_priority"] == 9  # a path with parameters: one lower
    assert found["defaults_item"]["plugins"][0]["config"] == {"cost": 3}


def test_required_header_enums_split_a_route_per_value():
    declarative = convert(spec("""
openapi: 3.0.3
info: {title: H, version: "1"}
paths:
  /a:
    get:
      operationId: a
      parameters:
        - {in: header, name: X-Tier, required: true, schema: {type: string, enum: [gold, free]}}
        - {in: header, name: X-Opt, schema: {type: string, enum: [x]}}
      x-kong-plugin-credits: {config: {cost: 2}}
      responses: {}
"""))
    found = routes(declarative)
    assert [(r["name"], r.get("headers")) for r in found] == [
        ("h_a_0", {"X-Tier": ["gold"]}), ("h_a_1", {"X-Tier": ["free"]}), ("h_a", None)]
    ids = {p["id"] for r in found for p in r["plugins"]}
    assert len(ids) == 3


@pytest.mark.parametrize(("text", "error"), [
    ("openapi: 3.0.3\ninfo: {title: t, version: '1'}\n", "must have `.paths`"),
    ("openapi: 3.0.3\ninfo: {version: '1'}\npaths: {}\n", "needs info.title or x-kong-name"),
    ("openapi: 3.0.3\ninfo: {title: t, version: '1'}\nx-kong-tags: oops\npaths: {}\n",
     "'x-kong-tags' to be an array of strings"),
    ("openapi: 3.0.3\ninfo: {title: t, version: '1'}\n"
     "x-kong-plugin-request-validator: {}\npaths: {}\n", "request-validator is not converted"),
    ("openapi: 3.0.3\ninfo: {title: t, version: '1'}\n"
     "x-kong-plugin-credits: {$ref: '#/elsewhere'}\npaths: {}\n",
     "must be at '#/components/x-kong/"),
    ("openapi: 3.0.3\ninfo: {title: t, version: '1'}\n"
     "paths: {/a: {$ref: '#/components/pathItems/a'}}\n", "a path item $ref is not followed"),
])
def test_what_decK_refuses_or_kong_credits_does_not_convert(text, error):
    with pytest.raises(InvalidInput, match=None) as raised:
        convert(spec(text))
    assert error in str(raised.value)


def test_an_empty_paths_list_converts_to_a_service_without_routes():
    declarative = convert(spec("openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths: []\n"))
    assert declarative["services"][0]["routes"] == []


def test_a_name_decK_would_transliterate_is_refused_rather_than_named_differently():
    with pytest.raises(InvalidInput, match="give an ASCII x-kong-name"):
        convert(spec("openapi: 3.0.3\ninfo: {title: Платежи, version: '1'}\npaths: {}\n"))
    named = convert(spec("openapi: 3.0.3\ninfo: {title: Платежи, version: '1'}\n"
                         "x-kong-name: payments\npaths: {}\n"))
    assert named["services"][0]["name"] == "payments"
