"""Prices in an OpenAPI spec: read, checked against the plugin schema, written out for decK.

A price rides on decK's own extensions: `x-kong-plugin-credits` (or `-credits-metered`) with a
`config` block on the document (every route of its service), a path (its operations) or an
operation; the nearest level wins whole, as in decK. The shorthand `x-credits-cost: N` on an
operation prices it at N credits and keeps everything else of the plugin it inherits (rate
limits, mode, ...): `expand_prices` writes it out as the full `x-kong-plugin-credits` block
decK needs, since decK replaces a plugin whole and knows no shorthand.

Every operation's resulting config is checked as the plugin server will check it; errors name
the operation (`GET /search: config.cost: expected an integer`) and where the price came from
when it was inherited.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..errors import InvalidInput
from ..kong_schema import format_path, validate
from ..render import PLUGIN_NAMES
from ..schema import parse_config, plugin_schema
from .openapi2kong import HTTP_METHODS, PLUGIN_PREFIX, x_kong_object

__all__ = ["SHORTHAND", "expand_prices", "load_spec", "operations"]

SHORTHAND = "x-credits-cost"
_EXTENSIONS = tuple(PLUGIN_PREFIX + name for name in PLUGIN_NAMES)
_PLUGIN_FIELDS = {"config", "enabled", "protocols", "tags", "instance_name", "name", "id",
                  "service", "route"}
"""A Kong plugin entity's fields decK passes through (service and route it drops)."""


def load_spec(path: str | Path) -> dict[str, Any]:
    """An OpenAPI document from a YAML or JSON file."""
    try:
        spec = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read OpenAPI spec {path}: {exc}") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("paths"), Mapping | list):
        raise InvalidInput(f"{path}: expected an OpenAPI document with `paths`")
    return spec


def operations(spec: Mapping[str, Any]) -> Iterator[tuple[str, str, Mapping[str, Any],
                                                         Mapping[str, Any]]]:
    """(METHOD, path, path item, operation) in decK's order: paths sorted, then methods."""
    paths = spec.get("paths") or {}
    if not isinstance(paths, Mapping):
        return
    for path in sorted(paths):
        item = paths[path]
        if not isinstance(item, Mapping):
            continue
        for method in HTTP_METHODS:
            operation = item.get(method)
            if isinstance(operation, Mapping):
                yield method.upper(), path, item, operation


def expand_prices(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `spec` with each `x-credits-cost` replaced by the full plugin block, after
    checking every operation's price. Raises InvalidInput listing every problem, one a line.
    """
    out = copy.deepcopy(dict(spec))
    errors: list[str] = []
    for holder, where in _non_operations(out):
        if SHORTHAND in holder:
            errors.append(f"{where}: {SHORTHAND} belongs on an operation; here write "
                          f"x-kong-plugin-credits: {{config: {{cost: N}}}}")
    for method, path, item, operation in operations(out):
        where = f"{method} {path}"
        try:
            _expand_operation(out, item, operation)
        except InvalidInput as exc:
            errors.append(f"{where}: {exc}")
            continue
        errors.extend(f"{where}: {problem}" for problem in _check_operation(out, item, operation))
    if errors:
        raise InvalidInput("\n".join(errors))
    return out


def _non_operations(spec: dict[str, Any]) -> Iterator[tuple[Mapping[str, Any], str]]:
    yield spec, "the document"
    for path, item in (spec.get("paths") or {}).items():
        if isinstance(item, Mapping):
            yield item, path


def _levels(spec: Mapping[str, Any], item: Mapping[str, Any], operation: Mapping[str, Any]
            ) -> list[tuple[Mapping[str, Any], str]]:
    """Where a price may come from, nearest first."""
    return [(operation, "the operation"), (item, "the path"), (spec, "the document")]


def _effective(spec: Mapping[str, Any], item: Mapping[str, Any],
               operation: Mapping[str, Any]) -> dict[str, tuple[dict[str, Any], str]]:
    """Plugin name -> (its block, where it comes from) for the credits plugins that run on
    the operation's route: for each name the nearest level's block (decK's rule)."""
    found: dict[str, tuple[dict[str, Any], str]] = {}
    for name, key in zip(PLUGIN_NAMES, _EXTENSIONS, strict=True):
        for holder, level in _levels(spec, item, operation):
            if key in holder:
                block = x_kong_object(spec, holder, key)
                if block is None:
                    raise InvalidInput(f"{key} of {level}: expected an object")
                found[name] = (block, level)
                break
    return found


def _expand_operation(spec: Mapping[str, Any], item: Mapping[str, Any],
                      operation: dict[str, Any]) -> None:
    """Replace the operation's `x-credits-cost` with the full block of the plugin it
    inherits (or a new `credits` block), its cost set."""
    if SHORTHAND not in operation:
        return
    cost = operation[SHORTHAND]
    own = [key for key in _EXTENSIONS if key in operation]
    if own:
        raise InvalidInput(f"{SHORTHAND} and {own[0]} both price this operation; keep one")
    inherited = _effective(spec, item, operation)
    if len(inherited) > 1:
        return  # reported by _check_operation as two plugins on one route
    name, (block, _) = next(iter(inherited.items()), ("credits", ({}, "")))
    config = block.get("config")
    block["config"] = {**(config if isinstance(config, Mapping) else {}), "cost": cost}
    items = [(PLUGIN_PREFIX + name, block) if key == SHORTHAND else (key, value)
             for key, value in operation.items()]
    operation.clear()
    operation.update(items)  # the block where the shorthand was


def _check_operation(spec: Mapping[str, Any], item: Mapping[str, Any],
                     operation: Mapping[str, Any]) -> list[str]:
    """Every problem with the credits plugins the operation's route gets."""
    effective = _effective(spec, item, operation)
    if len(effective) > 1:
        (_, first), (_, second) = effective["credits"], effective["credits-metered"]
        return [f"both credits (from {first}) and credits-metered (from {second}) would run "
                "on this route and charge twice; price it with one of them"]
    problems = []
    for name, (block, level) in effective.items():
        source = "" if level == "the operation" else f" (x-kong-plugin-{name} of {level})"
        problems.extend(p + source for p in check_plugin_block(name, block))
    return problems


def check_plugin_block(name: str, block: Mapping[str, Any]) -> list[str]:
    """Problems with one `x-kong-plugin-<name>` block, each as `config.<field>: <message>`."""
    problems = [f"{key}: unknown field" if key != "consumer" else
                "consumer: a price for one consumer is a deal, not a route's price: attach "
                "it to the consumer in kong.yml" for key in block if key not in _PLUGIN_FIELDS]
    config = block.get("config")
    if config is None:
        config = {}
    metered = name == PLUGIN_NAMES[1]
    fields = plugin_schema(metered=metered)
    if not isinstance(config, Mapping):
        return [*problems, "config: expected a record"]
    _, errors = validate(fields, config)
    problems.extend(f"{format_path(('config', *e.path))}: {e.message}" for e in errors)
    problems.extend(_fractional_integers(fields, config, ("config",)))
    if not problems:
        try:
            parse_config(dict(config), metered=metered)
        except InvalidInput as exc:
            problems.append("config: " + str(exc).split(": ", 1)[-1])
    return problems


def _fractional_integers(fields: Sequence[Mapping[str, Any]], config: Mapping[str, Any],
                         path: tuple[str, ...]) -> list[str]:
    """Kong (and kong_schema) take 5.0 for an integer; a price is written in whole credits,
    so a float there, even a whole one, is refused rather than silently truncated."""
    problems = []
    for entry in fields:
        ((name, field),) = entry.items()
        value = config.get(name)
        if field["type"] == "integer" and isinstance(value, float):
            problems.append(f"{format_path((*path, name))}: expected an integer")
        elif field["type"] == "record" and isinstance(value, Mapping):
            problems.extend(_fractional_integers(field["fields"], value, (*path, name)))
    return problems
