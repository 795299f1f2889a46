"""kong_schema.validate: Kong's defaults, checks and messages for plugin configs."""

from __future__ import annotations

import pytest

from kong_credits.kong_schema import FieldError, config_fields, validate

FIELDS = [
    {"cost": {"type": "integer", "required": True, "between": [0, 1000]}},
    {"mode": {"type": "string", "default": "enforce", "one_of": ["enforce", "shadow"]}},
    {"rate": {"type": "number", "gt": 0}},
    {"name": {"type": "string"}},
    {"limits": {"type": "record", "required": True, "fields": [
        {"minute": {"type": "integer", "default": 60, "gt": 0}},
        {"burst": {"type": "integer"}},
    ]}},
    {"optional_record": {"type": "record", "fields": [
        {"inner": {"type": "integer", "default": 1}},
    ]}},
    {"tags": {"type": "set", "elements": {"type": "string"}, "default": []}},
    {"codes": {"type": "array", "elements": {"type": "integer", "between": [100, 599]},
               "len_min": 1, "default": [402]}},
    {"headers": {"type": "map", "keys": {"type": "string"}, "values": {"type": "string"}}},
    {"enabled": {"type": "boolean", "default": True}},
]


def messages(errors: list[FieldError]) -> dict[str, str]:
    return {str(e).split(": ", 1)[0]: e.message for e in errors}


def test_defaults_are_filled_and_null_fields_dropped() -> None:
    filled, errors = validate(FIELDS, {"cost": 5})
    assert errors == []
    assert filled == {
        "cost": 5, "mode": "enforce", "limits": {"minute": 60}, "tags": [], "codes": [402],
        "enabled": True,
    }


def test_non_required_record_without_default_stays_null() -> None:
    filled, _ = validate(FIELDS, {"cost": 1})
    assert "optional_record" not in filled
    filled, _ = validate(FIELDS, {"cost": 1, "optional_record": {}})
    assert filled["optional_record"] == {"inner": 1}


def test_each_kind_of_error_uses_kongs_message() -> None:
    _, errors = validate(FIELDS, {
        "cost": 1001, "mode": "loud", "rate": 0, "name": "", "limits": {"minute": "x"},
        "tags": ["a", 3], "codes": [], "headers": {"x": 1}, "enabled": "yes", "bogus": 1,
    })
    assert messages(errors) == {
        "cost": "value should be between 0 and 1000",
        "mode": "expected one of: enforce, shadow",
        "rate": "value must be greater than 0",
        "name": "length must be at least 1",
        "limits.minute": "expected an integer",
        "tags[2]": "expected a string",
        "codes": "length must be at least 1",
        "headers.x": "expected a string",
        "enabled": "expected a boolean",
        "bogus": "unknown field",
    }


def test_missing_required_field_and_null_required_field() -> None:
    _, errors = validate(FIELDS, {})
    assert messages(errors) == {"cost": "required field missing"}
    _, errors = validate(FIELDS, {"cost": None})
    assert messages(errors) == {"cost": "required field missing"}


def test_integer_accepts_whole_floats_but_not_booleans() -> None:
    filled, errors = validate(FIELDS, {"cost": 5.0})
    assert errors == [] and filled["cost"] == 5.0
    _, errors = validate(FIELDS, {"cost": True})
    assert messages(errors) == {"cost": "expected an integer"}
    _, errors = validate(FIELDS, {"cost": 5.5})
    assert messages(errors) == {"cost": "expected an integer"}


def test_set_removes_duplicates() -> None:
    filled, errors = validate(FIELDS, {"cost": 1, "tags": ["a", "b", "a"]})
    assert errors == [] and filled["tags"] == ["a", "b"]


def test_not_a_record() -> None:
    _, errors = validate(FIELDS, ["cost"])  # type: ignore[arg-type]
    assert [str(e) for e in errors] == ["(root): expected a record"]


@pytest.mark.parametrize(("check", "config", "expected"), [
    ({"at_least_one_of": ["a", "b"]}, {}, "at least one of these fields must be non-empty: "
                                           "'a', 'b'"),
    ({"only_one_of": ["a", "b"]}, {"a": 1, "b": 2}, "exactly one of these fields must be "
                                                    "non-empty: 'a', 'b'"),
    ({"mutually_required": ["a", "b"]}, {"a": 1}, "all or none of these fields must be set: "
                                                  "'a', 'b'"),
    ({"mutually_exclusive": ["a", "b"]}, {"a": 1, "b": 2}, "only one or none of these fields "
                                                           "must be set: 'a', 'b'"),
])
def test_entity_checks(check: dict, config: dict, expected: str) -> None:
    fields = [{"a": {"type": "integer"}}, {"b": {"type": "integer"}}]
    record = [{"r": {"type": "record", "required": True, "fields": fields,
                     "entity_checks": [check]}}]
    _, errors = validate(record, {"r": config})
    assert [(e.path, e.message) for e in errors] == [(("r", "@entity"), expected)]


def test_conditional_entity_check() -> None:
    fields = [{"policy": {"type": "string", "default": "local"}},
              {"redis_host": {"type": "string"}}]
    check = {"conditional": {"if_field": "policy", "if_match": {"eq": "redis"},
                             "then_field": "redis_host", "then_match": {"required": True}}}
    record = [{"r": {"type": "record", "required": True, "fields": fields,
                     "entity_checks": [check]}}]
    assert validate(record, {"r": {}})[1] == []
    _, errors = validate(record, {"r": {"policy": "redis"}})
    assert messages(errors) == {
        "r.redis_host": "required field missing",
        "r.@entity": "failed conditional validation given value of field 'policy'",
    }


def test_config_fields_reads_a_kong_pdk_dump() -> None:
    schema = {"name": "x", "fields": [{"protocols": {"type": "set"}},
                                      {"config": {"type": "record", "fields": FIELDS}}]}
    assert config_fields(schema) == FIELDS
