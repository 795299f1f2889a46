"""`kong-credits usage` and `kong-credits usage events`: parse, call usage.query, print.

Register with `main.add_command(usage_command)`. `usage [WALLET]` is the report; `usage
events WALLET` the raw events behind it (a wallet actually named `events`: `usage -- events`).
Bad input and a store that cannot be read exit 2 with the reason.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import InvalidInput
from .query import DIMENSIONS, usage_events, usage_report
from .store import DEFAULT_USAGE_URL, USAGE_URL_ENV, Store, open_store
from .times import BUCKETS

__all__ = ["usage_command"]

F = TypeVar("F", bound=Callable[..., Any])
_REPORT = "report"


class _UsageGroup(click.Group):
    """A group whose default command takes the arguments when no subcommand is named, so
    `usage acme --by route` and `usage events acme` both read naturally."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands or args[0] == _REPORT:
            args = [_REPORT, *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage("kong-credits usage", "[WALLET] [OPTIONS] | events WALLET "
                              "[OPTIONS]")


def _store_option(command: F) -> F:
    return click.option(
        "--store", envvar=USAGE_URL_ENV, default=DEFAULT_USAGE_URL, show_default=True,
        help=f"The usage store: sqlite:///relative.db, sqlite:////absolute.db or "
             f"postgresql://user:pass@host:port/db (env {USAGE_URL_ENV}).")(command)


def _time_options(command: F) -> F:
    command = click.option("--until", help="End (exclusive): ISO 8601 with a zone, a date, "
                           "or a duration back from now (1h). Default: now.")(command)
    return click.option("--since", help="Start: ISO 8601 with a zone (2026-12-01T21:00:00Z), "
                        "a date (2026-12-01) or a duration back from now (24h, 7d). "
                        "Default: 24h before --until.")(command)


def _open(url: str) -> Store:
    try:
        return open_store(url)
    except InvalidInput as exc:  # StoreError: bad URL, missing file, unreachable server
        raise click.UsageError(str(exc)) from None


def _run(url: str, query: Callable[[Store], Any]) -> Any:
    with _open(url) as store:
        try:
            return query(store)
        except InvalidInput as exc:
            raise click.UsageError(str(exc)) from None


@click.group("usage", cls=_UsageGroup, context_settings={"help_option_names": ["-h", "--help"]})
def usage_command() -> None:
    """Usage by wallet, consumer, route, service, method and time, from the usage store."""


@usage_command.command(_REPORT, hidden=True)
@click.argument("wallet", required=False)
@click.option("--members", is_flag=True, help="Include the wallets under WALLET (WALLET/...).")
@click.option("--by", "by", default="", metavar="DIM[,DIM...]",
              help=f"Group by any of {', '.join(DIMENSIONS)}. Default: no grouping.")
@click.option("--bucket", type=click.Choice(BUCKETS), default="hour", show_default=True)
@_time_options
@click.option("--limit", type=click.IntRange(1, 1_000_000), help="At most N rows.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header.")
@_store_option
def report_command(wallet: str | None, members: bool, by: str, bucket: str,
                   since: str | None, until: str | None, limit: int | None, as_json: bool,
                   as_csv: bool, store: str) -> None:
    """Requests and credits per bucket, newest buckets last, biggest first within one."""
    if as_json and as_csv:
        raise click.UsageError("--json and --csv exclude each other")
    document = _run(store, lambda opened: usage_report(
        opened, wallet=wallet, members=members, by=by, bucket=bucket, since=since,
        until=until, limit=limit))
    columns = ["start", *[c for c in (by.split(",") if by.strip() else []) if c.strip()],
               "requests", "credits"]
    columns = [c.strip() for c in columns]
    if as_json:
        click.echo(json.dumps(document, ensure_ascii=False))
    elif as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([row[c] for c in columns] for row in document["rows"])
    else:
        click.echo(f"usage by {bucket} from {document['since']} to {document['until']}"
                   + (f", wallet {wallet}" + (" and its members" if members else "")
                      if wallet else ""))
        _table(columns, document["rows"])


@usage_command.command("events")
@click.argument("wallet")
@_time_options
@click.option("--route", help="Only events of this route (its Kong id).")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@_store_option
def events_command(wallet: str, since: str | None, until: str | None, route: str | None,
                   limit: int, as_json: bool, store: str) -> None:
    """The raw events of WALLET, newest first (kept 7 days by default)."""
    events = _run(store, lambda opened: usage_events(
        opened, wallet=wallet, since=since, until=until, route=route, limit=limit))
    if as_json:
        click.echo(json.dumps(events, ensure_ascii=False))
        return
    _table(["time", "id", "consumer", "route", "method", "path", "cost", "reserved",
            "status"], events)


def _table(columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Columns padded to their widest value; numbers right-aligned."""
    cells = [[("" if row[c] is None else str(row[c])) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    numeric = {"requests", "credits", "cost", "reserved", "status"}
    for line in [columns, *cells]:
        click.echo("  ".join(value.rjust(width) if name in numeric else value.ljust(width)
                             for name, value, width in zip(columns, line, widths, strict=True)
                             ).rstrip())
    click.echo(f"{len(rows)} row(s)")
