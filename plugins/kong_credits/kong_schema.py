"""Kong schema validation (the subset plugin configs use), as `kong/db/schema/init.lua` does it.

`validate(fields, config)` first fills defaults like `Schema:process_auto_fields(conf,
"insert")`, then checks like `Schema:validate`, and returns the filled config (null fields
dropped, as Kong stores them) with every error found. Error messages are Kong's own strings.

Checked: types integer, number, string, boolean, record, array, set, map (plus `json`/`any`,
unchecked); `required`, `default`, unknown fields; validators eq, ne, gt, between, one_of,
not_one_of, len_eq, len_min (strings default to 1, as in Kong), len_max, starts_with, uuid,
contains; record `entity_checks` at_least_one_of, only_one_of, mutually_required,
mutually_exclusive, conditional; a vault reference in a `referenceable` string skips the
validators, as in Kong (which never checks what it resolves to). Not checked (Lua code or Lua
patterns, which Python cannot run faithfully): match, not_match, match_all, match_any,
match_none, is_regex, custom_validator, custom_entity_check and the other entity checkers.

Paths use Kong's keys: array elements are numbered from 1, like the Lua tables Kong reports.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["FieldError", "config_fields", "format_errors", "validate"]

PathKey = str | int

_REQUIRED = "required field missing"
_UNKNOWN = "unknown field"
_TYPE_ERRORS = {
    "array": "expected an array",
    "set": "expected a set",
    "map": "expected a map",
    "record": "expected a record",
    "string": "expected a string",
    "number": "expected a number",
    "boolean": "expected a boolean",
    "integer": "expected an integer",
}
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


@dataclass(frozen=True)
class FieldError:
    """One failed check: where (`("config", "limits", 2, "cost")`) and Kong's message."""

    path: tuple[PathKey, ...]
    message: str

    def __str__(self) -> str:
        return f"{format_path(self.path)}: {self.message}"


def format_path(path: Sequence[PathKey]) -> str:
    """`("config", "tiers", 2, "cost")` -> `config.tiers[2].cost`."""
    out = ""
    for key in path:
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            out += f".{key}" if out else str(key)
    return out or "(root)"


def format_errors(errors: Iterable[FieldError]) -> str:
    """One error per line, for humans."""
    return "\n".join(str(e) for e in errors)


def config_fields(schema: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The `config` record's fields of a plugin MetaSubSchema (`{"name", "fields"}`)."""
    for entry in schema.get("fields") or []:
        if isinstance(entry, Mapping) and "config" in entry:
            return list(entry["config"].get("fields") or [])
    return []


def validate(
    fields: Sequence[Mapping[str, Any]], config: Mapping[str, Any] | None
) -> tuple[dict[str, Any], list[FieldError]]:
    """Fill defaults into `config` and check it against Kong schema `fields`.

    Returns `(filled_config, errors)`; `filled_config` omits null fields (Kong's stored form)
    and is meaningful only when `errors` is empty. Never raises on bad input: a non-mapping
    config is reported as `expected a record`. A malformed schema raises ValueError.
    """
    record = {"type": "record", "fields": list(fields), "required": True}
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        return {}, [FieldError((), _TYPE_ERRORS["record"])]
    filled = _fill(record, dict(config))
    errors: list[FieldError] = []
    _check_record(record, filled, (), errors)
    return _drop_nulls(filled), errors


# -- filling (Schema:process_auto_fields, context "insert") -------------------------------


_MISSING: Any = object()


def _record_fields(record: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    out: list[tuple[str, Mapping[str, Any]]] = []
    for entry in record.get("fields") or []:
        if not isinstance(entry, Mapping) or len(entry) != 1:
            raise ValueError(f"schema field entries are one-key tables, got {entry!r}")
        ((name, definition),) = entry.items()
        if not isinstance(definition, Mapping) or "type" not in definition:
            raise ValueError(f"schema field {name!r} has no type")
        out.append((str(name), definition))
    return out


def _missing(field: Mapping[str, Any]) -> Any:
    """Kong's `handle_missing_field`: default, else null, else an expanded required record."""
    if field.get("default") is not None:
        return copy.deepcopy(field["default"])
    if field.get("required") is not True:
        return None
    if field["type"] == "record":
        return _fill(field, {})
    return _MISSING


def _fill(field: Mapping[str, Any], value: Any) -> Any:
    kind = field["type"]
    if value is _MISSING:
        value = _missing(field)
        if kind == "record" and field.get("required") is True and isinstance(value, dict):
            return _fill_record(field, value)
        return value
    if value is None:
        return None
    if kind == "record" and isinstance(value, Mapping):
        return _fill_record(field, value)
    if kind in ("array", "set") and isinstance(value, list):
        items = _dedup(value) if kind == "set" else value
        return [_fill(field["elements"], v) for v in items]
    if kind == "map" and isinstance(value, Mapping):
        return {k: _fill(field["values"], v) for k, v in value.items()}
    return value


def _fill_record(record: Mapping[str, Any], value: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(value)  # unknown keys are kept so that _check_record reports them
    for name, field in _record_fields(record):
        out[name] = _fill(field, value.get(name, _MISSING))
    return out


def _dedup(items: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _drop_nulls(v) for k, v in value.items() if v is not None and v is not _MISSING
        }
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


# -- checking (Schema:validate_field / Schema:validate) -----------------------------------


def _check_record(
    record: Mapping[str, Any], value: dict[str, Any], path: tuple[PathKey, ...], errors: list
) -> None:
    known = dict(_record_fields(record))
    for key in value:
        if key not in known:
            errors.append(FieldError((*path, key), _UNKNOWN))
    for name, field in known.items():
        item = value.get(name, _MISSING)
        if item is _MISSING or item is None:
            if field.get("required") is True:
                errors.append(FieldError((*path, name), _REQUIRED))
            continue
        _check(field, item, (*path, name), errors)
    for check in record.get("entity_checks") or []:
        _entity_check(record, check, value, path, errors)


def _check(field: Mapping[str, Any], value: Any, path: tuple[PathKey, ...], errors: list) -> None:
    if value is None or value is _MISSING:
        if field.get("required"):
            errors.append(FieldError(path, _REQUIRED))
        return
    before = len(errors)
    if not _check_type(field, value, path, errors):
        return
    if len(errors) > before:
        return
    if field.get("referenceable") and _is_reference(value):
        return
    message = _run_validators(field, value)
    if message is not None:
        errors.append(FieldError(path, field.get("err") or message))


def _check_type(
    field: Mapping[str, Any], value: Any, path: tuple[PathKey, ...], errors: list
) -> bool:
    """Type check and recursion; False when the type is wrong (validators then skipped)."""
    kind = field["type"]
    bad = FieldError(path, _TYPE_ERRORS.get(kind, f"invalid type: {kind}"))
    if kind in ("array", "set"):
        if not isinstance(value, list):
            errors.append(bad)
            return False
        element = {**field["elements"], "required": True}
        for i, item in enumerate(value, start=1):
            _check(element, item, (*path, i), errors)
    elif kind == "map":
        if not isinstance(value, Mapping):
            errors.append(bad)
            return False
        keys = {**field.get("keys", {"type": "string"}), "required": True}
        values = {**field["values"], "required": True}
        for k, v in value.items():
            _check(keys, k, (*path, k), errors)
            _check(values, v, (*path, k), errors)
    elif kind == "record":
        if not isinstance(value, Mapping):
            errors.append(bad)
            return False
        _check_record(field, dict(value), path, errors)
    elif kind == "integer":
        if not _is_number(value) or not (math.isfinite(value) and value == math.floor(value)):
            errors.append(bad)
            return False
    elif kind == "number":
        if not _is_number(value):
            errors.append(bad)
            return False
    elif kind == "string":
        if not isinstance(value, str):
            errors.append(bad)
            return False
    elif kind == "boolean":
        if not isinstance(value, bool):
            errors.append(bad)
            return False
    elif kind not in ("json", "any"):
        errors.append(bad)
        return False
    return True


def _is_reference(value: Any) -> bool:
    """`kong.vault.is_reference`: a string like `{vault://env/name}`."""
    return isinstance(value, str) and value.startswith("{vault://") and value.endswith("}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _lua_str(value: Any) -> str:
    """Lua's `tostring` for the scalars schemas hold."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.14g}"
    return str(value)


def _run_validators(field: Mapping[str, Any], value: Any) -> str | None:
    """Kong's `validators_order`, first failure wins; returns the message or None."""
    if "eq" in field and value != field["eq"]:
        return f"value must be {_lua_str(field['eq'])}"
    if "ne" in field and value == field["ne"]:
        return f"value must not be {_lua_str(value)}"
    if "not_one_of" in field and value in field["not_one_of"]:
        return "must not be one of: " + ", ".join(_lua_str(o) for o in field["not_one_of"])
    if "one_of" in field and value not in field["one_of"]:
        return "expected one of: " + ", ".join(_lua_str(o) for o in field["one_of"])
    if "gt" in field and not value > field["gt"]:
        return f"value must be greater than {_lua_str(field['gt'])}"
    if "uuid" in field and field["uuid"] and not _UUID.match(value):
        return "expected a valid UUID"
    if "between" in field:
        low, high = field["between"]
        if value < low or value > high:
            return f"value should be between {int(low)} and {int(high)}"
    length_rules = dict(field)
    if field["type"] == "string" and "len_min" not in field:
        length_rules["len_min"] = 1  # Kong: "empty strings are not accepted by default"
    if "len_eq" in length_rules and len(value) != length_rules["len_eq"]:
        return f"length must be {length_rules['len_eq']}"
    if "len_min" in length_rules and len(value) < length_rules["len_min"]:
        return f"length must be at least {length_rules['len_min']}"
    if "len_max" in length_rules and len(value) > length_rules["len_max"]:
        return f"length must be at most {length_rules['len_max']}"
    if "starts_with" in field and not value.startswith(field["starts_with"]):
        return f"should start with: {field['starts_with']}"
    if "contains" in field and field["contains"] not in value:
        return f"expected to contain: {_lua_str(field['contains'])}"
    return None


# -- entity checks -------------------------------------------------------------------------


def _get(value: Mapping[str, Any], dotted: str) -> Any:
    node: Any = value
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _nonempty(value: Any) -> bool:
    return not (value is None or value is _MISSING or value == "" or value in ({}, []))


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _field_def(record: Mapping[str, Any], dotted: str) -> Mapping[str, Any]:
    node: Mapping[str, Any] = record
    for part in dotted.split("."):
        node = dict(_record_fields(node)).get(part, {"type": "any"})
    return node


def _entity_check(
    record: Mapping[str, Any],
    check: Mapping[str, Any],
    value: Mapping[str, Any],
    path: tuple[PathKey, ...],
    errors: list,
) -> None:
    ((name, arg),) = check.items()
    entity_path = (*path, "@entity")
    if name in ("at_least_one_of", "only_one_of", "mutually_required", "mutually_exclusive"):
        set_count = sum(1 for f in arg if _nonempty(_get(value, f)))
        failed = {
            "at_least_one_of": set_count == 0,
            "only_one_of": set_count != 1,
            "mutually_required": set_count not in (0, len(arg)),
            "mutually_exclusive": set_count > 1,
        }[name]
        if failed:
            errors.append(FieldError(entity_path, _ENTITY_MESSAGES[name] + _quoted(arg)))
    elif name == "conditional":
        _conditional(record, arg, value, path, errors)


_ENTITY_MESSAGES = {
    "at_least_one_of": "at least one of these fields must be non-empty: ",
    "only_one_of": "exactly one of these fields must be non-empty: ",
    "mutually_required": "all or none of these fields must be set: ",
    "mutually_exclusive": "only one or none of these fields must be set: ",
}


def _conditional(
    record: Mapping[str, Any],
    arg: Mapping[str, Any],
    value: Mapping[str, Any],
    path: tuple[PathKey, ...],
    errors: list,
) -> None:
    if_value = _get(value, arg["if_field"])
    if if_value is None:
        return
    if_field = {**_field_def(record, arg["if_field"]), **arg["if_match"]}
    probe: list[FieldError] = []
    _check(if_field, if_value, (), probe)
    if probe:
        return
    then_name = arg["then_field"]
    then_value = _get(value, then_name)
    then_path = (*path, *then_name.split("."))
    if arg["then_match"].get("required") and then_value is None:
        failure = FieldError(then_path, _REQUIRED)
    else:
        then_field = {**_field_def(record, then_name), **arg["then_match"]}
        found: list[FieldError] = []
        _check(then_field, then_value, then_path, found)
        failure = found[0] if found else None
    if failure is not None:
        errors.append(failure)
        message = (arg.get("then_err") or "failed conditional validation given value of "
                   "field '%s'").replace("%s", arg["if_field"])
        errors.append(FieldError((*path, "@entity"), message))
