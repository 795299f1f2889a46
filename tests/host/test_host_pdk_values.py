"""codec, responses and router.upstream_path: the values Kong's Lua side produces."""

from __future__ import annotations

import pytest

from kong_credits.host.codec import cjson_encode, lua_value, multimap
from kong_credits.host.context import Headers, query_table
from kong_credits.host.entities import Route, Service
from kong_credits.host.responses import error_response, exit_response, response_type
from kong_credits.host.router import upstream_path


def test_lua_value_shapes() -> None:
    assert lua_value({"a": 1.0, "b": 1.5, "c": {}, "d": []}) == {"a": 1, "b": 1.5, "c": [],
                                                                  "d": []}
    assert multimap({}) == {}
    assert multimap({"a": "1", "b": ["1", "2"], "flag": True}) == {
        "a": ["1"], "b": ["1", "2"], "flag": []}


def test_cjson_encoding() -> None:
    assert cjson_encode({"url": "http://x/y", "n": 2.0}) == '{"url":"http:\\/\\/x\\/y","n":2}'


def test_query_table_like_ngx_get_uri_args() -> None:
    assert query_table("a=1&a=2&flag&e=&sp=a+b%21") == {
        "a": ["1", "2"], "flag": True, "e": "", "sp": "a b!"}


def test_exit_table_body_gets_json_content_type_and_length() -> None:
    current = Headers([("X-Set-Before", "1")])
    response = exit_response(402, {"message": "no"}, {"X-Extra": 5, "Transfer-Encoding": "x"},
                             current)
    assert response.body == b'{"message":"no"}'
    assert list(response.headers) == [
        ("X-Set-Before", "1"), ("X-Extra", "5"),
        ("Content-Type", "application/json; charset=utf-8"), ("Content-Length", "16")]


def test_exit_validates_like_kong() -> None:
    with pytest.raises(ValueError, match="code must be a number between 100 and 599"):
        exit_response(99)
    with pytest.raises(ValueError, match="body must be a nil, string or table"):
        exit_response(200, 5)
    with pytest.raises(ValueError, match='invalid header value for "X": got nil'):
        exit_response(200, None, {"X": None})


def test_error_uses_the_template_the_accept_header_asks_for() -> None:
    json_error = error_response(403, None, request_id="rid")
    assert json_error.body == b'{\n  "message":"Forbidden",\n  "request_id":"rid"\n}'
    plain = error_response(429, "slow down", accept="text/plain;q=0.9, text/html;q=0.1",
                           request_id="rid")
    assert plain.body == b"slow down\nrequest_id: rid\n"
    assert plain.headers.get("Content-Type") == "text/plain; charset=utf-8"
    assert response_type("*/*") == "application/json; charset=utf-8"
    assert response_type("application/xml") == "application/xml; charset=utf-8"


@pytest.mark.parametrize(("service_path", "strip", "prefix", "path", "expected"), [
    (None, True, "/api", "/api", "/"),
    (None, True, "/api", "/api/x", "/x"),
    ("/v1", True, "/api", "/api", "/v1"),
    ("/v1", True, "/api", "/api/", "/v1/"),
    ("/v1", True, "/api", "/apix", "/v1/x"),
    ("/v1/", True, "/api", "/api/x", "/v1/x"),
    ("/v1/", True, "/api", "/api", "/v1"),
    ("/v1", False, "/api", "/api/x", "/v1/api/x"),
    ("/v1/", False, "/api", "/api/x", "/v1/api/x"),
    ("/v1", True, None, "/anything", "/v1/anything"),
])
def test_upstream_path_v0(service_path, strip, prefix, path, expected) -> None:
    route = Route(id="r", name="r", service_id="s", paths=(prefix,) if prefix else (),
                  strip_path=strip)
    service = Service(id="s", name="s", path=service_path)
    assert upstream_path(route, service, path, prefix) == expected
