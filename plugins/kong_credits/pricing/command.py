"""`kong-credits render-config` and `kong-credits prices`: parse, call the library, print."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import yaml

from ..errors import InvalidInput
from ..prices import declarative_prices, route_prices
from ..render import load_pricing, render, render_file
from ..yaml_files import read_mapping
from .deck_plugins import deck_plugin_file, dump_plugin_file
from .kic import RESOURCES, dump_manifests, kic_manifests
from .openapi import expand_prices, load_spec
from .openapi2kong import convert

__all__ = ["prices_command", "render_config_command"]

FORMATS = ("kong", "openapi", "kic", "deck-plugins")
DEFAULT_PRICING, DEFAULT_KONG_YML = "config/pricing.yaml", "kong/kong.yml"
SPEC_HEADER = ("# Converted from {spec} by `kong-credits render-config --openapi`, with the\n"
               "# names `deck file openapi2kong` gives. Change prices in the spec.\n")
OPENAPI_HEADER = ("# {spec} with every price as a full x-kong-plugin-credits block, written by\n"
                  "# `kong-credits render-config --format openapi`: convert it with decK.\n")


def _dns_label(value: str | None, param: click.Parameter) -> str | None:
    if value is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
        raise click.BadParameter("expected a Kubernetes name: lower-case letters, digits and "
                                 "'-', at most 63", param=param)
    return value


def _usage(action: Callable[[], Any]) -> Any:
    """Bad input (a price, a spec, a file) exits 2 with the reason."""
    try:
        return action()
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from exc


def _from_spec(spec_path: str, tags: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the spec with its prices written out in full, its Kong declarative config)."""
    expanded = expand_prices(load_spec(spec_path))
    return expanded, convert(expanded, tags=list(tags) or None)


def _render(fmt: str, pricing: str | None, kong_yml: str, spec: str | None,
            tags: Sequence[str], kic: Mapping[str, Any]) -> str:
    if spec is None:
        if fmt == "openapi":
            raise InvalidInput("--format openapi writes a spec: give it with --openapi")
        if fmt == "kong":
            return render_file(pricing or DEFAULT_PRICING, kong_yml)
        declarative = render(dict(read_mapping(kong_yml, "Kong declarative config")),
                             load_pricing(pricing or DEFAULT_PRICING))
    else:
        expanded, declarative = _from_spec(spec, tags)
        if fmt == "openapi":
            return OPENAPI_HEADER.format(spec=Path(spec).name) + yaml.safe_dump(
                expanded, sort_keys=False, allow_unicode=True, width=100)
        if fmt == "kong":
            return SPEC_HEADER.format(spec=Path(spec).name) + yaml.safe_dump(
                declarative, sort_keys=True, allow_unicode=True, width=100)
    if fmt == "kic":
        return dump_manifests(kic_manifests(declarative, **kic))
    return dump_plugin_file(deck_plugin_file(declarative))


def _default_target(fmt: str, spec: str | None, kong_yml: str) -> str:
    """Without -o: kong.yml is rewritten in place from pricing.yaml, and written from a spec
    when --kong-yml names it; anything else goes to stdout."""
    if fmt != "kong":
        return "-"
    if spec is None:
        return kong_yml
    context = click.get_current_context()
    given = context.get_parameter_source("kong_yml") == click.core.ParameterSource.COMMANDLINE
    return kong_yml if given else "-"


@click.command("render-config")
@click.option("--pricing", type=click.Path(dir_okay=False), default=None,
              help=f"The price list (default {DEFAULT_PRICING}).")
@click.option("--kong-yml", type=click.Path(dir_okay=False), default=DEFAULT_KONG_YML,
              show_default=True,
              help="The declarative config to update with --pricing (its routes, for kic and "
                   "deck-plugins); with --openapi, where to write the converted config.")
@click.option("--openapi", "spec", type=click.Path(dir_okay=False),
              help="Read routes and prices from this OpenAPI spec instead of --pricing.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="kong", show_default=True,
              help="kong: a declarative config; openapi: the spec with full "
                   "x-kong-plugin-credits blocks (for decK); kic: Kong Ingress Controller "
                   "manifests; deck-plugins: a `deck file add-plugins` plugin file.")
@click.option("--kic-resource", type=click.Choice(RESOURCES), default="ingress",
              show_default=True, help="kic: attach prices by Ingress annotation or by "
                                      "HTTPRoute ExtensionRef filter.")
@click.option("--gateway", default="kong", show_default=True,
              help="kic httproute: the Gateway the routes attach to.")
@click.option("--ingress-class", default="kong", show_default=True,
              help="kic ingress: the ingressClassName.")
@click.option("--namespace", callback=lambda ctx, param, value: _dns_label(value, param),
              help="kic: the namespace of every resource (default: none set).")
@click.option("--select-tag", "tags", multiple=True,
              help="--openapi: tag every entity with this (repeatable), as decK's "
                   "--select-tag; default the spec's x-kong-tags.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write here ('-': stdout). Default: for --format kong, --kong-yml (from a "
                   "spec: only when given), else stdout.")
@click.option("--check", is_flag=True,
              help="Write nothing; exit 1 if the output file is not what would be written.")
def render_config_command(pricing: str | None, kong_yml: str, spec: str | None, fmt: str,
                          kic_resource: str, gateway: str, ingress_class: str,
                          namespace: str | None, tags: tuple[str, ...], output: str | None,
                          check: bool) -> None:
    """Write prices where Kong reads them: kong.yml, an OpenAPI spec or a plugin file for
    decK, or KIC manifests, from config/pricing.yaml or from an OpenAPI spec."""
    if spec and pricing:
        raise click.UsageError("give prices with --pricing or --openapi, not both")
    kic = {"resource": kic_resource, "gateway": gateway, "ingress_class": ingress_class,
           "namespace": namespace}
    text = _usage(lambda: _render(fmt, pricing, kong_yml, spec, tags, kic))
    target = output or _default_target(fmt, spec, kong_yml)
    source = spec or pricing or DEFAULT_PRICING
    if check:
        if target == "-":
            raise click.UsageError("--check compares a file: give it with -o")
        current = Path(target).read_text() if Path(target).is_file() else None
        if current != text:
            raise click.ClickException(f"{target} is out of date with {source}: run "
                                       "kong-credits render-config")
        click.echo(f"{target} is up to date with {source}")
    elif target == "-":
        click.echo(text, nl=False)
    else:
        Path(target).write_text(text)
        click.echo(f"wrote {target}")


@click.command("prices")
@click.option("--kong-yml", type=click.Path(dir_okay=False), default=None,
              help=f"The declarative config to list (default {DEFAULT_KONG_YML}).")
@click.option("--openapi", "spec", type=click.Path(dir_okay=False),
              help="List the prices of this OpenAPI spec instead.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of routes.")
@click.option("--markdown", is_flag=True, help="A Markdown table, for a developer portal.")
def prices_command(kong_yml: str | None, spec: str | None, as_json: bool,
                   markdown: bool) -> None:
    """The price list per route: method, path, credits, limits, metered or not."""
    if kong_yml and spec:
        raise click.UsageError("give --kong-yml or --openapi, not both")
    if as_json and markdown:
        raise click.UsageError("give --json or --markdown, not both")
    if spec:
        rows = _usage(lambda: declarative_prices(_from_spec(spec, ())[1]))
    else:
        rows = _usage(lambda: route_prices(kong_yml or DEFAULT_KONG_YML))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif markdown:
        click.echo(markdown_table(rows))
    else:
        click.echo(text_table(rows))


_COLUMNS = ("Method", "Path", "Credits", "Limits", "Metered")


def _cells(row: Mapping[str, Any]) -> tuple[str, ...]:
    if row["plugin"] is None:
        credits = "not priced"
    elif row["metered"]:
        credits = (f"{row['cost']} held, then the {row['cost_header']} header "
                   f"(at most {row['max_cost']})")
    else:
        credits = str(row["cost"])
    if row["mode"] == "shadow":
        credits += " (shadow: not enforced)"
    limits = ", ".join(f"{n}/{period}" for period, n in row["rate_limit"].items())
    scope = " per consumer" if row["rate_limit_scope"] == "consumer" and limits else ""
    return (row["method"], row["path"], credits, (limits + scope) or "none",
            "yes" if row["metered"] else "no")


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The price list as a Markdown table (`|` in a value escaped)."""
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + " --- |" * len(_COLUMNS)]
    for row in rows:
        cells = (c.replace("|", "\\|") for c in _cells(row))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def text_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The price list as aligned columns for a terminal."""
    table = [_COLUMNS, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in table)
